// Tasks: a filterable table of the newest tasks, updated live from the event stream, and
// one task's details with its remote traceback.

import type { LiveEvent } from "../api";
import { STATE_LABEL, STATE_ORDER } from "../charts";
import { badge, clock, debounce, duration, h, short, tid } from "../dom";
import { KeyedTable } from "../table";
import type { Context, View } from "../view";

type Task = Record<string, any>;

const LIMIT = 200;
const FILTERS = ["state", "name", "node_id", "tag", "actor_id"];

// What a live event changes in a task's record (the head's tables follow the same rules).
export function applyTaskEvent(t: Task, ev: LiveEvent): void {
  const d = ev.data;
  const ms = ev.time ? Math.round(ev.time * 1000) : null;
  const rank: Record<string, number> = {
    PENDING_NODE_ASSIGNMENT: 0, SUBMITTED_TO_WORKER: 1, RUNNING: 2, FINISHED: 3, FAILED: 3, CANCELLED: 3,
  };
  const advance = (st: string) => { if ((rank[t.state] ?? 0) <= rank[st] && rank[t.state] !== 3) t.state = st; };
  if (ev.source?.kind === "worker" && ev.type !== "TASK_SUBMITTED") {
    t.node_id = ev.source.node_id ?? t.node_id;
    t.worker_pid = ev.source.pid ?? t.worker_pid;
  }
  switch (ev.type) {
    case "TASK_SUBMITTED":
      t.name = d.name || t.name; t.tag = d.tag; t.call_site = d.call_site;
      t.creation_time_ms ??= ms; t.attempt_number = d.attempt; t.state ??= "PENDING_NODE_ASSIGNMENT";
      break;
    case "TASK_SCHEDULED": t.scheduled_time_ms = ms; advance("SUBMITTED_TO_WORKER"); break;
    case "TASK_RUNNING": t.name = t.name || d.name; t.start_time_ms = ms; t.end_time_ms = null; advance("RUNNING"); break;
    case "TASK_FINISHED": t.end_time_ms = ms; advance("FINISHED"); break;
    case "TASK_ENDED": t.end_time_ms = ms; break;
    case "TASK_FAILED":
      t.state = "FAILED"; t.error_type = d.error_type; t.error_message = d.error_message; t.end_time_ms ??= ms;
      break;
    case "TASK_CANCELLED": t.state = "CANCELLED"; t.error_type = "TaskCancelledError"; break;
    case "TASK_RETRIED": t.state = "PENDING_NODE_ASSIGNMENT"; t.attempt_number = d.attempt; break;
  }
}

function runTime(t: Task): number | null {
  if (!t.start_time_ms) return null;
  const end = t.end_time_ms || (t.state === "RUNNING" ? Date.now() : null);
  return end ? end - t.start_time_ms : null;
}

export class TasksView implements View {
  el = h("section", { class: "view", dataset: { view: "tasks" } });
  private table: KeyedTable<Task>;
  private total = h("span", { class: "muted", dataset: { count: "tasks" } });
  private missing = new Set<string>();
  // Events about tasks whose submission has not arrived yet: a worker may report a task
  // before its owner does (they flush on their own clocks). Applied when it arrives.
  private early = new Map<string, LiveEvent[]>();
  // Events that arrive while a snapshot is on its way: applied on top of it once it is in
  // (the snapshot may predate them; applying one twice changes nothing).
  private loading: LiveEvent[] | null = null;
  private fetchMissing = debounce(() => void this.loadMissing(), 300);
  private detail: TaskDetail | null = null;

  constructor(private ctx: Context) {
    this.table = new KeyedTable<Task>([
      { key: "task_id", title: "Task", cell: (t) => h("code", null, tid(t.task_id)) },
      { key: "name", title: "Function", cell: (t) => t.name || "–" },
      { key: "state", title: "State", cell: (t) => badge(t.state, STATE_LABEL[t.state] || t.state) },
      { key: "node", title: "Node", cell: (t) => short(t.node_id) },
      { key: "worker", title: "Worker", cell: (t) => (t.worker_pid ? String(t.worker_pid) : "–") },
      { key: "submitted", title: "Submitted", cell: (t) => clock(t.creation_time_ms) },
      { key: "duration", title: "Ran for", cls: "num", cell: (t) => duration(runTime(t)) },
      { key: "error", title: "Error", cell: (t) => t.error_type ? h("span", { class: "err-type" }, t.error_type) : "" },
    ], (t) => t.task_id, {
      onClick: (t) => ctx.go(`#/tasks/${t.task_id}${this.queryString()}`),
      rowAttr: "data-task-id", max: LIMIT, empty: "No task matches.",
    });
  }

  private filters(): Record<string, string> {
    const out: Record<string, string> = {};
    for (const k of FILTERS) { const v = this.ctx.query.get(k); if (v) out[k] = v; }
    return out;
  }

  private queryString(): string {
    const q = new URLSearchParams(this.filters()).toString();
    return q ? `?${q}` : "";
  }

  private matches(t: Task): boolean {
    const f = this.filters();
    for (const [k, v] of Object.entries(f)) {
      const have = t[k];
      if (have === undefined || have === null) return false;
      if (String(have).toLowerCase() !== v.toLowerCase()) return false;
    }
    return true;
  }

  async refresh(): Promise<void> {
    if (this.ctx.arg) {
      this.detail = new TaskDetail(this.ctx, this.ctx.arg);
      this.el.replaceChildren(this.detail.el);
      await this.detail.load();
      return;
    }
    this.el.replaceChildren(this.form(), h("div", { class: "table-head" },
      h("span", null, "Newest tasks: showing "), this.total), this.table.el);
    this.loading = [];
    try {
      const got = await this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, "tasks", { ...this.filters(), limit: LIMIT }));
      const items: Task[] = got.items.slice().reverse();
      this.table.setAll(items);
      this.total.textContent = `${items.length} of ${got.total}`;
    } catch (e) {
      this.ctx.failed(e);
    } finally {
      const queued = this.loading;
      this.loading = null;
      if (queued.length) this.onEvents(queued);
    }
  }

  private form(): HTMLElement {
    const f = this.filters();
    const state = h("select", { name: "state", "aria-label": "state" },
      h("option", { value: "" }, "any state"),
      STATE_ORDER.map((st) => h("option", { value: st, selected: f.state === st }, STATE_LABEL[st])));
    const name = h("input", { name: "name", placeholder: "function", value: f.name || "", "aria-label": "function" });
    const node = h("input", { name: "node_id", placeholder: "node id", value: f.node_id || "", "aria-label": "node" });
    const tag = h("input", { name: "tag", placeholder: "cell (tag)", value: f.tag || "", "aria-label": "cell" });
    const apply = () => {
      const q = new URLSearchParams();
      for (const [k, el] of [["state", state], ["name", name], ["node_id", node], ["tag", tag]] as const) {
        if ((el as HTMLInputElement).value) q.set(k, (el as HTMLInputElement).value.trim());
      }
      if (f.actor_id) q.set("actor_id", f.actor_id);
      const qs = q.toString();
      this.ctx.go(`#/tasks${qs ? "?" + qs : ""}`);
    };
    state.addEventListener("change", apply);
    const form = h("form", { class: "filters", onsubmit: (e: Event) => { e.preventDefault(); apply(); } },
      state, name, node, tag, h("button", { type: "submit" }, "Filter"),
      Object.keys(f).length ? h("a", { href: "#/tasks", class: "clear" }, "clear") : null);
    return form;
  }

  onEvents(evs: LiveEvent[]): void {
    if (this.detail) { this.detail.onEvents(evs); return; }
    if (this.loading) { this.loading.push(...evs); return; }
    for (const ev of evs) {
      if (!ev.type.startsWith("TASK_")) continue;
      const id = ev.data.task_id;
      if (!id) continue;
      const known = this.table.get(id);
      if (known) {
        const t = { ...known };
        applyTaskEvent(t, ev);
        if (this.matches(t)) this.table.put(t, false);
        else this.table.remove(id);
      } else if (ev.type === "TASK_SUBMITTED") {
        const t: Task = { task_id: id, state: "PENDING_NODE_ASSIGNMENT" };
        applyTaskEvent(t, ev);
        for (const e of this.early.get(id) || []) applyTaskEvent(t, e);
        this.early.delete(id);
        if (this.matches(t)) this.table.put(t, true);
      } else {
        const list = this.early.get(id);
        if (list) list.push(ev);
        else {
          this.early.set(id, [ev]);
          if (this.early.size > 5000) this.early.delete(this.early.keys().next().value!);
        }
        if (!this.missing.has(id) && Object.keys(this.filters()).length) {
          this.missing.add(id);  // a task that may now match: ask for its record
          this.fetchMissing();
        }
      }
    }
  }

  private async loadMissing(): Promise<void> {
    const ids = [...this.missing].slice(0, 20);
    this.missing.clear();
    for (const id of ids) {
      try {
        const t = await this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, `tasks/${id}`));
        if (this.matches(t)) this.table.put(t, true);
      } catch { /* forgotten meanwhile */ }
    }
  }

  tick(): void {
    for (const t of this.table.items()) if (t.state === "RUNNING") this.table.put(t, false);
    if (!this.detail) {
      this.total.textContent = `${this.table.size}`;
    }
  }
}

class TaskDetail {
  el = h("div", { class: "task-detail" });
  private reload = debounce(() => void this.load(), 300);

  constructor(private ctx: Context, private id: string) {}

  async load(): Promise<void> {
    let t: Task;
    try {
      t = await this.ctx.api.get(this.ctx.api.cluster(this.ctx.id, `tasks/${this.id}`));
    } catch (e: any) {
      if (e?.status === 404) {
        this.el.replaceChildren(back(this.ctx), h("p", { class: "muted" }, `No task ${this.id} (it may have been forgotten).`));
        return;
      }
      this.ctx.failed(e);
      return;
    }
    const rows: [string, Node | string][] = [
      ["Task id", h("code", null, t.task_id)],
      ["Function", t.name || "–"],
      ["Type", t.type],
      ["State", badge(t.state, STATE_LABEL[t.state] || t.state)],
      ["Attempt", String(t.attempt_number)],
      ["Node", t.node_id ? h("a", { href: `#/tasks?node_id=${t.node_id}` }, short(t.node_id, 12)) : "–"],
      ["Worker", t.worker_pid ? `pid ${t.worker_pid}` : "–"],
      ["Submitted by", t.owner_pid ? `pid ${t.owner_pid} (${t.owner})` : t.owner || "–"],
      ["Call site", h("code", null, t.call_site || "–")],
      ["Cell", t.tag ? h("a", { href: `#/tasks?tag=${encodeURIComponent(String(t.tag))}` }, String(t.tag)) : "–"],
      ["Submitted", clock(t.creation_time_ms)],
      ["Started", clock(t.start_time_ms)],
      ["Ended", clock(t.end_time_ms)],
      ["Ran for", duration(runTime(t))],
      ["Arguments", refs(t.args)],
      ["Returns", refs(t.returns)],
    ];
    if (t.actor_id) rows.splice(3, 0, ["Actor", h("a", { href: `#/actors` }, short(t.actor_id, 12))]);
    this.el.replaceChildren(
      back(this.ctx),
      h("h2", null, t.name || "task", " ", badge(t.state, STATE_LABEL[t.state] || t.state)),
      h("table", { class: "fields" }, h("tbody", null, rows.map(([k, v]) => h("tr", null, h("th", null, k), h("td", null, v))))),
      t.error_message ? h("div", { class: "traceback-box" },
        h("h3", null, t.error_type || "Error"),
        h("pre", { class: "traceback" }, t.error_message)) : "",
    );
  }

  onEvents(evs: LiveEvent[]): void {
    if (evs.some((e) => e.data?.task_id === this.id)) this.reload();
  }
}

function back(ctx: Context): HTMLElement {
  const q = new URLSearchParams(ctx.query).toString();
  return h("a", { href: `#/tasks${q ? "?" + q : ""}`, class: "back" }, "← all tasks");
}

function refs(ids: string[] | undefined): Node | string {
  if (!ids || !ids.length) return "–";
  return h("span", null, ids.map((x) => h("code", { class: "ref" }, tid(x))));
}
