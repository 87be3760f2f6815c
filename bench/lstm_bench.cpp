// LSTM step throughput: user-steps/s at batch sizes 1 .. 65,536, hidden 64,
// one CPU thread by default (CLV_BENCH_DEVICE=cuda for the GPU, including the
// host<->device copies of x and (h, c) through pinned memory).
//
// Printed before any number (like db_bench): machine, torch build, device,
// threads, sizes, and the arithmetic ceiling of one core:
//   FLOPs per user-step = 2 * 4H * (F + H)      LSTM gate matmuls
//                       + ~10 * 4H ... (elementwise, counted as 12H)
//                       + 2 * K * (H + A + P) + 2 * 4 * K   heads
// (not counted: the BG/NBD + Gamma-Gamma prior of the heads, per row in double,
// a hypergeometric series; it is part of every measured Step and Rescore)
//   core peak (fp32)    = clock * FMA units * SIMD lanes * 2
// with clock from /proc/cpuinfo ("cpu MHz", the current clock; turbo may be
// higher), 2 FMA units, and 16 lanes (AVX-512) or 8 (AVX2) from the flags. The
// ceiling = peak / FLOPs per step; real kernels reach a fraction of it at
// large batches (memory traffic of x, h, c and the feature vectorizer are not
// counted). Step() includes feature vectorization from History; variants
// with and without top_factors (hand-written backward on CPU, autograd on CUDA).
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <benchmark/benchmark.h>

#include "models/features.h"
#include "models/lstm.h"
#include "models/lstm_kernel.h"

namespace {

using namespace clv::models;

constexpr int kHidden = 64;
constexpr int kHeadHidden = 32;

std::string Device() {
  const char* d = std::getenv("CLV_BENCH_DEVICE");
  return d != nullptr ? d : "cpu";
}

struct CpuInfo {
  std::string model = "unknown";
  double mhz = 0;
  int lanes = 8;
  std::string simd = "AVX2 (assumed)";
};

CpuInfo ReadCpuInfo() {
  CpuInfo info;
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  bool avx512 = false, avx2 = false;
  while (std::getline(in, line)) {
    auto value = [&]() { return line.substr(line.find(':') + 2); };
    if (line.rfind("model name", 0) == 0 && info.model == "unknown") info.model = value();
    if (line.rfind("cpu MHz", 0) == 0 && info.mhz == 0) info.mhz = std::atof(value().c_str());
    if (line.rfind("flags", 0) == 0) {
      avx512 = line.find(" avx512f") != std::string::npos;
      avx2 = line.find(" avx2") != std::string::npos;
    }
  }
  if (avx512) {
    info.lanes = 16;
    info.simd = "AVX-512";
  } else if (avx2) {
    info.simd = "AVX2";
  }
  return info;
}

double FlopsPerStep() {
  const double h = kHidden, f = kFeatureCount, a = kAggregateCount, k = kHeadHidden;
  return 2 * 4 * h * (f + h) + 12 * h + 2 * k * (h + a + kPriorCount) + 2 * 4 * k;
}

struct Users {
  std::vector<History> before, after;
  std::vector<StepEvent> events;
  std::vector<float> states;
};

Users MakeUsers(int n, int state_size) {
  Users u;
  std::mt19937_64 random(42);
  u.before.resize(n);
  u.after.resize(n);
  u.events.resize(n);
  u.states.assign(size_t(n) * state_size, 0.0f);
  const int64_t t0 = 1704240000000LL;
  for (int i = 0; i < n; ++i) {
    int64_t t = t0 + int64_t(random() % 1000000) * 1000;
    for (int k = 0; k < 5; ++k) {
      StepEvent e{static_cast<EventKind>(random() % 7), t, 0};
      if (e.kind == EventKind::kPurchase) e.amount = 10 + double(random() % 90);
      UpdateHistory(u.before[i], e);
      t += int64_t(random() % 100000) * 1000;
    }
    u.events[i] = {EventKind::kPageView, t, 0};
    u.after[i] = u.before[i];
    UpdateHistory(u.after[i], u.events[i]);
  }
  return u;
}

void BM_LstmStep(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  const bool factors = state.range(1) != 0;
  LstmModel model = RandomLstmModel(kHidden, 1, kHeadHidden);
  LstmScorerOptions options;
  options.device = Device();
  options.threads = 1;
  options.top_factors = factors;
  std::string error;
  auto scorer = MakeLstmScorer(model, options, &error);
  if (!scorer) {
    state.SkipWithError(error.c_str());
    return;
  }
  const int s = scorer->state_size();
  Users users = MakeUsers(batch, s);
  std::vector<StepInput> inputs(batch);
  for (int i = 0; i < batch; ++i) {
    inputs[i] = {&users.before[i], &users.after[i], users.events[i], &users.states[size_t(i) * s]};
  }
  std::vector<Score> scores(batch);
  for (auto _ : state) {
    scorer->Step(inputs, scores);
    benchmark::DoNotOptimize(scores.data());
  }
  state.counters["user_steps/s"] =
      benchmark::Counter(double(batch) * state.iterations(), benchmark::Counter::kIsRate);
  state.counters["GFLOP/s"] = benchmark::Counter(FlopsPerStep() * batch * state.iterations() / 1e9,
                                                 benchmark::Counter::kIsRate);
}

void BM_LstmRescore(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  LstmModel model = RandomLstmModel(kHidden, 1, kHeadHidden);
  LstmScorerOptions options;
  options.device = Device();
  std::string error;
  auto scorer = MakeLstmScorer(model, options, &error);
  if (!scorer) {
    state.SkipWithError(error.c_str());
    return;
  }
  Users users = MakeUsers(batch, scorer->state_size());
  std::vector<RescoreInput> inputs(batch);
  for (int i = 0; i < batch; ++i) {
    inputs[i] = {&users.after[i], users.events[i].ts_ms + 86400000LL,
                 &users.states[size_t(i) * scorer->state_size()]};
  }
  std::vector<Score> scores(batch);
  for (auto _ : state) {
    scorer->Rescore(inputs, scores);
    benchmark::DoNotOptimize(scores.data());
  }
  state.counters["users/s"] =
      benchmark::Counter(double(batch) * state.iterations(), benchmark::Counter::kIsRate);
}

// The heads' BG/NBD + Gamma-Gamma prior alone (part of every Step and
// Rescore above): P(alive), conditional expected purchases (hypergeometric
// series), Gamma-Gamma order value, P(any purchase), per user at 365 days.
void BM_LstmPrior(benchmark::State& state) {
  const int batch = static_cast<int>(state.range(0));
  LstmModel model = RandomLstmModel(kHidden, 1, kHeadHidden);
  Users users = MakeUsers(batch, 0);
  std::vector<float> prior(size_t(batch) * kPriorCount), offsets(size_t(batch) * kPriorOffsetCount);
  for (auto _ : state) {
    for (int i = 0; i < batch; ++i) {
      RawPriorInputs(model.prior, users.after[i], users.events[i].ts_ms, 365.0,
                     &prior[size_t(i) * kPriorCount], &offsets[size_t(i) * kPriorOffsetCount]);
    }
    benchmark::DoNotOptimize(prior.data());
  }
  state.counters["users/s"] =
      benchmark::Counter(double(batch) * state.iterations(), benchmark::Counter::kIsRate);
}

void StepArgs(benchmark::internal::Benchmark* b) {
  for (int factors : {0, 1}) {
    for (int batch = 1; batch <= 65536; batch *= 4) b->Args({batch, factors});
    b->Args({65536, factors});
  }
  b->ArgNames({"batch", "top_factors"})->UseRealTime();
}

BENCHMARK(BM_LstmStep)->Apply(StepArgs);
BENCHMARK(BM_LstmRescore)->Arg(1024)->Arg(65536)->UseRealTime();
BENCHMARK(BM_LstmPrior)->Arg(1024)->UseRealTime();

}  // namespace

int main(int argc, char** argv) {
  CpuInfo cpu = ReadCpuInfo();
  const double peak = cpu.mhz * 1e6 * 2 /*FMA units*/ * cpu.lanes * 2 /*flops per FMA*/;
  std::printf("lstm_bench: LSTM step, hidden %d, %d features, head hidden %d\n", kHidden,
              kFeatureCount, kHeadHidden);
  std::printf("device:     %s (cuda available: %s); torch threads: 1 (Step sets it)\n",
              Device().c_str(), CudaAvailable() ? "yes" : "no");
  std::printf("cpu kernel: %s (deterministic per row, tiles of %d rows; lstm_kernel.h)\n",
              LstmCpuKernel(RandomLstmModel(kHidden, 1, kHeadHidden).weights).isa(),
              LstmCpuKernel::kTileRows);
  std::printf("cpu:        %s, %.0f MHz now, %s, %u hardware threads\n", cpu.model.c_str(), cpu.mhz,
              cpu.simd.c_str(), std::thread::hardware_concurrency());
#ifdef NDEBUG
  std::printf("build:      optimized (NDEBUG)\n");
#else
  std::printf("build:      WARNING assertions on (no NDEBUG)\n");
#endif
  std::printf(
      "ceiling:    %.0f FLOPs per user-step; one core peak %.1f GFLOP/s fp32 "
      "(%.0f MHz x 2 FMA x %d lanes x 2) -> %.2fM user-steps/s arithmetic ceiling\n",
      FlopsPerStep(), peak / 1e9, cpu.mhz, cpu.lanes, peak / FlopsPerStep() / 1e6);
  std::printf("target:     >= 500,000 user-steps/s on one core (CPU), >= 20M on one H100\n\n");
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
