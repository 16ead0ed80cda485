#!/usr/bin/env bash
# The tocfs benchmark (root): builds its images, serves them from a docker-registry over an
# emulated WAN link in two private network namespaces, measures, and tears everything down
# on exit — also on failure or Ctrl-C.
#
#   bash scripts/bench/run.sh [--quick] [--reps N] [--profiles wan100,wan1g,loopback] [--only GROUPS] [--note TEXT]
#
# Results: scripts/bench/results/<time>.{json,md} and <time>-ready.svg (latest.* = last full run).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WORK=${TOCFS_BENCH_WORK:-/var/tmp/tocfs-bench}

if [ "$(id -u)" -ne 0 ]; then echo "run.sh: needs root (network namespaces, FUSE, podman)" >&2; exit 1; fi
for tool in ip tc nsenter unshare podman skopeo docker-registry zstd curl strace fusermount; do
  command -v "$tool" >/dev/null || { echo "run.sh: $tool is missing (bash scripts/setup.sh installs it)" >&2; exit 1; }
done

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  # Only what this benchmark started: processes inside its own namespaces, mounts under its work dir.
  for ns in tocfsbench-cli tocfsbench-reg; do
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
  done
  for mp in $(awk '{print $5}' /proc/self/mountinfo | grep -e "^$WORK/" -e "^/tmp/tbp-" | sort -ru); do
    fusermount -uz "$mp" 2>/dev/null || umount -l "$mp" 2>/dev/null || true
  done
  rm -rf /tmp/tbp-*   # podman runroots of this benchmark (lib/podman.ts)
  bash "$HERE/netns.sh" down
  exit "$rc"
}
trap cleanup EXIT INT TERM

mkdir -p "$WORK"
bash "$HERE/netns.sh" up
cd "$REPO"
TOCFS_BENCH_WORK="$WORK" node --import tsx "$HERE/main.ts" --work "$WORK" "$@"
