#!/usr/bin/env bash
# test_tokens.sh - `webhookctl token create|list|revoke`, the HTTP API's
# bearer tokens, against a throwaway Postgres: a token of each scope is
# printed once, in the documented shape; its row holds the SHA-256 of the
# printed text and nothing else of it (neither the text nor the random
# bytes appear in any column); the settings (app, scope, ranges, rate,
# expiry an hour ahead) are stored; `token list` shows every token and
# never a token; revoke, a second revoke, unknown and malformed ids; every
# bad input exits 2 with its message and stores nothing; the migration
# runs again unchanged; and webhooks_api_tokens notifies a listener on
# create and revoke, not on a use.
. "$(dirname "$0")/../lib.sh"

C=$BIN/webhookctl
stack_up 1

TOKEN_RE='^wht_[a-z2-7]{16}_[A-Za-z0-9_-]{43}$'

# A listener on the change channel: psql reports a notification after the
# next command, so it is fed a trivial one every 0.2 s.
(
    echo "LISTEN webhooks_api_tokens; SELECT 'listening';"
    while sleep 0.2; do echo "SELECT 1;"; done
) | psql "$DATABASE_URL" -XAtq >"$T/listen.out" 2>"$T/listen.log" &
PIDS+=($!)
check "a psql listener is on webhooks_api_tokens" \
    wait_for 20 grep -qx listening "$T/listen.out"
# notified ID: how many notifications named token ID so far
notified() { grep -c "\"webhooks_api_tokens\" with payload \"$1\"" "$T/listen.out" || true; }
notified_at_least() { [ "$(notified "$1")" -ge "$2" ]; }

# ---- create, one token of each scope ------------------------------------------

# create NAME ARGS...: webhookctl token create; the token lands in
# TOKEN[NAME], its id in ID[NAME].
declare -A TOKEN ID
create() {
    local name=$1
    shift
    expect "token create $*" 0 "shown only this once" "$C" token create "$@"
    TOKEN[$name]=$(sed -n 1p "$T/out")
    ID[$name]=$(sed -n 2p "$T/out")
}
create admin --name "ci admin"
check "the token is alone on line 1, the id on line 2, nothing more" \
    test "$(wc -l <"$T/out")" = 2
create app --name acme-backend --app acme
create ingest --name "acme ingest" --scope ingest --app acme \
    --rate-limit 50/s --allow-cidr 10.0.0.0/8,2001:db8::/32
create read --name reader --scope read --expires 1h

for k in admin app ingest read; do
    tok=${TOKEN[$k]} id=${ID[$k]}
    check "$k: the token has the documented shape" \
        grep -qE "$TOKEN_RE" <<<"$tok"
    check "$k: its id is tok_ and the token's 16 id characters" \
        test "$id" = "tok_${tok:4:16}"
    check "$k: the row holds the SHA-256 of the printed token" \
        test "$(sql "SELECT encode(token_sha256, 'hex') FROM webhooks.api_tokens WHERE id = '$id'")" \
        = "$(printf '%s' "$tok" | sha256sum | cut -d' ' -f1)"
    secret=${tok:21}
    secret_hex=$(python3 -c 'import base64, sys; print(base64.urlsafe_b64decode(sys.argv[1] + "=").hex())' "$secret")
    check "$k: neither the token, its secret nor the secret's bytes are in any column" \
        test "$(sql "SELECT count(*) FROM webhooks.api_tokens t WHERE strpos(t::text, '$secret') > 0 OR strpos(t::text, '$secret_hex') > 0 OR strpos(encode(t.token_sha256, 'hex'), '$secret_hex') > 0")" = 0
    check "$k: webhooks_api_tokens notified its creation" \
        wait_for 10 notified_at_least "$id" 1
done
check "four different tokens" \
    test "$(printf '%s\n' "${TOKEN[@]}" | sort -u | wc -l)" = 4

row() { sql "SELECT concat_ws('|', scope, coalesce(app, '-'), coalesce(allow_cidrs, '-'), coalesce(rate_limit_per_s::text, '-'), coalesce(expires_at::text, 'never'), coalesce(revoked_at::text, '-')) FROM webhooks.api_tokens WHERE id = '$1'"; }
check "admin: every app, any source, no limit, never expires" \
    test "$(row "${ID[admin]}")" = "admin|-|-|-|never|-"
check "--app alone gives scope app" test "$(row "${ID[app]}")" = "app|acme|-|-|never|-"
check "ingest: its app, ranges and rate stored" \
    test "$(row "${ID[ingest]}")" = "ingest|acme|10.0.0.0/8,2001:db8::/32|50|never|-"
check "read: every app" grep -q '^read|-|-|-|' <<<"$(row "${ID[read]}")"
check "--expires 1h: expires_at is an hour after creation and about an hour ahead" \
    test "$(sql "SELECT extract(epoch FROM expires_at - created_at) BETWEEN 3598 AND 3601 AND extract(epoch FROM expires_at - now()) BETWEEN 3580 AND 3601 FROM webhooks.api_tokens WHERE id = '${ID[read]}'")" = t

expect "token create --json" 0 "shown only this once" \
    "$C" token create --name 'json "quoted"' --scope ingest --expires 90d --json
cp "$T/out" "$T/create.json"
ID[json]=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["id"])' "$T/create.json")
check "--json: id, token, name, scope, app and expires_at (90 days ahead)" python3 - "$T/create.json" <<'PY'
import json, re, sys, time, datetime
d = json.load(open(sys.argv[1]))
assert sorted(d) == ["app", "expires_at", "id", "name", "scope", "token"], d
assert re.fullmatch(r"wht_[a-z2-7]{16}_[A-Za-z0-9_-]{43}", d["token"])
assert d["id"] == "tok_" + d["token"][4:20]
assert d["name"] == 'json "quoted"' and d["scope"] == "ingest" and d["app"] is None
exp = datetime.datetime.strptime(d["expires_at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
assert abs(exp.timestamp() - (time.time() + 90 * 86400)) < 60, d["expires_at"]
PY
check "--json: the stored hash is the token's" \
    test "$(sql "SELECT encode(token_sha256, 'hex') FROM webhooks.api_tokens WHERE id = '${ID[json]}'")" \
    = "$(python3 -c 'import hashlib, json, sys; print(hashlib.sha256(json.load(open(sys.argv[1]))["token"].encode()).hexdigest())' "$T/create.json")"
TOKEN[json]=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["token"])' "$T/create.json")

# ---- list ---------------------------------------------------------------------

# no_token FILE: FILE holds no token's text nor its secret part
no_token() {
    local t
    for t in "${TOKEN[@]}"; do
        ! grep -qF -- "${t:21}" "$1" || return 1
    done
}
expect "token list" 0 "" "$C" token list
check "token list shows every token" \
    bash -c 'for id in "$@"; do grep -q "^$id " "$0" || exit 1; done' "$T/out" "${ID[@]}"
check "token list shows names, scopes and ranges" \
    grep -q "^${ID[ingest]} .*ingest.*acme.*50/s.*10.0.0.0/8,2001:db8::/32 acme ingest$" "$T/out"
check "token list shows no token" no_token "$T/out"
expect "token list --json" 0 "" "$C" token list --json
cp "$T/out" "$T/list.json"
check "token list --json shows no token" no_token "$T/list.json"
check "token list --json: every token, newest first, each setting and no secret" \
    python3 - "$T/list.json" "${ID[json]}" "${ID[read]}" "${ID[ingest]}" "${ID[app]}" "${ID[admin]}" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["id"] for r in rows] == sys.argv[2:], [r["id"] for r in rows]
keys = ["allow_cidrs", "app", "created_at", "expires_at", "id", "last_used_at",
        "name", "rate_limit_per_s", "revoked_at", "scope"]
for r in rows:
    assert sorted(r) == keys, sorted(r)
ing = rows[2]
assert ing["scope"] == "ingest" and ing["app"] == "acme" and ing["rate_limit_per_s"] == 50
assert ing["allow_cidrs"] == "10.0.0.0/8,2001:db8::/32" and ing["name"] == "acme ingest"
assert rows[4]["app"] is None and rows[4]["expires_at"] is None and rows[4]["revoked_at"] is None
assert rows[1]["expires_at"] is not None and rows[0]["name"] == 'json "quoted"'
PY

# ---- revoke -------------------------------------------------------------------

expect "token revoke ID" 0 "" "$C" token revoke "${ID[app]}"
check "revoke says so" out_is "${ID[app]} revoked"
check "the row is revoked" \
    test "$(sql "SELECT revoked_at IS NOT NULL AND revoked_at <= now() FROM webhooks.api_tokens WHERE id = '${ID[app]}'")" = t
check "webhooks_api_tokens notified the revocation" \
    wait_for 10 notified_at_least "${ID[app]}" 2
expect "a second revoke exits 1 saying it was already revoked" 1 \
    "token ${ID[app]} was already revoked (at 20" "$C" token revoke "${ID[app]}"
expect "revoking an unknown token exits 1" 1 "no token tok_aaaaaaaaaaaaaaaa" \
    "$C" token revoke tok_aaaaaaaaaaaaaaaa
expect "revoking a malformed id exits 2" 2 "'tok_ABC' is not a token id" \
    "$C" token revoke tok_ABC
expect "revoke without an id exits 2" 2 "missing token ID" "$C" token revoke
expect "revoke with two ids exits 2" 2 "unexpected argument" \
    "$C" token revoke "${ID[read]}" "${ID[admin]}"
expect "token list --json after the revoke" 0 "" "$C" token list --json
check "the list shows when it was revoked, and only that one" python3 - "$T/out" "${ID[app]}" <<'PY'
import json, sys
rows = {r["id"]: r for r in map(json.loads, open(sys.argv[1]))}
assert all((r["revoked_at"] is not None) == (i == sys.argv[2]) for i, r in rows.items()), rows
PY
# A use (what wh_tokens_touch runs) is not a change API servers must hear
# of: after it, a revocation's notification arrives and the used token's
# count has not moved.
sql "UPDATE webhooks.api_tokens SET last_used_at = now() WHERE id = '${ID[admin]}'"
expect "revoke another token" 0 "" "$C" token revoke "${ID[ingest]}"
check "its revocation is notified" wait_for 10 notified_at_least "${ID[ingest]}" 2
check "recording a use notified nobody" test "$(notified "${ID[admin]}")" = 1
expect "token list --json after a use" 0 "" "$C" token list --json
check "the list shows when a token was last used" \
    grep -q "\"id\":\"${ID[admin]}\".*\"last_used_at\":\"20" "$T/out"

# ---- bad input: exit 2, a message naming the flag, nothing stored ---------------

before=$(sql "SELECT count(*) FROM webhooks.api_tokens")
bad() {
    local desc=$1 text=$2
    shift 2
    expect "$desc" 2 "$text" "$C" token create "$@"
    check "$desc: prints no token" test ! -s "$T/out"
}
bad "no --name" "--name is required" --app acme
bad "an empty name" "--name: must not be empty" --name ""
bad "a name over 100 bytes" "--name: at most 100 bytes" --name "$(printf 'n%.0s' {1..101})"
bad "a name with a control character" "--name: no control characters" --name $'a\tb'
bad "a bad scope" "--scope: 'owner' is not admin, app, ingest or read" --name x --scope owner
bad "scope app without --app" "--scope: app needs --app" --name x --scope app
bad "scope admin with --app" "--scope: admin tokens reach every app" --name x --scope admin --app acme
bad "a bad app id" "--app: " --name x --app "has space"
bad "a bad CIDR" "--allow-cidr: " --name x --allow-cidr 10.0.0.0/33
bad "a CIDR with host bits" "--allow-cidr: " --name x --allow-cidr 10.1.2.3/8
bad "an empty CIDR list" "--allow-cidr: no range given" --name x --allow-cidr " "
bad "a rate of zero" "--rate-limit: '0/s' is not a rate like 50/s" --name x --rate-limit 0/s
bad "a rate over 1000000/s" "--rate-limit: '1000001/s' is not a rate like 50/s" --name x --rate-limit 1000001/s
bad "a rate that is no number" "--rate-limit: 'fast' is not a rate like 50/s" --name x --rate-limit fast
bad "an expiry over 10 years" "--expires: at most 10 years" --name x --expires 3651d
bad "an expiry that is no duration" "--expires" --name x --expires soon
bad "an extra argument" "unexpected argument 'extra'" --name x extra
check "nothing was stored by the refused commands" \
    test "$(sql "SELECT count(*) FROM webhooks.api_tokens")" = "$before"
expect "an expiry of exactly 10 years is taken" 0 "" \
    "$C" token create --name ten-years --scope read --expires 3650d
expect "token without a subcommand exits 2" 2 "token: expected create, list or revoke" "$C" token
expect "an unknown token subcommand exits 2" 2 "token: unknown command 'frob' (create, list, revoke)" "$C" token frob
expect "token create --help exits 0" 0 "" "$C" token create --help
check "token create --help lists every flag" bash -c \
    'for f in --name --app --scope --allow-cidr --rate-limit --expires --json; do grep -qe "$f" "$0" || exit 1; done' "$T/out"
expect "token list without Postgres exits 1" 1 "" \
    "$C" --database-url "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2" token list

# ---- the schema ------------------------------------------------------------------

check "migration 014 runs again unchanged" env PGOPTIONS=--client-min-messages=warning \
    psql "$DATABASE_URL" -XAtq -v ON_ERROR_STOP=1 -f "$ROOT/sql/014_api_tokens.sql"
check "the table refuses a token of scope app without an app" \
    bash -c '! psql "$0" -XAtq -c "INSERT INTO webhooks.api_tokens (id, name, scope, token_sha256) VALUES ('"'tok_bbbbbbbbbbbbbbbb', 'x', 'app', decode(repeat('00', 32), 'hex')"')" 2>/dev/null' "$DATABASE_URL"
check "the table refuses a hash that is not 32 bytes" \
    bash -c '! psql "$0" -XAtq -c "INSERT INTO webhooks.api_tokens (id, name, scope, token_sha256) VALUES ('"'tok_bbbbbbbbbbbbbbbb', 'x', 'admin', decode('00', 'hex')"')" 2>/dev/null' "$DATABASE_URL"

finish
