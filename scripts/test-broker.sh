#!/usr/bin/env bash
# Starts or stops the tansu broker the tests talk to, on loopback.
#   scripts/test-broker.sh start   # prints nothing; the broker listens on $MILLRACE_TEST_BROKER
#   scripts/test-broker.sh stop
set -euo pipefail

CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
ADDR="${MILLRACE_TEST_BROKER:-127.0.0.1:19092}"
RUN_DIR="${MILLRACE_RUN_DIR:-$CACHE/run}"
PID_FILE="$RUN_DIR/tansu-${ADDR##*:}.pid"
mkdir -p "$RUN_DIR"

stop() {
  if [ -f "$PID_FILE" ]; then
    kill "$(cat "$PID_FILE")" 2>/dev/null || true
    rm -f "$PID_FILE"
  fi
}

case "${1:-}" in
  start)
    stop
    "$CACHE/tansu/bin/tansu" broker \
      --listener-url "tcp://$ADDR" --advertised-listener-url "tcp://$ADDR" \
      --storage-engine "memory://tansu/" >"$RUN_DIR/tansu.log" 2>&1 &
    echo $! >"$PID_FILE"
    for _ in $(seq 1 100); do
      if (exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR##*:}") 2>/dev/null; then exit 0; fi
      sleep 0.1
    done
    echo "test-broker: tansu did not start listening on $ADDR; its log:" >&2
    cat "$RUN_DIR/tansu.log" >&2
    exit 1
    ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
