// Overview: nodes and resource use with history, task counts by state, recent errors.

import { stateBar, timeChart, usage, STATE_LABEL, STATE_ORDER, type Series } from "../charts";
import { bytes, clock, h, num, short, tid } from "../dom";
import type { Context, View } from "../view";

interface Metrics { series: string[]; nodes: Record<string, Record<string, number[]>>; }

export class OverviewView implements View {
  el = h("section", { class: "view", dataset: { view: "overview" } });
  private data: any = null;
  private metrics: Metrics = { series: [], nodes: {} };
  private last: number | null = null;
  private busy = false;

  constructor(private ctx: Context) {}

  async refresh(): Promise<void> {
    this.last = null;
    this.metrics = { series: [], nodes: {} };
    await this.load();
  }

  tick(): void { void this.load(); }

  private async load(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const ov = await this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, "overview",
        { since: this.last ?? undefined }));
      this.merge(ov.metrics as Metrics);
      this.data = ov;
      this.draw();
    } catch (e) {
      this.ctx.failed(e);
    } finally {
      this.busy = false;
    }
  }

  private merge(m: Metrics): void {
    for (const [node, cols] of Object.entries(m.nodes)) {
      const mine = this.metrics.nodes[node] ||= Object.fromEntries(m.series.map((k) => [k, []]));
      for (const k of m.series) mine[k].push(...(cols[k] || []));
      const n = mine.time.length;
      if (n > 2000) for (const k of m.series) mine[k].splice(0, n - 2000);
      const t = mine.time[mine.time.length - 1];
      if (t !== undefined) this.last = Math.max(this.last ?? 0, t);
    }
    for (const node of Object.keys(this.metrics.nodes)) {
      if (!(node in m.nodes) && this.last === null) delete this.metrics.nodes[node];
    }
  }

  private series(key: string): Series[] {
    return Object.entries(this.metrics.nodes).map(([node, cols]) => ({
      name: short(node), time: cols.time, values: cols[key],
    }));
  }

  private draw(): void {
    const ov = this.data;
    const alive = ov.nodes.filter((n: any) => n.state === "ALIVE");
    const cpuTotal = ov.resources_total.CPU || 0;
    const cpuFree = ov.resources_available.CPU || 0;
    const gpuTotal = ov.resources_total.GPU || 0;
    const memUsed = alive.reduce((a: number, n: any) => a + (n.mem_used || 0), 0);
    const memTotal = alive.reduce((a: number, n: any) => a + (n.mem_total || 0), 0);
    const storeUsed = alive.reduce((a: number, n: any) => a + (n.object_store_used || 0), 0);
    const storeCap = alive.reduce((a: number, n: any) => a + (n.object_store_capacity || 0), 0);
    const byState: Record<string, number> = ov.tasks.by_state;
    const hasGpu = gpuTotal > 0 || alive.some((n: any) => (n.gpus || []).length);

    const cards = h("div", { class: "cards" },
      card("Nodes", `${alive.length}`, `${ov.nodes.length - alive.length} dead · ${ov.workers} workers`, "nodes"),
      card("CPU", `${num(cpuTotal - cpuFree, 1)} / ${num(cpuTotal, 1)}`, "in use by tasks and actors", "cpu",
        usage(cpuTotal - cpuFree, cpuTotal, "")),
      hasGpu ? card("GPU", `${num(gpuTotal - (ov.resources_available.GPU || 0), 1)} / ${num(gpuTotal, 1)}`, "in use", "gpu") : null,
      card("Memory", `${bytes(memUsed)}`, `of ${bytes(memTotal)}`, "memory", usage(memUsed, memTotal, "")),
      card("Object store", `${bytes(storeUsed)}`, `of ${bytes(storeCap)} · ${num(ov.objects.total)} objects, ${num(ov.objects.spilled)} spilled`,
        "store", usage(storeUsed, storeCap, "")),
      card("Actors", `${num(ov.actors.total)}`, Object.entries(ov.actors.by_state).map(([k, v]) => `${v} ${String(k).toLowerCase()}`).join(" · ") || "none", "actors"),
    );

    const tasks = h("div", { class: "panel tasks-panel" },
      h("h3", null, "Tasks ", h("span", { class: "muted", dataset: { count: "tasks" } }, num(ov.tasks.total))),
      stateBar(byState, ov.tasks.total),
      h("ul", { class: "legend" }, STATE_ORDER.filter((st) => byState[st]).map((st) =>
        h("li", null, h("a", { href: `#/tasks?state=${st}`, dataset: { state: st } },
          h("i", { class: `dot st-${st.toLowerCase()}` }), `${STATE_LABEL[st]} `,
          h("b", { dataset: { stateCount: st } }, num(byState[st])))))),
    );

    const charts = h("div", { class: "charts" },
      timeChart(this.series("cpu_percent"), { max: 100, format: (v) => `${v.toFixed(0)}%`, label: "CPU" }),
      timeChart(this.series("mem_used"), { max: Math.max(memTotal, 1), format: bytes, label: "Memory" }),
      timeChart(this.series("store_used"), { max: Math.max(storeCap, 1), format: bytes, label: "Object store" }),
      hasGpu ? timeChart(this.series("gpu_percent"), { max: 100, format: (v) => `${v.toFixed(0)}%`, label: "GPU" }) : null,
    );

    const errors = h("div", { class: "panel errors" },
      h("h3", null, "Recent errors"),
      ov.recent_errors.length
        ? h("ul", { class: "error-list" }, ov.recent_errors.map((e: any) =>
            h("li", { dataset: { taskId: e.task_id } },
              h("a", { href: `#/tasks/${e.task_id}` }, h("b", null, e.name || tid(e.task_id)), " ",
                h("span", { class: "err-type" }, e.error_type || "Error")),
              h("span", { class: "muted" }, ` ${clock(e.finish_time_ms)}`),
              h("div", { class: "err-line" }, lastLine(e.error_message)))))
        : h("p", { class: "muted" }, "No task has failed."),
    );

    this.el.replaceChildren(cards, h("div", { class: "row" }, tasks, errors), charts);
  }
}

function card(title: string, big: string, small: string, key: string, extra?: Node): HTMLElement {
  return h("div", { class: "card", dataset: { card: key } },
    h("div", { class: "card-title" }, title),
    h("div", { class: "card-big" }, big),
    extra || null,
    h("div", { class: "card-small muted" }, small));
}

export function lastLine(text: string | null | undefined): string {
  const lines = String(text || "").trim().split("\n").filter((l) => l.trim());
  return lines.length ? lines[lines.length - 1] : "";
}
