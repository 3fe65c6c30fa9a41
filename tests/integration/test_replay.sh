#!/usr/bin/env bash
# test_replay.sh - webhookctl replay and dead-letters against the real
# worker, scheduler, broker and Postgres:
# - a succeeded delivery replayed with --delivery arrives again with the
#   same webhook-id and a valid signature; the history gains attempt 2;
# - --event replays to every endpoint the event went to (and refuses an
#   event id found in two apps without --app);
# - --endpoint --since 1h --outcome failed replays only the failed
#   deliveries of the endpoint; --dry-run sends nothing; --until bounds it;
# - a delivery with a retry already scheduled is skipped;
# - an always-failing endpoint with --retry-schedule none ends as a dead
#   letter, dead-letters list shows it (text and --json), and once the
#   receiver is healthy again dead-letters replay delivers it with the
#   same webhook-id, after which it is no longer listed;
# - a delivery whose event row was deleted is reported (exit 1) while the
#   others of the same replay still go out;
# - bad usage exits 2.
. "$(dirname "$0")/../lib.sh"

stack_up 4
secret=$(new_secret)
start_receiver a --secret "$secret"
start_receiver b --secret "$secret"
start_receiver c --secret "$secret"
start_receiver mixed --secret "$secret" --fail-first 1
start_receiver down --secret "$secret" --status 500
down_pid=${PIDS[-1]}
down_port=$(cat "$T/down.port")

ep() { # ep NAME APP TYPES SCHEDULE [PATH]
    "$BIN/webhookctl" endpoint add --app "$2" --events "$3" --secret "$secret" \
        --url "http://127.0.0.1:$(cat "$T/$1.port")/${5:-$1}" --retry-schedule "$4"
}
ep_a=$(ep a rp 't.*' 1s)
ep_b=$(ep b rp t.both 1s)
ep_c=$(ep c other '*' 1s)
ep_m=$(ep mixed rp 'm.*' none)
ep_d=$(ep down rp d.fail none d)
ep_r=$(ep down rp r.fail 1h r)
check "endpoint add accepts --retry-schedule none" test -n "$ep_d"

start_worker w1
"$BIN/webhook-scheduler" >"$T/scheduler.log" 2>&1 &
PIDS+=($!)

publish() { # publish APP TYPE ID
    "$BIN/webhook-produce" --quiet --app "$1" --type "$2" --id "$3" \
        --payload "{\"event\":\"$3\"}"
}

# run_ctl ARGS...: webhookctl ARGS; stdout in $T/ctl.out, stderr in
# $T/ctl.err, exit code in $rc (all also appended to $T/ctl.log).
run_ctl() {
    rc=0
    "$BIN/webhookctl" "$@" >"$T/ctl.out" 2>"$T/ctl.err" || rc=$?
    {
        echo "\$ webhookctl $* -> $rc"
        cat "$T/ctl.out" "$T/ctl.err"
    } >>"$T/ctl.log"
}
exits() { # exits CODE ARGS...
    local want=$1
    shift
    run_ctl "$@"
    [ "$rc" -eq "$want" ]
}
usage_error() { exits 2 "$@" && [ -s "$T/ctl.err" ]; }
out_has() { grep -q -- "$1" "$T/ctl.out"; }
err_has() { grep -q -- "$1" "$T/ctl.err"; }

did() { # did EVENT ENDPOINT: the delivery id, once the history has it
    local id="" start=$SECONDS
    while [ -z "$id" ] && ((SECONDS - start < 20)); do
        id=$(sql "SELECT DISTINCT delivery_id FROM webhooks.delivery_log WHERE event_id = '$1' AND endpoint_id = '$2'")
        [ -n "$id" ] || sleep 0.2
    done
    echo "$id"
}
history() { # history DELIVERY: "1:failed,2:succeeded"
    sql "SELECT string_agg(attempt || ':' || outcome, ',' ORDER BY attempt, attempted_at) FROM webhooks.delivery_log WHERE delivery_id = '$1'"
}
history_is() { [ "$(history "$1")" = "$2" ]; }
with_id() { # with_id RECEIVER WEBHOOK_ID: requests recorded with that id
    python3 - "$T/$1.jsonl" "$2" <<'PY'
import json, sys
n = 0
try:
    for line in open(sys.argv[1]):
        n += json.loads(line)["webhook_id"] == sys.argv[2]
except FileNotFoundError:
    pass
print(n)
PY
}
got_id() { [ "$(with_id "$1" "$2")" -ge "$3" ]; }
# same_requests RECEIVER WEBHOOK_ID N: N requests with that id, all with a
# valid signature and the same body
same_requests() {
    python3 - "$T/$1.jsonl" "$2" "$3" <<'PY'
import json, sys
r = [x for x in map(json.loads, open(sys.argv[1])) if x["webhook_id"] == sys.argv[2]]
ok = (len(r) == int(sys.argv[3]) and all(x["valid"] is True for x in r)
      and len({x["body_b64"] for x in r}) == 1)
if not ok:
    print(f"# {len(r)} requests: {[(x['valid'], x['status']) for x in r]}")
sys.exit(0 if ok else 1)
PY
}

# ---- --delivery: a succeeded delivery goes out again ----------------------
publish rp t.ok e1
check "e1 delivered" wait_for 30 got_at_least a 1
id1=$(did e1 "$ep_a")
check "e1's attempt recorded" wait_for 10 history_is "$id1" 1:succeeded
check "the event is stored in webhooks.events" \
    test "$(sql "SELECT count(*) FROM webhooks.events WHERE app = 'rp' AND event_id = 'e1'")" -ge 1
check "replay --delivery: exit 0" exits 0 replay --delivery "$id1"
check "replay --delivery: one line with id, endpoint and attempt 2" \
    out_has "^$id1 $ep_a attempt 2\$"
check "replay --delivery: summary" out_has "^replayed 1 delivery\$"
check "the replay arrives" wait_for 20 got_id a "$id1" 2
check "same webhook-id, valid signature, same body" same_requests a "$id1" 2
check "the history gains attempt 2" wait_for 20 history_is "$id1" 1:succeeded,2:succeeded

# ---- --event: every endpoint the event went to ----------------------------
publish rp t.both e2
publish other t.both e2
check "e2 delivered to a, b and c" wait_for 30 got_at_least b 1
check "e2 reached c (app other)" wait_for 30 got_at_least c 1
id2a=$(did e2 "$ep_a")
id2b=$(did e2 "$ep_b")
check "e2 recorded for a and b" wait_for 10 history_is "$id2b" 1:succeeded
check "e2 recorded for a" wait_for 10 history_is "$id2a" 1:succeeded
check "replay --event of an id in two apps without --app: exit 2" \
    usage_error replay --event e2
check "... naming the apps" err_has "occurs in apps other, rp"
check "replay --event --app: exit 0" exits 0 replay --event e2 --app rp
check "replay --event: both endpoints listed" \
    bash -c "grep -q '^$id2a $ep_a attempt 2\$' '$T/ctl.out' && grep -q '^$id2b $ep_b attempt 2\$' '$T/ctl.out'"
check "replay --event: summary" out_has "^replayed 2 deliveries\$"
check "the replay reaches a" wait_for 20 got_id a "$id2a" 2
check "the replay reaches b" wait_for 20 got_id b "$id2b" 2
check "a: same webhook-id, valid signatures" same_requests a "$id2a" 2
check "b: same webhook-id, valid signatures" same_requests b "$id2b" 2
check "c (the other app) got nothing more" test "$(received c)" -eq 1

# ---- --endpoint --since --outcome -----------------------------------------
publish rp m.x m1
publish rp m.x m2
publish rp m.x m3
check "the mixed endpoint failed 3 first attempts" wait_for 30 got_at_least mixed 3
final_failed() { [ "$(sql "SELECT count(*) FROM webhooks.delivery_log WHERE endpoint_id = '$1' AND final AND outcome = 'failed'")" -ge "$2" ]; }
check "3 final failed attempts (schedule none)" wait_for 20 final_failed "$ep_m" 3
idm1=$(did m1 "$ep_m")
idm2=$(did m2 "$ep_m")
idm3=$(did m3 "$ep_m")
check "replay m1 alone" exits 0 replay --delivery "$idm1"
check "m1 succeeded at attempt 2" wait_for 20 history_is "$idm1" 1:failed,2:succeeded
check "--outcome failed --dry-run: exit 0" \
    exits 0 replay --endpoint "$ep_m" --since 1h --outcome failed --dry-run
check "--dry-run lists m2 and m3 only" \
    bash -c "grep -q '^$idm2 $ep_m attempt 2\$' '$T/ctl.out' && grep -q '^$idm3 $ep_m attempt 2\$' '$T/ctl.out' && ! grep -q '$idm1' '$T/ctl.out'"
check "--dry-run summary" out_has "^would replay 2 deliveries\$"
sleep 1
check "--dry-run sent nothing" \
    test "$(with_id mixed "$idm2"),$(with_id mixed "$idm3")" = 1,1
check "--outcome succeeded --dry-run lists m1 only" \
    bash -c "'$BIN/webhookctl' replay --endpoint '$ep_m' --since '$(date -u +%Y-%m-%dT%H:%M:%SZ -d '-1 hour')' --outcome succeeded --dry-run | grep -c attempt | grep -qx 1"
check "--until before everything selects nothing" \
    exits 0 replay --endpoint "$ep_m" --since 1h --until '2000-01-01 00:00' --outcome failed
check "... replayed 0 deliveries" out_has "^replayed 0 deliveries\$"
check "--outcome failed: exit 0" exits 0 replay --endpoint "$ep_m" --since 1h --outcome failed
check "--outcome failed: m2 and m3 replayed" \
    bash -c "grep -q '^$idm2 ' '$T/ctl.out' && grep -q '^$idm3 ' '$T/ctl.out' && ! grep -q '$idm1' '$T/ctl.out'"
check "m2 and m3 arrive again" wait_for 20 got_id mixed "$idm3" 2
check "m2 arrived again" wait_for 20 got_id mixed "$idm2" 2
check "m2 succeeded at attempt 2" wait_for 20 history_is "$idm2" 1:failed,2:succeeded
check "m3 succeeded at attempt 2" wait_for 20 history_is "$idm3" 1:failed,2:succeeded
check "m1 was not sent again" test "$(with_id mixed "$idm1")" -eq 2

# ---- a delivery with a retry scheduled is skipped -------------------------
publish rp r.fail r1
check "r1 failed once" wait_for 30 got_at_least down 1
idr=$(did r1 "$ep_r")
retry_pending() { [ "$(sql "SELECT count(*) FROM webhooks.retries WHERE delivery_id = '$idr'")" -eq 1 ]; }
check "r1 has a retry scheduled" wait_for 20 retry_pending
check "replay of a delivery with a retry scheduled: exit 0" exits 0 replay --delivery "$idr"
check "... skipped, saying why" err_has "skipped: a retry (attempt 2) is already scheduled"
check "... summary counts it" out_has "^replayed 0 deliveries, 1 skipped"

# ---- dead letters ----------------------------------------------------------
publish rp d.fail d1
check "d1 failed" wait_for 30 got_at_least down 2
idd=$(did d1 "$ep_d")
check "d1 is a dead letter in the history" wait_for 20 final_failed "$ep_d" 1
check "dead-letters list: exit 0" exits 0 dead-letters list
check "dead-letters list shows d1" \
    bash -c "grep -q -E '^[0-9T:.Z-]+ +$idd +d1 +$ep_d +1 +500 ' '$T/ctl.out'"
check "dead-letters list does not show the retrying r1" bash -c "! grep -q '$idr' '$T/ctl.out'"
check "dead-letters list does not show replayed, succeeded m1" bash -c "! grep -q '$idm1' '$T/ctl.out'"
check "dead-letters list --json --endpoint: exit 0" \
    exits 0 dead-letters list --json --endpoint "$ep_d" --since 1h --app rp
check "dead-letters list --json parses, with the fields" \
    python3 - "$T/ctl.out" "$idd" "$ep_d" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
ok = (len(rows) == 1 and rows[0]["delivery_id"] == sys.argv[2]
      and rows[0]["endpoint_id"] == sys.argv[3] and rows[0]["event_id"] == "d1"
      and rows[0]["app"] == "rp" and rows[0]["event_type"] == "d.fail"
      and rows[0]["attempts"] == 1 and rows[0]["status_code"] == 500
      and rows[0]["error"] and rows[0]["dead_at"].endswith("Z"))
if not ok:
    print(f"# {rows}")
sys.exit(0 if ok else 1)
PY
check "dead-letters list --app of another app: nothing" \
    exits 0 dead-letters list --json --app other
check "... empty" test ! -s "$T/ctl.out"
check "dead-letters list --since the future: nothing" \
    exits 0 dead-letters list --json --since '2999-01-01T00:00:00Z'
check "... empty" test ! -s "$T/ctl.out"

# the receiver recovers on the same port
kill "$down_pid"
wait "$down_pid" 2>/dev/null || true
start_receiver up --secret "$secret" --listen "127.0.0.1:$down_port"
check "dead-letters replay --dry-run: exit 0" \
    exits 0 dead-letters replay --endpoint "$ep_d" --dry-run
check "... lists d1 at attempt 2" out_has "^$idd $ep_d attempt 2\$"
check "dead-letters replay: exit 0" exits 0 dead-letters replay --endpoint "$ep_d"
check "... replayed 1 delivery" out_has "^replayed 1 delivery\$"
check "the dead letter is delivered" wait_for 20 got_id up "$idd" 1
check "with the same webhook-id and a valid signature" same_requests up "$idd" 1
check "d1 succeeded at attempt 2" wait_for 20 history_is "$idd" 1:failed,2:succeeded
check "d1 is no longer listed" exits 0 dead-letters list --json --endpoint "$ep_d"
check "... empty" test ! -s "$T/ctl.out"

# ---- an event no longer stored ----------------------------------------------
publish rp t.ok e9
check "e9 delivered" wait_for 30 got_at_least a 5
id9=$(did e9 "$ep_a")
check "e9 recorded" wait_for 10 history_is "$id9" 1:succeeded
sql "DELETE FROM webhooks.events WHERE app = 'rp' AND event_id = 'e9'"
check "replay of a delivery whose event is gone: exit 1" exits 1 replay --delivery "$id9"
check "... reported" err_has "event e9 of app rp is no longer stored (retention)"
check "... summary" out_has "^replayed 0 deliveries, 1 not replayed\$"
check "replay --endpoint a: exit 1 (one event gone)" exits 1 replay --endpoint "$ep_a" --since 1h
check "... e9 reported" err_has "$id9 to $ep_a not replayed: event e9 of app rp is no longer stored"
check "... the others still went out" out_has "^replayed 2 deliveries, 1 not replayed\$"
check "e1 arrives a third time" wait_for 20 got_id a "$id1" 3
check "e2 arrives a third time" wait_for 20 got_id a "$id2a" 3
check "e9 was not sent again" test "$(with_id a "$id9")" -eq 1

# ---- bad usage ------------------------------------------------------------
check "unknown delivery: exit 1" exits 1 replay --delivery msg_nosuchdelivery
check "... says so" err_has "no delivery msg_nosuchdelivery in the history"
check "no selector: exit 2" usage_error replay
check "two selectors: exit 2" usage_error replay --delivery "$id1" --event e1
check "--endpoint without --since: exit 2" usage_error replay --endpoint "$ep_a"
check "--since without --endpoint: exit 2" usage_error replay --event e1 --since 1h
check "--app without --event: exit 2" usage_error replay --delivery "$id1" --app rp
check "--outcome other: exit 2" usage_error replay --endpoint "$ep_a" --since 1h --outcome maybe
check "--since not a time: exit 2" usage_error replay --endpoint "$ep_a" --since yesterdayish
check "... says why" err_has "is not a time"
check "--since a bare number: exit 2" usage_error replay --endpoint "$ep_a" --since 2026
check "--until not a time: exit 2" usage_error replay --endpoint "$ep_a" --since 1h --until 2026-13-45
check "--limit 0: exit 2" usage_error replay --delivery "$id1" --limit 0
check "--limit 1000001: exit 2" usage_error replay --delivery "$id1" --limit 1000001
check "bad endpoint id: exit 2" usage_error replay --endpoint 'not an id' --since 1h
check "positional argument: exit 2" usage_error replay "$id1"
check "dead-letters without a command: exit 2" usage_error dead-letters
check "dead-letters frobnicate: exit 2" usage_error dead-letters frobnicate
check "dead-letters list --since not a time: exit 2" usage_error dead-letters list --since soon
check "dead-letters replay --outcome: exit 2" usage_error dead-letters replay --outcome failed
check "replay --help: exit 0" exits 0 replay --help
check "usage mentions the webhook.dead topic" \
    bash -c "'$BIN/webhookctl' --help | grep -q 'webhook.dead topic'"
finish
