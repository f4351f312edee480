// `npm run build`: bundles src/ into dist/ (committed; the server embeds it at cargo build
// time, so building the server needs no Node). Output names carry a content hash: the server
// lets browsers cache assets/ for a year and revalidates index.html on every load.
// Deterministic: the same sources give the same bytes (CI rebuilds and compares).
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as esbuild from "esbuild";

const hash = (bytes) => createHash("sha256").update(bytes).digest("hex").slice(0, 10);

const js = await esbuild.build({
  entryPoints: ["src/main.ts"],
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: true,
  legalComments: "none",
  write: false,
});
const code = js.outputFiles[0].contents;
const css = readFileSync("src/app.css");
const page = readFileSync("src/index.html", "utf8");

rmSync("dist", { recursive: true, force: true });
mkdirSync("dist/assets", { recursive: true });
const jsName = `assets/app-${hash(code)}.js`;
const cssName = `assets/app-${hash(css)}.css`;
writeFileSync(`dist/${jsName}`, code);
writeFileSync(`dist/${cssName}`, css);
writeFileSync("dist/index.html", page.replace("%APP_JS%", jsName).replace("%APP_CSS%", cssName));
console.log(`dist/index.html, dist/${jsName} (${code.length} bytes), dist/${cssName}`);
