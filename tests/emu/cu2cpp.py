#!/usr/bin/env python3
"""cu2cpp.py (Loupe's CUDA emulator): kernels/*.cu as C++ for the CPU emulator.
Two rewrites:
- `kernel<<<grid, block[, shmem[, stream]]>>>(args)` becomes
  `lp_emu::Launch(grid, block[, shmem[, stream]]).run(kernel, args)`;
- after each `__shared__ T a[N], b[M];` (a function static in the emulator) comes
  `lp_emu_shared(&a, sizeof a); ...`, which fills the array with NaN bytes when the first
  thread of each block reaches it: a GPU's shared memory starts undefined, and a read of
  it before any write (or of an earlier block's values) must not pass.
Usage: cu2cpp.py IN.cu OUT.cpp"""
import re
import sys

src = open(sys.argv[1]).read()
out, n = re.subn(r"([A-Za-z_]\w*)\s*<<<(.*?)>>>\s*\(", r"lp_emu::Launch(\2).run(\1, ", src, flags=re.S)
if "<<<" in out:
    sys.exit(f"{sys.argv[1]}: a launch cu2cpp.py cannot rewrite")


def top_level(text):
    """text split at commas outside brackets and parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def poison(m):
    # `TYPE a[N], b[M]`: the first declarator's name is the last word before its first
    # bracket (the type may be several words: `unsigned int`, `volatile float`).
    decls = top_level(m.group(2))
    names = [re.findall(r"[A-Za-z_]\w*", d.split("[")[0]) for d in decls]
    names = [n[-1] if n and (i == 0) == (len(n) > 1) else None for i, n in enumerate(names)]
    if "extern" in m.group(1) or not all(names):
        sys.exit(f"{sys.argv[1]}: a __shared__ declaration cu2cpp.py cannot poison: {m.group(0).strip()}")
    return m.group(0) + "".join(f" lp_emu_shared(&{n}, sizeof {n});" for n in names)


# One declaration a line: `__shared__ TYPE DECLARATORS;` (no initialisers on the GPU).
out, n_shared = re.subn(r"^([ \t]*(?:extern[ \t]+)?__shared__[ \t]+)([^;=]+);", poison, out, flags=re.M)
code = re.sub(r"//[^\n]*|/\*.*?\*/", "", src, flags=re.S)
if len(re.findall(r"\b__shared__\b", code)) != n_shared:
    sys.exit(f"{sys.argv[1]}: a __shared__ declaration cu2cpp.py cannot rewrite")
with open(sys.argv[2], "w") as f:
    f.write(f'#line 1 "{sys.argv[1]}"\n' + out)
