// Actors: each actor's state, restarts, node, process and how many calls it served.

import type { LiveEvent } from "../api";
import { badge, clock, debounce, h, num, short } from "../dom";
import { KeyedTable } from "../table";
import type { Context, View } from "../view";

type Actor = Record<string, any>;

export class ActorsView implements View {
  el = h("section", { class: "view", dataset: { view: "actors" } });
  private calls: Record<string, number> = {};
  private table: KeyedTable<Actor>;
  private refreshCalls = debounce(() => void this.loadCalls(), 1000);

  constructor(private ctx: Context) {
    this.table = new KeyedTable<Actor>([
      { key: "actor_id", title: "Actor", cell: (a) => h("code", null, short(a.actor_id, 12)) },
      { key: "class_name", title: "Class", cell: (a) => a.class_name || "–" },
      { key: "name", title: "Name", cell: (a) => a.name || "" },
      { key: "state", title: "State", cell: (a) => badge(a.state) },
      { key: "restarts", title: "Restarts", cls: "num", cell: (a) => String(a.num_restarts ?? 0) },
      { key: "node", title: "Node", cell: (a) => short(a.node_id) },
      { key: "pid", title: "Pid", cell: (a) => (a.pid ? String(a.pid) : "–") },
      { key: "calls", title: "Calls", cls: "num", cell: (a) => h("a", { href: `#/tasks?actor_id=${a.actor_id}` }, num(this.calls[a.actor_id] || 0)) },
      { key: "since", title: "Since", cell: (a) => clock(a.start_time_ms) },
      { key: "death", title: "Death cause", cell: (a) => a.death_cause ? h("span", { class: "err-line" }, a.death_cause) : "" },
    ], (a) => a.actor_id, { rowAttr: "data-actor-id", empty: "No actor yet." });
  }

  async refresh(): Promise<void> {
    this.el.replaceChildren(this.table.el);
    try {
      const [got, calls] = await Promise.all([
        this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, "actors", { limit: 500 })),
        this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, "actor_calls")),
      ]);
      this.calls = calls;
      this.table.setAll(got.items.slice().reverse());
    } catch (e) {
      this.ctx.failed(e);
    }
  }

  private async loadCalls(): Promise<void> {
    try {
      this.calls = await this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, "actor_calls"));
      for (const a of this.table.items()) this.table.put(a, false);
    } catch { /* next time */ }
  }

  onEvents(evs: LiveEvent[]): void {
    for (const ev of evs) {
      if (ev.type === "ACTOR_STATE") {
        const d = ev.data;
        const old = this.table.get(d.actor_id) || { start_time_ms: ev.time ? ev.time * 1000 : null };
        this.table.put({ ...old, ...d, death_cause: d.death_cause || null }, !this.table.get(d.actor_id));
      } else if (ev.type === "TASK_SUBMITTED" && ev.data.actor_id) {
        this.refreshCalls();
      }
    }
  }
}
