"""The object stores: per node used / capacity / spilled bytes, and the largest objects with
their owner, call site, notebook variable, references and why each is pinned. A selected
``put`` object held only by one notebook variable can be freed from here (the variable is
deleted); anything else is explained, not freed.

Node use comes with the head's ``nodes`` digest, which also says when objects changed; who
references what is asked of every process (``memory_summary``), so that is refreshed only
when the objects changed, at most every ``REFS_EVERY_S``, and when the view asks."""

from __future__ import annotations

from typing import Any

from nbcluster.widgets import html as H
from nbcluster.widgets import names
from nbcluster.widgets.cluster_view import Nodes
from nbcluster.widgets.feed import FedView

#: Rows in the table of largest objects.
TOP = 25
REFS_EVERY_S = 2.0


def why_pinned(refs: list[dict[str, Any]]) -> str:
    kinds = sorted({r.get("reference_type", "?") for r in refs})
    borrowers = sum(int(r.get("borrowers") or 0) for r in refs)
    text = ", ".join(k.replace("_", " ").lower() for k in kinds) or "no reference (being freed)"
    return text + (f", {borrowers} borrower{'s' if borrowers != 1 else ''}" if borrowers else "")


class StoreView(FedView):
    kind = "nodes"

    def __init__(self) -> None:
        self.nodes = Nodes()
        self.state: dict[str, Any] = {"nodes": [], "objects": [], "message": ""}
        self._objects: list[Any] = []
        self._dirty = True
        self._refs_due = True
        self._refs_at = 0.0

    def spec(self) -> dict[str, Any]:
        return {"objects": True}

    def on_digest(self, payload: Any, full: bool) -> None:
        if self.nodes.apply(payload, full):
            self._dirty = True
        if full or payload.get("objects_changed"):
            self._refs_due = self._dirty = True

    def tick(self, now: float) -> None:
        if self._refs_due and now - self._refs_at >= REFS_EVERY_S:
            self._refresh_refs(now)
        if not self._dirty:
            return
        self._dirty = False
        self._build()
        self.show()

    def _refresh_refs(self, now: float) -> None:
        from nbcluster.util import state

        self._refs_due = False
        self._refs_at = now
        try:
            self._objects = list(state.memory_summary(timeout=10)["objects"])
        except Exception as e:
            self.state["message"] = f"could not read references: {e}"
        self._dirty = True

    def _build(self) -> None:
        var = names.ref_names()
        objs = sorted(self._objects, key=lambda o: -(o.object_size or 0))[:TOP]
        rows = []
        for o in objs:
            refs = list(o.references or [])
            rows.append({
                "id": o.object_id, "size": o.object_size, "state": o.state,
                "node": (o.node_id or "")[:8], "owner": f"pid {o.owner_pid}",
                "call_site": o.call_site, "variable": var.get(o.object_id, ""),
                "refs": len(refs), "pinned": why_pinned(refs), "put": o.task_id is None,
            })  # fmt: skip
        nodes = self.nodes.rows()
        self.state = {"nodes": nodes, "objects": rows, "message": self.state.get("message", "")}

    def show(self) -> None:
        if self.widget is not None:
            self.widget.set_snapshot(self.state)

    # -- requests -------------------------------------------------------------------------------
    def on_request(self, msg: dict[str, Any]) -> None:
        kind = msg.get("kind")
        if kind in ("resync", "refresh"):
            self._refs_due = self._dirty = True
        elif kind == "free":
            self.state["message"] = self.free(str(msg.get("id", "")))
            self._refs_due = self._dirty = True
            self._refs_at = 0.0
            if self.widget is not None:
                self.widget.set_snapshot(self.state)

    def free(self, oid: str) -> str:
        """Delete the one notebook variable that holds ``oid`` if that is safe; say why not."""
        row = next((o for o in self.state["objects"] if o["id"] == oid), None)
        if row is None:
            return "that object is not in the table any more"
        if not row["put"]:
            return "only objects made by put can be freed here; a task's result is freed " \
                   "when its refs are dropped"
        ns = names._user_ns()
        holders = [k for k, v in (ns or {}).items() if not k.startswith("_") and _is_ref(v, oid)]
        obj = next((o for o in self._objects if o.object_id == oid), None)
        refs = obj.references if obj else []
        others = [r for r in refs
                  if r.get("reference_type") != "LOCAL_REFERENCE" or r.get("borrowers")]
        if len(holders) != 1:
            return (f"not freed: {len(holders)} notebook variables hold it directly"
                    if holders else "not freed: no notebook variable holds it directly")
        if others:
            return f"not freed: it is still {why_pinned(others)}"
        assert ns is not None
        ns.pop(holders[0], None)
        return f"freed {holders[0]} ({H.fmt_bytes(row['size'])}): the variable was deleted"

    # -- static forms -----------------------------------------------------------------------------
    _OHEAD = ("object", "size", "variable", "owner", "call site", "refs", "pinned by")

    def _orows(self) -> list[list[Any]]:
        return [[o["id"][:12], H.fmt_bytes(o["size"]), o["variable"], o["owner"],
                 o["call_site"], o["refs"], o["pinned"]]
                for o in self.state["objects"]]

    def _nrows(self) -> list[list[Any]]:
        return [[n["address"], H.fmt_bytes(n["store_used"]), H.fmt_bytes(n["store_capacity"]),
                 H.fmt_bytes(n["spilled"])] for n in self.state["nodes"]]  # fmt: skip

    def html(self) -> str:
        inner = H.table(("node", "used", "capacity", "spilled"), self._nrows())
        inner += H.table(self._OHEAD, self._orows())
        return H.box("Object store", inner, "nbcluster-store-static")

    def text(self) -> str:
        return ("Object store\n" + H.text_table(("node", "used", "capacity", "spilled"),
                                                 self._nrows())
                + "\n" + H.text_table(self._OHEAD, self._orows()))  # fmt: skip


def _is_ref(value: Any, oid: str) -> bool:
    from nbcluster.runtime.ownership.object_ref import ObjectRef

    return isinstance(value, ObjectRef) and value.hex() == oid
