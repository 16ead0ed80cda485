#!/bin/sh
# Installs tocfs's systemd units, a default /etc/tocfs/config.toml and the storage.conf
# line that makes Podman/CRI-O read the tocfs layer store. Idempotent: running it again
# changes nothing that is already in place. With --user, for the current user's rootless
# Podman instead: no root needed, everything under the user's home.
#
#   scripts/install.sh [--user] [--prefix DIR] [--bin PATH] [--store-dir DIR]
#                      [--storage-conf FILE] [--dry-run] [--no-start]
#
#   --user              for the current (non-root) user: a systemctl --user unit in
#                       ~/.config/systemd/user, ~/.config/tocfs/config.toml, the store at
#                       ~/.local/share/tocfs/store and ~/.config/containers/storage.conf
#   --prefix DIR        install under DIR instead of / (for packaging and tests)
#   --bin PATH          the tocfs executable the units run (default: tocfs on PATH, else /usr/local/bin/tocfs; --user: ~/.local/bin/tocfs)
#   --store-dir DIR     the store's mount point (default /var/lib/tocfs/store)
#   --storage-conf F    containers-storage.conf to edit (default /etc/containers/storage.conf)
#   --dry-run           say what would change, change nothing
#   --no-start          do not run systemctl (the default when --prefix is given or systemd is not running)
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
prefix=
bin=
user=0
store_dir=
storage_conf=
dry_run=0
start=1

usage() { sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --user) user=1; shift ;;
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

if [ "$user" = 1 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "install.sh: --user installs for a non-root user's rootless Podman; run it as that user (as root, leave --user out)" >&2
    exit 2
  fi
  : "${HOME:?install.sh --user: HOME is not set}"
  config_home=${XDG_CONFIG_HOME:-$HOME/.config}
  data_home=${XDG_DATA_HOME:-$HOME/.local/share}
  [ -n "$store_dir" ] || store_dir=$data_home/tocfs/store
  [ -n "$storage_conf" ] || storage_conf=$config_home/containers/storage.conf
  unit_dir=$prefix$config_home/systemd/user
  units=tocfs-store.service
  unit_src=systemd/user
  config=$prefix$config_home/tocfs/config.toml
else
  [ -n "$store_dir" ] || store_dir=/var/lib/tocfs/store
  [ -n "$storage_conf" ] || storage_conf=/etc/containers/storage.conf
  unit_dir=$prefix/etc/systemd/system
  units="tocfs-store.service tocfs-mount@.service"
  unit_src=systemd
  config=$prefix/etc/tocfs/config.toml
fi

case "$store_dir" in
  /*) ;;
  *) echo "install.sh: --store-dir must be absolute (containers/storage requires it): $store_dir" >&2; exit 2 ;;
esac
case "$store_dir" in
  *:*|*,*|*\"*) echo "install.sh: --store-dir must not contain ':', ',' or '\"' (storage.conf splits on them): $store_dir" >&2; exit 2 ;;
esac
if [ -z "$bin" ]; then
  if [ "$user" = 1 ]; then fallback=$HOME/.local/bin/tocfs; else fallback=/usr/local/bin/tocfs; fi
  bin=$(command -v tocfs 2>/dev/null || echo "$fallback")
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

# 0. What a rootless store needs that only root can give: said, not done.
if [ "$user" = 1 ]; then
  if [ ! -r /dev/fuse ] || [ ! -w /dev/fuse ]; then
    say "note: /dev/fuse is not usable by $(id -un): the store cannot mount until root makes it 0666 (Debian's default): chmod 0666 /dev/fuse"
  fi
  for f in /etc/subuid /etc/subgid; do
    if ! grep -Eq "^($(id -un)|$(id -u)):" "$f" 2>/dev/null; then
      say "note: $f has no range for $(id -un): rootless Podman then maps container root alone (root adds one: usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $(id -un))"
    fi
  done
  command -v newuidmap >/dev/null 2>&1 || say "note: newuidmap/newgidmap are missing (Debian package uidmap): rootless Podman needs them"
fi

# 1. systemd units, with the tocfs path and store directory of this installation.
for unit in $units; do
  sed -e "s|/usr/local/bin/tocfs|$bin|g" -e "s|%h/.local/share/tocfs/store|$store_dir|g" -e "s|/var/lib/tocfs/store|$store_dir|g" "$here/$unit_src/$unit" > "$tmp/$unit"
  install_file "$tmp/$unit" "$unit_dir/$unit" 0644
done

# 2. A default config file (never overwritten: it is the administrator's, or the user's).
if [ -e "$config" ]; then
  say "unchanged $config (exists)"
else
  if "$bin" config example > "$tmp/config.toml" 2>/dev/null && [ -s "$tmp/config.toml" ]; then :; else
    printf '%s\n' '# tocfs configuration (see: tocfs config reference). Every setting is optional.' '[store]' "dir = \"$store_dir\"" > "$tmp/config.toml"
  fi
  install_file "$tmp/config.toml" "$config" 0644
fi
if [ "$user" = 1 ]; then :; elif [ -d "$prefix/etc/tocfs/mounts" ]; then :; elif act "create $prefix/etc/tocfs/mounts/"; then mkdir -p "$prefix/etc/tocfs/mounts"; fi

# 3. storage.conf: additionallayerstores = ["<store>:ref"] under [storage.options].
conf="$prefix$storage_conf"
entry="\"$store_dir:ref\""
if [ -f "$conf" ]; then
  cp "$conf" "$tmp/storage.conf"
  if [ "$user" = 1 ] && grep -Eq '^[[:space:]]*driver[[:space:]]*=[[:space:]]*"[^"]' "$conf" && ! grep -Eq '^[[:space:]]*driver[[:space:]]*=[[:space:]]*"overlay"' "$conf"; then
    echo "install.sh: $conf sets a storage driver other than overlay; only overlay reads additional layer stores: left unchanged" >&2
    exit 1
  fi
elif [ "$user" = 1 ]; then
  # A user's storage.conf replaces the system's whole for rootless Podman: start from nothing
  # (the system file's graphroot and runroot are root's), so rootless defaults stay in force.
  printf '# Rootless Podman reads this file instead of /etc/containers/storage.conf (made by tocfs install.sh --user).\n[storage]\ndriver = "overlay"\n' > "$tmp/storage.conf"
  say "note: $conf does not exist yet: it will be created, and rootless Podman then reads it instead of /etc/containers/storage.conf"
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
if [ "$user" = 1 ]; then
  if [ "$start" = 1 ] && [ "$dry_run" = 0 ] && systemctl --user show-environment >/dev/null 2>&1; then
    systemctl --user daemon-reload
    systemctl --user enable --now tocfs-store.service
    say "started tocfs-store.service (systemctl --user); check it with: tocfs store status $store_dir"
    say "it starts at login; for boot: loginctl enable-linger $(id -un). Run podman system migrate if Podman was already running."
  elif [ "$start" = 1 ] && [ "$dry_run" = 0 ]; then
    say "no systemd user manager here: start the store with: $bin store $store_dir"
  fi
elif [ "$start" = 1 ] && [ "$dry_run" = 0 ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  systemctl enable --now tocfs-store.service
  say "started tocfs-store.service; check it with: tocfs store status $store_dir"
elif [ "$start" = 1 ] && [ "$dry_run" = 0 ]; then
  say "systemd is not running here: start the store with: $bin store $store_dir"
fi
if [ "$changed" = 0 ]; then say "nothing to do: tocfs is installed"; fi
