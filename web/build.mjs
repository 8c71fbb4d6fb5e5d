// Bundles src/main.ts (and the CSS it imports) with esbuild into dist/, next to a copy of
// index.html, and copies Swagger UI's prebuilt assets into dist/vendor/swagger-ui/ for the
// gateway's /docs. Everything comes from node_modules: the output needs no network at run time.
// Usage: node build.mjs [--watch]
import * as esbuild from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, "dist");
const watch = process.argv.includes("--watch");

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });
await copyFile(join(here, "index.html"), join(dist, "index.html"));

// Swagger UI for the gateway's /docs (services/gateway/apidocs.py names these files).
const swaggerSrc = join(here, "node_modules", "swagger-ui-dist");
const swaggerOut = join(dist, "vendor", "swagger-ui");
await mkdir(swaggerOut, { recursive: true });
for (const name of ["swagger-ui-bundle.js", "swagger-ui.css", "favicon-32x32.png", "LICENSE", "NOTICE"]) {
  await copyFile(join(swaggerSrc, name), join(swaggerOut, name));
}

const options = {
  entryPoints: { app: join(here, "src", "main.ts") },
  outdir: dist,
  bundle: true,
  format: "esm",
  splitting: true,
  chunkNames: "chunks/[name]-[hash]",
  target: ["es2022"],
  minify: !watch,
  sourcemap: true,
  legalComments: "linked",
  logLevel: "info",
  loader: { ".woff2": "file", ".png": "file", ".svg": "file" },
};

if (watch) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
  console.log("watching src/ (index.html is copied at start only)");
} else {
  await esbuild.build(options);
}
