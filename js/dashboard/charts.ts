// Charts drawn as SVG: a time series with its history, and a bar of counts by state.

import { h, s } from "./dom";

export const STATE_ORDER = [
  "PENDING_NODE_ASSIGNMENT", "SUBMITTED_TO_WORKER", "RUNNING", "FINISHED", "FAILED", "CANCELLED",
];

export const STATE_LABEL: Record<string, string> = {
  PENDING_NODE_ASSIGNMENT: "pending", SUBMITTED_TO_WORKER: "queued", RUNNING: "running",
  FINISHED: "finished", FAILED: "failed", CANCELLED: "cancelled",
};

// A horizontal bar split by state; each part's width is its share of the total.
export function stateBar(counts: Record<string, number>, total?: number): HTMLElement {
  const sum = total ?? Object.values(counts).reduce((a, b) => a + b, 0);
  const bar = h("div", { class: "state-bar", title: describe(counts) });
  for (const st of STATE_ORDER) {
    const n = counts[st] || 0;
    if (!n || !sum) continue;
    bar.append(h("span", {
      class: `seg st-${st.toLowerCase()}`, style: { width: `${(100 * n) / sum}%` },
      dataset: { state: st, count: n },
    }));
  }
  return bar;
}

function describe(counts: Record<string, number>): string {
  return STATE_ORDER.filter((st) => counts[st]).map((st) => `${STATE_LABEL[st]}: ${counts[st]}`).join(", ");
}

export interface Series { name: string; time: number[]; values: number[]; }

// Lines over time (seconds on x), y from 0 to `max` (or the data's maximum).
export function timeChart(series: Series[], opts: {
  max?: number; format: (v: number) => string; height?: number; window?: number; label: string;
}): HTMLElement {
  const W = 320, H = opts.height ?? 90, pad = 2;
  const now = Date.now() / 1000;
  // The window grows with the history (1 to 10 minutes), so a new page is not an empty chart.
  let first = now;
  for (const se of series) if (se.time.length) first = Math.min(first, se.time[0]);
  const span = opts.window ?? Math.min(600, Math.max(30, now - first));
  const t0 = now - span;
  let max = opts.max ?? 0;
  if (!opts.max) for (const se of series) for (const v of se.values) max = Math.max(max, v);
  if (!max) max = 1;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", preserveAspectRatio: "none" });
  svg.append(s("line", { x1: 0, x2: W, y1: H - pad, y2: H - pad, class: "axis" }));
  series.forEach((se, i) => {
    const pts: string[] = [];
    se.time.forEach((t, j) => {
      if (t < t0) return;
      const x = ((t - t0) / span) * W;
      const y = H - pad - (Math.max(0, se.values[j]) / max) * (H - 2 * pad);
      pts.push(`${x.toFixed(1)},${y.toFixed(1)}`);
    });
    if (pts.length) {
      svg.append(s("polyline", { points: pts.join(" "), class: `line c${i % 6}` }));
    }
  });
  const last = series.map((se) => se.values[se.values.length - 1]).filter((v) => v !== undefined);
  const current = last.length ? opts.format(last.reduce((a, b) => a + b, 0) / (opts.max === 100 ? last.length : 1)) : "–";
  return h("figure", { class: "chart-box", dataset: { chart: opts.label } },
    h("figcaption", null, h("span", null, opts.label), h("b", { class: "chart-now" }, current)),
    svg,
    h("div", { class: "chart-scale" }, h("span", null, span < 120 ? `-${Math.round(span)} s` : `-${Math.round(span / 60)} min`),
      h("span", null, `max ${opts.format(max)}`)),
  );
}

// A usage bar: used of total, with its numbers.
export function usage(used: number, total: number, text: string): HTMLElement {
  const frac = total > 0 ? Math.min(1, Math.max(0, used / total)) : 0;
  return h("div", { class: "usage", title: text },
    h("div", { class: "usage-fill", style: { width: `${(frac * 100).toFixed(1)}%` } }),
    h("span", { class: "usage-text" }, text));
}
