#!/usr/bin/env bash
# Pull benchmark: a multi-layer image (hundreds of MB gzip, tens of thousands of files, made
# from this machine's /usr) pushed to a loopback docker-registry, then pulled and unpacked
#   containerd  `ctr images pull --plain-http` against Debian's containerd 1.6 (client-side)
#   containerd2 containerd 2.3.4's ctr against containerd 2.3.4 (its Transfer service), with its
#               defaults and tuned (parallel unpacks, chunked layer fetches); left out when
#               ../shared/containerd-suite/build.sh has not built it (see bench-lib's CTRD2_BIN)
#   berth       `berth images pull --plain-http` (server-side, Transfer service)
# each from an empty root, alternating. Prints the median of RUNS runs, the ratio, and berth's
# throughput next to this machine's raw single-stream gzip decode speed.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
WORK=${BENCH_DIR:-/var/tmp/berth-bench}
# Each pull into an empty root on a filesystem of its own (see bench-lib's fresh_fs);
# FRESH_FS=0 reuses the host's filesystem as before.
export FRESH_FS=${FRESH_FS:-1}
mkdir -p "$WORK"
fresh_build=${BERTH_BIN:-yes}
source scripts/bench-lib.sh
REG_PID=""
# The registry first: cleanup_daemons waits for every background job.
stop_all() { if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; fi; cleanup_daemons; }
trap stop_all EXIT

# BERTH_BIN=DIR benches the binaries in DIR (an older build's copy) instead of a fresh build.
if [ "$fresh_build" = yes ]; then cargo build --release --workspace --bins >&2; fi
IMAGE="$WORK/unpack-image.tar"
if [ ! -f "$IMAGE" ]; then
  make_image "$IMAGE" usr/include usr/share/doc usr/share/locale usr/bin usr/share/man usr/lib/python3
fi
compressed=0
for b in $(tar -tf "$IMAGE" | grep 'blobs/sha256/.'); do
  compressed=$((compressed + $(tar -xOf "$IMAGE" "$b" | wc -c)))
done
echo "image: $((compressed / 1048576)) MiB in blobs, $(($(tar -tf "$IMAGE" | grep -c 'blobs/sha256/.') - 2)) layers"

# The registry, on loopback, with the image pushed once.
start_registry error
REF="127.0.0.1:$PORT/bench/pull:latest"
skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci-archive:$IMAGE:latest" "docker://$REF"

# Raw decode speed: every layer gunzipped by one process, serially.
blobdir="$WORK/blobs"; rm -rf "$blobdir"; mkdir -p "$blobdir"
tar -C "$blobdir" -xf "$IMAGE" blobs
t0=$(now)
for f in "$blobdir"/blobs/sha256/*; do gzip -dc "$f" >/dev/null 2>&1 || true; done
t1=$(now)
gz=$(echo "$t1 - $t0" | bc)
rm -rf "$blobdir"

# CPU-seconds of a process and its reaped children (utime+stime+cutime+cstime).
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); print ($12+$13+$14+$15)/hz}' "/proc/$1/stat"; }
# Runs a client command, adding its CPU-seconds (user+sys) to $WORK/cpu-client.
client() {
  local TIMEFORMAT='%U %S'
  if ! { time "$@" >/dev/null 2>"$WORK/client.err"; } 2>>"$WORK/cpu-client.raw"; then
    cat "$WORK/client.err" >&2; return 1
  fi
}

time_pull() { # containerd|containerd2|containerd2-tuned|berth
  local t0 t1 d0 d1 cl
  : >"$WORK/cpu-client.raw"
  if [ "$1" = containerd ]; then
    start_containerd
    d0=$(cpu_of "${PIDS[0]}")
    t0=$(now); client ctr -a "$CTRD_SOCK" images pull --plain-http "$REF"; t1=$(now)
  elif [ "$1" = containerd2 ] || [ "$1" = containerd2-tuned ]; then
    if [ "$1" = containerd2-tuned ]; then start_containerd2 tuned; else start_containerd2; fi
    d0=$(cpu_of "${PIDS[0]}")
    t0=$(now); client ctr2 images pull --plain-http "$REF"; t1=$(now)
  else
    start_berthd
    awk '/VmRSS/ {print $2}' "/proc/${PIDS[0]}/status" >>"$WORK/rss-idle"
    d0=$(cpu_of "${PIDS[0]}")
    t0=$(now); client "$BERTH_BIN/berth" -a "$BERTH_SOCK" images pull --plain-http "$REF"; t1=$(now)
    awk '/VmRSS/ {print $2}' "/proc/${PIDS[0]}/status" >>"$WORK/rss-pulled"
  fi
  d1=$(cpu_of "${PIDS[0]}")
  cl=$(awk '{s += $1 + $2} END {print s + 0}' "$WORK/cpu-client.raw")
  echo "$1 $(echo "$d1 - $d0" | bc) $cl" >>"$WORK/cpu"
  cleanup_daemons; PIDS=()
  clear_leftovers
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  echo "$t1 - $t0" | bc
}

c=(); c2=(); c2t=(); b=()
ANCHOR2=0
if have_containerd2; then ANCHOR2=1; fi
rm -f "$WORK/rss-idle" "$WORK/rss-pulled" "$WORK/cpu"
for i in $(seq "$RUNS"); do
  c+=("$(time_pull containerd)")
  if [ "$ANCHOR2" = 1 ]; then
    c2+=("$(time_pull containerd2)")
    c2t+=("$(time_pull containerd2-tuned)")
  fi
  b+=("$(time_pull berth)")
  echo "run $i: containerd 1.6 ${c[-1]}s  containerd 2.3 ${c2[-1]:-n/a}s / tuned ${c2t[-1]:-n/a}s  berth ${b[-1]}s" >&2
done
mc=$(printf '%s\n' "${c[@]}" | median)
mb=$(printf '%s\n' "${b[@]}" | median)
mib=$(echo "scale=1; $compressed / 1048576" | bc)
echo "containerd 1.6 (ctr images pull):  ${mc}s"
if [ "$ANCHOR2" = 1 ]; then
  mc2=$(printf '%s\n' "${c2[@]}" | median)
  mc2t=$(printf '%s\n' "${c2t[@]}" | median)
  echo "containerd 2.3.4 (Transfer):       ${mc2}s default, ${mc2t}s tuned"
fi
echo "berth images pull (server-side):   ${mb}s   ratio $(echo "scale=2; $mb / $mc" | bc)x of 1.6"
if [ "$ANCHOR2" = 1 ]; then
  echo "                                   ratio $(echo "scale=2; $mb / $mc2" | bc)x of 2.3 default, $(echo "scale=2; $mb / $mc2t" | bc)x of 2.3 tuned   (target <= 0.2x of tuned)"
fi
echo "berth throughput:                  $(echo "scale=1; $mib / $mb" | bc) MiB/s of gzip, pulled + verified + unpacked"
echo "raw gzip -dc, one stream:          $(echo "scale=1; $mib / $gz" | bc) MiB/s of gzip (${gz}s for all layers, decode only)"
echo "berthd RSS:                        $(median <"$WORK/rss-idle") kB idle, $(median <"$WORK/rss-pulled") kB after the pull (targets < 15360 and < 25600 kB)"
echo "CPU-seconds per pull, medians (daemon and what it reaped + client; the machine has $(nproc) cores):"
for k in containerd containerd2 containerd2-tuned berth; do
  grep -q "^$k " "$WORK/cpu" || continue
  printf '  %-18s daemon %6.2f  client %5.2f\n' "$k" "$(grep "^$k " "$WORK/cpu" | awk '{print $2}' | median)" "$(grep "^$k " "$WORK/cpu" | awk '{print $3}' | median)"
done
