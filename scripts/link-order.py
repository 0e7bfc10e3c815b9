#!/usr/bin/env python3
"""Turns callgrind profiles of a binary into a symbol ordering file for lld.

    link-order.py BINARY PHASE [PHASE ...]

Each PHASE is a comma-separated list of callgrind output files (one recording period of one
or more processes). The functions of BINARY that ran in the first phase come first, then those
that first ran in the second, and so on: the code a daemon runs at start and while idle is
gathered at the front of its text, the code of its requests after it. Only names the binary
defines are written (lld would warn about the rest).

callgrind compresses names: a function is named once per file, on an fn= or cfn= line, as
"(N) name", and later only by "(N)". Costs are listed under the fn= line of the function
that ran them, so a function counts as run in a phase when one of its files has an fn= for
it, under an ob= naming BINARY.
"""

import re
import subprocess
import sys

LINE = re.compile(r"^(ob|cob|fn|cfn)=\((\d+)\)(?: (.*))?$")


def functions_run(path, binary):
    objects, names, ran, current_ob = {}, {}, set(), None
    with open(path, errors="replace") as f:
        for line in f:
            m = LINE.match(line.rstrip("\n"))
            if not m:
                continue
            kind, num, name = m.groups()
            table = objects if kind in ("ob", "cob") else names
            if name:
                table[num] = name
            if kind == "ob":
                current_ob = num
            elif kind == "fn" and objects.get(current_ob, "").endswith(binary):
                ran.add(num)
    # callgrind marks a function's second and later contexts with 'N.
    return {re.sub(r"'\d+$", "", names[n]) for n in ran if n in names}


def main():
    binary, phases = sys.argv[1], sys.argv[2:]
    nm = subprocess.run(
        ["nm", "--defined-only", binary], capture_output=True, text=True, check=True
    )
    defined = {parts[-1] for parts in map(str.split, nm.stdout.splitlines()) if parts}
    written = set()
    for i, phase in enumerate(phases, 1):
        ran = set()
        for path in phase.split(","):
            ran |= functions_run(path, binary.rsplit("/", 1)[-1])
        fresh = sorted((ran & defined) - written)
        written.update(fresh)
        print("\n".join(fresh))
        print(f"link-order: phase {i}: {len(fresh)} functions", file=sys.stderr)


if __name__ == "__main__":
    main()
