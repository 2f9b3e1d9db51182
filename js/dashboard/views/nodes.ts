// Nodes and workers: each node's resources and use, and the worker processes on it.

import type { LiveEvent } from "../api";
import { usage } from "../charts";
import { badge, bytes, clock, debounce, h, num, short } from "../dom";
import { KeyedTable } from "../table";
import type { Context, View } from "../view";

type Rec = Record<string, any>;

function resources(total: Record<string, number>, avail: Record<string, number>): string {
  return Object.keys(total).sort().map((k) => `${num(total[k] - (avail[k] ?? 0), 1)}/${num(total[k], 1)} ${k}`).join(", ");
}

export class NodesView implements View {
  el = h("section", { class: "view", dataset: { view: "nodes" } });
  private nodes: KeyedTable<Rec>;
  private workers: KeyedTable<Rec>;
  private reloadWorkers = debounce(() => void this.loadWorkers(), 500);

  constructor(private ctx: Context) {
    this.nodes = new KeyedTable<Rec>([
      { key: "node_id", title: "Node", cell: (n) => h("code", null, short(n.node_id, 12)) },
      { key: "address", title: "Address", cell: (n) => n.address },
      { key: "state", title: "State", cell: (n) => h("span", null, badge(n.state), n.death_reason ? h("div", { class: "muted small" }, n.death_reason) : "") },
      { key: "resources", title: "Resources (used/total)", cell: (n) => resources(n.resources_total, n.resources_available) },
      { key: "cpu", title: "CPU", cell: (n) => usage(n.cpu_percent || 0, 100, n.cpu_percent == null ? "–" : `${n.cpu_percent.toFixed(0)}%`) },
      { key: "mem", title: "Memory", cell: (n) => usage(n.mem_used || 0, n.mem_total || 0, `${bytes(n.mem_used)} / ${bytes(n.mem_total)}`) },
      { key: "store", title: "Object store", cell: (n) => usage(n.object_store_used || 0, n.object_store_capacity || 0, `${bytes(n.object_store_used)} / ${bytes(n.object_store_capacity)}`) },
      { key: "gpus", title: "GPUs", cell: (n) => (n.gpus || []).map((g: Rec) => `GPU${g.index} ${g.utilization.toFixed(0)}% ${bytes(g.mem_used)}`).join(", ") || "–" },
      { key: "demand", title: "Waiting", cell: (n) => Object.entries(n.pending_demand || {}).map(([k, v]) => `${v}× ${k}`).join(", ") || "–" },
    ], (n) => n.node_id, { rowAttr: "data-node-id" });
    this.workers = new KeyedTable<Rec>([
      { key: "pid", title: "Pid", cell: (w) => String(w.pid) },
      { key: "type", title: "Type", cell: (w) => w.worker_type.toLowerCase() },
      { key: "state", title: "State", cell: (w) => badge(w.state) },
      { key: "node", title: "Node", cell: (w) => short(w.node_id) },
      { key: "address", title: "Address", cell: (w) => w.address },
      { key: "rss", title: "Memory (RSS)", cls: "num", cell: (w) => bytes(w.memory_rss) },
      { key: "started", title: "Started", cell: (w) => clock(w.start_time_ms) },
    ], (w) => w.worker_id, { rowAttr: "data-worker-id", max: 500 });
  }

  async refresh(): Promise<void> {
    this.el.replaceChildren(h("h3", null, "Nodes"), this.nodes.el, h("h3", null, "Workers and drivers"), this.workers.el);
    try {
      const got = await this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, "nodes", { limit: 1000 }));
      this.nodes.setAll(got.items);
    } catch (e) {
      this.ctx.failed(e);
    }
    await this.loadWorkers();
  }

  private async loadWorkers(): Promise<void> {
    try {
      const got = await this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, "workers", { limit: 500 }));
      this.workers.setAll(got.items.slice().reverse());
    } catch (e) {
      this.ctx.failed(e);
    }
  }

  onEvents(evs: LiveEvent[]): void {
    for (const ev of evs) {
      if (ev.type === "NODE_STATS") {
        const n = this.nodes.get(ev.data.node_id);
        const st = ev.data.stats || {};
        if (n) this.nodes.put({ ...n, cpu_percent: st.cpu_percent, mem_used: st.mem_used, mem_total: st.mem_total,
          object_store_used: st.store_used, object_store_capacity: st.store_capacity, gpus: st.gpus || [],
          resources_available: st.available || n.resources_available, pending_demand: st.demand || {} }, false);
      } else if (ev.type.startsWith("NODE_")) {
        void this.refresh();
      } else if (ev.type.startsWith("WORKER_")) {
        this.reloadWorkers();
      }
    }
  }
}
