/**
 * The module levels of docs/architecture.md (LEVELS below), checked: every import in src/ goes to its own
 * level or any below, and no module reaches itself again through its runtime imports.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const SRC = resolve(dirname(fileURLToPath(import.meta.url)), '..', 'src');

/** Bottom first. A folder's modules share its level; `.` is the files directly in src/. */
export const LEVELS: readonly string[] = ['.', 'source', 'metrics', 'registry', 'formats', 'cache', 'fetch', 'layer', 'profile', 'image', 'store', 'convert', 'config', 'fs', 'daemon', 'cli'];

interface ImportEdge {
  from: string;
  to: string;
  typeOnly: boolean;
}

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((d) => (d.isDirectory() ? sourceFiles(join(dir, d.name)) : d.name.endsWith('.ts') ? [join(dir, d.name)] : []));
}

/** Relative imports of one file (static, re-exports and dynamic `import()`), as src-relative .ts paths. */
function importsOf(file: string): ImportEdge[] {
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, false);
  const edges: ImportEdge[] = [];
  const add = (spec: string, typeOnly: boolean): void => {
    if (!spec.startsWith('.')) return;
    edges.push({ from: relative(SRC, file), to: relative(SRC, resolve(dirname(file), spec)).replace(/\.js$/, '.ts'), typeOnly });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      const c = node.importClause;
      const typeOnly = !!c && (c.isTypeOnly || (!c.name && !!c.namedBindings && ts.isNamedImports(c.namedBindings) && c.namedBindings.elements.every((e) => e.isTypeOnly)));
      add(node.moduleSpecifier.text, typeOnly);
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      add(node.moduleSpecifier.text, node.isTypeOnly);
    } else if (ts.isCallExpression(node) && node.expression.kind === ts.SyntaxKind.ImportKeyword && node.arguments[0] && ts.isStringLiteral(node.arguments[0])) {
      add(node.arguments[0].text, false);
    }
    ts.forEachChild(node, visit);
  };
  visit(sf);
  return edges;
}

function levelOf(path: string): number {
  const level = LEVELS.indexOf(path.includes('/') ? path.slice(0, path.indexOf('/')) : '.');
  if (level < 0) throw new Error(`${path} is in no level of LEVELS (or outside src/)`);
  return level;
}

const edges = sourceFiles(SRC).flatMap(importsOf);

test('every folder of src/ has a level', () => {
  const folders = new Set(sourceFiles(SRC).map((f) => relative(SRC, f)).map((p) => (p.includes('/') ? p.slice(0, p.indexOf('/')) : '.')));
  assert.deepEqual([...folders].filter((f) => !LEVELS.includes(f)), []);
});

test('imports only go down: no module imports from a level above its own', () => {
  const upward = edges.filter((e) => levelOf(e.to) > levelOf(e.from)).map((e) => `${e.from} -> ${e.to}`);
  assert.deepEqual(upward, []);
});

test('no import cycles between modules (runtime imports)', () => {
  const graph = new Map<string, string[]>();
  for (const e of edges.filter((x) => !x.typeOnly)) graph.set(e.from, [...(graph.get(e.from) ?? []), e.to]);
  const state = new Map<string, 'open' | 'done'>();
  const cycles: string[] = [];
  const walk = (node: string, path: string[]): void => {
    if (state.get(node) === 'done') return;
    if (state.get(node) === 'open') {
      cycles.push([...path.slice(path.indexOf(node)), node].join(' -> '));
      return;
    }
    state.set(node, 'open');
    for (const next of graph.get(node) ?? []) walk(next, [...path, node]);
    state.set(node, 'done');
  };
  for (const node of graph.keys()) walk(node, []);
  assert.deepEqual(cycles, []);
});
