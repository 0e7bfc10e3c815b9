#!/usr/bin/env bash
# Lazy-pull benchmark (issue #28): time from `berth images pull` to a container's first output,
# for an image whose entrypoint reads well under 10% of its bytes (busybox, 200 MiB of random
# files and the one small file it prints, in one layer):
#   lazy  the image converted to eStargz, pulled into containerd's stargz snapshotter (a proxy
#         plugin of berthd) and run: berth fetches no layer; the snapshotter reads the files
#         from the registry when they are opened
#   full  the same image (plain gzip) pulled whole into berth's overlayfs and run
# each from empty roots (berthd's and the snapshotter's), alternating, on a loopback
# docker-registry. Prints the median of RUNS runs, the ratio, and the bytes the registry served.
#
# Needs containerd-stargz-grpc and ctr-remote, which are not in Debian: build them from
# containerd/stargz-snapshotter (docs/images.md, "Remote snapshotters") and name their
# directory in BERTH_STARGZ_BIN_DIR. Without them the bench says so and exits 0. Also needs
# docker-registry, skopeo, busybox-static and fuse (fusermount), all Debian's.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
WORK=${BENCH_DIR:-/var/tmp/berth-bench-lazy}
STARGZ=${BERTH_STARGZ_BIN_DIR:-}
if [ -z "$STARGZ" ] || [ ! -x "$STARGZ/containerd-stargz-grpc" ] || [ ! -x "$STARGZ/ctr-remote" ]; then
  echo "bench-lazy-pull: skipped: set BERTH_STARGZ_BIN_DIR to a directory with containerd-stargz-grpc and ctr-remote" >&2
  exit 0
fi
for tool in docker-registry skopeo fusermount; do
  command -v "$tool" >/dev/null || { echo "bench-lazy-pull: $tool is missing (apt-get install docker-registry skopeo fuse)" >&2; exit 1; }
done
mkdir -p "$WORK"
source scripts/bench-lib.sh
BERTH=target/release/berth
HELLO="hello from a lazy layer"
REG_PID="" SG_PID="" BD_PID=""

# Stops this run's daemons (by pid) and drops what they left mounted under WORK.
stop_run() {
  local p
  for p in $BD_PID $SG_PID; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  BD_PID="" SG_PID=""
  awk -v w="$WORK/" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
}
stop_all() { stop_run; if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi; }
trap stop_all EXIT

# BUILD=0: the release binaries are built already.
if [ "${BUILD:-1}" = 1 ]; then cargo build --release -p berth-cmd --bins >&2; fi

# The image, as an OCI layout made here once.
make_lazy_image() {
  local lay="$WORK/layout" r="$WORK/rootfs" i
  [ -f "$lay/index.json" ] && return 0
  rm -rf "$lay" "$r"; mkdir -p "$lay/blobs/sha256" "$r/bin" "$r/data" "$r/etc" "$r/proc" "$r/sys" "$r/dev" "$r/tmp"
  cp /bin/busybox "$r/bin/"; for a in sh cat echo; do ln -s busybox "$r/bin/$a"; done
  echo "$HELLO" >"$r/data/hello.txt"
  for i in $(seq -w 1 200); do head -c 1048576 /dev/urandom >"$r/data/blob$i"; done
  tar -C "$r" -cf "$WORK/l.tar" .; gzip -1 -c "$WORK/l.tar" >"$WORK/l.tgz"
  local ld di cfg cd_ man md
  ld=$(sha256sum "$WORK/l.tgz" | cut -d' ' -f1); di=$(sha256sum "$WORK/l.tar" | cut -d' ' -f1)
  mv "$WORK/l.tgz" "$lay/blobs/sha256/$ld"; rm -rf "$WORK/l.tar" "$r"
  cfg="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Entrypoint\":[\"/bin/cat\"],\"Cmd\":[\"/data/hello.txt\"],\"Env\":[\"PATH=/bin\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$di\"]}}"
  cd_=$(printf '%s' "$cfg" | sha256sum | cut -d' ' -f1); printf '%s' "$cfg" >"$lay/blobs/sha256/$cd_"
  man="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cd_\",\"size\":${#cfg}},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$ld\",\"size\":$(stat -c %s "$lay/blobs/sha256/$ld")}]}"
  md=$(printf '%s' "$man" | sha256sum | cut -d' ' -f1); printf '%s' "$man" >"$lay/blobs/sha256/$md"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"plain"}}]}' "$md" "${#man}" >"$lay/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$lay/oci-layout"
}
make_lazy_image
layer_bytes=$(find "$WORK/layout/blobs" -type f -size +1M -printf '%s\n' | head -1)

# The registry (its access log counts what each run fetched), the plain image and its eStargz.
start_registry info
PLAIN="127.0.0.1:$PORT/bench/lazy:plain"
ESGZ="127.0.0.1:$PORT/bench/lazy:esgz"
skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci:$WORK/layout:plain" "docker://$PLAIN"
"$STARGZ/ctr-remote" image optimize --no-optimize --plain-http "http://$PLAIN" "http://$ESGZ" >"$WORK/convert.log" 2>&1 \
  || { echo "bench-lazy-pull: ctr-remote could not convert (see $WORK/convert.log)" >&2; exit 1; }

# berthd with the stargz snapshotter as proxy plugin "stargz", both on empty roots.
start_run() {
  stop_run
  rm -rf "$WORK/berth" "$WORK/stargz"; mkdir -p "$WORK/berth" "$WORK/stargz"
  printf 'noprefetch = true\nno_background_fetch = true\n' >"$WORK/stargz/config.toml"
  "$STARGZ/containerd-stargz-grpc" --root "$WORK/stargz/root" --address "$WORK/stargz/sock" \
    --config "$WORK/stargz/config.toml" --log-level warn >"$WORK/stargz.log" 2>&1 &
  SG_PID=$!
  wait_socket "$WORK/stargz/sock"
  printf '[proxy_plugins.stargz]\ntype = "snapshot"\naddress = "%s"\n' "$WORK/stargz/sock" >"$WORK/berth/config.toml"
  target/release/berthd -c "$WORK/berth/config.toml" --root "$WORK/berth/root" --state "$WORK/berth/state" \
    --address "$BERTH_SOCK" --log-level warn >"$WORK/berthd.log" 2>&1 &
  BD_PID=$!
  wait_socket "$BERTH_SOCK"
}

served() { awk '$6 == "\"GET" && $7 ~ /\/blobs\// && $10 ~ /^[0-9]+$/ {s += $10} END {print s + 0}' "$WORK/registry.log"; }

time_first_output() { # lazy|full: appends to WORK/KIND the seconds from the pull to the
  # container's first line and the bytes the registry served meanwhile
  local flags=() ref=$PLAIN t0 t1 out line before
  if [ "$1" = lazy ]; then flags=(--snapshotter stargz); ref=$ESGZ; fi
  start_run
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  before=$(served)
  t0=$(now)
  # The reader notes the time it gets the first line (the container's removal comes after).
  out=$( { "$BERTH" -a "$BERTH_SOCK" images pull --plain-http "${flags[@]}" "$ref" >/dev/null
           "$BERTH" -a "$BERTH_SOCK" run --rm "${flags[@]}" "$ref"; } \
         | { IFS= read -r l; now; printf '%s\n' "$l"; cat >/dev/null; } ) || true
  t1=${out%%$'\n'*}; line=${out#*$'\n'}
  [ "$line" = "$HELLO" ] || { echo "bench-lazy-pull: $1 run printed '$line'" >&2; exit 1; }
  echo "$(echo "$t1 - $t0" | bc) $(( $(served) - before ))" >>"$WORK/$1"
}

: >"$WORK/lazy"; : >"$WORK/full"
for i in $(seq "$RUNS"); do
  for kind in lazy full; do
    time_first_output "$kind"
    r=$(tail -1 "$WORK/$kind")
    echo "run $i $kind: ${r% *} s, registry served $(( ${r#* } / 1024 )) KiB" >&2
  done
done
stop_run

lazy=$(cut -d' ' -f1 "$WORK/lazy" | median); full=$(cut -d' ' -f1 "$WORK/full" | median)
lazy_b=$(cut -d' ' -f2 "$WORK/lazy" | median); full_b=$(cut -d' ' -f2 "$WORK/full" | median)
echo "image: one layer of $((layer_bytes / 1048576)) MiB (gzip); the entrypoint reads $(( ${#HELLO} + 1 )) bytes of it and busybox"
printf 'lazy  eStargz, stargz snapshotter  %6.2f s   registry served %6.1f MiB\n' "$lazy" "$(echo "$lazy_b / 1048576" | bc -l)"
printf 'full  gzip, overlayfs              %6.2f s   registry served %6.1f MiB\n' "$full" "$(echo "$full_b / 1048576" | bc -l)"
printf 'lazy / full: %.2fx (median of %d runs)\n' "$(echo "$lazy / $full" | bc -l)" "$RUNS"
