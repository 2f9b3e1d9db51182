// Bundles the dashboard (one page: main.ts and style.css) into nbcluster/dashboard/static/,
// which ships in the wheel: `pip install .` needs no node.
//   node dashboard/build.mjs           write the bundle
//   node dashboard/build.mjs --check   rebuild in memory and fail if the committed one differs
import * as esbuild from "esbuild";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, "..", "..", "nbcluster", "dashboard", "static");
const check = process.argv.includes("--check");

const result = await esbuild.build({
  entryPoints: { dashboard: join(here, "main.ts"), "dashboard-style": join(here, "style.css") },
  outdir,
  bundle: true,
  format: "iife",
  target: "es2020",
  minify: true,
  charset: "utf8",
  write: false,
  logLevel: "warning",
});

const { writeFileSync } = await import("node:fs");
const files = result.outputFiles.map((f) => ({
  // one stylesheet, named for the page
  path: f.path.replace("dashboard-style.css", "dashboard.css"),
  text: f.text,
}));
if (check) {
  const stale = [];
  for (const file of files) {
    let committed = "";
    try { committed = readFileSync(file.path, "utf8"); } catch { /* missing: stale */ }
    if (committed !== file.text) stale.push(file.path);
  }
  if (stale.length) {
    console.error(`stale dashboard bundle (run: cd js && npm ci && node dashboard/build.mjs):\n  ${stale.join("\n  ")}`);
    process.exit(1);
  }
  console.log(`dashboard bundle matches its sources (${files.length} files)`);
} else {
  for (const file of files) writeFileSync(file.path, file.text);
}
