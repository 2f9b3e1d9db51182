// What every nbcluster widget shares: the anywidget model type, the snapshot + delta
// protocol, theme-aware CSS (JupyterLab's --jp-* variables) and number formatting.

export interface Model {
  get(name: string): any;
  on(event: string, cb: (...args: any[]) => void): void;
  off(event: string, cb: (...args: any[]) => void): void;
  send(content: any, callbacks?: any, buffers?: ArrayBuffer[]): void;
}

export interface RenderProps {
  model: Model;
  el: HTMLElement;
}

export type State = { seq: number; [key: string]: any };

export const STATE_COLORS: Record<string, string> = {
  pending: "var(--jp-layout-color3, #bdbdbd)",
  running: "var(--jp-brand-color1, #1976d2)",
  finished: "var(--jp-success-color1, #388e3c)",
  failed: "var(--jp-error-color1, #d32f2f)",
  cancelled: "var(--jp-warn-color1, #f57c00)",
};

// Follows the model: renders from the `snapshot` trait, applies numbered deltas sent as
// custom messages, and asks for a fresh snapshot when it sees a gap. It tells the kernel when
// this view appears and goes: a widget no view shows does no work there.
export function follow(
  model: Model,
  applyDelta: (state: State, delta: any, buffers: DataView[]) => void,
  draw: (state: State, fromSnapshot: boolean) => void,
): () => void {
  let state: State = structuredClone(model.get("snapshot") || { seq: 0 });
  let asked = 0;
  const onSnapshot = () => {
    const snap = model.get("snapshot") as State;
    if (snap && snap.seq >= state.seq) {
      state = structuredClone(snap);
      draw(state, true);
    }
  };
  const onMsg = (msg: any, buffers: DataView[]) => {
    if (!msg || msg.kind !== "delta") return;
    if (msg.base === state.seq) {
      applyDelta(state, msg, buffers || []);
      state.seq = msg.seq;
      draw(state, false);
    } else if (msg.seq > state.seq && Date.now() - asked > 1000) {
      asked = Date.now();
      model.send({ kind: "resync" });
    }
  };
  model.on("change:snapshot", onSnapshot);
  model.on("msg:custom", onMsg);
  draw(state, true);
  announce(model, true);
  return () => {
    model.off("change:snapshot", onSnapshot);
    model.off("msg:custom", onMsg);
    announce(model, false);
  };
}

function announce(model: Model, on: boolean): void {
  try {
    model.send({ kind: "view", on });
  } catch {
    // the widget is closed already: nobody left to tell
  }
}

export function injectStyle(id: string, css: string): void {
  if (document.getElementById(id)) return;
  const style = document.createElement("style");
  style.id = id;
  style.textContent = css;
  document.head.appendChild(style);
}

export const BASE_CSS = `
.nbc-widget { font-family: var(--jp-ui-font-family, sans-serif);
  font-size: var(--jp-ui-font-size1, 13px); color: var(--jp-ui-font-color1, #222);
  padding: 4px 0; }
.nbc-title { font-weight: 600; margin-bottom: 4px; }
.nbc-muted { color: var(--jp-ui-font-color2, #666); }
.nbc-widget table { border-collapse: collapse; }
.nbc-widget th { text-align: left; font-weight: 600; padding: 2px 8px;
  border-bottom: 1px solid var(--jp-border-color2, #ddd); }
.nbc-widget td { padding: 2px 8px; }
.nbc-bar { display: flex; height: 10px; border-radius: 3px; overflow: hidden;
  background: var(--jp-layout-color2, #eee); }
.nbc-button { font: inherit; color: var(--jp-ui-font-color1, #222);
  background: var(--jp-layout-color2, #eee); border: 1px solid var(--jp-border-color1, #bbb);
  border-radius: 3px; padding: 1px 10px; cursor: pointer; }
.nbc-button:disabled { opacity: 0.5; cursor: default; }
.nbc-error { color: var(--jp-error-color1, #d32f2f); white-space: pre-wrap; }
`;

export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K, attrs: Record<string, any> = {}, ...kids: (Node | string)[]
): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null) continue;
    if (k === "class") e.className = String(v);
    else if (k === "style") e.setAttribute("style", String(v));
    else if (k.startsWith("on")) (e as any)[k] = v;
    else e.setAttribute(k, String(v));
  }
  for (const kid of kids) e.append(kid);
  return e;
}

export function stackedBar(parts: [string, number][], width = 240): HTMLElement {
  const bar = h("div", { class: "nbc-bar", style: `width:${width}px` });
  for (const [state, frac] of parts) {
    if (frac <= 0) continue;
    bar.append(h("div", {
      "data-state": state,
      style: `width:${(frac * 100).toFixed(2)}%;background:${STATE_COLORS[state] || state}`,
    }));
  }
  return bar;
}

export function fmtBytes(n: number | null | undefined): string {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (Math.abs(n) >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return i === 0 ? `${n.toFixed(0)} B` : `${n.toFixed(1)} ${units[i]}`;
}

export function fmtSeconds(s: number | null | undefined): string {
  if (s === null || s === undefined || !isFinite(s)) return "–";
  if (s < 60) return `${s.toFixed(1)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}
