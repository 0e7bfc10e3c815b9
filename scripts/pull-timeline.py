#!/usr/bin/env python3
"""A pull's timeline from a perf recording of berthd: which thread did what, when, and what
the threads waited on. Record with bench-pull-ab.sh:
  PERF_OUT=pull.perf PERF_CG="-g -e cpu-clock -e sched:sched_switch" scripts/bench-pull-ab.sh 1 DIR
then
  perf script -i pull.perf -F comm,tid,time,event,trace,ip,sym | scripts/pull-timeline.py [HZ]
HZ is perf's sampling rate (bench-pull-ab.sh: 499). Prints, per thread: its role (the
category most of its samples fall in), first and last sample, CPU-seconds, and what it was
switched out for (the kernel frames under schedule) with the time until its next event;
then the cores busy per 100 ms over the pull.
"""
import collections
import re
import sys

HZ = float(sys.argv[1]) if len(sys.argv) > 1 else 499.0

# First match wins, checked frame by frame from the leaf.
CATEGORIES = [
    ("inflate", ("isal", "decode_huffman", "crc32_gzip", "inflate")),
    ("sha256", ("sha256", "Sha256")),
    ("fsync", ("fsync", "sync_file_range", "file_write_and_wait", "jbd2")),
    ("write", ("ext4_buffered_write_iter", "generic_perform_write", "vfs_write", "__libc_write", "pwrite")),
    ("create", ("openat", "mkdirat", "symlinkat", "linkat", "mknodat", "do_filp_open", "ext4_create", "ext4_mkdir")),
    ("metadata", ("fchown", "fchmod", "utimensat", "futimens", "chown_common", "chmod_common", "setxattr")),
    ("close", ("__close", "close_fd", "__fput")),
    ("download", ("hyper", "tcp_recvmsg", "recvfrom", "h2::", "reqwest", "tcp_v4_rcv")),
    ("tar", ("tar::",)),
    ("futex", ("futex",)),
]


def category(stack):
    for frame in stack:
        for name, keys in CATEGORIES:
            if any(k in frame for k in keys):
                return name
    return "other"


def wait_reason(stack):
    for frame in stack:
        for key, name in (
            ("futex", "futex (channel/lock)"),
            ("epoll", "epoll (idle runtime)"),
            ("fsync", "fsync"),
            ("file_write_and_wait", "fsync"),
            ("jbd2", "journal"),
            ("wait_on_page", "page writeback"),
            ("folio_wait", "page writeback"),
            ("balance_dirty", "dirty throttling"),
            ("io_schedule", "block I/O"),
            ("rwsem", "inode/dir lock"),
            ("mutex", "mutex"),
            ("exit_to_user_mode", "preempted"),
            ("sleep", "sleep"),
        ):
            if key in frame:
                return name
    return stack[0] if stack else "?"


def events(lines):
    head, stack = None, []
    for line in lines:
        line = line.rstrip("\n")
        if not line.strip():
            if head:
                yield head, stack
            head, stack = None, []
            continue
        if head is None:
            head = line
        else:
            parts = line.strip().split(None, 1)
            stack.append(parts[1] if len(parts) > 1 else parts[0])
    if head:
        yield head, stack


HEAD = re.compile(r"^\s*(.+?)\s+(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)$")
threads = {}
buckets = collections.Counter()
t_first = None
for head, stack in events(sys.stdin):
    m = HEAD.match(head)
    if not m:
        continue
    comm, tid, t, ev, trace = m.group(1), int(m.group(2)), float(m.group(3)), m.group(4), m.group(5)
    if t_first is None:
        t_first = t
    th = threads.setdefault(tid, {"comm": comm, "cats": collections.Counter(), "first": None, "last": None,
                                  "waits": collections.Counter(), "out": None, "out_reason": None})
    if th["out"] is not None:
        th["waits"][th["out_reason"]] += t - th["out"]
        th["out"] = None
    if ev == "cpu-clock":
        th["cats"][category(stack)] += 1
        th["first"] = t if th["first"] is None else th["first"]
        th["last"] = t
        buckets[int((t - t_first) * 10)] += 1
    elif ev == "sched:sched_switch":
        th["out"] = t
        th["out_reason"] = wait_reason(stack)

print("tid      comm             role      first   last    cpu-s  categories / waits (s)")
for tid, th in sorted(threads.items(), key=lambda kv: (kv[1]["first"] or 1e18)):
    n = sum(th["cats"].values())
    if n < 3:
        continue
    role = th["cats"].most_common(1)[0][0]
    cats = " ".join(f"{k}:{v / HZ:.2f}" for k, v in th["cats"].most_common(5))
    waits = " ".join(f"{k}:{v:.2f}" for k, v in th["waits"].most_common(3) if v >= 0.01)
    print(f"{tid:<8} {th['comm'][:16]:<16} {role:<9} {th['first'] - t_first:6.2f}  {th['last'] - t_first:6.2f}  "
          f"{n / HZ:5.2f}  {cats} | {waits}")
print()
print("cores busy per 100 ms from the first sample:")
last = max(buckets) if buckets else 0
print(" ".join(f"{buckets[i] / (HZ / 10):.1f}" for i in range(last + 1)))
