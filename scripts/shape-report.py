#!/usr/bin/env python3
"""The shape of berth's code, as a newcomer meets it: files over 600 lines and functions over
80 lines in non-test code, and import circles between modules (a module's file naming
another's through `crate::`, `super::` or a sibling crate path). Test code (the `tests/`
crate, `#[cfg(test)]` modules and files named tests.rs) is left out.

Usage: scripts/shape-report.py [--max-file N] [--max-fn N] [--check]
With --check it exits 1 when anything is over the limits or any circle exists."""

import argparse
import os
import re
import sys

CRATES = ["proto", "services", "snapshotters", "shim-v2", "client", "cmd"]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rust_files(crate):
    src = os.path.join(ROOT, crate, "src")
    for d, _, files in os.walk(src):
        for f in files:
            if f.endswith(".rs") and f != "tests.rs":
                yield os.path.join(d, f)


def strip_test_modules(lines):
    """The file's lines with every `#[cfg(test)]` item blanked out (kept as empty lines so
    numbering stays)."""
    out = list(lines)
    i = 0
    while i < len(out):
        if out[i].strip().startswith("#[cfg(test)]"):
            j = i + 1
            while j < len(out) and "{" not in out[j] and not out[j].rstrip().endswith(";"):
                j += 1
            if j < len(out) and out[j].rstrip().endswith(";"):
                for k in range(i, j + 1):
                    out[k] = ""
                i = j + 1
                continue
            end = block_end(out, j)
            for k in range(i, end + 1):
                out[k] = ""
            i = end + 1
        else:
            i += 1
    return out


CODE = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])\'|//.*')


def braces(line):
    text = CODE.sub("", line)
    return text.count("{") - text.count("}")


def block_end(lines, start):
    depth = 0
    seen = False
    for k in range(start, len(lines)):
        d = braces(lines[k])
        if "{" in CODE.sub("", lines[k]):
            seen = True
        depth += d
        if seen and depth <= 0:
            return k
    return len(lines) - 1


FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+)?(async\s+)?(unsafe\s+)?(extern\s+\"C\"\s+)?fn\s+(\w+)")


def long_functions(path, lines, limit):
    found = []
    i = 0
    while i < len(lines):
        m = FN.match(lines[i])
        if m:
            j = i
            while j < len(lines) and "{" not in CODE.sub("", lines[j]) and not lines[j].rstrip().endswith(";"):
                j += 1
            if j < len(lines) and lines[j].rstrip().endswith(";") and "{" not in lines[j]:
                i = j + 1
                continue
            end = block_end(lines, j)
            n = end - i + 1
            if n > limit:
                found.append((n, m.group(7)))
            i += 1
        else:
            i += 1
    return found


def module_of(crate, path):
    rel = os.path.relpath(path, os.path.join(ROOT, crate, "src"))[:-3]
    parts = rel.split(os.sep)
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return tuple(parts)


USE = re.compile(r"(?<![:\w])(\w+)((?:::\w+)+)")


def edges(crate, files):
    mods = {module_of(crate, p): p for p in files}
    out = {m: set() for m in mods}
    for m, p in mods.items():
        lines = strip_test_modules(open(p, encoding="utf-8").read().split("\n"))
        text = "\n".join(CODE.sub("", l) for l in lines)
        is_dir_mod = os.path.basename(p) in ("mod.rs", "lib.rs", "main.rs")
        here = m if is_dir_mod else m[:-1]
        for root, rest in USE.findall(text):
            names = rest.strip(":").split("::")
            if root == "crate":
                base = ()
            elif root == "self":
                base = here
            elif root == "super":
                base = here[:-1]
                while names and names[0] == "super":
                    base = base[:-1]
                    names = names[1:]
            elif here + (root,) in mods:
                # A child module, or one brought in by `use` (nearest first).
                base, names = here, [root] + names
            elif here[:-1] + (root,) in mods:
                base, names = here[:-1], [root] + names
            elif (root,) in mods:
                base, names = (), [root] + names
            else:
                continue
            target = base
            best = None
            for n in names:
                target = target + (n,)
                if target in mods:
                    best = target
            if best is None:
                continue
            # A module naming its own ancestors (`super::`) is how Rust nests: not a circle.
            if m[: len(best)] == best:
                continue
            out[m].add(best)
    return out


def circles(graph):
    index, low, stack, on, sccs = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return sccs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-file", type=int, default=600)
    ap.add_argument("--max-fn", type=int, default=80)
    ap.add_argument("--check", action="store_true")
    a = ap.parse_args()
    big_files, long_fns, all_circles = [], [], []
    for crate in CRATES:
        files = list(rust_files(crate))
        for p in files:
            lines = strip_test_modules(open(p, encoding="utf-8").read().split("\n"))
            n = sum(1 for l in lines if l.strip())
            rel = os.path.relpath(p, ROOT)
            if n > a.max_file:
                big_files.append((n, rel))
            for length, name in long_functions(p, lines, a.max_fn):
                long_fns.append((length, f"{rel}::{name}"))
        for c in circles(edges(crate, files)):
            all_circles.append(f"{crate}: " + " <-> ".join("::".join(m) or "(root)" for m in c))
    print(f"files over {a.max_file} non-blank, non-test lines: {len(big_files)}")
    for n, f in sorted(big_files, reverse=True):
        print(f"  {n:5} {f}")
    print(f"functions over {a.max_fn} lines: {len(long_fns)}")
    for n, f in sorted(long_fns, reverse=True):
        print(f"  {n:5} {f}")
    print(f"import circles: {len(all_circles)}")
    for c in all_circles:
        print(f"  {c}")
    readme = sum(1 for _ in open(os.path.join(ROOT, "README.md"), encoding="utf-8"))
    print(f"README.md lines: {readme}")
    if a.check and (big_files or long_fns or all_circles):
        sys.exit(1)


if __name__ == "__main__":
    main()
