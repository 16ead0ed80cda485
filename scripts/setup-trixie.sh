#!/usr/bin/env bash
# Builds, once, the Debian trixie root that the test suite runs Podman 5 from (trixie ships
# Podman 5.4.2, which keys additional-layer-store layers by TOC digest; bookworm's is 4.3.1).
# About 3 minutes on a fresh machine, a no-op after that. Needs root, debootstrap and Debian's
# archive. The suite (test/helpers/trixie.ts) enters it in a private mount namespace.
#   TOCFS_TRIXIE_ROOT  where the root lives (default /var/lib/tocfs-test/trixie)
set -euo pipefail
ROOT=${TOCFS_TRIXIE_ROOT:-/var/lib/tocfs-test/trixie}
MIRROR=${TOCFS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
PACKAGES="podman runc uidmap"
DONE="$ROOT/.tocfs-ready"

if [ -f "$DONE" ] && [ "$(cat "$DONE")" = "$PACKAGES" ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then echo "setup-trixie: needs root to build $ROOT (skipping; the Podman 5 tests will skip)" >&2; exit 0; fi
command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null; }

if [ ! -x "$ROOT/usr/bin/apt-get" ] || [ ! -f "$ROOT/.tocfs-bootstrapped" ]; then
  echo "setup-trixie: debootstrap trixie into $ROOT (once, about 2 minutes)" >&2
  rm -rf "$ROOT"
  mkdir -p "$ROOT"
  debootstrap --variant=minbase --include=ca-certificates trixie "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 \
    || { tail -20 "$ROOT.debootstrap.log" >&2; echo "setup-trixie: debootstrap failed (log: $ROOT.debootstrap.log)" >&2; exit 1; }
  touch "$ROOT/.tocfs-bootstrapped"
fi

echo "setup-trixie: installing $PACKAGES in $ROOT" >&2
cp -f /etc/resolv.conf "$ROOT/etc/resolv.conf"
# apt inside needs proc and dev; a private mount namespace drops them again on exit.
unshare -m --propagation private bash -c '
set -e
R=$1; shift
mount -t proc proc "$R/proc"
mount --rbind /dev "$R/dev"
mount -t tmpfs tmpfs "$R/tmp"
chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive \
  bash -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $* >/dev/null && podman --version" >&2
' _ "$ROOT" $PACKAGES
echo "$PACKAGES" >"$DONE"
