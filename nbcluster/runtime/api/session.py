"""The process-global API: ``init``, ``shutdown``, ``get``, ``put``, ``wait``, ``cancel``...

A driver has at most one connection to a cluster at a time. Inside a worker the same
functions use the worker's own core, so tasks can submit tasks and ``get`` their results.
"""

from __future__ import annotations

import atexit
import inspect
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any

from nbcluster.exceptions import ClusterConnectionError
from nbcluster.runtime.api import job_scope
from nbcluster.runtime.api.actor import ActorClass
from nbcluster.runtime.api.cluster_info import ClusterInfo, ClusterResources
from nbcluster.runtime.api.options import REMOTE_USAGE
from nbcluster.runtime.api.remote_function import RemoteFunction
from nbcluster.runtime.api.runtime_env import RuntimeEnv
from nbcluster.runtime.core import long_wait
from nbcluster.runtime.core.core_worker import CoreWorker
from nbcluster.runtime.node import sessions
from nbcluster.runtime.node.launcher import HeadProcess, start_head
from nbcluster.runtime.ownership import object_ref as object_ref_mod
from nbcluster.runtime.ownership.generators import ObjectRefGenerator
from nbcluster.runtime.ownership.object_ref import ObjectRef
from nbcluster.runtime.scheduling.resources import node_resources
from nbcluster.runtime.scheduling.resources import object_store_memory as object_store_memory_of
from nbcluster.runtime.wire import addresses

log = logging.getLogger("nbcluster")

_lock = threading.RLock()
_head: HeadProcess | None = None
_driver: CoreWorker | None = None
#: The record a notebook kernel writes for a cluster it attached to (``sessions``).
_attached: sessions.ClusterRecord | None = None
#: The resource options the running cluster was started with; None: the defaults, chosen
#: implicitly (by the nbcluster kernel, or by a first ``remote()`` before any ``init``).
_started_with: dict[str, Any] | None = None


_lost: str | None = None
#: Called by ``shutdown`` before the cluster goes (node groups cancel their jobs here).
_shutdown_hooks: list[Callable[[], None]] = []


def on_shutdown(fn: Callable[[], None]) -> None:
    """Run ``fn`` at every ``shutdown`` while connected, before the cluster stops."""
    if fn not in _shutdown_hooks:
        _shutdown_hooks.append(fn)


def current_core() -> CoreWorker:
    """This process's core worker; a clear error when there is none (never initialized, or
    the cluster was lost)."""
    core = object_ref_mod.get_core()
    if core is None:
        if _lost:
            raise ClusterConnectionError(f"{_lost}: call nbcluster.init() to start a new cluster")
        raise RuntimeError("nbcluster is not initialized: call nbcluster.init() first")
    return core  # type: ignore[no-any-return]


def owns_head() -> bool:
    """Whether this process started the cluster it is connected to (a notebook's own)."""
    return _head is not None


def core_for_submit() -> CoreWorker:
    """The core to submit with, starting a local cluster on first use (as Ray does)."""
    core = object_ref_mod.get_core()
    if core is None:
        init(_implicit=True)
        core = object_ref_mod.get_core()
    return core  # type: ignore[no-any-return]


#: Ray's ``init`` keywords that change nothing here (logging, internals, isolation): taken
#: so that Ray programs run unchanged. Any other unknown keyword is a TypeError.
RAY_INIT_NOOPS = frozenset((
    "labels", "local_mode", "dashboard_host", "configure_logging", "logging_level",
    "logging_format", "logging_config", "log_to_driver", "enable_resource_isolation",
    "cgroup_path", "system_reserved_cpu", "system_reserved_memory", "proxy_server_url",
    "allow_multiple", "_enable_object_reconstruction", "_plasma_directory",
    "_object_spilling_directory", "_driver_object_store_memory", "_memory", "_redis_username",
    "_redis_password", "_temp_dir", "_metrics_export_port", "_system_config",
    "_tracing_startup_hook", "_node_name", "_skip_env_hook",
))  # fmt: skip


def init(
    address: str | None = None,
    *,
    num_cpus: float | None = None,
    num_gpus: float | None = None,
    resources: dict[str, float] | None = None,
    object_store_memory: int | None = None,
    ignore_reinit_error: bool = True,
    token: str | None = None,
    include_dashboard: bool | None = None,
    dashboard: bool | int | None = None,
    namespace: str | None = None,
    runtime_env: dict[str, Any] | None = None,
    node_ip: str | None = None,
    **ray_kwargs: Any,
) -> ClusterInfo:
    """Start a local cluster (or attach to ``address``) and connect this process as a driver.

    Calling it again while connected is harmless — a notebook re-running its first cell
    should not fail — and returns the existing cluster's information. ``node_ip`` (Ray's
    ``_node_ip_address``; or ``NBCLUSTER_NODE_IP``) makes a new cluster listen on and
    advertise that address of this machine instead of loopback, for nodes on other machines.
    ``dashboard=True`` (or a port number; Ray's ``include_dashboard`` too) has a new
    cluster's head serve its dashboard from the start; ``dashboard_url()`` opens it on demand.
    ``runtime_env`` and ``namespace`` are the job's (``job_scope``): given again while
    connected, they replace the earlier ones. Ray's other keywords: ``job_config`` gives
    them too (the explicit ones win), ``dashboard_port`` serves the dashboard there, the
    rest (``RAY_INIT_NOOPS``: logging, internals) change nothing; an unknown one is a
    TypeError, not silently dropped.

    Asking for other resources while connected: a cluster started with the defaults behind
    the user's back (by the nbcluster kernel, or by a first ``remote()`` call) is restarted
    with them, after saying so; any other cluster stays, and ``init`` raises a ValueError
    that says to call ``shutdown()`` first.
    """
    node_ip = node_ip or ray_kwargs.pop("_node_ip_address", None)
    implicit = bool(ray_kwargs.pop("_implicit", False))
    job_config = ray_kwargs.pop("job_config", None)
    if job_config is not None:  # Ray's JobConfig or ours: the explicit arguments win
        runtime_env = runtime_env if runtime_env is not None else job_config.runtime_env or None
        namespace = namespace or job_config.ray_namespace
    dashboard_port = ray_kwargs.pop("dashboard_port", None)
    if dashboard is None and dashboard_port is not None:
        dashboard = int(dashboard_port)
    unknown = sorted(set(ray_kwargs) - RAY_INIT_NOOPS)
    if unknown:
        raise TypeError(f"init() got unexpected keyword argument(s): {', '.join(unknown)}")
    asked = {k: v for k, v in (("num_cpus", num_cpus), ("num_gpus", num_gpus),
             ("resources", resources), ("object_store_memory", object_store_memory))
             if v is not None}  # fmt: skip
    global _head, _driver, _lost, _attached, _started_with
    with _lock:
        job = job_scope.check(runtime_env, namespace)  # before anything starts
        if _driver is not None and not _driver.closed:
            if not asked or asked == _started_with:
                job_scope.set_job(job)
                return _info()
            _reinit(asked)  # raises, or stops the implicit cluster so a new one starts
        _started_with = None if implicit else asked
        address = address or os.environ.get("NBCLUSTER_ADDRESS")
        if address == "local":
            address = None
        if address == "auto":
            record = sessions.find_cluster()
            address, token = record.address, token or record.read_token()
        login = None
        if address:
            token = token or os.environ.get("NBCLUSTER_TOKEN") or _recorded_token(address)
            # In a JupyterHub user server, a cluster run as a Hub service takes the user's
            # own Hub token instead (see ``user_auth``).
            login = None if token else os.environ.get("JUPYTERHUB_API_TOKEN")
            if not token and not login:
                raise ValueError(
                    f"attaching to the cluster at {address} needs its token: "
                    "init(address, token=...) or NBCLUSTER_TOKEN"
                )
            agent_address = address
        else:
            res = node_resources(num_cpus, num_gpus, resources)
            store = object_store_memory_of(object_store_memory)
            want = dashboard if dashboard is not None else include_dashboard
            port = None if want is None or want is False else 0 if want is True else int(want)
            _head = start_head(res, int(store), token=token, node_ip=node_ip, dashboard_port=port)
            agent_address, token = _head.address, _head.token
        core = CoreWorker("driver", agent_address, token or "", attach=bool(address), login=login)
        try:
            core.start()
        except BaseException as e:
            core.shutdown()  # its server and loop must not outlive a failed start
            if _head is not None:
                _head.stop()
                _head = None
            if isinstance(e, (ClusterConnectionError, ConnectionError)):
                raise
            raise ClusterConnectionError(f"cannot connect to the cluster: {e}") from e
        core.on_agent_lost = _on_head_lost
        _driver = core
        _lost = None
        if address and token:
            _attached = sessions.record_attached_kernel(address, token)
        job_scope.set_job(job)
        return _info()


def _reinit(asked: dict[str, Any]) -> None:
    """``init`` with resource options while connected (see ``init``)."""
    wanted = ", ".join(f"{k}={v!r}" for k, v in asked.items())
    if _started_with is None and _head is not None:
        print(
            f"nbcluster: restarting this process's cluster with {wanted}: it was started with "
            "the defaults (by the kernel, or by a first remote call); objects and actors from "
            "before are gone",
            file=sys.stderr,
        )
        shutdown()
        return
    if _head is None:
        raise ValueError(
            f"init({wanted}): this process is attached to the cluster at "
            f"{_driver.agent_address if _driver else '?'}, whose resources are those its "
            "nodes were started with (nbcluster start --num-cpus/--resources ...)"
        )
    started = ", ".join(f"{k}={v!r}" for k, v in (_started_with or {}).items())
    raise ValueError(
        f"init({wanted}): this process already runs a cluster started with "
        f"init({started}); call nbcluster.shutdown() first to start another"
    )


def _recorded_token(address: str) -> str | None:
    """The token of this user's cluster at ``address`` on this machine, if there is one."""
    try:
        return sessions.find_cluster(address).read_token()
    except (ClusterConnectionError, OSError):
        return None


def _token_file() -> str | None:
    if _head is not None:
        return _head.token_file
    if _attached is not None:
        return _attached.token_file
    return None


def _on_head_lost() -> None:
    """Called on the I/O thread when the cluster went away: let ``init`` start afresh."""
    global _lost, _driver, _head, _attached
    core, _driver = _driver, None
    if core is None:
        return
    _lost = core.lost_reason
    core.shutdown()
    if _attached is not None:
        attached, _attached = _attached, None
        sessions.forget(attached)
    if _head is not None:  # ours, and dead: reap it without blocking the I/O thread
        head, _head = _head, None
        threading.Thread(target=head.stop, daemon=True).start()


def _info() -> ClusterInfo:
    assert _driver is not None
    return ClusterInfo(
        address=_driver.agent_address,
        node_id=_driver.node_id,
        session_dir=_driver.node_info.get("session_dir"),
        token_file=_token_file(),
        started_here=_head is not None,
        resources=_driver.node_info.get("cluster_resources") or {},
        limits=_driver.node_info.get("limits") or {},
    )


def is_initialized() -> bool:
    return object_ref_mod.get_core() is not None


def shutdown() -> None:
    """Disconnect; stop the cluster if this process started it. Safe to call twice."""
    global _head, _driver, _attached
    with _lock:
        if _driver is not None:
            for fn in list(_shutdown_hooks):
                try:
                    fn()
                except Exception as e:  # shutting down must go on
                    log.warning("shutdown hook %s failed: %s", fn, e)
        core, _driver = _driver, None
        head, _head = _head, None
        job_scope.set_job(None)
        attached, _attached = _attached, None
        if core is not None:
            core.shutdown()
        if head is not None:
            head.stop()
        if attached is not None:
            sessions.forget(attached)


atexit.register(shutdown)


def remote(*args: Any, **options: Any) -> Any:
    """``@remote`` or ``@remote(num_cpus=..., ...)`` on a function or a class."""

    def wrap(obj: Any) -> Any:
        if inspect.isclass(obj):
            return ActorClass(obj, options)
        if not callable(obj):
            raise TypeError("@remote applies to functions and classes")
        return RemoteFunction(obj, options)

    if len(args) == 1 and not options and callable(args[0]):
        return wrap(args[0])
    if args:
        raise TypeError(REMOTE_USAGE)
    return wrap


def get(refs: Any, *, timeout: float | None = None) -> Any:
    core = current_core()
    if long_wait.hooks_registered() and isinstance(refs, (list, tuple)):
        with long_wait.watching("get", refs):
            return core.get(refs, timeout)
    return core.get(refs, timeout)


def put(value: Any) -> ObjectRef:
    return core_for_submit().put(value)


def wait(
    refs: Sequence[ObjectRef | ObjectRefGenerator],
    *,
    num_returns: int = 1,
    timeout: float | None = None,
    fetch_local: bool = True,
) -> tuple[list[ObjectRef], list[ObjectRef]]:
    core = current_core()
    if long_wait.hooks_registered() and isinstance(refs, (list, tuple)):
        with long_wait.watching("wait", [r for r in refs if isinstance(r, ObjectRef)]):
            return core.wait(refs, num_returns, timeout)
    return core.wait(refs, num_returns, timeout)


def cancel(
    ref: ObjectRef | ObjectRefGenerator, *, force: bool = False, recursive: bool = True
) -> None:
    if isinstance(ref, ObjectRefGenerator):  # its task: the generator stops
        ref = ref.completed()
    if not isinstance(ref, ObjectRef):
        raise TypeError(f"cancel() expects an ObjectRef, got {type(ref).__name__}")
    core = current_core()

    async def go() -> None:  # on the loop, where the submitter's tables live
        core.submitter.cancel(ref.task_id(), force)

    core.run_sync(go, timeout=30)


def nodes() -> list[dict[str, Any]]:
    """Every node that joined the cluster, alive or dead, with Ray's field names."""
    return list(current_core().head_call("get_nodes", timeout=30))


def get_node_ip_address() -> str:
    """The address of this process's node, as the cluster knows it (``nodes()``'s
    ``NodeManagerAddress``); this machine's primary address in a driver with no node here
    (client mode) or none yet (as Ray's ``ray.util.get_node_ip_address``)."""
    core = object_ref_mod.get_core()
    if core is not None and not core.client_mode:
        return str(core.agent_address.rsplit(":", 1)[0])
    return addresses.primary_ip()


def _sum(field: str) -> dict[str, float]:
    total: dict[str, float] = {}
    for n in nodes():
        if n["Alive"]:
            for k, v in n[field].items():
                total[k] = total.get(k, 0.0) + max(0.0, v)
    return total


def cluster_resources() -> ClusterResources:
    return ClusterResources(_sum("Resources"))


def available_resources() -> ClusterResources:
    return ClusterResources({k: v for k, v in _sum("Available").items() if v > 0})


class RuntimeContext:
    """What the current process is, and what the running task was given (as Ray's)."""

    def __init__(self, core: CoreWorker) -> None:
        self._core = core

    def get_node_id(self) -> str:
        return self._core.node_id

    def get_worker_id(self) -> str:
        return self._core.worker_id.hex()

    def get_task_id(self) -> str | None:
        t = self._core.current_task
        return t.task_id.hex() if t is not None else None

    def get_job_id(self) -> str:
        """The driver this work belongs to (a driver's own id; a task's or an actor's is
        that of the driver that submitted or created it)."""
        host = self._core.executor.actor_host if self._core.executor is not None else None
        if host is not None and host.job:
            return str(host.job)
        t = self._core.current_task
        if t is not None and t.conn is not None and t.conn.info.get("job"):
            return str(t.conn.info["job"])
        return str(self._core.job_id)

    def get_actor_id(self) -> str | None:
        """The id of the actor this runs in (``ActorHandle.actor_id``); None outside one."""
        ex = self._core.executor
        actor_id = ex.actor_host.actor_id if ex is not None else None
        return actor_id.hex() if actor_id is not None else None

    @property
    def current_actor(self) -> Any:
        """A handle to the actor this runs in, to pass to others (as Ray's)."""
        ex = self._core.executor
        host = ex.actor_host if ex is not None else None
        if host is None or host.actor_id is None:
            raise RuntimeError("current_actor is only available inside an actor")
        from nbcluster.runtime.api.actor import handle_of

        return handle_of(host.actor_id, host.class_name, host.method_table,
                         host.max_task_retries, host.owner)  # fmt: skip

    @property
    def actor_id(self) -> str | None:
        return self.get_actor_id()

    @property
    def namespace(self) -> str:
        """The namespace named actors are created in and looked up in (the job's)."""
        return job_scope.namespace(self._core) or job_scope.DEFAULT_NAMESPACE

    @property
    def runtime_env(self) -> RuntimeEnv:
        """The runtime_env of the running task or actor (the job's in a driver), as Ray's:
        empty when there is none."""
        return RuntimeEnv.deserialize(self.get_runtime_env_string())

    def get_runtime_env_string(self) -> str:
        return json.dumps(job_scope.inherited_env(self._core) or {})

    @property
    def job_id(self) -> str:
        return self.get_job_id()

    def get_assigned_resources(self) -> dict[str, float]:
        t = self._core.current_task
        return dict(t.resources) if t is not None else {}

    def get_accelerator_ids(self) -> dict[str, list[str]]:
        t = self._core.current_task
        return {"GPU": [str(g) for g in t.gpus] if t is not None else []}

    def get_gpu_ids(self) -> list[int]:
        t = self._core.current_task
        return list(t.gpus) if t is not None else []

    def is_canceled(self) -> bool:
        """Whether ``cancel()`` reached the running task or actor call: a sync or threaded
        actor call is not interrupted, so it checks this to stop early (as in Ray)."""
        executor = self._core.executor
        if executor is None:
            raise RuntimeError("is_canceled() is only available in a task or an actor call")
        if executor.actor_host.mode == "async":
            raise RuntimeError("is_canceled() is not supported in an async actor")
        t = self._core.current_task
        return bool(t is not None and t.cancelled)

    @property
    def worker_pid(self) -> int:
        return os.getpid()

    @property
    def node_id(self) -> str:
        return self.get_node_id()

    @property
    def task_id(self) -> str | None:
        return self.get_task_id()

    def get(self) -> dict[str, Any]:
        return {
            "node_id": self.get_node_id(),
            "worker_id": self.get_worker_id(),
            "task_id": self.get_task_id(),
            "worker_pid": os.getpid(),
        }


def get_runtime_context() -> RuntimeContext:
    return RuntimeContext(current_core())


def get_gpu_ids() -> list[int]:
    return get_runtime_context().get_gpu_ids()
