#!/usr/bin/env node
/**
 * Bundles tsc's output (dist/) into dist/bundle/: the CLI entry and the modules commands and
 * daemons import lazily, as chunks (esbuild, ES modules). `tocfs mount` and its daemon then
 * open about 80 JavaScript files instead of some 390 (strace), and each starts sooner: Node
 * resolves, reads and compiles far fewer files (a 100k-entry TOC mount, README "Benchmarks").
 * bin/tocfs runs the bundle when it is at least as new as dist/cli/entry.js (so a later `tsc`
 * alone is never shadowed by an old bundle), dist/cli/entry.js otherwise.
 *
 *   node scripts/bundle.mjs [DIST]     (default: dist/ beside this script's folder)
 */
import { build } from 'esbuild';
import { rmSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(fileURLToPath(new URL('..', import.meta.url)));
const dist = resolve(process.argv[2] ?? join(root, 'dist'));
const out = join(dist, 'bundle');
rmSync(out, { recursive: true, force: true });
await build({
  entryPoints: { entry: join(dist, 'cli', 'entry.js') },
  outdir: out,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  // Native addons and what loads them by path stay packages of their own.
  external: ['fuse-native', '@mongodb-js/zstd', 'node-gyp-build'],
  // CommonJS dependencies (undici, pino, prom-client…) require Node's own modules: in an ES module require comes from here.
  banner: { js: "import { createRequire as __tocfsRequire } from 'node:module'; const require = __tocfsRequire(import.meta.url);" },
  sourcemap: 'linked',
  logLevel: 'warning',
});
