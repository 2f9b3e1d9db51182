"""Growing the cluster from the notebook: worker nodes on this machine, SSH hosts, Slurm,
Kubernetes, through launcher plugins.

```python
group = nc.cluster.add_nodes(2, backend="slurm", cpus=8, walltime="1:00:00")
group.wait(timeout=300)     # the nodes joined, or why not
group.remove()              # drain, then cancel the jobs
nc.cluster.adapt(minimum=0, maximum=20, backend="slurm", cpus=8)   # follow the demand
```
"""

from nbcluster.cluster.adapt import Adaptive as Adaptive
from nbcluster.cluster.adapt import adapt as adapt
from nbcluster.cluster.group import LaunchTimeoutError as LaunchTimeoutError
from nbcluster.cluster.group import NodeGroup as NodeGroup
from nbcluster.cluster.launcher import JobStatus as JobStatus
from nbcluster.cluster.launcher import JoinCommand as JoinCommand
from nbcluster.cluster.launcher import Launcher as Launcher
from nbcluster.cluster.launcher import LaunchError as LaunchError
from nbcluster.cluster.launcher import NodeSpec as NodeSpec
from nbcluster.cluster.manager import add_nodes as add_nodes
from nbcluster.cluster.manager import get_group as get_group
from nbcluster.cluster.manager import groups as groups
from nbcluster.cluster.manager import remove as remove
from nbcluster.cluster.manager import status as status

__all__ = [
    "Adaptive",
    "JobStatus",
    "JoinCommand",
    "LaunchError",
    "LaunchTimeoutError",
    "Launcher",
    "NodeGroup",
    "NodeSpec",
    "adapt",
    "add_nodes",
    "get_group",
    "groups",
    "remove",
    "status",
]
