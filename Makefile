# The two commands of the README: `make run` and `make test`. Both install what they need first.
SHELL := /bin/bash
export MILLRACE_CACHE ?= $(HOME)/.cache/millrace
export CARGO_TARGET_DIR ?= $(MILLRACE_CACHE)/target
export MILLRACE_TEST_BROKER ?= 127.0.0.1:19092
export MILLRACE_TEST_S3 ?= http://127.0.0.1:19500
export MILLRACE_TANSU ?= $(MILLRACE_CACHE)/tansu/bin/tansu
# The test venv of the ecosystem's clients (tritonclient, …) that scripts/setup.sh installs.
export MILLRACE_INTEROP_PYTHON ?= $(MILLRACE_CACHE)/venv-interop/bin/python
# libtorch from the venv scripts/setup.sh installs: tch builds against it, the binaries load it.
export LIBTORCH ?= $(MILLRACE_CACHE)/libtorch
export LD_LIBRARY_PATH := $(LIBTORCH)/lib$(if $(LD_LIBRARY_PATH),:$(LD_LIBRARY_PATH))
CARGO_BUILD_JOBS ?= 2
export CARGO_BUILD_JOBS
# Tests and lints also cover the optional Arrow conversion of sparse rows; the release binary
# does not build Arrow.
CHECK_FEATURES := --features millrace-models/arrow

.PHONY: run test setup lint bench-online fuzz image

setup:
	@scripts/setup.sh

## Run the demo job on its embedded broker: generator → Kafka → dataflow → registry → HTTP.
run: setup
	cargo build --release -p millrace-engine
	$(CARGO_TARGET_DIR)/release/millrace run examples/ctr.toml

## Run every test against a real tansu broker started (and stopped) here; the broker restart test
## starts its own tansu on the S3 store (moto) started here.
test:
	@scripts/setup.sh --with-broker
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets $(CHECK_FEATURES) -- -D warnings
	cargo clippy -p millrace-engine --no-default-features -- -D warnings
	scripts/module-circles.py
	scripts/serving-deps-check.sh
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps $(CHECK_FEATURES)
	cargo build --workspace --all-targets $(CHECK_FEATURES)
	trap 'scripts/test-broker.sh stop; scripts/test-s3.sh stop' EXIT; scripts/test-broker.sh start && scripts/test-s3.sh start && cargo test --workspace --all-targets $(CHECK_FEATURES) && cargo test --workspace --doc $(CHECK_FEATURES)
	scripts/embedded-broker-check.sh
	scripts/samples-pyarrow-check.sh
	scripts/schemathesis-check.sh
	scripts/python-examples-check.sh
	scripts/deploy-check.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets $(CHECK_FEATURES) -- -D warnings
	cargo clippy -p millrace-engine --no-default-features -- -D warnings
	scripts/module-circles.py
	scripts/serving-deps-check.sh
	RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps $(CHECK_FEATURES)

## `millrace bench online` on the Criteo sample and on 1M generated rows (perf/online.sh).
bench-online: setup
	perf/online.sh

## Every fuzz target for FUZZ_SECONDS (default 30) each.
fuzz:
	scripts/fuzz.sh

## The container images, where a Docker engine runs: millrace-job (with libtorch; TORCH_INDEX picks
## PyTorch's CPU or CUDA wheels) and millrace-serve (without).
## `make image TORCH_INDEX=https://download.pytorch.org/whl/cu130 IMAGE_TAG=cuda` builds the job image
## the gpu overlay runs.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
IMAGE_TAG ?= latest
image:
	docker build -f docker/job.Dockerfile --build-arg TORCH_INDEX=$(TORCH_INDEX) -t millrace-job:$(IMAGE_TAG) .
	docker build -f docker/serve.Dockerfile -t millrace-serve:$(IMAGE_TAG) .
