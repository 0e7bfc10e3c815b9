#!/bin/bash
# containerd 2.3.4 on berth's snapshotter: the shared kit's containerd build, configured with
# berth-snapshotter as its proxy plugin `berth`, runs a busybox container through it, then
# (unless SUITE=0) the kit's client suite with TEST_SNAPSHOTTER=berth, so every image the suite
# unpacks and every container rootfs it prepares goes through berth's snapshotter.
#
# Usage (root): scripts/containerd-on-berth-snapshotter.sh [client.test flags, e.g. -test.run 'TestImagePull']
# Environment:
#   KIT          the containerd-suite kit (default ../shared/containerd-suite beside this checkout)
#   CONTAINERD_SUITE_DIR  the kit's work dir (default /tmp/containerd-suite); its bin/ must hold
#                a build (the kit's build.sh); without one this script says so and exits 0
#   SNAPSHOTTER  what berth-snapshotter serves: overlayfs (default) or native
#   BERTH_SNAPSHOTTER  the binary (default target/debug/berth-snapshotter, else on PATH)
#   SUITE        1 (default): run the suite after the container; 0: stop after it
# Builds and fetches nothing; images come from the kit's images.py (Debian's busybox-static,
# pushed to a loopback registry it starts).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
KIT=${KIT:-$here/../shared/containerd-suite}
WORK=${CONTAINERD_SUITE_DIR:-/tmp/containerd-suite}
BIN=$WORK/bin
SNAPSHOTTER=${SNAPSHOTTER:-overlayfs}
REGISTRY=${REGISTRY:-127.0.0.1:5050}
export CONTAINERD_SUITE_DIR=$WORK REGISTRY

say() { echo "[containerd-on-berth] $*" >&2; }
[ "$(id -u)" = 0 ] || { say "needs root (containers run)"; exit 2; }
for f in "$BIN/containerd" "$BIN/ctr" "$BIN/containerd-shim-runc-v2"; do
    [ -x "$f" ] || { say "skipped: no $f (build it with $KIT/build.sh)"; exit 0; }
done
bs=${BERTH_SNAPSHOTTER:-$here/target/debug/berth-snapshotter}
[ -x "$bs" ] || bs=$(command -v berth-snapshotter) ||
    { say "no berth-snapshotter: cargo build -p berth-cmd --bins"; exit 2; }

D=$(mktemp -d /tmp/ctrd-berth.XXXXXX)
chmod 0711 "$D"
pids=()
finish() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
    awk -v d="$D/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r |
        while read -r m; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; done
    [ -n "${KEEP:-}" ] && { say "kept $D"; return; }
    rm -rf --one-file-system "$D"
}
trap finish EXIT

"$bs" --snapshotter "$SNAPSHOTTER" --root "$D/berth-snapshotter" --address "$D/berth.sock" \
    >"$D/berth-snapshotter.log" 2>&1 &
pids+=($!)
cat >"$D/config.toml" <<EOF
version = 3
root = "$D/root"
state = "$D/state"
[grpc]
  address = "$D/c.sock"
[debug]
  address = "$D/debug.sock"
[proxy_plugins.berth]
  type = "snapshot"
  address = "$D/berth.sock"
# Transfer (ctr pull) unpacks only into snapshotters named here; overlayfs stays the default.
[plugins.'io.containerd.transfer.v1.local']
  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = "linux/amd64"
    snapshotter = "overlayfs"
  [[plugins.'io.containerd.transfer.v1.local'.unpack_config]]
    platform = "linux/amd64"
    snapshotter = "berth"
EOF
PATH=$BIN/fp:$BIN:$PATH setsid "$BIN/containerd" --config "$D/config.toml" >"$D/containerd.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do [ -S "$D/c.sock" ] && [ -S "$D/berth.sock" ] && break; sleep 0.1; done
[ -S "$D/c.sock" ] || { say "containerd did not start:"; tail -20 "$D/containerd.log" >&2; exit 2; }
ctr=("$BIN/ctr" --address "$D/c.sock")

say "containerd $("${ctr[@]}" version | awk '/Server:/{s=1} s && /Version:/{print $2; exit}'), berth-snapshotter ($SNAPSHOTTER) as proxy plugin 'berth'"
"${ctr[@]}" plugins ls | awk 'NR == 1 || $2 == "berth"'
python3 "$KIT/images.py" >&2
image=$(awk -F'"' '/^BusyBox *=/{print $2}' "$WORK/images.toml")
[ -n "$image" ] || { say "no busybox in $WORK/images.toml"; exit 2; }
"${ctr[@]}" images pull --plain-http --snapshotter berth "$image" >/dev/null
say "ctr run --snapshotter berth $image:"
"${ctr[@]}" run --rm --snapshotter berth "$image" on-berth \
    sh -c 'echo "hello from a rootfs berth-snapshotter prepared"; cat /proc/self/mountinfo | head -1'
"${ctr[@]}" snapshots --snapshotter berth ls
"${ctr[@]}" images rm "$image" >/dev/null

[ "${SUITE:-1}" = 1 ] || exit 0
say "the client suite with TEST_SNAPSHOTTER=berth"
TEST_SNAPSHOTTER=berth BERTH_WORKAROUND_NS=0 "$KIT/run.sh" "$D/c.sock" "$@"
