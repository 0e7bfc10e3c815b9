#!/usr/bin/env bash
# Daemon restart and listing benchmark, berth against containerd side by side:
#  - restart recovery: N (100) running containers, the daemon SIGKILLed and started again;
#    the time until `ctr tasks ls` answers with all N RUNNING (median of ROUNDS);
#  - `ctr images ls` and `ctr containers ls` with M (1000) images and containers;
#  - daemon RSS idle, and with N containers.
# Needs root. Each daemon has its own root, state and socket under BENCH_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-100}
M=${M:-1000}
ROUNDS=${ROUNDS:-5}
WORK=${BENCH_DIR:-/var/tmp/berth-bench-recover}
mkdir -p "$WORK"
source scripts/bench-lib.sh
trap 'cleanup_all' EXIT
cargo build --release --workspace --bins >&2
export PATH="$PWD/target/release:$PATH"

cleanup_all() {
  for s in "$BERTH_SOCK" "$CTRD_SOCK"; do
    for id in $(ctr -a "$s" tasks ls -q 2>/dev/null); do ctr -a "$s" tasks kill -s SIGKILL "$id" >/dev/null 2>&1 || true; done
  done
  sleep 1
  for s in "$BERTH_SOCK" "$CTRD_SOCK"; do
    for id in $(ctr -a "$s" tasks ls -q 2>/dev/null); do ctr -a "$s" tasks rm "$id" >/dev/null 2>&1 || true; done
  done
  cleanup_daemons
  clear_leftovers
}

rss() { awk '/VmRSS/ {print $2}' "/proc/$1/status"; }

# restart_daemon NAME : SIGKILL it and start it again on the same root; sets TOOK to the
# seconds until `ctr tasks ls` lists N running tasks.
restart_daemon() {
  local name=$1 sock pid t0 t1
  if [ "$name" = berth ]; then sock=$BERTH_SOCK; pid=${PIDS[0]}; else sock=$CTRD_SOCK; pid=${PIDS[1]}; fi
  kill -9 "$pid"; wait "$pid" 2>/dev/null || true
  while [ -e "/proc/$pid" ]; do sleep 0.01; done
  t0=$(now)
  if [ "$name" = berth ]; then
    target/release/berthd --root "$WORK/berth/root" --state "$WORK/berth/state" --address "$BERTH_SOCK" \
      --log-level warn >>"$WORK/berthd.log" 2>&1 &
    PIDS[0]=$!
  else
    containerd --config "$WORK/containerd.toml" >>"$WORK/containerd.log" 2>&1 &
    PIDS[1]=$!
  fi
  while [ "$(ctr -a "$sock" tasks ls 2>/dev/null | grep -c RUNNING || true)" -lt "$N" ]; do sleep 0.01; done
  t1=$(now)
  TOOK=$(echo "$t1 - $t0" | bc)
}

img="$WORK/busybox.tar"
make_busybox "$img"
start_berthd
start_containerd
sleep 0.5
idle_b=$(rss "${PIDS[0]}"); idle_c=$(rss "${PIDS[1]}")
REF=bench.local/busybox:latest
for s in "$BERTH_SOCK" "$CTRD_SOCK"; do ctr -a "$s" images import --base-name bench.local/busybox "$img" >/dev/null; done

echo "bench: starting $N containers in each" >&2
for i in $(seq "$N"); do
  ctr -a "$CTRD_SOCK" run -d "$REF" "rc$i" /bin/sleep 100000 >/dev/null &
  ctr -a "$BERTH_SOCK" run -d --runtime io.containerd.berth.v2 "$REF" "rc$i" /bin/sleep 100000 >/dev/null &
  if (( i % 10 == 0 )); then wait "${!}"; sleep 0.2; fi
done
while [ "$(ctr -a "$BERTH_SOCK" tasks ls | grep -c RUNNING)" -lt "$N" ] || [ "$(ctr -a "$CTRD_SOCK" tasks ls | grep -c RUNNING)" -lt "$N" ]; do sleep 0.2; done
busy_b=$(rss "${PIDS[0]}"); busy_c=$(rss "${PIDS[1]}")

rb=(); rc=()
for _ in $(seq "$ROUNDS"); do
  restart_daemon berth; rb+=("$TOOK")
  restart_daemon containerd; rc+=("$TOOK")
done
mb=$(printf '%s\n' "${rb[@]}" | median); mc=$(printf '%s\n' "${rc[@]}" | median)
echo "restart with $N running containers, SIGKILL to all $N listed RUNNING (median of $ROUNDS):"
echo "  containerd: ${mc}s   berthd: ${mb}s   ratio $(echo "scale=2; $mb / $mc" | bc)x   (target < 1 s)"
after_b=$(rss "${PIDS[0]}")

echo "bench: making $M images and containers in each" >&2
for s in "$BERTH_SOCK" "$CTRD_SOCK"; do
  seq "$M" | xargs -P 4 -I{} ctr -a "$s" images tag "$REF" "bench.local/many:{}" >/dev/null
  seq "$M" | xargs -P 4 -I{} ctr -a "$s" containers create "$REF" "m{}" >/dev/null
done
for what in images containers; do
  lb=(); lc=()
  for _ in $(seq 10); do
    t0=$(now); ctr -a "$BERTH_SOCK" "$what" ls >/dev/null; t1=$(now); lb+=("$(echo "$t1 - $t0" | bc)")
    t0=$(now); ctr -a "$CTRD_SOCK" "$what" ls >/dev/null; t1=$(now); lc+=("$(echo "$t1 - $t0" | bc)")
  done
  mb=$(printf '%s\n' "${lb[@]}" | median); mc=$(printf '%s\n' "${lc[@]}" | median)
  echo "ctr $what ls with $M+ $what (median of 10): containerd ${mc}s   berthd ${mb}s   ratio $(echo "scale=2; $mb / $mc" | bc)x   (target <= 0.5x)"
done
echo "daemon RSS: idle berthd ${idle_b} kB, containerd ${idle_c} kB (target < 15360 kB);"
echo "  with $N containers berthd ${busy_b} kB, containerd ${busy_c} kB; berthd after its restarts ${after_b} kB"
for s in "$BERTH_SOCK" "$CTRD_SOCK"; do
  seq "$M" | xargs -P 4 -I{} ctr -a "$s" containers rm "m{}" >/dev/null 2>&1 || true
done
