// Timeline: where and when each task ran, one row per worker process, grouped by node.
// Drawn in the page (no download needed); the Chrome trace export stays one click away.

import { duration, h, s, short } from "../dom";
import type { Context, View } from "../view";

type Row = [string, string, string | null, number | null, number, number | null, string, string];

const WINDOWS: [string, number | null][] = [["30 s", 30_000], ["2 min", 120_000], ["10 min", 600_000], ["all", null]];

export class TimelineView implements View {
  el = h("section", { class: "view", dataset: { view: "timeline" } });
  private windowMs: number | null = 120_000;
  private live = true;
  private box = h("div", { class: "timeline-box" });
  private info = h("span", { class: "muted" });
  private busy = false;

  constructor(private ctx: Context) {}

  async refresh(): Promise<void> {
    const buttons = WINDOWS.map(([label, ms]) => h("button", {
      type: "button", class: ms === this.windowMs ? "on" : "", dataset: { window: label },
      onclick: () => { this.windowMs = ms; void this.refresh(); },
    }, label));
    const live = h("label", null, h("input", {
      type: "checkbox", checked: this.live, onchange: (e: Event) => { this.live = (e.target as HTMLInputElement).checked; },
    }), " live");
    const exportLink = h("a", {
      href: this.ctx.api.cluster(this.ctx.id, "timeline", { format: "chrome" }), download: "timeline.json",
      class: "export",
    }, "Export Chrome trace (Perfetto)");
    this.el.replaceChildren(h("div", { class: "toolbar" }, h("span", null, "Window: "), buttons, live, this.info, exportLink), this.box);
    await this.load();
  }

  tick(): void { if (this.live) void this.load(); }

  private async load(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const now = Date.now();
      const got = await this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, "timeline",
        { start_ms: this.windowMs ? now - this.windowMs : undefined }));
      this.draw(got.rows as Row[], got.total, got.now_ms || now);
    } catch (e) {
      this.ctx.failed(e);
    } finally {
      this.busy = false;
    }
  }

  private draw(rows: Row[], total: number, now: number): void {
    this.info.textContent = ` ${rows.length} of ${total} tasks `;
    if (!rows.length) {
      this.box.replaceChildren(h("p", { class: "muted", dataset: { empty: "timeline" } }, "No task ran in this window."));
      return;
    }
    const lanes = new Map<string, { node: string | null; pid: number | null; rows: Row[] }>();
    let t0 = Infinity, t1 = -Infinity;
    for (const r of rows) {
      const key = `${r[2]}|${r[3]}`;
      if (!lanes.has(key)) lanes.set(key, { node: r[2], pid: r[3], rows: [] });
      lanes.get(key)!.rows.push(r);
      t0 = Math.min(t0, r[4]);
      t1 = Math.max(t1, r[5] ?? now);
    }
    if (this.windowMs) { t0 = Math.max(t0, now - this.windowMs); t1 = Math.max(t1, now); }
    const span = Math.max(1, t1 - t0);
    const sorted = [...lanes.values()].sort((a, b) => String(a.node).localeCompare(String(b.node)) || (a.pid ?? 0) - (b.pid ?? 0));
    const LANE = 22, LABEL = 150, W = 1000, AXIS = 20;
    const H = AXIS + sorted.length * LANE + 4;
    const svg = s("svg", { class: "timeline", viewBox: `0 0 ${W + LABEL} ${H}`, width: "100%", dataset: { lanes: sorted.length } });
    for (let i = 0; i <= 5; i++) {
      const x = LABEL + (i / 5) * W;
      svg.append(s("line", { x1: x, x2: x, y1: AXIS - 4, y2: H, class: "grid" }),
        s("text", { x: x + 2, y: 12, class: "tick" }, `+${duration((i / 5) * span)}`));
    }
    sorted.forEach((lane, i) => {
      const y = AXIS + i * LANE;
      svg.append(s("text", { x: 4, y: y + 15, class: "lane-label" }, `${short(lane.node, 6)} · pid ${lane.pid ?? "?"}`));
      for (const r of lane.rows) {
        const start = Math.max(r[4], t0);
        const end = r[5] ?? now;
        const x = LABEL + ((start - t0) / span) * W;
        const w = Math.max(1.5, ((end - start) / span) * W);
        const slice = s("rect", {
          x: x.toFixed(1), y: y + 3, width: w.toFixed(1), height: LANE - 6, rx: 2,
          class: `slice st-${r[6].toLowerCase()}`, dataset: { taskId: r[1], state: r[6], name: r[0] },
        }, s("title", null, `${r[0]} (${r[6].toLowerCase()}): ${duration(end - r[4])}`));
        slice.addEventListener("click", () => this.ctx.go(`#/tasks/${r[1]}`));
        svg.append(slice);
      }
    });
    this.box.replaceChildren(svg);
  }
}
