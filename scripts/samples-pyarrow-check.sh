#!/usr/bin/env bash
# Checks that PyArrow reads the sample buffer: runs a job over a CSV file with `[samples]`, then
# opens every segment with `pyarrow.ipc.open_file` (in a venv under the cache) and checks the
# rows against the file: one per event, the labels, the event times, the features the schema's
# metadata names and every id inside its feature.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
BIN="${CARGO_TARGET_DIR:-target}/debug/millrace"
ROWS=5000
venv="$CACHE/venv-arrow"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import pyarrow" 2>/dev/null || "$venv/bin/pip" install -q "pyarrow==26.0.1"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" - "$work/events.csv" "$ROWS" <<'PY'
import sys
path, rows = sys.argv[1], int(sys.argv[2])
with open(path, "w") as f:
    for i in range(rows):
        site = i * 7 % 5
        clicked = int(i * 13 % 10 < (7 if site == 1 else 2))
        f.write(f"{clicked},{1_700_000_000 + i},s{site},{i % 90}\n")
PY
cat >"$work/job.toml" <<TOML
name = "arrow"
[source]
type = "file"
path = "events.csv"
[schema]
format = "csv"
event_time_format = "s"
fields = [
  { name = "clicked", type = "label" },
  { name = "at", type = "time" },
  { name = "site", type = "category" },
  { name = "price", type = "number" },
]
[features]
type = "map"
[[features.transform]]
kind = "one_hot"
fields = ["site"]
[[features.transform]]
kind = "bucketize"
fields = ["price"]
buckets = 4
[learner]
type = "ftrl"
alpha = 0.1
beta = 1.0
l1 = 0.1
l2 = 1.0
[publish]
registry = "$work/registry"
[progress]
epoch_ms = 60000
[samples]
dir = "$work/samples"
segment_bytes = 16384
TOML
"$BIN" run "$work/job.toml" --workers 2 >"$work/job.log" 2>&1 || { cat "$work/job.log"; exit 1; }

"$venv/bin/python" - "$work" "$ROWS" <<'PY'
import glob, json, sys
import pyarrow as pa
import pyarrow.ipc as ipc

work, rows = sys.argv[1], int(sys.argv[2])
paths = sorted(glob.glob(f"{work}/samples/worker-*/*.arrow"))
assert paths, "no segments"
tables = [ipc.open_file(p).read_all() for p in paths]
table = pa.concat_tables(tables)
fields = json.loads(table.schema.metadata[b"millrace.fields"])
names = [f["name"] for f in fields]
assert names == ["one_hot:site", "bucketize:price"], names
want_types = {
    "epoch": pa.uint64(),
    "event_time": pa.timestamp("ms", tz="UTC"),
    "featuremap_version": pa.uint64(),
    "label": pa.bool_(),
    "fields": pa.list_(pa.field("item", pa.uint16(), nullable=False)),
    "ids": pa.list_(pa.field("item", pa.uint32(), nullable=False)),
    "values": pa.list_(pa.field("item", pa.float32(), nullable=False)),
}
for name, kind in want_types.items():
    got = table.schema.field(name).type
    assert got == kind, f"{name}: {got} != {kind}"
assert table.num_rows == rows, f"{table.num_rows} rows, want {rows}"
events = [line.split(",") for line in open(f"{work}/events.csv").read().split()]
positives = sum(int(e[0]) for e in events)
assert sum(table.column("label").to_pylist()) == positives
times = sorted(int(t.timestamp() * 1000) for t in table.column("event_time").to_pylist())
assert times == sorted(int(e[1]) * 1000 for e in events), "event times differ"
widths = [f["width"] for f in fields]
for fs, ids in zip(table.column("fields").to_pylist(), table.column("ids").to_pylist()):
    assert len(fs) == len(ids) and all(i < widths[f] for f, i in zip(fs, ids))
print(f"samples pyarrow check: ok, {table.num_rows} rows in {len(paths)} segments")
PY
