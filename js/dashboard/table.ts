// A table whose rows are keyed, so live events update a row in place instead of redrawing.

import { h } from "./dom";

export interface Column<T> {
  key: string;
  title: string;
  cell: (item: T) => Node | string;
  cls?: string;
}

export class KeyedTable<T> {
  readonly el: HTMLTableElement;
  private body: HTMLTableSectionElement;
  private rows = new Map<string, { tr: HTMLTableRowElement; item: T }>();

  constructor(
    private columns: Column<T>[],
    private keyOf: (item: T) => string,
    private opts: { onClick?: (item: T) => void; rowAttr?: string; empty?: string; max?: number } = {},
  ) {
    this.body = h("tbody");
    this.el = h("table", { class: "table" },
      h("thead", null, h("tr", null, columns.map((c) => h("th", { class: c.cls }, c.title)))),
      this.body);
    this.showEmpty();
  }

  get size(): number { return this.rows.size; }

  get(key: string): T | undefined { return this.rows.get(key)?.item; }

  items(): T[] { return [...this.rows.values()].map((r) => r.item); }

  // Replace everything (a fresh snapshot), newest first as given.
  setAll(items: T[]): void {
    this.rows.clear();
    this.body.replaceChildren();
    for (const it of items) this.put(it, false);
    this.showEmpty();
  }

  // Insert or update one row (`top`: a new row goes first).
  put(item: T, top = true): void {
    const key = this.keyOf(item);
    const old = this.rows.get(key);
    const tr = this.render(item, key);
    if (old) {
      old.tr.replaceWith(tr);
    } else {
      this.body.querySelector("tr.empty")?.remove();
      if (top) this.body.prepend(tr); else this.body.append(tr);
      const max = this.opts.max;
      if (max && this.rows.size >= max) {
        const last = this.body.lastElementChild as HTMLTableRowElement | null;
        const lastKey = last?.dataset.key;
        if (last && lastKey && lastKey !== key) { last.remove(); this.rows.delete(lastKey); }
      }
    }
    this.rows.set(key, { tr, item });
  }

  remove(key: string): void {
    const row = this.rows.get(key);
    if (row) { row.tr.remove(); this.rows.delete(key); this.showEmpty(); }
  }

  private render(item: T, key: string): HTMLTableRowElement {
    const tr = h("tr", { dataset: { key } });
    if (this.opts.rowAttr) tr.setAttribute(this.opts.rowAttr, key);
    for (const c of this.columns) tr.append(h("td", { class: c.cls, dataset: { col: c.key } }, c.cell(item)));
    if (this.opts.onClick) {
      tr.classList.add("clickable");
      tr.addEventListener("click", () => this.opts.onClick!(item));
    }
    return tr;
  }

  private showEmpty(): void {
    if (this.rows.size === 0 && !this.body.querySelector("tr.empty")) {
      this.body.append(h("tr", { class: "empty" },
        h("td", { colspan: String(this.columns.length) }, this.opts.empty || "nothing yet")));
    }
  }
}
