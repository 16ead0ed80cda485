#!/usr/bin/env bash
# The emulated WAN link: two network namespaces joined by a veth pair, rate-limited with tbf
# on both ends. Nothing here touches the host's own interfaces or routes: the veth pair is
# created inside the namespaces and its /30 exists only there.
#
#   netns.sh up                 create the namespaces and the link (idempotent)
#   netns.sh shape RATE         tbf at RATE (e.g. 100mbit, 1gbit) on both veth ends
#   netns.sh counters           "rx_bytes tx_bytes" of the client end
#   netns.sh down               remove everything (safe to call twice)
set -euo pipefail

REG_NS=tocfsbench-reg
CLI_NS=tocfsbench-cli
REG_IF=tbv-reg
CLI_IF=tbv-cli
REG_ADDR=10.231.0.1
CLI_ADDR=10.231.0.2

up() {
  ip netns list | grep -qw "$REG_NS" || ip netns add "$REG_NS"
  ip netns list | grep -qw "$CLI_NS" || ip netns add "$CLI_NS"
  if ! ip -n "$REG_NS" link show "$REG_IF" >/dev/null 2>&1; then
    ip -n "$REG_NS" link add "$REG_IF" type veth peer name "$CLI_IF" netns "$CLI_NS"
  fi
  ip -n "$REG_NS" addr replace "$REG_ADDR/30" dev "$REG_IF"
  ip -n "$CLI_NS" addr replace "$CLI_ADDR/30" dev "$CLI_IF"
  for ns in "$REG_NS" "$CLI_NS"; do ip -n "$ns" link set lo up; done
  ip -n "$REG_NS" link set "$REG_IF" up
  ip -n "$CLI_NS" link set "$CLI_IF" up
}

shape() {
  local rate=$1 burst
  # tbf needs a bucket of at least rate/HZ; 1 Gbit/s wants a larger one than 100 Mbit/s.
  case "$rate" in
    *gbit) burst=512kb ;;
    *) burst=64kb ;;
  esac
  ip netns exec "$REG_NS" tc qdisc replace dev "$REG_IF" root tbf rate "$rate" burst "$burst" latency 50ms
  ip netns exec "$CLI_NS" tc qdisc replace dev "$CLI_IF" root tbf rate "$rate" burst "$burst" latency 50ms
}

counters() {
  local d=/sys/class/net/$CLI_IF/statistics
  ip netns exec "$CLI_NS" sh -c "echo \$(cat $d/rx_bytes) \$(cat $d/tx_bytes)"
}

down() {
  ip netns del "$CLI_NS" 2>/dev/null || true
  ip netns del "$REG_NS" 2>/dev/null || true
}

case "${1:-}" in
  up) up ;;
  shape) shape "$2" ;;
  counters) counters ;;
  down) down ;;
  *) echo "usage: $0 up|shape RATE|counters|down" >&2; exit 2 ;;
esac
