#!/usr/bin/env bash
# The main job on an embedded default, on a fresh Debian bookworm machine (as root):
# build a Python runtime image from this machine's files, write it as zstd:chunked with tocfs's
# own writer (`tocfs convert`), push it to a real docker-registry on 127.0.0.1, mount it lazily
# with `tocfs mount`, run Python from the mount, and show how little of the layer was fetched.
#
#   npm run demo            # mounts, shows, unmounts and stops the registry
#   npm run demo -- --keep  # leaves the mount and the registry running (prints how to stop them)
#   options: --dir DIR (work directory, default /tmp/tocfs-demo), --no-setup (skip scripts/setup.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT_DIR=$PWD
KEEP=0 SETUP=1 DEMO=/tmp/tocfs-demo
while [ $# -gt 0 ]; do
  case "$1" in
    --keep) KEEP=1 ;;
    --no-setup) SETUP=0 ;;
    --dir) DEMO=$2; shift ;;
    *) echo "demo: unknown option $1 (--keep, --no-setup, --dir DIR)" >&2; exit 2 ;;
  esac
  shift
done

[ "$SETUP" = 0 ] || bash scripts/setup.sh >&2
TOCFS="$ROOT_DIR/bin/tocfs"
MNT=$DEMO/mnt

if [ -t 1 ]; then B=$'\033[1m' N=$'\033[0m'; else B='' N=''; fi
step() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }

if [ -d "$DEMO" ] && [ -n "$(ls -A "$DEMO")" ] && [ ! -e "$DEMO/.tocfs-demo" ]; then
  echo "demo: $DEMO holds files the demo did not make; name an empty or new directory with --dir" >&2; exit 2
fi
# A previous run's leftovers: its mount, registry and files.
if mountpoint -q "$MNT" 2>/dev/null; then "$TOCFS" unmount "$MNT" 2>/dev/null || fusermount -uz "$MNT" || true; fi
[ -f "$DEMO/registry.pid" ] && kill "$(cat "$DEMO/registry.pid")" 2>/dev/null || true
rm -rf "$DEMO"
mkdir -p "$DEMO" "$MNT"
touch "$DEMO/.tocfs-demo"

cleanup() {
  [ "$KEEP" = 1 ] && return
  if mountpoint -q "$MNT" 2>/dev/null; then "$TOCFS" unmount "$MNT" >/dev/null 2>&1 || fusermount -uz "$MNT" || true; fi
  [ -f "$DEMO/registry.pid" ] && kill "$(cat "$DEMO/registry.pid")" 2>/dev/null || true
}
trap cleanup EXIT

step "1. A local OCI registry (Debian's docker-registry) on 127.0.0.1"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
cat > "$DEMO/registry.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $DEMO/registry
http:
  addr: $REG
EOF
docker-registry serve "$DEMO/registry.yml" > "$DEMO/registry.log" 2>&1 &
echo $! > "$DEMO/registry.pid"
for _ in $(seq 100); do curl -fsS -o /dev/null "http://$REG/v2/" 2>/dev/null && break; sleep 0.1; done
curl -fsS -o /dev/null "http://$REG/v2/" || { echo "docker-registry did not start; its log:" >&2; cat "$DEMO/registry.log" >&2; exit 1; }
echo "registry at http://$REG (log: $DEMO/registry.log)"

step "2. A Python 3.11 runtime image from this machine's files"
PY=/usr/bin/python3.11
# Each library under its soname (often a symlink, its directory resolved: /lib is usr/lib) and its target.
LIBS=$(ldd "$PY" | awk '/=>/ { print $3 } /ld-linux/ { print $1 }' |
  while read -r l; do echo "$(readlink -f "$(dirname "$l")")/$(basename "$l")"; readlink -f "$l"; done | sort -u)
tar -C / -cf "$DEMO/rootfs.tar" --exclude='__pycache__' \
  lib lib64 "${PY#/}" usr/lib/python3.11 $(printf '%s\n' $LIBS | sed 's|^/||')
PODMAN=(podman --root "$DEMO/podman/root" --runroot "$DEMO/podman/run" --storage-driver vfs)
"${PODMAN[@]}" import -q --change 'CMD ["/usr/bin/python3.11"]' "$DEMO/rootfs.tar" demo-src >/dev/null
"${PODMAN[@]}" push -q demo-src "oci:$DEMO/src:latest"
"${PODMAN[@]}" rmi -a -f >/dev/null 2>&1 || true
echo "source image: $(du -sh "$DEMO/rootfs.tar" | cut -f1) uncompressed, $(tar -tf "$DEMO/rootfs.tar" | wc -l) entries"

step "3. Convert it to zstd:chunked with tocfs's own writer and push it"
"$TOCFS" convert "oci:$DEMO/src:latest" "oci:$DEMO/lazy:latest" --format zstd:chunked
skopeo copy -q --dest-tls-verify=false "oci:$DEMO/lazy:latest" "docker://$REG/demo/python:3.11"
"$TOCFS" inspect --tls-verify=false "$REG/demo/python:3.11"

LAYER_BYTES=$(python3 - "$DEMO/lazy" <<'EOF'
import json, os, sys
d = sys.argv[1]
idx = json.load(open(os.path.join(d, "index.json")))
m = json.load(open(os.path.join(d, "blobs", *idx["manifests"][0]["digest"].split(":"))))
print(sum(l["size"] for l in m["layers"]))
EOF
)
# Blob bytes the registry sent since the mount began (its access log: "GET /v2/…/blobs/… HTTP/1.1" 206 BYTES).
fetched() {
  tail -n +"$((BEFORE + 1))" "$DEMO/registry.log" | python3 -c '
import re, sys
print(sum(int(m.group(1)) for m in (re.search(r"\"GET /v2/\S+/blobs/\S+ HTTP/[0-9.]+\" 20[06] (\d+)", l) for l in sys.stdin) if m))'
}
report() { python3 -c "f=$(fetched); print(f'$1: {f:,} of {$LAYER_BYTES:,} compressed layer bytes fetched ({100 * f / $LAYER_BYTES:.1f} %)')"; }
step "4. Mount it lazily: only the TOC is fetched"
BEFORE=$(wc -l < "$DEMO/registry.log")
start=$(date +%s.%N)
"$TOCFS" mount --tls-verify=false --cache-dir "$DEMO/cache" "$REG/demo/python:3.11" "$MNT"
echo "mounted at $MNT in $(python3 -c "import time; print(f'{time.time() - $start:.2f}')") s"
ls -la "$MNT" "$MNT/usr/lib/python3.11" | sed -n 1,20p  # sed, not head: reads all, so ls never gets SIGPIPE (pipefail)
report "after the mount and ls"

step "5. Run Python from the mount (chroot): its start-up reads are fetched on demand"
chroot "$MNT" /usr/bin/python3.11 -c 'import json, sys, platform; print("hello from", sys.version.split()[0], "on a lazily pulled image:", json.dumps({"machine": platform.machine()}))'

report "after python start-up"

step "6. Every byte read is checked against the source (whole files, the 6.8 MB python binary too)"
for f in usr/lib/python3.11/json/decoder.py usr/lib/python3.11/os.py usr/bin/python3.11; do
  a=$(sha256sum < "$MNT/$f" | cut -d' ' -f1); b=$(tar -xOf "$DEMO/rootfs.tar" "$f" | sha256sum | cut -d' ' -f1)
  [ "$a" = "$b" ] && echo "ok  $f  sha256:${a:0:16}…" || { echo "MISMATCH $f" >&2; exit 1; }
done
report "after the checks"
"$TOCFS" cache stats --cache-dir "$DEMO/cache"

if [ "$KEEP" = 1 ]; then
  step "Left running"
  echo "mount:    $MNT   (tocfs unmount $MNT)"
  echo "registry: http://$REG   (kill \$(cat $DEMO/registry.pid))"
else
  step "Done: unmounting and stopping the registry (npm run demo -- --keep leaves them running)"
fi
