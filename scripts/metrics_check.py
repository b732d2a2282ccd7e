"""Checks a millrace /metrics endpoint with the Prometheus project's own Python parsers.

Usage: metrics_check.py URL [--dashboard GRAFANA.json] [--documented GUIDE.md] [REQUIRED_FAMILY ...]

Scrapes URL twice: asking for OpenMetrics (parsed by prometheus_client's strict OpenMetrics
parser, which refuses any line out of the format) and for the classic text format (parsed by
its text parser). Both must hold the same families; every family needs its HELP, and no name
may carry a unit that is not a base unit (milliseconds, microseconds, percent). Prints the
number of families and samples. With --dashboard, every millrace metric the dashboard's
queries name must be a sample name of the exposition. With --documented, every family of the
exposition must be named (in backticks) in the guide.
"""
import json
import re
import sys
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families as openmetrics
from prometheus_client.parser import text_string_to_metric_families as classic

url, rest = sys.argv[1], sys.argv[2:]
options = {"--dashboard": None, "--documented": None}
while rest[:1] and rest[0] in options:
    options[rest[0]], rest = rest[1], rest[2:]
dashboard, documented = options["--dashboard"], options["--documented"]
required = set(rest)


def scrape(accept):
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    with urllib.request.urlopen(request, timeout=30) as response:
        return response.headers.get("Content-Type", ""), response.read().decode()


kind, text = scrape("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5")
assert kind.startswith("application/openmetrics-text"), kind
open_families = {f.name: f for f in openmetrics(text)}
kind, text = scrape(None)
assert kind.startswith("text/plain"), kind
classic_families = {f.name: f for f in classic(text)}
# The classic format has no info type: an info family is the gauge of its `_info` samples.
expected = {name + "_info" if f.type == "info" else name for name, f in open_families.items()}
assert expected == set(classic_families), expected ^ set(classic_families)
problems = []
for name, family in open_families.items():
    if not family.documentation:
        problems.append(f"{name}: no HELP")
    if family.type not in ("counter", "gauge", "histogram", "info"):
        problems.append(f"{name}: type {family.type}")
    for unit in ("_ms", "_millis", "_micros", "_percent"):
        if unit in name:
            problems.append(f"{name}: not a base unit ({unit})")
missing = required - set(open_families)
if missing:
    problems.append(f"missing families: {sorted(missing)}")
if documented:
    with open(documented) as f:
        guide = f.read()
    # The guide names a metric as queries do: a counter with `_total`, an info with `_info`.
    suffix = {"counter": "_total", "info": "_info"}
    for name in sorted(open_families):
        shown = name + suffix.get(open_families[name].type, "")
        if f"`{shown}`" not in guide:
            problems.append(f"{documented} does not list {shown}")
if dashboard:
    sample_names = {s.name for f in open_families.values() for s in f.samples}
    with open(dashboard) as f:
        queries = [t["expr"] for p in json.load(f)["panels"] for t in p["targets"]]
    for name in sorted({n for q in queries for n in re.findall(r"millrace_[a-z_]+", q)}):
        if name not in sample_names:
            problems.append(f"the dashboard names {name}, which the exposition does not hold")
if problems:
    sys.exit("metrics check failed:\n" + "\n".join(problems))
samples = sum(len(f.samples) for f in open_families.values())
print(f"metrics check: {len(open_families)} families, {samples} samples, both formats parse")
