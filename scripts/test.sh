#!/usr/bin/env bash
# The whole test suite on a fresh machine: set-up, build, then node's test runner.
# Extra arguments are test files to run instead of all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# Podman 5.4.2 for the store's end-to-end tests, from a Debian trixie root built once.
bash scripts/setup-trixie.sh
# tsx runs the tests without type-checking them: check them (and src) first.
npx tsc -p test/tsconfig.json
if [ $# -gt 0 ]; then files=("$@"); else mapfile -t files < <(find test -name '*.test.ts' | sort); fi
exec node --import tsx --test --test-reporter=spec "${files[@]}"
