// Cells: the work each notebook cell launched (its tasks, failures and how long it took),
// linking to the cell's tasks and back to the notebook.

import { stateBar } from "../charts";
import { clock, duration, h, num, short } from "../dom";
import { KeyedTable } from "../table";
import type { Context, View } from "../view";
import { lastLine } from "./overview";

type Cell = Record<string, any>;

export class CellsView implements View {
  el = h("section", { class: "view", dataset: { view: "cells" } });
  private table: KeyedTable<Cell>;
  private busy = false;
  private notebook: string | null = null;

  constructor(private ctx: Context) {
    this.table = new KeyedTable<Cell>([
      { key: "cell", title: "Cell", cell: (c) => h("span", null, label(c), h("div", { class: "muted small" }, site(c.call_site))) },
      { key: "tasks", title: "Tasks", cls: "num", cell: (c) => h("a", { href: `#/tasks?tag=${encodeURIComponent(c.key)}` }, num(c.tasks)) },
      { key: "states", title: "States", cell: (c) => stateBar(c.by_state, c.tasks) },
      { key: "failed", title: "Failed", cls: "num", cell: (c) => String(c.by_state.FAILED || 0) },
      { key: "started", title: "Started", cell: (c) => clock(c.first_submitted_ms) },
      { key: "duration", title: "Took", cls: "num", cell: (c) => duration(c.last_ended_ms && c.first_submitted_ms ? c.last_ended_ms - c.first_submitted_ms : null) },
      { key: "error", title: "First error", cell: (c) => c.error ? h("a", { href: `#/tasks/${c.error.task_id}`, class: "err-line" }, `${c.error.error_type}: ${lastLine(c.error.error_message)}`) : "" },
    ], (c) => c.key, { rowAttr: "data-cell", empty: "No cell has launched work yet (tasks submitted outside a notebook cell are not shown here)." });
  }

  async refresh(): Promise<void> {
    const nb = this.notebook && this.ctx.cfg.labUrl
      ? h("p", null, "Notebook: ", h("a", { href: this.ctx.cfg.labUrl + this.notebook.split("/").map(encodeURIComponent).join("/"), target: "_blank", dataset: { notebook: this.notebook } }, this.notebook))
      : null;
    this.el.replaceChildren(nb || "", this.table.el);
    await this.load();
  }

  setNotebook(path: string | null): void { this.notebook = path; }

  tick(): void { void this.load(); }

  private async load(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const got = await this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, "cells"));
      const cells: Cell[] = got.cells.map((c: Cell) => ({ ...c, key: typeof c.tag === "object" ? c.tag.msg_id : String(c.tag) }));
      this.table.setAll(cells.reverse());
    } catch (e) {
      this.ctx.failed(e);
    } finally {
      this.busy = false;
    }
  }
}

function label(c: Cell): string {
  const names = Object.keys(c.names || {});
  const cellName = names.find((n) => /^In\[\d+\]$/.test(n));
  if (cellName) return cellName;
  return `cell ${short(c.key, 8)}: ${names.slice(0, 3).join(", ")}${names.length > 3 ? "…" : ""}`;
}

function site(callSite: string | null): string {
  if (!callSite) return "";
  const parts = callSite.split("/");
  return parts[parts.length - 1];
}
