/**
 * The registry side of the benchmark: a real docker-registry inside the registry namespace,
 * reached either over the emulated WAN link (veth + tbf + delay proxy) or over loopback.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadLayout } from '../../../test/helpers/registry.js';
import { CLI_NS, REG_NS, run, startService, waitFor, type Service } from './proc.js';

const HERE = new URL('..', import.meta.url).pathname;
const REGISTRY_PORT = 5000;
const PROXY_PORT = 5000;
const REG_ADDR = '10.231.0.1';

export interface LinkProfile {
  name: string;
  /** Human label for tables. */
  label: string;
  /** tbf rate, or undefined for loopback. */
  rate?: string;
  rttMs: number;
  /** Link rate in bytes/s (undefined for loopback). */
  bytesPerSec?: number;
}

export const PROFILES: Record<string, LinkProfile> = {
  wan100: { name: 'wan100', label: '100 Mbit/s, 20 ms RTT', rate: '100mbit', rttMs: 20, bytesPerSec: 100e6 / 8 },
  wan1g: { name: 'wan1g', label: '1 Gbit/s, 2 ms RTT', rate: '1gbit', rttMs: 2, bytesPerSec: 1e9 / 8 },
  loopback: { name: 'loopback', label: 'loopback', rttMs: 0 },
};

export async function netns(...args: string[]): Promise<string> {
  return (await run(['bash', join(HERE, 'netns.sh'), ...args])).stdout.trim();
}

/** Where a client of `profile` runs and which registry address it uses. */
export interface ClientSide {
  ns: string;
  host: string;
}

export class Link {
  private proxy?: Service;
  profile?: LinkProfile;

  private constructor(
    readonly root: string,
    private readonly registry: Service,
  ) {}

  static async start(workDir: string): Promise<Link> {
    await netns('up');
    const root = join(workDir, 'registry');
    await mkdir(root, { recursive: true });
    const cfg = join(root, 'config.yml');
    await writeFile(
      cfg,
      `version: 0.1
log:
  level: warn
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: ${root}
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:${REGISTRY_PORT}
`,
    );
    const registry = startService(['docker-registry', 'serve', cfg], { ns: REG_NS });
    const link = new Link(root, registry);
    await waitFor('docker-registry', async () => (await run(['curl', '-sf', `http://127.0.0.1:${REGISTRY_PORT}/v2/`], { ns: REG_NS, check: false })).code === 0);
    return link;
  }

  /** Loads an OCI layout into the registry's storage as `repo` (tags from its index.json). */
  async load(layoutDir: string, repo: string): Promise<void> {
    await loadLayout(this.root, layoutDir, repo);
  }

  /**
   * Makes the image tagged `latest` in `srcRepo` also `dstRepo:tag` (an app's v2 beside its v1,
   * in the same repository: what a profile is matched by).
   */
  async tagInto(srcRepo: string, dstRepo: string, tag: string): Promise<void> {
    const repos = join(this.root, 'docker', 'registry', 'v2', 'repositories');
    const src = join(repos, srcRepo);
    const dst = join(repos, dstRepo);
    await run(['sh', '-c', 'cp -r "$0/_layers/." "$1/_layers/" && cp -r "$0/_manifests/revisions/." "$1/_manifests/revisions/" && rm -rf "$1/_manifests/tags/$2" && cp -r "$0/_manifests/tags/latest" "$1/_manifests/tags/$2"', src, dst, tag]);
  }

  /**
   * Forgets every start-up profile published to `repo` (the referrers tags `sha256-…` that
   * `tocfs profile push` writes on a registry without the referrers API), so that the next
   * "first run" finds none. The registry keeps no tag cache: it reads the tag files each time.
   */
  async removeReferrersTags(repo: string): Promise<number> {
    const tags = join(this.root, 'docker', 'registry', 'v2', 'repositories', repo, '_manifests', 'tags');
    const r = await run(['sh', '-c', 'cd "$0" 2>/dev/null || exit 0; n=0; for t in sha256-*; do [ -e "$t" ] || continue; rm -rf "$t"; n=$((n+1)); done; echo $n', tags]);
    return Number(r.stdout.trim()) || 0;
  }

  /** Switches the link to `profile`: tbf rate on both veth ends, delay proxy with its RTT. */
  async use(profile: LinkProfile): Promise<ClientSide> {
    if (this.profile?.name !== profile.name) {
      await this.proxy?.stop();
      this.proxy = undefined;
      if (profile.rate) {
        await netns('shape', profile.rate);
        this.proxy = startService(
          ['node', '--import', 'tsx', join(HERE, 'delay-proxy.ts'), `${REG_ADDR}:${PROXY_PORT}`, `127.0.0.1:${REGISTRY_PORT}`, String(profile.rttMs)],
          { ns: REG_NS },
        );
        const side = this.client(profile);
        await waitFor('delay proxy', async () => (await run(['curl', '-sf', `http://${side.host}/v2/`], { ns: side.ns, check: false })).code === 0);
      }
      this.profile = profile;
    }
    return this.client(profile);
  }

  client(profile: LinkProfile): ClientSide {
    return profile.rate ? { ns: CLI_NS, host: `${REG_ADDR}:${PROXY_PORT}` } : { ns: REG_NS, host: `127.0.0.1:${REGISTRY_PORT}` };
  }

  /** Access-log position, to count what was served after it. */
  mark(): number {
    return this.registry.output.length;
  }

  /** Response bytes the registry sent since `mark` (all requests), and the number of blob GETs. */
  served(mark: number): { bytes: number; blobRequests: number } {
    let bytes = 0;
    let blobRequests = 0;
    for (const line of this.registry.output.slice(mark)) {
      const m = /"(GET|HEAD) (\S+) HTTP\/[\d.]+" (\d{3}) (\d+)/.exec(line);
      if (!m) continue;
      if (m[1] === 'GET') bytes += Number(m[4]);
      if (m[1] === 'GET' && m[2]!.includes('/blobs/')) blobRequests++;
    }
    return { bytes, blobRequests };
  }

  /** Bytes received by the client end of the veth pair (headers included). */
  async wireRx(): Promise<number> {
    return Number((await netns('counters')).split(' ')[0]);
  }

  async stop(): Promise<void> {
    await this.proxy?.stop();
    await this.registry.stop();
  }
}
