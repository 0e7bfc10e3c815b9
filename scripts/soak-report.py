#!/usr/bin/env python3
"""Judges and plots a soak's samples (tests/tests/soak.rs writes them; scripts/soak.sh runs
both). Usage: soak-report.py SAMPLES.csv OUT.svg. Prints one line per series and exits 1
when any series grows without bound.

The rule: the first quarter of the samples is warm-up (caches filling, the first GC) and is
not judged. The rest is cut into three equal windows A, B, C. A series grows without bound
when its median rises by more than its tolerance from A to B *and* again from B to C: a leak
climbs in every window, while a one-time step (a cache filling, redb extending its file)
rises once and then stays. The tolerance is the larger of 5% of A's median and a floor per
series (below), so noise of a few pages or descriptors is not a trend.
Only the standard library: the plot is an SVG written by hand.
"""
import csv
import statistics
import sys

# Judged series and their tolerance floors, in the series' own units.
JUDGED = {
    "rss_kib": 4 * 1024,
    "rss_anon_kib": 2 * 1024,
    "images": 8,
    "fds": 8,
    "threads": 4,
    "shims": 2,
    "mounts": 2,
    "content_bytes": 4 << 20,
    "content_blobs": 8,
    "redb_bytes": 2 << 20,
    "root_bytes": 2 << 20,
    "build_cache_bytes": 256 << 10,
    "state_bytes": 2 << 20,
}
# Plotted, not judged: cumulative counters (GC work, operations), which grow by design.
COUNTERS = ["gc_runs", "gc_reclaimed_bytes", "gc_removed_blobs", "gc_removed_snapshots", "ops", "errors"]
REL = 0.05
MIN_SAMPLES = 8


def read(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in rows[0]} if rows else {}


def windows(values):
    judged = values[len(values) // 4:]
    n = len(judged) // 3
    return len(values) // 4, [judged[:n], judged[n:2 * n], judged[2 * n:]]


def judge(name, values, floor):
    """(verdict, text) for one series: verdict True when it grows without bound."""
    _, (a, b, c) = windows(values)
    ma, mb, mc = (statistics.median(w) for w in (a, b, c))
    tol = max(floor, REL * abs(ma))
    grows = mb - ma > tol and mc - mb > tol
    word = "GROWS WITHOUT BOUND" if grows else "flat"
    return grows, f"{name}: medians {ma:.0f} -> {mb:.0f} -> {mc:.0f} (tolerance {tol:.0f} a step): {word}"


def human(v, name):
    if name.endswith("bytes"):
        for unit in ["B", "KiB", "MiB", "GiB"]:
            if abs(v) < 1024 or unit == "GiB":
                return f"{v:.0f} {unit}" if unit == "B" else f"{v:.1f} {unit}"
            v /= 1024
    if name.endswith("_kib"):
        return f"{v / 1024:.1f} MiB"
    return f"{v:.0f}"


def panel(x0, y0, w, h, t, values, name, bad, warm):
    """One small chart: the series against minutes, warm-up shaded, window medians drawn."""
    out = []
    lo, hi = min(values), max(values)
    if hi == lo:
        hi = lo + 1
    span = max(t[-1] - t[0], 1)
    px = lambda s: x0 + (s - t[0]) / span * w
    py = lambda v: y0 + h - (v - lo) / (hi - lo) * h
    colour = "#c0392b" if bad else "#1f5f99"
    if warm:
        out.append(f'<rect x="{x0}" y="{y0}" width="{px(t[warm]) - x0:.1f}" height="{h}" fill="#eee"/>')
    out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#999"/>')
    pts = " ".join(f"{px(s):.1f},{py(v):.1f}" for s, v in zip(t, values))
    out.append(f'<polyline points="{pts}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
    if name in JUDGED and len(values) >= MIN_SAMPLES:
        start, parts = windows(values)
        i = start
        for part in parts:
            m = statistics.median(part)
            x1, x2 = px(t[i]), px(t[min(i + len(part) - 1, len(t) - 1)])
            out.append(f'<line x1="{x1:.1f}" x2="{x2:.1f}" y1="{py(m):.1f}" y2="{py(m):.1f}" stroke="#e67e22" stroke-dasharray="4 2"/>')
            i += len(part)
    label = f"{name}{' (judged)' if name in JUDGED else ''}{': GROWS' if bad else ''}"
    out.append(f'<text x="{x0}" y="{y0 - 6}" font-size="12" fill="{colour}">{label}</text>')
    out.append(f'<text x="{x0 - 4}" y="{y0 + 10}" font-size="10" text-anchor="end">{human(hi, name)}</text>')
    out.append(f'<text x="{x0 - 4}" y="{y0 + h}" font-size="10" text-anchor="end">{human(lo, name)}</text>')
    out.append(f'<text x="{x0 + w}" y="{y0 + h + 12}" font-size="10" text-anchor="end">{t[-1] / 60:.0f} min</text>')
    return out


def plot(data, verdicts, path):
    names = [n for n in list(JUDGED) + COUNTERS if n in data]
    t = data["elapsed_s"]
    warm = len(t) // 4
    cols, w, h, gap_x, gap_y = 3, 260, 110, 110, 50
    rows = (len(names) + cols - 1) // cols
    width, height = cols * (w + gap_x) + 20, rows * (h + gap_y) + 60
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="10" y="20" font-size="14">berth soak: {t[-1] / 3600:.2f} h, {len(t)} samples; grey: warm-up (not judged); dashed: window medians</text>']
    for k, name in enumerate(names):
        x0 = 100 + (k % cols) * (w + gap_x)
        y0 = 55 + (k // cols) * (h + gap_y)
        out += panel(x0, y0, w, h, t, data[name], name, verdicts.get(name, False), warm)
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: soak-report.py SAMPLES.csv OUT.svg")
    data = read(sys.argv[1])
    if len(data.get("elapsed_s", [])) < MIN_SAMPLES:
        sys.exit(f"soak-report: fewer than {MIN_SAMPLES} samples in {sys.argv[1]}: too short to judge")
    verdicts, growing = {}, []
    for name, floor in JUDGED.items():
        if name not in data:
            continue
        grows, text = judge(name, data[name], floor)
        verdicts[name] = grows
        print(f"soak: {text}")
        if grows:
            growing.append(name)
    for name in COUNTERS:
        if name in data:
            print(f"soak: {name}: {human(data[name][-1], name)} at the end")
    plot(data, verdicts, sys.argv[2])
    print(f"soak: plot in {sys.argv[2]}")
    if growing:
        print(f"soak: FAILED: grows without bound: {', '.join(growing)}")
        sys.exit(1)


if __name__ == "__main__":
    main()
