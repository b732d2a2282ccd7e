#!/usr/bin/env bash
# Serving links none of the training stack: `cargo tree -p millrace-serving` (normal and build
# dependencies, every target platform) holds no libtorch binding, no Kafka client and no
# dataflow engine, so that a serving image stays slim. Fails naming what it found, and fails
# when `cargo tree` itself does.
set -euo pipefail
cd "$(dirname "$0")/.."
forbidden='^(tch|torch-sys|rdkafka|rdkafka-sys|timely|timely_[a-z_]+|differential-dataflow)$'
tree="$(cargo tree --locked --target all -p millrace-serving -e normal,build --prefix none --format '{p}')"
found="$(awk '{print $1}' <<<"$tree" | sort -u | grep -E "$forbidden" || true)"
if [ -n "$found" ]; then
  echo "millrace-serving depends on what only training needs:" $found >&2
  cargo tree --locked --target all -p millrace-serving -e normal,build -i "$(head -1 <<<"$found")" >&2 || true
  exit 1
fi
echo "millrace-serving links no tch, rdkafka or timely"
