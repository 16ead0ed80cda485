#!/usr/bin/env bash
# Everything a fresh Debian bookworm machine needs to build, run and test tocfs.
# Idempotent: packages already present are skipped. Run as root (or with sudo available).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  fuse libfuse2            # fuse-native's prebuilt addon links libfuse.so.2; fusermount
  zstd                     # reference decoder for tests
  docker-registry          # a real OCI registry on loopback for tests and the demo
  podman skopeo runc       # end-to-end tests: podman pulls/runs through tocfs
  uidmap                   # newuidmap/newgidmap: rootless Podman (test/store-rootless.test.ts)
  apache2-utils            # htpasswd for registry auth tests
  openssl ca-certificates  # TLS tests
  iproute2                 # network namespaces for the WAN benchmark
  systemd                  # systemd-analyze verify of the unit files
  systemd-container        # systemd-nspawn: a real systemd as PID 1 for the restart tests (fd store)
  crun                     # Podman inside that systemd container, without cgroups (runc needs them)
  python3 make g++         # node-gyp builds: the patched fuse-native, native/ (tocfs_fuse_dev)
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# kubectl for test/kubernetes-docs.test.ts (offline client-side checks of docs/kubernetes/):
# Debian's kubernetes-client, only where no kubectl is on PATH yet: another package's
# /usr/bin/kubectl would conflict with it. Without kubectl that check skips.
if ! command -v kubectl >/dev/null; then
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "setup: installing kubernetes-client (kubectl)" >&2
  { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null; } ||
    echo "setup: kubernetes-client did not install; test/kubernetes-docs.test.ts skips its kubectl check" >&2
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi
# fuse-native's stat times: signed seconds + nanoseconds instead of unsigned milliseconds.
bash scripts/patch-fuse-native.sh
# tocfs's own addon for its FUSE session (native/): npm ci's postinstall builds it best-effort;
# here a failed build fails the set-up. Up to date → nothing to do.
bash scripts/build-native.sh
npm run -s build
