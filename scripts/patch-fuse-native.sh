#!/usr/bin/env bash
# fuse-native 2.2.6 passes stat times to its C layer as unsigned milliseconds: sub-millisecond
# precision is lost and times before 1970 turn into garbage. This applies
# scripts/fuse-native-timespec.patch (signed seconds + nanoseconds, plus an exported marker
# `stat_times_sec_nsec` that tocfs checks at mount) and rebuilds the addon with node-gyp
# against the system's Node headers. node-gyp-build then loads build/Release/fuse.node
# instead of the prebuilt one.
#
# Idempotent: an already patched source is not patched again, and an addon newer than its
# source is not rebuilt. Run after `npm ci` (scripts/setup.sh does).
#
# --best-effort (the package's postinstall: `npm install -g tocfs-*.tgz`): patch and build only
# with what is already on the machine (Node headers, patch, make, a C++ compiler), never
# download headers, and never fail the install: without the patch tocfs still works, with file
# times in whole milliseconds from 1970 on (it warns at mount).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
BEST_EFFORT=0
[ "${1:-}" = --best-effort ] && BEST_EFFORT=1
skip() { echo "patch-fuse-native: $1; fuse-native stays unpatched (file times in milliseconds)" >&2; exit 0; }
# fuse-native wherever npm put it (./node_modules, or hoisted next to this package).
PKG=$(node -p "require('node:path').dirname(require.resolve('fuse-native/package.json'))" 2>/dev/null || echo node_modules/fuse-native)
PATCH=$ROOT/scripts/fuse-native-timespec.patch
ADDON=$PKG/build/Release/fuse.node

[ -d "$PKG" ] || { echo "patch-fuse-native: $PKG is missing; run npm ci first" >&2; exit 1; }
if [ "$BEST_EFFORT" = 1 ]; then
  # Whatever goes wrong below leaves the stock addon in place and the install successful.
  trap 'rc=$?; [ $rc -eq 0 ] || skip "failed (exit $rc)"' EXIT
  for tool in patch make c++; do command -v "$tool" >/dev/null || skip "no $tool on this machine"; done
fi

if grep -q stat_times_sec_nsec "$PKG/fuse-native.c"; then
  :
elif patch -d "$PKG" -p1 --forward --dry-run --silent < "$PATCH" >/dev/null; then
  patch -d "$PKG" -p1 --forward --silent < "$PATCH"
  echo "patch-fuse-native: patched $PKG (signed seconds + nanoseconds for stat times)" >&2
else
  echo "patch-fuse-native: $PATCH does not apply to $PKG (another fuse-native version?)" >&2
  exit 1
fi

if [ -f "$ADDON" ] && [ "$ADDON" -nt "$PKG/fuse-native.c" ] && grep -q stat_times_sec_nsec "$ADDON"; then
  exit 0
fi

# node-gyp ships with npm; the headers come from the system's Node (Debian: /usr/include/node).
NODE_GYP=$(dirname "$(readlink -f "$(command -v npm)")")/../node_modules/node-gyp/bin/node-gyp.js
[ -f "$NODE_GYP" ] || NODE_GYP=$(npm root -g)/npm/node_modules/node-gyp/bin/node-gyp.js
NODEDIR_ARGS=()
NODE_PREFIX=$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")
for d in "${TOCFS_NODEDIR:-}" "$NODE_PREFIX" /usr /usr/local; do
  if [ -n "$d" ] && [ -f "$d/include/node/node_api.h" ] && [ -f "$d/include/node/common.gypi" ]; then NODEDIR_ARGS=(--nodedir="$d"); break; fi
done
[ "$BEST_EFFORT" = 0 ] || [ ${#NODEDIR_ARGS[@]} -gt 0 ] || skip "no Node headers installed (Debian: libnode-dev)"
echo "patch-fuse-native: building $ADDON" >&2
(cd "$PKG" && node "$NODE_GYP" rebuild "${NODEDIR_ARGS[@]}" --loglevel=warn >/dev/null)
grep -q stat_times_sec_nsec "$ADDON" || { echo "patch-fuse-native: the rebuilt addon lacks the patch marker" >&2; exit 1; }
node -e "const b = require('node-gyp-build')('$PKG'); if (b.stat_times_sec_nsec !== 1) { console.error('patch-fuse-native: node-gyp-build does not load the patched addon'); process.exit(1) }"
echo "patch-fuse-native: done" >&2
