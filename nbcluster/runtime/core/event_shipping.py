"""A driver's or worker's events go to the head: on the core worker's own timer, and on demand.

``events`` records; this module ships. Every ``event_flush_s`` the core worker's loop sends
what was recorded as one ``events`` notification on its connection to the head, headed by
who sent it (kind, pid, node, worker id, address), so events need not repeat it. A state
query flushes first (``flush``), and can ask every worker this process talks to for theirs
(``sync_observed``), so an answer shows at least what the asker has seen.
"""

from __future__ import annotations

import asyncio
import os
from typing import TYPE_CHECKING, Any

from nbcluster.runtime import events
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.core import ref_snapshot

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker


def flush(core: CoreWorker) -> None:
    """Ship this process's events now (loop thread). The state API calls it before a query,
    so a process sees its own doings in the answer."""
    batch = events.drain(core.address)
    if batch is None:
        return
    head = core.head
    if head is not None and not head.closed:
        head.notify("events", _header(core), *batch)


async def flush_confirmed(core: CoreWorker) -> None:
    """Ship this process's events and return once the head has taken them (and everything
    this process sent it before): a ping on the same connection answers after them. A task
    whose reply already left but whose run is not recorded yet is waited for first."""
    await events.replies_recorded()
    flush(core)
    head = core.head
    if head is not None and not head.closed:
        await head.call("ping")


async def sync_observed(core: CoreWorker, timeout: float = 2.0) -> None:
    """Before a state query: make the head hold the events of every worker this process
    talks to (the connections it keeps to leased workers and actors), so the answer shows
    at least what this process has seen: a task whose ``get`` returned is FINISHED, and on
    the timeline. Costs one round trip per such worker, in parallel, per query; the task
    path is untouched. (Node agents among those connections answer "unknown method".)"""
    conns = set(core.conns.values())
    calls = [asyncio.ensure_future(c.call("flush_events")) for c in conns
             if c is not None and not c.closed]  # fmt: skip
    for call in calls:  # best effort: a worker that died has nothing more to tell
        call.add_done_callback(lambda f: f.cancelled() or f.exception())
    if calls:
        await asyncio.wait(calls, timeout=timeout)


def _header(core: CoreWorker) -> list[Any]:
    return [core.kind, os.getpid(), core.node_id, core.worker_id, core.address]


def start(core: CoreWorker) -> None:
    """Start shipping a driver's or worker's events (called once it knows the head)."""
    ref_snapshot.install(core)
    if not events.ENABLED:
        return
    core.endpoint.rpc["flush_events"] = lambda conn: flush_confirmed(core)
    events.reset()  # an earlier cluster's, in a driver that called init again
    interval = CONFIG.event_flush_s

    def tick() -> None:
        if core.closed:
            return
        flush(core)
        core.loop.call_later(interval, tick)

    core.loop.call_later(interval, tick)
