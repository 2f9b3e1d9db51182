// Progress of a set of tasks: a stacked bar per function (finished, failed, cancelled,
// running, queued), rate, ETA, the first error, and a Cancel button.
import { BASE_CSS, RenderProps, State, fmtSeconds, follow, h, injectStyle, stackedBar } from "./common";

const CSS = `
.nbc-progress .nbc-row td { vertical-align: middle; }
.nbc-progress .nbc-foot { margin-top: 4px; display: flex; gap: 12px; align-items: center; }
`;

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
  const kids: Node[] = [h("div", { class: "nbc-title" }, `Progress: ${s.title || ""}`), table, foot];
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
