"""What the notebook calls things: the variable holding each ObjectRef, and each cell's
execution count, so the graph and the store say ``big`` and ``In[3]``, not hex ids.

``ref_names`` reads the IPython user namespace (top-level names, and the items of lists,
tuples and dicts up to ``MAX_ITEMS`` long): a plain scan, done at most once a second by a
widget, never on the runtime's paths. ``CELLS`` maps a cell's request id to its ``In[n]``; the
kernel extension fills it after each cell, and a widget for the current cell its own entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

from nbcluster.runtime.ownership.object_ref import ObjectRef

#: Containers longer than this are not looked into.
MAX_ITEMS = 10_000
#: A cell's request msg_id -> its execution count.
CELLS: dict[str, int] = {}


def _shell() -> Any:
    """The running IPython shell, or None.

    ``get_ipython`` is typed only in newer IPython releases; the annotated name keeps one spelling
    that type-checks against every IPython the package allows (8.0 and later).
    """
    try:
        from IPython.core.getipython import get_ipython
    except ImportError:
        return None
    find: Callable[[], Any] = get_ipython
    return find()


def _user_ns() -> dict[str, Any] | None:
    shell = _shell()
    return None if shell is None else cast(dict[str, Any], shell.user_ns)


def ref_names(ns: dict[str, Any] | None = None) -> dict[str, str]:
    """Object id (hex) -> the first name that holds it: ``x``, ``refs[3]``, ``d['k']``."""
    ns = _user_ns() if ns is None else ns
    out: dict[str, str] = {}
    if not ns:
        return out
    for _ in range(3):  # the namespace may change under us (a cell runs meanwhile)
        try:
            items = list(ns.items())
            break
        except RuntimeError:
            continue
    else:
        return out
    for name, value in items:
        if name.startswith("_"):
            continue
        if isinstance(value, ObjectRef):
            out.setdefault(value.hex(), name)
        elif isinstance(value, (list, tuple)) and 0 < len(value) <= MAX_ITEMS:
            for i, v in enumerate(value):
                if isinstance(v, ObjectRef):
                    out.setdefault(v.hex(), f"{name}[{i}]")
        elif isinstance(value, dict) and 0 < len(value) <= MAX_ITEMS:
            try:
                pairs = list(value.items())
            except RuntimeError:
                continue
            for k, v in pairs:
                if isinstance(v, ObjectRef):
                    out.setdefault(v.hex(), f"{name}[{k!r}]")
    return out


def current_cell() -> tuple[str | None, int | None]:
    """The running cell's request id and ``In[n]``, in a kernel; (None, None) elsewhere."""
    from nbcluster.runtime.core import output

    tag = output.current_tag()
    msg_id = getattr(tag, "msg_id", None)
    if msg_id is None:
        return None, None
    try:
        from nbcluster.kernel.cell_number import cell_number

        return msg_id, cell_number(_shell())
    except Exception:
        return msg_id, None
