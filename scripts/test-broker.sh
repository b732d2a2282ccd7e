#!/usr/bin/env bash
# Starts or stops the tansu broker the tests talk to, on loopback.
#   scripts/test-broker.sh start   # the broker listens on $MILLRACE_TEST_BROKER (127.0.0.1:19092)
#   scripts/test-broker.sh stop
set -euo pipefail

CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
ADDR="${MILLRACE_TEST_BROKER:-127.0.0.1:19092}"
RUN_DIR="${MILLRACE_RUN_DIR:-$CACHE/run}"
PID_FILE="$RUN_DIR/tansu-${ADDR##*:}.pid"
mkdir -p "$RUN_DIR"

listening() { (exec 3<>"/dev/tcp/${ADDR%:*}/${ADDR##*:}") 2>/dev/null; }

# shellcheck source=scripts/pid-file.sh
. "$(dirname "$0")/pid-file.sh"

case "${1:-}" in
  start)
    stop
    if listening; then
      echo "test-broker: something else already listens on $ADDR; stop it or set MILLRACE_TEST_BROKER" >&2
      exit 1
    fi
    "$CACHE/tansu/bin/tansu" broker \
      --listener-url "tcp://$ADDR" --advertised-listener-url "tcp://$ADDR" \
      --storage-engine "memory://tansu/" >"$RUN_DIR/tansu.log" 2>&1 &
    pid=$!
    echo "$pid" >"$PID_FILE"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      if listening; then exit 0; fi
      sleep 0.1
    done
    echo "test-broker: tansu did not start listening on $ADDR; its log:" >&2
    cat "$RUN_DIR/tansu.log" >&2
    stop
    exit 1
    ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
