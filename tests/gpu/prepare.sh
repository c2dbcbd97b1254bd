#!/usr/bin/env bash
# prepare.sh — runs on the build machine (Debian 12, nvcc): builds what the offline GPU
# host runs (build-gpu/: CUDA Release for sm_90, gpu-labelled tests + CLI + GPU benches)
# and the shared libraries it lacks (gpu-deps/lib, from Debian .debs), then checks sizes.
#
#   bash tests/gpu/prepare.sh          (from anywhere; JOBS=N for parallel build, default 2)
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build-gpu
DEPS=$ROOT/gpu-deps
WORK=$ROOT/build-gpu-work # logs, .deb cache, unpacked packages: ignored, never carried
LIMIT_MIB=${LOUPE_GPU_CARRY_LIMIT_MIB:-50}
# Packages the host lacks whatever ldd says today (libgomp1 in case the host has none).
BASE_PACKAGES="libopenblas0-pthread libgfortran5 libquadmath0 libprotobuf-c1 libpng16-16 libjpeg62-turbo libcmocka0 libgomp1"
# Libraries bigger than this travel xz-compressed (OpenBLAS: 36 MiB -> 4 MiB); check.sh unpacks them.
XZ_OVER_BYTES=$((1024 * 1024))

die() { echo "prepare.sh: $*" >&2; exit 1; }
step() { echo; echo "== $*"; }

command -v nvcc >/dev/null || [ -x /usr/local/cuda/bin/nvcc ] || die "nvcc not found: a CUDA build needs the CUDA toolkit"
for tool in cmake ctest python3 apt-get dpkg dpkg-query strip ldd xz; do
    command -v "$tool" >/dev/null || die "'$tool' not found on this machine"
done

mkdir -p "$WORK"
step "configure $BUILD (CUDA, sm_90, Release)"
cmake -S "$ROOT" -B "$BUILD" -DLOUPE_CUDA=ON -DLOUPE_CUDA_ARCH=90 -DCMAKE_BUILD_TYPE=Release \
    -DLOUPE_SANITIZE=OFF -DLOUPE_FUZZ=OFF -DLOUPE_TESTS=ON >"$WORK/configure.log" 2>&1 ||
    { tail -30 "$WORK/configure.log"; die "configure failed (log: $WORK/configure.log)"; }
grep -q '^LOUPE_CUDA:BOOL=ON' "$BUILD/CMakeCache.txt" || die "configure left LOUPE_CUDA off"

# check.sh rewrites these build-machine paths in the CTest files to wherever it runs.
python_path=$(sed -n 's/^LOUPE_PYTHON:FILEPATH=//p' "$BUILD/CMakeCache.txt")
cat >"$BUILD/loupe-gpu-paths.env" <<EOF
LOUPE_BUILT_SRC=$ROOT
LOUPE_BUILT_BIN=$BUILD
LOUPE_BUILT_PYTHON=$python_path
EOF

step "targets: the programs behind ctest -L gpu (fixture setups included), the CLI, GPU benches"
# ctest -N lists a label's tests with the fixture setups they need; their programs are the
# build-tree paths named on their add_test lines (sh -c strings included).
targets_txt=$(cd "$BUILD" && python3 - "$BUILD" "$ROOT" <<'PY'
import json, os, re, subprocess, sys
build, root = sys.argv[1], sys.argv[2]
info = json.loads(subprocess.run(["ctest", "-N", "-L", "gpu", "--show-only=json-v1"],
                                 capture_output=True, text=True, check=True).stdout)
names = {t["name"] for t in info["tests"]}
helptext = subprocess.run(["cmake", "--build", build, "--target", "help"],
                          capture_output=True, text=True, check=True).stdout
known = set(re.findall(r"^\.\.\. (\S+)", helptext, re.M))
out = {"loupe_cli"}
for dirpath, _, files in os.walk(build):
    if "CTestTestfile.cmake" not in files:
        continue
    for line in open(os.path.join(dirpath, "CTestTestfile.cmake")):
        m = re.match(r"add_test\(\[=\[(.*?)\]=\]", line)
        if not m or m.group(1) not in names:
            continue
        for path in re.findall(re.escape(build) + r"/[^\s\";']+", line):
            base = os.path.basename(path)
            base = "loupe_cli" if base == "loupe" else base
            if base in known:
                out.add(base)
# Bench programs that take the GPU: bench/gpu_*.c, and those named in check.sh's list.
for f in sorted(os.listdir(os.path.join(root, "bench"))):
    if f.startswith("gpu_") and f.endswith(".c"):
        out.add(f[:-2])
listed = subprocess.run(["bash", "-c", 'eval "$(sed -n "/^# BENCH-LIST-BEGIN/,/^# BENCH-LIST-END/p" "$1")"; '
                         'for b in "${GPU_BENCHES[@]}"; do echo "${b%% *}"; done',
                         "_", os.path.join(root, "tests/gpu/check.sh")],
                        capture_output=True, text=True, check=True).stdout.split()
for b in listed:
    if b not in known:
        sys.exit(f"check.sh lists bench '{b}', which is no build target")
    out.add(b)
print("\n".join(sorted(out)))
PY
) || die "could not list the targets the check needs"
mapfile -t TARGETS <<<"$targets_txt"
echo "${TARGETS[*]}"

step "build (JOBS=${JOBS:-2})"
cmake --build "$BUILD" -j"${JOBS:-2}" --target "${TARGETS[@]}" >"$WORK/build.log" 2>&1 ||
    { grep -E -m20 'error|Error' "$WORK/build.log"; die "build failed (log: $WORK/build.log)"; }
if grep -q -i 'warning' "$WORK/build.log"; then
    grep -i -m10 'warning' "$WORK/build.log"
    echo "(build warnings above; log: $WORK/build.log)"
fi

# The executables built: every ELF executable in the build tree outside CMakeFiles/.
mapfile -t EXES < <(find "$BUILD" -path "$BUILD/CMakeFiles" -prune -o -path '*/CMakeFiles' -prune -o \
    -type f -perm -u+x -print | while read -r f; do
        head -c4 "$f" | grep -q $'\x7fELF' && echo "$f"; done | sort)
[ ${#EXES[@]} -gt 0 ] || die "no executables in $BUILD"
# Executables left by an earlier full build of this tree are not the check's: drop them
# so that they do not travel (a later full build makes them again).
KEEP=()
for f in "${EXES[@]}"; do
    base=$(basename "$f"); [ "$base" = loupe ] && base=loupe_cli
    if [[ " ${TARGETS[*]} " == *" $base "* ]]; then KEEP+=("$f"); else rm -f "$f"; echo "  dropped (not the check's): ${f#"$ROOT/"}"; fi
done
EXES=("${KEEP[@]}")
strip --strip-unneeded "${EXES[@]}"
printf '  %s\n' "${EXES[@]#"$ROOT/"}"

# CMake's compiler-identification scratch (several MiB of preprocessed CUDA, and the
# probe programs: 2 MiB for CUDA) is never read again: drop it so it does not travel.
rm -rf "$BUILD"/CMakeFiles/*/CompilerId*/tmp "$BUILD"/CMakeFiles/CheckCUDA "$BUILD/Testing" \
    "$BUILD"/CMakeFiles/*/CompilerId*/a.out "$BUILD"/CMakeFiles/*/CMakeDetermineCompilerABI_*.bin

# Libraries the host may lack: what ldd resolves outside glibc's own set and CUDA.
SYSTEM_LIBS=" linux-vdso.so.1 ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libstdc++.so.6 libgcc_s.so.1 libz.so.1 libpthread.so.0 libdl.so.2 librt.so.1 "
is_cuda_lib() { [[ $1 =~ ^lib(cuda|cudart|cublas|cublasLt|cudnn[a-z_]*|nvrtc|nvJitLink|cufft|curand|cusparse|cusolver|nvToolsExt)\.so ]]; }

step "libraries to carry"
declare -A NEED=() # soname -> build machine path
for exe in "${EXES[@]}"; do
    while read -r name arrow path _; do
        [ "$arrow" = "=>" ] || continue
        [ "$path" != "not" ] || die "$exe: $name not found on the build machine"
        [[ $SYSTEM_LIBS == *" $name "* ]] && continue
        is_cuda_lib "$name" && continue
        NEED[$name]=$path
    done < <(ldd "$exe")
done
PACKAGES=" $BASE_PACKAGES "
for name in "${!NEED[@]}"; do
    real=$(readlink -f "${NEED[$name]}")
    pkg=$(dpkg -S "$real" 2>/dev/null | head -1 | cut -d: -f1) || true
    [ -n "$pkg" ] || die "$name ($real) belongs to no Debian package: carry it another way"
    echo "  $name <- $pkg"
    [[ $PACKAGES == *" $pkg "* ]] || PACKAGES="$PACKAGES$pkg "
done

step "download and unpack: $PACKAGES"
mkdir -p "$WORK/debs"
rm -rf "${WORK:?}/root" "${WORK:?}/lib" && mkdir -p "$WORK/root" "$WORK/lib" "$WORK/xz"
MANIFEST=""
for pkg in $PACKAGES; do
    # The installed version: the libraries the binaries were linked against.
    ver=$(dpkg-query -W -f='${Version}' "$pkg" 2>/dev/null) || die "$pkg is not installed here (scripts/install-deps.sh)"
    deb="$WORK/debs/${pkg}_${ver//:/%3a}_amd64.deb" # apt-get download's file name
    if [ ! -f "$deb" ] && ! (cd "$WORK/debs" && apt-get download "$pkg=$ver" >/dev/null 2>"$WORK/apt.err"); then
        # The archive has moved past the installed version (a security update): that
        # version's files are the installed ones, so take them from here, as dpkg lists them.
        echo "  $pkg $ver is no longer in the archive ($(tail -1 "$WORK/apt.err")): taking its installed files"
        dpkg -L "$pkg" | while read -r f; do
            if [ -f "$f" ] || [ -L "$f" ]; then cp -d --parents "$f" "$WORK/root/" || exit 1; fi
        done || die "copying $pkg's installed files failed"
        MANIFEST="$MANIFEST$pkg $ver (installed files)\n"
        continue
    fi
    [ -f "$deb" ] || die "apt-get download $pkg=$ver left no $deb"
    dpkg -x "$deb" "$WORK/root"
    MANIFEST="$MANIFEST$pkg $ver\n"
done

mkdir -p "$DEPS/lib"
rm -f "$DEPS"/lib/*
for name in "${!NEED[@]}"; do
    src=$(find "$WORK/root" -name "$name" \( -type f -o -type l \) | sort | head -1)
    [ -n "$src" ] || die "$name is in none of the downloaded packages ($PACKAGES)"
    cp -L "$src" "$WORK/lib/$name"
    if [ "$(stat -c %s "$WORK/lib/$name")" -gt "$XZ_OVER_BYTES" ]; then
        sum=$(sha256sum "$WORK/lib/$name" | cut -d' ' -f1)
        if [ ! -f "$WORK/xz/$name.$sum.xz" ]; then
            rm -f "$WORK/xz/$name".*.xz
            xz -T2 -6 -c "$WORK/lib/$name" >"$WORK/xz/$name.$sum.xz"
        fi
        cp "$WORK/xz/$name.$sum.xz" "$DEPS/lib/$name.xz"
    else
        cp "$WORK/lib/$name" "$DEPS/lib/$name"
    fi
done
{ echo "# Debian packages unpacked into gpu-deps/lib by tests/gpu/prepare.sh (package version)"
  printf '%b' "$MANIFEST"; } >"$DEPS/MANIFEST"
find "$DEPS/lib" -type f -printf '  %f  %s bytes\n' | sort

# Data the GPU benches read (the host is offline): Fashion-MNIST's 70,000 images and
# labels (train then test) as two IDX files, xz-compressed (25 MiB; the four .gz files
# are 29.5 MiB). bench/gpu_tsne.c unpacks them. Made once, cached in $WORK.
step "bench data: gpu-deps/data"
FMNIST_SRC=/usr/share/datasets/fashion-mnist
[ -f "$FMNIST_SRC/train-images-idx3-ubyte.gz" ] ||
    die "Fashion-MNIST is missing: apt-get install dataset-fashion-mnist (it provides $FMNIST_SRC)"
mkdir -p "$DEPS/data" "$WORK/data"
for kind in images labels; do
    out="fashion-mnist-70k-$kind.idx$([ $kind = images ] && echo 3 || echo 1)-ubyte.xz"
    if [ ! -f "$WORK/data/$out" ]; then
        python3 - "$FMNIST_SRC" "$kind" <<'PY' | xz -T2 -9 -c >"$WORK/data/$out.tmp"
import gzip, struct, sys
src, kind = sys.argv[1], sys.argv[2]
parts = [gzip.open(f"{src}/{s}-{kind}-idx{3 if kind == 'images' else 1}-ubyte.gz").read() for s in ("train", "t10k")]
hdr = 16 if kind == "images" else 8
n = sum(struct.unpack(">I", p[4:8])[0] for p in parts)
out = sys.stdout.buffer
out.write(parts[0][:4] + struct.pack(">I", n) + parts[0][8:hdr])
for p in parts:
    out.write(p[hdr:])
PY
        mv "$WORK/data/$out.tmp" "$WORK/data/$out"
    fi
    cp "$WORK/data/$out" "$DEPS/data/$out"
done
find "$DEPS/data" -type f -printf '  %f  %s bytes\n' | sort

# The check's own library step, exactly as the host runs it: every library must come
# from gpu-deps, the CUDA folders or glibc's set.
step "library check (as on the host)"
bash "$ROOT/tests/gpu/check.sh" --libs-only || die "a library would not resolve on the host (see above)"

step "sizes (the device tool carries at most 64 MiB: tracked files + carried folders)"
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
b_build=$(du -sb "$BUILD" | cut -f1)
b_deps=$(du -sb "$DEPS" | cut -f1)
b_tree=$(cd "$ROOT" && { git ls-files -z; git ls-files -z --others --exclude-standard; } |
    xargs -0 -r stat -c %s 2>/dev/null | awk '{ s += $1 } END { print s + 0 }')
printf '  %-34s %s\n' "build-gpu/" "$(mib "$b_build")" "gpu-deps/" "$(mib "$b_deps")" \
    "checkout (tracked + untracked)" "$(mib "$b_tree")" "total" "$(mib $((b_build + b_deps + b_tree)))"
if [ $((b_build + b_deps)) -gt $((LIMIT_MIB * 1024 * 1024)) ]; then
    die "build-gpu + gpu-deps = $(mib $((b_build + b_deps))), over the ${LIMIT_MIB} MiB allowed them"
fi
echo
echo "ready: run tests/gpu/check.sh on the GPU host with carry [\"build-gpu\", \"gpu-deps\"]"
