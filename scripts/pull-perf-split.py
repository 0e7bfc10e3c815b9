#!/usr/bin/env python3
"""The CPU split of a pull from a perf profile of berthd: reads `perf script` output (record
with --call-graph dwarf), puts each sample in the first category below any frame of its
stack matches, prints the shares, and writes the folded stacks to argv[1] when given.
  perf script -i perf.data | scripts/pull-perf-split.py [pull.folded]
(docs/perf/pull-2026-12-06.md)"""
import re, sys, collections
CATS = [
    ("inflate (ISA-L)", r"libisal|isal_|GzipDecoder|decode_huffman|crc32_gzip"),
    ("SHA-256 (ring, SHA-NI)", r"sha256_block|ring::digest"),
    ("zeroing new chunk buffers (memset)", r"__memset|clear_page"),
    ("user-space copies (memmove)", r"__memmove|__memcpy"),
    ("file writes (write(2) into page cache)", r"ksys_write|vfs_write|__libc_write"),
    ("file and dir creation (openat, mkdirat, symlinkat, linkat, openat2)", r"do_sys_openat2|__x64_sys_openat|mkdirat|symlinkat|linkat|do_mknodat"),
    ("metadata (fchown, fchmod, utimensat, xattrs)", r"chown|chmod|utimes|utimensat|setxattr"),
    ("stat of entry names (newfstatat)", r"newfstatat|vfs_fstatat"),
    ("close", r"__x64_sys_close|__fput"),
    ("tar parsing", r"tar::|layer::apply::entry|Applier::entry"),
    ("registry download (hyper, TCP receive)", r"hyper|tcp_|recvfrom|sock_|reqwest|h2::"),
    ("ingest writes and content store", r"content::local|ingest|write_chunks"),
    ("TLS roots loaded per client (rustls native certs)", r"rustls|webpki"),
    ("malloc/free", r"malloc|_int_free|cfree|realloc|__libc_free"),
    ("scheduling, futex (thread hand-offs)", r"futex|schedule|finish_task_switch"),
    ("page faults", r"page_fault"),
]
cre = [(n, re.compile(p)) for n, p in CATS]
folded = collections.Counter(); cats = collections.Counter(); total = 0
stack = []; comm = None; weight = 1
def flush():
    global total
    if comm is None: return
    frames = [f for f in stack]
    total_w = weight
    folded[";".join([comm] + list(reversed(frames)))] += total_w
    for n, c in cre:
        if any(c.search(f) for f in frames):
            cats[n] += total_w; break
    else:
        cats["other"] += total_w
for line in sys.stdin:
    if not line.strip():
        flush(); comm = None; stack = []; continue
    if not line.startswith("\t") and not line.startswith(" "):
        m = re.match(r"(\S.*?)\s+\d+\s+[\d.]+:\s+(\d+)\s+", line)
        comm = re.sub(r"[-\d]+$", "", m.group(1)) if m else "?"; weight = int(m.group(2)) if m else 1
        total += weight; continue
    parts = line.strip().split(" ", 1)
    sym = parts[1] if len(parts) > 1 else parts[0]
    sym = re.sub(r"\+0x[0-9a-f]+", "", sym); sym = re.sub(r" \(.*\)$", "", sym)
    stack.append(sym.replace(";", ":"))
flush()
for n, w in cats.most_common():
    print(f"{100*w/total:5.1f}%  {n}")
print(f"samples weight total {total} ({total/1e9:.2f} CPU-s at the sample period)")
if len(sys.argv) > 1:
    with open(sys.argv[1], "w") as f:
        for k, v in folded.items(): f.write(f"{k} {v}\n")
