#!/usr/bin/env bash
# The host objects tests may leave behind, one per line, in a stable order:
#   leftovers.sh list              print them
#   leftovers.sh diff BEFORE       print those not in the list BEFORE (a file); exit 1 if any
# Bridges (berthN, br-…, or carrying a berth alias), veths, network namespaces (named, and any
# nsfs mount), iptables/ip6tables rules and chains of CNI or berth, mounts under the temporary
# directory, containers' cgroups under berth/, and shim processes. A diff waits up to 10 s for what goes by itself (a veth after
# its namespace, a shim after its container).
set -euo pipefail

tmp="${TMPDIR:-/tmp}"

list() {
  local n alias
  for d in /sys/class/net/*; do
    n=${d##*/}
    alias=$(cat "$d/ifalias" 2>/dev/null || true)
    if [[ -d $d/bridge ]] && [[ $n == berth* || $n == br-* || $alias == berth:* ]]; then
      echo "bridge $n $alias"
    fi
  done
  ip -o link show type veth 2>/dev/null | awk -F': ' '{ split($2, a, "@"); print "veth " a[1] }'
  ip netns list 2>/dev/null | awk '{ print "netns " $1 }'
  awk '$9 == "nsfs" { print "netns-pin " $5 }' /proc/self/mountinfo
  for t in iptables ip6tables; do
    command -v "$t-save" >/dev/null || continue
    "$t-save" 2>/dev/null | grep -E 'CNI-|berth' | grep -v '^#' | sed -E "s/\[[0-9]+:[0-9]+\]//; s/^/$t /" || true
  done
  awk -v t="$tmp/" 'index($5, t) == 1 { print "mount " $5 }' /proc/self/mountinfo
  for d in /sys/fs/cgroup/berth/*/* /sys/fs/cgroup/*/berth/*/*; do
    [[ -d $d ]] && echo "cgroup $d"
  done
  for p in /proc/[0-9]*; do
    local argv0
    argv0=$( { tr '\0' '\n' <"$p/cmdline" | head -1; } 2>/dev/null || true)
    if [[ ${argv0##*/} == containerd-shim* ]]; then
      echo "shim ${p#/proc/} $( { tr '\0' ' ' <"$p/cmdline"; } 2>/dev/null || true)"
    fi
  done
}

case "${1:-list}" in
  list)
    list | LC_ALL=C sort -u
    ;;
  diff)
    before=${2:?usage: leftovers.sh diff BEFORE}
    for _ in $(seq 50); do
      leaked=$(LC_ALL=C comm -13 "$before" <(list | LC_ALL=C sort -u))
      [[ -z $leaked ]] && exit 0
      sleep 0.2
    done
    echo "left on the host by the tests:" >&2
    echo "$leaked" >&2
    exit 1
    ;;
  *)
    echo "usage: leftovers.sh list | diff BEFORE" >&2
    exit 2
    ;;
esac
