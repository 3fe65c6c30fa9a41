#!/usr/bin/env bash
# dev/down.sh - stops the processes dev/up.sh started (by the pids it
# recorded, nothing else), stops its PostgreSQL and removes their data.
set -uo pipefail

ROOT=$(cd -- "$(dirname -- "$0")/.." && pwd)
STATE=${DEV_STATE_DIR:-$ROOT/.dev}
[ -d "$STATE" ] || { echo "dev-down: nothing is running"; exit 0; }

# workers first, so they can commit and leave their groups
for name in receiver scheduler worker broker; do
    f=$STATE/$name.pid
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    if kill "$pid" 2>/dev/null; then
        timeout 30 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null
        echo "stopped $name (pid $pid)"
    fi
done
if [ -f "$STATE/pgdir" ]; then
    pgdir=$(cat "$STATE/pgdir")
    "$ROOT/dev/pg.sh" stop "$pgdir" >/dev/null 2>&1 && echo "stopped PostgreSQL"
    case $pgdir in /tmp/webhook-dev-pg.*) rm -rf "$pgdir" ;; esac
fi
rm -rf "$STATE"
