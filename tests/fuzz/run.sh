#!/usr/bin/env bash
# tests/fuzz/run.sh - runs the libFuzzer targets of tests/fuzz/ and prints
# one check per target and "N passed, N failed" last.
#
#   tests/fuzz/run.sh [--build DIR] [--seconds N | --short] [--no-build] [TARGET...]
#
# --seconds N (make fuzz, FUZZ_SECONDS): each target fuzzes for N seconds
# from its seeds (tests/fuzz/corpus/<target>, read only) and its working
# corpus (DIR/corpus/<target>, kept between runs). --short (make test):
# deterministic, a few seconds a target: every seed is run once, then a
# fixed number of mutations with a fixed -seed (SHORT_RUNS below) from the
# seeds alone, without address randomization (setarch -R). Any crash,
# failed property (a trap), sanitizer report, leak or input slower than
# the timeout fails the target; the input that did it is kept as
# DIR/findings/<target>/crash-... (or leak-, timeout-, oom-), and
# `DIR/fuzz/<target> FILE` replays it. Builds DIR (make fuzz-build) first
# unless --no-build. Targets run one at a time (each is one process on one
# core).
set -uo pipefail
ROOT=$(cd -- "$(dirname -- "$0")/../.." && pwd)
cd "$ROOT" || exit 2
BUILD=build-fuzzer
SECONDS_EACH=
SHORT=0
DO_BUILD=1
only=()
while [ $# -gt 0 ]; do
    case $1 in
    --build) BUILD=$2; shift 2 ;;
    --seconds) SECONDS_EACH=$2; shift 2 ;;
    --short) SHORT=1; shift ;;
    --no-build) DO_BUILD=0; shift ;;
    -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) only+=("$1"); shift ;;
    esac
done
# shellcheck source=tests/check.sh
. "$ROOT/tests/check.sh"

# target -> longest input tried (past each target's bound), dictionary and
# mutations in the short pass (about 5 s each on one core of the dev box)
declare -A MAX_LEN=([fuzz_json]=16384 [fuzz_envelope]=16384
    [fuzz_protobuf]=16384 [fuzz_url]=4200 [fuzz_netlist]=20000
    [fuzz_metrics]=9000 [fuzz_utf8]=4096 [fuzz_rows]=16384)
declare -A DICT=([fuzz_json]=envelope.dict [fuzz_envelope]=envelope.dict
    [fuzz_url]=url.dict [fuzz_metrics]=http.dict [fuzz_netlist]=netlist.dict)
declare -A SHORT_RUNS=([fuzz_json]=150000 [fuzz_envelope]=30000
    [fuzz_protobuf]=20000 [fuzz_url]=150000 [fuzz_netlist]=40000
    [fuzz_metrics]=20000 [fuzz_utf8]=80000 [fuzz_rows]=6000)
SHORT_SEED=1
SHORT_CAP_S=20  # a slow machine stops here (then not deterministic)
TIMEOUT_S=10    # one input taking longer is a finding

# Without address randomization the random phase repeats exactly: the
# comparisons libFuzzer learns from include pointers.
NOASLR=()
if setarch "$(uname -m)" -R true 2>/dev/null; then
    NOASLR=(setarch "$(uname -m)" -R)
fi

if [ "$DO_BUILD" = 1 ]; then
    mkdir -p "$BUILD"
    make -s -j2 fuzz-build FUZZ_B="$BUILD" >"$BUILD/build.log" 2>&1 ||
        echo "# make fuzz-build failed (see $BUILD/build.log)"
fi
targets=()
for src in tests/fuzz/fuzz_*.c; do
    t=$(basename "$src" .c)
    if [ ${#only[@]} -gt 0 ] && [[ " ${only[*]} " != *" $t "* ]]; then
        continue
    fi
    targets+=("$t")
done

for t in "${targets[@]}"; do
    bin=$BUILD/fuzz/$t
    seeds=tests/fuzz/corpus/$t
    if [ ! -x "$bin" ]; then
        not_ok "$t: built (see $BUILD/build.log)"
        continue
    fi
    if [ ! -d "$seeds" ]; then
        not_ok "$t: has seeds in $seeds"
        continue
    fi
    findings=$BUILD/findings/$t
    mkdir -p "$findings"
    log=$BUILD/logs/$t.log
    mkdir -p "$(dirname "$log")"
    opts=(-timeout="$TIMEOUT_S" -rss_limit_mb=2048 -max_len="${MAX_LEN[$t]:-4096}"
          -artifact_prefix="$findings/" -print_final_stats=1)
    [ -n "${DICT[$t]:-}" ] && opts+=(-dict="tests/fuzz/${DICT[$t]}")
    nseeds=$(find "$seeds" -type f | wc -l)
    start=$SECONDS
    if [ "$SHORT" = 1 ]; then
        # every seed once, in name order, then the bounded random phase
        # from an empty scratch corpus plus the seeds
        mapfile -t files < <(find "$seeds" -type f | sort)
        "$bin" "${opts[@]}" "${files[@]}" >"$log" 2>&1
        rc=$?
        if [ "$rc" -eq 0 ]; then
            scratch=$(mktemp -d /tmp/webhook-fuzz.XXXXXX)
            "${NOASLR[@]}" "$bin" "${opts[@]}" -seed="$SHORT_SEED" -runs="${SHORT_RUNS[$t]:-20000}" \
                -max_total_time="$SHORT_CAP_S" -reload=0 "$scratch" "$seeds" >>"$log" 2>&1
            rc=$?
            rm -rf "$scratch"
        fi
        what="$nseeds seeds, ${SHORT_RUNS[$t]:-20000} runs with -seed=$SHORT_SEED"
        [ ${#NOASLR[@]} -gt 0 ] || what="$what (ASLR on: may vary)"
    else
        work=$BUILD/corpus/$t
        mkdir -p "$work"
        "$bin" "${opts[@]}" -max_total_time="${SECONDS_EACH:-60}" \
            "$work" "$seeds" >"$log" 2>&1
        rc=$?
        what="${SECONDS_EACH:-60} s from $nseeds seeds and $(find "$work" -type f | wc -l) kept inputs"
    fi
    secs=$((SECONDS - start))
    execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*$')
    cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1)
    if [ "$rc" -eq 0 ] && ! grep -qE '^==[0-9]+==ERROR|runtime error' "$log"; then
        ok "$t: $what; ${execs:-?} inputs, ${cov:-cov: ?}, ${secs} s"
    else
        artifact=$(grep -oE "Test unit written to [^ ]+" "$log" | tail -1 | sed 's/.* to //')
        not_ok "$t: $what; exit $rc after ${secs} s; input: ${artifact:-none written}; log: $log"
        grep -E '^==[0-9]+==ERROR|SUMMARY|runtime error|deadly signal|#[0-9]+ 0x' "$log" | head -12 | sed 's/^/#   /'
    fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
