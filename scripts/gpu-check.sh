#!/usr/bin/env bash
# Builds models/ alone against the CUDA libtorch of the machine's PyTorch and
# runs the models tests and the LSTM benchmark on the GPU.
#
#   scripts/gpu-check.sh [build-dir]       (default: build-gpu)
#
# Needs: python3 with torch (CUDA build), cmake >= 3.25, a C++20 compiler,
# GoogleTest (and Google Benchmark for the bench; skipped when missing),
# nlohmann-json. Kafka/RocksDB are not needed (-DCLV_MODELS_ONLY=ON).
# Environment: CLV_BENCH_DEVICE (default cuda), CLV_BENCH_FILTER (a
# --benchmark_filter regex, default all), CMAKE_CUDA_ARCHITECTURES (passed on
# to torch's CMake config when set, e.g. 90 for H100).
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$repo/build-gpu}"

torch_prefix="$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
python3 - <<'PY'
import torch
print(f"torch {torch.__version__}, cuda {torch.version.cuda}, "
      f"available: {torch.cuda.is_available()}, "
      f"device: {torch.cuda.get_device_name(0) if torch.cuda.is_available() else '-'}")
PY

# PyTorch wheels are built with the pre-C++11 or the C++11 string ABI; our
# code (and gtest) must match it or linking fails.
abi="$(python3 -c 'import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))')"

cmake_args=(-S "$repo" -B "$build" -DCLV_MODELS_ONLY=ON -DCLV_BUILD_TESTS=ON -DCLV_BUILD_BENCH=ON
            -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_PREFIX_PATH="$torch_prefix"
            -DTorch_DIR="$torch_prefix/Torch"
            -DCMAKE_CXX_FLAGS="-D_GLIBCXX_USE_CXX11_ABI=$abi")
if command -v ninja >/dev/null; then cmake_args+=(-G Ninja); fi
if [[ -n "${CMAKE_CUDA_ARCHITECTURES:-}" ]]; then
  cmake_args+=(-DCMAKE_CUDA_ARCHITECTURES="$CMAKE_CUDA_ARCHITECTURES" -DTORCH_CUDA_ARCH_LIST="")
fi
cmake "${cmake_args[@]}"
cmake --build "$build" -j"$(nproc)"

# Make the wheel's shared libraries findable at run time.
export LD_LIBRARY_PATH="$torch_prefix/../../lib:${LD_LIBRARY_PATH:-}"

echo "== models tests =="
(cd "$build" && ctest --output-on-failure -R 'models_' -j2)

if [[ -x "$build/models/lstm_bench" ]]; then
  echo "== LSTM bench on ${CLV_BENCH_DEVICE:-cuda} =="
  CLV_BENCH_DEVICE="${CLV_BENCH_DEVICE:-cuda}" "$build/models/lstm_bench" \
    --benchmark_filter="${CLV_BENCH_FILTER:-.}" --benchmark_min_time=0.2
  echo "== same on cpu, for comparison =="
  CLV_BENCH_DEVICE=cpu "$build/models/lstm_bench" --benchmark_filter='BM_LstmStep/batch:(1024|65536)/top_factors:0' \
    --benchmark_min_time=0.2
else
  echo "lstm_bench not built (Google Benchmark not found); skipped" >&2
fi
