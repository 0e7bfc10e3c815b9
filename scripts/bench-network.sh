#!/usr/bin/env bash
# What a network costs a container start: `berth run --rm IMAGE ID /bin/true` with
# `--network none`, on the default bridge network joined in-process (berth's own path), and
# on the same default network joined through the CNI bridge, portmap and firewall plugins
# (a second berthd with `[network] in_process_bridge = false`, the path berth took before),
# one release build, alternating, median of RUNS (default 21); and, from berthd's own timing
# (`joined its networks` / `left its networks`, elapsed_us), the median join and leave of each
# bridge path, which a loaded machine disturbs less than the whole run. With PERF=1, also where the
# CPU goes on each bridge path: `perf record` of the daemon and every process it starts
# (plugins, iptables, shims, the container) across 20 runs, split by command (`perf report
# --sort comm`; samples at 999 Hz, so ~1 ms of CPU each), written to $WORK/perf-{inproc,cni}.txt. NO_BUILD=1 uses the
# release binaries as they are. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-21}
WORK=${BENCH_DIR:-/var/tmp/berth-bench-net}
mkdir -p "$WORK"
source scripts/bench-lib.sh
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release -p berth-cmd -p berth-shim --bins >&2
export PATH="$PWD/target/release:$PATH"
REF=bench.local/busybox:latest

# Each daemon leaves with its bridge, veths and rules (`berthd cleanup`).
finish() {
  cleanup_daemons
  for d in inproc cni; do
    [ -d "$WORK/$d" ] || continue
    target/release/berthd --root "$WORK/$d/root" --state "$WORK/$d/state" --address "$WORK/$d/sock" cleanup >/dev/null 2>&1 || true
  done
}
trap finish EXIT

image="$WORK/busybox.tar"
make_busybox "$image"

start() { # NAME IN_PROCESS
  local d="$WORK/$1"
  rm -rf "$d"; mkdir -p "$d"
  printf '[network]\nin_process_bridge = %s\n' "$2" >"$d/config.toml"
  target/release/berthd --config "$d/config.toml" --root "$d/root" --state "$d/state" \
    --address "$d/sock" --log-level "warn,berth_services::core::network::attach=debug" \
    >"$d/berthd.log" 2>&1 &
  PIDS+=($!)
  wait_socket "$d/sock"
  target/release/berth -a "$d/sock" images import --base-name bench.local/busybox "$image" >/dev/null
}
clear_leftovers
start inproc true
start cni false

run() { # MODE ID : one `run --rm`, timed; prints seconds
  local sock="$WORK/inproc/sock" net=()
  case $1 in
    none) net=(--network none) ;;
    cni) sock="$WORK/cni/sock" ;;
  esac
  local t0 t1
  t0=$(now)
  target/release/berth -a "$sock" containers run --rm "${net[@]}" "$REF" "$2" /bin/true
  t1=$(now)
  echo "$t1 - $t0" | bc
}

# The first join makes the network (its bridge and rules): not what is measured.
for m in none inproc cni; do run "$m" "warm-$m" >/dev/null; done

declare -A times
for i in $(seq "$RUNS"); do
  for m in none inproc cni; do times[$m]+="$(run "$m" "$m$i") "; done
done
med() { printf '%s\n' ${times[$1]} | median; }
none=$(med none); inproc=$(med inproc); cni=$(med cni)
echo "run --rm /bin/true, median of $RUNS (s), alternating:"
echo "  --network none:                        $none"
echo "  default bridge, in-process:            $inproc   ($(echo "scale=2; $inproc / $none" | bc)x none; target <= 2x)"
echo "  default bridge, CNI plugins (before):  $cni   ($(echo "scale=2; $cni / $none" | bc)x none)"
span() { # DAEMON MESSAGE : median elapsed_us of the measured runs' lines, in ms
  sed 's/\x1b\[[0-9;]*m//g' "$WORK/$1/berthd.log" | grep "$2" | grep -v 'id="\?warm' | grep -o 'elapsed_us=[0-9]*' | cut -d= -f2 |
    median | awk '{printf "%.1f", $1 / 1000}'
}
echo "berthd's own timing, median (ms):"
for d in inproc cni; do
  echo "  $d: join $(span "$d" 'joined its networks'), leave $(span "$d" 'left its networks')"
done

if [ "${PERF:-0}" = 1 ]; then
  pid_of=([0]="${PIDS[0]}" [1]="${PIDS[1]}")
  for m in inproc cni; do
    p=${pid_of[0]}; [ "$m" = cni ] && p=${pid_of[1]}
    perf record -q -F 999 -p "$p" -o "$WORK/perf-$m.data" &
    perf_pid=$!
    sleep 0.5
    for i in $(seq 20); do run "$m" "p$m$i" >/dev/null; done
    kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
    perf report -i "$WORK/perf-$m.data" --sort comm -F overhead,sample,comm --stdio 2>/dev/null |
      grep -v '^$' | head -30 >"$WORK/perf-$m.txt"
    echo "perf split, 20 runs on the $m path ($WORK/perf-$m.txt):"
    cat "$WORK/perf-$m.txt"
  done
fi
