/**
 * A real Debian `docker-registry` (distribution 2.8) on 127.0.0.1 for tests, with images
 * loaded straight into its filesystem storage so every digest is kept byte for byte.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { IncomingMessage } from 'node:http';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

export interface RegistryOptions {
  /** Extra YAML appended under the top level (auth:, proxy:, http.tls via `tls`). */
  extraConfig?: string;
  /** PEM paths: serve HTTPS. */
  tls?: { certificate: string; key: string };
  /** Use this storage root instead of a fresh one (to restart a registry over the same data). */
  root?: string;
  port?: number;
}

export interface TestRegistry {
  host: string; // 127.0.0.1:PORT
  port: number;
  root: string;
  /** Access log lines (the registry logs one per request on stderr). */
  log: string[];
  /** Ends the registry (SIGTERM, or `signal`, e.g. SIGKILL to kill it mid-response); removes its storage unless `root` was given. */
  stop(signal?: NodeJS.Signals): Promise<void>;
  /** Loads an OCI layout as repository `repo` (default: the directory name) under each of its ref names. */
  load(layoutDir: string, repo?: string): Promise<string>;
  /** Sends the registry process a signal: SIGSTOP freezes it (connections are accepted, nothing is answered), SIGCONT resumes it. */
  signal(signal: NodeJS.Signals): void;
}

async function put(path: string, data: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, data);
}

async function exists(p: string): Promise<boolean> {
  try {
    await stat(p);
    return true;
  } catch {
    return false;
  }
}

export async function loadLayout(root: string, layout: string, repo = basename(layout)): Promise<string> {
  const v2 = join(root, 'docker', 'registry', 'v2');
  const rdir = join(v2, 'repositories', repo);
  const bdir = join(layout, 'blobs', 'sha256');
  const index = JSON.parse(await readFile(join(layout, 'index.json'), 'utf8'));
  const manifests = new Set<string>();
  const blobs = new Set<string>();
  const walk = async (digest: string): Promise<void> => {
    manifests.add(digest);
    blobs.add(digest);
    const doc = JSON.parse(await readFile(join(bdir, digest.split(':')[1]!), 'utf8'));
    for (const m of doc.manifests ?? []) await walk(m.digest);
    for (const d of [...(doc.config ? [doc.config] : []), ...(doc.layers ?? [])]) {
      blobs.add(d.digest);
      await put(join(rdir, '_layers', 'sha256', d.digest.split(':')[1], 'link'), d.digest);
    }
  };
  for (const top of index.manifests) {
    await walk(top.digest);
    const tag = top.annotations?.['org.opencontainers.image.ref.name'] ?? 'latest';
    const h = top.digest.split(':')[1];
    await put(join(rdir, '_manifests', 'tags', tag, 'current', 'link'), top.digest);
    await put(join(rdir, '_manifests', 'tags', tag, 'index', 'sha256', h, 'link'), top.digest);
  }
  for (const d of manifests) await put(join(rdir, '_manifests', 'revisions', 'sha256', d.split(':')[1]!, 'link'), d);
  for (const d of blobs) {
    const h = d.split(':')[1]!;
    const dst = join(v2, 'blobs', 'sha256', h.slice(0, 2), h, 'data');
    if (!(await exists(dst))) {
      await mkdir(dirname(dst), { recursive: true });
      await copyFile(join(bdir, h), dst);
    }
  }
  return repo;
}

export async function startRegistry(opts: RegistryOptions = {}): Promise<TestRegistry> {
  const root = opts.root ?? (await mkdtemp(join(tmpdir(), 'tocfs-registry-')));
  const port = opts.port ?? (await freePort());
  const cfgPath = join(root, 'config.yml');
  const tls = opts.tls ? `\n  tls:\n    certificate: ${opts.tls.certificate}\n    key: ${opts.tls.key}` : '';
  await writeFile(
    cfgPath,
    `version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: ${root}
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:${port}${tls}
${opts.extraConfig ?? ''}
`,
  );
  const log: string[] = [];
  const child: ChildProcess = spawn('docker-registry', ['serve', cfgPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let buf = '';
  const onData = (d: Buffer): void => {
    buf += d.toString();
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      log.push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const scheme = opts.tls ? 'https' : 'http';
  const deadline = Date.now() + 15_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited: ${log.join('\n')}`);
    try {
      // Any HTTP answer (200 or 401) means it is up.
      const { request } = await import(scheme === 'https' ? 'node:https' : 'node:http');
      await new Promise<void>((resolve, reject) => {
        const req = request({ host: '127.0.0.1', port, path: '/v2/', rejectUnauthorized: false }, (res: IncomingMessage) => {
          res.resume();
          resolve();
        });
        req.on('error', reject);
        req.end();
      });
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`docker-registry did not start on ${port}: ${log.join('\n')}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  return {
    host: `127.0.0.1:${port}`,
    port,
    root,
    log,
    load: (layoutDir, repo) => loadLayout(root, layoutDir, repo),
    signal: (signal) => void child.kill(signal),
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGCONT');
        child.kill(signal);
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
      if (!opts.root) await rm(root, { recursive: true, force: true });
    },
  };
}

/** Bytes the registry sent for blob GETs, summed from its access log. */
export function blobBytesServed(log: string[], digest?: string): number {
  let total = 0;
  for (const line of log) {
    // combined log: "GET /v2/repo/blobs/sha256:... HTTP/1.1" 206 1234 ...
    const m = /"GET \/v2\/\S+\/blobs\/(sha256:[0-9a-f]{64})[^"]*" (\d{3}) (\d+)/.exec(line);
    if (m && (!digest || m[1] === digest)) total += Number(m[3]);
  }
  return total;
}

export interface BlobGet {
  digest: string;
  status: number;
  bytes: number;
  userAgent: string;
}

/** Blob GETs from the registry's access log (combined format: …"GET path proto" status bytes "referer" "user agent"). */
export function blobGets(log: string[], digest?: string): BlobGet[] {
  const out: BlobGet[] = [];
  for (const line of log) {
    const m = /"GET \/v2\/\S+\/blobs\/(sha256:[0-9a-f]{64})[^"]*" (\d{3}) (\d+) "[^"]*" "([^"]*)"/.exec(line);
    if (m && (!digest || m[1] === digest)) out.push({ digest: m[1]!, status: Number(m[2]), bytes: Number(m[3]), userAgent: m[4]! });
  }
  return out;
}

/**
 * Whole-blob downloads of `digest` by clients other than tocfs (whose own small-blob and
 * whole-layer fallback GETs carry the user agent "tocfs"): a status 200, not a 206 range.
 */
export function wholeBlobGetsByOthers(log: string[], digest: string): BlobGet[] {
  return blobGets(log, digest).filter((g) => g.status === 200 && !g.userAgent.startsWith('tocfs'));
}
