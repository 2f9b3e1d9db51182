// The cluster: one row per node with CPU, GPU, memory and object-store bars, sparklines of
// the last minutes (drawn in SVG), workers and pending demand.
import { BASE_CSS, RenderProps, State, fmtBytes, follow, h, injectStyle } from "./common";

const CSS = `
.nbc-cluster td { vertical-align: middle; }
.nbc-cluster .nbc-meter { display: flex; align-items: center; gap: 6px; }
.nbc-cluster .nbc-fill { height: 10px; background: var(--jp-brand-color1, #1976d2); }
.nbc-cluster .nbc-spark { stroke: var(--jp-brand-color1, #1976d2); fill: none; stroke-width: 1.2; }
.nbc-cluster .nbc-dead { color: var(--jp-error-color1, #d32f2f); }
.nbc-cluster .nbc-info { margin-bottom: 6px; }
.nbc-cluster code { font-family: var(--jp-code-font-family, monospace); font-size: 11px; }
`;

export function meter(frac: number, text: string, cls = ""): HTMLElement {
  const f = Math.max(0, Math.min(1, frac || 0));
  const bar = h("div", { class: "nbc-bar", style: "width:120px" },
    h("div", { class: "nbc-fill", style: `width:${(f * 100).toFixed(1)}%` }));
  return h("div", { class: `nbc-meter ${cls}`, "data-fraction": f.toFixed(3) }, bar,
           h("span", {}, text));
}

function spark(values: number[], max = 1): SVGElement {
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("width", "120");
  svg.setAttribute("height", "20");
  const path = document.createElementNS(NS, "polyline");
  const n = Math.max(1, values.length - 1);
  path.setAttribute("points", values.map((v, i) =>
    `${((i / n) * 118 + 1).toFixed(1)},${(19 - (Math.min(v, max) / max) * 18).toFixed(1)}`).join(" "));
  path.setAttribute("class", "nbc-spark");
  svg.append(path);
  return svg;
}

function draw(root: HTMLElement, s: State): void {
  const nodes: any[] = s.nodes || [];
  const head = ["node", "CPU", "CPU (last minutes)", "GPU", "memory", "object store", "workers", "pending"];
  const table = h("table", {}, h("thead", {}, h("tr", {}, ...head.map((t) => h("th", {}, t)))));
  const body = h("tbody");
  for (const n of nodes) {
    const hist: number[][] = n.history || [];
    const used = n.cpus - n.cpus_free;
    const demand = Object.entries(n.demand || {}).map(([k, v]) => `${k} ×${v}`).join(", ");
    body.append(h("tr", { class: "nbc-node-row", "data-node": n.node_id, "data-alive": String(n.alive) },
      h("td", { class: n.alive ? "" : "nbc-dead" }, n.address + (n.alive ? "" : " (dead)")),
      h("td", {}, meter(n.cpus ? used / n.cpus : 0, `${used}/${n.cpus} · ${n.cpu.toFixed(0)}%`, "nbc-cpu")),
      h("td", {}, spark(hist.map((x) => x[0]), 100)),
      h("td", {}, n.gpus ? meter((n.gpus - n.gpus_free) / n.gpus, `${n.gpus - n.gpus_free}/${n.gpus}`) : "–"),
      h("td", {}, meter(n.mem_total ? n.mem_used / n.mem_total : 0,
                        `${fmtBytes(n.mem_used)} / ${fmtBytes(n.mem_total)}`, "nbc-mem")),
      h("td", {}, meter(n.store_capacity ? n.store_used / n.store_capacity : 0,
                        `${fmtBytes(n.store_used)} / ${fmtBytes(n.store_capacity)}`, "nbc-store")),
      h("td", { class: "nbc-workers" }, String(n.workers)),
      h("td", {}, demand || "–")));
  }
  table.append(body);
  const alive = nodes.filter((n) => n.alive).length;
  root.replaceChildren(...heading(s.info),
    h("div", { class: "nbc-title" }, `Cluster: ${alive} node${alive === 1 ? "" : "s"} alive`), table);
  root.dataset.nodes = String(alive);
}

// nc.init()'s display: the cluster's address and how to reach it, above the nodes.
function heading(info: any): Node[] {
  if (!info) return [];
  const rows = h("table", { class: "nbc-info" });
  for (const [what, how] of info.rows || []) {
    const cell = what === "Dashboard" && info.dashboard
      ? h("a", { href: info.dashboard, target: "_blank", class: "nbcluster-dashboard" }, "open the dashboard")
      : h("code", {}, how);
    rows.append(h("tr", {}, h("td", { class: "nbc-muted" }, what), h("td", {}, cell)));
  }
  return [h("div", { class: "nbc-title nbc-info-title" }, info.title || ""), rows];
}

function render({ model, el }: RenderProps) {
  injectStyle("nbc-base-css", BASE_CSS);
  injectStyle("nbc-cluster-css", CSS);
  const root = h("div", { class: "nbc-widget nbc-cluster" });
  el.append(root);
  return follow(model, () => {}, (s) => draw(root, s));
}

export default { render };
