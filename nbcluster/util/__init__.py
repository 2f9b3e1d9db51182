"""Libraries built on the public API, as Ray's ``ray.util``: ``ActorPool``, ``queue``, ``state``,
``list_named_actors``, ``as_completed``, ``map_unordered``, ``get_node_ip_address``,
``multiprocessing.Pool`` and placement groups (``placement_group``, ``remove_placement_group``,
...: the functions shadow the module of the same name here, exactly as in Ray, and
``from nbcluster.util.placement_group import ...`` still finds the module).

Nothing here reaches into the runtime beyond what a user could write; importing it is cheap
and starts no cluster.
"""

from nbcluster.runtime.api.actor import list_named_actors as list_named_actors
from nbcluster.runtime.api.session import get_node_ip_address as get_node_ip_address
from nbcluster.util import queue as queue
from nbcluster.util import state as state
from nbcluster.util.actor_pool import ActorPool as ActorPool
from nbcluster.util.helpers import as_completed as as_completed
from nbcluster.util.helpers import map_unordered as map_unordered
from nbcluster.util.placement_group import (
    PlacementGroup,
    get_current_placement_group,
    get_placement_group,
    placement_group,
    placement_group_table,
    remove_placement_group,
)

__all__ = [
    "ActorPool", "PlacementGroup", "as_completed", "get_current_placement_group",
    "get_node_ip_address", "get_placement_group", "list_named_actors", "map_unordered",
    "placement_group", "placement_group_table", "queue", "remove_placement_group", "state",
]  # fmt: skip
