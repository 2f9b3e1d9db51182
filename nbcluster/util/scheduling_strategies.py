"""Scheduling strategies, where Ray keeps them (``ray.util.scheduling_strategies``)."""

from nbcluster.runtime.scheduling.bundles import PlacementGroupSchedulingStrategy
from nbcluster.runtime.scheduling.placement import NodeAffinitySchedulingStrategy

__all__ = ["NodeAffinitySchedulingStrategy", "PlacementGroupSchedulingStrategy"]
