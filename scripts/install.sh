#!/bin/sh
# Installs tocfs's systemd units, a default /etc/tocfs/config.toml and the storage.conf
# line that makes Podman/CRI-O read the tocfs layer store. Idempotent: running it again
# changes nothing that is already in place.
#
#   scripts/install.sh [--prefix DIR] [--bin PATH] [--store-dir DIR] [--storage-conf FILE]
#                      [--dry-run] [--no-start]
#
#   --prefix DIR        install under DIR instead of / (for packaging and tests)
#   --bin PATH          the tocfs executable the units run (default: tocfs on PATH, else /usr/local/bin/tocfs)
#   --store-dir DIR     the store's mount point (default /var/lib/tocfs/store)
#   --storage-conf F    containers-storage.conf to edit (default /etc/containers/storage.conf)
#   --dry-run           say what would change, change nothing
#   --no-start          do not run systemctl (the default when --prefix is given or systemd is not running)
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
prefix=
bin=
store_dir=/var/lib/tocfs/store
storage_conf=/etc/containers/storage.conf
dry_run=0
start=1

usage() { sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix=${2:?--prefix needs a directory}; start=0; shift 2 ;;
    --prefix=*) prefix=${1#*=}; start=0; shift ;;
    --bin) bin=${2:?--bin needs a path}; shift 2 ;;
    --bin=*) bin=${1#*=}; shift ;;
    --store-dir) store_dir=${2:?--store-dir needs a directory}; shift 2 ;;
    --store-dir=*) store_dir=${1#*=}; shift ;;
    --storage-conf) storage_conf=${2:?--storage-conf needs a file}; shift 2 ;;
    --storage-conf=*) storage_conf=${1#*=}; shift ;;
    --dry-run) dry_run=1; shift ;;
    --no-start) start=0; shift ;;
    -h|--help) usage 0 ;;
    *) echo "install.sh: unknown option $1" >&2; usage 2 >&2 ;;
  esac
done

case "$store_dir" in
  /*) ;;
  *) echo "install.sh: --store-dir must be absolute (containers/storage requires it): $store_dir" >&2; exit 2 ;;
esac
case "$store_dir" in
  *:*|*,*|*\"*) echo "install.sh: --store-dir must not contain ':', ',' or '\"' (storage.conf splits on them): $store_dir" >&2; exit 2 ;;
esac
if [ -z "$bin" ]; then
  bin=$(command -v tocfs 2>/dev/null || echo /usr/local/bin/tocfs)
fi

changed=0
say() { printf '%s\n' "$*"; }
act() { # act DESCRIPTION: the caller does the work unless --dry-run
  changed=1
  if [ "$dry_run" = 1 ]; then say "would $1"; return 1; fi
  say "$1"
}

# install_file SRC DEST MODE: copy unless DEST already has the same content.
install_file() {
  if [ -f "$2" ] && cmp -s "$1" "$2"; then say "unchanged $2"; return 0; fi
  if act "install $2"; then
    mkdir -p "$(dirname "$2")"
    cp "$1" "$2.tocfs-new" && chmod "$3" "$2.tocfs-new" && mv -f "$2.tocfs-new" "$2"
  fi
}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# 1. systemd units, with the tocfs path and store directory of this installation.
unit_dir="$prefix/etc/systemd/system"
for unit in tocfs-store.service tocfs-mount@.service; do
  sed -e "s|/usr/local/bin/tocfs|$bin|g" -e "s|/var/lib/tocfs/store|$store_dir|g" "$here/systemd/$unit" > "$tmp/$unit"
  install_file "$tmp/$unit" "$unit_dir/$unit" 0644
done

# 2. A default config file (never overwritten: it is the administrator's).
config="$prefix/etc/tocfs/config.toml"
if [ -e "$config" ]; then
  say "unchanged $config (exists)"
else
  if "$bin" config example > "$tmp/config.toml" 2>/dev/null && [ -s "$tmp/config.toml" ]; then :; else
    printf '%s\n' '# tocfs configuration (see: tocfs config reference). Every setting is optional.' '[store]' "dir = \"$store_dir\"" > "$tmp/config.toml"
  fi
  install_file "$tmp/config.toml" "$config" 0644
fi
if [ -d "$prefix/etc/tocfs/mounts" ]; then :; elif act "create $prefix/etc/tocfs/mounts/"; then mkdir -p "$prefix/etc/tocfs/mounts"; fi

# 3. storage.conf: additionallayerstores = ["<store>:ref"] under [storage.options].
conf="$prefix$storage_conf"
entry="\"$store_dir:ref\""
if [ -f "$conf" ]; then
  cp "$conf" "$tmp/storage.conf"
elif [ -f "$prefix/usr/share/containers/storage.conf" ]; then
  # A storage.conf in /etc replaces the packaged one entirely: start from it.
  cp "$prefix/usr/share/containers/storage.conf" "$tmp/storage.conf"
else
  printf '[storage]\ndriver = "overlay"\n' > "$tmp/storage.conf"
fi
if grep -Eq "^[[:space:]]*additionallayerstores[[:space:]]*=.*$entry" "$tmp/storage.conf"; then
  say "unchanged $conf (already lists $store_dir:ref)"
else
  if grep -Eq '^[[:space:]]*additionallayerstores[[:space:]]*=[[:space:]]*\[.*\]' "$tmp/storage.conf"; then
    # A one-line array: add our store in front (Podman 4.x consults only the first store).
    awk -v entry="$entry" '
      /^[[:space:]]*additionallayerstores[[:space:]]*=[[:space:]]*\[/ && !done {
        i = index($0, "["); rest = substr($0, i + 1)
        sep = (rest ~ /^[[:space:]]*\]/) ? "" : ", "
        $0 = substr($0, 1, i) entry sep rest; done = 1
      }
      { print }' "$tmp/storage.conf" > "$tmp/storage.conf.new"
  elif grep -Eq '^[[:space:]]*additionallayerstores[[:space:]]*=' "$tmp/storage.conf"; then
    echo "install.sh: $conf has a multi-line additionallayerstores array: add $entry to it by hand" >&2
    exit 1
  elif grep -Eq '^[[:space:]]*\[storage\.options\][[:space:]]*$' "$tmp/storage.conf"; then
    awk -v line="additionallayerstores = [$entry]" '{ print } /^[[:space:]]*\[storage\.options\][[:space:]]*$/ && !done { print line; done = 1 }' "$tmp/storage.conf" > "$tmp/storage.conf.new"
  else
    cp "$tmp/storage.conf" "$tmp/storage.conf.new"
    printf '\n[storage.options]\nadditionallayerstores = [%s]\n' "$entry" >> "$tmp/storage.conf.new"
  fi
  if [ "$dry_run" = 1 ]; then diff -u "$conf" "$tmp/storage.conf.new" 2>/dev/null | sed 's/^/  /' || true; fi
  if [ -f "$conf" ]; then mode=$(stat -c %a "$conf"); else mode=0644; fi
  if act "add $store_dir:ref to additionallayerstores in $conf"; then
    mkdir -p "$(dirname "$conf")"
    [ -f "$conf" ] && cp -p "$conf" "$conf.tocfs-backup"
    cp "$tmp/storage.conf.new" "$conf.tocfs-new" && chmod "$mode" "$conf.tocfs-new" && mv -f "$conf.tocfs-new" "$conf"
  fi
fi

# 4. Start the store (the storage.conf line makes every podman command stat the store directory).
if [ "$start" = 1 ] && [ "$dry_run" = 0 ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now tocfs-store.service
  say "started tocfs-store.service; check it with: tocfs store status $store_dir"
elif [ "$start" = 1 ] && [ "$dry_run" = 0 ]; then
  say "systemd is not running here: start the store with: $bin store $store_dir"
fi
if [ "$changed" = 0 ]; then say "nothing to do: tocfs is installed"; fi
