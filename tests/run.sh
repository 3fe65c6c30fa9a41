#!/usr/bin/env bash
# tests/run.sh - runs the test suite and prints one closing line,
# "N passed, N failed", summing the checks of every test program.
#
#   tests/run.sh [--build DIR] [--sanitized-build DIR] [--fuzz-build DIR]
#                [unit|integration|fuzz|all]
#
# Unit tests (build/tests/test_*) run against every build given; the
# integration and end-to-end tests (tests/integration/test_*.sh) run
# against the plain build and again against the sanitizer build (only those
# listed in SANITIZED_INTEGRATION, when set), where any sanitizer report fails
# them. A test that dies without printing its counts counts as 1 failure.
# TEST_JOBS (default 2) integration tests run at once, the longest ones
# (LONG_INTEGRATION) first so no slot idles at the end; SERIAL_INTEGRATION
# (default test_hol.sh, a timing measurement) run last, one at a time. The
# sanitizer build runs the ordering fault test with the scenarios in
# SANITIZED_ORDERING_SCENARIOS (its other scenarios' paths, a kill, a
# drain, a Postgres restart, a slow lane, are exercised under the
# sanitizers by test_crash, test_shutdown, test_pg_restart and test_parked).
# Tests in SANITIZED_SKIP run on the plain build only, to keep the suite
# within its time budget: test_partition (its lane-per-partition paths run
# sanitized in the ordering scenarios and test_parked) and test_pg_hang
# (mostly waiting out timeouts; the reconnects run sanitized in
# test_pg_restart).
# The short fuzz pass (tests/fuzz/run.sh --short: every seed, then a fixed
# number of mutations with a fixed seed, one check per target) runs after
# the unit tests, against the libFuzzer tree (default build-fuzzer/, built
# by make fuzz-build when out of date).
set -uo pipefail

ROOT=$(cd -- "$(dirname -- "$0")/.." && pwd)
cd "$ROOT" || exit 2
BUILD=build
SANBUILD=
FUZZBUILD=build-fuzzer
WHAT=all
SANITIZED_INTEGRATION=${SANITIZED_INTEGRATION:-}
SANITIZED_SKIP=${SANITIZED_SKIP-test_partition.sh test_pg_hang.sh}
while [ $# -gt 0 ]; do
    case $1 in
    --build) BUILD=$2; shift 2 ;;
    --sanitized-build) SANBUILD=$2; shift 2 ;;
    --fuzz-build) FUZZBUILD=$2; shift 2 ;;
    unit | integration | fuzz | all) WHAT=$1; shift ;;
    *) echo "usage: tests/run.sh [--build DIR] [--sanitized-build DIR] [--fuzz-build DIR] [unit|integration|fuzz|all]" >&2
       exit 2 ;;
    esac
done

total_pass=0
total_fail=0
failed_tests=()
LOGDIR=$(mktemp -d /tmp/webhook-tests.XXXXXX)

# logname NAME: where the output of test NAME goes.
logname() { echo "$LOGDIR/$(echo "$1" | tr '/ ' '__').log"; }

# tally NAME RC SECONDS: adds the counts of a finished test program.
tally() {
    local name=$1 rc=$2 secs=$3 log counts p f
    log=$(logname "$name")
    counts=$(grep -E '^([^ ]+: )?[0-9]+ passed, [0-9]+ failed' "$log" | tail -1)
    if [[ $counts =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
        p=${BASH_REMATCH[1]}
        f=${BASH_REMATCH[2]}
    else
        p=0
        f=1
    fi
    if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
        f=1
    fi
    total_pass=$((total_pass + p))
    total_fail=$((total_fail + f))
    printf '%-52s %6d passed %4d failed %5ds\n' "$name" "$p" "$f" "$secs"
    if [ "$f" -gt 0 ]; then
        failed_tests+=("$name")
        grep -E '^(FAIL|not ok)|CHECK failed|expected|Sanitizer|runtime error' "$log" | head -20 | sed 's/^/    /'
        echo "    (full output: $log)"
    fi
}

# run NAME COMMAND...: runs one test program now, adds its counts.
run() {
    local name=$1 start rc
    shift
    start=$SECONDS
    "$@" >"$(logname "$name")" 2>&1
    rc=$?
    tally "$name" "$rc" $((SECONDS - start))
}

# Integration tests are independent (own temp dirs, ports, Postgres and
# broker) and spend most of their time waiting, so TEST_JOBS of them run at
# once; those in SERIAL_INTEGRATION (timing measurements) run afterwards,
# alone.
TEST_JOBS=${TEST_JOBS:-2}
SERIAL_INTEGRATION=${SERIAL_INTEGRATION:-test_hol.sh}
LONG_INTEGRATION=${LONG_INTEGRATION:-test_ordering.sh test_shutdown.sh test_parked.sh test_pg_hang.sh test_oversize.sh}
SANITIZED_ORDERING_SCENARIOS=${SANITIZED_ORDERING_SCENARIOS:-b c g h}
queued=()   # "NAME<TAB>BUILD_DIR<TAB>SCRIPT<TAB>ENV", ENV: "VAR=value" or "-"
serial=()

# bg_run NAME COMMAND...: runs a test program in the background; its exit
# status and duration land next to its log.
bg_run() {
    local name=$1 log
    shift
    log=$(logname "$name")
    (
        start=$SECONDS
        "$@" >"$log" 2>&1
        echo "$? $((SECONDS - start))" >"$log.rc"
    ) &
    running+=("$name")
}

# reap: tallies the background tests that finished.
reap() {
    local keep=() name log rc secs
    for name in "${running[@]}"; do
        log=$(logname "$name")
        if [ -s "$log.rc" ]; then
            read -r rc secs <"$log.rc"
            tally "$name" "$rc" "$secs"
        else
            keep+=("$name")
        fi
    done
    running=("${keep[@]}")
}

# long_first: reorders queued so the tests of LONG_INTEGRATION come first,
# each build's copy of one next to the other build's copy of the next (two
# copies of one test, alike in what they load, seldom run side by side).
long_first() {
    local plain=() san=() rest=() entry name dir script env long i
    for long in $LONG_INTEGRATION; do
        for entry in "${queued[@]}"; do
            IFS=$'\t' read -r name dir script env <<<"$entry"
            [ "$(basename "$script")" = "$long" ] || continue
            if [ "$dir" = "$SANBUILD" ]; then san+=("$entry"); else plain+=("$entry"); fi
        done
    done
    for entry in "${queued[@]}"; do
        IFS=$'\t' read -r name dir script env <<<"$entry"
        [[ " $LONG_INTEGRATION " == *" $(basename "$script") "* ]] || rest+=("$entry")
    done
    # plain[0] san[1] plain[1] san[2] ... san[0] last
    queued=()
    for ((i = 0; i < ${#plain[@]} || i < ${#san[@]}; i++)); do
        [ "$i" -lt "${#plain[@]}" ] && queued+=("${plain[i]}")
        [ $((i + 1)) -lt "${#san[@]}" ] && queued+=("${san[i + 1]}")
    done
    [ "${#san[@]}" -gt 0 ] && queued+=("${san[0]}")
    queued+=("${rest[@]}")
}

run_queued() {
    local entry name dir script env
    running=()
    [ "${#queued[@]}" -gt 0 ] && long_first
    for entry in "${queued[@]}"; do
        IFS=$'\t' read -r name dir script env <<<"$entry"
        while [ "${#running[@]}" -ge "$TEST_JOBS" ]; do
            wait -n 2>/dev/null || true
            reap
        done
        if [ "$env" = - ]; then
            bg_run "$name" env BUILD_DIR="$ROOT/$dir" "$script"
        else
            bg_run "$name" env BUILD_DIR="$ROOT/$dir" "$env" "$script"
        fi
    done
    while [ "${#running[@]}" -gt 0 ]; do
        wait -n 2>/dev/null || true
        reap
    done
    for entry in "${serial[@]}"; do
        IFS=$'\t' read -r name dir script env <<<"$entry"
        run "$name" env BUILD_DIR="$ROOT/$dir" "$script"
    done
}

unit() {
    local dir=$1 t
    for t in "$dir"/tests/test_*; do
        [ -x "$t" ] || continue
        run "unit $(basename "$t") [$dir]" "$t"
    done
}

integration() {
    local dir=$1 only=${2:-} t name env=-
    for t in tests/integration/test_*.sh; do
        name=$(basename "$t")
        if [ -n "$only" ] && [[ " $only " != *" $name "* ]]; then
            continue
        fi
        if [ "$dir" = "$SANBUILD" ] && [[ " $SANITIZED_SKIP " == *" $name "* ]]; then
            continue
        fi
        env=-
        if [ "$dir" = "$SANBUILD" ] && [ "$name" = test_ordering.sh ]; then
            env="ORDERING_SCENARIOS=$SANITIZED_ORDERING_SCENARIOS"
        fi
        if [[ " $SERIAL_INTEGRATION " == *" $name "* ]]; then
            serial+=("integration $name [$dir]"$'\t'"$dir"$'\t'"$t"$'\t'"$env")
        else
            queued+=("integration $name [$dir]"$'\t'"$dir"$'\t'"$t"$'\t'"$env")
        fi
    done
}

if [ "$WHAT" = unit ] || [ "$WHAT" = all ]; then
    unit "$BUILD"
    [ -n "$SANBUILD" ] && unit "$SANBUILD"
fi
if [ "$WHAT" = fuzz ] || [ "$WHAT" = all ]; then
    run "fuzz short pass [$FUZZBUILD]" tests/fuzz/run.sh --build "$FUZZBUILD" --short
fi
if [ "$WHAT" = integration ] || [ "$WHAT" = all ]; then
    integration "$BUILD"
    [ -n "$SANBUILD" ] && integration "$SANBUILD" "$SANITIZED_INTEGRATION"
    run_queued
fi

if [ ${#failed_tests[@]} -gt 0 ]; then
    echo "failed: ${failed_tests[*]}"
else
    rm -rf "$LOGDIR"
fi
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
