/** Per-registry TLS trust from a certs.d directory (containers-certs.d(5)). */
import { readdir, readFile } from 'node:fs/promises';
import { rootCertificates } from 'node:tls';
import { join } from 'node:path';
import { SourceError } from '../errors.js';

export interface TlsSettings {
  /** Trusted CAs: the system's plus `*.crt`; undefined when the directory adds none. */
  ca?: string[];
  cert?: string;
  key?: string;
  /** Where they were looked for (for messages). */
  dir: string;
}

/** Reads `certsDir/HOST[:PORT]/`: `*.crt` are CAs, `NAME.cert` + `NAME.key` a client certificate. */
export async function loadTlsSettings(certsDir: string, hostPort: string): Promise<TlsSettings> {
  const dir = join(certsDir, hostPort);
  let names: string[];
  try {
    names = (await readdir(dir)).sort();
  } catch {
    return { dir };
  }
  const settings: TlsSettings = { dir };
  const cas: string[] = [];
  for (const n of names) {
    if (n.endsWith('.crt')) cas.push(await readFile(join(dir, n), 'utf8'));
    if (n.endsWith('.cert')) {
      const keyName = n.slice(0, -'.cert'.length) + '.key';
      if (!names.includes(keyName)) throw new SourceError(`${join(dir, n)}: client certificate without its key ${keyName}`);
      settings.cert = await readFile(join(dir, n), 'utf8');
      settings.key = await readFile(join(dir, keyName), 'utf8');
    }
    if (n.endsWith('.key') && !names.includes(n.slice(0, -'.key'.length) + '.cert'))
      throw new SourceError(`${join(dir, n)}: client key without its certificate ${n.slice(0, -'.key'.length)}.cert`);
  }
  if (cas.length) settings.ca = [...rootCertificates, ...cas];
  return settings;
}
