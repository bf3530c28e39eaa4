/**
 * `npm run build`'s second step: bundles the web console (console/, Preact)
 * with esbuild into dist/console/ (app.js, app.css, index.html), minified,
 * with no source maps and nothing loaded from another origin at run time
 * (docs/console.md). Prints each file's size and its gzip size, the figures
 * docs/console.md reports.
 */
import { copyFile, mkdir, readFile, rm } from 'node:fs/promises';
import { gzipSync } from 'node:zlib';
import { build } from 'esbuild';

const root = new URL('../', import.meta.url);
const at = (relative: string) => new URL(relative, root).pathname;
const outdir = at('dist/console/');

await rm(outdir, { recursive: true, force: true });
await mkdir(outdir, { recursive: true });
await build({
  entryPoints: { app: at('console/main.tsx') },
  outdir,
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2022',
  platform: 'browser',
  jsx: 'automatic',
  jsxImportSource: 'preact',
  legalComments: 'none',
  logLevel: 'warning',
});
await copyFile(at('console/index.html'), `${outdir}index.html`);

for (const file of ['app.js', 'app.css', 'index.html']) {
  const bytes = await readFile(`${outdir}${file}`);
  console.log(`dist/console/${file}: ${bytes.length} bytes, ${gzipSync(bytes, { level: 9 }).length} gzipped`);
}
