"""The public ``nbcluster.actor`` module, as Ray's ``ray.actor``.

Code written for Ray imports ``exit_actor`` and the actor types from here; each name is
re-exported from the runtime module that owns it.
"""

from nbcluster.runtime.api.actor import ActorClass, ActorHandle, ActorMethod, method
from nbcluster.runtime.execute.actor_host import exit_actor

__all__ = ["ActorClass", "ActorHandle", "ActorMethod", "exit_actor", "method"]
