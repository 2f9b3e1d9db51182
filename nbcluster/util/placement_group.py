"""Placement groups, where Ray keeps them (``ray.util.placement_group``)."""

from nbcluster.runtime.api.placement_group import (
    PlacementGroup,
    PlacementGroupID,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

__all__ = [
    "PlacementGroup",
    "PlacementGroupID",
    "get_current_placement_group",
    "get_placement_group",
    "placement_group",
    "placement_group_table",
    "remove_placement_group",
]
