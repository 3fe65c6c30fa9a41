#!/usr/bin/env bash
# test_docs.sh - the README's settings tables are the binaries' own
# (--settings-markdown prints them from the same table that parses flags),
# so the documentation cannot drift from the code; the API contract
# (docs/openapi.yaml) is a valid OpenAPI 3.1 document and its checker
# passes its self-test.
set -uo pipefail
ROOT=$(cd -- "$(dirname -- "$0")/../.." && pwd)
BUILD=${BUILD_DIR:-$ROOT/build}
# shellcheck source=tests/check.sh
. "$ROOT/tests/check.sh"

for bin in webhook-worker webhook-scheduler webhook-api; do
    missing=$("$BUILD/bin/$bin" --settings-markdown | while IFS= read -r line; do
        grep -qxF -- "$line" "$ROOT/README.md" || echo "$line"
    done)
    check "README lists every $bin setting as the binary does" test -z "$missing"
    [ -z "$missing" ] || echo "$missing" | sed 's/^/#   missing: /'
done
check "docs/openapi.yaml is a valid OpenAPI 3.1 document" \
    node "$ROOT/tests/verify/openapi_check.js" --spec "$ROOT/docs/openapi.yaml" --check-spec
check "the contract checker passes its self-test" \
    bash "$ROOT/tests/verify/openapi_test.sh"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
