// The live ObjectRef graph. Tasks are rounded boxes, objects circles sized by bytes; edges
// run from an argument to its task and from a task to what it returned. Laid out by dagre,
// each node as wide as its label (measured in the page's font), so labels neither overlap
// their neighbours nor run off the edge; drawn in SVG up to SVG_MAX nodes and on a canvas
// beyond. Past a few thousand nodes the kernel sends groups (one per function, objects with
// the function that made them) instead of nodes, and the view says so.
import dagre from "@dagrejs/dagre";
import { BASE_CSS, RenderProps, STATE_COLORS, State, fmtBytes, follow, h, injectStyle } from "./common";

const SVG_MAX = 300;
const RELAYOUT_MS = 400;
const STATES = ["pending", "running", "finished", "failed", "cancelled", "live", "freed"];
const NS = "http://www.w3.org/2000/svg";
const FONT_PX = 11;
const TASK_PAD = 16;   // px around a task's label inside its box
const LABEL_GAP = 4;   // px between an object's circle and its label

const CSS = `
.nbc-graph .nbc-banner { margin: 2px 0 4px; }
.nbc-graph .nbc-stage { position: relative; max-height: 520px; overflow: auto;
  border: 1px solid var(--jp-border-color2, #ddd); background: var(--jp-layout-color0, #fff); }
.nbc-graph svg text { fill: var(--jp-ui-font-color1, #222); font-size: ${FONT_PX}px;
  font-family: var(--jp-ui-font-family, sans-serif); pointer-events: none; }
.nbc-graph .nbc-edge { stroke: var(--jp-border-color1, #999); stroke-width: 1; fill: none; }
.nbc-graph .nbc-node { cursor: pointer; stroke: var(--jp-layout-color0, #fff); }
.nbc-graph .nbc-details { margin-top: 4px; }
.nbc-graph .nbc-details td:first-child { color: var(--jp-ui-font-color2, #666); }
.nbc-graph pre { margin: 0; white-space: pre-wrap; }
`;

// [id, kind ("t" | "o"), label, state code, size, unused, cell (request id)]
type Rec = [string, string, string, number, number | null, null, string | null];
// [key, label, tasks, objects, bytes, count per state code]
type Group = [string, string, number, number, number, number[]];
interface Point { x: number; y: number }
interface Laid {
  id: string; rec: Rec | null; group: Group | null;
  x: number; y: number; w: number; hgt: number;   // the node's box, as dagre placed it
  ax: number;                                      // where edges attach (a circle's centre)
  r: number;                                       // an object's radius
  label: string;
}

function objectRadius(size: number | null): number {
  return size ? Math.min(22, 5 + 2.2 * Math.log10(size + 1)) : 6;
}

function resolveColors(el: HTMLElement): string[] {
  // Canvas cannot read CSS variables: resolve each state's colour against the page theme.
  const probe = document.createElement("div");
  el.append(probe);
  const out = STATES.map((s) => {
    probe.style.color = colorOf(STATES.indexOf(s));
    return getComputedStyle(probe).color;
  });
  probe.remove();
  return out;
}

function stateName(code: number): string { return STATES[code] || "pending"; }
function colorOf(code: number): string {
  const s = stateName(code);
  return STATE_COLORS[s] || (s === "live" ? "var(--jp-brand-color2, #64b5f6)" : "var(--jp-layout-color3, #9e9e9e)");
}

class GraphView {
  nodes = new Map<string, Rec>();
  edges: [string, string][] = [];
  edgeSet = new Set<string>();
  groups: Group[] | null = null;
  groupEdges: [string, string, number][] = [];
  cells: Record<string, number> = {};
  names: Record<string, string> = {};
  laid: Laid[] = [];
  laidEdges: [Laid, Laid, number, Point[]][] = [];
  mode = "";
  lastLayout = 0;
  layoutTimer: number | null = null;
  needLayout = true;
  firstPaint = 0;
  summary: any = {};
  root: HTMLElement;
  banner: HTMLElement;
  stage: HTMLElement;
  details: HTMLElement;
  measure: CanvasRenderingContext2D | null = null;
  t0 = performance.now();

  constructor(public model: RenderProps["model"], el: HTMLElement) {
    this.root = h("div", { class: "nbc-widget nbc-graph" });
    this.banner = h("div", { class: "nbc-banner nbc-muted" });
    this.stage = h("div", { class: "nbc-stage" });
    this.details = h("div", { class: "nbc-details" });
    this.root.append(h("div", { class: "nbc-title" }, "ObjectRef graph"), this.banner,
                     this.stage, this.details);
    el.append(this.root);
  }

  load(s: State): void {
    this.nodes.clear(); this.edges = []; this.edgeSet.clear();
    this.cells = s.cells || {};
    this.names = s.names || {};
    this.groups = null; this.groupEdges = [];
    if (s.mode === "grouped") {
      this.groups = s.groups || [];
      this.groupEdges = s.group_edges || [];
    } else {
      for (const r of s.nodes || []) this.nodes.set(r[0], r);
      for (const e of s.edges || []) this.addEdge(e[0], e[1]);
    }
    this.summary = s.summary || {};
    this.needLayout = true;
  }

  addEdge(a: string, b: string): void {
    const k = a + ">" + b;
    if (!this.edgeSet.has(k)) { this.edgeSet.add(k); this.edges.push([a, b]); }
  }

  delta(d: any, buffers: DataView[]): void {
    if (d.cells) { Object.assign(this.cells, d.cells); this.needLayout = true; }
    if (d.names) { Object.assign(this.names, d.names); this.needLayout = true; }
    if (d.summary) this.summary = d.summary;
    if (d.mode === "grouped") {
      this.groups = d.groups || [];
      this.groupEdges = d.group_edges || [];
      this.nodes.clear(); this.edges = []; this.edgeSet.clear();
      this.needLayout = true;
      return;
    }
    for (const r of d.nodes || []) {
      const old = this.nodes.get(r[0]);
      if (!old || old[2] !== r[2] || old[4] !== r[4] || old[6] !== r[6]) this.needLayout = true;
      this.nodes.set(r[0], r);
    }
    const codes = buffers[0];
    (d.state_ids || []).forEach((id: string, i: number) => {
      const r = this.nodes.get(id);
      if (r && codes) r[3] = codes.getUint8(i);
    });
    for (const e of d.edges || []) { this.addEdge(e[0], e[1]); this.needLayout = true; }
  }

  // -- layout ---------------------------------------------------------------------------
  textWidth(text: string): number {
    if (!this.measure) {
      this.measure = document.createElement("canvas").getContext("2d");
      const family = getComputedStyle(this.root).getPropertyValue("--jp-ui-font-family").trim();
      if (this.measure) this.measure.font = `${FONT_PX}px ${family || "sans-serif"}`;
    }
    return this.measure ? Math.ceil(this.measure.measureText(text).width) : 7 * text.length;
  }

  labelOf(r: Rec): string {
    if (r[1] === "t") {
      const n = r[6] !== null ? this.cells[r[6]] : undefined;
      return n !== undefined ? `${r[2]} · In[${n}]` : r[2];
    }
    return this.names[r[0]] || (r[4] !== null ? fmtBytes(r[4]) : "");
  }

  items(): Map<string, Laid> {
    const items = new Map<string, Laid>();
    if (this.groups) {
      for (const g of this.groups) {
        const label = `${g[1]} ×${g[2] + g[3]}`;
        const w = Math.max(150, this.textWidth(label) + TASK_PAD);
        items.set(g[0], { id: g[0], rec: null, group: g, x: 0, y: 0, w, hgt: 34, ax: 0, r: 0, label });
      }
      return items;
    }
    const drawLabels = this.nodes.size <= SVG_MAX;
    for (const r of this.nodes.values()) {
      const label = this.labelOf(r);
      if (r[1] === "t") {
        const w = Math.max(40, (drawLabels ? this.textWidth(label) : 7 * label.length) + TASK_PAD);
        items.set(r[0], { id: r[0], rec: r, group: null, x: 0, y: 0, w, hgt: 22, ax: 0, r: 0, label });
      } else {
        const rad = objectRadius(r[4]);
        const text = label && drawLabels ? this.textWidth(label) + LABEL_GAP : 0;
        items.set(r[0], { id: r[0], rec: r, group: null, x: 0, y: 0, w: 2 * rad + text,
                          hgt: 2 * rad, ax: 0, r: rad, label });
      }
    }
    return items;
  }

  layout(): void {
    const g = new dagre.graphlib.Graph({ multigraph: false });
    g.setGraph({ rankdir: "LR", nodesep: 10, ranksep: 36, marginx: 8, marginy: 8 });
    g.setDefaultEdgeLabel(() => ({}));
    const items = this.items();
    for (const it of items.values()) g.setNode(it.id, { width: it.w, height: it.hgt });
    const weights = new Map<string, number>();
    const pairs: [string, string, number][] = this.groups
      ? this.groupEdges
      : this.edges.map(([a, b]) => [a, b, 1]);
    for (const [a, b, w] of pairs) {
      if (a === b || !items.has(a) || !items.has(b)) continue;
      const k = a + "\u0000" + b;
      weights.set(k, (weights.get(k) || 0) + w);
    }
    for (const k of weights.keys()) { const [a, b] = k.split("\u0000"); g.setEdge(a, b); }
    dagre.layout(g);
    for (const it of items.values()) {
      const n = g.node(it.id);
      it.x = n.x; it.y = n.y;
      // An object's circle sits at the left of its box, its label to the right of it.
      it.ax = it.rec && it.rec[1] === "o" ? it.x - it.w / 2 + it.r : it.x;
    }
    this.laid = [...items.values()];
    this.laidEdges = [];
    for (const [k, w] of weights) {
      const [a, b] = k.split("\u0000");
      const from = items.get(a)!, to = items.get(b)!;
      const points: Point[] = (g.edge(a, b)?.points || []).slice(1, -1);
      this.laidEdges.push([from, to, w, points]);
    }
    const gg = g.graph();
    const count = this.groups ? this.groups.length : this.nodes.size;
    this.mode = this.groups ? "grouped" : count > SVG_MAX ? "canvas" : "svg";
    const finite = (v: number | undefined, d: number) => (v !== undefined && isFinite(v) && v > 0 ? v : d);
    this.width = Math.ceil(finite(gg.width, 100) + 16);
    this.height = Math.ceil(finite(gg.height, 40) + 16);
    this.needLayout = false;
    this.lastLayout = performance.now();
  }
  width = 0;
  height = 0;

  // -- drawing --------------------------------------------------------------------------
  draw(): void {
    if (this.needLayout) {
      const wait = RELAYOUT_MS - (performance.now() - this.lastLayout);
      if (this.laid.length && wait > 0) {
        if (this.layoutTimer === null) {
          this.layoutTimer = window.setTimeout(() => { this.layoutTimer = null; this.draw(); }, wait);
        }
        this.paint();   // recolour what is laid out now; new nodes come with the next layout
        return;
      }
      this.layout();
    }
    this.paint();
  }

  counts(): [number, number, number] {
    if (this.groups) {
      const s = this.summary;
      return [s.tasks || 0, s.objects || 0, (s.states || {}).failed || 0];
    }
    let tasks = 0, objects = 0, failed = 0;
    for (const r of this.nodes.values()) {
      if (r[1] === "t") { tasks++; if (r[3] === 3) failed++; } else objects++;
    }
    return [tasks, objects, failed];
  }

  paint(): void {
    const [tasks, objects, failed] = this.counts();
    const s = this.summary;
    let text = `${tasks} tasks, ${objects} objects` + (s.scope ? ` · ${s.scope}` : "");
    if (this.mode === "grouped") text += ` · ${tasks + objects} nodes grouped by function`;
    this.banner.textContent = text;
    Object.assign(this.root.dataset, { tasks: String(tasks), objects: String(objects),
                                       failed: String(failed), mode: this.mode });
    if (this.mode === "canvas") this.paintCanvas(); else this.paintSvg();
    if (!this.firstPaint && this.laid.length) {
      this.firstPaint = performance.now();
      this.root.dataset.paintMs = String(Math.round(this.firstPaint - this.t0));
    }
  }

  edgePath(a: Laid, b: Laid, points: Point[]): string {
    const all = [{ x: a.ax, y: a.y }, ...points, { x: b.ax, y: b.y }];
    return all.map((p, i) => `${i ? "L" : "M"}${p.x.toFixed(1)},${p.y.toFixed(1)}`).join(" ");
  }

  paintSvg(): void {
    const svg = document.createElementNS(NS, "svg");
    svg.setAttribute("width", String(this.width));
    svg.setAttribute("height", String(this.height));
    const mk = (tag: string, attrs: Record<string, any>) => {
      const e = document.createElementNS(NS, tag);
      for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
      return e;
    };
    for (const [a, b, w, points] of this.laidEdges) {
      svg.append(mk("path", { class: "nbc-edge", d: this.edgePath(a, b, points),
                              "stroke-width": Math.min(4, 1 + Math.log10(w)) }));
    }
    for (const it of this.laid) {
      const g = mk("g", {});
      if (it.rec) {
        const r = it.rec;
        const attrs = { class: "nbc-node", "data-id": r[0], "data-kind": r[1] === "t" ? "task" : "object",
                        "data-state": stateName(r[3]), fill: colorOf(r[3]) };
        const shape = r[1] === "t"
          ? mk("rect", { ...attrs, x: it.x - it.w / 2, y: it.y - it.hgt / 2, width: it.w,
                         height: it.hgt, rx: 5 })
          : mk("circle", { ...attrs, cx: it.ax, cy: it.y, r: it.r });
        const title = mk("title", {});
        title.textContent = r[1] === "t" ? `${r[2]} (${stateName(r[3])})` : `${it.label || "object"} ${fmtBytes(r[4])}`;
        shape.append(title);
        shape.addEventListener("click", () => this.ask(r[0]));
        g.append(shape);
        const t = mk("text", r[1] === "t"
          ? { x: it.x, y: it.y + 4, "text-anchor": "middle" }
          : { x: it.ax + it.r + LABEL_GAP, y: it.y + 4 });
        t.textContent = it.label;
        g.append(t);
      } else {
        // a group: its name, its size, and a stacked bar of its states
        const grp = it.group!;
        g.append(mk("rect", { class: "nbc-node nbc-group", "data-id": it.id, x: it.x - it.w / 2,
                              y: it.y - it.hgt / 2, width: it.w, height: it.hgt, rx: 5,
                              fill: "var(--jp-layout-color2, #eee)" }));
        let x = it.x - it.w / 2 + 4;
        const total = Math.max(1, grp[2] + grp[3]);
        grp[5].forEach((c, code) => {
          if (!c) return;
          const w = ((it.w - 8) * c) / total;
          g.append(mk("rect", { x, y: it.y + 6, width: w, height: 6, fill: colorOf(code),
                                "data-state": stateName(code) }));
          x += w;
        });
        const t = mk("text", { x: it.x, y: it.y - 2, "text-anchor": "middle" });
        t.textContent = it.label;
        g.append(t);
      }
      svg.append(g);
    }
    this.stage.replaceChildren(svg);
  }

  paintCanvas(): void {
    const dpr = window.devicePixelRatio || 1;
    let canvas = this.stage.querySelector("canvas") as HTMLCanvasElement | null;
    if (!canvas) {
      canvas = document.createElement("canvas");
      canvas.className = "nbc-canvas";
      canvas.addEventListener("click", (e) => this.hit(e, canvas!));
      this.stage.replaceChildren(canvas);
    }
    // Canvases have a size limit: scale a very large layout down to fit.
    const scale = Math.min(1, 16000 / Math.max(this.width, this.height));
    canvas.width = Math.ceil(this.width * scale * dpr);
    canvas.height = Math.ceil(this.height * scale * dpr);
    canvas.style.width = `${Math.ceil(this.width * scale)}px`;
    canvas.style.height = `${Math.ceil(this.height * scale)}px`;
    canvas.dataset.scale = String(scale);
    const ctx = canvas.getContext("2d")!;
    ctx.setTransform(dpr * scale, 0, 0, dpr * scale, 0, 0);
    const colors = resolveColors(this.root);
    const style = getComputedStyle(this.root);
    ctx.strokeStyle = style.getPropertyValue("--jp-border-color1").trim() || "#999";
    ctx.lineWidth = 1;
    ctx.beginPath();
    for (const [a, b] of this.laidEdges) { ctx.moveTo(a.ax, a.y); ctx.lineTo(b.ax, b.y); }
    ctx.stroke();
    // One path per state: thousands of nodes in a handful of fill calls.
    const paths = STATES.map(() => new Path2D());
    for (const it of this.laid) {
      const r = it.rec!;
      const p = paths[r[3]] || paths[0];
      if (r[1] === "t") p.rect(it.x - it.w / 2, it.y - it.hgt / 2, it.w, it.hgt);
      else { p.moveTo(it.ax + it.r, it.y); p.arc(it.ax, it.y, it.r, 0, 2 * Math.PI); }
    }
    paths.forEach((p, code) => { ctx.fillStyle = colors[code]; ctx.fill(p); });
    ctx.fillStyle = style.getPropertyValue("--jp-ui-font-color1").trim() || "#222";
    ctx.font = `${FONT_PX}px ${style.getPropertyValue("--jp-ui-font-family").trim() || "sans-serif"}`;
    if (this.laid.length <= 1500) {
      for (const it of this.laid) {
        if (it.rec![1] === "t") {
          ctx.textAlign = "center";
          ctx.fillText(it.label, it.x, it.y + 4, it.w - 4);
        } else if (it.label) {
          ctx.textAlign = "left";
          ctx.fillText(it.label, it.ax + it.r + LABEL_GAP, it.y + 4);
        }
      }
    }
  }

  hit(e: MouseEvent, canvas: HTMLCanvasElement): void {
    const scale = Number(canvas.dataset.scale || 1);
    const box = canvas.getBoundingClientRect();
    const x = (e.clientX - box.left) / scale, y = (e.clientY - box.top) / scale;
    let best: Laid | null = null, bestD = 400;
    for (const it of this.laid) {
      const d = (it.x - x) ** 2 + (it.y - y) ** 2;
      if (d < bestD && Math.abs(it.x - x) <= it.w / 2 + 3 && Math.abs(it.y - y) <= it.hgt / 2 + 3) {
        best = it; bestD = d;
      }
    }
    if (best?.rec) this.ask(best.rec[0]);
  }

  ask(id: string): void {
    this.details.replaceChildren(h("span", { class: "nbc-muted" }, "loading details…"));
    this.model.send({ kind: "details", id });
  }

  showDetails(info: Record<string, any>): void {
    const rows = Object.entries(info).filter(([, v]) => v !== null && v !== undefined && v !== "");
    const table = h("table", { class: "nbc-details-table" });
    for (const [k, v] of rows) {
      const val = k === "error" ? h("pre", { class: "nbc-error" }, String(v))
        : k === "size" ? fmtBytes(v) : Array.isArray(v) ? v.join(", ") : String(v);
      table.append(h("tr", {}, h("td", {}, k), h("td", {}, val)));
    }
    this.details.replaceChildren(table);
  }
}

function render({ model, el }: RenderProps) {
  injectStyle("nbc-base-css", BASE_CSS);
  injectStyle("nbc-graph-css", CSS);
  const view = new GraphView(model, el);
  const onDetails = (msg: any) => { if (msg?.kind === "details") view.showDetails(msg.info || {}); };
  model.on("msg:custom", onDetails);
  const stop = follow(model,
    (_s, d, buffers) => view.delta(d, buffers),
    (s, fromSnapshot) => { if (fromSnapshot) view.load(s); view.draw(); });
  return () => { stop(); model.off("msg:custom", onDetails); };
}

export default { render };
