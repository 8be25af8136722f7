#!/usr/bin/env bash
# Starts (or stops) a throwaway PostgreSQL cluster for the tests.
#   scripts/test-pg.sh start   → prints the DATABASE_URL to use
#   scripts/test-pg.sh stop
# Installs PostgreSQL from Debian when it is missing (needs root). Data lives in $STK_TEST_PG_DIR.
set -euo pipefail
DIR="${STK_TEST_PG_DIR:-/tmp/stk-test-pg}"
PORT="${STK_TEST_PG_PORT:-55432}"

pgbin() {
  local d
  d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
  if [ -z "$d" ] || [ ! -x "$d/pg_ctl" ]; then return 1; fi
  echo "$d"
}

run_as_pg() {
  if [ "$(id -u)" = "0" ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-start}" in
  start)
    if ! BIN=$(pgbin); then
      echo "PostgreSQL not found: installing it from Debian" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >&2
      apt-get install -y -qq postgresql postgresql-contrib >&2
      BIN=$(pgbin)
    fi
    if [ -f "$DIR/data/postmaster.pid" ] && run_as_pg "$BIN/pg_ctl" -D "$DIR/data" status >/dev/null 2>&1; then
      echo "postgres://postgres@127.0.0.1:$PORT/postgres"
      exit 0
    fi
    rm -rf "$DIR"
    mkdir -p "$DIR"
    if [ "$(id -u)" = "0" ]; then chown postgres "$DIR"; fi
    run_as_pg "$BIN/initdb" -D "$DIR/data" -A trust -U postgres >/dev/null
    run_as_pg "$BIN/pg_ctl" -D "$DIR/data" -l "$DIR/server.log" -w -t 60 \
      -o "-p $PORT -k $DIR -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_preload_libraries=pg_stat_statements" start >&2
    echo "postgres://postgres@127.0.0.1:$PORT/postgres"
    ;;
  stop)
    if BIN=$(pgbin) && [ -d "$DIR/data" ]; then run_as_pg "$BIN/pg_ctl" -D "$DIR/data" -m fast stop >&2 || true; fi
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
