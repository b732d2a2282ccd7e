# Sourced by the scripts that start and stop a test service: stops the process whose pid is in
# $PID_FILE (waiting up to 5 s for it to end) and removes the file.
stop() {
  if [ -f "$PID_FILE" ]; then
    pid="$(cat "$PID_FILE")"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$PID_FILE"
  fi
}
