"""Hosting an actor inside a worker process: its instance and how its calls run.

A worker hosts at most one actor for its whole life. Calls arrive in order per caller and
run in one of three ways, chosen at creation as in Ray:
- *sync* (default): one at a time on the main thread, in arrival order;
- *threaded* (``max_concurrency > 1``, or ``concurrency_groups``, with plain methods): on
  pools of threads, one per concurrency group (the default group has ``max_concurrency``);
- *async* (any ``async def`` method): as coroutines on the actor's own event loop, up to
  ``max_concurrency`` (default 1000) at once, or the size of their concurrency group;
  ``await ref`` works inside them.

An actor ends gracefully (its atexit handlers run) by ``exit_actor()``, by
``__ray_terminate__``, when its last handle is gone, and when its node shuts down;
``kill()`` ends it at once.
"""

from __future__ import annotations

import asyncio
import atexit
import inspect
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from nbcluster import exceptions as exc
from nbcluster.runtime import events as ev
from nbcluster.runtime.execute.proctitle import set_title
from nbcluster.runtime.ownership.reference_table import KIND_ERROR, KIND_INLINE
from nbcluster.runtime.wire import protocol as P

if TYPE_CHECKING:
    from nbcluster.runtime.execute.executor import Executor, TaskContext

DEFAULT_ASYNC_CONCURRENCY = 1000
#: How long a graceful end waits for the calls still running (seconds).
DRAIN_S = 5.0


class ActorExit(BaseException):
    """Raised by ``exit_actor()`` to end the actor after the current call."""


class ActorHost:
    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.instance: Any = None
        self.actor_id: bytes | None = None
        self.mode = "sync"
        self._pools: dict[str | None, ThreadPoolExecutor] = {}  # threaded: group -> pool
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sems: dict[str | None, asyncio.Semaphore] = {}  # async: group -> limit
        self._methods: dict[str, Any] = {}
        self.resources: dict[str, float] = {}
        self.gpus: list[int] = []
        self.exiting = False
        #: exit_actor() was called: the actor ends after the call, even if it caught the exit
        self.should_exit = False
        self._tasks: dict[bytes, asyncio.Task[Any]] = {}  # async calls running, by task id
        #: what a handle to this actor needs (``get_runtime_context().current_actor``)
        self.job: str | None = None
        self.owner = ""
        self.class_name = ""
        self.method_table: dict[str, list[Any]] = {}
        self.max_task_retries = 0
        #: its runtime_env (set for its whole life) and namespace, inherited by its calls
        self.env: dict[str, Any] | None = None
        self.namespace: str | None = None

    def method(self, name: str) -> Any:
        m = self._methods.get(name)
        if m is None:
            if self.instance is None:
                raise exc.ActorDiedError("this worker hosts no actor (it was not created)")
            m = self._builtin(name) or getattr(self.instance, name)
            self._methods[name] = m
        return m

    def _builtin(self, name: str) -> Any:
        """Ray's methods of every actor: ready, call a function with the instance, and end
        gracefully after the calls before it."""
        if name == "__ray_ready__":
            return lambda: True
        if name == "__ray_call__":
            return lambda fn, *args, **kwargs: fn(self.instance, *args, **kwargs)
        if name == "__ray_terminate__":
            return _terminate
        return None

    def group_of(self, method: str, asked: str | None) -> str | None:
        group = asked or (self.method_table.get(method) or [None, None, None])[2]
        return group if group in self._pools or group in self._sems else None

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
        self.job, self.owner = extra.get("job"), extra.get("owner", "")
        self.class_name = getattr(cls, "__name__", "Actor")
        self.method_table = extra.get("methods") or {}
        self.max_task_retries = extra.get("max_task_retries") or 0
        self.env, self.namespace = ctx.env, ctx.namespace
        set_title(self.class_name)  # ps shows nbcluster::Counter, as Ray
        max_concurrency = extra.get("max_concurrency")
        groups: dict[str, int] = extra.get("groups") or {}
        is_async = any(
            inspect.iscoroutinefunction(v) or inspect.isasyncgenfunction(v)
            for _, v in inspect.getmembers(cls, inspect.isfunction)
        )
        if is_async:
            self.mode = "async"
            self._start_loop(max_concurrency or DEFAULT_ASYNC_CONCURRENCY, groups)
        elif (max_concurrency and max_concurrency > 1) or groups:
            self.mode = "threaded"
            self._pools[None] = ThreadPoolExecutor(max_concurrency or 1, "actor")
            for group, size in groups.items():
                self._pools[group] = ThreadPoolExecutor(size, f"actor-{group}")

        def construct(*a: Any, **kw: Any) -> None:
            self.instance = cls(*a, **kw)

        ctx.fn_name = f"{self.class_name}.__init__"
        self.resources, self.gpus = ctx.resources, ctx.gpus  # held for the actor's life
        self.executor.run(construct, args, kwargs, ctx, num_returns)

    def call(
        self, fn: Any, args: list[Any], kwargs: dict[str, Any], ctx: TaskContext, num_returns: int
    ) -> None:
        ctx.resources, ctx.gpus = self.resources, self.gpus
        ctx.env, ctx.namespace = self.env, self.namespace
        if self.mode == "sync":
            self.executor.run(fn, args, kwargs, ctx, num_returns)
        elif self.mode == "threaded":
            pool = self._pools.get(ctx.group) or self._pools[None]
            pool.submit(self._run_threaded, fn, args, kwargs, ctx, num_returns)
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
            self.executor.reply_error(
                ctx.conn, ctx.task_id, P.DONE_APP_ERROR, ctx.fn_name,
                exc.ActorDiedError("the actor exited via exit_actor()"),
            )  # fmt: skip
            return
        self.executor.run(fn, args, kwargs, ctx, num_returns)

    # -- async actors -------------------------------------------------------------------------
    def _start_loop(self, max_concurrency: int, groups: dict[str, int]) -> None:
        loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            self._sems[None] = asyncio.Semaphore(max_concurrency)
            for group, size in groups.items():
                self._sems[group] = asyncio.Semaphore(size)
            ready.set()
            loop.run_forever()

        threading.Thread(target=run, name="actor-loop", daemon=True).start()
        ready.wait()
        self._loop = loop

    async def _run_async(
        self, fn: Any, args: list[Any], kwargs: dict[str, Any], ctx: TaskContext, num_returns: int
    ) -> None:
        ex = self.executor
        conn = ctx.conn
        assert conn is not None
        async with self._sems.get(ctx.group) or self._sems[None]:
            if self.exiting:  # the actor is ending: no call starts any more
                ex.reply_error(conn, ctx.task_id, P.DONE_APP_ERROR, ctx.fn_name,
                                exc.ActorDiedError("the actor exited"))  # fmt: skip
                return
            if not ex.start_call(ctx):
                return
            ex.core.current_task = ctx
            task = asyncio.current_task()
            assert task is not None
            self._tasks[ctx.task_id] = task
            if ev.ENABLED:
                ev.task_running(ctx.task_id, ctx.fn_name)
            try:
                value = fn(*args, **kwargs)
                if inspect.isawaitable(value):
                    value = await value
            except ActorExit:
                await self._exit_off_loop(ctx)
                return
            except asyncio.CancelledError:  # cancel(): as asyncio cancels a task
                ex.reply(conn, ctx.task_id, P.DONE_CANCELLED, [[KIND_ERROR, b"", 0]], [])
                return
            except Exception as e:
                ex.reply_error(conn, ctx.task_id, P.DONE_APP_ERROR, ctx.fn_name, e)
                return
            finally:
                self._tasks.pop(ctx.task_id, None)
                ex.end_call(ctx)
                sys.stdout.flush()
                sys.stderr.flush()
            # Results may need the store (a blocking round trip): not on the actor's loop.
            await asyncio.get_running_loop().run_in_executor(
                None, ex.send_results, conn, ctx.task_id, ctx.fn_name, value, num_returns
            )
            if self.should_exit:  # the call caught exit_actor(): the actor still ends
                await self._exit_off_loop(None)

    async def _exit_off_loop(self, ctx: TaskContext | None) -> None:
        """``exit`` waits for the other calls, so not on the loop they run on."""
        await asyncio.get_running_loop().run_in_executor(None, self.exit, ctx)

    def cancel_running(self, task_id: bytes) -> None:
        """``cancel()`` of a running call: an async one is cancelled as its asyncio task;
        a sync or threaded one only learns of it (``is_canceled()``), as in Ray."""
        task = self._tasks.get(task_id)
        if task is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(task.cancel)

    # -- exit -----------------------------------------------------------------------------------
    def exit(self, ctx: TaskContext | None, for_good: bool = True) -> None:
        """End the actor gracefully: answer the call that ended it (if it has not answered),
        let the other calls running finish (a while), run the atexit handlers, and go.
        ``for_good``: tell the head not to restart it (exit_actor, __ray_terminate__); a node
        shutting down does not (the actor may restart elsewhere)."""
        if self.exiting:
            return
        self.exiting = True
        core = self.executor.core
        if for_good:
            try:
                core.head_call("actor_exiting", self.actor_id, timeout=5)
            except Exception:
                pass
        if ctx is not None and ctx.conn is not None:
            self.executor.reply(ctx.conn, ctx.task_id, P.DONE_OK, [[KIND_INLINE, _NONE, 0]], [])
        self._drain(ctx)
        try:
            atexit._run_exitfuncs()  # what the user registered, as a normal exit would
        except BaseException:
            pass
        self.executor.leave()

    def _drain(self, ctx: TaskContext | None) -> None:
        """Wait (a while) for the calls still running to send their results."""
        me = threading.current_thread()
        if self.mode == "threaded":
            for pool in self._pools.values():
                if not any(t is me for t in getattr(pool, "_threads", ())):
                    pool.shutdown(wait=True, cancel_futures=True)
        elif self.mode == "async":
            import time

            mine = ctx.task_id if ctx is not None else None
            deadline = time.monotonic() + DRAIN_S
            while set(self._tasks) - {mine} and time.monotonic() < deadline:
                time.sleep(0.01)  # the loop thread finishes them


_NONE = b"\x80\x05N."  # pickle of None


def _terminate() -> None:
    raise ActorExit()


def exit_actor() -> None:
    """End the current actor after this call: later calls fail with ActorDiedError.

    As in Ray, the actor ends even if the calling code catches the exception this raises;
    its atexit handlers run. In a constructor, the actor never becomes alive."""
    from nbcluster.runtime.ownership.object_ref import get_core

    core = get_core()
    if core is None or core.executor is None or core.executor.actor_host.actor_id is None:
        raise TypeError("exit_actor() can only be called inside an actor")
    core.executor.actor_host.should_exit = True
    raise ActorExit()


__all__ = ["KIND_ERROR", "ActorExit", "ActorHost", "exit_actor"]
