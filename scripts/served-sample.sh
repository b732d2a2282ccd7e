# Sourced by the checks that need `millrace serve` on a registry learned from the Criteo sample:
# `serve_sample ADDR [SERVE FLAGS…]` learns two versions of `ctr` into "$work/registry" (so that
# pin, split and rollback have something to do), serves them on ADDR (the server's pid in
# "$pid", its log in "$work/log") and waits until it is ready. Needs $BIN, $work and $pid set.
serve_sample() {
  local addr="$1"
  shift
  "$BIN" bench online --input ../shared/data/criteo-kaggle-dac-head8000/train.tsv --hash-bits 16 \
    --registry "$work/registry" --publish-every 4000 >/dev/null
  "$BIN" serve --registry "$work/registry" --bind "$addr" "$@" 2>"$work/log" &
  pid=$!
  for _ in $(seq 100); do
    curl -sf "http://$addr/readyz" >/dev/null && return 0
    sleep 0.1
  done
  cat "$work/log"
  return 1
}
