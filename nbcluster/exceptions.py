"""Exceptions a user of nbcluster can catch, with Ray's names as aliases.

Every error that crosses a process boundary is re-raised in the caller as one of
these, so user code written against Ray's exception names keeps working.
"""

from __future__ import annotations

from typing import Any


class NbclusterError(Exception):
    """Base class of every error raised by the runtime itself."""


class TaskError(NbclusterError):
    """A task or actor method raised; re-raised at ``get`` with the remote traceback.

    ``as_instanceof_cause`` builds a subclass of both this class and the user's
    exception class, so ``except ValueError`` still catches a remote ``ValueError``.
    """

    def __init__(
        self,
        function_name: str = "",
        traceback_str: str = "",
        cause: BaseException | None = None,
        pid: int | None = None,
        ip: str | None = None,
    ) -> None:
        self.function_name = function_name
        self.traceback_str = traceback_str
        self.cause = cause
        self.pid = pid
        self.ip = ip
        super().__init__(self._message())

    def _message(self) -> str:
        where = f" (pid={self.pid}, ip={self.ip})" if self.pid is not None else ""
        kind = type(self.cause).__name__ if self.cause else "Error"
        head = f"{kind} in {self.function_name}{where}"
        return f"{head}\n{self.traceback_str}".rstrip()

    def __str__(self) -> str:
        return self._message()

    def __reduce__(self) -> Any:
        # The cause travels as its own pickle: a caller that cannot unpickle it (its class
        # is not importable there, its __init__ wants other arguments) still gets the task's
        # error and traceback, with a cause that says what went wrong.
        cause, name = None, ""
        if self.cause is not None:
            name = type(self.cause).__name__
            try:
                import cloudpickle

                cause = cloudpickle.dumps(self.cause)
            except Exception:
                cause = None
        return (
            _rebuild_task_error,
            (self.function_name, self.traceback_str, cause, name, self.pid, self.ip),
        )

    def as_instanceof_cause(self) -> TaskError:
        """Return an error that is both a ``TaskError`` and an instance of the cause's class."""
        cause_cls = type(self.cause) if self.cause is not None else None
        if cause_cls is None or issubclass(cause_cls, TaskError):
            return self
        try:
            cls: Any = _dual_class(cause_cls)
            # BaseException.__new__: some builtin bases (MemoryError) refuse their own __new__
            # for a subclass with another base.
            err: TaskError = BaseException.__new__(cls)
            TaskError.__init__(
                err, self.function_name, self.traceback_str, self.cause, self.pid, self.ip
            )
            err.args = getattr(self.cause, "args", err.args)
            return err
        except TypeError:  # a cause class that cannot be subclassed (e.g. final, or bad layout)
            return self


def _rebuild_task_error(
    function_name: str, traceback_str: str, cause: bytes | None, name: str,
    pid: int | None, ip: str | None,
) -> TaskError:  # fmt: skip
    err: BaseException | None = None
    if cause is not None:
        import pickle

        try:
            err = pickle.loads(cause)
        except Exception as e:
            err = NbclusterError(
                f"the task raised {name}, which cannot be rebuilt here "
                f"({type(e).__name__}: {e}); its traceback is above"
            )
    elif name:
        err = NbclusterError(f"the task raised {name}, which could not be pickled")
    return TaskError(function_name, traceback_str, err, pid, ip)


_DUAL_CACHE: dict[type, type] = {}


def _dual_class(cause_cls: type) -> type:
    cls = _DUAL_CACHE.get(cause_cls)
    if cls is None:
        def _str(self: TaskError) -> str:
            return TaskError._message(self)

        cls = type(
            f"TaskError({cause_cls.__name__})",
            (TaskError, cause_cls),
            {"__str__": _str, "__reduce__": TaskError.__reduce__, "__module__": __name__},
        )
        _DUAL_CACHE[cause_cls] = cls
    return cls


class GetTimeoutError(NbclusterError, TimeoutError):
    """``get`` did not finish within its timeout."""


class TaskCancelledError(NbclusterError):
    """The task was cancelled with ``cancel`` before it produced a result."""


class TaskPlacementGroupRemoved(NbclusterError):
    """The placement group the task was to run in was removed before it ran."""

    def __str__(self) -> str:
        return "The placement group corresponding to this task has been removed."


class WorkerCrashedError(NbclusterError):
    """The worker process running the task died, and no retries were left."""


class ActorError(NbclusterError):
    """Base class of actor failures."""


class ActorDiedError(ActorError):
    """The actor's process died or was killed, and it will not (or can no longer) restart."""


class ActorUnschedulableError(ActorDiedError):
    """The actor can never be placed: its hard NodeAffinity names a node that is not alive."""


class ActorUnavailableError(ActorError):
    """The actor is restarting; the call may be retried."""


class ObjectLostError(NbclusterError):
    """Every copy of the object is gone and it cannot be rebuilt."""

    def __init__(self, object_ref_hex: str = "", reason: str = "") -> None:
        self.object_ref_hex = object_ref_hex
        self.reason = reason
        super().__init__(f"Object {object_ref_hex} is lost: {reason}" if object_ref_hex else reason)

    def __reduce__(self) -> Any:
        return (type(self), (self.object_ref_hex, self.reason))


class OwnerDiedError(ObjectLostError):
    """The process that owned the object (and held its value or location) died."""


class ObjectReconstructionFailedError(ObjectLostError):
    """Lineage reconstruction of a lost object failed."""


class ObjectStoreFullError(NbclusterError, MemoryError):
    """The node's object store cannot hold the object, even after spilling."""


class OutOfMemoryError(NbclusterError):
    """The task was killed because its node ran low on memory."""


class SerializationError(NbclusterError, TypeError):
    """A value could not be pickled (or unpickled) to cross a process boundary."""


class AuthenticationError(NbclusterError, ConnectionError):
    """The peer did not prove it holds the cluster token (or we could not prove it)."""


class ClusterConnectionError(NbclusterError, ConnectionError):
    """The cluster (head node) cannot be reached or went away."""


class ClusterNotFoundError(ClusterConnectionError):
    """No running cluster of this user matches (none, or several and none was chosen)."""


class UnsafeSessionDirectoryError(NbclusterError, PermissionError):
    """The directory for session files is not private to this user, so it is not used."""


class QuotaExceededError(NbclusterError, ValueError):
    """A user of a shared cluster asked for more CPUs or object store bytes than their
    quota allows; the message says which quota, how much is in use and how much was asked.
    (A ValueError, as a request no node can ever place: its tasks fail instead of waiting.)"""


# Ray's names, so code written for Ray catches the same errors.
RayError = NbclusterError
RayTaskError = TaskError
RayActorError = ActorDiedError
RaySystemError = NbclusterError
ObjectFreedError = ObjectLostError

__all__ = [
    "ActorDiedError",
    "ActorError",
    "ActorUnavailableError",
    "ActorUnschedulableError",
    "AuthenticationError",
    "ClusterConnectionError",
    "ClusterNotFoundError",
    "GetTimeoutError",
    "NbclusterError",
    "ObjectFreedError",
    "ObjectLostError",
    "ObjectReconstructionFailedError",
    "ObjectStoreFullError",
    "OutOfMemoryError",
    "OwnerDiedError",
    "QuotaExceededError",
    "RayActorError",
    "RayError",
    "RaySystemError",
    "RayTaskError",
    "SerializationError",
    "TaskCancelledError",
    "TaskError",
    "TaskPlacementGroupRemoved",
    "UnsafeSessionDirectoryError",
    "WorkerCrashedError",
]
