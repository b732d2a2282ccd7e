#!/usr/bin/env bash
# Issue 6's serving figures, in one run, on loopback. Prints one JSON line.
#
# The server runs on one core and the load generators on the other (taskset), so that they do not
# take each other's time; on a machine of one core both share it.
#
# 1. `millrace bench online --hash-bits 24` (16.8M weights) learns 1M generated events and
#    publishes a version every 10k rows into a staging registry: 101 versions.
# 2. `millrace serve` serves version 1. wrk (Debian package) saturates POST
#    /v1/models/ctr:predict (one instance, 39 Criteo fields, perf/wrk/predict.json), then GET
#    /v1/ping, then the same instance as an Open Inference Protocol infer (POST
#    /v2/models/ctr/infer, a tensor per field, perf/wrk/infer.json): QPS, p50, p99. The server's
#    own latency histogram over the predict run (two scrapes of /metrics) gives the bucket of
#    its p99, and how many buckets away from it wrk's p99 falls. The instance repeats, so it comes from the row cache; predict also
#    runs against a second server without the cache, with 16 and with 64 connections, and
#    against a third without the cache and with the dynamic batcher (64 connections).
# 3. The fewest wrk connections (closed loop, no pacing) whose predict rate is at least half the
#    saturation rate: p50 and p99 while answering at half saturation or more. wrk's delay()
#    pacing fires in bursts on millisecond ticks, and no constant-rate generator here keeps up
#    on one core (perf/RESULTS.md), so a smooth closed loop is the measurement that holds.
# 4. Predict paced at about half its saturation rate (wrk's delay()): the steady p99.
# 5. The same paced load while the 100 later versions are moved into the served registry, each
#    once the server serves the one before (plus 100 ms): failed requests, p99 during the swaps,
#    swaps seen by the server, the time they took, and its peak resident memory (VmHWM) against
#    its resident memory with one version before the swaps. Versions load at half a core
#    (`--load-cpu-share`, the default).
#
# Run: perf/serve.sh
#
# To compare builds on one VM: MILLRACE_BIN=path runs that binary instead of building this tree
# (keep a copy of the other commit's release build), and VERSIONS=dir keeps the 101 published
# versions there (made on the first run, hard-linked into each later run's registry), so that
# alternating runs serve the same versions and skip step 1. SCHED_TRACE=file records the
# scheduler of every core during the swaps (`perf sched record`; root) into that file;
# PROFILE=file samples the server's stacks during the swaps instead (`perf record -g`).
# SWAPS_ONLY=1 runs only what the swaps are measured against (predict, ping, the paced load) and
# the swaps, leaving the other figures null.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
scripts/setup.sh --with-perf >&2
# shellcheck source=perf/bin.sh
. perf/bin.sh
ADDR=127.0.0.1:18080
ADDR_UNCACHED=127.0.0.1:18081
ADDR_BATCHED=127.0.0.1:18082
# Server on the last core, load on the others; this script and what it starts (the swap loop)
# on the others too, so that only the server runs on its core.
last=$(($(nproc) - 1))
SERVER_CPU=(taskset -c "$last")
LOAD_CPU=(taskset -c "0-$((last > 0 ? last - 1 : 0))")
taskset -cp "0-$((last > 0 ? last - 1 : 0))" $$ >/dev/null
WORK="$(mktemp -d)"
SERVER=""
cleanup() {
  [ -n "${TRACE:-}" ] && { kill -INT "$TRACE" 2>/dev/null || true; }
  [ -n "${load:-}" ] && { kill -INT "$load" 2>/dev/null || true; }
  [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null && wait "$SERVER" 2>/dev/null
  [ -n "${OTHER:-}" ] && kill "$OTHER" 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT
export WRK_REPORT="$PWD/perf/wrk/report.lua"

if [ -n "${VERSIONS:-}" ] && [ -d "$VERSIONS/ctr" ]; then
  cp -al "$VERSIONS" "$WORK/staging"
else
  "$BIN" gen criteo --rows 1020000 --seed 7 >"$WORK/events.tsv"
  "$BIN" bench online --input "$WORK/events.tsv" --holdout 0.01 --hash-bits 24 \
    --registry "$WORK/staging" --publish-every 10000 >"$WORK/online.json"
  rm "$WORK/events.tsv"
  if [ -n "${VERSIONS:-}" ]; then
    mkdir -p "$VERSIONS"
    cp -al "$WORK/staging/." "$VERSIONS/"
  fi
fi
# The 101 versions (6.5 GB) are written back to disk now, not during the measurements.
sync
mapfile -t versions < <(ls "$WORK/staging/ctr")
mkdir -p "$WORK/served/ctr"
mv "$WORK/staging/ctr/${versions[0]}" "$WORK/served/ctr/"

"${SERVER_CPU[@]}" "$BIN" serve --registry "$WORK/served" --bind "$ADDR" 2>"$WORK/serve.log" &
SERVER=$!
until curl -sf "http://$ADDR/readyz" >/dev/null; do sleep 0.2; done
rss() { awk -v k="$1:" '$1 == k { print $2 * 1024 }' "/proc/$SERVER/status"; }

wrk_json() { "${LOAD_CPU[@]}" wrk "$@" | tail -n 1; }
predict_url="http://$ADDR/v1/models/ctr:predict"
curl -s "http://$ADDR/metrics" >"$WORK/before.prom"
predict=$(wrk_json -t1 -c16 -d10s -s perf/wrk/predict.lua "$predict_url")
curl -s "http://$ADDR/metrics" >"$WORK/after.prom"
ping=$(wrk_json -t1 -c16 -d10s -s perf/wrk/ping.lua "http://$ADDR/v1/ping")
infer=null uncached=null uncached64=null batched64=null at_half=null at_half_connections=0
half=$(python3 -c "import json,sys; print(json.loads(sys.argv[1])['qps'] / 2)" "$predict")
if [ -z "${SWAPS_ONLY:-}" ]; then
# The same instance as an Open Inference Protocol (v2) infer: a tensor per field.
infer=$(PREDICT_BODY=perf/wrk/infer.json wrk_json -t1 -c16 -d10s -s perf/wrk/predict.lua \
  "http://$ADDR/v2/models/ctr/infer")

# The same instance every time is a hit of the row cache after the first request: predict
# again on a second server without the cache, which parses and transforms every request; then
# on a third, without the cache and with the dynamic batcher, at 64 connections.
other() {
  "${SERVER_CPU[@]}" "$BIN" serve --registry "$WORK/served" --bind "$1" --row-cache-entries 0 \
    "${@:2}" 2>"$WORK/serve-other.log" &
  OTHER=$!
  until curl -sf "http://$1/readyz" >/dev/null; do sleep 0.2; done
}
stop_other() { kill "$OTHER"; wait "$OTHER" 2>/dev/null || true; OTHER=""; }
other "$ADDR_UNCACHED"
uncached_url="http://$ADDR_UNCACHED/v1/models/ctr:predict"
uncached=$(wrk_json -t1 -c16 -d10s -s perf/wrk/predict.lua "$uncached_url")
uncached64=$(wrk_json -t1 -c64 -d10s -s perf/wrk/predict.lua "$uncached_url")
stop_other
other "$ADDR_BATCHED" --batch-max-instances 48 --batch-timeout-us 200
batched64=$(wrk_json -t1 -c64 -d10s -s perf/wrk/predict.lua "http://$ADDR_BATCHED/v1/models/ctr:predict")
stop_other

# The fewest connections that answer at least half the (cached) saturation rate.
for c in 1 2 3 4 6 8 12 16; do
  at_half=$(wrk_json -t1 -c"$c" -d10s -s perf/wrk/predict.lua "$predict_url")
  at_half_connections=$c
  python3 -c "import json,sys; sys.exit(json.loads(sys.argv[1])['qps'] < float(sys.argv[2]))" \
    "$at_half" "$half" && break
done
fi

# About half the (cached) saturation rate, paced: connections each waiting 1 ms on average
# before each request, 1.8 per thousand requests a second (a request takes about 0.5 ms).
conns=$(python3 -c "import math,sys; print(max(1, math.ceil(float(sys.argv[1]) * 1.8 / 1000)))" "$half")
pace=1
steady=$(PACE_MS=$pace wrk_json -t1 -c"$conns" -d10s -s perf/wrk/predict.lua "$predict_url")
steady_rss=$(rss VmRSS)

# wrk runs until the last swap is in (it prints its figures on SIGINT).
PACE_MS=$pace "${LOAD_CPU[@]}" wrk -t1 -c"$conns" -d600s -s perf/wrk/predict.lua "$predict_url" >"$WORK/swaps.txt" &
load=$!
sleep 2
if [ -n "${SCHED_TRACE:-}" ]; then
  perf sched record -a -o "$SCHED_TRACE" >/dev/null 2>&1 &
  TRACE=$!
  sleep 1
elif [ -n "${PROFILE:-}" ]; then
  perf record -F 4999 -g -p "$SERVER" -o "$PROFILE" >/dev/null 2>&1 &
  TRACE=$!
  sleep 1
fi
SECONDS=0
read_before=$(awk '$1 == "rchar:" { print $2 }' "/proc/$SERVER/io")
# One process moves each version in, waits for the server's log to say it serves it (reading
# the log as it grows: no process started per poll, nothing asked of the server), notes the
# time from the move, waits 100 ms, and keeps the served directory to the newest three.
python3 - "$WORK" "$SERVER" "${versions[@]:1}" <<'PY'
import os, re, shutil, sys, time
work, server, versions = sys.argv[1], sys.argv[2], sys.argv[3:]
log = open(f"{work}/serve.log")
said = re.compile(r"(loaded new|rejected) model version.* model=ctr version=(\d+)\b")
served, partial = set(), ""
with open(f"{work}/swap_times", "w") as times:
    for version in versions:
        moved = time.monotonic_ns()
        os.rename(f"{work}/staging/ctr/{version}", f"{work}/served/ctr/{version}")
        number = int(version.lstrip("v"))
        deadline = time.monotonic() + 120
        while number not in served:
            partial += log.readline()
            if not partial.endswith("\n"):
                if time.monotonic() > deadline or not os.path.exists(f"/proc/{server}"):
                    sys.exit(f"the server did not load version {number} within 120 s (or died)")
                time.sleep(0.002)
                continue
            line, partial = partial.rstrip("\n"), ""
            if match := said.search(line):
                if match.group(1) == "rejected":
                    sys.exit(f"the server rejected version {match.group(2)}: {line}")
                served.add(int(match.group(2)))
        print(time.monotonic_ns() - moved, file=times)
        time.sleep(0.1)
        held = sorted(name for name in os.listdir(f"{work}/served/ctr") if name.startswith("v"))
        for old in held[:-3]:
            shutil.rmtree(f"{work}/served/ctr/{old}")
PY
swap_seconds=$SECONDS
read_after=$(awk '$1 == "rchar:" { print $2 }' "/proc/$SERVER/io")
if [ -n "${TRACE:-}" ]; then
  kill -INT "$TRACE" 2>/dev/null || true
  wait "$TRACE" || true
  TRACE=""
fi
kill -INT "$load" 2>/dev/null || true
wait "$load" || true
swapping=$(tail -n 1 "$WORK/swaps.txt")
peak_rss=$(rss VmHWM)
swaps=$(curl -s "http://$ADDR/metrics" | awk '$1 == "millrace_serving_swaps_total" { print $2 }')
served=$(curl -s "http://$ADDR/v1/models/ctr" | python3 -c "import json,sys; print(json.load(sys.stdin)['millrace']['version'])")

python3 - "$predict" "$ping" "$steady" "$swapping" "$steady_rss" "$peak_rss" "$swaps" \
  "$served" "$conns" "${#versions[@]}" "$swap_seconds" "$uncached" "$uncached64" "$batched64" \
  "$at_half" "$at_half_connections" "$infer" "$WORK/before.prom" "$WORK/after.prom" \
  "$WORK/swap_times" "$((read_after - read_before))" <<'PY'
import json, sys
predict, ping, steady, swapping = (json.loads(a) for a in sys.argv[1:5])
steady_rss, peak_rss, swaps, served, conns, versions, swap_seconds = (int(a) for a in sys.argv[5:12])
uncached, uncached64, batched64, at_half = (json.loads(a) for a in sys.argv[12:16])
at_half_connections = int(sys.argv[16])
infer = json.loads(sys.argv[17])


def buckets(path):
    """The request-duration histogram of ctr v1 in a scrape: upper bound (s) -> count."""
    found = {}
    for line in open(path):
        if line.startswith("millrace_serving_request_duration_seconds_bucket{") and 'model="ctr",version="1"' in line:
            le = line.split('le="')[1].split('"')[0]
            found[float("inf") if le == "+Inf" else float(le)] = float(line.rsplit(" ", 1)[1])
    return found


# The predict run's own histogram (after minus before) and the bucket its p99 falls in.
before, after = buckets(sys.argv[18]), buckets(sys.argv[19])
counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
total = counts[-1][1]
upper = next(le for le, n in counts if n >= 0.99 * total)
lower = max([le for le, _ in counts if le < upper], default=0.0)
wrk_p99 = predict["p99_us"] / 1e6
bounds = [le for le, _ in counts]
distance = abs(bounds.index(upper) - next((i for i, le in enumerate(bounds) if wrk_p99 <= le), len(bounds) - 1))
swap_times = sorted(int(line) / 1e9 for line in open(sys.argv[20]) if line.strip())
read_bytes = int(sys.argv[21])


def share(a, b):
    """a's QPS over b's, or None when either phase did not run."""
    return round(a["qps"] / b["qps"], 3) if a and b else None


print(json.dumps({
    "weights": 1 << 24,
    "predict": predict,
    "ping": ping,
    "predict_share_of_ping_qps": round(predict["qps"] / ping["qps"], 3),
    "infer_v2": infer,
    "infer_v2_share_of_predict_qps": share(infer, predict),
    "predict_histogram_p99_bucket_us": [round(lower * 1e6), round(upper * 1e6)],
    "predict_histogram_requests": total,
    "wrk_p99_buckets_from_histogram_p99": distance,
    "predict_uncached": uncached,
    "predict_uncached_share_of_ping_qps": share(uncached, ping),
    "predict_uncached_64_connections": uncached64,
    "predict_uncached_batched_64_connections": batched64,
    "batched_over_unbatched_qps": share(batched64, uncached64),
    "closed_loop_at_half_saturation": at_half and dict(at_half, connections=at_half_connections,
        share_of_predict_qps=share(at_half, predict)),
    "paced_connections": conns,
    "paced_share_of_predict_qps": round(steady["qps"] / predict["qps"], 3),
    "paced": steady,
    "paced_during_swaps": swapping,
    "p99_swaps_over_steady": round(swapping["p99_us"] / max(steady["p99_us"], 1), 2),
    "failed_requests_during_swaps": sum(swapping["errors"].values()),
    "versions_published": versions,
    "swaps": swaps,
    "swap_phase_seconds": swap_seconds,
    "seconds_from_move_to_served": {"median": round(swap_times[len(swap_times) // 2], 3),
        "max": round(swap_times[-1], 3)},
    "read_bytes_per_swap_with_requests": read_bytes // max(len(swap_times), 1),
    "served_version": served,
    "steady_rss_bytes": steady_rss,
    "peak_rss_bytes": peak_rss,
    "peak_over_steady_rss": round(peak_rss / steady_rss, 3),
}))
PY
