#!/usr/bin/env bash
# test_hardening.sh - every program in $BUILD_DIR/bin is built with the
# Makefile's hardening: a position-independent executable, full RELRO
# (a GNU_RELRO segment and BIND_NOW), stack canaries (__stack_chk_fail)
# and, in the plain tree, _FORTIFY_SOURCE (calls to checked __*_chk
# functions). A sanitizer build (one that links AddressSanitizer's runtime)
# is not fortified on purpose: that check is skipped for it, said so in the
# output. Reads the binaries with readelf; starts nothing.
set -uo pipefail
ROOT=$(cd -- "$(dirname -- "$0")/../.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build}
# shellcheck source=tests/check.sh
. "$ROOT/tests/check.sh"

if ! command -v readelf >/dev/null 2>&1; then
    not_ok "readelf (binutils) is installed"
    echo "$passed passed, $failed failed"
    exit 1
fi

bins=()
for f in "$BUILD"/bin/*; do
    [ -f "$f" ] && [ -x "$f" ] && bins+=("$f")
done
check "$BUILD/bin holds the programs (found ${#bins[@]})" test "${#bins[@]}" -ge 7

# has FILE PATTERN: the extended regex PATTERN matches a line of FILE.
has() { grep -Eq -- "$2" "$1"; }

tmp=$(mktemp -d /tmp/webhook-hardening.XXXXXX)
trap 'rm -rf "$tmp"' EXIT
for bin in "${bins[@]}"; do
    name=$(basename "$bin")
    readelf -hW "$bin" >"$tmp/h" 2>&1
    readelf -lW "$bin" >"$tmp/l" 2>&1
    readelf -dW "$bin" >"$tmp/d" 2>&1
    readelf -sW --dyn-syms "$bin" >"$tmp/s" 2>&1
    check "$name is a position-independent executable" \
        has "$tmp/h" 'Type:[[:space:]]+DYN'
    check "$name has the PIE flag" has "$tmp/d" 'FLAGS_1.*PIE'
    check "$name has full RELRO (GNU_RELRO and BIND_NOW)" \
        sh -c "grep -q GNU_RELRO '$tmp/l' && grep -Eq 'BIND_NOW|FLAGS_1.* NOW' '$tmp/d'"
    check "$name uses the stack protector (__stack_chk_fail)" \
        has "$tmp/s" '__stack_chk_fail'
    if has "$tmp/s" '__asan_init'; then
        echo "skip - $name: _FORTIFY_SOURCE not checked: sanitizer build" \
             "(the Makefile leaves FORTIFY out where AddressSanitizer" \
             "intercepts the same calls)"
    else
        fortified=$(grep -oE '__[a-z0-9_]+_chk\b' "$tmp/s" |
                    grep -v '__stack_chk' | sort -u | tr '\n' ' ')
        check "$name calls fortified functions (${fortified:-none})" \
            test -n "$fortified"
    fi
done
# -fcf-protection compiles CET instructions in, but an executable is only
# marked IBT/SHSTK when every object linked is, and Debian bookworm's C
# start files are not: nothing to check there yet.
if [ "${#bins[@]}" -gt 0 ] &&
    ! readelf -nW "${bins[0]}" 2>/dev/null | grep -q 'x86 feature:.*IBT'; then
    echo "skip - CET (IBT/SHSTK) marking not checked: the C library's start" \
         "files are not marked, so no executable is"
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
