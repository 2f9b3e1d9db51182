// One cluster's page: a header that says what the cluster is and whether it lives, tabs
// for the views, and the live event feed that keeps the shown view current.

import { Api, ApiError, Feed, type Config, type FeedState, type LiveEvent } from "./api";
import { badge, h, short } from "./dom";
import type { Context, View } from "./view";
import { ActorsView } from "./views/actors";
import { CellsView } from "./views/cells";
import { LogsView } from "./views/logs";
import { NodesView } from "./views/nodes";
import { ObjectsView } from "./views/objects";
import { OverviewView } from "./views/overview";
import { TasksView } from "./views/tasks";
import { TimelineView } from "./views/timeline";

const TABS: [string, string, (ctx: Context) => View][] = [
  ["overview", "Overview", (c) => new OverviewView(c)],
  ["cells", "Cells", (c) => new CellsView(c)],
  ["tasks", "Tasks", (c) => new TasksView(c)],
  ["timeline", "Timeline", (c) => new TimelineView(c)],
  ["actors", "Actors", (c) => new ActorsView(c)],
  ["objects", "Objects", (c) => new ObjectsView(c)],
  ["nodes", "Nodes & workers", (c) => new NodesView(c)],
  ["logs", "Logs", (c) => new LogsView(c)],
];

export class ClusterPage {
  private api: Api;
  private view: View | null = null;
  private viewKey = "";
  private main = h("main", { class: "content" });
  private nav = h("nav", { class: "tabs" });
  private status = h("span", { class: "feed", dataset: { feed: "connecting" } }, "connecting…");
  private header = h("div", { class: "cluster-info" });
  private banner = h("div", { class: "banner", hidden: true });
  private feed: Feed | null = null;
  private gone = false;
  private entry: any = null;
  private timer = 0;

  constructor(private root: HTMLElement, private cfg: Config, private id: string) {
    this.api = new Api(cfg);
  }

  async start(): Promise<void> {
    const home = h("a", { href: this.api.url(""), class: "home" }, "nbcluster");
    this.root.replaceChildren(
      h("header", { class: "top" }, home, h("span", { class: "sep" }, "›"), this.header, this.status),
      this.banner, this.nav, this.main);
    try {
      this.entry = await this.api.get(this.api.cluster(this.id));
    } catch (e) {
      this.fail(e);
      return;
    }
    this.drawHeader();
    if (this.entry.state !== "running") {
      this.fail(new ApiError(410, this.entry.error || `this cluster is ${this.entry.state}`, { state: this.entry.state }));
      return;
    }
    this.feed = new Feed(this.api.socketUrl(this.id, {}), (evs) => this.onEvents(evs),
      () => void this.view?.refresh(), (s, why) => this.onFeed(s, why));
    window.addEventListener("hashchange", () => this.route());
    this.route();
    this.timer = window.setInterval(() => { if (!this.gone && !document.hidden) this.view?.tick?.(); }, 1000);
  }

  private drawHeader(): void {
    const e = this.entry;
    const what = e.kind === "kernel"
      ? (e.notebook_path ? this.notebookLink(e.notebook_path) : `kernel ${short(e.kernel_id)}`)
      : e.kind === "standalone" ? "nbcluster start" : e.kind;
    this.header.replaceChildren(
      h("b", null, "Cluster ", h("code", { dataset: { clusterId: this.id } }, short(this.id, 12))), " · ",
      what, " · ", h("span", { class: "muted" }, e.address), " ",
      badge(e.state, e.state));
  }

  private notebookLink(path: string): Node {
    if (!this.cfg.labUrl) return document.createTextNode(path);
    return h("a", { href: this.cfg.labUrl + path.split("/").map(encodeURIComponent).join("/"), target: "_blank", dataset: { notebook: path } }, path);
  }

  private route(): void {
    const raw = location.hash.replace(/^#\/?/, "");
    const [pathPart, queryPart] = raw.split("?", 2);
    const [key0, ...rest] = pathPart.split("/");
    const key = TABS.some((t) => t[0] === key0) ? key0 : "overview";
    const arg = rest.length ? decodeURIComponent(rest.join("/")) : null;
    const query = new URLSearchParams(queryPart || "");
    this.nav.replaceChildren(...TABS.map(([k, title]) =>
      h("a", { href: `#/${k}`, class: k === key ? "active" : "", dataset: { tab: k } }, title)));
    const routeKey = `${key}/${arg}?${query}`;
    if (routeKey === this.viewKey) return;
    this.viewKey = routeKey;
    this.view?.destroy?.();
    const ctx: Context = {
      api: this.api, cfg: this.cfg, id: this.id, query, arg,
      go: (hash) => { location.hash = hash; },
      failed: (e) => this.fail(e),
    };
    const make = TABS.find((t) => t[0] === key)![2];
    const view = make(ctx);
    if (view instanceof CellsView) view.setNotebook(this.entry?.notebook_path || null);
    this.view = view;
    this.main.replaceChildren(view.el);
    if (!this.gone) void view.refresh();
  }

  private onEvents(evs: LiveEvent[]): void {
    this.view?.onEvents?.(evs);
  }

  private onFeed(s: FeedState, why?: string): void {
    this.status.dataset.feed = s;
    this.status.textContent = s === "live" ? "● live" : s === "connecting" ? "connecting…" : `○ disconnected${why ? `: ${why}` : ""}`;
    if (s === "closed") void this.checkGone();
  }

  private async checkGone(): Promise<void> {
    try {
      const e = await this.api.get(this.api.cluster(this.id));
      if (e.state === "gone") this.fail(new ApiError(410, "this cluster is gone", { state: "gone" }));
    } catch (err) {
      this.fail(err);
    }
  }

  // An API failure: a cluster that ended shows as gone (its last view stays visible).
  private fail(e: unknown): void {
    const err = e as ApiError;
    const state = err?.body?.state;
    if (err?.status === 410 || state === "gone") {
      this.gone = true;
      this.feed?.close();
      window.clearInterval(this.timer);
      this.root.classList.add("is-gone");
      this.showBanner("gone", "This cluster is gone: its processes have exited. What you see is its last state.");
      this.header.querySelector(".badge")?.replaceWith(badge("gone", "gone"));
      void this.offerSuccessor();
    } else if (err?.status === 404) {
      this.showBanner("unknown", `No cluster ${this.id} here.`);
    } else if (err instanceof TypeError) {  // fetch itself failed: no server answers
      this.showBanner("unreachable", "The dashboard's server does not answer: the cluster may have stopped.");
    } else if (err?.status === 403) {
      this.showBanner("forbidden", "Not logged in (or the login expired): reload the page, or open a new login link.");
    } else {
      this.showBanner("error", String(err?.message || e));
    }
  }

  // A notebook whose kernel restarted has a new cluster: say where it is.
  private async offerSuccessor(): Promise<void> {
    const kernel = this.entry?.kernel_id;
    if (!kernel) return;
    try {
      const got = await this.api.get(this.api.url("api/clusters"));
      const next = got.clusters.find((c: any) => c.kernel_id === kernel && c.state === "running" && c.id !== this.id);
      if (next) {
        this.banner.append(" ", h("a", { href: next.dashboard_url, dataset: { successor: next.id } },
          "Open this notebook's new cluster →"));
      }
    } catch { /* the list is a nicety here */ }
  }

  private showBanner(kind: string, text: string): void {
    this.banner.hidden = false;
    this.banner.dataset.banner = kind;
    this.banner.className = `banner banner-${kind}`;
    this.banner.textContent = text;
  }
}
