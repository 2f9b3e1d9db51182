"""Libraries built on the public API, as Ray's ``ray.util``: ``ActorPool``, ``queue``, ``state``,
``list_named_actors`` and placement groups (``placement_group``, ``remove_placement_group``,
...: the functions shadow the module of the same name here, exactly as in Ray, and
``import nbcluster.util.placement_group`` still finds the module).

Nothing here reaches into the runtime beyond what a user could write; importing it is cheap
and starts no cluster.
"""

from nbcluster.runtime.api.actor import list_named_actors as list_named_actors
from nbcluster.util import queue as queue
from nbcluster.util import state as state
from nbcluster.util.actor_pool import ActorPool as ActorPool
from nbcluster.util.placement_group import (
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

__all__ = [
    "ActorPool",
    "PlacementGroup",
    "get_current_placement_group",
    "get_placement_group",
    "list_named_actors",
    "placement_group",
    "placement_group_table",
    "queue",
    "remove_placement_group",
    "state",
]
