/**
 * Logs: credentials never reach the output, in whatever shape they are logged; JSON lines on
 * stderr for commands (stdout stays clean for command output, `cat`'s bytes included) and on
 * stdout for the foreground daemons; journald priority prefixes when the log stream is the
 * journal; `--log-level` filters; child loggers name image, layer and path.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, fstatSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { createLogger, imageLogger, layerLogger, pathLogger } from '../src/log.js';
import { runCli } from './helpers/cli.js';
import { buildImage, seededBytes } from './helpers/images.js';
import { fuseSkipReason } from './helpers/mounts.js';
import { writeAuthFile } from './helpers/registry-env.js';
import { startRegistry, type TestRegistry } from './helpers/registry.js';

const tmp = mkdtempSync(join(tmpdir(), 'tocfs-log-'));
after(() => rmSync(tmp, { recursive: true, force: true }));
const emptyConfig = join(tmp, 'empty.toml');
writeFileSync(emptyConfig, '');

function collector() {
  const chunks: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer | string, _enc, done) {
      chunks.push(chunk.toString());
      done();
    },
  });
  return { stream, text: () => chunks.join(''), lines: () => chunks.join('').split('\n').filter(Boolean) };
}

const SECRETS = ['hunter2', 'abc.def.ghi', 'dXNlcjpwYXNzd29yZA', 's3cr3t', 'pw9876', 'tok-123456', 'idtok-7890', 'cookie-val', 'secretauth', 'regtok-555', 'p4ss-nested', 'stackpw'];

function logEverySecretShape(log: ReturnType<typeof createLogger>) {
  log.info({ headers: { Authorization: 'Bearer abc.def.ghi', accept: 'application/json' } }, 'request');
  log.info({ password: 'hunter2', username: 'alice' }, 'login');
  log.info({ auth: 'dXNlcjpwYXNzd29yZA==' }, 'auth.json entry');
  log.info({ creds: { username: 'u', password: 'p4ss-nested' } }, 'nested');
  log.info({ a: { b: { c: { token: 'tok-123456' } } } }, 'deep');
  log.info({ identitytoken: 'idtok-7890', registrytoken: 'regtok-555' }, 'tokens');
  log.info({ cookie: 'cookie-val' }, 'cookie');
  log.info({ url: 'https://user:s3cr3t@registry.example/v2/' }, 'url field');
  log.info('fetching https://bob:pw9876@registry.example/v2/x/blobs/sha256:00');
  log.info({ rawHeaders: ['authorization', 'Basic dXNlcjpwYXNzd29yZA==', 'host', 'r.example'] }, 'raw headers');
  const err = new Error('GET https://carol:stackpw@registry.example/v2/ failed: sent Bearer abc.def.ghi');
  log.error({ err }, 'request failed');
  log.error(err);
  log.child({ auth: 'secretauth' }).warn('child binding');
  imageLogger('docker://dave:s3cr3t@registry.example/app:1', log).info('image with userinfo');
}

describe('log redaction', () => {
  it('leaves no credential in JSON output, and keeps what is not secret', () => {
    const out = collector();
    logEverySecretShape(createLogger({ level: 'info', destination: out.stream }));
    const text = out.text();
    for (const s of SECRETS) assert.ok(!text.includes(s), `secret ${s} leaked:\n${text}`);
    const lines = out.lines().map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(lines.length, 14);
    assert.deepEqual(lines[0]!.headers, { Authorization: '[redacted]', accept: 'application/json' });
    assert.equal(lines[1]!.username, 'alice');
    assert.equal(lines[1]!.password, '[redacted]');
    assert.deepEqual(lines[3]!.creds, { username: 'u', password: '[redacted]' });
    assert.equal(lines[7]!.url, 'https://[redacted]@registry.example/v2/');
    assert.equal(lines[8]!.msg, 'fetching https://[redacted]@registry.example/v2/x/blobs/sha256:00');
    assert.deepEqual(lines[9]!.rawHeaders, ['authorization', '[redacted]', 'host', 'r.example']);
    assert.equal((lines[10]!.err as { message: string }).message, 'GET https://[redacted]@registry.example/v2/ failed: sent Bearer [redacted]');
    assert.equal(lines[13]!.image, 'docker://[redacted]@registry.example/app:1');
  });

  it('leaves no credential in the pretty form either', () => {
    const out = collector();
    logEverySecretShape(createLogger({ level: 'info', format: 'pretty', destination: out.stream }));
    const text = out.text();
    assert.match(text, /INFO.*request/);
    for (const s of SECRETS) assert.ok(!text.includes(s), `secret ${s} leaked:\n${text}`);
  });

  it('does not change the objects it was given', () => {
    const headers = { authorization: 'Bearer abc.def.ghi' };
    createLogger({ destination: collector().stream }).info({ headers }, 'x');
    assert.equal(headers.authorization, 'Bearer abc.def.ghi');
  });
});

describe('log fields and levels', () => {
  it('child loggers name image, layer and path on every line', () => {
    const out = collector();
    const img = imageLogger('docker://registry.example/app:1', createLogger({ destination: out.stream }));
    pathLogger('/usr/bin/env', layerLogger('sha256:1234', img)).error({ errno: 'EIO' }, 'read failed');
    const line = JSON.parse(out.lines()[0]!) as Record<string, unknown>;
    assert.equal(line.image, 'docker://registry.example/app:1');
    assert.equal(line.layer, 'sha256:1234');
    assert.equal(line.path, '/usr/bin/env');
    assert.equal(line.level, 50);
    assert.equal(line.msg, 'read failed');
  });

  it('writes only at or above the configured level', () => {
    const out = collector();
    const log = createLogger({ level: 'warn', destination: out.stream });
    log.info('hidden');
    log.debug('hidden');
    log.warn('shown');
    assert.deepEqual(out.lines().map((l) => (JSON.parse(l) as { msg: string }).msg), ['shown']);
  });
});

describe('logs from the CLI', () => {
  // An unknown TOCFS_* variable makes `config show` log a warning: a log line to look at.
  const env = { TOCFS_CONFIG: emptyConfig, TOCFS_FETCH_CONCURENCY: '3' };

  it('go to stderr as JSON lines; stdout carries only the command output', async () => {
    const res = await runCli(['config', 'show', '--json'], { env });
    assert.equal(res.code, 0, res.stderr);
    JSON.parse(res.stdout.toString()); // nothing but the command's JSON
    const warn = res.stderr.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);
    assert.equal(warn.length, 1);
    assert.equal(warn[0]!.level, 40);
    assert.equal(warn[0]!.msg, 'environment variable TOCFS_FETCH_CONCURENCY is not a tocfs setting; did you mean TOCFS_FETCH_CONCURRENCY?');
  });

  it('--log-level error silences the warning; TOCFS_LOG_LEVEL does too', async () => {
    const flag = await runCli(['config', 'show', '--log-level', 'error'], { env });
    assert.equal(flag.code, 0, flag.stderr);
    assert.equal(flag.stderr, '');
    const fromEnv = await runCli(['config', 'show'], { env: { ...env, TOCFS_LOG_LEVEL: 'error' } });
    assert.equal(fromEnv.stderr, '');
  });

  it('carry a journald priority prefix when stderr is the journal stream', async () => {
    const file = join(tmp, 'journal-stream');
    const fd = openSync(file, 'w');
    const st = fstatSync(fd);
    const entry = fileURLToPath(new URL('../src/cli/entry.ts', import.meta.url));
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', entry, 'config', 'show'], {
        env: { ...process.env, ...env, JOURNAL_STREAM: `${st.dev}:${st.ino}` },
        stdio: ['ignore', 'ignore', fd],
      });
      child.on('error', reject);
      child.on('close', resolve);
    });
    closeSync(fd);
    assert.equal(code, 0);
    const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    assert.equal(lines.length, 1, lines.join('\n'));
    assert.match(lines[0]!, /^<4>\{"level":40,/); // journald keeps <4> as PRIORITY=warning
    JSON.parse(lines[0]!.slice(3));
  });
});

describe('where the CLI logs: stderr for commands, stdout for daemons', () => {
  const env = { TOCFS_CONFIG: emptyConfig, TOCFS_FETCH_CONCURENCY: '3' };
  const content = seededBytes('log-cat', 300_000);
  let image: string;
  const jsonLines = (text: string) => text.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>);

  before(async () => {
    const img = await buildImage(join(tmp, 'image'), { format: 'zstd:chunked', layers: [[{ path: 'data.bin', content }]] });
    image = `oci:${img.dir}`;
  });

  it('tocfs cat: stdout is exactly the file, the log line is on stderr', async () => {
    const res = await runCli(['cat', '--cache-dir', join(tmp, 'cache-cat'), image, '/data.bin'], { env });
    assert.equal(res.code, 0, res.stderr);
    assert.deepEqual(res.stdout, content);
    assert.ok(jsonLines(res.stderr).some((l) => l.level === 40 && String(l.msg).includes('TOCFS_FETCH_CONCURENCY')), res.stderr);
  });

  it('tocfs mount --foreground: JSON log lines on stdout, nothing on stderr', async (t) => {
    const skip = await fuseSkipReason();
    if (skip) return t.skip(skip);
    const mnt = mkdtempSync(join(tmp, 'mnt-'));
    const entry = fileURLToPath(new URL('../src/cli/entry.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', entry, 'mount', '--foreground', '--cache-dir', join(tmp, 'cache-mount'), image, mnt], {
      env: { ...process.env, ...env, TOCFS_LOG_JSON: '1' },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    try {
      const deadline = Date.now() + 60_000;
      while (!out.includes('"msg":"mounted"')) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`no "mounted" log line on stdout; stdout: ${out}; stderr: ${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      assert.deepEqual(readFileSync(join(mnt, 'data.bin')), content);
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await closed, 0, err);
    const lines = jsonLines(out);
    assert.ok(lines.some((l) => l.level === 40 && String(l.msg).includes('TOCFS_FETCH_CONCURENCY')), out);
    assert.ok(lines.some((l) => l.msg === 'unmounted'), out);
    assert.equal(err, '');
  });

  it('tocfs mount --foreground under systemd: journald priority prefixes on stdout', async (t) => {
    const skip = await fuseSkipReason();
    if (skip) return t.skip(skip);
    const mnt = mkdtempSync(join(tmp, 'mnt-'));
    const file = join(tmp, 'daemon-journal');
    const fd = openSync(file, 'w');
    const st = fstatSync(fd);
    const entry = fileURLToPath(new URL('../src/cli/entry.ts', import.meta.url));
    const child = spawn(process.execPath, ['--import', 'tsx', entry, 'mount', '--foreground', '--cache-dir', join(tmp, 'cache-journal'), image, mnt], {
      env: { ...process.env, ...env, JOURNAL_STREAM: `${st.dev}:${st.ino}` },
      stdio: ['ignore', fd, 'pipe'],
    });
    closeSync(fd);
    let err = '';
    child.stderr!.on('data', (d: Buffer) => (err += d.toString()));
    const closed = new Promise<number | null>((resolve) => child.on('close', resolve));
    try {
      const deadline = Date.now() + 60_000;
      while (!readFileSync(file, 'utf8').includes('"msg":"mounted"')) {
        if (child.exitCode !== null || Date.now() > deadline) throw new Error(`no "mounted" line; stderr: ${err}`);
        await new Promise((r) => setTimeout(r, 50));
      }
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await closed, 0, err);
    const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    assert.ok(lines.length >= 3, lines.join('\n'));
    for (const line of lines) assert.match(line, /^<[2-7]>\{"level":/, line);
    assert.ok(lines.some((l) => l.startsWith('<4>') && l.includes('TOCFS_FETCH_CONCURENCY')), 'the warning has priority 4');
    assert.ok(lines.some((l) => l.startsWith('<6>') && l.includes('"msg":"mounted"')), 'info has priority 6');
  });
});

describe('no credentials in what the CLI prints, at the most verbose level', () => {
  const USER = 'carol';
  const PASSWORD = 'Sup3r-s3cret-pw-e2e';
  const secrets = [PASSWORD, Buffer.from(`${USER}:${PASSWORD}`).toString('base64')];
  const content = 'private\n';
  let reg: TestRegistry;
  let ref: string;
  let env: NodeJS.ProcessEnv;

  before(async () => {
    const dir = mkdtempSync(join(tmp, 'auth-'));
    writeFileSync(join(dir, 'htpasswd'), execFileSync('htpasswd', ['-Bbn', USER, PASSWORD]));
    reg = await startRegistry({ extraConfig: `auth:\n  htpasswd:\n    realm: tocfs-test\n    path: ${join(dir, 'htpasswd')}\n` });
    const img = await buildImage(join(dir, 'image'), { format: 'zstd:chunked', layers: [[{ path: 'secret.txt', content }]] });
    await reg.load(img.dir, 'private/app');
    ref = `docker://${reg.host}/private/app:latest`;
    await writeAuthFile(join(dir, 'auth.json'), { [reg.host]: { username: USER, password: PASSWORD } });
    writeFileSync(join(dir, 'wrong.json'), JSON.stringify({ auths: { [reg.host]: { auth: Buffer.from(`${USER}:${PASSWORD}-wrong`).toString('base64') } } }));
    env = { TOCFS_CONFIG: emptyConfig, CONTAINERS_REGISTRIES_CONF: join(dir, 'registries.conf'), REGISTRY_AUTH_FILE: join(dir, 'auth.json'), TOCFS_CERTS_DIR: join(dir, 'certs.d'), TOCFS_CACHE_DIR: join(dir, 'cache') };
  });
  after(async () => {
    await reg?.stop();
  });

  const leaks = (text: string): string[] => secrets.filter((x) => text.includes(x));

  it('tocfs cat --log-level trace through Basic auth: the file, log lines, no secret', async () => {
    const res = await runCli(['cat', '--log-level', 'trace', '--tls-verify=false', ref, '/secret.txt'], { env });
    assert.equal(res.code, 0, res.stderr);
    assert.equal(res.stdout.toString(), content);
    assert.ok(res.stderr.split('\n').filter(Boolean).length > 0, 'trace level logs something');
    assert.deepEqual(leaks(res.stderr), []);
  });

  it('a wrong password: the error names the user, never a secret', async () => {
    const res = await runCli(['cat', '--log-level', 'trace', '--tls-verify=false', ref, '/secret.txt'], { env: { ...env, REGISTRY_AUTH_FILE: env.REGISTRY_AUTH_FILE!.replace('auth.json', 'wrong.json') } });
    assert.equal(res.code, 1);
    assert.match(res.stderr, /carol/);
    assert.deepEqual(leaks(res.stderr + res.stdout.toString()), []);
    assert.ok(!res.stderr.includes(`${PASSWORD}-wrong`));
  });
});
