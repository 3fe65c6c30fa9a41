#!/usr/bin/env bash
# dev/run.sh - `make run`: starts the local stack (dev/up.sh), a demo
# receiver that verifies every signature, registers demo endpoints,
# publishes demo events, prints what arrived and a summary from
# webhooks.delivery_log, then keeps running (receiver output stays on
# screen) until Ctrl-C, which stops everything it started.
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "$0")/.." && pwd)
BIN=${BUILD_DIR:-$ROOT/build}/bin
STATE=${DEV_STATE_DIR:-$ROOT/.dev}

stop() {
    trap - INT TERM EXIT
    echo
    echo "stopping..."
    "$ROOT/dev/down.sh"
    exit 0
}

"$ROOT/dev/up.sh"
trap stop INT TERM EXIT
set -a
# shellcheck disable=SC1091
. "$STATE/env"
set +a

SECRET="whsec_$(head -c 24 /dev/urandom | base64)"
"$BIN/webhook-receiver" --port-file "$STATE/receiver.port" --print \
    --secret "$SECRET" --record "$STATE/receiver.jsonl" \
    2>"$STATE/receiver.log" &
echo $! >"$STATE/receiver.pid"
for _ in $(seq 50); do [ -s "$STATE/receiver.port" ] && break; sleep 0.1; done
PORT=$(cat "$STATE/receiver.port")
URL=http://127.0.0.1:$PORT

echo
echo "Demo endpoints (all verified by the receiver on $URL):"
add() {
    local id
    id=$("$BIN/webhookctl" endpoint add --secret "$SECRET" "$@")
    printf '  %s  %s\n' "$id" "$*"
}
add --app acme --url "$URL/acme/orders" --events 'order.*' --description "acme order events"
add --app acme --url "$URL/acme/everything" --description "all acme events"
add --app globex --url "$URL/globex/invoices" --events 'invoice.paid' --description "globex paid invoices"

echo
echo "Publishing demo events (the receiver prints each delivery):"
i=0
for ev in "acme order.created" "acme order.paid" "acme customer.updated" \
    "globex invoice.created" "globex invoice.paid" "acme order.shipped"; do
    read -r app type <<<"$ev"
    i=$((i + 1))
    echo "{\"id\":\"demo-$i\",\"app\":\"$app\",\"type\":\"$type\",\"payload\":{\"demo\":$i,\"type\":\"$type\",\"at\":\"$(date -u +%FT%TZ)\"}}"
done | "$BIN/webhook-produce" --quiet

expected=8 # acme: 3 order.* x 2 endpoints + customer.updated x 1; globex: 1
for _ in $(seq 150); do
    n=$(psql "$DATABASE_URL" -XAtq -c "SELECT count(*) FROM webhooks.delivery_log")
    [ "$n" -ge "$expected" ] && break
    sleep 0.2
done

echo
echo "Delivery history (webhooks.delivery_log):"
psql "$DATABASE_URL" -Xq -P footer=off -c "
SELECT event_id, event_type, endpoint_id, outcome, status_code AS http,
       latency_ms AS ms, to_char(attempted_at, 'HH24:MI:SS.MS') AS at
FROM webhooks.delivery_log ORDER BY attempted_at, endpoint_id"
psql "$DATABASE_URL" -Xq -P footer=off -c "
SELECT app, outcome, count(*) AS attempts, round(avg(latency_ms), 1) AS avg_ms
FROM webhooks.delivery_log GROUP BY 1, 2 ORDER BY 1, 2"

cat <<EOT
The stack keeps running; publish your own events from another shell:

  cd $ROOT && set -a && . .dev/env && set +a
  kcat -b \$KAFKA_BROKERS -P -t webhook.events -k acme <<< '{"id":"my-1","app":"acme","type":"order.paid","payload":{"total":42}}'
  build/bin/webhook-produce --app acme --type order.refunded --payload '{"total":42}'
  build/bin/webhookctl deliveries list --app acme
  psql "\$DATABASE_URL" -c 'SELECT * FROM webhooks.delivery_log ORDER BY attempted_at DESC LIMIT 10'

Press Ctrl-C to stop everything.
EOT
wait "$(cat "$STATE/receiver.pid")" || true
