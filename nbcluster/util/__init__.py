"""Libraries built on the public API, as Ray's ``ray.util``: ``ActorPool``, ``queue``, ``state``
and ``list_named_actors``.

Nothing here reaches into the runtime beyond what a user could write; importing it is cheap
and starts no cluster.
"""

from nbcluster.runtime.api.actor import list_named_actors as list_named_actors
from nbcluster.util import queue as queue
from nbcluster.util import state as state
from nbcluster.util.actor_pool import ActorPool as ActorPool

__all__ = ["ActorPool", "list_named_actors", "queue", "state"]
