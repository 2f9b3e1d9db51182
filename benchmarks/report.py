"""Turn collected results into the comparison table and nbcluster's target verdicts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from benchmarks.catalog import BASELINE, SPEC_BY_NAME, SUBJECT, Spec

Result = dict[str, Any]
#: results[workload][framework] -> what the child reported (value / error / skipped).
Results = dict[str, dict[str, Result]]


@dataclass(frozen=True)
class Verdict:
    """nbcluster against Ray and against its target, for one workload."""

    speedup: float | None  # > 1: nbcluster is better than Ray
    threshold: float | None  # the figure nbcluster must reach
    target_text: str
    met: bool | None


def fmt(value: float) -> str:
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def cell(result: Result | None) -> str:
    if result is None:
        return "-"
    if "value" in result:
        return fmt(result["value"])
    if "error" in result:
        return "error (see below)"
    return str(result.get("skipped", "?"))


def speedup(spec: Spec, subject: float, baseline: float) -> float:
    """How many times better ``subject`` is than ``baseline`` (> 1: better)."""
    return subject / baseline if spec.higher_is_better else baseline / subject


def speedup_text(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.2f}x faster"
    return f"{1 / value:.2f}x slower"


def value_of(row: dict[str, Result], framework: str) -> float | None:
    result = row.get(framework)
    return None if result is None or "value" not in result else float(result["value"])


def verdict(spec: Spec, row: dict[str, Result]) -> Verdict:
    ours, ray = value_of(row, SUBJECT), value_of(row, BASELINE)
    ratio = speedup(spec, ours, ray) if ours and ray else None  # (zero: nothing measured)
    threshold, text = _target(spec, ray)
    met = None
    if threshold is not None and ours is not None:
        met = ours >= threshold if spec.higher_is_better else ours <= threshold
    return Verdict(ratio, threshold, text, met)


def _target(spec: Spec, ray_measured: float | None) -> tuple[float | None, str]:
    if spec.target_absolute is not None:
        sign = ">" if spec.higher_is_better else "<"
        return spec.target_absolute, f"{sign} {fmt(spec.target_absolute)}"
    ray = ray_measured if ray_measured is not None else spec.ray_reference
    if spec.target_factor is None or ray is None:
        return None, "-"
    star = "" if ray_measured is not None else "*"
    factor = spec.target_factor
    if spec.higher_is_better:
        return ray * factor, f">= {fmt(ray * factor)} ({factor:g}x Ray{star})"
    return ray / factor, f"<= {fmt(ray / factor)} (Ray/{factor:g}{star})"


def met_text(met: bool | None) -> str:
    return {None: "-", True: "met", False: "NOT met"}[met]


def rows(results: Results, frameworks: list[str], status: dict[str, str]) -> list[list[str]]:
    """Header and one row of cells per workload."""
    out = [["workload", "unit", *frameworks, "nbcluster vs ray", "target", "met"]]
    for name, row in results.items():
        spec = SPEC_BY_NAME[name]
        v = verdict(spec, row)
        cells = [status.get(fw) or cell(row.get(fw)) for fw in frameworks]
        out.append(
            [name, spec.unit, *cells, speedup_text(v.speedup), v.target_text, met_text(v.met)]
        )
    return out


def table(results: Results, frameworks: list[str], status: dict[str, str]) -> str:
    """The printable table, with error details and notes below it."""
    lines = _align(rows(results, frameworks, status))
    lines += _errors(results)
    lines += [
        "",
        "nbcluster vs ray: how many times faster nbcluster is than Ray on that figure.",
        "targets are relative to the Ray figure of this run; * = Ray's reference figure.",
    ]
    return "\n".join(lines)


def markdown(results: Results, frameworks: list[str], status: dict[str, str]) -> str:
    """The same table in Markdown (for benchmarks/README.md)."""
    header, *body = rows(results, frameworks, status)
    align = ["---", "---"] + ["---:"] * (len(header) - 4) + ["---", "---"]
    return "\n".join("| " + " | ".join(r) + " |" for r in [header, align, *body])


def _align(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for index, row in enumerate(rows):
        pairs = enumerate(zip(row, widths, strict=True))
        parts = [c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in pairs]
        out.append("  ".join(parts).rstrip())
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return out


def _errors(results: Results) -> list[str]:
    """One line per distinct error of a framework (an init failure hits every workload)."""
    names: dict[tuple[str, str], list[str]] = {}
    for name, row in results.items():
        for fw, result in row.items():
            if "error" in result:
                names.setdefault((fw, result["error"]), []).append(name)
    lines = []
    for (fw, error), workloads in names.items():
        more = f" (+{len(workloads) - 1} more)" if len(workloads) > 1 else ""
        lines.append(f"  {fw}/{workloads[0]}{more}: {error}")
    return ["", "errors:", *lines] if lines else []


def comparison(results: Results) -> dict[str, dict[str, Any]]:
    """Per-workload verdicts, for the JSON output."""
    out: dict[str, dict[str, Any]] = {}
    for name, row in results.items():
        spec = SPEC_BY_NAME[name]
        v = verdict(spec, row)
        out[name] = {
            "unit": spec.unit,
            "higher_is_better": spec.higher_is_better,
            "nbcluster_speedup_vs_ray": v.speedup,
            "target": v.target_text,
            "target_threshold": v.threshold,
            "target_met": v.met,
        }
    return out
