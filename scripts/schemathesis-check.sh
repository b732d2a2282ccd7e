#!/usr/bin/env bash
# Runs schemathesis (from PyPI, in a venv under the cache) against `millrace serve`'s
# /openapi.json: every operation, positive and negative cases, every check, with the admin token;
# then checks that the admin endpoints answer 401 without it. Fails on any 5xx, crash, or answer
# that breaks the document.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/torch-env.sh
. scripts/served-sample.sh
CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
BIN="${CARGO_TARGET_DIR:-target}/debug/millrace"
ADDR=127.0.0.1:18090
venv="$CACHE/venv-schemathesis"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -c "import schemathesis" 2>/dev/null || "$venv/bin/pip" install -q "schemathesis==4.32.5"

work="$(mktemp -d)"
pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
(umask 077 && head -c 24 /dev/urandom | base64 >"$work/token")
serve_sample "$ADDR" --admin-token-file "$work/token"

"$venv/bin/schemathesis" --config-file scripts/schemathesis.toml run "http://$ADDR/openapi.json" \
  --checks all --max-examples 40 \
  --generation-deterministic -H "Authorization: Bearer $(cat "$work/token")" --no-color

for action in pin unpin promote rollback; do
  status=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{"version":1}' \
    "http://$ADDR/v1/admin/models/ctr/$action")
  [ "$status" = 401 ] || { echo "POST $action without the token answered $status, not 401"; exit 1; }
done
status=$(curl -s -o /dev/null -w '%{http_code}' -X PUT -d '{}' "http://$ADDR/v1/admin/models/ctr/traffic")
[ "$status" = 401 ] || { echo "PUT traffic without the token answered $status, not 401"; exit 1; }
kill -0 "$pid" || { echo "the server died"; cat "$work/log"; exit 1; }
echo "schemathesis-check: no 5xx, no crash, admin answers 401 without the token"
