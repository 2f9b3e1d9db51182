"""A node process's events and resource samples go to the event log, on the agent's timer.

The head node's event log is in the same process, so its node hands batches to
``EventLog.ingest`` directly; other nodes send them over their connection to the head.
Node processes run no tasks, so only the plain batch travels (no task events).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbcluster.runtime import events
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.node.node_stats import NodeSampler

if TYPE_CHECKING:
    from nbcluster.runtime.node.node_agent import NodeAgent
    from nbcluster.runtime.wire.transport import Connection

#: Ships one batch: ``send(header, batch)``.
Send = Callable[[list[Any], bytes | None], None]


def send_via(conn: Connection) -> Send:
    """A node's sender when the event log is in another process (the head)."""
    return lambda header, batch: conn.notify("events", header, batch)


def start(agent: NodeAgent, send: Send | None) -> None:
    """Ship a node process's events with ``send`` (None: to the head over the agent's
    connection to it) and sample its resources every ``resource_sample_s``."""
    if not events.ENABLED:
        return
    if send is None:
        assert agent.head_conn is not None
        send = send_via(agent.head_conn)
    ship = send
    header = ["node", os.getpid(), agent.node_id, b"", agent.address]
    interval = CONFIG.event_flush_s
    sampler = NodeSampler(agent)

    def tick() -> None:
        if agent.closing:
            return
        if events.BUF:
            ship(header, events.take())
        agent.loop.call_later(interval, tick)

    def sample() -> None:
        if agent.closing:
            return
        events.node_stats(agent.node_id, sampler.sample())
        agent.loop.call_later(CONFIG.resource_sample_s, sample)

    agent.loop.call_later(interval, tick)
    agent.loop.call_soon(sample)
    agent.store.store.on_event = events.store_event
