"""Static HTML and plain text of the widgets: what a console, a viewer without widget support
or a saved notebook shows. Styled with JupyterLab's ``--jp-*`` variables (with fallbacks),
so the same table reads in light and dark themes and on GitHub."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from typing import Any

#: Colours of task states, as the live widgets draw them.
STATE_COLORS = {
    "pending": "var(--jp-layout-color3, #bdbdbd)",
    "running": "var(--jp-brand-color1, #1976d2)",
    "finished": "var(--jp-success-color1, #388e3c)",
    "failed": "var(--jp-error-color1, #d32f2f)",
    "cancelled": "var(--jp-warn-color1, #f57c00)",
}
_FONT = ("font-family: var(--jp-ui-font-family, sans-serif); "
         "font-size: var(--jp-ui-font-size1, 13px)")


def fmt_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def fmt_seconds(s: float | None) -> str:
    if s is None or math.isnan(s) or math.isinf(s):
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60)} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    """A plain HTML table; cells are escaped unless they are ``Raw``."""
    th = "".join(f"<th style='text-align:left;padding:2px 8px'>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td style='padding:2px 8px'>{_cell(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return (f"<table class='{cls}' style='border-collapse:collapse;{_FONT}'>"
            f"<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>")  # fmt: skip


class Raw(str):
    """HTML that ``table`` puts in a cell as it is."""


def _cell(c: Any) -> str:
    return c if isinstance(c, Raw) else escape(str(c))


def bar(parts: Sequence[tuple[str, float]], width: int = 240) -> Raw:
    """A stacked bar: (state, fraction) parts, coloured as the widgets colour states."""
    segs = "".join(
        f"<div style='width:{max(0.0, f) * 100:.2f}%;background:{STATE_COLORS.get(s, s)}'></div>"
        for s, f in parts if f > 0
    )  # fmt: skip
    style = (f"display:flex;width:{width}px;height:10px;border-radius:3px;overflow:hidden;"
             "background:var(--jp-layout-color2, #eee)")
    return Raw(f"<div style='{style}'>{segs}</div>")


def box(title: str, inner: str, cls: str) -> str:
    head = f"<div style='font-weight:600;margin:2px 0 4px'>{escape(title)}</div>"
    return (f"<div class='{cls}' style='{_FONT};color:var(--jp-ui-font-color1, inherit)'>"
            f"{head}{inner}</div>")  # fmt: skip


def text_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """The same table in plain text, columns aligned."""
    cells = [list(map(str, headers))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)).rstrip()
                     for r in cells)  # fmt: skip
