#!/usr/bin/env bash
# Installs what clvstream needs from Debian 12 packages (skips when present).
set -euo pipefail
packages=(
  build-essential cmake ninja-build ccache pkg-config git clang-format clang-tidy
  librdkafka-dev librocksdb-dev libtorch-dev libopenblas0-pthread
  nlohmann-json3-dev libsimdjson-dev libcpp-httplib-dev libcli11-dev libspdlog-dev libfmt-dev
  libgtest-dev libgmock-dev librapidcheck-dev libbenchmark-dev libboost-dev
  kcat maven openjdk-17-jre-headless
  chromium
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  exit 0
fi
echo "install-deps: installing ${missing[*]}" >&2
sudo=""
if [[ $(id -u) != 0 ]]; then sudo="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
