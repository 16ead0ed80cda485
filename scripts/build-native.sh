#!/usr/bin/env bash
# Builds tocfs's own addon: native/fuse_dev.c → native/build/Release/tocfs_fuse_dev.node, what
# the own FUSE session (src/fs/session/) needs on /dev/fuse and Node cannot do itself (mount(2)
# with a /dev/fuse fd, reading requests from the event loop, the passthrough ioctls, fd
# handover). node-gyp (it ships with npm) builds it against the system's Node headers
# (Debian: /usr/include/node); headers are never downloaded.
#
# Idempotent: an addon newer than native/fuse_dev.c and native/binding.gyp is not rebuilt.
# Run after `npm ci` (its postinstall does, best-effort; scripts/setup.sh does, strictly).
#
# --best-effort (the package's postinstall, also under `npm install -g tocfs-*.tgz`): build
# only with what is already on the machine (Node headers, make, a C compiler, python3 for gyp)
# and never fail the install: without the addon tocfs mounts with fuse-native.
set -euo pipefail
cd "$(dirname "$0")/.."
BEST_EFFORT=0
[ "${1:-}" = --best-effort ] && BEST_EFFORT=1
ADDON=native/build/Release/tocfs_fuse_dev.node
SOURCES=(native/fuse_dev.c native/binding.gyp)
skip() { echo "build-native: $1; $ADDON is not built (tocfs mounts with fuse-native instead)" >&2; exit 0; }

if [ "$BEST_EFFORT" = 1 ]; then
  # Whatever goes wrong below leaves the install successful, without the addon.
  trap 'rc=$?; [ $rc -eq 0 ] || skip "failed (exit $rc)"' EXIT
  for f in "${SOURCES[@]}"; do [ -f "$f" ] || skip "$f is missing"; done
  for tool in make cc c++ python3; do command -v "$tool" >/dev/null || skip "no $tool on this machine"; done
fi

up_to_date() {
  [ -f "$ADDON" ] || return 1
  for f in "${SOURCES[@]}"; do [ "$ADDON" -nt "$f" ] || return 1; done
}
if up_to_date; then echo "build-native: $ADDON is up to date" >&2; exit 0; fi

# Two builds at once (parallel set-ups in one checkout) would delete each other's build/.
if command -v flock >/dev/null; then
  exec 9<scripts/build-native.sh
  flock 9
  if up_to_date; then echo "build-native: $ADDON is up to date (built meanwhile)" >&2; exit 0; fi
fi

# node-gyp ships with npm; the headers come from the system's Node (Debian: /usr/include/node).
NODE_GYP=$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js
[ -f "$NODE_GYP" ] || NODE_GYP=$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js
if [ ! -f "$NODE_GYP" ]; then
  [ "$BEST_EFFORT" = 1 ] && skip "no node-gyp next to npm"
  echo "build-native: no node-gyp next to npm ($NODE_GYP)" >&2
  exit 1
fi
NODEDIR=
NODE_PREFIX=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
for d in "${TOCFS_NODEDIR:-}" "$NODE_PREFIX" /usr /usr/local; do
  if [ -n "$d" ] && [ -f "$d/include/node/node_api.h" ] && [ -f "$d/include/node/common.gypi" ]; then NODEDIR=$d; break; fi
done
if [ -z "$NODEDIR" ]; then
  [ "$BEST_EFFORT" = 1 ] && skip "no Node headers installed (Debian: libnode-dev; or set TOCFS_NODEDIR)"
  echo "build-native: no Node headers (include/node/node_api.h) under \$TOCFS_NODEDIR, $NODE_PREFIX, /usr or /usr/local" >&2
  exit 1
fi

echo "build-native: building $ADDON" >&2
(cd native && node "$NODE_GYP" rebuild --nodedir="$NODEDIR" --loglevel=warn >/dev/null)
# The version the source declares: a load that reports another found a stale build.
WANT=$(sed -n 's/^#define ADDON_VERSION \([0-9]*\)$/\1/p' native/fuse_dev.c)
node -e "const a = require('./$ADDON'); if (a.version !== $WANT) { console.error('build-native: the built addon reports version ' + a.version + ', not $WANT'); process.exit(1) }"
echo "build-native: done" >&2
