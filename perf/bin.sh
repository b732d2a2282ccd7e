# Sourced by perf scripts: BIN is $MILLRACE_BIN when set (a kept build, to compare commits on one
# VM), else this tree's release build, built here.
if [ -n "${MILLRACE_BIN:-}" ]; then
  BIN="$MILLRACE_BIN"
else
  cargo build --release -p millrace-engine --quiet
  BIN="${CARGO_TARGET_DIR:-target}/release/millrace"
fi
