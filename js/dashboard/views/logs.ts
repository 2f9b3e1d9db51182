// Logs: the head node's own output (and its workers' outside tasks), tailed live, searchable.
// What a task prints goes to the notebook or script that submitted it, not here.

import { h } from "../dom";
import type { Context, View } from "../view";

const KEEP = 400_000;  // characters kept in the page

export class LogsView implements View {
  el = h("section", { class: "view", dataset: { view: "logs" } });
  private text = "";
  private next: number | null = null;
  private pre = h("pre", { class: "log", dataset: { log: "head" } });
  private search = h("input", { type: "search", placeholder: "search", "aria-label": "search the log" });
  private info = h("span", { class: "muted" });
  private follow = true;
  private busy = false;

  constructor(private ctx: Context) {
    this.search.addEventListener("input", () => this.draw());
  }

  async refresh(): Promise<void> {
    const follow = h("label", null, h("input", {
      type: "checkbox", checked: this.follow, onchange: (e: Event) => { this.follow = (e.target as HTMLInputElement).checked; },
    }), " follow");
    this.el.replaceChildren(h("div", { class: "toolbar" }, h("b", null, "Head node log "), this.search, follow, this.info), this.pre);
    this.text = "";
    this.next = null;
    await this.load();
  }

  tick(): void { if (this.follow) void this.load(); }

  private async load(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const got = await this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, "log", { offset: this.next ?? -1 }));
      if (got.note) { this.info.textContent = ` ${got.note}`; return; }
      if (this.next !== null && got.offset < this.next) this.text = "";  // the file was truncated
      this.text = (this.text + got.text).slice(-KEEP);
      this.next = got.next;
      this.info.textContent = ` ${got.path} (${got.size} bytes)`;
      this.draw();
    } catch (e) {
      this.ctx.failed(e);
    } finally {
      this.busy = false;
    }
  }

  private draw(): void {
    const q = this.search.value.trim().toLowerCase();
    const lines = this.text.split("\n");
    const shown = q ? lines.filter((l) => l.toLowerCase().includes(q)) : lines;
    if (q) {
      this.pre.replaceChildren(...shown.flatMap((l) => [mark(l, q), "\n"]));
    } else {
      this.pre.textContent = shown.join("\n");
    }
    if (this.follow) this.pre.scrollTop = this.pre.scrollHeight;
  }
}

function mark(line: string, q: string): Node {
  const i = line.toLowerCase().indexOf(q);
  if (i < 0) return document.createTextNode(line);
  return h("span", null, line.slice(0, i), h("mark", null, line.slice(i, i + q.length)), line.slice(i + q.length));
}
