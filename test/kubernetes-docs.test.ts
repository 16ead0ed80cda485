/**
 * docs/kubernetes/: the manifests hold what docs/kubernetes.md says they do. The DaemonSet runs
 * the store privileged with /dev/fuse, its directory a hostPath mounted with Bidirectional
 * propagation (the same path inside and outside the pod, so the mount CRI-O sees is the one
 * storage.conf names), the cache on the host, a readiness probe on /healthz where the store's
 * config serves it; storage.conf names that store with :ref; the ConfigMap is a valid tocfs
 * config. Then kubectl's client side, when a kubectl is on PATH (or named by $KUBECTL): it must
 * accept every document offline, and decoding the DaemonSet into Kubernetes' own types must
 * keep every field (a misspelt field is dropped by that decoding, and so found here).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { accessSync, constants, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join, relative } from 'node:path';
import { after, describe, it } from 'node:test';
import { parse as parseToml } from 'smol-toml';
import { parseAllDocuments } from 'yaml';
import { loadConfig, metricsAddressFor, parseAddress } from '../src/config/index.js';

const DIR = new URL('../docs/kubernetes/', import.meta.url);
const read = (name: string): string => readFileSync(new URL(name, DIR), 'utf8');
const tmp = mkdtempSync(join(tmpdir(), 'tocfs-k8s-'));
after(() => rmSync(tmp, { recursive: true, force: true }));

type Obj = Record<string, any>;

const manifest = read('daemonset.yaml');
const documents = parseAllDocuments(manifest).map((d) => {
  assert.deepEqual(d.errors, [], 'daemonset.yaml is not valid YAML');
  return d.toJS() as Obj;
});
const byKind = (kind: string): Obj => {
  const found = documents.filter((d) => d.kind === kind);
  assert.equal(found.length, 1, `daemonset.yaml should hold one ${kind}`);
  return found[0]!;
};
const daemonSet = byKind('DaemonSet');
const pod = daemonSet.spec.template.spec as Obj;
const container = pod.containers[0] as Obj;
const volumes = new Map<string, Obj>((pod.volumes as Obj[]).map((v) => [v.name as string, v]));

/** The tocfs settings the store runs with: the ConfigMap's config.toml, read as tocfs reads it. */
function storeConfig() {
  const file = join(tmp, 'config.toml');
  writeFileSync(file, byKind('ConfigMap').data['config.toml']);
  return loadConfig({ file, env: {}, root: true });
}

/** The hostPath mount that holds `path` inside the pod, and where that is on the node. */
function hostPathOf(path: string): { mount: Obj; hostPath: string } {
  const mounts = (container.volumeMounts as Obj[]).filter((m) => path === m.mountPath || path.startsWith(`${m.mountPath}/`));
  assert.ok(mounts.length > 0, `nothing is mounted at ${path} in the pod`);
  const mount = mounts.sort((a, b) => b.mountPath.length - a.mountPath.length)[0]!;
  const volume = volumes.get(mount.name);
  assert.ok(volume?.hostPath, `${path} is not on a hostPath volume`);
  return { mount, hostPath: join(volume.hostPath.path, relative(mount.mountPath, path)) };
}

/** The store directory: the positional argument of `tocfs store`. */
function storeDirArg(): string {
  const args = container.args as string[];
  assert.equal(args[0], 'store');
  const positional = args.slice(1).filter((a) => !a.startsWith('-'));
  assert.equal(positional.length, 1, `tocfs store should get the store directory: ${args.join(' ')}`);
  return positional[0]!;
}

describe('docs/kubernetes', () => {
  it('storage.conf names the store the DaemonSet mounts, by reference (:ref), as systemd/storage.conf does', () => {
    const conf = parseToml(read('storage.conf')) as Obj;
    assert.equal(conf.storage.driver, 'overlay');
    const stores = conf.storage.options.additionallayerstores as string[];
    assert.deepEqual(stores, [`${storeDirArg()}:ref`]);
    assert.equal(storeConfig().values['store.dir'], storeDirArg(), 'the ConfigMap names another store directory');
    // The node's path is the pod's: CRI-O, on the node, finds the store where the pod mounted it.
    assert.equal(hostPathOf(storeDirArg()).hostPath, storeDirArg());
    const systemd = parseToml(readFileSync(new URL('../systemd/storage.conf', import.meta.url), 'utf8')) as Obj;
    assert.deepEqual(systemd.storage.options.additionallayerstores, stores, 'docs/kubernetes/storage.conf and systemd/storage.conf disagree');
  });

  it('the store runs privileged with /dev/fuse, its directory mounted Bidirectional, the cache on the host', () => {
    assert.equal(container.securityContext?.privileged, true, 'a FUSE mount that propagates to the node needs a privileged container');
    const fuse = hostPathOf('/dev/fuse');
    assert.equal(fuse.hostPath, '/dev/fuse');
    assert.equal(volumes.get(fuse.mount.name)!.hostPath.type, 'CharDevice');

    const store = hostPathOf(storeDirArg());
    assert.equal(store.mount.mountPropagation, 'Bidirectional', 'the store mount must propagate to the node, where CRI-O reads it');
    // Its parent, not the mount point itself: the kubelet cannot bind a stale FUSE mount (ENOTCONN) into a restarted pod.
    assert.notEqual(store.mount.mountPath, storeDirArg());

    const cacheDir = storeConfig().values['cache.dir'];
    assert.equal(hostPathOf(cacheDir).hostPath, cacheDir, 'the cache must live on the node, at the same path');
    assert.equal(daemonSet.spec.updateStrategy?.type, 'OnDelete', 'a rolling update would stop the store under running containers');
  });

  it("the readiness probe asks /healthz where the store serves it, on the node's loopback", () => {
    const address = metricsAddressFor('store', storeConfig());
    assert.ok(address, 'metrics (and /healthz) are off in the ConfigMap');
    const where = parseAddress(address)!;
    const probe = container.readinessProbe?.httpGet as Obj | undefined;
    assert.ok(probe, 'no httpGet readiness probe');
    assert.equal(probe.path, '/healthz');
    assert.equal(probe.port, where.port);
    if (where.host === '127.0.0.1' || where.host === '::1' || where.host === 'localhost') {
      // The kubelet probes from the node: its loopback is the pod's only with hostNetwork, and then the probe must name it.
      assert.equal(pod.hostNetwork, true, 'a loopback metrics address is the node loopback only with hostNetwork');
      assert.equal(probe.host, where.host, 'without host, the kubelet probes the pod IP (the node IP), where nothing listens');
    }
    assert.equal(container.livenessProbe, undefined, 'a liveness restart breaks every container using the store');
  });

  it('the image is built with FUSE from the slim Node 20 image', () => {
    const containerfile = read('Containerfile');
    assert.match(containerfile, /^FROM docker\.io\/library\/node:20-bookworm-slim$/m);
    assert.match(containerfile, /apt-get install .*\bfuse libfuse2\b/);
  });

  const kubectl = findKubectl();
  it('kubectl accepts the manifests offline, and its own types keep every field of the DaemonSet', { skip: kubectl ? false : 'no kubectl on PATH (scripts/setup.sh installs Debian\'s kubernetes-client; or set KUBECTL)' }, () => {
    // A kubeconfig that points nowhere: --local never asks a server, and no real cluster can be touched.
    const kubeconfig = join(tmp, 'kubeconfig');
    writeFileSync(kubeconfig, 'apiVersion: v1\nkind: Config\nclusters: [{name: none, cluster: {server: "https://127.0.0.1:1"}}]\nusers: [{name: none, user: {token: none}}]\ncontexts: [{name: none, context: {cluster: none, user: none}}]\ncurrent-context: none\n');
    const run = (args: string[]): string =>
      execFileSync(kubectl!, args, { env: { PATH: process.env.PATH, HOME: tmp, KUBECONFIG: kubeconfig }, stdio: ['ignore', 'pipe', 'pipe'], encoding: 'utf8', timeout: 60_000 });

    const file = new URL('daemonset.yaml', DIR).pathname;
    const names = run(['annotate', '--local', '--dry-run=client', '-o', 'name', '-f', file, 'tocfs.io/checked=true']);
    assert.deepEqual(names.trim().split('\n'), documents.map((d) => `${d.kind === 'DaemonSet' ? 'daemonset.apps' : d.kind.toLowerCase()}/${d.metadata.name}`));

    const dsFile = join(tmp, 'daemonset.json');
    writeFileSync(dsFile, JSON.stringify(daemonSet));
    const typed = JSON.parse(run(['set', 'resources', '--local', '--dry-run=client', '-o', 'json', '-f', dsFile, '--limits=cpu=1'])) as Obj;
    assert.deepEqual(missingFrom(typed, daemonSet), [], 'fields that Kubernetes\' apps/v1 DaemonSet does not have (misspelt?)');
  });
});

/** Paths of `want`'s leaves that `got` lacks or holds otherwise (arrays by index). */
function missingFrom(got: unknown, want: unknown, path = ''): string[] {
  if (want !== null && typeof want === 'object') {
    if (got === null || typeof got !== 'object') return [path || '.'];
    return Object.entries(want as Obj).flatMap(([k, v]) => missingFrom((got as Obj)[k], v, `${path}.${k}`));
  }
  return got === want ? [] : [`${path} (${JSON.stringify(want)} became ${JSON.stringify(got)})`];
}

function findKubectl(): string | undefined {
  const candidates = process.env.KUBECTL ? [process.env.KUBECTL] : (process.env.PATH ?? '').split(delimiter).filter(Boolean).map((d) => join(d, 'kubectl'));
  for (const c of candidates) {
    try {
      accessSync(c, constants.X_OK);
      return c;
    } catch {
      // not here
    }
  }
  return undefined;
}

