#!/usr/bin/env python3
"""cu2cpp.py (Loupe's CUDA emulator): kernels/*.cu as C++ for the CPU emulator.
The one rewrite: `kernel<<<grid, block[, shmem[, stream]]>>>(args)` becomes
`lp_emu::Launch(grid, block[, shmem[, stream]]).run(kernel, args)`.
Usage: cu2cpp.py IN.cu OUT.cpp"""
import re
import sys

src = open(sys.argv[1]).read()
out, n = re.subn(r"([A-Za-z_]\w*)\s*<<<(.*?)>>>\s*\(", r"lp_emu::Launch(\2).run(\1, ", src, flags=re.S)
if "<<<" in out:
    sys.exit(f"{sys.argv[1]}: a launch cu2cpp.py cannot rewrite")
with open(sys.argv[2], "w") as f:
    f.write(f'#line 1 "{sys.argv[1]}"\n' + out)
