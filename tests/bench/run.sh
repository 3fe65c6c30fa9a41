#!/usr/bin/env bash
# tests/bench/run.sh - `make bench`: throughput, latency and isolation of
# the local stack on loopback, against the machine's own HTTP ceiling.
#
# One stack (dev broker, PostgreSQL, one worker, one scheduler) runs every
# scenario in turn (a, f, g, b, c, d, e); each publishes its own events to its own apps and is
# measured from its own receipts:
#   ceiling  wrk POSTs the same 512-byte body to webhook-receiver
#   (a)      1,000 ordered endpoints, 30 events each
#   (b)      100,000 endpoints, one event each
#   (c)      1,000 endpoints of which 10% fail (5% time out, 5% answer
#            500), measured on the healthy 90%
#   (d)      fan-out: one event to 100 endpoints
#   (e)      retry storm: 100,000 retries due at once (scheduler rate,
#            then their delivery)
#   (f)      latency at a fixed rate, 20% of (a)'s deliveries/s
#   (g)      graceful restart under (a)'s load: SIGTERM to the worker once
#            30% of the events arrived, its replacement started at once;
#            duplicates, and the replacement's time to its first delivery
# Prints a table and, as its last line, one JSON object with every figure.
# Exits non-zero if wrk is missing or a delivery is lost.
#
# Settings (environment): BENCH_PARTITIONS (24), BENCH_A_EVENTS (30000),
# BENCH_B_ENDPOINTS (100000), BENCH_B_EVENTS (100000), BENCH_C_EVENTS
# (30000), BENCH_D_EVENTS (300), BENCH_E_RETRIES (100000),
# BENCH_F_SECONDS (10), BENCH_F_RATE (default 20% of (a)'s rate),
# BENCH_G_EVENTS (30000),
# BENCH_WRK_SECONDS (5), BENCH_WRK_CONNECTIONS (32), BENCH_TIMEOUT (300 s
# per scenario), BENCH_PERF=DIR (perf call graphs of the worker per
# scenario; BENCH_PERF_OPTS, BENCH_PERF_ALL=1 for the whole machine).
if ! command -v wrk >/dev/null; then
    echo "bench: ERROR: wrk is not installed (apt-get install wrk); it measures the HTTP ceiling" >&2
    exit 1
fi
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"

PARTITIONS=${BENCH_PARTITIONS:-24}
A_ENDPOINTS=1000
A_EVENTS=${BENCH_A_EVENTS:-30000}
B_ENDPOINTS=${BENCH_B_ENDPOINTS:-100000}
B_EVENTS=${BENCH_B_EVENTS:-100000}
C_ENDPOINTS=1000
C_EVENTS=${BENCH_C_EVENTS:-30000}
D_ENDPOINTS=100
D_EVENTS=${BENCH_D_EVENTS:-300}
E_RETRIES=${BENCH_E_RETRIES:-100000}
F_SECONDS=${BENCH_F_SECONDS:-10}
F_RATE=${BENCH_F_RATE:-}
G_EVENTS=${BENCH_G_EVENTS:-30000}
WRK_SECONDS=${BENCH_WRK_SECONDS:-5}
WRK_CONNECTIONS=${BENCH_WRK_CONNECTIONS:-32}
WAIT_S=${BENCH_TIMEOUT:-300}
PAYLOAD_BYTES=512
# The dev broker keeps about 5 MB / 100k messages per partition; a
# delivery message carries the payload plus about 300 bytes of envelope.
RETENTION_BYTES=$((4 * 1024 * 1024))
# The dev broker answers a fetch that finds no data only after the
# consumer's full fetch.wait.max.ms (a Kafka broker answers as soon as data
# arrives), so a short wait stands in for a real broker's long poll.
export KAFKA_EXTRA=${KAFKA_EXTRA:-fetch.wait.max.ms=5}
PY=$(command -v python3)
[ -x /usr/bin/python3 ] && PY=/usr/bin/python3

# die MESSAGE: stops the benchmark, keeping the temp dir for inspection.
die() {
    echo "bench: $*" >&2
    failed=$((failed + 1))
    exit 1
}

refuse() {
    echo "bench: $*" >&2
    exit 1
}

command -v psql >/dev/null || refuse "psql is not installed"
for b in webhook-worker webhook-scheduler webhook-receiver webhook-devbroker \
    webhook-produce webhookctl; do
    [ -x "$BIN/$b" ] || refuse "$BIN/$b missing: run 'make -j2' first"
done
for n in "$((A_EVENTS + G_EVENTS))" "$B_EVENTS" "$C_EVENTS" "$((D_EVENTS * D_ENDPOINTS))" "$E_RETRIES"; do
    per_partition=$(((n * (PAYLOAD_BYTES + 300)) / PARTITIONS))
    if [ "$per_partition" -gt "$RETENTION_BYTES" ]; then
        refuse "$n messages over $PARTITIONS partitions is ~$per_partition bytes per partition, beyond the dev broker's retention; raise BENCH_PARTITIONS"
    fi
done

CLK_TCK=$(getconf CLK_TCK)
OS_NAME=$(sed -n 's/^PRETTY_NAME=//p' /etc/os-release | tr -d '"')
CPU_MODEL=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n1)
# The kernel's DAMON monitor, where one runs (its actions, e.g. "pageout"
# for proactive reclaim, or "off"): on a small machine its sampling takes
# a share of a core every half second, which shows in (f)'s tail.
damon_state() {
    local k state actions=()
    for k in /sys/kernel/mm/damon/admin/kdamonds/[0-9]*; do
        [ -r "$k/state" ] || continue
        read -r state <"$k/state" || continue
        [ "$state" = on ] || continue
        local a
        for a in "$k"/contexts/*/schemes/*/action; do
            [ -r "$a" ] && actions+=("$(cat "$a")")
        done
        [ ${#actions[@]} -gt 0 ] || actions+=(monitor)
    done
    if [ ${#actions[@]} -gt 0 ]; then
        printf '%s\n' "${actions[@]}" | sort -u | paste -sd+
    else
        echo off
    fi
}
DAMON=$(damon_state)

# ticks PID: utime + stime of one process (with its reaped children if
# WITH_CHILDREN=1), in clock ticks.
ticks() {
    awk -v c="${WITH_CHILDREN:-0}" '{ sub(/^.*\) /, ""); print $12 + $13 + (c ? $14 + $15 : 0) }' \
        "/proc/$1/stat" 2>/dev/null || echo 0
}

# pg_ticks: the postmaster with its reaped children, plus its live
# children.
pg_ticks() {
    local master
    master=$(head -n1 "$T/pg/data/postmaster.pid")
    cat /proc/[0-9]*/stat 2>/dev/null | awk -v m="$master" '{
        pid = $1; sub(/^.*\) /, "")
        if (pid == m) t += $12 + $13 + $14 + $15
        else if ($2 == m) t += $12 + $13
    } END { print t + 0 }'
}

# table_rows: rows in every table of the webhooks schema.
table_rows() {
    local q
    q=$(sql "SELECT string_agg(format('(SELECT count(*) FROM %I.%I)', n.nspname, c.relname), ' + ')
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = 'webhooks' AND c.relkind IN ('r', 'p') AND NOT c.relispartition")
    sql "SELECT $q"
}

now_us() { date +%s%6N; }

# snap NAME: CPU ticks of worker, scheduler and Postgres, table rows and
# the time, into $T/NAME.snap.
snap() {
    echo "$(ticks "$W_PID") $(ticks "$S_PID") $(pg_ticks) $(table_rows) $(now_us)" >"$T/$1.snap"
}

# perf_start NAME / perf_stop: with BENCH_PERF=DIR, records call graphs of
# the worker (or with BENCH_PERF_ALL=1 of everything) into DIR/NAME.perf.data.
PERF_PID=
perf_start() {
    [ -n "${BENCH_PERF:-}" ] || return 0
    mkdir -p "$BENCH_PERF"
    local target=(-p "$W_PID")
    [ "${BENCH_PERF_ALL:-0}" = 1 ] && target=(-a)
    # shellcheck disable=SC2086
    perf record ${BENCH_PERF_OPTS:--g} -F 999 -o "$BENCH_PERF/$1.perf.data" \
        "${target[@]}" >"$T/perf-$1.log" 2>&1 &
    PERF_PID=$!
}
perf_stop() {
    [ -n "$PERF_PID" ] || return 0
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
}

# gen PREFIX FIRST COUNT APPS [RATE]: events FIRST..FIRST+COUNT-1 for apps
# PREFIX0..PREFIX(APPS-1) round-robin, as fast as possible or RATE per
# second. The payload is padded to PAYLOAD_BYTES and carries its publish
# time in ts_us, stamped as the line is written into the producer's pipe.
gen() {
    "$PY" - "$@" "$PAYLOAD_BYTES" <<'PY'
import sys, time
prefix, first, count, apps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rate = float(sys.argv[5]) if len(sys.argv) > 6 else 0.0
size = int(sys.argv[-1])
out = sys.stdout
if rate > 0:
    time.sleep(1)  # the producer connects first: not part of the latency
t0 = time.time()
for i in range(first, first + count):
    if rate > 0:
        delay = t0 + (i - first) / rate - time.time()
        if delay > 0:
            time.sleep(delay)
    head = '{"seq":%d,"ts_us":%d,"pad":"' % (i, int(time.time() * 1e6))
    payload = head + "x" * (size - len(head) - 2) + '"}'
    out.write('{"id":"%s%d","app":"%s%d","type":"bench.x","payload":%s}\n'
              % (prefix, i, prefix, i % apps, payload))
    if rate > 0 or i % 64 == 63:
        out.flush()
PY
}

# publish ARGS...: gen ARGS | webhook-produce.
publish() {
    gen "$@" | "$BIN/webhook-produce" --quiet || die "webhook-produce failed"
}

# succeeded PREFIX: successful attempts recorded for apps PREFIX*.
succeeded() {
    sql "SELECT count(*) FROM webhooks.attempts WHERE outcome = 'succeeded' AND app LIKE '$1%'"
}

# slow_wait SECONDS COMMAND...: wait_for polling once a second. The
# counts polled scan the history table, so polling them five times a
# second would take CPU from the stack being measured.
slow_wait() {
    local limit=$1 start=$SECONDS
    shift
    until "$@"; do
        ((SECONDS - start >= limit)) && return 1
        sleep 1
    done
}

# receipts_at_least RECEIVER N: the receiver counted N requests (its
# count file, rewritten every 200 ms: no load on the stack).
receipts_at_least() {
    [ "$(received "$1")" -ge "$2" ]
}

# await PREFIX N RECEIVER RECEIPTS: waits until RECEIVER has counted
# RECEIPTS requests in all, then until N successful attempts of apps
# PREFIX* are recorded (the receipts arrive first, so the history is
# counted only once or twice).
await() {
    wait_for "$WAIT_S" receipts_at_least "$3" "$4" ||
        log "only $(received "$3") of $4 requests reached $3 within ${WAIT_S}s"
    slow_wait "$WAIT_S" sql_at_least \
        "SELECT count(*) FROM webhooks.attempts WHERE outcome = 'succeeded' AND app LIKE '$1%'" "$2" ||
        log "only $(succeeded "$1") of $2 successful attempts of $1* recorded within ${WAIT_S}s"
}

log "stack: broker with $PARTITIONS partitions, PostgreSQL 15, temp dir $T"
stack_up "$PARTITIONS"

# ---- ceiling: wrk against the receiver alone -------------------------------
"$BIN/webhook-receiver" --port-file "$T/ceil.port" >"$T/ceil.out" 2>"$T/ceil.log" &
PIDS+=($!)
wait_for 10 test -s "$T/ceil.port" || die "ceiling receiver did not start"
"$PY" - "$T/post.lua" "$PAYLOAD_BYTES" <<'PY'
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
    "http://127.0.0.1:$(cat "$T/ceil.port")/bench/ceiling" >"$T/wrk.out" 2>&1 ||
    die "wrk failed: $(cat "$T/wrk.out")"
ceiling_rps=$(awk '/^Requests\/sec:/ { print $2 }' "$T/wrk.out")
[ -n "$ceiling_rps" ] || die "no Requests/sec in wrk output: $(cat "$T/wrk.out")"
grep -q "Non-2xx" "$T/wrk.out" && die "the receiver answered errors to wrk: $(grep Non-2xx "$T/wrk.out")"
kill "${PIDS[-1]}"
wait "${PIDS[-1]}" 2>/dev/null || true
unset 'PIDS[-1]'

# ---- receivers and endpoints -------------------------------------------------
# recv: every healthy endpoint. aux, a second "host" (its own port, so its
# connections do not count against recv's per-host limit): the failing
# endpoints of (c) (/sc-slow/ held 30 s, /sc-fail/ answers 500) and the
# endpoints of (e), whose first attempt of each delivery fails.
start_receiver recv || die "receiver did not start"
start_receiver aux --fail-first 1 --delay-path /sc-slow/=30000 --fail-path /sc-fail/ ||
    die "receiver did not start"
port=$(cat "$T/recv.port")
aux=$(cat "$T/aux.port")
secret=$(new_secret)
log "importing endpoints: (a) $A_ENDPOINTS, (b) $B_ENDPOINTS, (c) $C_ENDPOINTS, (d) $D_ENDPOINTS, (e) 1,000"
"$PY" - "$port" "$aux" "$secret" "$A_ENDPOINTS" "$B_ENDPOINTS" "$C_ENDPOINTS" "$D_ENDPOINTS" \
    >"$T/endpoints.ndjson" <<'PY'
import json, sys
port, aux, secret = sys.argv[1], sys.argv[2], sys.argv[3]
na, nb, nc, nd = (int(x) for x in sys.argv[4:8])
def ep(app, url, **kw):
    d = {"app": app, "url": url, "secret": secret, "events": "bench.*"}
    d.update(kw)
    print(json.dumps(d, separators=(",", ":")))
for i in range(na):
    ep("sa%d" % i, "http://127.0.0.1:%s/sa/%d" % (port, i))
for i in range(nb):
    ep("sb%d" % i, "http://127.0.0.1:%s/sb/%d" % (port, i))
for i in range(nc):
    if i % 20 == 0:    # 5%: time out after 1 s
        ep("sc%d" % i, "http://127.0.0.1:%s/sc-slow/%d" % (aux, i), timeout="1s", retry_schedule="1h")
    elif i % 20 == 1:  # 5%: answer 500
        ep("sc%d" % i, "http://127.0.0.1:%s/sc-fail/%d" % (aux, i), retry_schedule="1h")
    else:
        ep("sc%d" % i, "http://127.0.0.1:%s/sc/%d" % (port, i))
for j in range(nd):
    ep("sd0", "http://127.0.0.1:%s/sd/%d" % (port, j))
for i in range(1000):
    ep("se%d" % i, "http://127.0.0.1:%s/se/%d" % (aux, i), unordered=True,
       max_in_flight=100, retry_schedule="1h")
PY
t0=$(now_us)
"$BIN/webhookctl" endpoint import "$T/endpoints.ndjson" >"$T/endpoints.txt" 2>"$T/import.log" ||
    die "endpoint import failed: $(cat "$T/import.log")"
import_s=$(( ($(now_us) - t0) / 1000 ))
total_endpoints=$(sql "SELECT count(*) FROM webhooks.endpoints")

start_worker w1
W_PID=${WORKER_PID[w1]}
env SCHEDULER_ID=s1 LOG_LEVEL=debug "$BIN/webhook-scheduler" >>"$T/s1.log" 2>&1 &
S_PID=$!
PIDS+=($!)
wait_for 60 grep -q "fan-out: assigned" "$T/w1.log" || die "worker not assigned: see $T/w1.log"
wait_for 60 grep -q "delivery: assigned" "$T/w1.log" || die "worker not assigned: see $T/w1.log"
wait_for 60 grep -q "running" "$T/w1.log" || die "worker not running: see $T/w1.log"
# a few events to warm the producer path and connections (not measured)
publish sw 0 50 50 >/dev/null

# scenario NAME PREFIX EXPECT NEW GEN-ARGS...: publishes and waits for
# NEW more requests at recv and EXPECT successful attempts of apps
# PREFIX*, with snapshots around it.
scenario() {
    local name=$1 prefix=$2 expect=$3 new=$4 base
    shift 4
    log "scenario ($name): publishing"
    base=$(received recv)
    snap "$name.0"
    perf_start "$name"
    publish "$@"
    echo "$(now_us)" >"$T/$name.published"
    await "$prefix" "$expect" recv "$((base + new))"
    perf_stop
    snap "$name.1"
}

scenario a sa "$A_EVENTS" "$A_EVENTS" sa 0 "$A_EVENTS" "$A_ENDPOINTS"

# ---- (f) latency at a fixed moderate rate -------------------------------------
# (f) runs right after (a), whose rate it needs, and before (b)-(e) fill the
# dev broker's logs: librdkafka's mock cluster finds the data of every fetch
# by walking the partition's log from its oldest message set, so its cost per
# fetch grows with what it retains (up to 5 MB per partition); a Kafka broker
# indexes its log. In (f) after the other scenarios this walk alone took 15%
# of the machine and showed up as latency.
if [ -z "$F_RATE" ]; then
    F_RATE=$("$PY" - "$T/recv.jsonl" <<'PY'
import json, sys
ts = [json.loads(l)["received_at_us"] for l in open(sys.argv[1]) if '"/sa/' in l]
span = (max(ts) - min(ts)) / 1e6 if len(ts) > 1 else 0
print(max(10, int(0.2 * len(ts) / span)) if span > 0 else 100)
PY
)
fi
F_EVENTS=$((F_RATE * F_SECONDS))
log "scenario (f): $F_EVENTS events at $F_RATE/s to (a)'s endpoints"
scenario f sa "$((A_EVENTS + F_EVENTS))" "$F_EVENTS" sa "$A_EVENTS" "$F_EVENTS" "$A_ENDPOINTS" "$F_RATE"

# ---- (g) graceful restart under (a)'s load -----------------------------------
# (a)'s endpoints get G_EVENTS more events as fast as they can be
# published; once 30% arrived the worker gets SIGTERM and its replacement
# starts at once (a rolling update). Measured from the receipts of those
# events: duplicates, and from the history: when the replacement made
# its first successful attempt.
g_distinct() {
    sql_at_least "SELECT count(DISTINCT delivery_id) FROM webhooks.attempts
                  WHERE outcome = 'succeeded' AND app LIKE 'sa%'" "$1"
}
G_FIRST=$((A_EVENTS + F_EVENTS))
log "scenario (g): $G_EVENTS events to (a)'s endpoints; SIGTERM at 30%, replacement started at once"
g_base=$(received recv)
publish sa "$G_FIRST" "$G_EVENTS" "$A_ENDPOINTS" &
g_pub=$!
wait_for "$WAIT_S" receipts_at_least recv "$((g_base + G_EVENTS * 3 / 10))" ||
    die "scenario (g): 30% of the events did not arrive within ${WAIT_S}s"
g_term=$(now_us)
kill -TERM "$W_PID"
start_worker wg
wait "$W_PID" 2>/dev/null || true
g_exit=$(now_us)
W_PID=${WORKER_PID[wg]}
wait "$g_pub" || die "scenario (g): publishing failed"
slow_wait "$WAIT_S" g_distinct "$((G_FIRST + G_EVENTS))" ||
    log "scenario (g): not every delivery succeeded within ${WAIT_S}s"
g_first=$(sql "SELECT coalesce((extract(epoch FROM min(attempted_at)) * 1e6)::bigint, 0)
               FROM webhooks.attempts WHERE worker = 'wg' AND outcome = 'succeeded'")
g_in_flight=$(sed -n 's/.*stopping: finishing \([0-9]*\) attempts in flight.*/\1/p' "$T/w1.log" | tail -n 1)

scenario b sb "$B_EVENTS" "$B_EVENTS" sb 0 "$B_EVENTS" "$B_ENDPOINTS"
c_failing=$((C_EVENTS / C_ENDPOINTS * (C_ENDPOINTS / 10)))
scenario c sc "$((C_EVENTS - c_failing))" "$((C_EVENTS - c_failing))" sc 0 "$C_EVENTS" "$C_ENDPOINTS"
scenario d sd "$((D_EVENTS * D_ENDPOINTS))" "$((D_EVENTS * D_ENDPOINTS))" sd 0 "$D_EVENTS" 1

no_retries_left() {
    [ "$(sql "SELECT NOT EXISTS (SELECT 1 FROM webhooks.retries WHERE app LIKE 'se%')")" = t ]
}

# ---- (e) retry storm ---------------------------------------------------------
# (e)'s endpoints answer 500 to the first attempt of every delivery (aux
# --fail-first 1) and retry after an hour; the worker restarts without a
# circuit breaker for this (every request to them fails, so the breaker
# would hold most of them back). Then the retries are all made due at
# once, as when a large customer's outage ends.
kill -TERM "$W_PID"
wait "$W_PID" 2>/dev/null || true
start_worker w2 WORKER_BREAKER_FAILURES=0
W_PID=${WORKER_PID[w2]}
wait_for 60 grep -q "delivery: assigned" "$T/w2.log" || die "worker not assigned: see $T/w2.log"
log "scenario (e): $E_RETRIES deliveries whose first attempt fails"
publish se 0 "$E_RETRIES" 1000
slow_wait "$WAIT_S" sql_at_least \
    "SELECT count(*) FROM webhooks.retries WHERE app LIKE 'se%'" "$E_RETRIES" ||
    die "only $(sql "SELECT count(*) FROM webhooks.retries WHERE app LIKE 'se%'") of $E_RETRIES retries were scheduled"
# They are made due a few seconds ahead and the table vacuumed first: the
# UPDATE leaves a dead version of every row, which retries inserted as an
# outage goes on do not have, and an autovacuum of them during the storm
# cut its rate by half in one run.
e_t0=$(($(now_us) + 12000000))
sql "UPDATE webhooks.retries SET due_at = to_timestamp($e_t0 / 1e6) WHERE app LIKE 'se%'" >/dev/null
sql "VACUUM (ANALYZE) webhooks.retries" >/dev/null
[ "$(now_us)" -lt "$e_t0" ] || log "scenario (e): the retries became due before the table was vacuumed"
log "scenario (e): $E_RETRIES retries due at once"
sched_lines0=$(wc -l <"$T/s1.log")
e_base=$(received aux)
snap e.0
perf_start e
wait_for "$WAIT_S" no_retries_left ||
    log "retries left after ${WAIT_S}s: $(sql "SELECT count(*) FROM webhooks.retries WHERE app LIKE 'se%'")"
e_t1=$(now_us)
await se "$E_RETRIES" aux "$((e_base + E_RETRIES))"
perf_stop
snap e.1
tail -n +"$((sched_lines0 + 1))" "$T/s1.log" | grep "batch: claimed" >"$T/e.batches" || true

# stop the receivers so their records are complete
for r in recv aux; do
    pid=$(pgrep -f -- "--port-file $T/$r.port" | head -n1 || true)
    [ -n "$pid" ] && kill "$pid" 2>/dev/null && timeout 10 tail --pid="$pid" -f /dev/null || true
done
data_loss=0
cat "$T/w1.log" "$T/wg.log" "$T/w2.log" | grep -q "DATA LOSS" && data_loss=1
attempts_ok=$(sql "SELECT count(*) FROM webhooks.attempts WHERE outcome = 'succeeded' AND app NOT LIKE 'sw%'")

# ---- analysis -----------------------------------------------------------------
"$PY" - "$T" "$CLK_TCK" <<PY >"$T/result.json" || die "analysis failed"
import base64, json, os, sys
T, tck = sys.argv[1], float(sys.argv[2])
def snap(name):
    w, s, pg, rows, t = (float(x) for x in open(os.path.join(T, name + ".snap")).read().split())
    return dict(w=w / tck, s=s / tck, pg=pg / tck, rows=rows, t=t / 1e6)
def pct(xs, p):
    if not xs:
        return 0.0
    return round(xs[min(len(xs) - 1, int(round(p / 100.0 * (len(xs) - 1))))], 1)
# receipts: path prefix -> list of (received_us, latency_ms, webhook_id, ok)
rec = {}
for f in ("recv.jsonl", "aux.jsonl"):
    for line in open(os.path.join(T, f)):
        r = json.loads(line)
        path = r.get("path") or ""
        key = path.split("/")[1] if path.count("/") >= 2 else path
        ok = 200 <= r["status"] < 300
        body = json.loads(base64.b64decode(r["body_b64"]))
        lat = (r["received_at_us"] - body["ts_us"]) / 1000.0
        rec.setdefault(key, []).append((r["received_at_us"], lat, r["webhook_id"], ok, body["seq"], r["body_len"]))
res = {}
def measure(name, key, published, seq_lo=None, seq_hi=None):
    rs = [x for x in rec.get(key, []) if x[3] and (seq_lo is None or seq_lo <= x[4] < seq_hi)]
    ids = {x[2] for x in rs}
    ts = sorted(x[0] for x in rs)
    lat = sorted(x[1] for x in rs)
    span = (ts[-1] - ts[0]) / 1e6 if len(ts) > 1 else 0.0
    a, b = snap(name + ".0"), snap(name + ".1")
    wall = b["t"] - a["t"]
    n = len(ids)
    per10k = lambda c: round(c * 10000 / n, 2) if n else 0.0
    res.update({
        name + "_published": published,
        name + "_received": n,
        name + "_duplicates": len(rs) - n,
        name + "_wrong_length": sum(1 for x in rs if x[5] != $PAYLOAD_BYTES),
        name + "_lost": published - n,
        name + "_span_s": round(span, 3),
        name + "_deliveries_per_s": round(n / span, 1) if span > 0 else 0.0,
        name + "_p50_ms": pct(lat, 50), name + "_p95_ms": pct(lat, 95), name + "_p99_ms": pct(lat, 99),
        name + "_worker_cpu_s_per_10k": per10k(b["w"] - a["w"]),
        name + "_scheduler_cpu_s_per_10k": per10k(b["s"] - a["s"]),
        name + "_postgres_cpu_s_per_10k": per10k(b["pg"] - a["pg"]),
        name + "_postgres_rows_per_s": round((b["rows"] - a["rows"]) / wall, 1) if wall > 0 else 0.0,
    })
measure("a", "sa", $A_EVENTS, 0, $A_EVENTS)
measure("b", "sb", $B_EVENTS)
c_healthy = $C_EVENTS - $c_failing
measure("c", "sc", c_healthy)
res["c_failing_endpoints"] = $C_ENDPOINTS // 10
res["c_failing_deliveries"] = $c_failing
res["c_failing_answers"] = len(rec.get("sc-fail", [])) + len(rec.get("sc-slow", []))
measure("d", "sd", $D_EVENTS * $D_ENDPOINTS)
measure("e", "se", $E_RETRIES)
# the retry storm: scheduler batches after the retries became due
import datetime
bt = []
claimed = 0
for line in open(os.path.join(T, "e.batches")):
    t = datetime.datetime.strptime(line.split()[0], "%Y-%m-%dT%H:%M:%S.%fZ")
    n = int(line.split("claimed ")[1].split(",")[0])
    if n > 0:
        bt.append((t, n))
        claimed += n
steady = 0.0
if len(bt) > 1:
    secs = (bt[-1][0] - bt[0][0]).total_seconds()
    steady = round(sum(n for _, n in bt[1:]) / secs, 1) if secs > 0 else 0.0
drain = ($e_t1 - $e_t0) / 1e6
res["e_retries"] = $E_RETRIES
res["e_retries_claimed"] = claimed
res["e_retries_per_s"] = steady
res["e_drain_s"] = round(drain, 3)
res["e_retries_per_s_wall"] = round($E_RETRIES / drain, 1) if drain > 0 else 0.0
measure("f", "sa", $F_EVENTS, $A_EVENTS, $A_EVENTS + $F_EVENTS)
res["f_rate_per_s"] = $F_RATE
# (g): receipts of its events, the restart's times
g_lo, g_n = $G_FIRST, $G_EVENTS
g_rs = [x for x in rec.get("sa", []) if x[3] and g_lo <= x[4] < g_lo + g_n]
g_ids = {x[2] for x in g_rs}
res["g_published"] = g_n
res["g_received"] = len(g_ids)
res["g_duplicates"] = len(g_rs) - len(g_ids)
res["g_lost"] = g_n - len(g_ids)
res["g_in_flight_at_sigterm"] = int("${g_in_flight:-0}" or 0)
res["g_old_worker_exit_ms"] = round(($g_exit - $g_term) / 1000.0, 1)
res["g_first_delivery_ms"] = round(($g_first - $g_term) / 1000.0, 1) if $g_first > 0 else None
print(json.dumps(res))
PY

"$PY" - "$T/result.json" <<PY
import json, sys
r = json.load(open(sys.argv[1]))
ceiling = float("$ceiling_rps")
a = r["a_deliveries_per_s"]
lost = sum(r[k + "_lost"] for k in "abcdefg")
out = {
    "machine": {"cores": $(nproc), "cpu": "$CPU_MODEL", "os": "$OS_NAME",
                "kernel_damon": "$DAMON"},
    "ceiling_rps": round(ceiling, 1),
    "ceiling_connections": $WRK_CONNECTIONS,
    "ceiling_ratio": round(a / ceiling, 3) if ceiling else 0.0,
    "partitions": $PARTITIONS,
    "payload_bytes": $PAYLOAD_BYTES,
    "endpoints": $total_endpoints,
    "endpoint_import_ms": $import_s,
}
out.update(r)
out["b_vs_a"] = round(r["b_deliveries_per_s"] / a, 3) if a else 0.0
out["c_healthy_vs_a"] = round(r["c_deliveries_per_s"] / a, 3) if a else 0.0
out["d_vs_a"] = round(r["d_deliveries_per_s"] / a, 3) if a else 0.0
out["attempts_succeeded"] = $attempts_ok
out["data_loss_logged"] = bool($data_loss)
out["lost"] = lost
targets = {
    "a_ceiling_ratio_ge_0.40": out["ceiling_ratio"] >= 0.40,
    "b_within_10pct_of_a": out["b_vs_a"] >= 0.90,
    "c_healthy_ge_80pct_of_a": out["c_healthy_vs_a"] >= 0.80,
    "d_ge_a": out["d_vs_a"] >= 1.0,
    "e_ge_20000_retries_per_s": r["e_retries_per_s"] >= 20000,
    "f_p99_lt_50ms": r["f_p99_ms"] < 50,
}
out["targets_met"] = targets
rows = [("machine", "%d cores, %s, kernel DAMON %s" % ($(nproc), "$CPU_MODEL", "$DAMON")),
        ("ceiling: wrk -> receiver, %d conns" % $WRK_CONNECTIONS, "%.0f req/s" % ceiling)]
names = {"a": "a: 1,000 ordered endpoints", "b": "b: 100,000 endpoints",
         "c": "c: 10% failing, healthy 90%", "d": "d: fan-out 1 -> 100",
         "e": "e: retry storm, deliveries", "f": "f: fixed rate %d/s" % r["f_rate_per_s"]}
for k in "abcdef":
    rows.append((names[k], "%7.0f del/s  p50/95/99 %6.1f /%7.1f /%7.1f ms  CPU/10k w %.2f s %.2f pg %.2f  rows %6.0f/s  lost %d" % (
        r[k + "_deliveries_per_s"], r[k + "_p50_ms"], r[k + "_p95_ms"], r[k + "_p99_ms"],
        r[k + "_worker_cpu_s_per_10k"], r[k + "_scheduler_cpu_s_per_10k"],
        r[k + "_postgres_cpu_s_per_10k"], r[k + "_postgres_rows_per_s"], r[k + "_lost"])))
rows.append(("e: retries re-enqueued", "%.0f /s steady (scheduler batches), %d in %.2f s wall = %.0f /s" % (
    r["e_retries_per_s"], r["e_retries"], r["e_drain_s"], r["e_retries_per_s_wall"])))
rows.append(("g: graceful restart under (a)", "duplicates %d of %d (%d attempts in flight at SIGTERM), replacement's first delivery %s ms after SIGTERM, old worker exited after %.0f ms, lost %d" % (
    r["g_duplicates"], r["g_published"], r["g_in_flight_at_sigterm"],
    "none" if r["g_first_delivery_ms"] is None else "%.0f" % r["g_first_delivery_ms"],
    r["g_old_worker_exit_ms"], r["g_lost"])))
rows.append(("ratio to ceiling (a)", "%.3f" % out["ceiling_ratio"]))
rows.append(("b / a, c healthy / a, d / a", "%.2f, %.2f, %.2f" % (out["b_vs_a"], out["c_healthy_vs_a"], out["d_vs_a"])))
rows.append(("targets met", ", ".join("%s %s" % (k, "yes" if v else "NO") for k, v in targets.items())))
rows.append(("lost / DATA LOSS logged", "%d / %s" % (lost, "yes" if $data_loss else "no")))
w = max(len(k) for k, _ in rows)
print("-" * 120)
for k, v in rows:
    print("%-*s  %s" % (w, k, v))
print("-" * 120)
print(json.dumps(out, separators=(",", ":")))
PY

lost=$("$PY" -c "import json; r = json.load(open('$T/result.json')); print(sum(r[k + '_lost'] for k in 'abcdefg'))")
problems=0
[ "$lost" -eq 0 ] || { echo "bench: $lost deliveries were lost" >&2; problems=1; }
[ "$data_loss" -eq 0 ] || { echo "bench: the worker logged DATA LOSS" >&2; problems=1; }
if [ "$problems" -ne 0 ]; then
    failed=$((failed + 1))
    exit 1
fi
