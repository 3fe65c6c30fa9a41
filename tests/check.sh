# shellcheck shell=bash
# tests/check.sh - counting checks for the shell tests: ok, not_ok and
# check record outcomes in $passed and $failed; the test prints
# "$passed passed, $failed failed" last. Sourced by tests/lib.sh and by the
# tests that manage their own processes.
passed=0
failed=0

ok() {
    passed=$((passed + 1))
    echo "ok - $1"
}

not_ok() {
    failed=$((failed + 1))
    echo "FAIL - $1"
}

# check DESCRIPTION COMMAND...: runs the command, records the outcome.
check() {
    local desc=$1
    shift
    if "$@"; then ok "$desc"; else not_ok "$desc"; fi
}
