#!/usr/bin/env bash
# Runs every test: installs what is missing, fetches and starts a real Apache
# Kafka broker on 127.0.0.1 (for the real-broker integration tests), builds,
# runs ctest, and stops the broker.
# Set CLV_SANITIZE=1 to build and test under AddressSanitizer + UBSan instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
build_dir=build
extra=()
if [[ ${CLV_SANITIZE:-0} == 1 ]]; then
  build_dir=build-asan
  extra=(-DCLV_SANITIZE=ON -DCLV_BUILD_BENCH=OFF)
fi
scripts/kafka-fetch.sh
port=${CLV_REAL_KAFKA_PORT:-19092}
scripts/kafka-start.sh "$port"
trap 'scripts/kafka-stop.sh "'"$port"'" || true' EXIT
export CLV_REAL_KAFKA=127.0.0.1:$port
scripts/build.sh "$build_dir" "${extra[@]}"
cd "$build_dir"
ctest --output-on-failure -j"${CLV_TEST_JOBS:-2}" --timeout 900
