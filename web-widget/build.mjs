// Builds dist/: widget.js (one minified file, CSS inlined), console.js and the two pages.
// Run through `npm run build`, which type-checks first.
import { build } from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const root = dirname(fileURLToPath(import.meta.url));
const dist = join(root, "dist");
const version = JSON.parse(readFileSync(join(root, "package.json"), "utf8")).version;

rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

const common = {
  bundle: true,
  minify: true,
  format: "iife",
  target: ["es2020", "chrome87", "firefox78", "safari15"],
  legalComments: "none",
  charset: "utf8",
  logLevel: "warning",
  define: { __KIZUNA_VERSION__: JSON.stringify(version) },
};

await build({
  ...common,
  entryPoints: [join(root, "src/widget/index.ts")],
  outfile: join(dist, "widget.js"),
  loader: { ".css": "text" },
});
await build({
  ...common,
  entryPoints: [join(root, "src/console/index.ts")],
  outfile: join(dist, "console.js"),
});
for (const page of ["index.html", "console.html"]) {
  copyFileSync(join(root, "public", page), join(dist, page));
}

for (const file of ["widget.js", "console.js"]) {
  const bytes = readFileSync(join(dist, file));
  const kib = (n) => (n / 1024).toFixed(1);
  console.log(`${file}: ${kib(bytes.length)} KiB, ${kib(gzipSync(bytes, { level: 9 }).length)} KiB gzipped`);
}
