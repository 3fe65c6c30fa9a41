#!/usr/bin/env bash
# tests/bench/run.sh - `make bench`: throughput and latency of the local
# stack on loopback. Runs the HTTP ceiling (wrk against webhook-receiver)
# and scenario (a): BENCH_ENDPOINTS ordered endpoints, 512-byte payloads,
# history recorded. Prints a table and, as its last line, one JSON object
# with every figure. Exits non-zero if wrk is missing or a delivery is
# lost. Settings (environment): BENCH_ENDPOINTS (1000), BENCH_EVENTS
# (30000), BENCH_PARTITIONS (12), BENCH_WRK_SECONDS (5),
# BENCH_WRK_CONNECTIONS (32), BENCH_TIMEOUT (300, seconds to wait for the
# deliveries), BENCH_LAT_SECONDS (5) and BENCH_LAT_RATE (events/s of the
# paced latency pass; default 20% of the measured delivery rate).
if ! command -v wrk >/dev/null; then
    echo "bench: ERROR: wrk is not installed (apt-get install wrk); it measures the HTTP ceiling" >&2
    exit 1
fi
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"

ENDPOINTS=${BENCH_ENDPOINTS:-1000}
EVENTS=${BENCH_EVENTS:-30000}
PARTITIONS=${BENCH_PARTITIONS:-12}
WRK_SECONDS=${BENCH_WRK_SECONDS:-5}
WRK_CONNECTIONS=${BENCH_WRK_CONNECTIONS:-32}
WAIT_S=${BENCH_TIMEOUT:-300}
LAT_SECONDS=${BENCH_LAT_SECONDS:-5}
LAT_RATE=${BENCH_LAT_RATE:-}
PAYLOAD_BYTES=512
# The dev broker keeps about 5 MB / 100k messages per partition; a
# delivery message carries the payload plus about 300 bytes of envelope.
RETENTION_BYTES=$((4 * 1024 * 1024))

# die MESSAGE: stops the benchmark, keeping the temp dir for inspection.
die() {
    echo "bench: $*" >&2
    failed=$((failed + 1))
    exit 1
}

# refuse MESSAGE: stops before anything started.
refuse() {
    echo "bench: $*" >&2
    exit 1
}

for tool in python3 psql; do
    command -v "$tool" >/dev/null || refuse "$tool is not installed"
done
for b in webhook-worker webhook-receiver webhook-devbroker webhook-produce webhookctl; do
    [ -x "$BIN/$b" ] || refuse "$BIN/$b missing: run 'make -j2' first"
done
per_partition=$(((EVENTS * (PAYLOAD_BYTES + 300)) / PARTITIONS))
if [ "$per_partition" -gt "$RETENTION_BYTES" ]; then
    refuse "$EVENTS events over $PARTITIONS partitions is ~$per_partition bytes per partition, beyond the dev broker's retention; raise BENCH_PARTITIONS"
fi

CLK_TCK=$(getconf CLK_TCK)
OS_NAME=$(sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '"')

# cpu_ticks PID: utime + stime of one process, in clock ticks.
cpu_ticks() {
    awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# pg_ticks: utime + stime of the postmaster, of its live children and of
# its reaped children (cutime + cstime), in clock ticks.
pg_ticks() {
    local master total=0 pid ppid
    master=$(head -n1 "$T/pg/data/postmaster.pid")
    total=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 + $14 + $15 }' "/proc/$master/stat")
    for stat in /proc/[0-9]*/stat; do
        pid=${stat#/proc/}
        pid=${pid%/stat}
        ppid=$(awk '{ sub(/^.*\) /, ""); print $2 }' "$stat" 2>/dev/null) || continue
        if [ "$ppid" = "$master" ]; then
            total=$((total + $(cpu_ticks "$pid")))
        fi
    done
    echo "$total"
}

# table_rows: rows in every table of the webhooks schema (partitioned
# tables counted through their parents).
table_rows() {
    local q
    q=$(sql "SELECT string_agg(format('(SELECT count(*) FROM %I.%I)', n.nspname, c.relname), ' + ')
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'webhooks' AND c.relkind IN ('r', 'p') AND NOT c.relispartition")
    sql "SELECT $q"
}

# perf_start NAME PID / perf_stop: with BENCH_PERF=DIR, records call
# graphs of PID into DIR/NAME.perf.data while a scenario runs.
PERF_PID=
perf_start() {
    [ -n "${BENCH_PERF:-}" ] || return 0
    mkdir -p "$BENCH_PERF"
    local target=(-p "$2")
    [ "${BENCH_PERF_ALL:-0}" = 1 ] && target=(-a)
    perf record ${BENCH_PERF_OPTS:--g} -F 999 -o "$BENCH_PERF/$1.perf.data" "${target[@]}" >"$T/perf-$1.log" 2>&1 &
    PERF_PID=$!
}
perf_stop() {
    [ -n "$PERF_PID" ] || return 0
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
}

now_us() { python3 -c 'import time; print(int(time.time() * 1e6))'; }

log "stack: broker with $PARTITIONS partitions, PostgreSQL 15, temp dir $T"
stack_up "$PARTITIONS"

# ---- ceiling: wrk against the receiver alone -------------------------------
"$BIN/webhook-receiver" --port-file "$T/ceil.port" >"$T/ceil.out" 2>"$T/ceil.log" &
PIDS+=($!)
wait_for 10 test -s "$T/ceil.port" || die "ceiling receiver did not start"
ceil_port=$(cat "$T/ceil.port")
python3 - "$T/post.lua" "$PAYLOAD_BYTES" <<'PY'
import json, sys
path, size = sys.argv[1], int(sys.argv[2])
body = '{"seq":0,"ts_us":0,"pad":""}'
body = body.replace('"pad":""', '"pad":"%s"' % ("x" * (size - len(body))))
assert len(body) == size
with open(path, "w") as f:
    f.write('wrk.method = "POST"\n')
    f.write('wrk.body = %s\n' % json.dumps(body))
    f.write('wrk.headers["Content-Type"] = "application/json"\n')
    f.write('wrk.headers["webhook-id"] = "msg_bench"\n')
PY
log "ceiling: wrk -t1 -c$WRK_CONNECTIONS -d${WRK_SECONDS}s, $PAYLOAD_BYTES-byte POSTs, keep-alive"
wrk -t1 -c"$WRK_CONNECTIONS" -d"${WRK_SECONDS}s" -s "$T/post.lua" \
    "http://127.0.0.1:$ceil_port/bench/ceiling" >"$T/wrk.out" 2>&1 ||
    die "wrk failed: $(cat "$T/wrk.out")"
ceiling_rps=$(awk '/^Requests\/sec:/ { print $2 }' "$T/wrk.out")
[ -n "$ceiling_rps" ] || die "no Requests/sec in wrk output: $(cat "$T/wrk.out")"
if grep -q "Non-2xx" "$T/wrk.out"; then
    die "the receiver answered errors to wrk: $(grep Non-2xx "$T/wrk.out")"
fi
kill "${PIDS[-1]}"
wait "${PIDS[-1]}" 2>/dev/null || true
unset 'PIDS[-1]'

# ---- scenario (a): ordered endpoints, history recorded ----------------------
start_receiver recv || die "receiver did not start"
recv_pid=${PIDS[-1]}
port=$(cat "$T/recv.port")
secret=$(new_secret)
log "registering $ENDPOINTS ordered endpoints (app a<i>, one endpoint each)"
seq 0 $((ENDPOINTS - 1)) | xargs -P 4 -I{} \
    "$BIN/webhookctl" endpoint add --app "a{}" --events 'bench.*' \
    --url "http://127.0.0.1:$port/a{}/hook" --secret "$secret" >"$T/endpoints.txt" ||
    die "endpoint registration failed"
[ "$(sql "SELECT count(*) FROM webhooks.endpoints")" -eq "$ENDPOINTS" ] ||
    die "expected $ENDPOINTS endpoints"

start_worker w1
wait_for 30 grep -q "fan-out: assigned" "$T/w1.log" || die "worker not assigned: see $T/w1.log"
wait_for 30 grep -q "delivery: assigned" "$T/w1.log" || die "worker not assigned: see $T/w1.log"

# Events go round-robin over the apps, so every endpoint gets
# EVENTS / ENDPOINTS deliveries in order. The payload is padded to exactly
# PAYLOAD_BYTES and carries its publish time in ts_us (stamped as the line
# is written into the producer's pipe).
# gen_events FIRST COUNT [RATE]: events FIRST..FIRST+COUNT-1, as fast as
# possible, or RATE per second after a 2 s pause (the producer connects
# meanwhile, so its start-up is not counted as latency).
gen_events() {
    python3 - "$1" "$2" "${3:-0}" "$ENDPOINTS" "$PAYLOAD_BYTES" <<'PY'
import sys, time
first, count, rate = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
eps, size = int(sys.argv[4]), int(sys.argv[5])
out = sys.stdout
if rate > 0:
    time.sleep(float(__import__("os").environ.get("BENCH_WARM", "2")))
t0 = time.time()
for i in range(first, first + count):
    if rate > 0:
        delay = t0 + (i - first) / rate - time.time()
        if delay > 0:
            time.sleep(delay)
    head = '{"seq":%d,"ts_us":%d,"pad":"' % (i, int(time.time() * 1e6))
    payload = head + "x" * (size - len(head) - 2) + '"}'
    out.write('{"id":"e%d","app":"a%d","type":"bench.x","payload":%s}\n' % (i, i % eps, payload))
    if rate > 0 or i % 64 == 63:
        out.flush()
PY
}

total=$EVENTS
rows0=$(table_rows)
w_cpu0=$(cpu_ticks "${WORKER_PID[w1]}")
pg_cpu0=$(pg_ticks)
t_pub0=$(now_us)
log "publishing $EVENTS events of $PAYLOAD_BYTES-byte payload"
perf_start a "${WORKER_PID[w1]}"
gen_events 0 "$EVENTS" | "$BIN/webhook-produce" --quiet || die "webhook-produce failed"
t_pub1=$(now_us)
if ! wait_for "$WAIT_S" got_at_least recv "$total"; then
    log "only $(received recv) of $total deliveries arrived within ${WAIT_S}s"
fi
wait_for 60 sql_at_least \
    "SELECT count(*) FROM webhooks.attempts WHERE outcome = 'succeeded'" "$total" || true
w_cpu1=$(cpu_ticks "${WORKER_PID[w1]}")
pg_cpu1=$(pg_ticks)
rows1=$(table_rows)
perf_stop

# ---- scenario (a), latency pass: paced publishing, no backlog --------------
if [ -z "$LAT_RATE" ]; then
    LAT_RATE=$(python3 - "$T/recv.jsonl" <<'PY'
import json, sys
ts = [json.loads(l)["received_at_us"] for l in open(sys.argv[1])]
span = (max(ts) - min(ts)) / 1e6 if len(ts) > 1 else 0
print(max(10, int(0.2 * len(ts) / span)) if span > 0 else 100)
PY
)
fi
LAT_EVENTS=$((LAT_RATE * LAT_SECONDS))
log "latency pass: $LAT_EVENTS events at $LAT_RATE/s"
gen_events "$EVENTS" "$LAT_EVENTS" "$LAT_RATE" | "$BIN/webhook-produce" --quiet ||
    die "webhook-produce failed"
total=$((EVENTS + LAT_EVENTS))
wait_for 60 got_at_least recv "$total" ||
    log "only $(received recv) of $total deliveries arrived"
wait_for 60 sql_at_least \
    "SELECT count(*) FROM webhooks.attempts WHERE outcome = 'succeeded'" "$total" || true
succeeded=$(sql "SELECT count(*) FROM webhooks.attempts WHERE outcome = 'succeeded'")
attempts=$(sql "SELECT count(*) FROM webhooks.attempts")
# stop the receiver so its record is flushed completely
kill "$recv_pid" 2>/dev/null || true
timeout 10 tail --pid="$recv_pid" -f /dev/null || true

data_loss=0
grep -q "DATA LOSS" "$T/w1.log" && data_loss=1

python3 - "$T/recv.jsonl" <<PY >"$T/a.json" || die "analysis failed"
import base64, json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
allok = [r for r in recs if 200 <= r["status"] < 300]
for r in allok:
    body = json.loads(base64.b64decode(r["body_b64"]))
    r["seq"], r["lat_ms"] = body["seq"], (r["received_at_us"] - body["ts_us"]) / 1000.0
ok = [r for r in allok if r["seq"] < $EVENTS]
paced = sorted(r["lat_ms"] for r in allok if r["seq"] >= $EVENTS)
burst = sorted(r["lat_ms"] for r in ok)
ts = sorted(r["received_at_us"] for r in ok)
ids = {r["webhook_id"] for r in allok}
def pct(lat, p):
    if not lat:
        return 0.0
    return round(lat[min(len(lat) - 1, int(round(p / 100.0 * (len(lat) - 1))))], 1)
span = (ts[-1] - ts[0]) / 1e6 if len(ts) > 1 else 0.0
cpu_w = ($w_cpu1 - $w_cpu0) / $CLK_TCK
cpu_pg = ($pg_cpu1 - $pg_cpu0) / $CLK_TCK
n = len(ok)
print(json.dumps({
    "received": len(allok),
    "received_burst": n,
    "received_paced": len(paced),
    "duplicates": len(allok) - len(ids),
    "bad_length": sum(1 for r in allok if r["body_len"] != $PAYLOAD_BYTES),
    "span_s": round(span, 3),
    "rate": round(n / span, 1) if span > 0 else 0.0,
    "p50": pct(paced, 50), "p95": pct(paced, 95), "p99": pct(paced, 99),
    "max": round(paced[-1], 1) if paced else 0.0,
    "b50": pct(burst, 50), "b95": pct(burst, 95), "b99": pct(burst, 99),
    "cpu_w": round(cpu_w, 2), "cpu_pg": round(cpu_pg, 2),
    "cpu_w_10k": round(cpu_w * 10000 / n, 2) if n else 0.0,
    "cpu_pg_10k": round(cpu_pg * 10000 / n, 2) if n else 0.0,
    "rows_s": round(($rows1 - $rows0) / span, 1) if span > 0 else 0.0,
    "publish_s": round(($t_pub1 - $t_pub0) / 1e6, 3),
}))
PY

python3 - "$T/a.json" <<PY
import json, sys
a = json.load(open(sys.argv[1]))
ceiling = float("$ceiling_rps")
lost = $total - a["received"]
res = {
    "machine": {"cores": $(nproc), "os": "$OS_NAME"},
    "ceiling_rps": round(ceiling, 1),
    "ceiling_connections": $WRK_CONNECTIONS,
    "a_endpoints": $ENDPOINTS,
    "a_events": $EVENTS,
    "a_partitions": $PARTITIONS,
    "a_payload_bytes": $PAYLOAD_BYTES,
    "a_published": $total,
    "a_received": a["received"],
    "a_duplicates": a["duplicates"],
    "a_wrong_length": a["bad_length"],
    "a_publish_s": a["publish_s"],
    "a_span_s": a["span_s"],
    "a_deliveries_per_s": a["rate"],
    "ceiling_ratio": round(a["rate"] / ceiling, 3) if ceiling else 0.0,
    "a_latency_rate_per_s": $LAT_RATE,
    "a_latency_events": $LAT_EVENTS,
    "a_p50_ms": a["p50"], "a_p95_ms": a["p95"], "a_p99_ms": a["p99"], "a_max_ms": a["max"],
    "a_burst_p50_ms": a["b50"], "a_burst_p95_ms": a["b95"], "a_burst_p99_ms": a["b99"],
    "a_worker_cpu_s_per_10k": a["cpu_w_10k"],
    "a_postgres_cpu_s_per_10k": a["cpu_pg_10k"],
    "a_postgres_rows_per_s": a["rows_s"],
    "a_attempts_succeeded": $succeeded,
    "a_attempts_total": $attempts,
    "a_history_matches": $succeeded == a["received"],
    "data_loss_logged": bool($data_loss),
    "lost": lost,
}
rows = [
    ("ceiling: wrk -> receiver, %d conns" % res["ceiling_connections"], "%.0f req/s" % res["ceiling_rps"]),
    ("a: endpoints / events / partitions", "%d / %d / %d" % ($ENDPOINTS, $EVENTS, $PARTITIONS)),
    ("a: publish time", "%.2f s" % res["a_publish_s"]),
    ("a: deliveries/s (first to last receipt)", "%.0f /s over %.2f s" % (res["a_deliveries_per_s"], res["a_span_s"])),
    ("a: ratio to ceiling", "%.3f" % res["ceiling_ratio"]),
    ("a: latency p50 / p95 / p99 at %d/s" % $LAT_RATE, "%.1f / %.1f / %.1f ms" % (res["a_p50_ms"], res["a_p95_ms"], res["a_p99_ms"])),
    ("a: latency p50 / p95 / p99 in the burst", "%.0f / %.0f / %.0f ms" % (res["a_burst_p50_ms"], res["a_burst_p95_ms"], res["a_burst_p99_ms"])),
    ("a: worker CPU per 10k deliveries", "%.2f s" % res["a_worker_cpu_s_per_10k"]),
    ("a: Postgres CPU per 10k deliveries", "%.2f s" % res["a_postgres_cpu_s_per_10k"]),
    ("a: Postgres rows/s", "%.0f" % res["a_postgres_rows_per_s"]),
    ("a: succeeded attempts / received", "%d / %d" % ($succeeded, a["received"])),
    ("a: lost / duplicates / DATA LOSS logged", "%d / %d / %s" % (lost, a["duplicates"], "yes" if $data_loss else "no")),
]
w = max(len(k) for k, _ in rows)
print("-" * (w + 26))
for k, v in rows:
    print("%-*s  %s" % (w, k, v))
print("-" * (w + 26))
print(json.dumps(res, separators=(",", ":")))
PY

problems=0
[ "$((total - $(python3 -c "import json; print(json.load(open('$T/a.json'))['received'])")))" -eq 0 ] ||
    { echo "bench: deliveries were lost" >&2; problems=1; }
[ "$data_loss" -eq 0 ] || { echo "bench: the worker logged DATA LOSS" >&2; problems=1; }
[ "$succeeded" -eq "$total" ] ||
    { echo "bench: succeeded attempts ($succeeded) differ from deliveries ($total)" >&2; problems=1; }
if [ "$problems" -ne 0 ]; then
    failed=$((failed + 1))
    exit 1
fi
