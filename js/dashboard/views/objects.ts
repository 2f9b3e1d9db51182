// Objects: what the object stores and owners hold — size, owner, where, call site, and on
// demand who references each object and whether a reader pins it.

import type { LiveEvent } from "../api";
import { badge, bytes, clock, h, short, tid } from "../dom";
import { KeyedTable } from "../table";
import type { Context, View } from "../view";

type Obj = Record<string, any>;

export class ObjectsView implements View {
  el = h("section", { class: "view", dataset: { view: "objects" } });
  private table: KeyedTable<Obj>;
  private refs = new Map<string, any[]>();
  private totals = h("span", { class: "muted" });

  constructor(private ctx: Context) {
    this.table = new KeyedTable<Obj>([
      { key: "object_id", title: "Object", cell: (o) => h("code", null, tid(o.object_id)) },
      { key: "size", title: "Size", cls: "num", cell: (o) => bytes(o.object_size) },
      { key: "state", title: "Where", cell: (o) => badge(o.state) },
      { key: "node", title: "Node", cell: (o) => short(o.node_id) },
      { key: "owner", title: "Owner", cell: (o) => (o.owner_pid ? `pid ${o.owner_pid}` : o.owner || "–") },
      { key: "task", title: "Made by", cell: (o) => o.task_id ? h("a", { href: `#/tasks/${o.task_id}` }, tid(o.task_id)) : "put" },
      { key: "call_site", title: "Call site", cell: (o) => h("code", { class: "small" }, o.call_site || "–") },
      { key: "created", title: "Created", cell: (o) => clock(o.creation_time_ms) },
      { key: "refs", title: "References", cell: (o) => references(this.refs.get(o.object_id)) },
    ], (o) => o.object_id, { rowAttr: "data-object-id", empty: "No object in the stores." , max: 500 });
  }

  async refresh(): Promise<void> {
    const button = h("button", { type: "button", onclick: () => void this.loadRefs(button) }, "Who references them?");
    this.el.replaceChildren(h("div", { class: "toolbar" }, this.totals, button), this.table.el);
    try {
      const got = await this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, "objects", { limit: 500 }));
      this.table.setAll(got.items.slice().reverse());
      this.count(got.total);
    } catch (e) {
      this.ctx.failed(e);
    }
  }

  private count(total?: number): void {
    const items = this.table.items();
    const sum = items.reduce((a, o) => a + (o.object_size || 0), 0);
    this.totals.textContent = `${items.length}${total !== undefined ? ` of ${total}` : ""} objects, ${bytes(sum)} `;
  }

  // Asks every process why its objects live (Ray's `memory` summary): not on every tick.
  private async loadRefs(button: HTMLButtonElement): Promise<void> {
    button.disabled = true;
    try {
      const got = await this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, "memory"));
      this.refs.clear();
      for (const o of got.objects) {
        this.refs.set(o.object_id, o.references || []);
        if (!this.table.get(o.object_id)) this.table.put(o, false);
      }
      for (const o of this.table.items()) this.table.put(o, false);
      this.count();
    } catch (e) {
      this.ctx.failed(e);
    } finally {
      button.disabled = false;
    }
  }

  onEvents(evs: LiveEvent[]): void {
    let changed = false;
    for (const ev of evs) {
      const d = ev.data;
      if (ev.type === "OBJECT_CREATED" && d.location) {
        this.table.put({ object_id: d.object_id, object_size: d.size, state: "IN_MEMORY", call_site: d.call_site,
          owner_pid: ev.source.pid, owner: ev.source.address, creation_time_ms: ev.time ? ev.time * 1000 : null,
          node_id: ev.source.node_id }, true);
        changed = true;
      } else if (ev.type === "OBJECT_SPILLED" || ev.type === "OBJECT_RESTORED") {
        const o = this.table.get(d.object_id);
        if (o) { this.table.put({ ...o, state: ev.type === "OBJECT_SPILLED" ? "SPILLED" : "IN_MEMORY" }, false); changed = true; }
      } else if (ev.type === "OBJECT_FREED") {
        if (this.table.get(d.object_id)) { this.table.remove(d.object_id); changed = true; }
      }
    }
    if (changed) this.count();
  }
}

function references(refs: any[] | undefined): Node | string {
  if (!refs) return "";
  if (!refs.length) return "none";
  return h("span", null, refs.map((r) => h("span", { class: "ref-chip", title: r.address },
    `${r.reference_type.toLowerCase().replace(/_/g, " ")} (${r.process} ${r.pid})`)));
}
