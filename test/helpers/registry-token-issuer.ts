/**
 * A small token server for docker-registry's `auth: token:` mode: it answers the bearer
 * challenge's realm with an RS256 JWT carrying the signing certificate in `x5c`, which the
 * registry checks against its `rootcertbundle`. It counts what it was asked.
 */
import { createPrivateKey, randomUUID, sign, type KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage } from 'node:http';
import { certDerBase64, type CertPair } from './registry-certs.js';

export interface TokenRequest {
  method: string;
  user?: string;
  scope: string[];
  service?: string;
  grantType?: string;
}

export interface TokenIssuer {
  realm: string;
  requests: TokenRequest[];
  /** Sign from now on with another key (the registry must trust it). */
  useKey(pair: CertPair): Promise<void>;
  close(): Promise<void>;
}

export interface TokenIssuerOptions {
  signing: CertPair;
  issuer: string;
  service: string;
  /** user -> password for Basic to the realm; when set, anonymous requests are refused. */
  users?: Record<string, string>;
  /** Refresh tokens accepted for `grant_type=refresh_token` (POST). */
  refreshTokens?: string[];
  expiresIn?: number;
}

const b64url = (b: Buffer | string): string => Buffer.from(b).toString('base64url');

async function bodyOf(req: IncomingMessage): Promise<string> {
  let s = '';
  for await (const c of req) s += c;
  return s;
}

export async function startTokenIssuer(opts: TokenIssuerOptions): Promise<TokenIssuer> {
  let key: KeyObject;
  let x5c: string;
  const useKey = async (pair: CertPair): Promise<void> => {
    key = createPrivateKey(await readFile(pair.key));
    x5c = await certDerBase64(pair.cert);
  };
  await useKey(opts.signing);
  const requests: TokenRequest[] = [];

  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://x');
    let params = url.searchParams;
    if (req.method === 'POST') params = new URLSearchParams(await bodyOf(req));
    const scope = params.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
    let user: string | undefined;
    const auth = req.headers.authorization;
    if (auth?.startsWith('Basic ')) {
      const [u, ...p] = Buffer.from(auth.slice(6), 'base64').toString().split(':');
      if (opts.users?.[u!] !== p.join(':')) {
        res.writeHead(401).end('{"details":"bad credentials"}');
        return;
      }
      user = u;
    }
    const grantType = params.get('grant_type') ?? undefined;
    if (grantType === 'refresh_token') {
      if (!opts.refreshTokens?.includes(params.get('refresh_token') ?? '')) {
        res.writeHead(401).end('{"details":"bad refresh token"}');
        return;
      }
      user = 'refresh-token-user';
    }
    requests.push({ method: req.method ?? 'GET', scope, ...(user ? { user } : {}), ...(params.get('service') ? { service: params.get('service')! } : {}), ...(grantType ? { grantType } : {}) });
    if (opts.users && !user) {
      res.writeHead(401).end('{"details":"authentication required"}');
      return;
    }
    const now = Math.floor(Date.now() / 1000);
    const access = scope.map((s) => {
      const [type, name, actions] = s.split(':');
      return { type, name, actions: (actions ?? '').split(',').filter((a) => a === 'pull') };
    });
    const header = { typ: 'JWT', alg: 'RS256', x5c: [x5c] };
    const claims = { iss: opts.issuer, sub: user ?? '', aud: opts.service, exp: now + 3600, nbf: now - 10, iat: now, jti: randomUUID(), access };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    const token = `${input}.${b64url(sign('sha256', Buffer.from(input), key))}`;
    const expires_in = opts.expiresIn ?? 300;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify(grantType ? { access_token: token, expires_in } : { token, expires_in, issued_at: new Date().toISOString() }));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    requests,
    useKey,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
