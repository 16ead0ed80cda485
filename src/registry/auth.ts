/**
 * Registry authentication: answers a 401's challenge with Basic credentials or a bearer
 * token from the challenge's realm (anonymous, Basic to the realm, or an identity token),
 * caches tokens per scope until they expire, and refreshes them when rejected.
 * Secrets stay in headers: messages name the registry, the user and the files, never a secret.
 */
import { SourceError } from '../errors.js';
import { logger } from '../log.js';
import { lookupCredentials, type Credentials } from './auth-file.js';
import { parseChallenges, type Challenge } from './challenge.js';
import { AUTH_FILES_HELPER } from './registries-conf.js';
import { readLimited, type Transports } from './transport.js';

interface CachedToken {
  header: string;
  expiresAt: number;
}

const DEFAULT_TOKEN_LIFETIME_S = 60;
const MAX_TOKEN_RESPONSE = 1024 * 1024;

export class AuthError extends SourceError {
  constructor(message: string, status?: number) {
    super(message, status);
    this.name = 'AuthError';
  }
}

export interface AuthContext {
  /** Registry name for credentials (`docker.io`, `127.0.0.1:5000`). */
  registry: string;
  repository: string;
  authFiles: string[];
  credentialHelpers?: { helpers: string[]; file: string };
  transports: Transports;
  /** Whether the realm may be reached with verification off (insecure registry). */
  insecure: boolean;
}

function basicHeader(c: Credentials): string {
  return 'Basic ' + Buffer.from(`${c.username}:${c.password}`).toString('base64');
}

export class Authenticator {
  private challenge?: Challenge;
  private credentials?: Promise<Credentials | undefined>;
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<CachedToken>>();
  /** Token requests made (tests count them). */
  tokenRequests = 0;

  constructor(private readonly ctx: AuthContext) {}

  /** `repository:NAME:pull` — what reads need. */
  get scope(): string {
    return `repository:${this.ctx.repository}:pull`;
  }

  /** The token scope of a request: pulls, or `pull,push` for uploads (tokens are cached per scope). */
  private scopeFor(push: boolean): string {
    return push ? `repository:${this.ctx.repository}:pull,push` : this.scope;
  }

  private creds(): Promise<Credentials | undefined> {
    // A credential helper that failed is asked again next time (it may have been locked).
    this.credentials ??= lookupCredentials(this.ctx.credentialHelpers, this.ctx.authFiles, this.ctx.registry, this.ctx.repository).catch((e: unknown) => {
      this.credentials = undefined;
      throw e;
    });
    return this.credentials;
  }

  /** The Authorization header for the next request, if the registry has asked for one. */
  async authorization(signal?: AbortSignal, push = false): Promise<string | undefined> {
    if (!this.challenge) return undefined;
    if (this.challenge.scheme === 'basic') {
      const c = await this.creds();
      return c ? basicHeader(c) : undefined;
    }
    const cached = this.tokens.get(this.scopeFor(push));
    if (cached && cached.expiresAt > Date.now()) return cached.header;
    return (await this.fetchToken(signal, push)).header;
  }

  /**
   * After a 401: learns the challenge and returns the header to retry with. `rejected` is
   * the header the 401 answered (a token that is no longer good is dropped).
   */
  async unauthorized(wwwAuthenticate: string | string[] | undefined, rejected: string | undefined, signal?: AbortSignal, push = false): Promise<string> {
    const challenges = parseChallenges(wwwAuthenticate);
    const ch = challenges.find((c) => c.scheme === 'bearer') ?? challenges.find((c) => c.scheme === 'basic');
    if (!ch) throw new AuthError(`${this.ctx.registry}: answered 401 without a Basic or Bearer challenge (WWW-Authenticate: ${JSON.stringify(challenges.map((c) => c.scheme))})`, 401);
    this.challenge = ch;
    if (ch.scheme === 'basic') {
      const c = await this.creds();
      if (!c) throw await this.deniedError(401);
      const header = basicHeader(c);
      if (header === rejected) throw await this.deniedError(401);
      return header;
    }
    const scope = this.scopeFor(push);
    const cached = this.tokens.get(scope);
    if (cached && cached.header !== rejected && cached.expiresAt > Date.now()) return cached.header;
    if (rejected !== undefined && rejected.startsWith('Bearer ')) this.tokens.delete(scope);
    return (await this.fetchToken(signal, push)).header;
  }

  /** Where credentials were looked for, for messages. */
  private lookedIn(): string {
    const helpers = this.ctx.credentialHelpers?.helpers.filter((h) => h !== AUTH_FILES_HELPER) ?? [];
    const files = this.ctx.credentialHelpers && !this.ctx.credentialHelpers.helpers.includes(AUTH_FILES_HELPER) ? [] : this.ctx.authFiles;
    return [...files, ...helpers.map((h) => `docker-credential-${h}`)].join(', ');
  }

  /** The error for a request the registry still refuses after authenticating. */
  async deniedError(status: number, detail?: string): Promise<AuthError> {
    const c = await this.creds();
    const r = this.ctx.registry;
    const why = detail ? ` (${detail})` : '';
    // Refused although the token server granted a token: registries such as Docker Hub answer
    // so for a repository that does not exist.
    const tokenGranted = this.challenge?.scheme === 'bearer' && this.tokens.has(this.scope);
    if (tokenGranted && !c)
      return new AuthError(
        `${r}: repository ${this.ctx.repository} does not exist or needs authentication${why}; no credentials for ${r} were found in ${this.lookedIn()} (log in with "podman login ${r}" if it is private)`,
        status,
      );
    if (!c)
      return new AuthError(
        `${r}: authentication required to pull ${this.ctx.repository}${why}, and no credentials for ${r} were found in ${this.lookedIn()}; log in with "podman login ${r}" or point REGISTRY_AUTH_FILE at an auth.json`,
        status,
      );
    const who = c.username ? `user ${JSON.stringify(c.username)}` : 'the identity token';
    return new AuthError(`${r}: access to ${this.ctx.repository} denied for ${who} from ${c.source}${why}; check the credentials (podman login ${r})`, status);
  }

  private fetchToken(signal: AbortSignal | undefined, push: boolean): Promise<CachedToken> {
    const scope = this.scopeFor(push);
    let p = this.pending.get(scope);
    if (!p) {
      p = this.requestToken(scope, signal).finally(() => this.pending.delete(scope));
      this.pending.set(scope, p);
    }
    return p;
  }

  private async requestToken(scope: string, signal?: AbortSignal): Promise<CachedToken> {
    const params = this.challenge!.params;
    if (!params.realm) throw new AuthError(`${this.ctx.registry}: bearer challenge without a realm`, 401);
    let realm: URL;
    try {
      realm = new URL(params.realm);
    } catch {
      throw new AuthError(`${this.ctx.registry}: bearer realm ${JSON.stringify(params.realm)} is not a URL`, 401);
    }
    const scopes = [scope, ...(params.scope && params.scope !== scope ? [params.scope] : [])];
    const c = await this.creds();
    // The realm is whatever the registry's challenge names: credentials go there only over
    // TLS, unless the registry itself is insecure (plain HTTP or unverified).
    if (c && realm.protocol !== 'https:' && !this.ctx.insecure)
      throw new AuthError(`${this.ctx.registry}: bearer realm ${realm.origin} is not https; tocfs does not send the credentials from ${c.source} over ${realm.protocol.slice(0, -1)} (mark the registry insecure in registries.conf to allow it)`, 401);
    const form = new URLSearchParams();
    let req: Parameters<Transports['request']>[1];
    if (c?.identityToken) {
      form.set('grant_type', 'refresh_token');
      form.set('refresh_token', c.identityToken);
      form.set('client_id', 'tocfs');
      if (params.service) form.set('service', params.service);
      form.set('scope', scopes.join(' '));
      req = { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() };
    } else {
      if (params.service) realm.searchParams.set('service', params.service);
      for (const s of scopes) realm.searchParams.append('scope', s);
      req = { headers: c ? { authorization: basicHeader(c) } : {} };
    }
    this.tokenRequests++;
    logger().debug({ registry: this.ctx.registry, realm: realm.origin + realm.pathname, scope, user: c?.username }, 'requesting registry token');
    const res = await this.ctx.transports.request(realm, { ...req, ...(signal ? { signal } : {}), insecure: this.ctx.insecure });
    const text = (await readLimited(res.body, MAX_TOKEN_RESPONSE)).toString('utf8');
    if (res.status === 401 || res.status === 403) throw await this.deniedError(res.status, `token server ${realm.host} answered ${res.status}`);
    if (res.status !== 200) throw new AuthError(`${this.ctx.registry}: token server ${realm.host} answered ${res.status}`, res.status);
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(text);
    } catch {
      throw new AuthError(`${this.ctx.registry}: token server ${realm.host} sent a response that is not JSON`);
    }
    const token = typeof body.token === 'string' && body.token ? body.token : body.access_token;
    if (typeof token !== 'string' || !token) throw new AuthError(`${this.ctx.registry}: token server ${realm.host} sent no token`);
    const lifetime = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_LIFETIME_S;
    // Renew a little early so a token does not expire between the check and its use.
    const cached = { header: `Bearer ${token}`, expiresAt: Date.now() + lifetime * 1000 - Math.min(10_000, lifetime * 100) };
    this.tokens.set(scope, cached);
    return cached;
  }
}
