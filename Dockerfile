# clvstream service image: Debian 12 with the project's apt packages.
#   docker build -t clvstream .        (docker-compose.yml does this for you)
#   docker run --rm clvstream --help
#
# Stage 1 builds `clv` from this source tree with the -dev packages; stage 2
# keeps only the runtime libraries. The service runs as an unprivileged user,
# keeps its RocksDB state in /var/lib/clv (a volume) and stops cleanly on
# SIGTERM (finishes and commits the current micro-batch, leaves the group).
FROM debian:12 AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config \
      librdkafka-dev librocksdb-dev libtorch-dev libopenblas0-pthread \
      nlohmann-json3-dev libsimdjson-dev libcpp-httplib-dev libssl-dev zlib1g-dev libbrotli-dev \
      libcli11-dev libspdlog-dev libfmt-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release \
      -DCLV_BUILD_TESTS=OFF -DCLV_BUILD_BENCH=OFF \
 && cmake --build /build --target clv \
 && install -D -m 0755 /build/apps/clv /out/usr/local/bin/clv \
 && install -D -m 0644 models/default/baseline.json /out/usr/local/share/clvstream/baseline.json

FROM debian:12-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      librdkafka1 librocksdb7.8 libtorch1.13 libopenblas0-pthread libsimdjson14 \
      libcpp-httplib0.11 libspdlog1.10 libfmt9 curl ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/clv --shell /usr/sbin/nologin clv \
 && install -d -o clv -g clv /var/lib/clv /etc/clv
COPY --from=build /out/ /
COPY deploy/clv-config.json /etc/clv/config.json
USER clv
WORKDIR /var/lib/clv
VOLUME ["/var/lib/clv"]
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["clv"]
CMD ["run", "--config", "/etc/clv/config.json"]
