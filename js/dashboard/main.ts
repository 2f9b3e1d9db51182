// The nbcluster dashboard: one page, served by the head itself and by the jupyter-server
// extension. Which cluster (if any) the page is about comes from the server's config.

import { config } from "./api";
import { ClusterList } from "./clusters";
import { ClusterPage } from "./cluster";

function main(): void {
  const cfg = config();
  const root = document.getElementById("app")!;
  if (cfg.clusterId) void new ClusterPage(root, cfg, cfg.clusterId).start();
  else void new ClusterList(root, cfg).start();
}

main();
