# syntax=docker/dockerfile:1
# millrace serving: `millrace serve` following a registry directory or the registry topic,
# built without the deep stage, so without libtorch (its Kafka client is the one the registry
# topic needs). Built by `make image`.
ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake libcurl4-openssl-dev libssl-dev pkg-config g++ librocksdb-dev libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p millrace-engine --no-default-features --bin millrace \
 && strip target/release/millrace

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends librocksdb7.8 libssl3 libcurl4 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/millrace --create-home millrace
COPY --from=build /src/target/release/millrace /usr/local/bin/millrace
ENV MILLRACE_BIND=0.0.0.0:8080 MILLRACE_LOG_FORMAT=json
USER 10001
WORKDIR /var/lib/millrace
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s \
  CMD ["/bin/sh", "-c", "curl -fsS http://127.0.0.1:8080/healthz || exit 1"]
ENTRYPOINT ["millrace", "serve"]
