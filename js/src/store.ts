// The object stores: per node used / capacity / spilled, and the largest objects with who
// holds them and why; "Free" deletes the one notebook variable holding a put object.
import { BASE_CSS, RenderProps, State, fmtBytes, follow, h, injectStyle } from "./common";
import { meter } from "./cluster";

const CSS = `
.nbc-store .nbc-message { margin: 4px 0; color: var(--jp-ui-font-color2, #666); }
.nbc-store .nbc-objects { margin-top: 6px; }
.nbc-store code { font-family: var(--jp-code-font-family, monospace); font-size: 11px; }
`;

function draw(root: HTMLElement, model: RenderProps["model"], s: State): void {
  const nodes = h("table", {}, h("thead", {}, h("tr", {},
    ...["node", "used / capacity", "spilled"].map((t) => h("th", {}, t)))));
  const nb = h("tbody");
  for (const n of s.nodes || []) {
    nb.append(h("tr", {},
      h("td", {}, n.address),
      h("td", {}, meter(n.store_capacity ? n.store_used / n.store_capacity : 0,
                        `${fmtBytes(n.store_used)} / ${fmtBytes(n.store_capacity)}`)),
      h("td", {}, fmtBytes(n.spilled))));
  }
  nodes.append(nb);
  const head = ["object", "size", "variable", "owner", "call site", "refs", "pinned by", ""];
  const objs = h("table", { class: "nbc-objects" },
    h("thead", {}, h("tr", {}, ...head.map((t) => h("th", {}, t)))));
  const ob = h("tbody");
  for (const o of s.objects || []) {
    const free = h("button", { class: "nbc-button nbc-free" }, "Free");
    free.disabled = !o.put;
    free.title = o.put ? "delete the notebook variable that holds it" : "only put objects can be freed here";
    free.onclick = () => { free.disabled = true; model.send({ kind: "free", id: o.id }); };
    ob.append(h("tr", { class: "nbc-object-row", "data-id": o.id, "data-variable": o.variable },
      h("td", {}, h("code", {}, o.id.slice(0, 12))),
      h("td", { class: "nbc-size" }, fmtBytes(o.size)),
      h("td", { class: "nbc-variable" }, o.variable || "–"),
      h("td", {}, o.owner), h("td", {}, h("code", {}, o.call_site || "")),
      h("td", {}, String(o.refs)), h("td", {}, o.pinned), h("td", {}, free)));
  }
  objs.append(ob);
  const kids: Node[] = [h("div", { class: "nbc-title" }, "Object store"), nodes, objs];
  if (s.message) kids.push(h("div", { class: "nbc-message" }, s.message));
  root.replaceChildren(...kids);
}

function render({ model, el }: RenderProps) {
  injectStyle("nbc-base-css", BASE_CSS);
  injectStyle("nbc-store-css", CSS);
  const root = h("div", { class: "nbc-widget nbc-store" });
  el.append(root);
  return follow(model, () => {}, (s) => draw(root, model, s));
}

export default { render };
