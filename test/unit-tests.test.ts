/**
 * test/unit-tests.txt lists the files `npm run test:unit` runs: tests that need no apt
 * package, no root and no service. This checks every listed file for what would break that:
 * starting docker-registry or `tocfs store`, FUSE mounts, Podman, and the command-line tools
 * only apt installs. (A helper that started one of them for a listed file would fail at run
 * time: scripts/test-unit.sh puts stubs of those tools first on PATH.)
 */
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const LIST = join(ROOT, 'test', 'unit-tests.txt');

/** Paths listed (relative to the repository), comments and blank lines skipped. */
function listed(): string[] {
  return readFileSync(LIST, 'utf8').split('\n').map((l) => l.trim()).filter((l) => l !== '' && !l.startsWith('#'));
}

/** Tools only apt installs (scripts/setup.sh), or that need root. */
const UNIT_FORBIDDEN_TOOLS = ['podman', 'skopeo', 'docker-registry', 'runc', 'htpasswd', 'openssl', 'python3', 'zstd', 'systemd-analyze', 'systemctl', 'systemd-run', 'fusermount', 'mount', 'umount', 'setpriv', 'sudo', 'apt-get', 'npm', 'npx', 'curl'];
const FORBIDDEN: Array<[RegExp, string]> = [
  [/\bstartRegistry\s*\(/, 'starts docker-registry'],
  [/\bstartStore\s*\(/, 'starts tocfs store (a FUSE mount)'],
  [/\bnew Mounts\s*\(|\bmountFs\s*\(|\bfuseSkipReason\s*\(/, 'mounts FUSE'],
  [/\bPodman\.create\s*\(|\bnew Podman\s*\(|\bpodmanSkipReason\s*\(/, 'runs Podman'],
  [/\bstartTokenIssuer\s*\(|\bselfSigned\s*\(|\bserverCert\s*\(/, 'needs openssl (certificates) or a token service'],
  [/\bxattrsUnder\s*\(/, 'needs python3'],
  [new RegExp(`\\b(?:spawn|spawnSync|execFile|execFileSync|exec|execSync|run)\\(\\s*['"\`](?:${UNIT_FORBIDDEN_TOOLS.join('|')})['"\` ]`), 'runs a tool only apt installs, or needs root'],
  [/\brunCli\(\s*\[\s*['"`](?:mount|unmount|store)['"`]/, 'runs tocfs mount/store (FUSE)'],
  [/\bENTRY\s*,\s*['"`](?:mount|store)['"`]/, 'runs tocfs mount/store (FUSE)'],
];

/** What in `text` breaks the unit rules: one line per finding. */
function unitViolations(text: string): string[] {
  const code = text.replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  return FORBIDDEN.flatMap(([re, why]) => {
    const m = re.exec(code);
    return m ? [`${why}: ${m[0].trim()}`] : [];
  });
}

describe('test:unit membership (test/unit-tests.txt)', () => {
  const files = listed();

  it('lists existing test files, each once', () => {
    assert.ok(files.length > 10, `${files.length} files`);
    assert.deepEqual(files.filter((f, i) => files.indexOf(f) !== i), [], 'duplicates');
    for (const f of files) {
      assert.match(f, /^test\/.*\.test\.ts$/, f);
      assert.ok(existsSync(join(ROOT, f)), `${f} exists`);
    }
  });

  it('no listed file starts a registry, a store, a FUSE mount or Podman, or runs a tool only apt installs', () => {
    const problems: string[] = [];
    // This file names those calls as samples for the check below; it calls none of them.
    for (const f of files.filter((x) => x !== 'test/unit-tests.test.ts')) for (const v of unitViolations(readFileSync(join(ROOT, f), 'utf8'))) problems.push(`${f}: ${v}`);
    assert.deepEqual(problems, [], 'move these files out of test/unit-tests.txt, or the calls out of them');
  });

  it('the check finds what it looks for (in code, not in comments)', () => {
    const found = (s: string): number => unitViolations(s).length;
    for (const s of [
      'const reg = await startRegistry();',
      "store = await startStore(join(work, 'store'), cache);",
      'const mounts = new Mounts(tmp);',
      "const podman = await Podman.create(work, dir, host);",
      "await run('podman', ['pull', ref]);",
      "execFileSync('python3', ['-c', script]);",
      "sh(`zstd -dc x`); await execFile('zstd', ['-d']);",
      "await run('mount', ['-t', 'tmpfs', 'x', mnt]);",
      "await runCli(['mount', image, mnt]);",
      "spawn(process.execPath, ['--import', 'tsx', ENTRY, 'store', '--foreground']);",
      "const pair = await selfSigned(tmp, 'ca');",
    ]) assert.equal(found(s), 1, s);
    for (const s of ['// startRegistry() is not called here', '/* new Mounts(tmp) */', "runCli(['inspect', ref]);", "metricsAddressFor('mount', cfg)", "execFileSync('tar', ['-czf', out, dir]);", "const { freePort } = await import('./helpers/registry.js');"]) {
      assert.equal(found(s), 0, s);
    }
    // Files that do need services are caught.
    for (const f of ['test/registry-lazy.test.ts', 'test/mount.test.ts', 'test/store-podman.test.ts', 'test/cache/chunk-cache.test.ts', 'test/writer-roundtrip.test.ts']) {
      if (existsSync(join(ROOT, f))) assert.ok(unitViolations(readFileSync(join(ROOT, f), 'utf8')).length > 0, `${f} is flagged`);
    }
  });
});
