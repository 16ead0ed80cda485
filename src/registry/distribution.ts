/**
 * The parts of the OCI distribution API beyond pulls: blob uploads, manifest PUTs (both with
 * push rights) and the referrers API of OCI distribution 1.1. Each goes to one endpoint, with
 * its credentials, TLS settings and retries.
 */
import { sha256 } from '../digest.js';
import { SourceError } from '../errors.js';
import type { RegistryEndpoint } from './endpoint.js';
import { readLimited, type HttpResponse } from './transport.js';

/** The most a referrers response may hold (the same bound as a manifest). */
const MAX_REFERRERS_BYTES = 4 * 1024 * 1024;

function header(res: HttpResponse, name: string): string | undefined {
  const v = res.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/** Uploads `bytes` as a blob of the endpoint's repository, unless it is there already; returns its digest. */
export async function pushBlob(ep: RegistryEndpoint, bytes: Buffer, signal?: AbortSignal): Promise<string> {
  const digest = sha256(bytes);
  const what = `blob ${digest} to ${ep.name}`;
  const base = { push: true, ...(signal ? { signal } : {}) };
  const present = await ep.exchange(what, `/v2/${ep.repository}/blobs/${digest}`, { ...base, method: 'HEAD', ok: [200, 404] }, async (res) => res.status === 200);
  if (present) return digest;
  // POST then PUT (not the single-request upload, which not every registry has).
  const location = await ep.exchange(what, `/v2/${ep.repository}/blobs/uploads/`, { ...base, method: 'POST', headers: { 'content-length': '0' }, ok: [202] }, async (res) => {
    const loc = header(res, 'location');
    if (!loc) throw new SourceError(`${what}: ${ep.registry} started an upload without saying where (no Location)`);
    return new URL(loc, res.url);
  });
  location.searchParams.set('digest', digest);
  await ep.exchange(what, location.href, { ...base, method: 'PUT', headers: { 'content-type': 'application/octet-stream' }, body: bytes, ok: [201] }, async () => undefined);
  return digest;
}

export interface PushedManifest {
  digest: string;
  /** The `OCI-Subject` header: set by registries with the referrers API when the manifest has a subject. */
  subject?: string;
}

/** PUTs a manifest or index under `reference` (a tag, or the digest of `bytes`). */
export async function pushManifest(ep: RegistryEndpoint, reference: string, mediaType: string, bytes: Buffer, signal?: AbortSignal): Promise<PushedManifest> {
  const digest = sha256(bytes);
  const what = `manifest ${ep.name}:${reference}`;
  const subject = await ep.exchange(
    what,
    `/v2/${ep.repository}/manifests/${reference}`,
    { method: 'PUT', push: true, headers: { 'content-type': mediaType }, body: bytes, ok: [201], ...(signal ? { signal } : {}) },
    async (res) => header(res, 'oci-subject'),
  );
  return { digest, ...(subject ? { subject } : {}) };
}

/**
 * The referrers index of `digest` (`GET /v2/<name>/referrers/<digest>`, asking for
 * `artifactType` only; registries may ignore the filter), or undefined when the registry has no
 * referrers API: it answers 404 for the path, as OCI distribution 1.1 says, or 400/405 as
 * some older ones do.
 */
export async function fetchReferrers(ep: RegistryEndpoint, digest: string, artifactType: string, signal?: AbortSignal): Promise<Buffer | undefined> {
  const what = `referrers of ${ep.name}@${digest}`;
  return ep.exchange(
    what,
    `/v2/${ep.repository}/referrers/${digest}?artifactType=${encodeURIComponent(artifactType)}`,
    { headers: { accept: 'application/vnd.oci.image.index.v1+json' }, ok: [200, 400, 404, 405], ...(signal ? { signal } : {}) },
    async (res) => {
      if (res.status !== 200) {
        await res.body.dump();
        return undefined;
      }
      return readLimited(res.body, MAX_REFERRERS_BYTES);
    },
  );
}
