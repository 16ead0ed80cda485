/** Test PKI made with the openssl CLI: a CA, server certificates signed by it, self-signed signing certs. */
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface CertPair {
  cert: string; // path to PEM certificate
  key: string; // path to PEM private key
}

/** A self-signed certificate (a CA, or a token-signing certificate). */
export async function selfSigned(dir: string, name: string, cn = name): Promise<CertPair> {
  const pair = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  await run('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-days', '2', '-subj', `/CN=${cn}`, '-keyout', pair.key, '-out', pair.cert]);
  return pair;
}

/** A server certificate for 127.0.0.1 and localhost (and `dnsNames`), signed by `ca`. */
export async function serverCert(dir: string, name: string, ca: CertPair, dnsNames: string[] = []): Promise<CertPair> {
  const pair = { cert: join(dir, `${name}.crt`), key: join(dir, `${name}.key`) };
  const csr = join(dir, `${name}.csr`);
  const ext = join(dir, `${name}.ext`);
  const sans = ['IP:127.0.0.1', 'DNS:localhost', ...dnsNames.map((n) => `DNS:${n}`)].join(',');
  await writeFile(ext, `subjectAltName=${sans}\nextendedKeyUsage=serverAuth,clientAuth\n`);
  await run('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-sha256', '-subj', `/CN=${name}`, '-keyout', pair.key, '-out', csr]);
  await run('openssl', ['x509', '-req', '-in', csr, '-CA', ca.cert, '-CAkey', ca.key, '-CAcreateserial', '-days', '2', '-sha256', '-extfile', ext, '-out', pair.cert]);
  return pair;
}

/** The DER bytes of a PEM certificate, base64 (for a JWT `x5c` header). */
export async function certDerBase64(certPath: string): Promise<string> {
  const pem = await readFile(certPath, 'utf8');
  return pem.replace(/-----(BEGIN|END) CERTIFICATE-----/g, '').replace(/\s+/g, '');
}
