// Bundles each widget's front end (src/<name>.ts) into one ESM file in
// nbcluster/widgets/static/, which ships in the wheel: `pip install .` needs no node.
//   node build.mjs           write the bundles
//   node build.mjs --check   rebuild in memory and fail if a committed bundle differs
import * as esbuild from "esbuild";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, "..", "nbcluster", "widgets", "static");
export const WIDGETS = ["progress", "graph", "cluster", "store"];
const check = process.argv.includes("--check");

const result = await esbuild.build({
  entryPoints: WIDGETS.map((w) => join(here, "src", `${w}.ts`)),
  outdir,
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  legalComments: "eof",   // keeps the MIT notice of the bundled layout library
  charset: "utf8",
  write: !check,
  logLevel: "warning",
});

if (check) {
  const stale = [];
  for (const file of result.outputFiles) {
    let committed = "";
    try { committed = readFileSync(file.path, "utf8"); } catch { /* missing: stale */ }
    if (committed !== file.text) stale.push(file.path);
  }
  if (stale.length) {
    console.error(`stale widget bundles (run: cd js && npm ci && npm run build):\n  ${stale.join("\n  ")}`);
    process.exit(1);
  }
  console.log(`widget bundles match their sources (${result.outputFiles.length} files)`);
}
