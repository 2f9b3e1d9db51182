"""The text of ``nbcluster status`` (and of ``%cluster status`` in a notebook).

Nodes and resources come from the head's node directory; store use, physical use and pending
demand from its event log (the nodes' resource samples). The caller must be connected.
"""

from __future__ import annotations


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def status_text() -> str:
    """Every node, alive or dead, then what ``usage_text`` says."""
    import nbcluster as nc
    from nbcluster.runtime.scheduling.limits import describe as describe_limits

    nodes = nc.nodes()
    alive = [n for n in nodes if n["Alive"]]
    out = [f"Nodes: {len(alive)} alive, {len(nodes) - len(alive)} dead"]
    for n in nodes:
        state = "ALIVE" if n["Alive"] else f"DEAD ({n['DeathReason']})"
        res = ", ".join(f"{k}: {v:g}" for k, v in sorted(n["Resources"].items()))
        out.append(f"  {n['NodeID'][:12]}  {n['Address']:<22} {state:<8} {res}")
        if n.get("Limits"):
            out.append(f"  {'':12}  limited to {describe_limits(n['Limits'])}")
    return "\n".join(out) + "\n" + usage_text()


def usage_text() -> str:
    """Resources in use, object store and physical use per node, pending demand."""
    import nbcluster as nc

    total, avail = nc.cluster_resources(), nc.available_resources()
    out = ["Resources (used/total):"]
    for k in sorted(total):
        used = total[k] - avail.get(k, 0.0)
        out.append(f"  {used:g}/{total[k]:g} {k}")
    out += _store_and_demand()
    return "\n".join(out)


def _store_and_demand() -> list[str]:
    """The lines from the event log: store use, physical use and pending demand."""
    from nbcluster.util.state import list_nodes

    nodes = [n for n in list_nodes(limit=None) if n.state == "ALIVE"]
    out = ["Object store (used/capacity):"]
    for n in nodes:
        spilled = f", spilled {n.spilled_objects} ({format_bytes(n.spilled_bytes)})"
        out.append(
            f"  {n.node_id[:12]}  {format_bytes(n.object_store_used)}/"
            f"{format_bytes(n.object_store_capacity)}, {n.object_store_objects} objects{spilled}"
        )
    out.append("Usage (physical):")
    for n in nodes:
        cpu = "-" if n.cpu_percent is None else f"{n.cpu_percent:.0f}%"
        gpus = "".join(
            f", GPU{g['index']} {g['utilization']:.0f}% "
            f"{format_bytes(g['mem_used'])}/{format_bytes(g['mem_total'])}"
            for g in n.gpus
        )
        out.append(
            f"  {n.node_id[:12]}  CPU {cpu}, memory {format_bytes(n.mem_used)}/"
            f"{format_bytes(n.mem_total)}{gpus}"
        )
    demand: dict[str, int] = {}
    for n in nodes:
        for shape, count in n.pending_demand.items():
            demand[shape] = demand.get(shape, 0) + count
    out.append("Pending demand:")
    if not demand:
        out.append("  (no resource demands)")
    for shape, count in sorted(demand.items()):
        never = _fits_no_node(shape, [n.resources_total for n in nodes])
        out.append(f"  {shape}: {count}+ pending lease request(s){never}")
    return out


def _fits_no_node(shape: str, totals: list[dict[str, float]]) -> str:
    """`` (infeasible: ...)`` when no alive node could ever hold a request of ``shape``
    (say 9 CPUs on nodes of 2 and 8: the cluster has 10, no node has 9)."""
    import ast

    from nbcluster.runtime.scheduling.resources import fits

    try:
        wanted = ast.literal_eval(shape)
    except (ValueError, SyntaxError):
        return ""
    if not isinstance(wanted, dict) or not totals or any(fits(t, wanted) for t in totals):
        return ""
    largest = max(totals, key=lambda t: tuple(t.get(k, 0.0) for k in sorted(wanted)))
    has = ", ".join(f"{k}: {largest.get(k, 0.0):g}" for k in sorted(wanted))
    return f"  (infeasible: no node has that much; the largest offers {has})"
