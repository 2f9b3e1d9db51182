"""nbcluster: Ray's programming model, born inside the notebook.

The public face. Each name is re-exported from the module that owns it.
"""

from nbcluster import exceptions as exceptions
from nbcluster import job_config as job_config
from nbcluster._version import __version__ as __version__
from nbcluster.kernel.extension import load_ipython_extension as load_ipython_extension
from nbcluster.runtime.api.actor import ActorClass as ActorClass
from nbcluster.runtime.api.actor import ActorHandle as ActorHandle
from nbcluster.runtime.api.actor import get_actor as get_actor
from nbcluster.runtime.api.actor import kill as kill
from nbcluster.runtime.api.actor import method as method
from nbcluster.runtime.api.dashboard_link import dashboard_url as dashboard_url
from nbcluster.runtime.api.session import available_resources as available_resources
from nbcluster.runtime.api.session import cancel as cancel
from nbcluster.runtime.api.session import cluster_resources as cluster_resources
from nbcluster.runtime.api.session import get as get
from nbcluster.runtime.api.session import get_gpu_ids as get_gpu_ids
from nbcluster.runtime.api.session import get_runtime_context as get_runtime_context
from nbcluster.runtime.api.session import init as init
from nbcluster.runtime.api.session import is_initialized as is_initialized
from nbcluster.runtime.api.session import nodes as nodes
from nbcluster.runtime.api.session import put as put
from nbcluster.runtime.api.session import remote as remote
from nbcluster.runtime.api.session import shutdown as shutdown
from nbcluster.runtime.api.session import wait as wait
from nbcluster.runtime.api.timeline import timeline as timeline
from nbcluster.runtime.ownership.generators import (
    DynamicObjectRefGenerator as DynamicObjectRefGenerator,
)
from nbcluster.runtime.ownership.generators import ObjectRefGenerator as ObjectRefGenerator
from nbcluster.runtime.ownership.object_ref import ObjectRef as ObjectRef


def __getattr__(name: str) -> object:
    """``nbcluster.util``, ``nbcluster.cluster`` and ``nbcluster.widgets`` load on first
    use: node and worker processes never need them."""
    if name == "util":
        import nbcluster.util

        return nbcluster.util
    if name == "cluster":
        import nbcluster.cluster

        return nbcluster.cluster
    if name == "widgets":
        import nbcluster.widgets

        return nbcluster.widgets
    raise AttributeError(f"module 'nbcluster' has no attribute {name!r}")

__all__ = [
    "ActorClass",
    "ActorHandle",
    "DynamicObjectRefGenerator",
    "ObjectRef",
    "ObjectRefGenerator",
    "available_resources",
    "cancel",
    "cluster",
    "cluster_resources",
    "dashboard_url",
    "exceptions",
    "get",
    "get_actor",
    "get_gpu_ids",
    "get_runtime_context",
    "init",
    "is_initialized",
    "kill",
    "method",
    "nodes",
    "put",
    "remote",
    "shutdown",
    "timeline",
    "util",
    "wait",
    "widgets",
]
