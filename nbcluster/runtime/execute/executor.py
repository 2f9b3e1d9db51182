"""The worker side of a task: receive it, run it on the main thread, send the result home.

Tasks arrive on the event loop thread and are handed to the main thread through a queue, so a
long task never stops the worker from answering its peers (borrowers, cancellations). Results
go back on the connection the task came from, in the order tasks finish.

Cancellation raises KeyboardInterrupt in the running task (a real SIGINT, so blocking calls
such as ``time.sleep`` are interrupted too). A task that blocks in ``get`` gives its not-yet
started tasks back to their owners and lends its CPU to the node, so nested work always finds
a worker.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NoReturn

import cloudpickle

from nbcluster import exceptions as exc
from nbcluster.runtime import events as ev
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.core import event_shipping
from nbcluster.runtime.core.output import capture_worker_output
from nbcluster.runtime.execute import runtime_env
from nbcluster.runtime.execute.actor_host import ActorExit, ActorHost
from nbcluster.runtime.execute.streaming import streamed
from nbcluster.runtime.ids import object_id
from nbcluster.runtime.objects import serialization as ser
from nbcluster.runtime.objects.serialization import error_bytes
from nbcluster.runtime.ownership.generators import each_value_stored
from nbcluster.runtime.ownership.reference_table import KIND_ERROR, KIND_INLINE, KIND_STORE
from nbcluster.runtime.submit.task_spec import decode_args
from nbcluster.runtime.wire import protocol as P
from nbcluster.runtime.wire.transport import Connection

if TYPE_CHECKING:
    from nbcluster.runtime.core.core_worker import CoreWorker


class TaskContext:
    """What ``get_runtime_context`` reports while a task runs."""

    __slots__ = (
        "cancelled", "conn", "env", "fn_name", "gpus", "group", "last", "namespace", "out",
        "resources", "task_id",
    )  # fmt: skip

    def __init__(
        self,
        task_id: bytes,
        fn_name: str,
        resources: dict[str, float],
        gpus: list[int],
        conn: Connection | None = None,
    ) -> None:
        self.conn = conn  # where the task came from: its output and result go there
        self.out: dict[str, str] = {}  # the stream -> the partial line it printed last
        self.cancelled = False  # cancel() reached this call while it ran (actors only)
        self.group: str | None = None  # an actor call's concurrency group
        self.last = False  # the worker retires after this call (max_calls)
        self.task_id = task_id
        self.fn_name = fn_name
        self.resources = resources
        self.gpus = gpus
        #: its runtime_env and namespace (``api/runtime_env``), inherited by what it submits
        self.env: dict[str, Any] | None = None
        self.namespace: str | None = None


class Executor:
    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        core.executor = self
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.fns: dict[bytes, Any] = {}
        self._calls: dict[bytes, int] = {}  # calls run, per function with max_calls
        self.retiring = False
        #: functions received and not loaded yet (their task may have gone back unstarted)
        self.fn_blobs: dict[bytes, bytes] = {}
        self.cancel_target: bytes | None = None
        # Calls pushed here and not started, those of them cancelled, and those running:
        # a cancel finds its call in one of them or is for a finished one (and dropped).
        self.queued: set[bytes] = set()
        self.cancelled: set[bytes] = set()
        self.running: dict[bytes, TaskContext] = {}
        #: task id -> the objects its arguments made us borrow, reported with its reply
        self.borrowed: dict[bytes, list[Any]] = {}
        self._cancel_lock = threading.Lock()
        self.blocked = False
        self._block_depth = 0
        self._block_lock = threading.Lock()
        self.current_conn: Connection | None = None
        #: the task running on the main thread (what a cancel can interrupt); read by the
        #: loop thread, so a plain attribute, not the per-thread current_task
        self.main_task: bytes | None = None
        self.actor_host = ActorHost(self)
        core.endpoint.on(P.PushTask, self.on_push)
        core.endpoint.on(P.CancelTask, self.on_cancel)
        core.endpoint.on(P.StealTasks, self.on_steal)
        core.endpoint.rpc["exit_actor"] = self.on_exit_request
        signal.signal(signal.SIGINT, self._on_sigint)
        capture_worker_output(core)

    # -- loop thread ------------------------------------------------------------------------
    def on_push(self, conn: Connection, msg: P.PushTask) -> None:
        if self.blocked or self.retiring:
            conn.post(P.TaskRequeue([msg.task_id], True))
            return
        if ev.ENABLED:
            ev.task_queued(msg.task_id)
        with self._cancel_lock:
            self.queued.add(msg.task_id)
        if msg.fn_bytes is not None and msg.fn_id not in self.fns:  # kept if its task goes back
            self.fn_blobs[msg.fn_id] = msg.fn_bytes
        self.queue.put((conn, msg))

    def on_cancel(self, conn: Connection, msg: P.CancelTask) -> None:
        """``cancel()`` as Ray defines it: a call that has not started never runs; a running
        task is interrupted (KeyboardInterrupt, a real SIGINT so blocking calls stop too); a
        running actor call is not (an actor has state), it can see ``is_canceled()``; an
        async actor's call is cancelled as an asyncio task. A finished one is left alone."""
        task_id = msg.task_id
        self.core.submitter.cancel_children(task_id)
        interrupt = False
        with self._cancel_lock:
            ctx = self.running.get(task_id)
            if ctx is None:
                if task_id in self.queued:
                    self.cancelled.add(task_id)  # refused when its turn comes
                return
            ctx.cancelled = True
            if self.actor_host.instance is None and self.main_task == task_id:
                self.cancel_target = task_id
                interrupt = True
        if interrupt:
            os.kill(os.getpid(), signal.SIGINT)
        else:
            self.actor_host.cancel_running(task_id)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.main_task is not None and self.cancel_target == self.main_task:
            raise KeyboardInterrupt

    def start_call(self, ctx: TaskContext) -> bool:
        """A call's turn came: False (and its reply sent) if it was cancelled meanwhile."""
        task_id = ctx.task_id
        job = self.actor_host.job or (ctx.conn.info.get("job") if ctx.conn is not None else None)
        if job:
            self.core.job_id = job  # what we submit from this task is this job's work too
        with self._cancel_lock:
            self.queued.discard(task_id)
            if task_id not in self.cancelled:
                self.running[task_id] = ctx
                if threading.current_thread() is threading.main_thread():
                    self.main_task = task_id
                return True
            self.cancelled.discard(task_id)
        assert ctx.conn is not None
        self.reply(ctx.conn, task_id, P.DONE_CANCELLED, [[KIND_ERROR, b"", 0]], [])
        return False

    @contextlib.contextmanager
    def uninterrupted(self, ctx: TaskContext) -> Iterator[None]:
        """A running task's cancel does not interrupt what runs in here (it is noted in
        ``ctx.cancelled``): the runtime's own work for the task, such as sending a value."""
        task_id = ctx.task_id
        with self._cancel_lock:
            mine = self.main_task == task_id
            if mine:
                self.main_task = None
        try:
            yield
        finally:
            if mine:
                with self._cancel_lock:
                    if task_id in self.running:
                        self.main_task = task_id

    def end_call(self, ctx: TaskContext) -> None:
        with self._cancel_lock:
            self.running.pop(ctx.task_id, None)
            if self.main_task == ctx.task_id:
                self.main_task = None

    # -- blocking in get (any thread running a task or an actor call) -----------------------
    def notify_blocked(self) -> None:
        """A task (or actor call) waits in ``get``: lend its CPU to the node meanwhile, so
        the work it waits for finds one. A task also gives back the tasks queued behind it
        (they can run elsewhere); an actor's calls cannot move.

        The notifications go out from the loop in the order they happen (a later
        ``worker_unblocked`` overtaking its ``worker_blocked`` would leave the node lending
        a CPU that is in use); the depth counts threads of a threaded actor blocked at once.
        """
        with self._block_lock:
            self._block_depth += 1
            if self._block_depth == 1:
                self.blocked = self.actor_host.instance is None
                self.core.call_soon(self._blocked_on_loop)

    def notify_unblocked(self) -> None:
        with self._block_lock:
            self._block_depth -= 1
            if self._block_depth == 0:
                self.blocked = False
                self.core.call_soon(self._unblocked_on_loop)

    def _lends_cpu(self) -> bool:
        host = self.actor_host
        return host.instance is None or host.resources.get("CPU", 0.0) > 0

    def _blocked_on_loop(self) -> None:
        if self.actor_host.instance is None:
            self._give_back_backlog()
        if self._lends_cpu():
            self.core.agent.notify("worker_blocked")

    def _unblocked_on_loop(self) -> None:
        if self._lends_cpu():
            self.core.agent.notify("worker_unblocked")

    def on_steal(self, conn: Connection, msg: P.StealTasks) -> None:
        """The owner has an idle worker: give back the tasks queued here, not started."""
        self._give_back(conn, blocked=False)

    def _give_back_backlog(self) -> None:
        self._give_back(self.current_conn, blocked=True)

    def _give_back(self, asker: Connection | None, blocked: bool) -> None:
        """Send the tasks queued here, not started, back to their owners (who always hear
        from us: ``asker`` even if nothing is left)."""
        backlog: dict[Connection, list[bytes]] = {}
        if asker is not None:
            backlog[asker] = []
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            if item is None or item[0] == "exit":  # for the main thread: leave it there
                self.queue.put(item)
                break
            conn, msg = item
            backlog.setdefault(conn, []).append(msg.task_id)
        with self._cancel_lock:
            for tids in backlog.values():
                self.queued.difference_update(tids)
                self.cancelled.difference_update(tids)
        for conn, tids in backlog.items():
            conn.post(P.TaskRequeue(tids, blocked))

    # -- main thread ------------------------------------------------------------------------
    def run_forever(self) -> None:
        get = self.queue.get
        while True:
            item = get()
            if item is None:
                return
            try:
                if item[0] == "exit":
                    self.actor_host.exit(None, for_good=item[1])
                self.execute(*item)
            except KeyboardInterrupt:  # a cancel that landed between tasks
                continue

    def execute(self, conn: Connection, msg: P.PushTask) -> None:
        extra = msg.extra or {}
        env = extra.get("env")
        if env is None:
            self._execute(conn, msg, extra, None)
            return
        try:
            undo = runtime_env.apply(env)  # before loading: the function may import from it
        except Exception as e:
            self._refuse(conn, msg, e)
            return
        try:
            self._execute(conn, msg, extra, env)
        finally:
            if "create" not in extra:  # an actor keeps its environment for life
                undo()

    def _execute(
        self, conn: Connection, msg: P.PushTask, extra: dict[str, Any], env: Any
    ) -> None:
        task_id, fn_id, fn_bytes, fn_name, blob, deps, num_returns, _ = msg
        refs = self.core.refs
        outer = refs.start_collecting()  # refs in the arguments: the reply reports them
        try:
            if "actor" in extra:
                fn = self.actor_host.method(extra["method"])
            else:
                fn = self.fns.get(fn_id)
                if fn is None:
                    fn_bytes = self.fn_blobs.pop(fn_id, fn_bytes)
                    if fn_bytes is None:
                        raise exc.NbclusterError(f"function {fn_name} was never sent here")
                    fn = self.fns[fn_id] = cloudpickle.loads(fn_bytes)
            args, kwargs = decode_args(blob, [self._dep_value(d) for d in deps])
        except Exception as e:
            refs.stop_collecting(outer)
            self._refuse(conn, msg, e)
            return
        fresh = refs.stop_collecting(outer)
        if fresh:
            if "create" in extra:  # its reply goes to the head: register ourselves
                self.core.ownership.register_then(fresh, None)
            else:
                self.borrowed[task_id] = fresh
        ctx = TaskContext(task_id, fn_name, extra.get("res", {}), extra.get("gpus", []), conn)
        ctx.env, ctx.namespace = env, extra.get("ns")
        if "stream" in extra:  # a streaming generator: each value yielded goes home at once
            fn = streamed(fn, self, ctx, extra["stream"])
        if "create" in extra:
            self.actor_host.create(fn, args, kwargs, extra, ctx, num_returns)
        elif "actor" in extra:
            ctx.group = self.actor_host.group_of(extra["method"], extra.get("group"))
            self.actor_host.call(fn, args, kwargs, ctx, num_returns)
        else:
            if extra.get("dynamic"):  # num_returns="dynamic": each value yielded, an object
                fn = each_value_stored(fn, self.core.put)
            max_calls = extra.get("max_calls")
            if max_calls:  # as Ray: a fresh worker after that many calls of the function
                n = self._calls[fn_id] = self._calls.get(fn_id, 0) + 1
                ctx.last = n >= max_calls
            self.run(fn, args, kwargs, ctx, num_returns)

    def _refuse(self, conn: Connection, msg: P.PushTask, e: Exception) -> None:
        """A task that cannot start here (its function, arguments or environment): fail it."""
        with self._cancel_lock:
            self.queued.discard(msg.task_id)
            self.cancelled.discard(msg.task_id)
        self.reply_error(conn, msg.task_id, P.DONE_SYSTEM_ERROR, msg.fn_name, e)

    def run(
        self, fn: Any, args: list[Any], kwargs: dict[str, Any], ctx: TaskContext, num_returns: int
    ) -> None:
        """Run one call on this thread and send its result (or error) home."""
        if ctx.gpus or ctx.resources.get("GPU"):
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ctx.gpus))
        core = self.core
        conn, task_id = ctx.conn, ctx.task_id
        assert conn is not None
        if not self.start_call(ctx):
            return
        core.current_task = ctx
        self.current_conn = conn
        if ev.ENABLED:
            ev.task_running(task_id, ctx.fn_name)
        try:
            try:
                value = fn(*args, **kwargs)
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                core.current_task = None
                self.current_conn = None
                self.end_call(ctx)
        except KeyboardInterrupt:
            if self.cancel_target == task_id:
                self.cancel_target = None
                self.reply(conn, task_id, P.DONE_CANCELLED, [[KIND_ERROR, b"", 0]], [])
                return
            raise
        except ActorExit:
            self.actor_host.exit(ctx)
            return
        except Exception as e:
            self.reply_error(conn, task_id, P.DONE_APP_ERROR, ctx.fn_name, e)
            self._after(ctx)
            return
        del args, kwargs
        self.send_results(conn, task_id, ctx.fn_name, value, num_returns)
        self._after(ctx)

    def _after(self, ctx: TaskContext) -> None:
        if ctx.last:
            self.retire()
        elif self.actor_host.should_exit:  # the call caught exit_actor(): end all the same
            self.actor_host.exit(None)

    def retire(self) -> None:
        """``max_calls`` reached: give back the tasks queued here and exit (the node starts
        a fresh worker)."""
        self.retiring = True
        self.core.call_soon(self._give_back_backlog)
        self.leave()

    def leave(self) -> NoReturn:
        """End this worker process now, once its replies and its events are out: the head
        records the end of every task it ran (events left in the buffer would show those
        tasks unfinished for ever)."""
        core = self.core
        try:
            core.run_sync(lambda: event_shipping.flush_confirmed(core), timeout=5)
        except Exception:
            pass
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)

    def on_exit_request(self, conn: Connection, for_good: bool) -> None:
        """The head or our node asks the actor we host to end gracefully, after the calls
        already queued here."""
        if self.actor_host.actor_id is not None:
            self.queue.put(("exit", for_good))

    def reply_error(
        self, conn: Connection, task_id: bytes, status: int, fn_name: str, e: BaseException
    ) -> None:
        err = exc.TaskError(fn_name, _format_tb(e), _picklable(e), os.getpid(), "127.0.0.1")
        self.reply(conn, task_id, status, [[KIND_ERROR, error_bytes(err), 0]], [])

    def _dep_value(self, dep: list[Any]) -> Any:
        oid, kind, data, _size = dep
        if kind == KIND_INLINE:
            return ser.deserialize_inline(data)
        if kind == KIND_STORE:
            return self.core.store_read(oid, data)
        raise exc.NbclusterError("argument failed")  # owners never send failed args

    def send_results(
        self, conn: Connection, task_id: bytes, fn_name: str, value: Any, num_returns: int
    ) -> None:
        if num_returns == 1:
            values = [value]
        else:
            try:
                values = list(value)
            except TypeError:
                values = []
            if len(values) != num_returns:
                err = exc.TaskError(
                    fn_name,
                    f"ValueError: {fn_name} returned {type(value).__name__}, expected "
                    f"{num_returns} values (num_returns={num_returns})",
                    ValueError(f"expected {num_returns} return values"),
                )
                self.reply(
                    conn, task_id, P.DONE_APP_ERROR, [[KIND_ERROR, error_bytes(err), 0]], []
                )
                return
        results: list[list[Any]] = []
        contained: list[Any] = []
        owner = conn.info.get("addr", "")
        try:
            for i, v in enumerate(values):
                s = ser.serialize(v, f"return value of {fn_name}()")
                contained.extend(s.contained)
                results.append(self.result_of(object_id(task_id, i + 1), s, owner))
        except Exception as e:
            self.reply_error(conn, task_id, P.DONE_APP_ERROR, fn_name, e)
            return
        self.reply(conn, task_id, P.DONE_OK, results, self.hand_off(task_id, owner, contained))

    def result_of(self, oid: bytes, s: ser.Serialized, owner: str) -> list[Any]:
        """A result as it travels: ``[kind, data, size]`` inline, or written to this node's
        store, ``[KIND_STORE, node, size, oid]``."""
        if s.size < CONFIG.inline_threshold:
            return [KIND_INLINE, s.inline(), s.size]
        self.core.store_write(oid, s, owner)
        return [KIND_STORE, self.core.agent_address, s.size, oid]

    def hand_off(self, key: bytes, owner: str, contained: list[Any]) -> list[Any]:
        """The refs inside a result, as they travel; we hold them (under ``key``) until the
        caller registered itself for them (HANDOFF_DONE)."""
        if not contained:
            return []
        self.core.ownership.handoffs[key] = [owner, contained]
        return [[r.binary(), r.owner_address()] for r in contained]

    def reply(
        self, conn: Connection, task_id: bytes, status: int, results: list[Any], contained: Any
    ) -> None:
        """Send a task's outcome home, with the argument refs we still hold (borrowed)."""
        fresh = self.borrowed.pop(task_id, None)
        borrowed = (
            [[e.oid, e.owner] for e in self.core.refs.mark_registered(fresh)] if fresh else []
        )
        if ev.ENABLED:  # a flush meanwhile waits for the record (``flush_confirmed``)
            ev.REPLYING.add(task_id)
        conn.post(P.TaskDone(task_id, status, results, contained, borrowed))
        if ev.ENABLED:  # after the reply: the owner need not wait for the record
            ev.task_replied(task_id, status, results)


#: The runtime package: a traceback's leading frames from here are the runtime's own.
_RUNTIME_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def _format_tb(e: BaseException) -> str:
    tb = e.__traceback__
    # Drop the runtime's own leading frames: the user's frames are what matter.
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_RUNTIME_DIR):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb))


def _picklable(e: BaseException) -> BaseException | None:
    """The cause to ship: a nested task's error ships its own cause, so the caller's error
    is still an instance of the class first raised. One that does not survive pickling
    (an unpicklable attribute, an ``__init__`` that wants other arguments) is replaced by an
    error naming it, rather than failing the reply or the caller's unpickling."""
    if isinstance(e, exc.TaskError) and e.cause is not None:
        e = e.cause
    try:
        pickle.loads(cloudpickle.dumps(e))
        return e
    except Exception as why:
        return exc.NbclusterError(
            f"the task raised {type(e).__name__}: {e}; the exception could not be sent "
            f"back ({type(why).__name__}: {why}); its traceback is above"
        )
