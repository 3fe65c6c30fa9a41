#!/usr/bin/env bash
# tests/run.sh - runs the test suite and prints one closing line,
# "N passed, N failed", summing the checks of every test program.
#
#   tests/run.sh [--build DIR] [--sanitized-build DIR] [unit|integration|all]
#
# Unit tests (build/tests/test_*) run against every build given; the
# integration and end-to-end tests (tests/integration/test_*.sh) run
# against the plain build and again against the sanitizer build (only those
# listed in SANITIZED_INTEGRATION, when set), where any sanitizer report fails
# them. A test that dies without printing its counts counts as 1 failure.
set -uo pipefail

ROOT=$(cd -- "$(dirname -- "$0")/.." && pwd)
cd "$ROOT" || exit 2
BUILD=build
SANBUILD=
WHAT=all
SANITIZED_INTEGRATION=${SANITIZED_INTEGRATION:-}
while [ $# -gt 0 ]; do
    case $1 in
    --build) BUILD=$2; shift 2 ;;
    --sanitized-build) SANBUILD=$2; shift 2 ;;
    unit | integration | all) WHAT=$1; shift ;;
    *) echo "usage: tests/run.sh [--build DIR] [--sanitized-build DIR] [unit|integration|all]" >&2
       exit 2 ;;
    esac
done

total_pass=0
total_fail=0
failed_tests=()
LOGDIR=$(mktemp -d /tmp/webhook-tests.XXXXXX)

# run NAME COMMAND...: runs one test program, adds its counts.
run() {
    local name=$1 log counts p f start rc
    shift
    log="$LOGDIR/$(echo "$name" | tr '/ ' '__').log"
    start=$SECONDS
    "$@" >"$log" 2>&1
    rc=$?
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
    printf '%-52s %6d passed %4d failed %5ds\n' "$name" "$p" "$f" $((SECONDS - start))
    if [ "$f" -gt 0 ]; then
        failed_tests+=("$name")
        grep -E '^(FAIL|not ok)|CHECK failed|expected|Sanitizer|runtime error' "$log" | head -20 | sed 's/^/    /'
        echo "    (full output: $log)"
    fi
}

unit() {
    local dir=$1 t
    for t in "$dir"/tests/test_*; do
        [ -x "$t" ] || continue
        run "unit $(basename "$t") [$dir]" "$t"
    done
}

integration() {
    local dir=$1 only=${2:-} t name
    for t in tests/integration/test_*.sh; do
        name=$(basename "$t")
        if [ -n "$only" ] && [[ " $only " != *" $name "* ]]; then
            continue
        fi
        run "integration $name [$dir]" env BUILD_DIR="$ROOT/$dir" "$t"
    done
}

if [ "$WHAT" != integration ]; then
    unit "$BUILD"
    [ -n "$SANBUILD" ] && unit "$SANBUILD"
fi
if [ "$WHAT" != unit ]; then
    integration "$BUILD"
    [ -n "$SANBUILD" ] && integration "$SANBUILD" "$SANITIZED_INTEGRATION"
fi

if [ ${#failed_tests[@]} -gt 0 ]; then
    echo "failed: ${failed_tests[*]}"
else
    rm -rf "$LOGDIR"
fi
echo "$total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
