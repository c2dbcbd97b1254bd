#!/usr/bin/env bash
# check.sh — Loupe's GPU check, run on the offline GPU host from the repository root with
# build-gpu/ and gpu-deps/ (made by tests/gpu/prepare.sh) carried: `ctest -L gpu`, then the
# GPU bench programs, each under `timeout`, the whole under 6 minutes; a table last.
#
#   bash tests/gpu/check.sh               full check; logs in $LOUPE_OUT (default gpu-out/)
#   bash tests/gpu/check.sh --libs-only   only: does every library resolve as on the host?
# For a second, narrower run in the same session (GPU time is minutes):
#   LOUPE_CHECK_STEPS=ctest|bench|ctest,bench   the steps to run (default both)
#   LOUPE_CTEST_REGEX=REGEX                     only the gpu tests whose names match (ctest -R)
#   LOUPE_GPU_BENCHES='ENTRY; ENTRY'            these bench entries instead of the list below,
#                                               e.g. 'gpu_forward --models vgg16 @200'
# Exits non-zero if any step failed. Compiles nothing: the host has no build tools to spare.
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD=$ROOT/build-gpu
DEPS=$ROOT/gpu-deps
LIMIT_S=${LOUPE_CHECK_LIMIT_S:-345}        # the whole check; the host allows 6 minutes
CTEST_LIMIT_S=${LOUPE_CTEST_LIMIT_S:-140}  # ctest -L gpu, all tests together
BENCH_LIMIT_S=${LOUPE_BENCH_LIMIT_S:-60}   # each unlisted bench program (less if less time is left)
# ctest runs this many tests at once (the GPU is shared; most of a test's time is its CPU
# side: PyTorch exports, CPU twins), each with NCPU/jobs threads.
# An OMP_NUM_THREADS already set is kept.
NCPU=$(nproc 2>/dev/null || echo 2)
CTEST_JOBS=$((NCPU / 2 > 8 ? 8 : (NCPU / 2 < 1 ? 1 : NCPU / 2)))
if [[ ${LOUPE_CTEST_JOBS:-} =~ ^[1-9][0-9]*$ ]]; then
    CTEST_JOBS=$LOUPE_CTEST_JOBS
elif [ -n "${LOUPE_CTEST_JOBS:-}" ]; then
    echo "check.sh: LOUPE_CTEST_JOBS='$LOUPE_CTEST_JOBS' is not a positive number; using $CTEST_JOBS" >&2
fi
CTEST_THREADS=$((NCPU / CTEST_JOBS > 1 ? NCPU / CTEST_JOBS : 1))
CUDNN_DIR=/opt/torch/.venv/lib/python3.12/site-packages/nvidia/cudnn/lib # cuDNN 9.19 there
CUDA_LIB=/usr/local/cuda/lib64
HOST_VENV_PYTHON=/opt/torch/.venv/bin/python3 # the host's PyTorch (CUDA) peer

# BENCH-LIST-BEGIN (prepare.sh reads this block to know which bench targets to build)
# One entry per run, in single quotes: 'program args...' with program in build-gpu/bench/;
# args are expanded at run time and may use $LOUPE_PYTHON (the host's Python with PyTorch).
# Every bench/gpu_* program that is not listed here runs with no arguments.
# An entry may end in '@SECONDS', its own time limit (else LOUPE_BENCH_LIMIT_S).
GPU_BENCHES=(
    'gpu_forward --seconds 0.6 --max-iters 12 @125'
    'gpu_tsne --budget 55 @60'
)
# BENCH-LIST-END
STEPS=${LOUPE_CHECK_STEPS:-ctest,bench}
if [[ ! $STEPS =~ ^(ctest|bench)(,(ctest|bench))?$ ]]; then
    echo "check.sh: LOUPE_CHECK_STEPS='$STEPS': expected ctest, bench or ctest,bench" >&2
    exit 2
fi
if [ -n "${LOUPE_GPU_BENCHES:-}" ]; then
    IFS=';' read -r -a GPU_BENCHES <<<"$LOUPE_GPU_BENCHES"
    for i in "${!GPU_BENCHES[@]}"; do # trim the blanks around each entry
        e=${GPU_BENCHES[$i]}
        e=${e#"${e%%[![:space:]]*}"}
        GPU_BENCHES[$i]=${e%"${e##*[![:space:]]}"}
    done
fi

cd "$ROOT" || exit 1
if [ ! -f "$BUILD/loupe-gpu-paths.env" ]; then
    echo "check.sh: $BUILD is missing or not made by tests/gpu/prepare.sh (carry build-gpu)" >&2
    exit 2
fi
[ -d "$DEPS/lib" ] || { echo "check.sh: $DEPS/lib is missing (carry gpu-deps)" >&2; exit 2; }

# Libraries bigger than 1 MiB travel xz-compressed: unpack them outside the checkout so
# that the carried folder stays small.
LIBX=$(mktemp -d "${TMPDIR:-/tmp}/loupe-gpu-libs.XXXXXX") || exit 1
trap 'rm -rf "$LIBX"' EXIT
for f in "$DEPS"/lib/*.xz; do
    [ -e "$f" ] || continue
    name=$(basename "$f" .xz)
    if command -v xz >/dev/null; then
        xz -dc "$f" >"$LIBX/$name"
    else
        python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "$LIBX/$name"
    fi || { echo "check.sh: could not unpack $f" >&2; exit 2; }
done
export LD_LIBRARY_PATH="$LIBX:$DEPS/lib:$CUDNN_DIR:$CUDA_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

# Every ELF executable of the carried build (CMake's own scratch aside).
list_exes() {
    find "$BUILD" -path '*/CMakeFiles' -prune -o -type f -perm -u+x -print | sort | while read -r f; do
        head -c4 "$f" | grep -q $'\x7fELF' && echo "$f"
    done
}

# Each library must come from the carried set, the CUDA folders (by name: the host has
# them in /usr/local/cuda/lib64 and the cuDNN folder) or glibc's own set the host has.
SYSTEM_LIBS=" linux-vdso.so.1 ld-linux-x86-64.so.2 libc.so.6 libm.so.6 libstdc++.so.6 libgcc_s.so.1 libz.so.1 libpthread.so.0 libdl.so.2 librt.so.1 "
is_cuda_lib() { [[ $1 =~ ^lib(cuda|cudart|cublas|cublasLt|cudnn[a-z_]*|nvrtc|nvJitLink|cufft|curand|cusparse|cusolver|nvToolsExt)\.so ]]; }
check_libs() {
    local bad=0 exe name arrow path n=0
    while read -r exe; do
        n=$((n + 1))
        while read -r name arrow path _; do
            [ "$arrow" = "=>" ] || continue
            if [ "$path" = "not" ]; then
                echo "  ${exe#"$ROOT/"}: $name not found"; bad=1
            elif [[ $path == "$LIBX/"* || $path == "$DEPS/lib/"* ]]; then
                :
            elif is_cuda_lib "$name"; then
                echo "  ${exe#"$ROOT/"}: $name (CUDA) => $path"
            elif [[ $SYSTEM_LIBS != *" $name "* ]]; then
                echo "  ${exe#"$ROOT/"}: $name => $path: from the system, not gpu-deps (add its package in prepare.sh)"
                bad=1
            fi
        done < <(ldd "$exe" 2>&1)
    done < <(list_exes)
    [ "$n" -gt 0 ] || { echo "  no executables in $BUILD"; bad=1; }
    [ "$bad" -eq 0 ] && echo "  $n programs: every library resolves (gpu-deps, CUDA, glibc's set)"
    return "$bad"
}

if [ "${1:-}" = "--libs-only" ]; then
    check_libs
    exit $?
fi

OUT=${LOUPE_OUT:-gpu-out}
mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd) || exit 2
rm -f "$OUT/check.log" "$OUT/ctest.log" "$OUT/ctest-junit.xml" "$OUT/bench.log" "$OUT/summary.txt"
exec > >(tee -a "$OUT/check.log") 2>&1

STEP_NAMES=() STEP_RESULTS=() STEP_SECONDS=()
FAILED=0
record() { STEP_NAMES+=("$1"); STEP_RESULTS+=("$2"); STEP_SECONDS+=("$3"); [[ $2 == ok* || $2 == info* ]] || FAILED=1; }

echo "== Loupe GPU check: $(date -u '+%Y-%m-%d %H:%M:%S UTC'), $(uname -n), logs in $OUT"
if command -v nvidia-smi >/dev/null &&
    gpu=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null) && [ -n "$gpu" ]; then
    HAVE_GPU=1
    echo "GPU: $gpu"
    record "device" "info: $(echo "$gpu" | head -1 | cut -d, -f1)" 0
else
    HAVE_GPU=0
    echo "GPU: no GPU (nvidia-smi absent or lists none); the gpu tests still run and report their skip"
    record "device" "info: no GPU" 0
fi
echo "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"

# The CTest files name the build machine's absolute paths: rewrite them to this checkout
# (through placeholders, so that a new path holding the old one is not rewritten twice).
# shellcheck disable=SC1091
. "$BUILD/loupe-gpu-paths.env"
sed_pat() { printf '%s' "$1" | sed 's/[][\.*^$|/]/\\&/g'; }
sed_rep() { printf '%s' "$1" | sed 's/[\|&/]/\\&/g'; }
LOUPE_PYTHON=${LOUPE_BUILT_PYTHON:-python3}
[ -x "$HOST_VENV_PYTHON" ] && LOUPE_PYTHON=$HOST_VENV_PYTHON
LOUPE_PYTHON=${LOUPE_HOST_PYTHON:-$LOUPE_PYTHON}
export LOUPE_PYTHON
if [ "$LOUPE_BUILT_BIN" != "$BUILD" ] || [ "$LOUPE_BUILT_SRC" != "$ROOT" ] || [ "$LOUPE_BUILT_PYTHON" != "$LOUPE_PYTHON" ]; then
    echo "CTest files: $LOUPE_BUILT_SRC -> $ROOT, $LOUPE_BUILT_BIN -> $BUILD, $LOUPE_BUILT_PYTHON -> $LOUPE_PYTHON"
    subst=(-e "s|$(sed_pat "$LOUPE_BUILT_BIN")|@LOUPE_GPU_BIN@|g" -e "s|$(sed_pat "$LOUPE_BUILT_SRC")|@LOUPE_GPU_SRC@|g")
    [ -z "$LOUPE_BUILT_PYTHON" ] || subst+=(-e "s|$(sed_pat "$LOUPE_BUILT_PYTHON")|@LOUPE_GPU_PY@|g")
    subst+=(-e "s|@LOUPE_GPU_BIN@|$(sed_rep "$BUILD")|g" -e "s|@LOUPE_GPU_SRC@|$(sed_rep "$ROOT")|g"
        -e "s|@LOUPE_GPU_PY@|$(sed_rep "$LOUPE_PYTHON")|g")
    find "$BUILD" -name CTestTestfile.cmake -exec sed -i "${subst[@]}" {} +
    # Paths compiled into the programs (test data, assets) still name the build machine's
    # checkout: where that path is free here, point it at this one.
    if [ "$LOUPE_BUILT_SRC" != "$ROOT" ] && [ ! -e "$LOUPE_BUILT_SRC" ]; then
        if mkdir -p "$(dirname "$LOUPE_BUILT_SRC")" 2>/dev/null && ln -s "$ROOT" "$LOUPE_BUILT_SRC" 2>/dev/null; then
            echo "linked $LOUPE_BUILT_SRC -> $ROOT (paths compiled into the programs)"
        else
            echo "note: could not link $LOUPE_BUILT_SRC -> $ROOT; programs that read compiled-in paths may fail"
        fi
    fi
    printf 'LOUPE_BUILT_SRC=%s\nLOUPE_BUILT_BIN=%s\nLOUPE_BUILT_PYTHON=%s\n' "$ROOT" "$BUILD" "$LOUPE_PYTHON" \
        >"$BUILD/loupe-gpu-paths.env"
fi

# run_step NAME LIMIT_S LOG CMD... : CMD under `timeout`, its output to the console and LOG.
run_step() {
    local name=$1 limit=$2 log=$3 t0=$SECONDS rc
    shift 3
    echo
    echo "== $name (limit ${limit}s): $*" | tee -a "$log"
    timeout -k 10 "$limit" "$@" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    STEP_RC=$rc STEP_T=$((SECONDS - t0))
    case $rc in
        0) STEP_RESULT=ok ;;
        124 | 137) STEP_RESULT="TIMEOUT after ${limit}s" ;;
        *) STEP_RESULT="FAIL (exit $rc)" ;;
    esac
}

echo
echo "== libraries"
t0=$SECONDS
if check_libs; then record "libraries" ok $((SECONDS - t0)); else record "libraries" "FAIL (see above)" $((SECONDS - t0)); fi

ctest_step() {
    local only=()
    [ -z "${LOUPE_CTEST_REGEX:-}" ] || only=(-R "$LOUPE_CTEST_REGEX")
    run_step "ctest -L gpu" "$CTEST_LIMIT_S" "$OUT/ctest.log" \
        env OMP_NUM_THREADS="${OMP_NUM_THREADS:-$CTEST_THREADS}" \
        ctest --test-dir "$BUILD" -L gpu "${only[@]}" --no-tests=error -V -j "$CTEST_JOBS" \
        --timeout $((CTEST_LIMIT_S - 20)) --output-junit "$OUT/ctest-junit.xml"
    grep -E '^[0-9]+: SKIPPED:' "$OUT/ctest.log" | sed 's/^/skip reason (test #): /'
    total=$(grep -o 'tests failed out of [0-9]*' "$OUT/ctest.log" | tail -1 | grep -o '[0-9]*$')
    skipped=$(grep -c '(Skipped)' "$OUT/ctest.log")
    result=$STEP_RESULT
    if [ "$STEP_RC" -eq 0 ] && [ "${skipped:-0}" -gt 0 ]; then
        if [ "$HAVE_GPU" -eq 1 ] && [ "${LOUPE_ALLOW_SKIP:-0}" != 1 ]; then
            result="FAIL ($skipped of ${total:-?} skipped on a GPU host)"
        elif [ "$HAVE_GPU" -eq 1 ]; then
            result="ok ($skipped of ${total:-?} skipped, LOUPE_ALLOW_SKIP=1)"
        else
            result="ok ($skipped of ${total:-?} skipped: no GPU)"
        fi
    elif [ "$STEP_RC" -eq 0 ]; then
        result="ok (${total:-?} tests)"
    fi
    record "ctest -L gpu${LOUPE_CTEST_REGEX:+ -R $LOUPE_CTEST_REGEX}" "$result" "$STEP_T"
}
[[ $STEPS == *ctest* ]] && ctest_step

# Benches: the listed ones, then any other bench/gpu_* program present (only the listed
# ones when LOUPE_GPU_BENCHES names them; none when the steps leave the benches out).
benches=()
if [[ $STEPS == *bench* ]]; then
    benches=("${GPU_BENCHES[@]}")
    if [ -z "${LOUPE_GPU_BENCHES:-}" ]; then
        for p in "$BUILD"/bench/gpu_*; do
            [ -x "$p" ] || continue
            listed=0
            for b in "${GPU_BENCHES[@]}"; do [ "${b%% *}" = "$(basename "$p")" ] && listed=1; done
            [ $listed -eq 1 ] || benches+=("$(basename "$p")")
        done
    fi
    [ ${#benches[@]} -gt 0 ] || record "bench" "info: no GPU bench programs yet" 0
fi
for entry in "${benches[@]}"; do
    own_limit=$BENCH_LIMIT_S
    if [[ $entry =~ ^(.*)\ @([0-9]+)$ ]]; then
        entry=${BASH_REMATCH[1]}
        own_limit=${BASH_REMATCH[2]}
    fi
    prog=${entry%% *}
    args=()
    [ "$prog" = "$entry" ] || eval "args=(${entry#* })"
    if [ ! -x "$BUILD/bench/$prog" ]; then
        record "bench $prog" "FAIL (not built: rerun prepare.sh)" 0
        continue
    fi
    left=$((LIMIT_S - SECONDS))
    if [ "$left" -lt 5 ]; then
        record "bench $prog" "FAIL (no time left of ${LIMIT_S}s)" 0
        continue
    fi
    limit=$((left < own_limit ? left : own_limit))
    run_step "bench $prog" "$limit" "$OUT/bench.log" "$BUILD/bench/$prog" "${args[@]}"
    record "bench $prog" "$STEP_RESULT" "$STEP_T"
done

{
    echo
    printf '%-28s | %-40s | %s\n' step result seconds
    printf '%-28s-+-%-40s-+-%s\n' "----------------------------" "----------------------------------------" "-------"
    for i in "${!STEP_NAMES[@]}"; do
        printf '%-28s | %-40s | %s\n' "${STEP_NAMES[$i]}" "${STEP_RESULTS[$i]}" "${STEP_SECONDS[$i]}"
    done
    [ "$FAILED" -eq 0 ] && echo "GPU check passed (${SECONDS}s)" || echo "GPU check FAILED (${SECONDS}s)"
} | tee "$OUT/summary.txt"
exit "$FAILED"
