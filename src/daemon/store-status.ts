/**
 * `tocfs store status STOREDIR`: the running store writes its per-layer state (fetched
 * bytes and percent, uses, last error) to a JSON file in tocfs's runtime directory every
 * few seconds; the status command reads it. (A file inside the FUSE mount would be cached
 * by the kernel with a stale size.)
 */
import { createHash } from 'node:crypto';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { humanBytes } from '../units.js';
import { runtimeDir } from './state.js';
import { isAlive } from '../process-alive.js';
import type { RegistryHealthStatus } from '../registry/health.js';
import type { StoreStatus } from '../store/layers.js';

export interface StatusDocument extends StoreStatus {
  pid: number;
  storeDir: string;
  started: string;
  updated: string;
  /** Every registry host the store has used: answering or down. */
  registries?: RegistryHealthStatus[];
  /** The daemon's resident memory, its daemon.memory budget and its memory tier. */
  memory?: { rssBytes: number; budgetBytes?: number; tierBytes: number; tierLimitBytes: number };
}

/** `<runtime dir>/stores/<hash of the store dir>.json` */
export function statusFile(storeDir: string): string {
  const key = createHash('sha256').update(resolve(storeDir)).digest('hex').slice(0, 16);
  return join(runtimeDir(), 'stores', `${key}.json`);
}

export async function writeStatus(doc: StatusDocument): Promise<void> {
  const file = statusFile(doc.storeDir);
  await mkdir(join(runtimeDir(), 'stores'), { recursive: true, mode: 0o700 });
  const tmp = `${file}.${process.pid}.tmp`;
  await writeFile(tmp, JSON.stringify(doc, null, 2) + '\n', { mode: 0o600 });
  await rename(tmp, file);
}

export async function removeStatus(storeDir: string): Promise<void> {
  await rm(statusFile(storeDir), { force: true });
}

/** The status a live store wrote for `storeDir`, or undefined (none, or its process is gone). */
export async function readStatus(storeDir: string): Promise<StatusDocument | undefined> {
  try {
    const doc = JSON.parse(await readFile(statusFile(storeDir), 'utf8')) as StatusDocument;
    return isAlive(doc.pid) ? doc : undefined;
  } catch {
    return undefined;
  }
}

function short(digest: string): string {
  return digest.replace(/^sha256:/, '').slice(0, 12);
}

/** A table for people; `--json` prints the document itself. */
export function formatStatus(doc: StatusDocument): string {
  const lines = [`store ${doc.storeDir} (pid ${doc.pid}, since ${doc.started}, updated ${doc.updated})`];
  if (doc.layers.length === 0) lines.push('no layers served yet');
  else {
    lines.push('LAYER         FORMAT         USES  SIZE       FETCHED             BLOB READ  IMAGE');
    for (const l of doc.layers) {
      const remembered = l.state === 'remembered';
      const fetched = remembered ? '-' : `${humanBytes(l.fetchedBytes)} (${l.fetchedPercent}%)`;
      lines.push(`${short(l.digest).padEnd(14)}${l.format.padEnd(15)}${String(l.uses).padEnd(6)}${humanBytes(l.size).padEnd(11)}${fetched.padEnd(20)}${(remembered ? '-' : humanBytes(l.blobBytesRead)).padEnd(11)}${l.ref}`);
      if (l.lastError) lines.push(`  last error: ${l.lastError}`);
    }
  }
  if (doc.layers.some((l) => l.state === 'remembered')) lines.push('FETCHED -: counted before the store restarted, not looked up since');
  for (const i of doc.images) {
    const p = i.profile;
    if (!p) continue;
    const r = p.replay;
    const replay = r ? `replayed ${r.match} profile: ${humanBytes(r.bytes)} in ${r.requests} requests over ${r.layers} layers${r.done ? '' : ' (under way)'}` : 'no profile to replay';
    lines.push(`profile ${i.ref} ${short(i.manifest)}: ${replay}${p.recording ? `; recording (${p.recordedReads} reads so far)` : ''}`);
  }
  for (const m of doc.misses) lines.push(`not served: ${m.ref} ${short(m.key)}: ${m.reason}`);
  for (const r of doc.registries ?? []) lines.push(registryLine(r, Date.parse(doc.updated)));
  const m = doc.memory;
  if (m) lines.push(`memory: ${humanBytes(m.rssBytes)} resident${m.budgetBytes ? ` of daemon.memory ${humanBytes(m.budgetBytes)}` : ''}; memory tier ${humanBytes(m.tierBytes)} (may hold ${humanBytes(m.tierLimitBytes)})`);
  return lines.join('\n');
}

/** `registry HOST: DOWN since … (N s, M requests failed at once): last error`, or `registry HOST: answering` (with its outages). */
function registryLine(r: RegistryHealthStatus, now: number): string {
  if (r.state === 'down') {
    const forS = Math.max(0, Math.round((now - Date.parse(r.since)) / 1000));
    return `registry ${r.registry}: DOWN since ${r.since} (${forS} s, ${r.failedFast} requests failed at once): ${r.lastError ?? 'no answer'}`;
  }
  const last = r.lastError ? `; last down at ${r.lastErrorAt}: ${r.lastError}` : '';
  return `registry ${r.registry}: answering${r.outages ? ` (down ${r.outages} time${r.outages === 1 ? '' : 's'}${last})` : ''}`;
}
