"""A node joining the head: preflight checks on both sides, then membership and its lease.

A node that joins but cannot be reached (or cannot reach the others) would look healthy and
then fail every task sent its way, far from the cause. So both sides check first and say
exactly which address was unreachable from where:

* the node dials the head at the address it was given;
* the head dials the node back at the address it advertises (a TCP connection, no more: the
  node's store and workers listen on the same host);
* the node dials every node the head lists, at the address the head gives for it;
* versions must agree (nbcluster, and Python's major.minor, since cloudpickle moves code
  and bytecode between them).

Once in, the node holds a *lease* on the head: it pings the head every second and leaves the
cluster when the head has not answered for ``head_lease_s``, so a node started for a kernel
does not outlive it even when the head vanishes without closing its connections (a frozen
machine, a cut network).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nbcluster.exceptions import AuthenticationError, ClusterConnectionError
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.control.node_directory import HEARTBEAT_S, NodeDirectory
from nbcluster.runtime.wire.addresses import dial_host, is_loopback, set_loopback_alias
from nbcluster.runtime.wire.auth import new_token
from nbcluster.runtime.wire.protocol import Hello
from nbcluster.runtime.wire.transport import Connection, Endpoint, install_rpc, parse_address

log = logging.getLogger("nbcluster.join")
#: A Slurm job id (an array task's too), the only thing the head is asked to ``scancel``.
SLURM_JOB_ID = re.compile(r"\d+(_\d+)?")
SCANCEL_TIMEOUT_S = 10.0

ADDRESS_HINT = (
    "start the node with --node-ip ADDRESS (or --interface NAME) set to an address "
    "the head and the other nodes can reach"
)


class JoinError(ClusterConnectionError):
    """A node could not join the cluster; the message says which check failed."""


def versions() -> dict[str, str]:
    import nbcluster._version

    return {
        "nbcluster": nbcluster._version.__version__,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


def version_mismatch(mine: dict[str, str], theirs: dict[str, str]) -> str | None:
    """Why two sides of a join cannot work together, or None when they can."""
    diff = [k for k in ("nbcluster", "python") if mine.get(k) != theirs.get(k)]
    if not diff:
        return None

    def show(v: dict[str, str]) -> str:
        return f"nbcluster {v.get('nbcluster', '?')} on Python {v.get('python', '?')}"

    return (
        f"version mismatch: the head runs {show(mine)}, this node runs {show(theirs)}; "
        "install the same nbcluster and Python version on every machine of the cluster"
    )


async def reachable(loop: asyncio.AbstractEventLoop, address: str, timeout: float) -> str | None:
    """None if a TCP connection to ``address`` opens within ``timeout``, else why not."""
    try:
        host, port = parse_address(address)
        _, writer = await asyncio.wait_for(asyncio.open_connection(dial_host(host), port), timeout)
    except asyncio.TimeoutError:
        return f"no answer within {timeout:g} s"
    except (OSError, ValueError) as e:
        return str(e) or type(e).__name__
    writer.close()
    return None


@dataclass
class JoinGrant:
    """A node group's join token and what it has been used for."""

    token: str
    max_joins: int
    joins: int = 0
    revoked: bool = False


class JoinService:
    """The head's side: join tokens, and ``join_node``, which checks a new node, then
    registers it.

    A join token is made per node group by a driver (``create_join_token``). It authenticates
    a connection to the head that may call one method, ``exchange_join_token``, which hands
    the cluster token to at most ``max_joins`` nodes of the right versions; it is revoked
    when its group is removed. Anything else on such a connection — a driver registering,
    listing nodes, submitting — is refused with the reason (see ``transport``).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        directory: NodeDirectory,
        on_joined: Callable[[Connection, str], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.directory = directory
        self.on_joined = on_joined
        self.grants: dict[str, JoinGrant] = {}  # group -> its grant
        #: group -> its Slurm batch jobs, cancelled if the head stops before the group goes
        self.jobs_at_exit: dict[str, list[str]] = {}
        for name in ("join_node", "create_join_token", "revoke_join_token",
                     "exchange_join_token", "cancel_jobs_at_exit"):  # fmt: skip
            endpoint.rpc[name] = getattr(self, name)

    def create_join_token(self, conn: Connection | None, group: str, max_joins: int) -> str:
        grant = self.grants.get(group)
        if grant is None or grant.revoked:
            grant = self.grants[group] = JoinGrant(new_token(), int(max_joins))
            allowed = frozenset({"exchange_join_token"})
            self.endpoint.restricted_tokens[grant.token] = (_label(group), allowed)
        else:  # the group grows (adapt): more nodes may join with the same token
            grant.max_joins += int(max_joins)
        return grant.token

    def cancel_jobs_at_exit(self, conn: Connection | None, group: str, ids: list[str]) -> None:
        """Remember ``group``'s Slurm jobs: a driver killed outright cannot cancel those still
        queued, and the head outlives it long enough to (``cancel_jobs``)."""
        bad = [i for i in ids if not isinstance(i, str) or not SLURM_JOB_ID.fullmatch(i)]
        if bad:
            raise ValueError(f"not Slurm job ids: {bad!r}")
        self.jobs_at_exit[group] = list(ids)

    def cancel_jobs(self) -> None:
        """The head stops: cancel the jobs of groups nobody removed (``scancel`` of a job
        that already ended does nothing)."""
        ids = [i for group in self.jobs_at_exit.values() for i in group]
        self.jobs_at_exit.clear()
        if not ids:
            return
        try:
            done = subprocess.run(["scancel", *ids], capture_output=True, text=True,
                                  timeout=SCANCEL_TIMEOUT_S, check=False)  # fmt: skip
            log.info("cancelled Slurm jobs %s: %s", " ".join(ids), done.stderr.strip() or "ok")
        except (OSError, subprocess.SubprocessError) as e:
            log.warning("could not cancel Slurm jobs %s: %s", " ".join(ids), e)

    def revoke_join_token(self, conn: Connection | None, group: str) -> bool:
        self.jobs_at_exit.pop(group, None)  # removed by its driver, jobs and all
        grant = self.grants.get(group)
        if grant is None:
            return False
        grant.revoked = True  # still recognised, so a late node is told why it cannot join
        return True

    def exchange_join_token(self, conn: Connection, their: dict[str, str]) -> str:
        """The cluster token, for a node that proved it holds a live join token."""
        why = version_mismatch(versions(), their)
        if why:
            raise JoinError(why)
        if conn.allowed is None:  # it already holds the cluster token
            return self.endpoint.token
        group = _group_of(conn.info.get("token_label", ""))
        grant = self.grants.get(group)
        if grant is None:
            raise JoinError(f"unknown join token (group {group})")
        if grant.revoked:
            raise JoinError(f"the join token of node group {group} was revoked (the group "
                            "was removed, or its driver shut down)")  # fmt: skip
        if grant.joins >= grant.max_joins:
            raise JoinError(f"the join token of node group {group} was already used by "
                            f"{grant.joins} node(s), all the group asked for")  # fmt: skip
        grant.joins += 1
        log.info("a node of group %s joins from %s", group, conn.peer)
        return self.endpoint.token

    async def join_node(
        self, conn: Connection, node_id: str, info: dict[str, Any], their: dict[str, str]
    ) -> Any:
        why = version_mismatch(versions(), their)
        if why:
            log.warning("refused node at %s (%s): %s", info.get("address"), conn.peer, why)
            raise JoinError(why)
        address = info["address"]
        failed = await reachable(self.endpoint.loop, address, CONFIG.handshake_timeout_s)
        if failed is not None:
            why = (
                f"the head cannot reach the new node at {address}: {failed}. The node "
                f"connected from {conn.peer.rpartition(':')[0]}; {ADDRESS_HINT}"
            )
            log.warning("refused node: %s", why)
            raise JoinError(why)
        view = self.directory.register_node(conn, node_id, info)
        if self.on_joined is not None:
            self.on_joined(conn, address)
        return view


def _label(group: str) -> str:
    return f"node join token (group {group})"


def _group_of(label: str) -> str:
    return label.removeprefix("node join token (group ").removesuffix(")")


def exchange_token(head_address: str, token: str, where: str) -> str:
    """Trade a join token (or the cluster token) for the cluster token, before a node
    starts; ``where`` is the address the node will advertise, for error messages.

    Runs its own short-lived event loop and leaves no thread behind: the node process
    forks its worker server after this.
    """

    async def go() -> str:
        endpoint = Endpoint(asyncio.get_running_loop(), token)
        install_rpc(endpoint)
        host, port = parse_address(head_address)
        try:
            conn = await endpoint.connect(host, port)
        except AuthenticationError:
            raise JoinError(
                f"authentication failed: the head at {head_address} refused this node's "
                "token (neither its cluster token nor a join token it made)"
            ) from None
        except ClusterConnectionError as e:
            raise JoinError(
                f"this node ({where}) cannot reach the head at {head_address}: {e}"
            ) from None
        try:
            return str(await conn.call("exchange_join_token", versions()))
        except ClusterConnectionError as e:
            raise JoinError(f"lost the head at {head_address} while joining: {e}") from None
        except Exception as e:  # the head refused: its reason, as it gave it
            raise JoinError(str(e).removeprefix("JoinError: ")) from None
        finally:
            conn.close()

    return asyncio.run(go())


async def join_head(
    endpoint: Endpoint,
    agent: Any,
    head_address: str,
    info: dict[str, Any],
    stop: Callable[[], None],
) -> None:
    """The node's side: reach the head, pass its checks, check the peers, hold the lease."""
    host, port = parse_address(head_address)
    if not is_loopback(host):  # we are on another machine: loopback addresses are the head's
        set_loopback_alias(host)
        agent.loopback_alias = host
    try:
        conn = await endpoint.connect(host, port)
    except ClusterConnectionError as e:
        raise JoinError(
            f"this node ({info['address']}) cannot reach the head at {head_address}: {e}"
        ) from None
    conn.info["addr"] = head_address
    conn.post(Hello(agent.address, "node", b"", os.getpid()))
    try:
        view = await conn.call("join_node", agent.node_id, info, versions())
    except ClusterConnectionError:
        raise JoinError(
            f"the head at {head_address} closed the connection while we joined"
        ) from None
    except Exception as e:  # the head refused us: its reason, as it gave it
        conn.close()
        raise JoinError(str(e).removeprefix("JoinError: ")) from None
    await _check_peers(endpoint.loop, agent.node_id, view, head_address)
    agent.head_conn = conn
    agent.head_address = head_address
    agent.cluster_view_update(None, view)
    agent.report = lambda available: conn.notify("node_update", agent.node_id, available)
    agent.fetch_view = lambda: conn.call("cluster_view")
    agent.on_actor_worker_gone = lambda w: conn.notify("actor_worker_gone", w.worker_id)
    agent.on_owner_gone = lambda owner: conn.notify("owner_gone", owner)
    previous = endpoint.on_close

    def on_close(c: Connection) -> None:
        if c is conn:
            log.error("lost the head at %s: this node leaves the cluster", head_address)
            stop()
        elif previous is not None:
            previous(c)

    endpoint.on_close = on_close
    endpoint.loop.create_task(_hold_lease(conn, head_address, stop))

    def leave(c: Connection | None) -> None:
        """The head asks this node to go (its group is being removed): stop cleanly."""
        if c is conn:
            log.warning("the head asked this node to leave: it was removed from the cluster")
            stop()

    endpoint.rpc["leave"] = leave


async def _check_peers(
    loop: asyncio.AbstractEventLoop, me: str, view: dict[str, Any], head_address: str
) -> None:
    timeout = CONFIG.handshake_timeout_s
    targets = [(nid, v["address"]) for nid, v in view.items() if nid != me]
    results = await asyncio.gather(*(reachable(loop, addr, timeout) for _, addr in targets))
    failed = [
        f"node {nid[:12]} at {addr} ({why})"
        for (nid, addr), why in zip(targets, results, strict=True)
        if why is not None
    ]
    if failed:
        raise JoinError(
            f"this node cannot reach {'; '.join(failed)}, the address(es) the head at "
            f"{head_address} gives for them. The head or that node advertises an address "
            f"that is not reachable from here: {ADDRESS_HINT}"
        )


async def _hold_lease(conn: Connection, head_address: str, stop: Callable[[], None]) -> None:
    """Leave the cluster when the head stops answering for ``head_lease_s``."""
    answered = time.monotonic()
    while not conn.closed:
        try:
            await asyncio.wait_for(conn.call("ping"), HEARTBEAT_S)
            answered = time.monotonic()
        except asyncio.TimeoutError:
            pass
        except Exception:
            return  # the connection closed: on_close stops the node
        silent = time.monotonic() - answered
        if silent > CONFIG.head_lease_s:
            log.error(
                "the head at %s has not answered for %.0f s: this node leaves the cluster",
                head_address,
                silent,
            )
            stop()
            return
        await asyncio.sleep(max(0.0, HEARTBEAT_S - (time.monotonic() - answered)))
