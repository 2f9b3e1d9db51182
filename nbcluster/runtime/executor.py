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

import os
import queue
import signal
import sys
import threading
import traceback
from typing import TYPE_CHECKING, Any

import cloudpickle

from nbcluster import exceptions as exc
from nbcluster.runtime import events as ev
from nbcluster.runtime import protocol as P
from nbcluster.runtime import serialization as ser
from nbcluster.runtime.actor_host import ActorExit, ActorHost
from nbcluster.runtime.config import CONFIG
from nbcluster.runtime.core_worker import error_bytes
from nbcluster.runtime.ids import object_id
from nbcluster.runtime.output import capture_worker_output
from nbcluster.runtime.reference_table import KIND_ERROR, KIND_INLINE, KIND_STORE
from nbcluster.runtime.task_spec import decode_args
from nbcluster.runtime.transport import Connection

if TYPE_CHECKING:
    from nbcluster.runtime.core_worker import CoreWorker


class TaskContext:
    """What ``get_runtime_context`` reports while a task runs."""

    __slots__ = ("conn", "fn_name", "gpus", "resources", "task_id")

    def __init__(
        self,
        task_id: bytes,
        fn_name: str,
        resources: dict[str, float],
        gpus: list[int],
        conn: Connection | None = None,
    ) -> None:
        self.conn = conn  # where the task came from: its output and result go there
        self.task_id = task_id
        self.fn_name = fn_name
        self.resources = resources
        self.gpus = gpus


class Executor:
    def __init__(self, core: CoreWorker) -> None:
        self.core = core
        core.executor = self
        self.queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.fns: dict[bytes, Any] = {}
        self.cancel_target: bytes | None = None
        self.cancelled: set[bytes] = set()
        self.blocked = False
        self._block_depth = 0
        self._block_lock = threading.Lock()
        self.current_conn: Connection | None = None
        #: the task running on the main thread (what a cancel can interrupt); read by the
        #: loop thread, so a plain attribute, not the per-thread current_task
        self.main_task: bytes | None = None
        self.actor_host = ActorHost(self)
        core.endpoint.handlers[P.PUSH_TASK] = self.on_push
        core.endpoint.handlers[P.CANCEL_TASK] = self.on_cancel
        signal.signal(signal.SIGINT, self._on_sigint)
        capture_worker_output(core)

    # -- loop thread ------------------------------------------------------------------------
    def on_push(self, conn: Connection, msg: list[Any]) -> None:
        if self.blocked:
            conn.send((P.TASK_REQUEUE, [msg[1]]))
            return
        if ev.ENABLED:
            ev.task_queued(msg[1])
        self.queue.put((conn, msg))

    def on_cancel(self, conn: Connection, msg: list[Any]) -> None:
        task_id = msg[1]
        self.core.submitter.cancel_children(task_id)
        if self.main_task == task_id:  # running: interrupt it with a real SIGINT
            self.cancel_target = task_id
            os.kill(os.getpid(), signal.SIGINT)
        else:
            self.cancelled.add(task_id)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.main_task is not None and self.cancel_target == self.main_task:
            raise KeyboardInterrupt

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

    def _give_back_backlog(self) -> None:
        backlog: dict[Connection, list[bytes]] = {}
        if self.current_conn is not None:
            backlog[self.current_conn] = []
        while True:
            try:
                conn, msg = self.queue.get_nowait()
            except queue.Empty:
                break
            backlog.setdefault(conn, []).append(msg[1])
        for conn, tids in backlog.items():
            conn.send((P.TASK_REQUEUE, tids))

    # -- main thread ------------------------------------------------------------------------
    def run_forever(self) -> None:
        get = self.queue.get
        while True:
            item = get()
            if item is None:
                return
            try:
                self.execute(*item)
            except KeyboardInterrupt:  # a cancel that landed between tasks
                continue

    def execute(self, conn: Connection, msg: list[Any]) -> None:
        _, task_id, fn_id, fn_bytes, fn_name, blob, deps, num_returns, extra = msg
        if task_id in self.cancelled:
            self.cancelled.discard(task_id)
            self.reply(conn, task_id, P.DONE_CANCELLED, [[KIND_ERROR, b"", 0]], [])
            return
        extra = extra or {}
        try:
            if "actor" in extra:
                fn = self.actor_host.method(extra["method"])
            else:
                fn = self.fns.get(fn_id)
                if fn is None:
                    if fn_bytes is None:
                        raise exc.NbclusterError(f"function {fn_name} was never sent here")
                    fn = self.fns[fn_id] = cloudpickle.loads(fn_bytes)
            args, kwargs = decode_args(blob, [self._dep_value(d) for d in deps])
        except Exception as e:
            self._reply_error(conn, task_id, P.DONE_SYSTEM_ERROR, fn_name, e)
            return
        ctx = TaskContext(task_id, fn_name, extra.get("res", {}), extra.get("gpus", []), conn)
        if "create" in extra:
            self.actor_host.create(fn, args, kwargs, extra, ctx, num_returns)
        elif "actor" in extra:
            self.actor_host.call(fn, args, kwargs, ctx, num_returns)
        else:
            self.run(fn, args, kwargs, ctx, num_returns)

    def run(
        self, fn: Any, args: list[Any], kwargs: dict[str, Any], ctx: TaskContext, num_returns: int
    ) -> None:
        """Run one call on this thread and send its result (or error) home."""
        if ctx.gpus or ctx.resources.get("GPU"):
            os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ctx.gpus))
        core = self.core
        conn, task_id = ctx.conn, ctx.task_id
        assert conn is not None
        core.current_task = ctx
        self.current_conn = conn
        on_main = threading.current_thread() is threading.main_thread()
        if on_main:
            self.main_task = task_id
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
                if on_main:
                    self.main_task = None
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
            self._reply_error(conn, task_id, P.DONE_APP_ERROR, ctx.fn_name, e)
            return
        del args, kwargs
        self.send_results(conn, task_id, ctx.fn_name, value, num_returns)

    def _reply_error(
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
                if s.size < CONFIG.inline_threshold:
                    results.append([KIND_INLINE, s.inline(), s.size])
                else:
                    oid = object_id(task_id, i + 1)
                    self.core.store_write(oid, s, owner)
                    results.append([KIND_STORE, self.core.agent_address, s.size, oid])
        except Exception as e:
            self._reply_error(conn, task_id, P.DONE_APP_ERROR, fn_name, e)
            return
        wire = []
        if contained:
            self.core.handoffs[task_id] = [owner, contained]
            wire = [[r._id, r._owner] for r in contained]
        self.reply(conn, task_id, P.DONE_OK, results, wire)

    def reply(
        self, conn: Connection, task_id: bytes, status: int, results: list[Any], contained: Any
    ) -> None:
        if ev.ENABLED:  # a flush meanwhile waits for the record (``events.flush_confirmed``)
            ev.REPLYING.add(task_id)
        conn.send((P.TASK_DONE, task_id, status, results, contained))
        if ev.ENABLED:  # after the reply: the owner need not wait for the record
            ev.task_replied(task_id, status, results)


_RUNTIME_DIR = os.path.dirname(os.path.abspath(__file__))


def _format_tb(e: BaseException) -> str:
    tb = e.__traceback__
    # Drop the runtime's own leading frames: the user's frames are what matter.
    while tb is not None and os.path.dirname(tb.tb_frame.f_code.co_filename) == _RUNTIME_DIR:
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(e), e, tb))


def _picklable(e: BaseException) -> BaseException | None:
    """The cause to ship: a nested task's error ships its own cause, so the caller's error
    is still an instance of the class first raised."""
    if isinstance(e, exc.TaskError) and e.cause is not None:
        e = e.cause
    try:
        cloudpickle.dumps(e)
        return e
    except Exception:
        return None
