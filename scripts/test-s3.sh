#!/usr/bin/env bash
# Starts or stops the S3-compatible object store (moto's server, from PyPI) that the broker
# restart test keeps a tansu broker's topics in, so that they outlive the broker's process.
#   scripts/test-s3.sh start   # listens on $MILLRACE_TEST_S3 (http://127.0.0.1:19500), with an
#                              # empty bucket `millrace-tests`
#   scripts/test-s3.sh stop
# `scripts/setup.sh --with-broker` installs moto into a venv under the cache.
set -euo pipefail

CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
URL="${MILLRACE_TEST_S3:-http://127.0.0.1:19500}"
HOSTPORT="${URL#http://}"
RUN_DIR="${MILLRACE_RUN_DIR:-$CACHE/run}"
PID_FILE="$RUN_DIR/moto-${HOSTPORT##*:}.pid"
mkdir -p "$RUN_DIR"

# shellcheck source=scripts/pid-file.sh
. "$(dirname "$0")/pid-file.sh"

case "${1:-}" in
  start)
    stop
    if curl -s -o /dev/null "$URL"; then
      echo "test-s3: something else already answers on $URL; stop it or set MILLRACE_TEST_S3" >&2
      exit 1
    fi
    "$CACHE/venv-moto/bin/moto_server" -H "${HOSTPORT%:*}" -p "${HOSTPORT##*:}" \
      >"$RUN_DIR/moto.log" 2>&1 &
    pid=$!
    echo "$pid" >"$PID_FILE"
    for _ in $(seq 1 100); do
      kill -0 "$pid" 2>/dev/null || break
      if curl -sf -o /dev/null -X PUT "$URL/millrace-tests"; then exit 0; fi
      sleep 0.1
    done
    echo "test-s3: moto did not start on $URL; its log:" >&2
    cat "$RUN_DIR/moto.log" >&2
    stop
    exit 1
    ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
