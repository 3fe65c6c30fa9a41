#!/usr/bin/env bash
# test_cli.sh - webhookctl and webhook-produce run as a user runs them:
# exit codes and the messages on stderr for usage errors, invalid input,
# a missing or malformed configuration and unreachable Postgres or Kafka;
# endpoints added, listed, disabled and enabled (secrets sealed at rest);
# events published from flags, files and NDJSON on stdin, delivered by a
# worker to a local receiver (one path always failing, one slow) and read
# back with `webhookctl deliveries list` and its filters.
. "$(dirname "$0")/../lib.sh"

C=$BIN/webhookctl
P=$BIN/webhook-produce

# pycheck DESC FILE CODE: CODE (Python, using `rows`, the JSON lines of
# FILE, and `E`, the environment) must run without an exception.
pycheck() {
    local desc=$1 file=$2 code=$3
    if python3 - "$file" "$code" >"$T/py.out" 2>&1 <<'PY'; then
import json, os, sys
E = os.environ
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
exec(sys.argv[2])
PY
        ok "$desc"
    else
        not_ok "$desc: $(tail -c 400 "$T/py.out")"
    fi
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# timed NAME STDIN CMD...: runs CMD in the background with STDIN as its
# input; $T/NAME.result then holds "STATUS MILLISECONDS".
timed() {
    local name=$1 input=$2
    shift 2
    (
        start=$(date +%s%N)
        "$@" <"$input" >"$T/$name.out" 2>"$T/$name.err" &
        child=$!
        trap 'kill "$child" 2>/dev/null; exit 143' TERM
        status=0
        wait "$child" || status=$?
        echo "$status $((($(date +%s%N) - start) / 1000000))" >"$T/$name.result"
    ) &
    PIDS+=($!)
}

# dl ARGS...: `webhookctl deliveries list --json ARGS` into $T/out.
dl() { run "$C" deliveries list --json --limit 1000 "$@"; }

# dl_at_least N ARGS...: deliveries list --json ARGS shows N rows or more.
dl_at_least() {
    local n=$1
    shift
    [ "$("$C" deliveries list --json --limit 1000 "$@" | wc -l)" -ge "$n" ]
}

# refreshes ID: how often the worker logged that it reloaded endpoint ID.
refreshes() { grep -c "endpoint $1 refreshed" "$T/w1.log" || true; }
refreshes_above() { [ "$(refreshes "$1")" -gt "$2" ]; }

# ---- unreachable Kafka: started first, they run while the rest goes on ----
dead_kafka=$(free_port)
printf '%s\n' '{"id":"dead-1","app":"shop","type":"order.paid","payload":{}}' \
    '{"id":"dead-2","app":"shop","type":"order.paid","payload":{}}' >"$T/dead.ndjson"
timed dead_one /dev/null timeout 90 "$P" --kafka-brokers "127.0.0.1:$dead_kafka" \
    --app shop --type order.paid --payload '{"a":1}'
timed dead_stdin "$T/dead.ndjson" timeout 90 "$P" --kafka-brokers "127.0.0.1:$dead_kafka"

stack_up 4

# ---- webhookctl: usage, configuration, migrations ----------------------------
expect "webhookctl --help exits 0" 0 "" "$C" --help
check "webhookctl --help prints the usage on stdout" out_has "Usage: webhookctl"
check "webhookctl --help lists the commands" out_has "deliveries list"
check "webhookctl --help writes nothing on stderr" err_empty
expect "webhookctl without a command exits 2 with the usage" 2 "Usage: webhookctl" "$C"
check "webhookctl without a command writes nothing on stdout" test ! -s "$T/out"
check "webhookctl without a command lists the global options" \
    grep -qF -- "--database-url" "$T/err"
expect "unknown command exits 2" 2 "webhookctl: unknown command 'frobnicate'" "$C" frobnicate
expect "unknown global option exits 2" 2 "unknown option --frob" "$C" --frob migrate
expect "endpoint without a subcommand exits 2" 2 "endpoint: expected add, import, list, update, rotate-secret, get-key, check, disable or enable" \
    "$C" endpoint
expect "unknown endpoint subcommand exits 2" 2 "endpoint: unknown command 'remove'" \
    "$C" endpoint remove
expect "deliveries without 'list' exits 2" 2 "deliveries: expected 'list'" "$C" deliveries
expect "migrate takes no arguments" 2 "migrate takes no arguments (got 'now')" "$C" migrate now
expect "endpoint add --help exits 0" 0 "" "$C" endpoint add --help
check "endpoint add --help shows the synopsis" out_has "Usage: webhookctl endpoint add"

sql "CREATE DATABASE cli_fresh"
fresh_url=${DATABASE_URL%/*}/cli_fresh
expect "migrate on an empty database exits 0" 0 "" env DATABASE_URL="$fresh_url" "$C" migrate
check "the first migrate applies the migrations" \
    grep -qE '^schema up to date \([1-9][0-9]* migrations? applied\)$' "$T/out"
expect "migrate a second time exits 0" 0 "" env DATABASE_URL="$fresh_url" "$C" migrate
check "the second migrate applies none" out_is "schema up to date (0 migrations applied)"
check "the migrated database has the endpoints table" test "$(psql "$fresh_url" -XAtq \
    -c "SELECT to_regclass('webhooks.endpoints') IS NOT NULL")" = t
expect "--database-url overrides DATABASE_URL" 0 "" env DATABASE_URL=nonsense \
    "$C" --database-url "$fresh_url" migrate

dead_pg="postgresql://postgres@127.0.0.1:$(free_port)/webhooks"
expect "migrate with Postgres unreachable exits 1" 1 "webhookctl: cannot connect to Postgres" \
    env DATABASE_URL="$dead_pg" "$C" migrate
expect "endpoint list with Postgres unreachable exits 1" 1 "cannot connect to Postgres" \
    env DATABASE_URL="$dead_pg" "$C" endpoint list
expect "endpoint add with Postgres unreachable exits 1" 1 "cannot connect to Postgres" \
    env DATABASE_URL="$dead_pg" "$C" endpoint add --app shop --url https://127.0.0.1/h
expect "endpoint disable with Postgres unreachable exits 1" 1 "cannot connect to Postgres" \
    env DATABASE_URL="$dead_pg" "$C" endpoint disable ep_aaaaaaaaaaaa
expect "deliveries list with Postgres unreachable exits 1" 1 "cannot connect to Postgres" \
    env DATABASE_URL="$dead_pg" "$C" deliveries list
expect "a malformed DATABASE_URL exits 1" 1 "cannot connect to Postgres" \
    env DATABASE_URL=nonsense "$C" migrate
expect "migrate without DATABASE_URL exits 2" 2 "webhookctl: DATABASE_URL is not set" \
    env -u DATABASE_URL "$C" migrate
expect "endpoint list without DATABASE_URL exits 2" 2 "DATABASE_URL is not set" \
    env -u DATABASE_URL "$C" endpoint list

n_endpoints() { sql "SELECT count(*) FROM webhooks.endpoints"; }
before=$(n_endpoints)
expect "endpoint add without WEBHOOK_SECRET_KEY exits 2" 2 \
    "webhookctl: WEBHOOK_SECRET_KEY is not set" \
    env -u WEBHOOK_SECRET_KEY "$C" endpoint add --app shop --url https://127.0.0.1/h
expect "endpoint check without WEBHOOK_SECRET_KEY exits 2" 2 "WEBHOOK_SECRET_KEY is not set" \
    env -u WEBHOOK_SECRET_KEY "$C" endpoint check
expect "endpoint update --secret without WEBHOOK_SECRET_KEY exits 2" 2 \
    "WEBHOOK_SECRET_KEY is not set" \
    env -u WEBHOOK_SECRET_KEY "$C" endpoint update ep_aaaaaaaaaaaaaaaaaaaa --secret "$(new_secret)"
expect "a WEBHOOK_SECRET_KEY of the wrong length exits 2" 2 \
    "WEBHOOK_SECRET_KEY must be 32 bytes, base64 or hex encoded (got 3 characters, expected 44 or 64)" \
    env WEBHOOK_SECRET_KEY=abc "$C" endpoint add --app shop --url https://127.0.0.1/h
expect "a WEBHOOK_SECRET_KEY that is not base64 exits 2" 2 "(not valid base64 of 32 bytes)" \
    env WEBHOOK_SECRET_KEY="$(printf '%044d' 0 | tr 0 '*')" \
    "$C" endpoint add --app shop --url https://127.0.0.1/h
expect "a WEBHOOK_SECRET_KEY that is not hex exits 2" 2 "(not valid hex of 32 bytes)" \
    env WEBHOOK_SECRET_KEY="$(printf '%064d' 0 | tr 0 z)" \
    "$C" endpoint add --app shop --url https://127.0.0.1/h
expect "endpoint add with the right key exits 0" 0 "" \
    "$C" endpoint add --app keycheck --url https://127.0.0.1/k
check "a missing or malformed key adds no endpoint" test "$(n_endpoints)" -eq $((before + 1))
# listing never opens secrets: no key, or another key, lists every row
expect "endpoint list without WEBHOOK_SECRET_KEY exits 0" 0 "" \
    env -u WEBHOOK_SECRET_KEY "$C" endpoint list --app keycheck
check "and lists the endpoint" grep -q "keycheck" "$T/out"
WRONG_KEY=$(head -c 32 /dev/urandom | base64)
expect "endpoint list with another key exits 0" 0 "" \
    env WEBHOOK_SECRET_KEY="$WRONG_KEY" "$C" endpoint list --app keycheck
check "and lists the endpoint" grep -q "keycheck" "$T/out"
EP_KEYCHECK=$(sql "SELECT id FROM webhooks.endpoints WHERE app = 'keycheck'")
# the commands that open secrets name the rows they cannot open, and why
expect "endpoint check with another key exits 1" 1 "" \
    env WEBHOOK_SECRET_KEY="$WRONG_KEY" "$C" endpoint check "$EP_KEYCHECK"
check "and names the row it cannot open, and why" \
    grep -Eq "^$EP_KEYCHECK keycheck unreadable: secrets_sealed cannot be opened \(sealed under key id [0-9a-f]{8}, which is not configured\)" "$T/out"
expect "endpoint check with the right key exits 0" 0 "" "$C" endpoint check "$EP_KEYCHECK"
check "and says so" grep -qx "1 endpoints checked, 0 unreadable" "$T/out"
expect "endpoint check of an unknown id exits 1" 1 "no endpoint ep_aaaaaaaaaaaaaaaaaaaa" \
    "$C" endpoint check ep_aaaaaaaaaaaaaaaaaaaa
expect "endpoint check with a malformed id exits 2" 2 "" "$C" endpoint check nonsense
# re-sealing under another key makes the row unreadable to this one, and
# re-sealing with this key repairs it
KEYCHECK_SECRET=$(new_secret)
expect "endpoint update --secret under another key exits 0" 0 "" \
    env WEBHOOK_SECRET_KEY="$WRONG_KEY" "$C" endpoint update "$EP_KEYCHECK" --secret "$KEYCHECK_SECRET"
expect "then endpoint check with this key names it" 1 "" "$C" endpoint check "$EP_KEYCHECK"
expect "endpoint update --secret with this key exits 0" 0 "" \
    "$C" endpoint update "$EP_KEYCHECK" --secret "$KEYCHECK_SECRET"
check "and prints that it updated it" grep -qx "$EP_KEYCHECK updated" "$T/out"
expect "then endpoint check passes" 0 "" "$C" endpoint check "$EP_KEYCHECK"
expect "endpoint update with a malformed --secret exits 2" 2 \
    'webhookctl: --secret: secret must start with "whsec_"' \
    "$C" endpoint update "$EP_KEYCHECK" --secret nonsense
expect "endpoint update --secret of an unknown id exits 1" 1 "no endpoint ep_aaaaaaaaaaaaaaaaaaaa" \
    "$C" endpoint update ep_aaaaaaaaaaaaaaaaaaaa --secret "$KEYCHECK_SECRET"
# a column that fails its check is marked by list and named by check
sql "UPDATE webhooks.endpoints SET url = 'ftp://example.com/x' WHERE id = '$EP_KEYCHECK'"
expect "endpoint list with a bad URL in a row exits 0" 0 "" "$C" endpoint list --app keycheck
check "and marks the row unreadable" grep -q "# unreadable: url: " "$T/out"
expect "endpoint list --json too" 0 "" "$C" endpoint list --app keycheck --json
check "with an unreadable member" grep -q '"unreadable":"url: ' "$T/out"
expect "endpoint check names the bad URL" 1 "" "$C" endpoint check "$EP_KEYCHECK"
check "as the url column" grep -q "^$EP_KEYCHECK keycheck unreadable: url: " "$T/out"
sql "UPDATE webhooks.endpoints SET url = 'https://127.0.0.1/k' WHERE id = '$EP_KEYCHECK'"
sql "UPDATE webhooks.endpoints SET event_types = 'a,,b' WHERE id = '$EP_KEYCHECK'"
expect "endpoint check names a bad filter" 1 "" "$C" endpoint check "$EP_KEYCHECK"
check "as the event_types column" grep -q "^$EP_KEYCHECK keycheck unreadable: event_types: " "$T/out"
sql "UPDATE webhooks.endpoints SET event_types = '*', retry_schedule_ms = '{-5}' WHERE id = '$EP_KEYCHECK'"
expect "endpoint check names a bad retry schedule" 1 "" "$C" endpoint check "$EP_KEYCHECK"
check "as the retry_schedule_ms column" grep -q "^$EP_KEYCHECK keycheck unreadable: retry_schedule_ms: " "$T/out"
sql "UPDATE webhooks.endpoints SET retry_schedule_ms = NULL WHERE id = '$EP_KEYCHECK'"
sql "UPDATE webhooks.endpoints SET secrets_sealed = '\\x01' WHERE id = '$EP_KEYCHECK'"
expect "endpoint check names a sealed secret of the wrong length" 1 "" "$C" endpoint check "$EP_KEYCHECK"
check "as not a sealed secret" grep -q "^$EP_KEYCHECK keycheck unreadable: secrets_sealed " "$T/out"
expect "endpoint update --secret repairs it" 0 "" "$C" endpoint update "$EP_KEYCHECK" --secret "$KEYCHECK_SECRET"
expect "endpoint check passes again" 0 "" "$C" endpoint check "$EP_KEYCHECK"

# ---- endpoint add ------------------------------------------------------------
RECV_PORT=$(free_port)
SLOW_PORT=$(free_port)
recv_url="http://127.0.0.1:$RECV_PORT"

expect "endpoint add exits 0" 0 "" "$C" endpoint add --app shop --url "$recv_url/good" \
    --description "the good one"
check "endpoint add writes nothing on stderr" err_empty
check "endpoint add prints the id and the generated secret" test "$(wc -l <"$T/out")" -eq 2
EP_GOOD=$(sed -n 1p "$T/out")
GOOD_SECRET=$(sed -n 2p "$T/out")
check "the first line is an endpoint id" grep -qE '^ep_[a-z0-9]{8,40}$' <<<"$EP_GOOD"
check "the generated secret starts with whsec_" grep -qE '^whsec_[A-Za-z0-9+/]{32,}={0,2}$' <<<"$GOOD_SECRET"

BAD_SECRET=$(new_secret)
# unordered, so each of its failing deliveries is attempted (an ordered
# endpoint would park the rest behind the first failure)
expect "endpoint add --secret exits 0" 0 "" "$C" endpoint add --app shop --url "$recv_url/bad/hook" \
    --secret "$BAD_SECRET" --unordered --max-in-flight 4
check "endpoint add --secret prints only the id" grep -qE '^ep_[a-z0-9]{8,40}$' "$T/out"
check "endpoint add --secret prints one line" test "$(wc -l <"$T/out")" -eq 1
EP_BAD=$(cat "$T/out")

expect "endpoint add (slow endpoint) exits 0" 0 "" "$C" endpoint add --app slow \
    --url "http://127.0.0.1:$SLOW_PORT/slow" --secret "$(new_secret)"
EP_SLOW=$(cat "$T/out")
expect "endpoint add (its fast peer) exits 0" 0 "" "$C" endpoint add --app slow \
    --url "$recv_url/peer" --secret "$(new_secret)"
EP_PEER=$(cat "$T/out")

expect "endpoint add --json exits 0" 0 "" "$C" endpoint add --app other --url https://127.0.0.1/j \
    --json --events 'order.*,invoice.**' --rate-limit 50/s --timeout 2s --unordered --max-in-flight 4
pycheck "endpoint add --json prints an id and a secret" "$T/out" '
assert len(rows) == 1, rows
r = rows[0]
assert set(r) == {"id", "secret"}, r
assert r["id"].startswith("ep_") and r["secret"].startswith("whsec_"), r'
EP_JSON=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <"$T/out")
expect "endpoint add --json --secret exits 0" 0 "" "$C" endpoint add --app other \
    --url https://127.0.0.1/k --json --secret "$(new_secret)"
pycheck "endpoint add --json --secret prints only the id" "$T/out" '
assert len(rows) == 1 and set(rows[0]) == {"id"} and rows[0]["id"].startswith("ep_"), rows'
EP_OTHER=$(python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])' <"$T/out")

check "the endpoint row is stored" test "$(sql "SELECT app || ' ' || url || ' ' || description \
    FROM webhooks.endpoints WHERE id = '$EP_GOOD'")" = "shop $recv_url/good the good one"
good_b64=${GOOD_SECRET#whsec_}
check "the secret's text is not stored in the clear" test "$(sql "SELECT \
    position('$good_b64' in encode(secrets_sealed, 'escape')) + \
    position('$GOOD_SECRET' in encode(secrets_sealed, 'escape')) \
    FROM webhooks.endpoints WHERE id = '$EP_GOOD'")" = 0
check "the secret's key bytes are not stored in the clear" test "$(sql "SELECT \
    position(decode('$good_b64', 'base64') in secrets_sealed) \
    FROM webhooks.endpoints WHERE id = '$EP_GOOD'")" = 0
pg_dump "$DATABASE_URL" >"$T/dump.sql" 2>"$T/dump.err" || true
check "the database dump holds the endpoint" grep -qF -- "$EP_GOOD" "$T/dump.sql"
check "the database dump does not hold the secret" bash -c "! grep -qF -- '$good_b64' '$T/dump.sql'"

for bad in "ftp://example.com/h|URL must start with https:// or http://" \
    "http:///path|URL has no host" \
    "https://|URL has no host" \
    "https://user:pw@127.0.0.1/h|URL must not contain credentials (user:password@)" \
    "https://127.0.0.1/a b|URL must not contain whitespace or control characters" \
    "https://exa mple.com/|URL must not contain whitespace" \
    "https://127.0.0.1:99999/|URL port must be a number from 1 to 65535"; do
    expect "endpoint add --url '${bad%%|*}' exits 2" 2 "webhookctl: --url: ${bad#*|}" \
        "$C" endpoint add --app shop --url "${bad%%|*}"
done
expect "endpoint add without --app exits 2" 2 "webhookctl: --app is required" \
    "$C" endpoint add --url https://127.0.0.1/h
expect "endpoint add without --url exits 2" 2 "webhookctl: --url is required" \
    "$C" endpoint add --app shop
expect "endpoint add with an invalid --app exits 2" 2 "webhookctl: --app:" \
    "$C" endpoint add --app 'a b' --url https://127.0.0.1/h
expect "endpoint add with an invalid --events pattern exits 2" 2 \
    "webhookctl: --events: filter list entry 2: pattern 'order..paid' has an empty segment" \
    "$C" endpoint add --app shop --url https://127.0.0.1/h --events 'a.*,order..paid'
expect "endpoint add with an empty --events exits 2" 2 "webhookctl: --events: filter list is empty" \
    "$C" endpoint add --app shop --url https://127.0.0.1/h --events ''
expect "endpoint add with a secret without whsec_ exits 2" 2 \
    'webhookctl: --secret: secret must start with "whsec_"' \
    "$C" endpoint add --app shop --url https://127.0.0.1/h --secret "${BAD_SECRET#whsec_}"
expect "endpoint add with a short secret exits 2" 2 "webhookctl: --secret: secret key too short" \
    "$C" endpoint add --app shop --url https://127.0.0.1/h --secret whsec_abcd
expect "endpoint add with a secret that is not base64 exits 2" 2 "webhookctl: --secret:" \
    "$C" endpoint add --app shop --url https://127.0.0.1/h --secret 'whsec_!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!'
expect "endpoint add --rate-limit fast exits 2" 2 \
    "webhookctl: --rate-limit: 'fast' is not a rate like 50/s" \
    "$C" endpoint add --app shop --url https://127.0.0.1/h --rate-limit fast
expect "endpoint add --rate-limit 0/s exits 2" 2 "webhookctl: --rate-limit: '0/s' is not a rate" \
    "$C" endpoint add --app shop --url https://127.0.0.1/h --rate-limit 0/s
expect "endpoint add --rate-limit 5/m exits 2" 2 "webhookctl: --rate-limit: '5/m' is not a rate" \
    "$C" endpoint add --app shop --url https://127.0.0.1/h --rate-limit 5/m
expect "endpoint add --timeout 50ms exits 2" 2 "webhookctl: --timeout must be at least 100ms" \
    "$C" endpoint add --app shop --url https://127.0.0.1/h --timeout 50ms
expect "endpoint add --max-in-flight 0 exits 2" 2 "webhookctl: --max-in-flight:" \
    "$C" endpoint add --app shop --url https://127.0.0.1/h --max-in-flight 0
expect "endpoint add with an unknown option exits 2" 2 "webhookctl: unknown option --colour" \
    "$C" endpoint add --app shop --url https://127.0.0.1/h --colour red
expect "endpoint add with a stray argument exits 2" 2 "webhookctl: unexpected argument 'now'" \
    "$C" endpoint add --app shop --url https://127.0.0.1/h now
check "rejected adds store nothing" test "$(n_endpoints)" -eq $((before + 7))

# ---- endpoint import -----------------------------------------------------------
printf '%s\n' \
    '{"app":"imp1","url":"https://127.0.0.1/i1","events":"order.*"}' '' \
    '{"app":"imp2","url":"https://127.0.0.1/i2","secret":"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw","unordered":true,"max_in_flight":4,"rate_limit":"5/s","timeout":"2s","retry_schedule":"1s,2s","description":"bulk"}' \
    >"$T/import.ndjson"
expect "endpoint import of a valid file exits 0" 0 "imported 2 endpoints" \
    "$C" endpoint import --json "$T/import.ndjson"
pycheck "endpoint import prints line, id and the generated secret only" "$T/out" '
assert [r["line"] for r in rows] == [1, 3], rows
assert rows[0]["id"].startswith("ep_") and rows[0]["secret"].startswith("whsec_")
assert "secret" not in rows[1], rows[1]'
stored=$(sql "SELECT concat_ws(' ', app, event_types, ordered, max_in_flight, rate_limit_per_s, timeout_ms, retry_schedule_ms, description) FROM webhooks.endpoints WHERE app IN ('imp1', 'imp2') ORDER BY app" | tr '\n' '|')
check "endpoint import stores every member" test "$stored" = "imp1 order.* t 1 |imp2 * f 4 5 2000 {1000,2000} bulk|"
imported=$(sql "SELECT count(*) FROM webhooks.endpoints")
printf '%s\n' '{"app":"imp3","url":"https://127.0.0.1/i3"}' '{"app":"imp4","url":"ftp://x"}' >"$T/bad1.ndjson"
expect "endpoint import with a bad URL on line 2 exits 2" 2 "line 2: URL must start with https:// or http://; nothing was imported" \
    "$C" endpoint import "$T/bad1.ndjson"
printf '%s\n' '{"app":"imp5","url":"https://127.0.0.1/i5","color":"red"}' >"$T/bad2.ndjson"
expect "endpoint import names an unknown member" 2 'line 1: unknown member "color"' \
    "$C" endpoint import "$T/bad2.ndjson"
expect "endpoint import rejects a line that is not JSON" 2 "stdin line 1: invalid JSON" \
    sh -c "echo 'app=x' | '$C' endpoint import"
expect "endpoint import rejects a bad max_in_flight" 2 '"max_in_flight" must be 1-1000' \
    sh -c "echo '{\"app\":\"a\",\"url\":\"https://e.com/\",\"max_in_flight\":0}' | '$C' endpoint import -"
expect "endpoint import of a missing file exits 2" 2 "cannot open $T/none.ndjson" \
    "$C" endpoint import "$T/none.ndjson"
check "a failed import adds nothing" test "$(sql "SELECT count(*) FROM webhooks.endpoints")" -eq "$imported"
python3 -c '
for i in range(1000):
    print("{\"app\":\"bulk%d\",\"url\":\"https://127.0.0.1/b%d\"}" % (i, i))' >"$T/bulk.ndjson"
expect "endpoint import of 1,000 endpoints exits 0" 0 "imported 1000 endpoints" \
    "$C" endpoint import "$T/bulk.ndjson"
check "endpoint import prints one line per endpoint" test "$(wc -l <"$T/out")" -eq 1000
check "the 1,000 endpoints are stored" test \
    "$(sql "SELECT count(*) FROM webhooks.endpoints WHERE app LIKE 'bulk%'")" -eq 1000
sql "DELETE FROM webhooks.endpoints WHERE app LIKE 'imp%' OR app LIKE 'bulk%'" >/dev/null

# ---- endpoint list / disable / enable ----------------------------------------
expect "endpoint list exits 0" 0 "" "$C" endpoint list
check "endpoint list has a header" grep -qE '^ID +APP +STATE +ORDERING +EVENTS +URL$' "$T/out"
check "endpoint list shows every endpoint" test "$(($(wc -l <"$T/out") - 1))" -eq "$(n_endpoints)"
check "endpoint list shows the good endpoint" \
    grep -qE "^$EP_GOOD +shop +enabled +ordered +\* +$recv_url/good$" "$T/out"
expect "endpoint list --app other exits 0" 0 "" "$C" endpoint list --app other
check "endpoint list --app shows only that app" test "$(grep -c ' other ' "$T/out")" -eq 2
check "endpoint list --app shows nothing else" test "$(wc -l <"$T/out")" -eq 3
expect "endpoint list --json exits 0" 0 "" "$C" endpoint list --json
export N EP_JSON EP_GOOD EP_BAD EP_SLOW EP_PEER EP_OTHER
N=$(n_endpoints)
pycheck "endpoint list --json prints one object per endpoint" "$T/out" '
assert len(rows) == int(E["N"]), len(rows)
keys = {"id", "app", "url", "events", "ordered", "max_in_flight", "rate_limit_per_s",
        "timeout_ms", "disabled", "disabled_reason", "retry_schedule", "description", "signature",
        "client_cert", "ca_bundle",
        "created_at"}
assert all(set(r) == keys for r in rows), rows[0]
assert all(r["retry_schedule"] is None for r in rows), rows
assert all(r["signature"] == "hmac" for r in rows), rows
j = [r for r in rows if r["id"] == E["EP_JSON"]][0]
assert (j["app"], j["events"], j["ordered"], j["max_in_flight"], j["rate_limit_per_s"],
        j["timeout_ms"], j["disabled"]) == ("other", "order.*,invoice.**", False, 4, 50,
        2000, False), j
g = [r for r in rows if r["id"] == E["EP_GOOD"]][0]
assert g["description"] == "the good one" and g["ordered"] is True, g'
expect "endpoint list --json --app slow exits 0" 0 "" "$C" endpoint list --json --app slow
pycheck "endpoint list --json --app shows only that app" "$T/out" '
assert sorted(r["id"] for r in rows) == sorted([E["EP_SLOW"], E["EP_PEER"]]), rows'

expect "endpoint disable ID --reason exits 0" 0 "" "$C" endpoint disable "$EP_OTHER" \
    --reason "too many 500s"
check "endpoint disable confirms" out_is "$EP_OTHER disabled"
run "$C" endpoint list --app other
check "endpoint list shows the endpoint disabled, with the reason" \
    grep -qE "^$EP_OTHER +other +disabled .*  # too many 500s$" "$T/out"
check "the row is disabled in the database" test "$(sql "SELECT disabled::text || '|' || \
    disabled_reason || '|' || (disabled_at IS NOT NULL)::text FROM webhooks.endpoints \
    WHERE id = '$EP_OTHER'")" = "true|too many 500s|true"
expect "endpoint disable --reason R ID exits 0" 0 "" "$C" endpoint disable --reason=rotated "$EP_OTHER"
run "$C" endpoint list --json --app other
pycheck "endpoint list --json shows the new reason" "$T/out" '
r = [r for r in rows if r["id"] == E["EP_OTHER"]][0]
assert r["disabled"] is True and r["disabled_reason"] == "rotated", r'
expect "endpoint enable exits 0" 0 "" "$C" endpoint enable "$EP_OTHER"
check "endpoint enable confirms" out_is "$EP_OTHER enabled"
run "$C" endpoint list --json --app other
pycheck "endpoint list --json shows it enabled without a reason" "$T/out" '
r = [r for r in rows if r["id"] == E["EP_OTHER"]][0]
assert r["disabled"] is False and r["disabled_reason"] is None, r'
expect "disable of an unknown id exits 1" 1 "webhookctl: no endpoint ep_0000000000000000" \
    "$C" endpoint disable ep_0000000000000000
expect "enable of an unknown id exits 1" 1 "webhookctl: no endpoint ep_0000000000000000" \
    "$C" endpoint enable ep_0000000000000000
expect "disable of a malformed id exits 2" 2 '"EP-123" is not an endpoint id' \
    "$C" endpoint disable EP-123
expect "disable without an id exits 2" 2 "webhookctl: missing endpoint ID" "$C" endpoint disable
expect "disable with two ids exits 2" 2 "webhookctl: unexpected argument '$EP_GOOD'" \
    "$C" endpoint disable "$EP_OTHER" "$EP_GOOD"
expect "enable takes no --reason" 2 "webhookctl: unknown option --reason" \
    "$C" endpoint enable "$EP_OTHER" --reason x
check "rejected toggles left the endpoint enabled" test "$(sql "SELECT disabled::text FROM \
    webhooks.endpoints WHERE id = '$EP_OTHER'")" = false

# ---- the delivery stack ------------------------------------------------------
start_receiver recv --listen "127.0.0.1:$RECV_PORT" --secret "/good=$GOOD_SECRET" \
    --secret "/bad/=$BAD_SECRET" --fail-path /bad
start_receiver slow --listen "127.0.0.1:$SLOW_PORT" --delay-ms 2500
start_worker w1 LOG_LEVEL=debug

# ---- webhook-produce: usage and invalid input ----------------------------------
expect "webhook-produce --help exits 0" 0 "" "$P" --help
check "webhook-produce --help prints the usage" out_has "Usage: webhook-produce"
check "webhook-produce --help lists KAFKA_BROKERS" out_has "KAFKA_BROKERS"
expect "webhook-produce without --type exits 2" 2 \
    "webhook-produce: --app, --type and --payload are required" \
    "$P" --app shop --payload '{"a":1}'
expect "webhook-produce without --payload exits 2" 2 "--app, --type and --payload are required" \
    "$P" --app shop --type order.paid
expect "webhook-produce with invalid JSON exits 2" 2 \
    "webhook-produce: --payload: invalid JSON at byte 5: unexpected end of input" \
    "$P" --app shop --type order.paid --payload '{"a":'
expect "webhook-produce with an invalid type exits 2" 2 'type "order..paid" has an empty segment' \
    "$P" --app shop --type order..paid --payload '{}'
expect "webhook-produce with a missing file exits 2" 2 \
    "webhook-produce: cannot open $T/nope.bin: No such file or directory" \
    "$P" --app shop --type order.paid --payload "@$T/nope.bin"
head -c 2048 /dev/zero >"$T/big.bin"
expect "webhook-produce with a file over --payload-max exits 2" 2 \
    "is larger than the payload limit of 1024 bytes" \
    "$P" --app shop --type order.paid --payload "@$T/big.bin" --payload-max 1k
expect "webhook-produce with an unknown option exits 2" 2 \
    "webhook-produce: unknown option --colour (see --help)" "$P" --colour red
expect "webhook-produce with a stray argument exits 2" 2 "webhook-produce: unexpected argument 'now'" \
    "$P" --app shop --type order.paid --payload '{}' now

# ---- webhook-produce: events ---------------------------------------------------
for i in 1 2 3; do
    expect "webhook-produce event $i exits 0" 0 "" "$P" --app shop --type order.paid \
        --id "evt-a$i" --payload "{ \"n\" : $i, \"s\" : \"x y\" }"
    check "webhook-produce prints the event id" out_is "evt-a$i"
done
printf 'line one\r\n\x00\x01\xff\xfe binary \\ "quoted"\nno newline at the end' >"$T/body.txt"
expect "webhook-produce @file exits 0" 0 "" "$P" --app shop --type report.ready --id evt-file \
    --payload "@$T/body.txt" --content-type text/plain
check "webhook-produce @file prints the event id" out_is evt-file

printf '%s\n' '{"id":"nd-1","app":"shop","type":"order.paid","payload":{"n":1}}' \
    '{"id":"nd-2","app":"shop","type":"order.paid","payload":{"n":2}}' \
    '' \
    '{"id":"nd-4","app":"shop","type":"order..paid","payload":{}}' \
    '{"id":"nd-5","app":"shop","type":"order.paid","payload":{"n":5}}' >"$T/nd.ndjson"
expect "NDJSON with an invalid line exits 2" 2 \
    'webhook-produce: stdin line 4: type "order..paid" has an empty segment' "$P" <"$T/nd.ndjson"
check "NDJSON: the lines before the bad one were published" \
    grep -qF "webhook-produce: published 2 of 2 events, 1 invalid" "$T/err"
printf '%s\n' '{"id":"kg-1","app":"shop","type":"order.paid","payload":{"n":1}}' \
    '{"id":"kg-2","app":"shop","type":"order.paid","payload":{"n":' \
    '{"id":"kg-3","app":"shop","type":"order.paid","payload":{"n":3}}' >"$T/kg.ndjson"
expect "NDJSON --keep-going with an invalid line exits 2" 2 \
    "webhook-produce: stdin line 2: invalid JSON" "$P" --keep-going <"$T/kg.ndjson"
check "NDJSON --keep-going published the other lines" \
    grep -qF "webhook-produce: published 2 of 2 events, 1 invalid" "$T/err"
expect "NDJSON from '-' exits 0" 0 "published 1 of 1 events, 0 invalid" "$P" - \
    <<<'{"id":"evt-last","app":"shop","type":"order.paid","payload":{"last":true}}'
expect "NDJSON --quiet prints nothing" 0 "" "$P" --quiet \
    <<<'{"id":"evt-quiet","app":"nobody","type":"order.paid","payload":{}}'
check "NDJSON --quiet writes nothing on stderr" err_empty

# the slow endpoint's lane: s-1 is held 2.5 s by the receiver, s-2 and s-3
# wait behind it and find the endpoint disabled when their turn comes
printf '%s\n' '{"id":"s-1","app":"slow","type":"job.done","payload":{}}' \
    '{"id":"s-2","app":"slow","type":"job.done","payload":{}}' \
    '{"id":"s-3","app":"slow","type":"job.done","payload":{}}' >"$T/slow.ndjson"
expect "NDJSON for the slow endpoint exits 0" 0 "published 3 of 3 events, 0 invalid" \
    "$P" <"$T/slow.ndjson"
if wait_for 30 dl_at_least 3 --endpoint "$EP_PEER"; then
    ok "the peer of the slow endpoint got s-1..s-3"
else
    not_ok "the peer of the slow endpoint got s-1..s-3"
fi
slow_refreshes=$(refreshes "$EP_SLOW")
expect "disable the slow endpoint while its lane is busy" 0 "" "$C" endpoint disable "$EP_SLOW" \
    --reason "maintenance window"

# ---- deliveries list -----------------------------------------------------------
# 9 events for app shop: evt-a1..3, evt-file, nd-1, nd-2, kg-1, kg-3, evt-last
if wait_for 40 dl_at_least 9 --endpoint "$EP_GOOD" && wait_for 20 dl_at_least 9 --endpoint "$EP_BAD"; then
    ok "the worker delivered the 9 shop events to both endpoints"
else
    not_ok "the worker delivered the 9 shop events to both endpoints"
fi

expect "deliveries list exits 0" 0 "" "$C" deliveries list --app shop
check "deliveries list has a header" \
    grep -qE '^ATTEMPTED_AT +DELIVERY_ID +EVENT_ID +ENDPOINT_ID +TYPE +# +OUTCOME +HTTP +MS +ERROR$' "$T/out"
check "deliveries list shows the 18 attempts" test "$(grep -c ' msg_' "$T/out")" -eq 18
check "deliveries list shows succeeded rows" \
    test "$(grep -cE " $EP_GOOD +order.paid +1 succeeded +204 +[0-9]+ *$" "$T/out")" -eq 8
check "deliveries list shows failed rows" \
    test "$(grep -cE " $EP_BAD +[a-z.]+ +1 failed +500 +[0-9]+ HTTP 500$" "$T/out")" -eq 9
expect "deliveries list --outcome failed exits 0" 0 "" "$C" deliveries list --outcome failed --app shop
check "--outcome failed shows only failed rows" \
    test "$(grep -c ' msg_' "$T/out")" -eq "$(grep -c ' failed .*HTTP 500$' "$T/out")"
check "--outcome failed shows the 9 failed rows" test "$(grep -c ' failed ' "$T/out")" -eq 9
check "--outcome failed shows no succeeded row" bash -c "! grep -q succeeded '$T/out'"

dl --app shop
pycheck "deliveries list --json has the documented fields" "$T/out" '
import re
keys = ["attempted_at", "delivery_id", "event_id", "endpoint_id", "app", "event_type",
        "attempt", "outcome", "status_code", "latency_ms", "error"]
assert len(rows) == 18, len(rows)
for r in rows:
    assert all(k in r for k in keys), r
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["attempted_at"]), r
    assert r["delivery_id"].startswith("msg_") and r["app"] == "shop", r
    assert type(r["attempt"]) is int and r["attempt"] == 1, r
    assert type(r["latency_ms"]) is int and r["latency_ms"] >= 0, r
    assert type(r["status_code"]) is int, r
    if r["outcome"] == "succeeded":
        assert (r["endpoint_id"], r["status_code"], r["error"]) == (E["EP_GOOD"], 204, None), r
    else:
        assert (r["outcome"], r["endpoint_id"], r["status_code"], r["error"]) == \
            ("failed", E["EP_BAD"], 500, "HTTP 500"), r
ts = [r["attempted_at"] for r in rows]
assert ts == sorted(ts, reverse=True), "not newest first"
assert len({r["delivery_id"] for r in rows}) == 18'
dl --outcome failed --app shop
pycheck "--outcome failed --json: only failed rows with error HTTP 500" "$T/out" '
assert len(rows) == 9, len(rows)
assert all(r["outcome"] == "failed" and r["error"] == "HTTP 500" and r["status_code"] == 500
           and r["error_class"] == "http_status" for r in rows), rows'
dl --outcome succeeded --app shop
pycheck "--outcome succeeded --json: only succeeded rows" "$T/out" '
assert len(rows) == 9 and all(r["outcome"] == "succeeded" for r in rows), rows'
dl --endpoint "$EP_GOOD"
pycheck "--endpoint shows only that endpoint's attempts" "$T/out" '
assert len(rows) == 9 and all(r["endpoint_id"] == E["EP_GOOD"] for r in rows), rows
assert sorted(r["event_id"] for r in rows) == sorted(["evt-a1", "evt-a2", "evt-a3", "evt-file",
    "nd-1", "nd-2", "kg-1", "kg-3", "evt-last"]), sorted(r["event_id"] for r in rows)'
dl --event evt-a2
pycheck "--event shows only that event's attempts" "$T/out" '
assert sorted((r["event_id"], r["endpoint_id"]) for r in rows) == \
    sorted([("evt-a2", E["EP_GOOD"]), ("evt-a2", E["EP_BAD"])]), rows'
dl --event evt-a2 --outcome failed
pycheck "--event with --outcome combine" "$T/out" '
assert [(r["event_id"], r["endpoint_id"]) for r in rows] == [("evt-a2", E["EP_BAD"])], rows'
dl --event nd-5
check "the event after the bad NDJSON line was not published" test ! -s "$T/out"
dl --event kg-2
check "the invalid --keep-going line was not published" test ! -s "$T/out"
dl --endpoint ep_0000000000000000
check "--endpoint with an unknown id shows nothing" test ! -s "$T/out"
expect "deliveries list --limit 3 exits 0" 0 "" "$C" deliveries list --json --limit 3
check "--limit 3 shows 3 rows" test "$(wc -l <"$T/out")" -eq 3
expect "deliveries list --outcome bogus exits 2" 2 \
    "webhookctl: --outcome must be succeeded or failed, not 'bogus'" \
    "$C" deliveries list --outcome bogus
expect "deliveries list --limit 0 exits 2" 2 "webhookctl: --limit: 0 is below the minimum 1" \
    "$C" deliveries list --limit 0
expect "deliveries list with a stray argument exits 2" 2 "webhookctl: unexpected argument 'all'" \
    "$C" deliveries list all

# what the receiver got for the good endpoint
dl --endpoint "$EP_GOOD"
cp "$T/out" "$T/good.json"
recorded_all() {
    python3 - "$T/good.json" "$T/recv.jsonl" <<'PY'
import json, sys
want = {json.loads(l)["delivery_id"] for l in open(sys.argv[1])}
try:
    got = {json.loads(l)["webhook_id"] for l in open(sys.argv[2])}
except (OSError, ValueError):
    sys.exit(1)
sys.exit(0 if want <= got else 1)
PY
}
wait_for 10 recorded_all || true
check "the receiver got the good endpoint's deliveries, signed with the generated secret, byte-exact" \
    python3 - "$T/good.json" "$T/recv.jsonl" "$T/body.txt" <<'PY'
import base64, json, sys
dels = {json.loads(l)["delivery_id"]: json.loads(l) for l in open(sys.argv[1])}
recs = {}
for l in open(sys.argv[2]):
    r = json.loads(l)
    recs[r["webhook_id"]] = r
problems = []
for did, d in dels.items():
    r = recs.get(did)
    if r is None:
        problems.append(f"{d['event_id']}: not received")
        continue
    body = base64.b64decode(r["body_b64"])
    if r["path"] != "/good" or r["valid"] is not True:
        problems.append(f"{d['event_id']}: path {r['path']} valid {r['valid']} {r.get('verify_error')}")
    if d["event_id"] == "evt-file":
        want = open(sys.argv[3], "rb").read()
        if body != want or r["content_type"] != "text/plain":
            problems.append(f"evt-file: {r['content_type']} {body!r}")
    elif d["event_id"].startswith("evt-a"):
        n = d["event_id"][-1]
        if body != ('{"n":%s,"s":"x y"}' % n).encode() or r["content_type"] != "application/json":
            problems.append(f"{d['event_id']}: {r['content_type']} {body!r}")
for p in problems:
    print("#", p)
sys.exit(1 if problems else 0)
PY

# ---- a disabled endpoint -------------------------------------------------------
# s-1 was in flight when the endpoint was disabled and succeeds; s-2 finds
# the endpoint disabled and becomes the head of its blocked lane (a retry
# due at 'infinity'); s-3 is parked behind it, not attempted.
slow_disabled() { dl_at_least 1 --endpoint "$EP_SLOW" --outcome failed; }
if wait_for 20 slow_disabled; then
    ok "the delivery behind the disable was recorded"
else
    not_ok "the delivery behind the disable was recorded"
fi
wait_for 10 dl_at_least 2 --endpoint "$EP_SLOW" || true
dl --endpoint "$EP_SLOW"
pycheck "it failed with error_class endpoint_disabled and the reason" "$T/out" '
assert sorted(r["event_id"] for r in rows) == ["s-1", "s-2"], rows
for r in rows:
    if r["event_id"] == "s-2":
        assert (r["outcome"], r["error_class"], r["error"], r["status_code"]) == \
            ("failed", "endpoint_disabled", "endpoint is disabled: maintenance window", None), r
    else:
        assert (r["outcome"], r["status_code"]) == ("succeeded", 204), r'
run "$C" deliveries list --endpoint "$EP_SLOW" --outcome failed
check "deliveries list shows the disabled error" \
    test "$(grep -c ' failed .*endpoint is disabled: maintenance window$' "$T/out")" -eq 1
slow_parked() {
    [ "$(sql "SELECT state || ' ' || parked FROM webhooks.lane_status WHERE endpoint_id = '$EP_SLOW'")" = "blocked 1" ]
}
check "the lane is blocked with s-3 parked behind s-2" wait_for 10 slow_parked
check "s-2 waits as a retry due at infinity" \
    test "$(sql "SELECT count(*) FROM webhooks.retries WHERE endpoint_id = '$EP_SLOW' AND due_at = 'infinity'")" -eq 1

# events published after the worker has seen the disable: skipped at fan-out
# (docs/events.md: a disabled endpoint is skipped), so no attempt is recorded
wait_for 10 refreshes_above "$EP_SLOW" "$slow_refreshes" || true
printf '%s\n' '{"id":"s-4","app":"slow","type":"job.done","payload":{}}' \
    "{\"id\":\"s-5\",\"app\":\"slow\",\"type\":\"job.done\",\"payload\":{},\"endpoints\":[\"$EP_SLOW\",\"$EP_PEER\"]}" \
    >"$T/slow2.ndjson"
expect "NDJSON after the disable exits 0" 0 "published 2 of 2 events, 0 invalid" "$P" <"$T/slow2.ndjson"
if wait_for 20 dl_at_least 5 --endpoint "$EP_PEER"; then
    ok "the peer got s-4 and s-5"
else
    not_ok "the peer got s-4 and s-5"
fi
dl --endpoint "$EP_SLOW"
pycheck "the disabled endpoint got no attempt for s-4 and s-5" "$T/out" '
assert not [r for r in rows if r["event_id"] in ("s-4", "s-5")], rows'
check "the worker logged that it skipped the disabled endpoint" \
    grep -qF "event s-5: endpoint $EP_SLOW is disabled" "$T/w1.log"

"$BIN/webhook-scheduler" >"$T/scheduler.log" 2>&1 &
PIDS+=($!)
slow_refreshes=$(refreshes "$EP_SLOW")
expect "enable the slow endpoint" 0 "" "$C" endpoint enable "$EP_SLOW"
if wait_for 10 refreshes_above "$EP_SLOW" "$slow_refreshes"; then
    ok "the worker learned of the enable by NOTIFY"
else
    not_ok "the worker learned of the enable by NOTIFY"
fi
expect "publish to the re-enabled endpoint" 0 "" "$P" --app slow --type job.done --id s-6 \
    --payload '{}' --endpoint "$EP_SLOW"
s6_done() { dl_at_least 1 --event s-6 --outcome succeeded; }
if wait_for 30 s6_done; then
    ok "the re-enabled endpoint gets deliveries again"
else
    not_ok "the re-enabled endpoint gets deliveries again"
fi
dl --endpoint "$EP_SLOW" --outcome succeeded
pycheck "its lane drained in order: s-2, s-3, then s-6" "$T/out" '
got = [r["event_id"] for r in sorted(rows, key=lambda r: r["attempted_at"]) if r["event_id"] != "s-1"]
assert got == ["s-2", "s-3", "s-6"], got'

# ---- unreachable Kafka ---------------------------------------------------------
for name in dead_one dead_stdin; do
    if ! wait_for 95 test -s "$T/$name.result"; then
        not_ok "$name: no result"
        continue
    fi
    read -r status ms <"$T/$name.result"
    log "$name: exit $status after $ms ms with the brokers unreachable"
    check "$name: webhook-produce exits 1 with the brokers unreachable" test "$status" -eq 1
    check "$name: it gives up within 62 s" test "$ms" -le 62000
    check "$name: no sanitizer report" sanitizer_clean "$T/$name.err"
    check "$name: it says the events were not acknowledged" \
        grep -qE "webhook-produce: [0-9]+ messages not acknowledged by Kafka after [0-9]+ ms" "$T/$name.err"
done
check "dead_one: prints no event id" test ! -s "$T/dead_one.out"
check "dead_stdin: reports 0 of 2 published" \
    grep -qF "webhook-produce: published 0 of 2 events, 0 invalid" "$T/dead_stdin.err"

finish
