#!/usr/bin/env bash
# Builds aiq's libFuzzer targets (fuzz/, clang with ASan+UBSan) and runs them for a bounded time
# on their seed corpora (fuzz/corpus/<target>/). Fails loudly, naming the reproducer, on a crash,
# a sanitizer report, a broken property, a timeout or an out-of-memory.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TARGETS=(fuzz_job fuzz_canon fuzz_result fuzz_sim_request)

usage() {
    cat <<USAGE
usage: tools/fuzz.sh [options] [TARGET|all] [SECONDS]

Runs each fuzz target for SECONDS (default 30) with its seed corpus and dictionary; new
inputs go to a temporary corpus, never into fuzz/corpus/.

  TARGET          ${TARGETS[*]} (the fuzz_ prefix may be left out), or all (default)
  SECONDS         run time per target, default 30; CI uses 20

options:
  --build-dir DIR where the clang build lives (default build-fuzz, or \$AIQ_FUZZ_BUILD_DIR);
                  configured with CC=clang-14 -DAIQ_FUZZ=ON when it is not yet
  --no-build      use the binaries as they are (ctest does this)
  --work-dir DIR  keep corpora, logs and crashes in DIR (default: a temp dir, removed when
                  every target passed, kept when one failed)
  -h, --help      this text

Exit status: 0 no finding, 1 a finding (the reproducer's path and the command to replay it are
printed), 2 usage or build error. Reproduce a finding: build-fuzz/fuzz/<target> <file>.
USAGE
}

AIQ_SCRIPT=fuzz AIQ_DIE_STATUS=2
. "$ROOT/tools/lib.sh"

build_dir="${AIQ_FUZZ_BUILD_DIR:-$ROOT/build-fuzz}"
build=1
work=""
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        -h|--help) usage; exit 0 ;;
        --build-dir) [ $# -ge 2 ] || die "--build-dir needs a value"; build_dir="$2"; shift 2 ;;
        --no-build) build=0; shift ;;
        --work-dir) [ $# -ge 2 ] || die "--work-dir needs a value"; work="$2"; shift 2 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) args+=("$1"); shift ;;
    esac
done
[ "${#args[@]}" -le 2 ] || die "too many arguments (see --help)"
which="${args[0]:-all}"
seconds="${args[1]:-30}"
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || die "SECONDS must be a positive integer, not '$seconds'"

if [ "$which" = all ]; then
    run=("${TARGETS[@]}")
else
    t="fuzz_${which#fuzz_}"
    [[ " ${TARGETS[*]} " == *" $t "* ]] || die "unknown target '$which' (one of: ${TARGETS[*]}, all)"
    run=("$t")
fi

configure() {
    local cc
    cc="$(command -v clang-14 || command -v clang || true)"
    [ -n "$cc" ] || die "clang not found: run tools/bootstrap.sh (installs clang-14 and libclang-rt-14-dev)"
    echo "fuzz: configuring $build_dir with $cc"
    CC="$cc" cmake -S "$ROOT" -B "$build_dir" -DAIQ_FUZZ=ON -DAIQ_BUILD_TESTS=OFF -DAIQ_WERROR=ON \
        >"$build_dir.configure.log" 2>&1 || { cat "$build_dir.configure.log" >&2; die "configure failed"; }
    rm -f "$build_dir.configure.log"
}

if [ "$build" = 1 ]; then
    grep -qs '^AIQ_FUZZ:BOOL=ON' "$build_dir/CMakeCache.txt" || configure
    cmake --build "$build_dir" -j2 --target "${run[@]}" >/dev/null || die "build failed"
fi

own_work=0
if [ -z "$work" ]; then
    work="$(mktemp -d /tmp/aiq-fuzz.XXXXXX)"
    own_work=1
fi
mkdir -p "$work"

# One target: its own corpus dir first (libFuzzer writes new inputs there), the seeds second.
fuzz_one() {
    local t="$1" bin="$build_dir/fuzz/$1" dict="$ROOT/fuzz/dict/json.dict"
    local dir="$work/$t" rc=0
    [ -x "$bin" ] || die "$bin missing: build with tools/fuzz.sh (without --no-build)"
    [ "$t" = fuzz_sim_request ] && dict="$ROOT/fuzz/dict/sim.dict"
    mkdir -p "$dir/corpus" "$dir/crashes"
    local t0=$SECONDS
    "$bin" -max_total_time="$seconds" -timeout=25 -rss_limit_mb=2048 -print_final_stats=1 \
        -dict="$dict" -artifact_prefix="$dir/crashes/" "$dir/corpus" "$ROOT/fuzz/corpus/$t" \
        >"$dir/log" 2>&1 || rc=$?
    local execs cov found
    execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -1)"
    cov="$(grep -o 'cov: [0-9]*' "$dir/log" | tail -1 | cut -d' ' -f2)"
    found="$(find "$dir/crashes" -type f | head -1)"
    if [ "$rc" != 0 ] || [ -n "$found" ]; then
        echo "fuzz: FINDING in $t (exit $rc) after $((SECONDS - t0)) s" >&2
        grep -E 'ERROR: |runtime error|check failed|SUMMARY' "$dir/log" | head -8 >&2 || true
        echo "fuzz:   reproducer: ${found:-none written; see the log}" >&2
        echo "fuzz:   replay:     $bin ${found:-}" >&2
        echo "fuzz:   full log:   $dir/log" >&2
        return 1
    fi
    echo "fuzz: $t ok: ${execs:-?} runs in $((SECONDS - t0)) s, coverage ${cov:-?} edges," \
        "$(find "$dir/corpus" -type f | wc -l) new inputs"
}

failed=0
for t in "${run[@]}"; do
    fuzz_one "$t" || failed=1
done
if [ "$failed" = 1 ]; then
    echo "fuzz: FAILED; everything is kept in $work" >&2
    exit 1
fi
[ "$own_work" = 1 ] && rm -rf "$work"
exit 0
