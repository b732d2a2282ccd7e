#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS each (default 30), from the
# committed seeds plus the local corpus. Installs cargo-fuzz into the cache once. The stable
# toolchain builds the sanitizer flags with RUSTC_BOOTSTRAP=1; nothing here needs nightly.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
export PATH="$CACHE/cargo-fuzz/bin:$PATH"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked --root "$CACHE/cargo-fuzz" --quiet
for target in $(ls fuzz/fuzz_targets | sed 's/\.rs$//'); do
  mkdir -p "fuzz/corpus/$target"
  log="$(mktemp)"
  seeds=()
  [ -d "fuzz/seeds/$target" ] && seeds=("fuzz/seeds/$target")
  if ! RUSTC_BOOTSTRAP=1 cargo fuzz run "$target" --fuzz-dir fuzz "fuzz/corpus/$target" "${seeds[@]}" \
    -- -max_total_time="${FUZZ_SECONDS:-30}" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    echo "fuzz: $target failed (a crash, leak, timeout or build error); see fuzz/artifacts/$target" >&2
    exit 1
  fi
  grep -E "^Done" "$log"
  rm -f "$log"
done
