#!/usr/bin/env bash
# bench-cri.sh — the CRI pod lifecycle timed through crictl, berth beside containerd 1.6 and
# containerd 2.3.4 on this machine: runp, create, start, exec (streaming), exec -s (ExecSync),
# stop, stopp, rmp; medians over ROUNDS and berth/containerd ratios. Both containerds get the
# kit's configuration (same CNI conflist, sandbox image and registry); 2.3.4 reads it through its
# own version-2 migration.
# Then berth-bench-cri times the same lifecycle per RPC over one gRPC connection on each
# endpoint (no crictl start-up in those figures), and crictl's own floor (`crictl version`) is
# taken off the crictl medians: two more tables, in ms.
#
# Usage (root): CRICTL=/path/to/crictl scripts/bench-cri.sh [ROUNDS]
#   KIT       the CRI test kit (registry, images, containerd anchor) [/work/shared/cri]
#   BERTHD    the berthd binary [target/release/berthd]
#   CTRD2_BIN containerd 2.3.4's binaries from ../shared/containerd-suite/build.sh
#             [$CONTAINERD_SUITE_DIR/bin or /tmp/containerd-suite/bin]; its column is left out
#             when they are absent
#   BENCH     the berth-bench-cri binary [target/release/berth-bench-cri]; the gRPC table is
#             left out when it is absent
#   GRPC_BLOCKS  berth-bench-cri runs of ROUNDS lifecycles per endpoint; berth's and 2.3.4's
#             alternate [2]
#   CNI_BRIDGE, CNI_SUBNET  a bridge name and subnet of your own in place of the kit's
#             cni-berth0 and 10.88.0.0/16 (its conflist is rewritten after each render)
# crictl is cri-tools v1.36.0, built by you; nothing of it lives in this repository.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-10}
KIT=${KIT:-/work/shared/cri}
BERTHD=${BERTHD:-target/release/berthd}
BENCH=${BENCH:-target/release/berth-bench-cri}
GRPC_BLOCKS=${GRPC_BLOCKS:-2}
CNI_BRIDGE=${CNI_BRIDGE:-}
CNI_SUBNET=${CNI_SUBNET:-}
CRICTL=${CRICTL:-$(command -v crictl || true)}
[ -x "$CRICTL" ] || { echo "set CRICTL to a crictl binary (cri-tools v1.36.0)" >&2; exit 2; }
[ -x "$BERTHD" ] || { echo "$BERTHD is missing: cargo build --release" >&2; exit 2; }
[ -x "$BENCH" ] || echo "no $BENCH (cargo build --release -p berth-cmd --bin berth-bench-cri): the gRPC-only table is left out" >&2
export CRI_TEST_DIR=${CRI_TEST_DIR:-/tmp/berth-cri-test}
CONFLIST=$CRI_TEST_DIR/cni/net.d/10-berth-test.conflist
# own_cni: the kit's conflist (rendered again by every kit script) on CNI_BRIDGE/CNI_SUBNET.
own_cni() {
    [ -n "$CNI_BRIDGE" ] && sed -i "s#\"cni-berth0\"#\"$CNI_BRIDGE\"#" "$CONFLIST"
    [ -n "$CNI_SUBNET" ] && sed -i "s#10\.88\.0\.0/16#$CNI_SUBNET#" "$CONFLIST"
    return 0
}
"$KIT/write-runtime-config.sh" >/dev/null
own_cni
"$KIT/prepare-images.sh" >/dev/null 2>&1 || true
IMG=registry.k8s.io/e2e-test-images/busybox:1.29-2

W=$(mktemp -d /tmp/bench-cri.XXXXXX)
BPID=
C2PID=
CTRD2_BIN=${CTRD2_BIN:-${CONTAINERD_SUITE_DIR:-/tmp/containerd-suite}/bin}
cleanup() {
    [ -n "$BPID" ] && kill "$BPID" 2>/dev/null && wait "$BPID" 2>/dev/null
    [ -n "$C2PID" ] && kill "$C2PID" 2>/dev/null && wait "$C2PID" 2>/dev/null
    "$KIT/stop-containerd-anchor.sh" >/dev/null 2>&1 || true
    [ -n "$CNI_BRIDGE" ] && ip link delete "$CNI_BRIDGE" 2>/dev/null
    uncount
    rm -rf "$W"
}
trap cleanup EXIT

# Each daemon, and what it starts after (shims, runtimes, CNI plugins, not the containers, which
# go to cgroups of their own), counted in a cgroup of its own: CPU-seconds per lifecycle.
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then CGROOT=/sys/fs/cgroup; else CGROOT=/sys/fs/cgroup/cpuacct; fi
CG=$CGROOT/bench-cri-$$
# count NAME PID: PID (a daemon that has started nothing yet) into NAME's cgroup.
count() {
    [ -n "$2" ] && [ -d "$CGROOT" ] && mkdir -p "$CG/$1" && echo "$2" >"$CG/$1/cgroup.procs" 2>/dev/null ||
        echo "cannot count $1's CPU (cgroup $CG/$1)" >&2
}
# cpu_ns NAME: NAME's cgroup's CPU so far, in ns.
cpu_ns() {
    if [ -f "$CG/$1/cpuacct.usage" ]; then cat "$CG/$1/cpuacct.usage"
    elif [ -f "$CG/$1/cpu.stat" ]; then awk '$1 == "usage_usec" { print $2 * 1000 }' "$CG/$1/cpu.stat"
    else echo 0; fi
}
# uncount: whatever is left goes back to the root cgroup, and the counting cgroups go.
uncount() {
    local g p
    for g in "$CG"/*/; do
        [ -d "$g" ] || continue
        while read -r p; do echo "$p" >"$CGROOT/cgroup.procs" 2>/dev/null; done <"$g/cgroup.procs"
        rmdir "$g" 2>/dev/null
    done
    rmdir "$CG" 2>/dev/null
    return 0
}

cat >"$W/berthd.toml" <<CFG
root = "$W/root"
state = "$W/state"
address = "$W/berth.sock"
log_level = "warn"
[registry]
config_path = "$CRI_TEST_DIR/certs.d"
[cri]
sandbox_image = "registry.k8s.io/pause:3.6"
cni_conf_dir = "$CRI_TEST_DIR/cni/net.d"
restrict_oom_score_adj = true
CFG
"$BERTHD" -c "$W/berthd.toml" >"$W/berthd.log" 2>&1 &
BPID=$!
count berth "$BPID"
for _ in $(seq 100); do [ -S "$W/berth.sock" ] && break; sleep 0.05; done

now() { date +%s.%N; }
# rounds ENDPOINT OUTFILE: one "step seconds" line per step and round.
rounds() {
    local ep=$1 out=$2 c=("$CRICTL" --runtime-endpoint "$1" --image-endpoint "$1" --timeout 60s)
    "${c[@]}" pull "$IMG" >/dev/null
    "${c[@]}" pull registry.k8s.io/pause:3.6 >/dev/null
    for i in $(seq "$ROUNDS"); do
        printf '{"metadata":{"name":"bench-%s","namespace":"default","uid":"bench-%s-%s","attempt":1},"log_directory":"%s/logs-%s","linux":{}}' \
            "$i" "$i" "$$" "$W" "$i" >"$W/pod.json"
        printf '{"metadata":{"name":"c"},"image":{"image":"%s"},"command":["sh","-c","trap \\"exit 0\\" TERM; sleep 3600 & wait"],"log_path":"c.log","linux":{}}' \
            "$IMG" >"$W/ctr.json"
        local s pod cid
        s=$(now); "${c[@]}" version >/dev/null 2>&1; echo "floor $(echo "$(now) - $s" | bc)" >>"$out"
        s=$(now); pod=$("${c[@]}" runp "$W/pod.json" 2>/dev/null); echo "runp $(echo "$(now) - $s" | bc)" >>"$out"
        s=$(now); cid=$("${c[@]}" create "$pod" "$W/ctr.json" "$W/pod.json" 2>/dev/null); echo "create $(echo "$(now) - $s" | bc)" >>"$out"
        s=$(now); "${c[@]}" start "$cid" >/dev/null 2>&1; echo "start $(echo "$(now) - $s" | bc)" >>"$out"
        s=$(now); [ "$("${c[@]}" exec "$cid" echo hi 2>/dev/null)" = hi ]; echo "exec $(echo "$(now) - $s" | bc)" >>"$out"
        s=$(now); [ "$("${c[@]}" exec -s "$cid" echo hi 2>/dev/null)" = hi ]; echo "exec-sync $(echo "$(now) - $s" | bc)" >>"$out"
        if [ "$i" = 1 ]; then
            s=$(now); n=$("${c[@]}" exec "$cid" head -c 1073741824 /dev/zero 2>/dev/null | wc -c)
            echo "gib $(echo "$(now) - $s" | bc) $n" >>"$out"
        fi
        s=$(now); "${c[@]}" stop --timeout 10 "$cid" >/dev/null 2>&1; echo "stop $(echo "$(now) - $s" | bc)" >>"$out"
        s=$(now); "${c[@]}" stopp "$pod" >/dev/null 2>&1; echo "stopp $(echo "$(now) - $s" | bc)" >>"$out"
        s=$(now); "${c[@]}" rmp "$pod" >/dev/null 2>&1; echo "rmp $(echo "$(now) - $s" | bc)" >>"$out"
    done
}
# grpc ENDPOINT NAME: one berth-bench-cri run of ROUNDS lifecycles into $W/NAME-grpc.txt
# ("step seconds" lines, and "cpu ns" of NAME's cgroup over the run); a failure is reported
# and leaves the crictl figures standing.
grpc() {
    [ -x "$BENCH" ] || return 0
    local c0
    c0=$(cpu_ns "$2")
    "$BENCH" --endpoint "$1" --rounds "$ROUNDS" --format lines --log-dir "$W/grpc-logs" >>"$W/$2-grpc.txt" ||
        echo "berth-bench-cri failed on $1" >&2
    echo "cpu $(($(cpu_ns "$2") - c0))" >>"$W/$2-grpc.txt"
}
median() { grep "^$1 " "$2" | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {print (NR%2)?a[(NR+1)/2]:(a[NR/2]+a[NR/2+1])/2}'; }

rounds "unix://$W/berth.sock" "$W/berth.txt"
ANCHOR=$("$KIT/start-containerd-anchor.sh" | tail -1)
count containerd "$(cat "$CRI_TEST_DIR/containerd/containerd.pid" 2>/dev/null)"
own_cni
rounds "$ANCHOR" "$W/containerd.txt"
for _ in $(seq "$GRPC_BLOCKS"); do grpc "$ANCHOR" containerd; done
"$KIT/stop-containerd-anchor.sh" >/dev/null 2>&1 || true
files=(berth containerd)
if [ -x "$CTRD2_BIN/containerd" ] && [ -x "$CTRD2_BIN/containerd-shim-runc-v2" ]; then
    # The kit's rendered 1.6 configuration, every path moved to a directory of 2.3.4's own.
    mkdir -p "$W/containerd2"
    sed "s#$CRI_TEST_DIR/containerd/#$W/containerd2/#g" "$CRI_TEST_DIR/containerd/config.toml" >"$W/containerd2.toml"
    PATH="$CTRD2_BIN:$PATH" setsid "$CTRD2_BIN/containerd" --config "$W/containerd2.toml" >"$W/containerd2.log" 2>&1 </dev/null &
    C2PID=$!
    count containerd2 "$C2PID"
    for _ in $(seq 100); do [ -S "$W/containerd2/containerd.sock" ] && break; sleep 0.1; done
    rounds "unix://$W/containerd2/containerd.sock" "$W/containerd2.txt"
    files+=(containerd2)
    C2EP=unix://$W/containerd2/containerd.sock
else
    echo "no containerd 2.3.4 at $CTRD2_BIN (build it with ../shared/containerd-suite/build.sh): its column is left out" >&2
fi
# berth's gRPC blocks alternate with 2.3.4's, so a change of load falls on both.
for _ in $(seq "$GRPC_BLOCKS"); do
    grpc "unix://$W/berth.sock" berth
    if [ -n "${C2EP:-}" ]; then grpc "$C2EP" containerd2; fi
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg); rounds: $ROUNDS (each figure includes crictl's own start-up)"
if [ -f "$W/containerd2.txt" ]; then
    printf '%-10s %10s %14s %8s %16s %8s\n' step berth containerd-1.6 ratio containerd-2.3.4 ratio
else
    printf '%-10s %10s %14s %8s\n' step berth containerd-1.6 ratio
fi
for k in runp create start exec exec-sync stop stopp rmp; do
    b=$(median "$k" "$W/berth.txt"); c=$(median "$k" "$W/containerd.txt")
    if [ -f "$W/containerd2.txt" ]; then
        c2=$(median "$k" "$W/containerd2.txt")
        printf '%-10s %10.3f %14.3f %8.2f %16.3f %8.2f\n' "$k" "$b" "$c" "$(echo "$b / $c" | bc -l)" "$c2" "$(echo "$b / $c2" | bc -l)"
    else
        printf '%-10s %10.3f %14.3f %8.2f\n' "$k" "$b" "$c" "$(echo "$b / $c" | bc -l)"
    fi
done
for f in "${files[@]}"; do
    read -r _ secs bytes < <(grep '^gib ' "$W/$f.txt")
    printf '1 GiB through exec, %s: %s bytes in %.2f s (%.0f MiB/s)\n' "$f" "$bytes" "$secs" "$(echo "$bytes / 1048576 / $secs" | bc -l)"
done

# ms FILE STEP [FLOOR-STEP]: the median of STEP in FILE in ms, less FLOOR-STEP's; empty when absent.
ms() {
    [ -s "$1" ] && grep -q "^$2 " "$1" || return 0
    local m f=0
    m=$(median "$2" "$1")
    [ -n "${3:-}" ] && f=$(median "$3" "$1")
    awk -v m="$m" -v f="$f" 'BEGIN { printf "%.4f", (m - f) * 1000 }'
}
label() { case $1 in containerd) echo containerd-1.6 ;; containerd2) echo containerd-2.3.4 ;; *) echo "$1" ;; esac; }
# ms_table SUFFIX FLOOR-STEP STEPS...: berth beside each containerd, in ms, with ratios.
ms_table() {
    local suffix=$1 floor=$2 k f b v
    shift 2
    printf '%-10s %10s' step berth
    for f in "${files[@]:1}"; do printf ' %16s %6s' "$(label "$f")" ratio; done
    echo
    for k in "$@"; do
        b=$(ms "$W/berth$suffix.txt" "$k" "$floor")
        printf '%-10s %10s' "$k" "$([ -n "$b" ] && printf '%.2f' "$b" || echo -)"
        for f in "${files[@]:1}"; do
            v=$(ms "$W/$f$suffix.txt" "$k" "$floor")
            if [ -n "$v" ] && [ -n "$b" ]; then
                printf ' %16.2f %6.2f' "$v" "$(awk -v b="$b" -v v="$v" 'BEGIN { print b / v }')"
            else
                printf ' %16s %6s' - -
            fi
        done
        echo
    done
}
echo
printf 'crictl floor (median of `crictl version`, ms):'
for f in "${files[@]}"; do printf ' %s %.2f' "$(label "$f")" "$(ms "$W/$f.txt" floor)"; done
echo
echo "crictl minus its floor, medians in ms (ratio = berth / that containerd):"
ms_table "" floor runp create start exec exec-sync stop stopp rmp
if [ -s "$W/berth-grpc.txt" ]; then
    echo
    echo "gRPC only, one connection (berth-bench-cri, $GRPC_BLOCKS x $ROUNDS lifecycles), medians in ms:"
    ms_table -grpc "" version runp create start exec-url exec exec-sync stop stopp rmp
    echo "(exec-url: the Exec RPC alone; exec: Exec and its WebSocket stream to the end)"
    printf 'CPU ms per lifecycle (daemon, shims, runtimes, CNI plugins; each its own cgroup):'
    for f in "${files[@]}"; do
        [ -s "$W/$f-grpc.txt" ] || continue
        printf ' %s %.1f' "$(label "$f")" "$(awk -v n=$((GRPC_BLOCKS * ROUNDS)) '$1 == "cpu" { t += $2 } END { print t / n / 1e6 }' "$W/$f-grpc.txt")"
    done
    echo
fi
