#!/usr/bin/env bash
# Container start benchmark: `run --rm IMAGE ID /bin/true` latency and N containers started
# at once, berth (berthd + containerd-shim-berth-v2) against containerd (+ its runc shim),
# side by side, alternating. Also reports shim and daemon memory (RSS). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-15}
N=${N:-10}
WORK=${BENCH_DIR:-/var/tmp/berth-bench-run}
mkdir -p "$WORK"
source scripts/bench-lib.sh
trap cleanup_daemons EXIT
cargo build --release --workspace --bins >&2
export PATH="$PWD/target/release:$PATH"

img="$WORK/busybox.tar"
make_busybox "$img"

start_berthd
start_containerd
ANCHOR2=0
if have_containerd2; then ANCHOR2=1; start_containerd2; fi
REF=bench.local/busybox:latest
for s in "$BERTH_SOCK" "$CTRD_SOCK"; do ctr -a "$s" images import --base-name bench.local/busybox "$img" >/dev/null; done
if [ "$ANCHOR2" = 1 ]; then ctr2 images import --base-name bench.local/busybox "$img" >/dev/null; fi

# Each row: a container with its own network namespace holding only loopback (ctr's default),
# except "default bridge": berth's own default network (an address, a route, NAT).
c=(); c2=(); b=(); bbr=(); bc=()
for i in $(seq "$RUNS"); do
  t0=$(now); ctr -a "$CTRD_SOCK" run --rm "$REF" "c$i" /bin/true; t1=$(now); c+=("$(echo "$t1 - $t0" | bc)")
  if [ "$ANCHOR2" = 1 ]; then
    t0=$(now); ctr2 run --rm "$REF" "c2$i" /bin/true; t1=$(now); c2+=("$(echo "$t1 - $t0" | bc)")
  fi
  t0=$(now); target/release/berth -a "$BERTH_SOCK" containers run --rm --network none "$REF" "b$i" /bin/true; t1=$(now); b+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now); target/release/berth -a "$BERTH_SOCK" run --rm "$REF" /bin/true; t1=$(now); bbr+=("$(echo "$t1 - $t0" | bc)")
  t0=$(now); ctr -a "$BERTH_SOCK" run --rm --runtime io.containerd.berth.v2 "$REF" "x$i" /bin/true; t1=$(now); bc+=("$(echo "$t1 - $t0" | bc)")
done
mc=$(printf '%s\n' "${c[@]}" | median); mb=$(printf '%s\n' "${b[@]}" | median); mx=$(printf '%s\n' "${bc[@]}" | median)
mbr=$(printf '%s\n' "${bbr[@]}" | median)
echo "run --rm /bin/true, median of $RUNS:"
echo "  containerd 1.6 + runc shim (ctr run):      ${mc}s"
if [ "$ANCHOR2" = 1 ]; then
  mc2=$(printf '%s\n' "${c2[@]}" | median)
  echo "  containerd 2.3.4 + its runc shim:          ${mc2}s"
fi
echo "  berthd + berth shim (berth run, none):     ${mb}s   ratio $(echo "scale=2; $mb / $mc" | bc)x of 1.6   (target <= 0.3x)"
if [ "$ANCHOR2" = 1 ]; then
  echo "                                             ratio $(echo "scale=2; $mb / $mc2" | bc)x of 2.3.4"
fi
echo "  berth run --rm, default bridge network:    ${mbr}s   $(echo "scale=2; $mbr / $mb" | bc)x of --network none   (target <= 2x)"
echo "  berthd + berth shim (the same ctr run):    ${mx}s   ratio $(echo "scale=2; $mx / $mc" | bc)x of 1.6"

rss_of() { # pids -> their total RSS in kB
  local t=0 p; for p in "$@"; do t=$((t + $(awk '/VmRSS/ {print $2}' /proc/$p/status))); done; echo $t
}
pss_of() { # pids -> their total PSS in kB (shared pages split among the processes sharing them)
  local t=0 p; for p in "$@"; do t=$((t + $(awk '/^Pss:/ {print $2}' /proc/$p/smaps_rollup))); done; echo $t
}
shim_pids() { # pattern -> the shims it matches and their children (berth's native-runtime zygote)
  local p; for p in $(pgrep -f "$1" || true); do echo "$p"; pgrep -P "$p" -f native-runtime-zygote || true; done
}
# N containers started at once, ROUNDS_N times, alternating (median); the last round's
# containers stay up for the memory figures. (Wait on the runs only: the daemons are
# background jobs of this shell too.)
ROUNDS_N=${ROUNDS_N:-5}
stop_n() { # SOCK PREFIX : kills and removes the N containers PREFIX1..PREFIXN
  local i
  for i in $(seq "$N"); do ctr -a "$1" tasks kill -s SIGKILL "$2$i" >/dev/null 2>&1 || true; done
  for i in $(seq "$N"); do
    for _ in $(seq 50); do ctr -a "$1" tasks rm "$2$i" >/dev/null 2>&1 && break; ctr -a "$1" tasks ls -q 2>/dev/null | grep -qx "$2$i" || break; sleep 0.05; done
    ctr -a "$1" containers rm "$2$i" >/dev/null 2>&1 || true
  done
}
nc=(); nb=()
for r in $(seq "$ROUNDS_N"); do
  sleep 0.5
  t0=$(now); jobs_=()
  for i in $(seq "$N"); do ctr -a "$CTRD_SOCK" run -d "$REF" "cn$i" /bin/sleep 1000 >/dev/null & jobs_+=($!); done
  wait "${jobs_[@]}"
  t1=$(now); jobs_=()
  sleep 0.5
  t1b=$(now)
  for i in $(seq "$N"); do target/release/berth -a "$BERTH_SOCK" containers run -d --network none "$REF" "bn$i" /bin/sleep 1000 >/dev/null & jobs_+=($!); done
  wait "${jobs_[@]}"
  t2=$(now)
  nc+=("$(echo "$t1 - $t0" | bc)"); nb+=("$(echo "$t2 - $t1b" | bc)")
  if [ "$r" -lt "$ROUNDS_N" ]; then stop_n "$CTRD_SOCK" cn; stop_n "$BERTH_SOCK" bn; fi
done
mnc=$(printf '%s\n' "${nc[@]}" | median); mnb=$(printf '%s\n' "${nb[@]}" | median)
# shellcheck disable=SC2046 # the pid lists split into arguments
{
  sc=$(rss_of $(shim_pids "containerd-shim-runc-v2 -namespace default -id cn")); sb=$(rss_of $(shim_pids "containerd-shim-berth-v2 .*-id bn[0-9]+ "))
  pc=$(pss_of $(shim_pids "containerd-shim-runc-v2 -namespace default -id cn")); pb=$(pss_of $(shim_pids "containerd-shim-berth-v2 .*-id bn[0-9]+ "))
  dc=$(rss_of $(pgrep -f "containerd --config $WORK")); db=$(rss_of $(pgrep -f "berthd --root $WORK"))
}
echo "$N containers started at once, median of $ROUNDS_N:"
echo "  containerd: ${mnc}s   berth: ${mnb}s   ratio $(echo "scale=2; $mnb / $mnc" | bc)x (target <= 0.3x)   (each round: containerd ${nc[*]}; berth ${nb[*]})"
echo "  RSS per shim (berth: with its native-runtime zygote): containerd-shim-runc-v2 $((sc / N)) kB, containerd-shim-berth-v2 $((sb / N)) kB   (target < 3072 kB)"
echo "  PSS per shim (berth: with its zygote): containerd-shim-runc-v2 $((pc / N)) kB, containerd-shim-berth-v2 $((pb / N)) kB"
echo "  daemon RSS with $N containers: containerd $dc kB, berthd $db kB"
stop_n "$CTRD_SOCK" cn; stop_n "$BERTH_SOCK" bn
