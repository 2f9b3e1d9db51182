"""Hosting an actor inside a worker process: its instance and how its calls run.

A worker hosts at most one actor for its whole life. Calls arrive in order per caller and
run in one of three ways, chosen at creation as in Ray:
- *sync* (default): one at a time on the main thread, in arrival order;
- *threaded* (``max_concurrency > 1`` with plain methods): on a pool of that many threads;
- *async* (any ``async def`` method): as coroutines on the actor's own event loop, up to
  ``max_concurrency`` (default 1000) at once; ``await ref`` works inside them.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from nbcluster import exceptions as exc
from nbcluster.runtime import events as ev
from nbcluster.runtime import protocol as P
from nbcluster.runtime.proctitle import set_title
from nbcluster.runtime.reference_table import KIND_ERROR, KIND_INLINE

if TYPE_CHECKING:
    from nbcluster.runtime.executor import Executor, TaskContext

DEFAULT_ASYNC_CONCURRENCY = 1000


class ActorExit(BaseException):
    """Raised by ``exit_actor()`` to end the actor after the current call."""


class ActorHost:
    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.instance: Any = None
        self.actor_id: bytes | None = None
        self.mode = "sync"
        self._pool: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sem: asyncio.Semaphore | None = None
        self._methods: dict[str, Any] = {}
        self.resources: dict[str, float] = {}
        self.gpus: list[int] = []
        self.exiting = False

    def method(self, name: str) -> Any:
        m = self._methods.get(name)
        if m is None:
            if self.instance is None:
                raise exc.ActorDiedError("this worker hosts no actor (it was not created)")
            m = getattr(self.instance, name)
            self._methods[name] = m
        return m

    def create(
        self,
        cls: Any,
        args: list[Any],
        kwargs: dict[str, Any],
        extra: dict[str, Any],
        ctx: TaskContext,
        num_returns: int,
    ) -> None:
        """Construct the instance (the creation task); its reply tells the head we are alive."""
        self.actor_id = extra["create"]
        set_title(getattr(cls, "__name__", "actor"))  # ps shows nbcluster::Counter, as Ray
        max_concurrency = extra.get("max_concurrency")
        is_async = any(
            inspect.iscoroutinefunction(v) or inspect.isasyncgenfunction(v)
            for _, v in inspect.getmembers(cls, inspect.isfunction)
        )
        if is_async:
            self.mode = "async"
            self._start_loop(max_concurrency or DEFAULT_ASYNC_CONCURRENCY)
        elif max_concurrency and max_concurrency > 1:
            self.mode = "threaded"
            self._pool = ThreadPoolExecutor(max_concurrency, thread_name_prefix="actor")

        def construct(*a: Any, **kw: Any) -> None:
            self.instance = cls(*a, **kw)

        ctx.fn_name = f"{getattr(cls, '__name__', 'Actor')}.__init__"
        self.resources, self.gpus = ctx.resources, ctx.gpus  # held for the actor's life
        self.executor.run(construct, args, kwargs, ctx, num_returns)

    def call(
        self, fn: Any, args: list[Any], kwargs: dict[str, Any], ctx: TaskContext, num_returns: int
    ) -> None:
        ctx.resources, ctx.gpus = self.resources, self.gpus
        if self.mode == "sync":
            self.executor.run(fn, args, kwargs, ctx, num_returns)
        elif self.mode == "threaded":
            assert self._pool is not None
            self._pool.submit(self._run_threaded, fn, args, kwargs, ctx, num_returns)
        else:
            assert self._loop is not None
            asyncio.run_coroutine_threadsafe(
                self._run_async(fn, args, kwargs, ctx, num_returns), self._loop
            )

    def _run_threaded(
        self, fn: Any, args: list[Any], kwargs: dict[str, Any], ctx: TaskContext, num_returns: int
    ) -> None:
        if self.exiting:  # exit_actor() ran in another thread: no call starts after it
            assert ctx.conn is not None
            self.executor._reply_error(
                ctx.conn, ctx.task_id, P.DONE_APP_ERROR, ctx.fn_name,
                exc.ActorDiedError("the actor exited via exit_actor()"),
            )  # fmt: skip
            return
        self.executor.run(fn, args, kwargs, ctx, num_returns)

    # -- async actors -------------------------------------------------------------------------
    def _start_loop(self, max_concurrency: int) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._sem = asyncio.Semaphore(max_concurrency)
            ready.set()
            loop.run_forever()

        threading.Thread(target=run, name="actor-loop", daemon=True).start()
        ready.wait()
        self._loop = loop

    async def _run_async(
        self, fn: Any, args: list[Any], kwargs: dict[str, Any], ctx: TaskContext, num_returns: int
    ) -> None:
        assert self._sem is not None
        ex = self.executor
        conn = ctx.conn
        assert conn is not None
        async with self._sem:
            ex.core.current_task = ctx
            if ev.ENABLED:
                ev.task_running(ctx.task_id, ctx.fn_name)
            try:
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
            except ActorExit:
                self.exit(ctx)
                return
            except Exception as e:
                ex._reply_error(conn, ctx.task_id, P.DONE_APP_ERROR, ctx.fn_name, e)
                return
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
            # Results may need the store (a blocking round trip): not on the actor's loop.
            await asyncio.get_running_loop().run_in_executor(
                None, ex.send_results, conn, ctx.task_id, ctx.fn_name, value, num_returns
            )

    # -- exit -----------------------------------------------------------------------------------
    def exit(self, ctx: TaskContext) -> None:
        """``exit_actor()``: tell the head not to restart us, answer the call, and go."""
        self.exiting = True
        core = self.executor.core
        try:
            core.head_call("actor_exiting", self.actor_id, timeout=5)
        except Exception:
            pass
        if ctx.conn is not None:
            self.executor.reply(ctx.conn, ctx.task_id, P.DONE_OK, [[KIND_INLINE, _NONE, 0]], [])
            core.run_sync(_noop, timeout=5)  # the loop flushes our reply before this returns
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)


_NONE = b"\x80\x05N."  # pickle of None


async def _noop() -> None:
    return None


def exit_actor() -> None:
    """End the current actor: calls made after this fail with ActorDiedError."""
    from nbcluster.runtime.object_ref import get_core

    core = get_core()
    if core is None or core.executor is None or core.executor.actor_host.instance is None:
        raise TypeError("exit_actor() can only be called inside an actor")
    raise ActorExit()


__all__ = ["KIND_ERROR", "ActorExit", "ActorHost", "exit_actor"]
