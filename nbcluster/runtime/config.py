"""One place for every tunable of the runtime.

Each field can be set in a site's config file and overridden from the environment as
``NBCLUSTER_<FIELD>`` (upper case), so an administrator sets defaults for every user of a
machine, a test or a user changes a knob without touching code, and every process of a
cluster reads the same values.

The config file is JSON whose keys are the fields below, e.g. ``{"cpu_limit": 4,
"mem_limit": 8589934592}``: ``/etc/nbcluster/config.json``, or the file named by
``NBCLUSTER_CONFIG_FILE`` (empty: none). A missing file is no file; one that cannot be read
or parsed, an unknown key or a value of the wrong type is an error that names the file.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field, fields
from typing import Any

#: Where a machine's administrator puts defaults for all its users.
SITE_CONFIG_FILE = "/etc/nbcluster/config.json"


@dataclass
class Config:
    #: Values whose serialized size is below this travel inline in messages and live with
    #: their owner; larger ones go to the node's shared-memory store.
    inline_threshold: int = 100 * 1024
    #: Fraction of this user's memory limit (RAM when nothing limits it; see ``limits``)
    #: given to a node's object store when ``object_store_memory`` is unset.
    object_store_fraction: float = 0.3
    #: CPUs each user's node on this machine takes by default, at most (0: no limit of our
    #: own; the cgroup's quota and the spawner's ``CPU_LIMIT`` still apply; see ``limits``).
    cpu_limit: float = 0.0
    #: Memory each user's node on this machine keeps under, in bytes (0: no limit of our
    #: own; the cgroup's limit and the spawner's ``MEM_LIMIT`` still apply): it sizes the
    #: object store and the memory monitor's threshold (see ``limits``).
    mem_limit: int = 0
    #: This user's directory for session files (tokens, records of running clusters, logs,
    #: spill). Empty: ``$XDG_RUNTIME_DIR/nbcluster`` or ``<tempdir>/nbcluster-<uid>``; it is
    #: created 0700 and refused unless private to this user (see ``sessions``).
    temp_dir: str = ""
    #: Tasks pushed to one leased worker before waiting for replies (pipelining depth).
    max_tasks_in_flight_per_worker: int = 4
    #: How long an owner keeps an idle worker lease before giving it back (seconds).
    idle_lease_timeout_s: float = 0.5
    #: An extra worker (beyond one per CPU) idle this long is stopped, unless it owns
    #: objects that are still referenced (seconds).
    idle_worker_timeout_s: float = 5.0
    #: Most worker processes a node runs for tasks (0: max(32, 8 x its CPUs)). A task blocked
    #: in ``get`` keeps its worker while lending its CPU, so deeply nested tasks need many;
    #: past this, their children wait and the owners are warned once.
    max_workers: int = 0
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
    #: ...and most bytes of their specs and arguments (Ray's bound, 1 GB).
    max_lineage_bytes: int = 1 << 30
    #: A remote function or actor class whose pickle is larger than this is refused at
    #: ``.remote()`` (Ray's FUNCTION_SIZE_ERROR_THRESHOLD): it captured something large.
    function_size_error_bytes: int = 100 * 1024 * 1024
    #: An actor ending gracefully (its handles gone, its owner gone) is killed if still
    #: there after this long (seconds).
    actor_exit_grace_s: float = 5.0
    #: Dead actors the head remembers (for get_actor errors and listings); older ones go.
    max_dead_actors: int = 10_000
    #: Processes the head's event log remembers as event sources (least recent go first).
    event_max_sources: int = 10_000
    #: A node's log is rotated past this size (copied to ``.1``, then truncated)...
    log_max_bytes: int = 100 * 1024 * 1024
    #: ...keeping this many old logs (``.1`` newest).
    log_backups: int = 3
    #: Kill the newest task when memory use passes this fraction of this user's memory limit
    #: (counted as the limit counts it: a cgroup's use, else the machine's; see ``limits``)...
    memory_usage_threshold: float = 0.95
    #: ...or this many bytes, when set (> 0).
    memory_limit_bytes: int = 0
    #: How often the memory monitor samples (seconds; 0 turns it off).
    memory_monitor_interval_s: float = 0.25
    #: Workers' ``oom_score_adj``: when the kernel's OOM killer strikes anyway (memory that
    #: grows faster than the monitor samples), it takes a worker, not the node or the user's
    #: notebook kernel (Ray's default too; 0 leaves it as inherited).
    worker_oom_score_adj: int = 1000
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

    #: Where each field set from outside came from (``NBCLUSTER_MEM_LIMIT``, ``mem_limit in
    #: /etc/nbcluster/config.json``), so what it causes can say so.
    _origins: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_env(cls) -> Config:
        cfg = cls()
        path = config_file()
        for name, value in _read_file(path).items():
            setattr(cfg, name, _coerce(getattr(cfg, name), value, f"{name} in {path}"))
            cfg._origins[name] = f"{name} in {path}"
        for name in _field_names():
            var = f"NBCLUSTER_{name.upper()}"
            raw = os.environ.get(var)
            if raw is not None:
                setattr(cfg, name, _coerce(getattr(cfg, name), raw, var))
                cfg._origins[name] = var
        return cfg

    def origin(self, name: str) -> str:
        """Where field ``name`` was set: an environment variable, a key of the config file,
        or "nbcluster's configuration" when code set it."""
        return self._origins.get(name) or f"{name} in nbcluster's configuration"

    def replace(self, **changes: object) -> Config:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]


def config_file() -> str:
    """The site's config file: ``NBCLUSTER_CONFIG_FILE`` (empty: none), else the default."""
    return os.environ.get("NBCLUSTER_CONFIG_FILE", SITE_CONFIG_FILE)


def _field_names() -> list[str]:
    return [f.name for f in fields(Config) if not f.name.startswith("_")]


def _read_file(path: str) -> dict[str, Any]:
    if not path:
        return {}
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    except OSError as e:
        raise ValueError(f"nbcluster cannot read its config file {path}: {e.strerror}") from None
    try:
        values = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"nbcluster's config file {path} is not valid JSON: {e}") from None
    if not isinstance(values, dict):
        raise ValueError(f"nbcluster's config file {path} must hold a JSON object of settings")
    known = _field_names()
    for name in values:
        if name not in known:
            near = difflib.get_close_matches(str(name), known, n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise ValueError(f"nbcluster's config file {path}: unknown setting {name!r}{hint}")
    return values


def _coerce(current: object, raw: object, where: str) -> Any:
    """``raw`` (a string from the environment, or a JSON value) as the type of the field."""
    kind: Any = type(current)
    if isinstance(raw, str):
        if kind is bool:  # bool("0") is True: parse the usual spellings
            return raw.strip().lower() not in ("0", "false", "no", "off", "")
        try:
            return kind(raw)
        except ValueError:
            raise ValueError(f"{where}={raw!r}: not {_TYPE_NAMES[kind]}") from None
    if kind is bool and isinstance(raw, bool):
        return raw
    if kind in (int, float) and isinstance(raw, (int, float)) and not isinstance(raw, bool):
        if kind is int and raw != int(raw):
            raise ValueError(f"{where}={raw!r}: not {_TYPE_NAMES[kind]}")
        return kind(raw)
    raise ValueError(f"{where}={raw!r}: not {_TYPE_NAMES[kind]}")


_TYPE_NAMES = {bool: "true or false", int: "a whole number", float: "a number", str: "a string"}


CONFIG = Config.from_env()
