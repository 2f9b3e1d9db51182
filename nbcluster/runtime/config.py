"""One place for every tunable of the runtime.

Each field can be overridden from the environment as ``NBCLUSTER_<FIELD>`` (upper case), so
a test or a user can change a knob without touching code, and every process of a cluster
reads the same values.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, fields


@dataclass
class Config:
    #: Values whose serialized size is below this travel inline in messages and live with
    #: their owner; larger ones go to the node's shared-memory store.
    inline_threshold: int = 100 * 1024
    #: Fraction of RAM given to a node's object store when ``object_store_memory`` is unset.
    object_store_fraction: float = 0.3
    #: This user's directory for session files (tokens, records of running clusters, logs,
    #: spill). Empty: ``$XDG_RUNTIME_DIR/nbcluster`` or ``<tempdir>/nbcluster-<uid>``; it is
    #: created 0700 and refused unless private to this user (see ``sessions``).
    temp_dir: str = ""
    #: Tasks pushed to one leased worker before waiting for replies (pipelining depth).
    max_tasks_in_flight_per_worker: int = 4
    #: How long an owner keeps an idle worker lease before giving it back (seconds).
    idle_lease_timeout_s: float = 0.5
    #: Default task retries on worker death (Ray's default).
    task_max_retries: int = 3
    #: Seconds a connecting peer has to finish the authentication handshake.
    handshake_timeout_s: float = 5.0
    #: Largest frame accepted on any connection; larger length prefixes are refused.
    max_frame_bytes: int = 256 * 1024 * 1024
    #: Seconds to wait for the head to come up at ``init``.
    startup_timeout_s: float = 30.0
    #: Most tasks an owner keeps as lineage to rebuild lost objects (oldest evicted first).
    max_lineage_tasks: int = 100_000
    #: Kill the newest task when the machine's memory use passes this fraction of RAM...
    memory_usage_threshold: float = 0.95
    #: ...or this many bytes, when set (> 0).
    memory_limit_bytes: int = 0
    #: How often the memory monitor samples (seconds; 0 turns it off).
    memory_monitor_interval_s: float = 0.25
    #: A node silent for this long is declared dead by the head (seconds).
    node_timeout_s: float = 10.0
    #: A node that joined leaves the cluster when the head has not answered it this long
    #: (seconds): nodes started for a kernel do not outlive it, even if its machine froze.
    head_lease_s: float = 30.0
    #: The address this machine's nodes listen on and advertise (Ray's node_ip_address);
    #: empty: chosen by ``addresses.choose``.
    node_ip: str = ""
    #: TLS certificate (PEM) shared by the cluster; empty: no TLS. See ``tls``.
    tls_cert: str = ""
    #: Its private key (PEM), when not inside the certificate file.
    tls_key: str = ""
    #: Warn once if a task stays unschedulable this long (seconds).
    infeasible_warning_s: float = 1.0
    #: Record state-change events (tasks, actors, objects, nodes, workers) and send them to
    #: the head's event log; ``NBCLUSTER_EVENTS=0`` turns them off (benchmarks compare both).
    events: bool = True
    #: How often each process ships its buffered events to the head (seconds).
    event_flush_s: float = 0.1
    #: Events the head keeps for subscribers that catch up (older ones are dropped).
    event_history: int = 200_000
    #: Tasks the head's state tables remember; the oldest finished ones are forgotten first.
    event_max_tasks: int = 100_000
    #: Objects the head's state tables remember (the oldest are forgotten first).
    event_max_objects: int = 100_000
    #: How often each node samples its CPU, memory, GPU and object store use (seconds).
    resource_sample_s: float = 1.0
    #: How much resource-use history the head keeps per node for the dashboard (seconds).
    metrics_history_s: float = 600.0
    #: How long a dashboard login link (``nbcluster dashboard``) stays valid, unused (seconds).
    dashboard_login_ttl_s: float = 3600.0
    #: The base URL of the Jupyter server this process runs under, when that server has the
    #: nbcluster extension (which sets it for its kernels): dashboard links then point there.
    jupyter_base_url: str = ""

    #: A driver's ``get``/``wait`` blocked this long calls the long-wait hooks (a notebook
    #: then shows a progress bar under the cell; see ``long_wait``).
    long_wait_s: float = 1.0
    #: Whether the notebook kernel shows that progress bar by itself.
    auto_progress: bool = True

    #: This node belongs to a cluster run as a JupyterHub service: users log in with their
    #: Hub tokens and get their own namespaces and views (``hub_service``).
    jupyterhub: bool = False
    #: Per-user quotas in a JupyterHub service (0: none): CPUs held at once on a node...
    user_cpus: float = 0.0
    #: ...and object store bytes on a node.
    user_store_bytes: int = 0
    #: Comma-separated Hub users who see and may stop everyone's work (Hub admins too).
    hub_admin_users: str = ""
    #: Comma-separated actor namespaces that all users of a JupyterHub service share.
    shared_namespaces: str = ""

    #: Show nbcluster's own frames and chained internal errors in notebook tracebacks (for
    #: debugging nbcluster itself); by default a user sees their frames and one clear error.
    traceback_internals: bool = False

    @classmethod
    def from_env(cls) -> Config:
        cfg = cls()
        for f in fields(cls):
            raw = os.environ.get(f"NBCLUSTER_{f.name.upper()}")
            if raw is None:
                continue
            current = getattr(cfg, f.name)
            if isinstance(current, bool):  # bool("0") is True: parse the usual spellings
                setattr(cfg, f.name, raw.strip().lower() not in ("0", "false", "no", "off", ""))
                continue
            setattr(cfg, f.name, type(current)(raw))
        return cfg

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


CONFIG = Config.from_env()
