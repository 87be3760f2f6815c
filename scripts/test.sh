#!/usr/bin/env bash
# Runs every test: installs what is missing, fetches and starts a real Apache
# Kafka broker on 127.0.0.1 (for the real-broker integration tests), builds,
# runs ctest, and stops the broker.
# Set CLV_SANITIZE=1 to build and test under AddressSanitizer + UBSan instead.
# Set CLV_BUILD_ONLY=1 to build what the tests need and stop (no broker, no
# ctest): .ci/run builds the sanitizer tree that way while the plain tests run.
set -euo pipefail
cd "$(dirname "$0")/.."
repo_root=$(pwd)
scripts/install-deps.sh
build_dir=build
extra=()
ctest_args=()
if [[ ${CLV_SANITIZE:-0} == 1 ]]; then
  # Same suites under ASan + UBSan. The real-broker variants exercise the same
  # code as the embedded ones and already ran in the plain pass.
  build_dir=build-asan
  extra=(-DCLV_SANITIZE=ON -DCLV_BUILD_BENCH=OFF)
  # Left to the plain pass, to keep CI under 40 minutes on 2 cores:
  # - training under ASan is ~10x slower: the robustness matrix (clv train per
  #   shop profile, e2e_robustness_test);
  # - the long multi-process runs, whose code the in-process suites cover under
  #   ASan (ProcessorOnFakes, Changelog, ServiceOutage, Lifecycle, CommitPipeline)
  #   and whose subject is process behaviour (SIGKILL at random moments, signals,
  #   restarts, replays, offsets of a recreated topic) or timing
  #   (e2e_bench_latency_test).
  # Test files with nothing else in them are not even built here
  # (NOT_UNDER_SANITIZER in tests/CMakeLists.txt); the rest are left out below.
  ctest_args=(-E "/real|RealKafka|OpsEndToEnd|EndToEnd\.(Crash|Duplicates)|OffsetsRecreatedEndToEnd")
  export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:abort_on_error=1}
  export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
elif [[ ${CLV_BUILD_ONLY:-0} != 1 ]]; then
  scripts/kafka-fetch.sh
  port=${CLV_REAL_KAFKA_PORT:-19092}
  scripts/kafka-start.sh "$port"
  trap '"$repo_root"/scripts/kafka-stop.sh "'"$port"'" || true' EXIT
  export CLV_REAL_KAFKA=127.0.0.1:$port
fi
scripts/build.sh "$build_dir" "${extra[@]}"
if [[ ${CLV_BUILD_ONLY:-0} == 1 ]]; then
  exit 0
fi
cd "$build_dir"
ctest --output-on-failure -j"${CLV_TEST_JOBS:-2}" --timeout 900 "${ctest_args[@]}"
