# syntax=docker/dockerfile:1
# The millrace job: `millrace run` with the deep stage, and the libtorch it loads at run time
# (PyTorch's CPU wheels by default; `--build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu130`
# for the CUDA ones the `gpu` overlay's retrainer needs). Built by `make image`.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake libcurl4-openssl-dev libssl-dev pkg-config g++ librocksdb-dev libclang-dev python3-venv \
 && rm -rf /var/lib/apt/lists/*
ARG TORCH_VERSION=2.11.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
# What the runtime stage takes: torch/lib, and beside it the nvidia/ libraries of the CUDA wheels
# (found through torch's RUNPATH, `$ORIGIN/../../nvidia/…`), with NCCL also as libnccl.so, the
# name the NCCL all-reduce loads.
RUN python3 -m venv /opt/torch \
 && /opt/torch/bin/pip install --no-cache-dir --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}" \
 && site=/opt/torch/lib/python3.11/site-packages \
 && ln -s "$site/torch" /opt/libtorch \
 && mkdir -p /opt/runtime/python/torch \
 && cp -a "$site/torch/lib" /opt/runtime/python/torch/ \
 && if [ -d "$site/nvidia" ]; then cp -a "$site/nvidia" /opt/runtime/python/ \
      && ln -s libnccl.so.2 /opt/runtime/python/nvidia/nccl/lib/libnccl.so; fi
ENV LIBTORCH=/opt/libtorch LD_LIBRARY_PATH=/opt/libtorch/lib
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p millrace-engine --bin millrace \
 && strip target/release/millrace

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends librocksdb7.8 libssl3 libcurl4 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/millrace --create-home millrace
COPY --from=build /opt/runtime/python /opt/python
COPY --from=build /src/target/release/millrace /usr/local/bin/millrace
ENV LD_LIBRARY_PATH=/opt/python/torch/lib:/opt/python/nvidia/nccl/lib \
    MILLRACE_METRICS_BIND=0.0.0.0:9090 MILLRACE_LOG_FORMAT=json
USER 10001
WORKDIR /var/lib/millrace
EXPOSE 8080 9090
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["/bin/sh", "-c", "curl -fsS http://127.0.0.1:9090/healthz || exit 1"]
ENTRYPOINT ["millrace"]
CMD ["run", "/etc/millrace/job.toml"]
