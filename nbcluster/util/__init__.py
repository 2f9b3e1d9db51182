"""Libraries built on the public API, as Ray's ``ray.util``: ``ActorPool``, ``queue``, ``state``,
``list_named_actors``, ``as_completed``, ``map_unordered``, ``get_node_ip_address`` and
``multiprocessing.Pool``.

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

__all__ = [
    "ActorPool", "as_completed", "get_node_ip_address", "list_named_actors", "map_unordered",
    "queue", "state",
]  # fmt: skip
