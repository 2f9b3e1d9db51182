"""The worker's side of a streaming generator task: each value goes home as it is yielded.

The task's function is wrapped: the wrapper runs the generator and sends each value to the
owner at once (``GENERATOR_ITEM``: inline if small, else written to this node's store
first), then returns None, the task's own result, which the executor sends as usual after
the last value. A retried task skips the values its owner already has.

A cancel interrupts the generator's own code (a normal task) but never the sending of a
value: the wrapper looks for the cancel after each value and stops the generator there (the
only way for an actor's generator, which is never interrupted).
"""

from __future__ import annotations

import asyncio
import inspect
from typing import TYPE_CHECKING, Any

from nbcluster.runtime.objects import serialization as ser
from nbcluster.runtime.ownership.generators import item_id
from nbcluster.runtime.wire import protocol as P

if TYPE_CHECKING:
    from nbcluster.runtime.execute.executor import Executor, TaskContext


def streamed(fn: Any, ex: Executor, ctx: TaskContext, skip: int) -> Any:
    """``fn`` as a streaming task: every value it yields from index ``skip`` on is sent."""
    if inspect.isasyncgenfunction(fn):  # an async actor's method

        async def run_async(*args: Any, **kwargs: Any) -> None:
            loop = asyncio.get_running_loop()
            index = 0
            async for value in fn(*args, **kwargs):
                if index >= skip:  # (writing to the store blocks: not on the actor's loop)
                    await loop.run_in_executor(None, send_value, ex, ctx, index, value)
                index += 1
                if ctx.cancelled:
                    return

        return run_async

    def run(*args: Any, **kwargs: Any) -> None:
        gen = fn(*args, **kwargs)
        if not inspect.isgenerator(gen):
            raise TypeError(
                f"{ctx.fn_name} returned {type(gen).__name__}, not a generator: "
                "num_returns='streaming' is for generator functions"
            )
        for index, value in enumerate(gen):
            if index >= skip:
                with ex.uninterrupted(ctx):
                    send_value(ex, ctx, index, value)
            if ctx.cancelled:
                gen.close()
                return

    return run


def send_value(ex: Executor, ctx: TaskContext, index: int, value: Any) -> None:
    """Send the ``index``-th value yielded to the task's owner."""
    conn = ctx.conn
    assert conn is not None
    owner = conn.info.get("addr", "")
    oid = item_id(ctx.task_id, index)
    s = ser.serialize(value, f"value {index} yielded by {ctx.fn_name}()")
    result = ex.result_of(oid, s, owner)
    conn.post(P.GeneratorItem(ctx.task_id, index, result, ex.hand_off(oid, owner, s.contained)))


__all__ = ["send_value", "streamed"]
