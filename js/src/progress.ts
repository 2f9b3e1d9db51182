// Progress of a set of tasks: a stacked bar per function (finished, failed, cancelled,
// running, queued), rate, ETA, the first error, a Cancel button, and under them the bars
// tasks report of their own progress (nbcluster.util.progress).
import { BASE_CSS, RenderProps, State, fmtSeconds, follow, h, injectStyle, stackedBar } from "./common";

const CSS = `
.nbc-progress .nbc-row td { vertical-align: middle; }
.nbc-progress .nbc-foot { margin-top: 4px; display: flex; gap: 12px; align-items: center; }
.nbc-progress .nbc-subbars { margin: 2px 0 0 12px; }
.nbc-progress .nbc-subbars td { padding: 1px 8px; font-size: var(--jp-ui-font-size0, 11px); }
`;

function subBars(s: State): Node[] {
  const bars: any[] = s.bars || [];
  if (!bars.length) return [];
  const body = h("tbody");
  for (const b of bars) {
    const frac = b.total ? Math.min(1, b.n / b.total) : 0;
    const amount = (b.total ? `${b.n}/${b.total}` : `${b.n}`) + (b.unit ? ` ${b.unit}` : "");
    body.append(h("tr", { class: "nbc-subbar", "data-desc": b.desc, "data-n": b.n,
                          "data-total": b.total ?? "" },
      h("td", { class: "nbc-muted" }, b.desc ? `${b.function}: ${b.desc}` : b.function),
      h("td", {}, stackedBar([[b.state === 2 ? "finished" : "running", frac]], 160)),
      h("td", {}, amount)));
  }
  const out: Node[] = [h("table", { class: "nbc-subbars" }, body)];
  if (s.more_bars) out.push(h("div", { class: "nbc-muted" }, `and ${s.more_bars} more bars`));
  return out;
}

function draw(el: HTMLElement, model: RenderProps["model"], s: State): void {
  const rows: any[] = s.rows || [];
  const table = h("table", {},
    h("thead", {}, h("tr", {}, ...["function", "", "done", "queued", "running", "failed"]
      .map((t) => h("th", {}, t)))));
  const body = h("tbody");
  for (const r of rows) {
    const total = Math.max(1, r.total);
    const ended = r.finished + r.failed + r.cancelled;
    body.append(h("tr", { class: "nbc-row", "data-name": r.name,
                          "data-percent": Math.round((100 * ended) / total) },
      h("td", {}, r.name),
      h("td", {}, stackedBar([["finished", r.finished / total], ["failed", r.failed / total],
                              ["cancelled", r.cancelled / total], ["running", r.running / total],
                              ["pending", r.pending / total]])),
      h("td", { class: "nbc-count" }, `${ended}/${r.total}`),
      h("td", {}, String(r.pending)),
      h("td", {}, String(r.running)),
      h("td", {}, String(r.failed + r.cancelled))));
  }
  table.append(body);
  const total = s.total || 0, ended = s.ended || 0;
  const percent = total ? Math.round((100 * ended) / total) : 0;
  const cancel = h("button", { class: "nbc-button nbc-cancel" }, "Cancel");
  cancel.disabled = !!s.done || !!s.cancel_requested;
  cancel.onclick = () => { cancel.disabled = true; model.send({ kind: "cancel" }); };
  const status = s.done ? `done in ${fmtSeconds(s.elapsed)}`
    : `${(s.rate || 0).toFixed(1)} tasks/s · ETA ${fmtSeconds(s.eta)}`;
  const foot = h("div", { class: "nbc-foot" },
    h("span", { class: "nbc-summary" }, `${ended}/${total} tasks (${percent}%)`),
    h("span", { class: "nbc-muted" }, s.cancel_requested && !s.done ? "cancelling…" : status),
    cancel);
  const kids: Node[] = [h("div", { class: "nbc-title" }, `Progress: ${s.title || ""}`), table,
                        ...subBars(s), foot];
  if (s.error) kids.push(h("div", { class: "nbc-error" }, `first error: ${s.error}`));
  el.dataset.percent = String(percent);
  el.dataset.done = s.done ? "true" : "false";
  el.replaceChildren(...kids);
}

function render({ model, el }: RenderProps) {
  injectStyle("nbc-base-css", BASE_CSS);
  injectStyle("nbc-progress-css", CSS);
  const root = h("div", { class: "nbc-widget nbc-progress" });
  el.append(root);
  return follow(model, () => {}, (s) => draw(root, model, s));
}

export default { render };
