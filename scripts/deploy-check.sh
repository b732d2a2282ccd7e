#!/usr/bin/env bash
# Checks what deploys millrace: hadolint on the Dockerfiles (docker/), and every kustomize
# overlay (k8s/overlays/*) rendered with `kubectl kustomize` and validated, resource by resource,
# against the Kubernetes 1.32 schemas with kubernetes-validate (strict: unknown fields refused).
# The custom resources (Strimzi's Kafka, KafkaNodePool and KafkaTopic, the Prometheus Operator's
# ServiceMonitor) have no schema there: each is checked for its apiVersion, kind and name only.
# Every Service, PodDisruptionBudget and ServiceMonitor must select some pods of the overlay.
# Both tools come from PyPI, pinned, in a venv under the cache (scripts/setup.sh --with-broker);
# without kubectl (which carries kustomize) the overlays are skipped with a message.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
VENV="$CACHE/venv-deploy"

"$VENV/bin/hadolint" docker/*.Dockerfile
echo "deploy-check: hadolint passed $(ls docker/*.Dockerfile | wc -l) Dockerfiles"

if ! command -v kubectl >/dev/null; then
  echo "deploy-check: SKIPPED the overlays: no kubectl here (kubectl 1.32 carries kustomize 5.5)" >&2
  exit 0
fi
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
for overlay in k8s/overlays/*/; do
  name="$(basename "$overlay")"
  kubectl kustomize "$overlay" >"$rendered/$name.yaml"
  report="$("$VENV/bin/kubernetes-validate" --strict -k 1.32.0 "$rendered/$name.yaml" 2>&1)" || {
    echo "$report" >&2
    echo "deploy-check: overlay $name does not validate" >&2
    exit 1
  }
  "$VENV/bin/python" - "$rendered/$name.yaml" "$name" "$report" <<'PY'
import sys
import yaml

path, name, report = sys.argv[1:]
core = custom = 0
docs = list(yaml.safe_load_all(open(path)))
# Every selector of a Service, a PodDisruptionBudget or a ServiceMonitor must select some pods
# of the overlay (a PDB without one selects none at all).
pods = [d["spec"]["template"]["metadata"].get("labels", {})
        for d in docs if d.get("kind") in ("Deployment", "StatefulSet")]
def selects(selector):
    return bool(selector) and any(all(p.get(k) == v for k, v in selector.items()) for p in pods)
for doc in docs:
    kind, spec = doc.get("kind"), doc.get("spec", {})
    selector = {
        "Service": spec.get("selector"),
        "PodDisruptionBudget": spec.get("selector", {}).get("matchLabels"),
        "ServiceMonitor": spec.get("selector", {}).get("matchLabels"),
    }.get(kind, "none")
    if selector != "none" and not selects(selector):
        sys.exit(f"deploy-check: {name}: {kind.lower()}/{doc['metadata']['name']} selects no pods: {selector}")
for doc in docs:
    kind, api = doc.get("kind"), doc.get("apiVersion", "")
    if not kind or not api or not doc.get("metadata", {}).get("name"):
        sys.exit(f"deploy-check: {name}: a resource without apiVersion, kind or name: {doc}")
    label = f"{kind.lower()}/{doc['metadata']['name']}"
    if f"passed for resource {label} " in report:
        core += 1
    elif f"Couldn't find schema for kind {kind} " in report and "." in api.split("/")[0]:
        custom += 1
    else:
        sys.exit(f"deploy-check: {name}: {label} was neither validated nor a custom resource")
print(f"deploy-check: overlay {name}: {core} resources valid, {custom} custom resources named")
PY
done
