"""Scheduling strategies, where Ray keeps them (``ray.util.scheduling_strategies``)."""

from nbcluster.runtime.placement import NodeAffinitySchedulingStrategy

__all__ = ["NodeAffinitySchedulingStrategy"]
