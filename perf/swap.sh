#!/usr/bin/env bash
# Issue 28's swap costs, in one run: what a server takes to swap in a version that changes 1% of
# a 16.8M-weight model's chunks, and one that changes all of them. Prints one JSON line.
#
# 1. `millrace bench swap --hash-bits 24 --changed 0.01,1` publishes v1, then v2 (1% of the
#    1,024 chunks changed, in 2% of their rows), then v3 (every chunk changed) into a staging
#    registry, and loads them in-process as serving does: `in_process`.
# 2. For each build (this tree's, or MILLRACE_BIN's when set; and BASE_BIN's when set;
#    alternating, ROUNDS times):
#    `millrace serve --load-cpu-share 1` on a registry holding v1, the server on the last core;
#    v2 is moved in, then v3, each once the one before is served. For each: the time from the
#    move to the server's log saying it serves it (which includes the wait for the next poll of
#    the registry, up to 200 ms), the server's CPU seconds meanwhile (utime + stime, 10 ms
#    ticks) and the bytes it read (`rchar`). Nothing else asks the server anything meanwhile.
#
# Run: perf/swap.sh, or BASE_BIN=/path/to/an/older/millrace ROUNDS=3 perf/swap.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
# shellcheck source=perf/bin.sh
. perf/bin.sh
ROUNDS="${ROUNDS:-1}"
ADDR=127.0.0.1:18090
last=$(($(nproc) - 1))
taskset -cp "0-$((last > 0 ? last - 1 : 0))" $$ >/dev/null
WORK="$(mktemp -d)"
SERVER=""
cleanup() {
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

"$BIN" bench swap --registry "$WORK/staging" --hash-bits 24 --changed 0.01,1 >"$WORK/in_process.json"
sync

# One server of build $1 swaps v2 and v3 in; appends a JSON line to $WORK/served.jsonl.
serve_swaps() {
  rm -rf "$WORK/served"
  mkdir -p "$WORK/served/ctr" "$WORK/next"
  cp -al "$WORK/staging/ctr/v0000000001" "$WORK/served/ctr/"
  cp -al "$WORK/staging/ctr/v0000000002" "$WORK/staging/ctr/v0000000003" "$WORK/next/"
  taskset -c "$last" "$1" serve --registry "$WORK/served" --bind "$ADDR" --load-cpu-share 1 \
    2>"$WORK/serve.log" &
  SERVER=$!
  for _ in $(seq 300); do
    curl -sf "http://$ADDR/readyz" >/dev/null && break
    kill -0 "$SERVER" 2>/dev/null || { cat "$WORK/serve.log" >&2; exit 1; }
    sleep 0.2
  done
  curl -sf "http://$ADDR/readyz" >/dev/null || { echo "$1 serve: not ready within 60 s" >&2; exit 1; }
  python3 - "$WORK" "$SERVER" "$2" <<'PY' >>"$WORK/served.jsonl"
import json, os, re, sys, time
work, server, build = sys.argv[1], sys.argv[2], sys.argv[3]
log = open(f"{work}/serve.log")
said = re.compile(r"(loaded new|rejected) model version.* model=ctr version=(\d+)\b")
tick = os.sysconf("SC_CLK_TCK")


def counters():
    io = dict(line.split(":") for line in open(f"/proc/{server}/io"))
    stat = open(f"/proc/{server}/stat").read().rsplit(")", 1)[1].split()
    return int(io["rchar"]), (int(stat[11]) + int(stat[12])) / tick


swaps = []
for number, changed in [(2, 0.01), (3, 1.0)]:
    name = f"v{number:010}"
    read, cpu = counters()
    moved = time.monotonic()
    os.rename(f"{work}/next/{name}", f"{work}/served/ctr/{name}")
    deadline, partial = moved + 120, ""
    while True:
        partial += log.readline()
        if not partial.endswith("\n"):
            if time.monotonic() > deadline:
                sys.exit(f"the server did not load version {number} within 120 s")
            time.sleep(0.002)
            continue
        line, partial = partial.rstrip("\n"), ""
        if (match := said.search(line)) and int(match.group(2)) == number:
            if match.group(1) == "rejected":
                sys.exit(f"the server rejected version {number}: {line}")
            break
    seconds = time.monotonic() - moved
    read_after, cpu_after = counters()
    swaps.append({"version": number, "changed_chunks_fraction": changed,
                  "move_to_served_s": round(seconds, 3),
                  "cpu_s": round(cpu_after - cpu, 3), "bytes_read": read_after - read})
    time.sleep(0.3)
print(json.dumps({"build": build, "swaps": swaps}))
PY
  kill "$SERVER"
  wait "$SERVER" 2>/dev/null || true
  SERVER=""
}

for _ in $(seq "$ROUNDS"); do
  [ -n "${BASE_BIN:-}" ] && serve_swaps "$BASE_BIN" base
  serve_swaps "$BIN" this
done

python3 - "$WORK/in_process.json" "$WORK/served.jsonl" <<'PY'
import json, sys
in_process = json.load(open(sys.argv[1]))
runs = [json.loads(line) for line in open(sys.argv[2])]
served = {}
for run in runs:
    served.setdefault(run["build"], []).append(run["swaps"])
print(json.dumps({"in_process": in_process, "served": served}))
PY
