// `npm test`: compiles each test/unit/*.test.ts with esbuild (Node 20 runs no TypeScript)
// into .tmp/ and runs them with node's test runner.
import { spawnSync } from "node:child_process";
import { readdirSync, rmSync } from "node:fs";
import * as esbuild from "esbuild";

const tests = readdirSync("test/unit").filter((f) => f.endsWith(".test.ts"));
rmSync(".tmp", { recursive: true, force: true });
await esbuild.build({
  entryPoints: tests.map((f) => `test/unit/${f}`),
  outdir: ".tmp",
  bundle: true,
  platform: "node",
  format: "esm",
  outExtension: { ".js": ".mjs" },
});
const r = spawnSync("node", ["--test", ...tests.map((f) => `.tmp/${f.replace(/\.ts$/, ".mjs")}`)], { stdio: "inherit" });
process.exit(r.status ?? 1);
