// The list of every cluster this server can reach, each linking to its dashboard.

import { Api, type Config } from "./api";
import { ago, badge, h, num, short } from "./dom";
import { KeyedTable } from "./table";

type Entry = Record<string, any>;

export class ClusterList {
  private api: Api;
  private table: KeyedTable<Entry>;
  private note = h("p", { class: "muted" });

  constructor(private root: HTMLElement, private cfg: Config) {
    this.api = new Api(cfg);
    this.table = new KeyedTable<Entry>([
      { key: "cluster", title: "Cluster", cell: (c) => c.state === "running"
          ? h("a", { href: c.dashboard_url, class: "open", dataset: { open: c.id } }, h("code", null, short(c.id, 12)))
          : h("code", null, short(c.id, 12)) },
      { key: "kind", title: "Started by", cell: (c) => this.what(c) },
      { key: "state", title: "State", cell: (c) => h("span", null, badge(c.state), c.error ? h("div", { class: "muted small err-line" }, c.error) : "") },
      { key: "kernel", title: "Kernel", cell: (c) => c.kernel_state ? badge(c.kernel_state) : "–" },
      { key: "resources", title: "Resources", cell: (c) => Object.entries(c.resources || {}).filter(([k]) => !k.startsWith("node:"))
          .map(([k, v]) => `${num(v as number, 1)} ${k}`).join(", ") || "–" },
      { key: "nodes", title: "Nodes", cls: "num", cell: (c) => (c.nodes == null ? "–" : String(c.nodes)) },
      { key: "address", title: "Address", cell: (c) => c.address },
      { key: "started", title: "Started", cell: (c) => (c.started ? ago(c.started * 1000) : "–") },
      { key: "actions", title: "", cell: (c) => c.state === "gone" ? "" : h("button", {
          type: "button", class: "stop", dataset: { stop: c.id },
          onclick: () => void this.stop(c),
        }, c.kind === "kernel" ? "Restart kernel" : "Stop") },
    ], (c) => c.id, { rowAttr: "data-cluster-id", empty: "No cluster is running. Start a notebook with the nbcluster kernel, or run `nbcluster start --head`." });
  }

  private what(c: Entry): Node | string {
    if (c.kind === "kernel") {
      const path = c.notebook_path;
      if (path && this.cfg.labUrl) {
        return h("a", { href: this.cfg.labUrl + path.split("/").map(encodeURIComponent).join("/"), dataset: { notebook: path } }, path);
      }
      return path || `kernel ${short(c.kernel_id)}`;
    }
    return c.kind === "standalone" ? "nbcluster start" : c.kind;
  }

  async start(): Promise<void> {
    this.root.replaceChildren(
      h("header", { class: "top" }, h("span", { class: "home" }, "nbcluster"), h("span", { class: "sep" }, "›"), h("b", null, "Clusters")),
      h("main", { class: "content" }, this.note, this.table.el));
    await this.load();
    window.setInterval(() => { if (!document.hidden) void this.load(); }, 3000);
  }

  private async load(): Promise<void> {
    try {
      const got = await this.api.get(this.api.url("api/clusters"));
      this.table.setAll(got.clusters);
      this.note.textContent = this.cfg.server === "jupyter"
        ? "Every nbcluster cluster of yours on this machine: one per notebook kernel, and those started with `nbcluster start`."
        : "This cluster's own dashboard.";
    } catch (e: any) {
      this.note.textContent = `Cannot list clusters: ${e?.message || e}`;
    }
  }

  private async stop(c: Entry): Promise<void> {
    const what = c.kind === "kernel" ? "Restart this notebook's kernel (and so its cluster)?" : "Stop this cluster?";
    if (!window.confirm(what)) return;
    try {
      await this.api.post(this.api.cluster(c.id, "stop"));
    } catch (e: any) {
      window.alert(`Could not stop it: ${e?.message || e}`);
    }
    await this.load();
  }
}
