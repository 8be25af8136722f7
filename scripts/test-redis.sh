#!/usr/bin/env bash
# Starts (or stops) a throwaway Redis for the tests and benchmarks (global per-key rate limits).
#   scripts/test-redis.sh start   → prints the STK_RATE_LIMIT_REDIS_URL to use
#   scripts/test-redis.sh stop
# Installs Debian's redis-server when it is missing (needs root). No persistence; data in $STK_TEST_REDIS_DIR.
set -euo pipefail
DIR="${STK_TEST_REDIS_DIR:-/tmp/stk-test-redis}"
PORT="${STK_TEST_REDIS_PORT:-56379}"
URL="redis://127.0.0.1:$PORT"

up() { redis-cli -h 127.0.0.1 -p "$PORT" ping 2>/dev/null | grep -q PONG; }

case "${1:-start}" in
  start)
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
      echo "redis-server not found: installing it from Debian" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -qq >&2
      apt-get install -y -qq redis-server >&2
    fi
    if up; then
      echo "$URL"
      exit 0
    fi
    mkdir -p "$DIR"
    redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
      --dir "$DIR" --pidfile "$DIR/redis.pid" --logfile "$DIR/redis.log" >&2
    for _ in $(seq 1 100); do
      if up; then
        echo "$URL"
        exit 0
      fi
      sleep 0.1
    done
    echo "redis-server did not answer on port $PORT (log: $DIR/redis.log)" >&2
    exit 1
    ;;
  stop)
    if up; then redis-cli -h 127.0.0.1 -p "$PORT" shutdown nosave >/dev/null 2>&1 || true; fi
    ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
