"""How values cross process boundaries: cloudpickle with pickle-5 out-of-band buffers.

A value is pickled once. Buffer-protocol payloads (NumPy arrays, bytes-like blocks) are kept
out of band, so a large array is copied exactly once: straight into the shared-memory store,
where every reader on the node maps it read-only without another copy.

Two encodings exist:
- *inline*: small values travel inside messages as ``bytes`` (no out-of-band buffers) or as
  ``[meta, buf, buf, ...]``;
- *store*: a header, the pickle stream and the buffers at 64-byte aligned offsets inside one
  store allocation (see ``store_layout``).

ObjectRefs found while pickling are recorded, so whoever receives the value can become a
borrower of them (reference counting across processes).
"""

from __future__ import annotations

import collections
import io
import pickle
import struct
import threading
import types
from typing import Any

import cloudpickle

from nbcluster.exceptions import NbclusterError, SerializationError
from nbcluster.runtime.objects.store_client import StoreMapping, layout, write_buffers

_HDR = struct.Struct("<II")  # number of buffers, header size
_LEN = struct.Struct("<QQ")  # (offset, length) per part

_local = threading.local()


def _code_reduce(code: types.CodeType) -> Any:
    """cloudpickle's reduction of a code object, keeping its real file name.

    cloudpickle (>= 3.1) renames every pickled code object ``<dynamic-code>`` so payloads are
    deterministic; that also strips remote tracebacks of their file names and source lines,
    which users rely on to find the failing line. Function identity here is the hash of the
    payload, which stays stable for an unchanged function.
    """
    fn, args = _CLOUDPICKLE_CODE_REDUCE(code)
    return fn, tuple(code.co_filename if a == "<dynamic-code>" else a for a in args)


_CLOUDPICKLE_CODE_REDUCE = cloudpickle.Pickler.dispatch_table[types.CodeType]


class _Pickler(cloudpickle.Pickler):  # type: ignore[misc]
    dispatch_table = collections.ChainMap(
        {types.CodeType: _code_reduce}, cloudpickle.Pickler.dispatch_table
    )


class Serialized:
    """A pickled value: the pickle stream, its out-of-band buffers and the refs inside it."""

    __slots__ = ("buffers", "contained", "meta", "size")

    def __init__(self, meta: bytes, buffers: list[memoryview], contained: list[Any]) -> None:
        self.meta = meta
        self.buffers = buffers
        self.contained = contained
        self.size = len(meta) + sum(b.nbytes for b in buffers)

    def inline(self) -> bytes | list[bytes]:
        if not self.buffers:
            return self.meta
        return [self.meta, *(bytes(b) for b in self.buffers)]

    def _sizes(self) -> list[int]:
        n = len(self.buffers)
        return [_HDR.size + _LEN.size * (n + 1), len(self.meta), *(b.nbytes for b in self.buffers)]

    def store_layout(self) -> tuple[list[int], int]:
        """Offsets of header, meta and each buffer inside the allocation, and the total size."""
        return layout(self._sizes())

    def write_to(self, mapping: StoreMapping, offset: int) -> None:
        """Write header, meta and buffers into the store allocation at ``offset``."""
        offsets, _ = self.store_layout()
        sizes = self._sizes()
        header = bytearray(_HDR.pack(len(self.buffers), sizes[0]))
        for off, n in zip(offsets[1:], sizes[1:], strict=True):
            header += _LEN.pack(off, n)
        write_buffers(mapping, offset, [header, self.meta, *self.buffers])


def serialize(value: Any, what: str = "value") -> Serialized:
    """Pickle ``value``; a clear SerializationError names the type that could not be pickled."""
    buffers: list[pickle.PickleBuffer] = []
    contained: list[Any] = []
    prev = getattr(_local, "refs", None)
    _local.refs = contained
    f = io.BytesIO()
    try:
        _Pickler(f, protocol=5, buffer_callback=buffers.append).dump(value)
    except Exception as e:
        raise SerializationError(
            f"Could not serialize {what} of type {type(value).__name__!r}: {e}. "
            "Values sent to the cluster must be picklable (by cloudpickle)."
        ) from e
    finally:
        _local.refs = prev
    views = []
    for b in buffers:
        try:
            views.append(b.raw())
        except BufferError:  # non-contiguous buffer: fall back to a contiguous copy
            views.append(memoryview(bytes(b)))
    return Serialized(f.getvalue(), views, contained)


def note_contained_ref(ref: Any) -> None:
    """Called by ObjectRef/ActorHandle reducers while a value is being pickled."""
    refs = getattr(_local, "refs", None)
    if refs is not None:
        refs.append(ref)


def deserialize_inline(data: bytes | list[bytes]) -> Any:
    if isinstance(data, bytes):
        return pickle.loads(data)
    return pickle.loads(data[0], buffers=data[1:])


def deserialize_store(view: memoryview) -> tuple[Any, list[memoryview]]:
    """Unpickle from a read-only store view, zero-copy.

    Returns the value and the out-of-band buffers it was given: the value (a NumPy array,
    say) keeps those alive — not ``view`` — so the caller pins the object for as long as any
    of them lives.
    """
    n, _ = _HDR.unpack_from(view, 0)
    parts = []
    for i in range(n + 1):
        off, length = _LEN.unpack_from(view, _HDR.size + _LEN.size * i)
        parts.append(view[off : off + length])
    value = pickle.loads(parts[0], buffers=parts[1:])
    return value, parts[1:]


def error_bytes(err: BaseException) -> bytes:
    """An error as the value of a failed object (or task reply): ``get`` unpickles and
    raises it. An error that cannot be pickled travels as its type's name and message."""
    try:
        return pickle.dumps(err, protocol=5)
    except Exception:
        return pickle.dumps(NbclusterError(f"{type(err).__name__}: {err}"))


def dumps_function(fn: Any) -> bytes:
    f = io.BytesIO()
    try:
        _Pickler(f, protocol=5).dump(fn)
        return f.getvalue()
    except Exception as e:
        raise SerializationError(
            f"Could not serialize function {getattr(fn, '__name__', fn)!r}: {e}"
        ) from e


def pickle_inband(s: Serialized) -> bytes:
    """Re-encode a value with its out-of-band buffers carried inside one bytes object."""
    return pickle.dumps(_Inband(s.meta, [bytes(b) for b in s.buffers]), protocol=5)


class _Inband:
    def __init__(self, meta: bytes, bufs: list[bytes]) -> None:
        self.meta = meta
        self.bufs = bufs

    def __reduce__(self) -> Any:
        return (_load_inband, (self.meta, self.bufs))


def _load_inband(meta: bytes, bufs: list[bytes]) -> Any:
    return pickle.loads(meta, buffers=bufs)
