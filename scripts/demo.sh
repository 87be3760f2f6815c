#!/usr/bin/env bash
# The zero-setup main job: installs what is missing, builds, and runs
# `clv demo` (embedded Kafka broker + synthetic shop + the service + a live view).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
CMAKE_BUILD_TYPE=RelWithDebInfo scripts/build.sh build-release -DCLV_BUILD_TESTS=OFF -DCLV_BUILD_BENCH=OFF
exec build-release/apps/clv demo "$@"
