"""Benchmark suite comparing nbcluster with Ray and Dask on the same workloads.

Run ``python benchmarks/run.py --help``. See ``benchmarks/README.md``.
"""
