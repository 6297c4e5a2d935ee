# aiq: one image with every binary (aiq-worker, aiq-submit, aiq-admin, bedrock-sim).
# The entrypoint is the worker; run another binary with --entrypoint.
#   docker build -t aiq .
#   docker run --rm -e AIQ_KAFKA_BROKERS=kafka:9092 aiq
# tests/integration/test_compose.py checks this file against the libraries the built
# binaries really load, so a runtime package missing here fails the test suite.

# ---- build stage: compilers and -dev packages stay here ----
FROM debian:bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config python3 zlib1g-dev debian-archive-keyring \
      libuv1-dev libcurl4-openssl-dev libjansson-dev liblmdb-dev \
      libmicrohttpd-dev libssl-dev libzstd-dev liblz4-dev libsasl2-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# librdkafka first, in a layer of its own: built the way tools/bootstrap.sh builds it for the
# tests (Debian's source package, pinned and checksummed), rebuilt only when the pin moves.
# RDKAFKA_PREFIX must be $AIQ_CACHE_DIR/librdkafka-<the version tools/librdkafka.sh pins>.
ARG RDKAFKA_PREFIX=/opt/aiq/librdkafka-2.14.2
COPY tools/librdkafka.sh tools/lib.sh tools/
RUN AIQ_CACHE_DIR=/opt/aiq tools/librdkafka.sh build \
 && test "$(AIQ_CACHE_DIR=/opt/aiq tools/librdkafka.sh prefix)" = "$RDKAFKA_PREFIX"
COPY . .
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DAIQ_BUILD_TESTS=OFF -DAIQ_WERROR=ON \
      -DCMAKE_INSTALL_PREFIX=/usr/local -DAIQ_RDKAFKA_PREFIX="$RDKAFKA_PREFIX" \
 && cmake --build /build -j"$(nproc)" \
 && DESTDIR=/stage cmake --install /build --strip \
 && install -d "/stage$RDKAFKA_PREFIX/lib" \
 && cp -a "$RDKAFKA_PREFIX"/lib/librdkafka.so* "/stage$RDKAFKA_PREFIX/lib/"

# ---- runtime stage: only the shared libraries the binaries load ----
# librdkafka comes from the build stage (at the prefix the binaries' rpath names); the
# Debian packages below are what it and the binaries load.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libuv1 libcurl4 libjansson4 liblmdb0 libmicrohttpd12 libssl3 libzstd1 \
      libsasl2-2 liblz4-1 \
      ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 aiq \
 && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/aiq --create-home aiq \
 && install -d -o 10001 -g 10001 -m 0700 /var/lib/aiq/cache
COPY --from=build /stage/usr/local/ /usr/local/
COPY --from=build /stage/opt/ /opt/
RUN ldconfig
USER 10001:10001
WORKDIR /var/lib/aiq
# A named volume mounted on /var/lib/aiq/cache starts with this directory's owner and mode.
# The ops endpoints are off by default (several workers may share a host); in a container
# there is one worker, so turn them on for the health check and Prometheus.
ENV AIQ_ADMIN_LISTEN=0.0.0.0:9464 \
    AIQ_CACHE_PATH=/var/lib/aiq/cache
EXPOSE 9464
VOLUME ["/var/lib/aiq/cache"]
# /healthz fails when the loop stops turning; /readyz (not used here) waits for partitions.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:9464/healthz"]
# SIGTERM drains (worker.drain_timeout_ms, default 30 s): give the stop at least that long.
STOPSIGNAL SIGTERM
ENTRYPOINT ["aiq-worker"]
