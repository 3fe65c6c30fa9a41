#!/usr/bin/env bash
# pg.sh - a throwaway PostgreSQL 15 for the local stack and the tests.
#
#   dev/pg.sh start DIR [PORT]   initdb DIR/data if needed, start on 127.0.0.1:PORT
#                                (default: the port of the last start, else a
#                                free one), create database "webhooks" and
#                                print DATABASE_URL=... on stdout
#   dev/pg.sh stop DIR           fast shutdown; succeeds if already stopped
#   dev/pg.sh restart DIR        stop, then start on the same port
#
# The server listens on 127.0.0.1 only, keeps its unix socket in DIR, logs
# to DIR/postgres.log and keeps fsync and synchronous_commit on (the crash
# tests rely on durability). Run as root, everything touching DIR runs as
# the postgres user and DIR is chowned to it, so DIR must be reachable by
# that user (create it with mktemp -d, or under /tmp).
# Called by the dev stack scripts and the integration and fault tests.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
PG_USER=postgres
DB_NAME=webhooks
WAIT_S=30
# Below Linux's default ephemeral range (32768-60999), where outgoing
# connections would otherwise collide with the chosen port.
PORT_MIN=20000
PORT_SPAN=12768

prog=${0##*/}

die() {
    printf '%s: %s\n' "$prog" "$*" >&2
    exit 1
}

usage() {
    cat <<EOF
Usage: $prog start DIR [PORT]
       $prog stop DIR
       $prog restart DIR

A throwaway PostgreSQL 15 in DIR (data in DIR/data, log in DIR/postgres.log,
unix socket in DIR), listening on 127.0.0.1 only. start and restart print
  DATABASE_URL=postgresql://postgres@127.0.0.1:PORT/$DB_NAME
on stdout once the server accepts connections (waiting at most ${WAIT_S} s).
Binaries come from PGBIN (default /usr/lib/postgresql/15/bin).
EOF
}

# Runs a command as the postgres user when we are root, else as ourselves.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then
        runuser -u "$PG_USER" -- "$@"
    else
        "$@"
    fi
}

# A port is taken when something listens on it or a live connection uses
# it locally; connections that are closing (TIME-WAIT, FIN-WAIT, LAST-ACK:
# left by a server we just stopped) do not keep postgres from binding it
# again.
port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        [ -n "$(ss -Htan state listening state established state syn-sent \
            state syn-recv state close-wait "sport = :$port" 2>/dev/null)" ]
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi
}

pick_free_port() {
    local i port
    for ((i = 0; i < 100; i++)); do
        port=$((PORT_MIN + RANDOM % PORT_SPAN))
        if ! port_in_use "$port"; then
            echo "$port"
            return 0
        fi
    done
    die "no free TCP port found on 127.0.0.1"
}

valid_port() {
    [[ $1 =~ ^[0-9]{1,5}$ ]] && [ "$1" -ge 1 ] && [ "$1" -le 65535 ]
}

# Sets DIR to the absolute path of $1 (which must exist) and checks that it
# can serve as a socket directory and be quoted in postgresql.conf.
resolve_dir() {
    DIR=$(cd -- "$1" && pwd) || die "cannot enter $1"
    case $DIR in
    *\'* | *\\* | *$'\n'*) die "$DIR: quotes, backslashes and newlines are not supported" ;;
    esac
    # A unix socket path holds at most 107 bytes: DIR/.s.PGSQL.NNNNN
    [ "${#DIR}" -le 90 ] || die "$DIR: path too long for a unix socket directory (max 90)"
}

# True if the PID in postmaster.pid is a live process. A killed postmaster
# can linger as a zombie until its new parent reaps it: that counts as dead.
pg_running() {
    local pid stat
    pid=$(head -n 1 "$DIR/data/postmaster.pid" 2>/dev/null) || return 1
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# Removes the lock files a killed server left behind; postgres would refuse
# to start while their PID still exists as a zombie.
remove_stale_locks() {
    local f
    for f in "$DIR/data/postmaster.pid" "$DIR"/.s.PGSQL.*.lock; do
        if [ -f "$f" ]; then
            echo "$prog: removing stale $f" >&2
            as_pg rm -f -- "$f"
        fi
    done
}

log_tail() {
    if [ -f "$DIR/postgres.log" ]; then
        echo "--- last lines of $DIR/postgres.log:" >&2
        tail -n 15 "$DIR/postgres.log" >&2 || true
    fi
}

# --no-sync only skips flushing the fresh cluster files at init (seconds on
# a busy disk); the server itself runs with fsync on.
init_cluster() {
    as_pg "$PGBIN/initdb" -D "$DIR/data" -A trust -U "$PG_USER" -E UTF8 \
        --locale=C.UTF-8 --no-instructions --no-sync >"$DIR/initdb.log" 2>&1 || {
        cat "$DIR/initdb.log" >&2
        die "initdb failed (log: $DIR/initdb.log)"
    }
    printf "\ninclude_if_exists = 'devstack.conf'\n" |
        as_pg tee -a "$DIR/data/postgresql.conf" >/dev/null
}

write_settings() {
    local port=$1
    as_pg tee "$DIR/data/devstack.conf" >/dev/null <<EOF
# Written by dev/pg.sh on every start; edits are overwritten.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$DIR'
max_connections = 200
shared_buffers = 128MB
fsync = on
synchronous_commit = on
full_page_writes = on
logging_collector = off
log_line_prefix = '%m [%p] %q%u@%d '
EOF
}

wait_ready() {
    local port=$1 deadline=$((SECONDS + WAIT_S))
    until "$PGBIN/pg_isready" -q -h 127.0.0.1 -p "$port" -U "$PG_USER" -d postgres -t 2; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            log_tail
            die "PostgreSQL on port $port not ready after ${WAIT_S} s"
        fi
        sleep 0.2
    done
}

create_db() {
    local port=$1 exists
    exists=$("$PGBIN/psql" -X -q -At -h 127.0.0.1 -p "$port" -U "$PG_USER" -d postgres \
        -c "select 1 from pg_database where datname = '$DB_NAME'") ||
        die "cannot query databases on port $port"
    if [ "$exists" != 1 ]; then
        "$PGBIN/psql" -X -q -h 127.0.0.1 -p "$port" -U "$PG_USER" -d postgres \
            -v ON_ERROR_STOP=1 -c "create database $DB_NAME" >/dev/null ||
            die "create database $DB_NAME failed"
    fi
}

# Starts the server on $1; returns non-zero on failure.
start_server() {
    local port=$1
    write_settings "$port"
    as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -l "$DIR/postgres.log" -w -t "$WAIT_S" \
        start >&2
}

cmd_start() {
    local port=${2:-} picked=0 attempt
    [ -x "$PGBIN/postgres" ] || die "$PGBIN/postgres not found (install the postgresql package or set PGBIN)"
    if [ -n "$port" ] && ! valid_port "$port"; then
        die "bad port '$port' (expected 1..65535)"
    fi
    mkdir -p -- "$1" || die "cannot create $1"
    resolve_dir "$1"
    if [ "$(id -u)" -eq 0 ]; then
        id -u "$PG_USER" >/dev/null 2>&1 || die "user $PG_USER does not exist"
        chown "$PG_USER:" "$DIR"
        runuser -u "$PG_USER" -- test -w "$DIR" ||
            die "$DIR is not reachable by user $PG_USER (its parent directories must be searchable; use mktemp -d)"
    fi

    if [ -z "$port" ] && [ -f "$DIR/port" ]; then
        port=$(cat "$DIR/port")
        valid_port "$port" || die "$DIR/port holds a bad port '$port'"
    fi

    if pg_running; then
        local running
        running=$(cat "$DIR/port" 2>/dev/null || true)
        if [ -n "$port" ] && [ "$port" != "$running" ]; then
            die "already running in $DIR on port $running, not $port (stop it first)"
        fi
        port=$running
    else
        if [ -n "$port" ] && port_in_use "$port"; then
            die "127.0.0.1:$port is already in use"
        fi
        remove_stale_locks
        if [ ! -f "$DIR/data/PG_VERSION" ]; then
            [ ! -e "$DIR/data" ] || [ -z "$(ls -A "$DIR/data")" ] ||
                die "$DIR/data exists but is not a PostgreSQL data directory"
            init_cluster
        fi
        if [ -z "$port" ]; then
            picked=1
            port=$(pick_free_port)
        fi
        attempt=1
        until start_server "$port"; do
            if [ "$attempt" -ge 3 ]; then
                log_tail
                die "PostgreSQL failed to start in $DIR on port $port"
            fi
            attempt=$((attempt + 1))
            if [ "$picked" -eq 1 ]; then
                # The picked port may have been taken in the meantime.
                port=$(pick_free_port)
            else
                # Backends of a killed server may still hold shared memory.
                sleep 1
                remove_stale_locks
            fi
        done
        printf '%s\n' "$port" | as_pg tee "$DIR/port" >/dev/null
    fi

    wait_ready "$port"
    create_db "$port"
    printf 'DATABASE_URL=postgresql://%s@127.0.0.1:%s/%s\n' "$PG_USER" "$port" "$DB_NAME"
}

cmd_stop() {
    if [ ! -d "$1" ]; then
        echo "$prog: $1 does not exist; nothing to stop" >&2
        return 0
    fi
    resolve_dir "$1"
    [ -d "$DIR/data" ] || return 0
    pg_running || return 0
    if ! as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m fast -w -t "$WAIT_S" stop >&2; then
        echo "$prog: fast shutdown timed out; stopping immediately" >&2
        as_pg "$PGBIN/pg_ctl" -D "$DIR/data" -m immediate -w -t 10 stop >&2 ||
            die "PostgreSQL in $DIR did not stop"
    fi
}

main() {
    local cmd=${1:-}
    case $cmd in
    start)
        if [ $# -lt 2 ] || [ $# -gt 3 ]; then
            usage >&2
            exit 2
        fi
        cmd_start "$2" "${3:-}"
        ;;
    stop)
        [ $# -eq 2 ] || { usage >&2; exit 2; }
        cmd_stop "$2"
        ;;
    restart)
        [ $# -eq 2 ] || { usage >&2; exit 2; }
        [ -f "$2/port" ] || die "$2 has no saved port; use start first"
        cmd_stop "$2"
        cmd_start "$2" "$(cat "$2/port")"
        ;;
    -h | --help | help)
        usage
        ;;
    *)
        usage >&2
        exit 2
        ;;
    esac
}

main "$@"
