"""Entry point of a worker process (forked from the head's fork server)."""

from __future__ import annotations

import os

from nbcluster.runtime.core.core_worker import CoreWorker
from nbcluster.runtime.execute.executor import Executor
from nbcluster.runtime.execute.proctitle import set_title


def run_worker(agent_address: str, token: str, host: str, advertise: str) -> None:
    """``host``/``advertise``: where the worker listens and how other nodes reach it."""
    set_title("worker")  # an actor's worker takes its class's name (``actor_host``)
    core = CoreWorker("worker", agent_address, token, host=host, advertise=advertise)
    # The agent is our lifeline: if it goes, so do we (nothing could use our results).
    core.on_agent_lost = lambda: os._exit(0)
    executor = Executor(core)  # before start: a task may arrive as soon as we register
    core.start()
    executor.run_forever()
