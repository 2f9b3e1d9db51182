// Logs: each node's own output (and its workers' outside tasks), tailed live, searchable.
// What a task prints goes to the notebook or script that submitted it, not here.

import { h, short } from "../dom";
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
  private node: string;
  private nodes = h("select", { "aria-label": "node", name: "node" });

  constructor(private ctx: Context) {
    this.node = ctx.query.get("node") || ctx.id;  // the head's node id is the cluster's
    this.search.addEventListener("input", () => this.draw());
    this.nodes.addEventListener("change", () => this.ctx.go(`#/logs?node=${this.nodes.value}`));
  }

  async refresh(): Promise<void> {
    const follow = h("label", null, h("input", {
      type: "checkbox", checked: this.follow, onchange: (e: Event) => { this.follow = (e.target as HTMLInputElement).checked; },
    }), " follow");
    this.el.replaceChildren(h("div", { class: "toolbar" }, h("b", null, "Log of node "), this.nodes, this.search, follow, this.info), this.pre);
    this.pre.dataset.log = this.node;
    this.text = "";
    this.next = null;
    await Promise.all([this.load(), this.listNodes()]);
  }

  private async listNodes(): Promise<void> {
    try {
      const got = await this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, "nodes", { limit: 1000 }));
      this.nodes.replaceChildren(...got.items.map((n: any) => h("option", {
        value: n.node_id, selected: n.node_id === this.node,
      }, `${short(n.node_id, 12)} ${n.address}${n.node_id === this.ctx.id ? " (head)" : ""}${n.state === "ALIVE" ? "" : " (dead)"}`)));
    } catch (e) {
      this.ctx.failed(e);
    }
  }

  tick(): void { if (this.follow) void this.load(); }

  private async load(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const got = await this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, "log",
        { offset: this.next ?? -1, node: this.node === this.ctx.id ? undefined : this.node }));
      if (got.note) { this.info.textContent = ` ${got.note}`; return; }
      if (this.next !== null && got.offset < this.next) this.text = "";  // the file was truncated
      this.text = (this.text + got.text).slice(-KEEP);
      this.next = got.next;
      this.info.textContent = ` ${got.path} (${got.size} bytes)`;
      this.draw();
    } catch (e: any) {
      if (e?.status === 404) this.info.textContent = ` ${e.message}`;  // a node that is gone
      else this.ctx.failed(e);
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
