"""Entry point: ``python benchmarks/run.py [--quick] [--only ...] [--frameworks ...]``.

Runs the same workloads on nbcluster, Ray and Dask, each framework in its own fresh
subprocesses (see :mod:`benchmarks.harness` for why), and prints a comparison table.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _main() -> int:
    root = str(Path(__file__).resolve().parent.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    from benchmarks.harness import main

    return main()


if __name__ == "__main__":
    sys.exit(_main())
