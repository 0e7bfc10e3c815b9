#!/usr/bin/env bash
# A/B of two berth builds on `berth containers run --rm --network none IMAGE ID /bin/true`, for a
# shared, loaded machine: each build's berthd on its own root, state and socket, in its own
# cpuacct cgroup that also holds its shims, their zygotes and workers, and the clients (so the
# CPU of a whole run is counted: client + berthd + shim + runtime; a container's own processes
# once moved into their cgroup are not). Alternating blocks of BLOCK runs, ROUNDS rounds; per
# block the median wall time and the CPU per run (cpuacct.usage). Needs root and cgroup v1's
# cpuacct hierarchy at /sys/fs/cgroup/cpuacct.
# Usage: A=/dir/of/old/binaries B=/dir/of/new/binaries [BLOCK=20 ROUNDS=3] scripts/bench-run-cpu-ab.sh
# Each directory holds berthd, berth and containerd-shim-berth-v2 (copies: not target/).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${A:?A=directory of the first build's binaries}" "${B:?B=directory of the second build's binaries}"
BLOCK=${BLOCK:-20}
ROUNDS=${ROUNDS:-3}
WORK=${BENCH_DIR:-/var/tmp/berth-bench-run-cpu-ab}
CG=/sys/fs/cgroup/cpuacct
[ -d "$CG" ] || { echo "bench: no cgroup v1 cpuacct hierarchy at $CG" >&2; exit 1; }
rm -rf "$WORK"; mkdir -p "$WORK"
source scripts/bench-lib.sh
make_busybox "$WORK/busybox.tar"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  sleep 0.5
  for n in a b; do rmdir "$CG/berth-bench-$n" 2>/dev/null || true; done
}
trap cleanup EXIT
start() { # NAME BINDIR
  mkdir -p "$WORK/$1" "$CG/berth-bench-$1"
  (
    echo "$BASHPID" >"$CG/berth-bench-$1/cgroup.procs"
    exec env PATH="$2:$PATH" "$2/berthd" --root "$WORK/$1/root" --state "$WORK/$1/state" \
      --address "$WORK/$1/b.sock" --log-level warn >"$WORK/$1/log" 2>&1
  ) &
  pids+=($!)
  wait_socket "$WORK/$1/b.sock"
  ctr -a "$WORK/$1/b.sock" images import --base-name bench.local/busybox "$WORK/busybox.tar" >/dev/null
  for i in 1 2 3; do
    "$2/berth" -a "$WORK/$1/b.sock" containers run --rm --network none bench.local/busybox:latest "warm$i" /bin/true
  done
}
start a "$A"
start b "$B"
block() { # NAME BINDIR ROUND : appends the block's times (us) and CPU per run (us)
  local n=$1 bin=$2 r=$3
  bash -c '
    n=$1 bin=$2 r=$3 work=$4 cg=$5 runs=$6
    echo $$ >"$cg/cgroup.procs"
    u0=$(cat "$cg/cpuacct.usage")
    for i in $(seq "$runs"); do
      s=$(date +%s%N)
      "$bin/berth" -a "$work/$n/b.sock" containers run --rm --network none \
        bench.local/busybox:latest "r$r-$i" /bin/true >/dev/null || echo "bench: run failed" >&2
      echo $(( ($(date +%s%N) - s) / 1000 )) >>"$work/$n.times"
      echo $(( ($(date +%s%N) - s) / 1000 )) >>"$work/$n.times.$r"
    done
    u1=$(cat "$cg/cpuacct.usage")
    echo $(( (u1 - u0) / runs / 1000 )) >>"$work/$n.cpu"
  ' _ "$n" "$bin" "$r" "$WORK" "$CG/berth-bench-$n" "$BLOCK"
}
median_ms() { sort -n "$@" | awk '{v[NR]=$1} END {printf "%.1f", v[int((NR+1)/2)]/1000}'; }
for r in $(seq "$ROUNDS"); do
  load=$(cut -d' ' -f1 /proc/loadavg)
  block a "$A" "$r"
  block b "$B" "$r"
  echo "round $r (load $load): A $(median_ms "$WORK/a.times.$r") ms, $(tail -1 "$WORK/a.cpu") us CPU/run | B $(median_ms "$WORK/b.times.$r") ms, $(tail -1 "$WORK/b.cpu") us CPU/run"
done
echo "all $((ROUNDS * BLOCK)) runs each: A median $(median_ms "$WORK/a.times") ms, B median $(median_ms "$WORK/b.times") ms; CPU us/run per block: A $(tr '\n' ' ' <"$WORK/a.cpu")| B $(tr '\n' ' ' <"$WORK/b.cpu")"
uptime
