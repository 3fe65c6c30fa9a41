#!/usr/bin/env bash
# dev/up.sh - starts the local stack in the background: the mock-cluster
# Kafka broker, a throwaway PostgreSQL, the schema, a worker and the retry
# scheduler. Writes
# .dev/env (KAFKA_BROKERS, DATABASE_URL, WEBHOOK_SECRET_KEY,
# WEBHOOK_ALLOW_PRIVATE_NETS) for shells to source; dev/down.sh stops
# exactly what this started. Used by `make dev-up` and `make run`.
#
# Settings: DEV_KAFKA_PORT (default 9092), DEV_PG_PORT (default: free),
# DEV_STATE_DIR (default .dev),
# DEV_PARTITIONS (default 8), BUILD_DIR (default build).
set -euo pipefail

ROOT=$(cd -- "$(dirname -- "$0")/.." && pwd)
BIN=${BUILD_DIR:-$ROOT/build}/bin
STATE=${DEV_STATE_DIR:-$ROOT/.dev}
KAFKA_PORT=${DEV_KAFKA_PORT:-9092}
PARTITIONS=${DEV_PARTITIONS:-8}

die() {
    echo "dev-up: $*" >&2
    exit 1
}

alive() { [ -f "$STATE/$1.pid" ] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

for b in webhook-devbroker webhook-worker webhook-scheduler webhookctl; do
    [ -x "$BIN/$b" ] || die "$BIN/$b is missing: run make first"
done
if alive broker || alive worker || alive scheduler; then
    die "the stack is already running (.dev/env); run 'make dev-down' first"
fi
rm -rf "$STATE"
mkdir -p "$STATE"

# Postgres lives outside the checkout so the postgres user can reach it.
PGDIR=$(mktemp -d /tmp/webhook-dev-pg.XXXXXX)
chmod 755 "$PGDIR"
echo "$PGDIR" >"$STATE/pgdir"
"$ROOT/dev/pg.sh" start "$PGDIR" ${DEV_PG_PORT:+"$DEV_PG_PORT"} >"$STATE/pg.env" 2>"$STATE/pg.log" ||
    die "PostgreSQL did not start: $(tail -3 "$STATE/pg.log")"

if (exec 3<>"/dev/tcp/127.0.0.1/$KAFKA_PORT") 2>/dev/null; then
    die "port $KAFKA_PORT is taken; set DEV_KAFKA_PORT to another port"
fi
nohup "$BIN/webhook-devbroker" --port "$KAFKA_PORT" --partitions "$PARTITIONS" \
    --ready-file "$STATE/kafka.env" >"$STATE/broker.out" 2>"$STATE/broker.log" &
echo $! >"$STATE/broker.pid"
for _ in $(seq 100); do
    [ -s "$STATE/kafka.env" ] && break
    alive broker || die "the broker exited: $(tail -3 "$STATE/broker.log")"
    sleep 0.1
done
[ -s "$STATE/kafka.env" ] || die "the broker did not become ready"

{
    cat "$STATE/kafka.env" "$STATE/pg.env"
    echo "WEBHOOK_SECRET_KEY=$(head -c 32 /dev/urandom | base64)"
    echo "WEBHOOK_ALLOW_PRIVATE_NETS=127.0.0.0/8,::1/128"
} >"$STATE/env"
set -a
# shellcheck disable=SC1091
. "$STATE/env"
set +a

"$BIN/webhookctl" migrate >"$STATE/migrate.log" 2>&1 ||
    die "migrations failed: $(cat "$STATE/migrate.log")"

KAFKA_SESSION_TIMEOUT=6s KAFKA_HEARTBEAT_INTERVAL=500ms LOG_FORMAT=text \
    WORKER_ID=dev-worker nohup "$BIN/webhook-worker" >"$STATE/worker.log" 2>&1 &
echo $! >"$STATE/worker.pid"
LOG_FORMAT=text SCHEDULER_ID=dev-scheduler \
    nohup "$BIN/webhook-scheduler" >"$STATE/scheduler.log" 2>&1 &
echo $! >"$STATE/scheduler.pid"
sleep 0.5
alive worker || die "the worker exited: $(tail -5 "$STATE/worker.log")"
alive scheduler || die "the scheduler exited: $(tail -5 "$STATE/scheduler.log")"

cat <<EOT
Local stack running:
  Kafka (mock cluster)  $KAFKA_BROKERS   log .dev/broker.log
  PostgreSQL            $DATABASE_URL   log .dev/pg.log
  webhook-worker        pid $(cat "$STATE/worker.pid")   log .dev/worker.log
  webhook-scheduler     pid $(cat "$STATE/scheduler.pid")   log .dev/scheduler.log
Use it from a shell:   set -a; . .dev/env; set +a
Stop it:               make dev-down
EOT
