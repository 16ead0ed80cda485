#!/usr/bin/env bash
# The unit tests (test/unit-tests.txt): no apt packages, no root, no services (docker-registry,
# FUSE mounts, Podman, systemd), under a minute. Type-checks src and test, then runs the files
# with node's test runner through tsx. Unlike `npm test` it installs nothing (no scripts/setup.sh):
# it needs only `npm ci`.
#
# The corpus (../shared/corpus) is left out, so its checks are skipped and the run is the same
# everywhere; set TOCFS_CORPUS=DIR to include them (slower). Tools only apt installs are stubbed
# on PATH: a listed test that reaches for one fails instead of passing here and not elsewhere.
# Extra arguments go to node's test runner (e.g. --test-name-pattern=…).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules ] || { echo "test:unit: no node_modules: run npm ci first" >&2; exit 1; }

mapfile -t files < <(grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' test/unit-tests.txt)

# Type-check alongside the tests (incrementally: a re-run checks only what changed).
mkdir -p node_modules/.cache/tocfs
tsc_log=$(mktemp)
stubs=$(mktemp -d)
trap 'rm -rf "$tsc_log" "$stubs"' EXIT
npx tsc -p test/tsconfig.json --incremental --tsBuildInfoFile node_modules/.cache/tocfs/test-unit.tsbuildinfo >"$tsc_log" 2>&1 &
tsc_pid=$!

for tool in docker-registry podman skopeo runc htpasswd openssl python3 zstd systemd-analyze systemctl fusermount mount umount setpriv; do
  printf '#!/bin/sh\necho "test:unit: %s is not available to unit tests (see test/unit-tests.txt)" >&2\nexit 127\n' "$tool" >"$stubs/$tool"
  chmod +x "$stubs/$tool"
done

export TOCFS_CORPUS="${TOCFS_CORPUS:-/nonexistent/tocfs-test-unit-runs-without-the-corpus}"
status=0
PATH="$stubs:$PATH" node --import tsx --test --test-reporter=spec --test-concurrency="$(nproc)" "$@" "${files[@]}" || status=$?

if ! wait "$tsc_pid"; then
  cat "$tsc_log" >&2
  echo "test:unit: type errors (tsc -p test/tsconfig.json)" >&2
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"
