"""This driver's node groups: starting them, listing them, and ending them with the driver.

One registry per process, so a group added from code, from ``%cluster add`` or from a widget
is the same object everywhere. Groups end with the driver: ``nc.shutdown()`` (and so a kernel
shutdown or restart) cancels every group's jobs; if the driver dies without a word, the nodes
lose the head and leave by themselves (see ``runtime.join``).
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
import threading
from typing import Any

from nbcluster.cluster import launcher as launchers
from nbcluster.cluster.group import GROUP_LABEL, NodeGroup
from nbcluster.cluster.launcher import JoinCommand, LaunchError, node_args, spec_from
from nbcluster.runtime.wire.addresses import is_loopback, route_to
from nbcluster.runtime.wire.transport import parse_address

log = logging.getLogger("nbcluster.cluster")

_lock = threading.RLock()
_groups: dict[str, NodeGroup] = {}
_numbers = itertools.count(1)
_log_dir: str | None = None
_hooked = False
_announced: set[str] = set()


def add_nodes(count: int | None = None, backend: str = "local", **options: Any) -> NodeGroup:
    """Start ``count`` worker nodes with ``backend`` and return their ``NodeGroup`` at once
    (``group.wait()`` waits for them to join).

    Options every backend understands: ``cpus``, ``gpus``, ``memory`` ("16G"), ``resources``
    ({"bigmem": 1}), ``object_store_memory``, ``python`` (the interpreter on the target),
    ``walltime``, ``env``. Backend options: ``hosts`` (ssh), ``partition``, ``account``...
    (slurm), ``image``, ``namespace`` (kubernetes); see each backend's documentation.
    """
    from nbcluster.runtime.api.session import core_for_submit

    cls = launchers.load(backend)
    spec = spec_from(options)
    launcher = cls(spec)
    count = launcher.default_count() if count is None else count
    if count < 1:
        raise ValueError(f"add_nodes needs a count of at least 1, got {count}")
    core = core_for_submit()
    _hook_shutdown()
    with _lock:
        group_id = f"{backend}-{next(_numbers)}"
        head = head_address_for(launcher, core)
        # Each group joins with its own token, good only for joining as a node, and only
        # for as many nodes as it asked for; revoked when the group goes.
        token = core.head_call("create_join_token", group_id, count, timeout=30)
        command = JoinCommand(tuple(node_args(spec, head, group_id)), token, dict(spec.env))
        try:
            jobs = launcher.start(command, count, group_id, _logs(core))
        except BaseException:
            core.head_call("revoke_join_token", group_id, timeout=10)
            raise
        ids = launcher.jobs_for_the_head(jobs)
        if ids:
            try:
                core.head_call("cancel_jobs_at_exit", group_id, ids, timeout=30)
            except Exception as e:  # (the jobs still end with the group, or the driver)
                log.warning("the head will not cancel jobs %s if it stops first: %s", ids, e)
        group = NodeGroup(group_id, launcher, count, jobs, on_removed=_forget)
        _groups[group_id] = group
    return group


def head_address_for(launcher: launchers.Launcher, core: Any) -> str:
    """The head address the launcher's nodes should dial.

    A cluster on loopback (a notebook's, by default) is opened to the network first: the
    head's machine also listens on the interface that routes to where the nodes will run
    (see ``runtime.exposure``), and the notebook says so.
    """
    head = str(core.node_info["head_address"])
    host, port = parse_address(head)
    if not launcher.remote or not is_loopback(host):
        return head
    target = launcher.reach_host()
    if target is None:
        raise LaunchError(
            f"the cluster listens on loopback only ({head}), and backend {launcher.name!r} "
            "cannot tell where its nodes will run: start the cluster with "
            "nc.init(node_ip=ADDRESS) or NBCLUSTER_NODE_IP set to an address they can reach"
        )
    try:
        reach = route_to(target)
    except ValueError as e:
        raise LaunchError(f"cannot add nodes on {target}: {e}") from None
    if is_loopback(reach):  # the "remote" host is this machine
        return head
    opened = core.head_call("expose_head", reach, timeout=30)
    if reach not in _announced:
        _announced.add(reach)
        print(
            f"nbcluster: the cluster now also listens on {reach} (the interface that routes to "
            f"{target}), so nodes there can join; every connection still needs the cluster "
            f"token. Listening on: 127.0.0.1, {', '.join(opened)}"
        )
    return f"{reach}:{port}"


def groups() -> list[NodeGroup]:
    """This driver's node groups, oldest first."""
    with _lock:
        return list(_groups.values())


def get_group(group_id: str) -> NodeGroup:
    with _lock:
        group = _groups.get(group_id)
    if group is None:
        known = ", ".join(_groups) or "none"
        raise KeyError(f"no node group {group_id!r} (this session's groups: {known})")
    return group


def remove(group_id: str, drain_timeout: float = 30.0) -> None:
    get_group(group_id).remove(drain_timeout=drain_timeout)


def status() -> list[dict[str, Any]]:
    """One row per group: id, backend, state, nodes joined/asked, job states."""
    return [g.status() for g in groups()]


def group_of(node: dict[str, Any]) -> str | None:
    """The group a ``nc.nodes()`` entry belongs to (None: not started by a launcher)."""
    label = node.get("Labels", {}).get(GROUP_LABEL)
    return str(label) if label else None


def shutdown() -> None:
    """Cancel every group's jobs (no draining: the cluster is going away)."""
    global _log_dir
    from nbcluster.cluster.adapt import stop as stop_adapting

    stop_adapting()  # first, so it starts nothing new
    for group in groups():
        try:
            group.cancel()
        except Exception as e:  # one backend's failure must not keep the others' jobs
            log.warning("could not cancel node group %s: %s", group.id, e)
    with _lock:
        if _log_dir is not None:
            shutil.rmtree(_log_dir, ignore_errors=True)
            _log_dir = None


def _forget(group: NodeGroup) -> None:
    from nbcluster.runtime.api.session import is_initialized

    with _lock:
        _groups.pop(group.id, None)
    if is_initialized():
        from nbcluster.runtime.api.session import current_core

        try:
            current_core().head_call("revoke_join_token", group.id, timeout=10)
        except Exception as e:  # the head is going away: its tokens go with it
            log.debug("could not revoke the join token of %s: %s", group.id, e)


def _logs(core: Any) -> str:
    """Where this driver's launched nodes write their output: inside the session directory
    of the node this driver uses, when it is on this machine (it goes with that node, even
    if the driver is killed), else a directory of its own, removed at shutdown."""
    global _log_dir
    from nbcluster.runtime.node import sessions

    if _log_dir is None or not os.path.isdir(_log_dir):
        session = str(core.node_info.get("session_dir") or "")
        if session and os.path.isdir(session) and not core.client_mode:
            _log_dir = os.path.join(session, "launch")
            os.makedirs(_log_dir, mode=0o700, exist_ok=True)
        else:
            _log_dir = tempfile.mkdtemp(prefix=f"launch-{os.getpid()}-", dir=sessions.user_dir())
    return _log_dir


def _hook_shutdown() -> None:
    global _hooked
    if not _hooked:
        from nbcluster.runtime.api.session import on_shutdown

        on_shutdown(shutdown)
        _hooked = True


__all__ = ["LaunchError", "add_nodes", "get_group", "groups", "remove", "status"]
