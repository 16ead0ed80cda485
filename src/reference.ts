import { resolve as resolvePath } from 'node:path';
import { isDigest } from './digest.js';
import { TocfsError } from './errors.js';

/** `oci:DIR[:tag]` — an OCI image layout on disk (skopeo's convention). */
export interface OciLayoutReference {
  transport: 'oci';
  dir: string;
  /** `org.opencontainers.image.ref.name` to pick, or undefined when the index has one image. */
  tag?: string;
}

/** `[docker://]host[:port]/repo[:tag][@digest]` */
export interface DockerReference {
  transport: 'docker';
  /** Registry host as written after normalisation (`docker.io`, `127.0.0.1:5000`). */
  registry: string;
  /** Repository path (`library/alpine`). */
  repository: string;
  tag?: string;
  digest?: string;
}

export type ImageReference = OciLayoutReference | DockerReference;

export const DOCKER_HUB = 'docker.io';

const REPO_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;

export class ReferenceError extends TocfsError {
  constructor(message: string) {
    super(message, 'EREFERENCE');
    this.name = 'ReferenceError';
  }
}

export function parseReference(input: string): ImageReference {
  if (input.startsWith('oci:')) return parseOci(input.slice(4), input);
  if (input.startsWith('docker://')) return parseDocker(input.slice('docker://'.length), input);
  if (/^[a-z][a-z0-9-]*:\/\//.test(input) || /^(containers-storage|dir|docker-archive|oci-archive|docker-daemon):/.test(input))
    throw new ReferenceError(`unsupported transport in ${JSON.stringify(input)}: tocfs reads docker:// (the default) and oci:DIR[:tag]`);
  return parseDocker(input, input);
}

function parseOci(rest: string, input: string): OciLayoutReference {
  if (!rest) throw new ReferenceError(`${JSON.stringify(input)}: oci: needs a directory, e.g. oci:./image or oci:/srv/image:latest`);
  // The tag follows the last colon, unless what follows looks like a path.
  const i = rest.lastIndexOf(':');
  if (i > 0 && !rest.slice(i + 1).includes('/')) {
    const tag = rest.slice(i + 1);
    return { transport: 'oci', dir: resolvePath(rest.slice(0, i)), ...(tag ? { tag } : {}) };
  }
  return { transport: 'oci', dir: resolvePath(rest) };
}

function parseDocker(rest: string, input: string): DockerReference {
  let name = rest;
  let digest: string | undefined;
  const at = name.indexOf('@');
  if (at >= 0) {
    digest = name.slice(at + 1);
    name = name.slice(0, at);
    if (!isDigest(digest)) throw new ReferenceError(`${JSON.stringify(input)}: bad digest ${JSON.stringify(digest)}: expected sha256:<64 hex>`);
  }
  let tag: string | undefined;
  const slash = name.lastIndexOf('/');
  const colon = name.lastIndexOf(':');
  if (colon > slash) {
    tag = name.slice(colon + 1);
    name = name.slice(0, colon);
    if (!TAG_RE.test(tag)) throw new ReferenceError(`${JSON.stringify(input)}: bad tag ${JSON.stringify(tag)}`);
  }
  if (!name) throw new ReferenceError(`${JSON.stringify(input)}: empty image name`);
  const parts = name.split('/');
  let registry = DOCKER_HUB;
  // The first component is a registry host if it has a dot or a port, or is localhost (Docker's rule).
  if (parts.length > 1 && (/[.:]/.test(parts[0]!) || parts[0] === 'localhost' || /^\[.*\]/.test(parts[0]!))) {
    registry = parts.shift()!;
  }
  if (registry === 'index.docker.io' || registry === 'registry-1.docker.io') registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift('library');
  for (const p of parts) {
    if (!REPO_COMPONENT.test(p)) throw new ReferenceError(`${JSON.stringify(input)}: invalid repository name component ${JSON.stringify(p)} (lower-case letters, digits and separators only)`);
  }
  if (!tag && !digest) tag = 'latest';
  return { transport: 'docker', registry, repository: parts.join('/'), ...(tag ? { tag } : {}), ...(digest ? { digest } : {}) };
}

export function formatReference(ref: ImageReference): string {
  if (ref.transport === 'oci') return `oci:${ref.dir}${ref.tag ? ':' + ref.tag : ''}`;
  return `docker://${ref.registry}/${ref.repository}${ref.tag ? ':' + ref.tag : ''}${ref.digest ? '@' + ref.digest : ''}`;
}

/** What a later version of the same image shares: `host/repo` for registries, the layout directory for oci:. */
export function repositoryOf(ref: ImageReference): string {
  return ref.transport === 'oci' ? `oci:${ref.dir}` : `${ref.registry}/${ref.repository}`;
}

/** The registry reference `input` names, or undefined for an OCI layout (throws ReferenceError when malformed). */
export function dockerReference(input: string): DockerReference | undefined {
  const ref = parseReference(input);
  return ref.transport === 'docker' ? ref : undefined;
}
