#!/usr/bin/env bash
# test_keyfile.sh - WEBHOOK_SECRET_KEY_FILE: webhookctl and the worker read
# the master key from a file, so it appears in neither the command line nor
# the environment of the process; a missing file, one without a valid key,
# both settings at once, or neither, are refused (exit 2) saying which.
. "$(dirname "$0")/../lib.sh"

stack_up 1
KEY=$WEBHOOK_SECRET_KEY
(umask 077 && printf '  %s\n' "$KEY" >"$T/master.key")
secret=$(new_secret)
start_receiver r --secret "$secret"
port=$(cat "$T/r.port")
C="$BIN/webhookctl"

# ctl_rc ARGS: exit status of webhookctl endpoint add with env ARGS; its
# stderr in $T/ctl.err
ctl_rc() {
    local rc=0
    env "$@" "$C" endpoint add --app kf --events '*' --secret "$secret" \
        --url "http://127.0.0.1:$port/kf" >"$T/ctl.out" 2>"$T/ctl.err" || rc=$?
    echo "$rc"
}
check "endpoint add with the key in a file exits 0" \
    test "$(ctl_rc -u WEBHOOK_SECRET_KEY WEBHOOK_SECRET_KEY_FILE="$T/master.key")" -eq 0
ep=$(head -1 "$T/ctl.out")
check "both settings at once: exit 2" \
    test "$(ctl_rc WEBHOOK_SECRET_KEY_FILE="$T/master.key")" -eq 2
check "saying not both" grep -q "not both" "$T/ctl.err"
check "a missing key file: exit 2" \
    test "$(ctl_rc -u WEBHOOK_SECRET_KEY WEBHOOK_SECRET_KEY_FILE="$T/none.key")" -eq 2
check "naming it" grep -q "WEBHOOK_SECRET_KEY_FILE $T/none.key: No such file" "$T/ctl.err"
echo "not a key" >"$T/junk.key"
check "a file without a valid key: exit 2" \
    test "$(ctl_rc -u WEBHOOK_SECRET_KEY WEBHOOK_SECRET_KEY_FILE="$T/junk.key")" -eq 2
check "saying so, without quoting it" \
    sh -c "grep -q 'holds no valid key' '$T/ctl.err' && ! grep -q 'not a key' '$T/ctl.err'"
check "neither setting: exit 2" test "$(ctl_rc -u WEBHOOK_SECRET_KEY)" -eq 2
check "saying the key is not set" grep -q "WEBHOOK_SECRET_KEY is not set, nor WEBHOOK_SECRET_KEY_FILE" "$T/ctl.err"

rc=0
env -u WEBHOOK_SECRET_KEY WEBHOOK_SECRET_KEY_FILE="$T/none.key" WORKER_ID=wbad \
    timeout 10 "$BIN/webhook-worker" >"$T/wbad.log" 2>&1 || rc=$?
check "a worker with a missing key file exits 2 ($rc)" test "$rc" -eq 2
check "naming it" grep -q "WEBHOOK_SECRET_KEY_FILE $T/none.key" "$T/wbad.log"

start_worker w1 -u WEBHOOK_SECRET_KEY WEBHOOK_SECRET_KEY_FILE="$T/master.key"
pid=${WORKER_PID[w1]}
check "the worker with the key file runs" wait_for 30 grep -q "worker w1 running" "$T/w1.log"
"$BIN/webhook-produce" --quiet --app kf --type t.x --id kf-1 --payload '{"k":1}'
check "it opens the endpoint's secret and delivers, signed" wait_for 60 got_at_least r 1
check "the signature verifies" wait_for 10 grep -q '"valid":true' "$T/r.jsonl"
check "the key is not in the worker's environment" \
    sh -c "! tr '\\0' '\\n' </proc/$pid/environ | grep -qF -- '$KEY'"
check "nor in its command line" sh -c "! tr '\\0' '\\n' </proc/$pid/cmdline | grep -qF -- '$KEY'"
check "the endpoint it delivered to is the one added with the key file" \
    test "$(sql "SELECT count(*) FROM webhooks.delivery_log WHERE endpoint_id = '$ep' AND outcome = 'succeeded'")" -eq 1
finish
