#!/usr/bin/env bash
# `millrace bench allreduce`: the CPU all-reduce (a TCP ring) between two processes on loopback,
# per size, beside raw TCP between the same processes in the same run (one way, and both ways at
# once). One JSON line.
# Run: perf/allreduce.sh [--bytes 1K..256M] [--ranks 2] [--port 29500]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
TARGET="${CARGO_TARGET_DIR:-target}"
bin="${MILLRACE_BIN:-$TARGET/release/millrace}"
[ -n "${MILLRACE_BIN:-}" ] || cargo build --release -p millrace-engine --quiet
"$bin" bench allreduce "$@"
