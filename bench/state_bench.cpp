// State I/O kernels (Google Benchmark), the bottleneck named in DESIGN.md
// "Performance":
//
//   BM_MultiGetAndCommit  one micro-batch of the processor: MultiGet of the
//                         batch's users, decode, update, encode, and one
//                         WriteBatch (states + input offset). items/s is
//                         user-updates/s.
//   BM_Encode / BM_Decode the UserState codec alone (the ceiling of the above
//                         without RocksDB).
//   BM_EncodedBytes       bytes per user: baseline (no model state) and LSTM
//                         hidden 64 ((h, c) = 128 floats, fp16 and float32).
//
// Like db_bench, the parameters and the build are printed before any number
// (Google Benchmark's context block: host, CPUs, caches, load). The store is a
// real RocksDB in a fresh temporary directory (removed at exit) with the
// production tuning of state/rocksdb_store.cpp.
//
// Run: build/bench/state_bench [--benchmark_filter=MultiGet]
//      CLV_BENCH_STATE_DIR=/fast/disk to place the store elsewhere.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <rocksdb/version.h>

#include "config/config.h"
#include "state/half.h"
#include "state/state_store.h"
#include "state/user_state.h"

namespace {

using clv::state::CommitBatch;
using clv::state::StateStore;
using clv::state::UserState;

// ---- Parameters (printed in the context block) ----
constexpr int kBatchUsers = 2000;          // users per micro-batch
constexpr int kPopulationUsers = 200'000;  // users in the store before timing
constexpr int kDedupWindow = 64;           // event-id hashes kept per user
constexpr int kLstmHidden = 64;            // (h, c) = 2 x hidden floats
constexpr int64_t kBlockCacheBytes = 256LL << 20;

std::string UserId(int index) { return "user-" + std::to_string(index); }

// A user as the processor keeps it after a few dozen events.
UserState TypicalState(int index, int model_floats, bool fp16) {
  std::mt19937_64 random(static_cast<uint64_t>(index) * 7919 + 1);
  UserState s;
  s.seq = 20 + random() % 200;
  auto& a = s.aggregates;
  a.first_event_ms = 1'690'000'000'000 + static_cast<int64_t>(random() % 10'000'000'000ull);
  a.last_event_ms = a.first_event_ms + static_cast<int64_t>(random() % 5'000'000'000ull);
  a.first_purchase_ms = a.first_event_ms + 3'600'000;
  a.last_purchase_ms = a.last_event_ms - 60'000;
  a.events = 20 + random() % 200;
  a.purchases = 1 + random() % 12;
  a.purchase_days = a.purchases;
  a.refunds = random() % 2;
  a.sessions = 5 + random() % 40;
  a.cart_adds = random() % 30;
  a.views = a.events / 2;
  a.recent_activity = random() % 10;
  a.monetary_total = static_cast<double>(random() % 100'000) / 100;
  a.purchase_value_sum = a.monetary_total;
  a.log_value_sum = std::log1p(a.monetary_total);
  a.log_value_sq_sum = a.log_value_sum * a.log_value_sum;
  a.ewma_gap_days = static_cast<double>(random() % 9000) / 100;
  a.sessions_since_purchase = static_cast<uint32_t>(random() % 20);
  a.session_days_after_purchase = static_cast<double>(random() % 90000) / 100;
  a.recent_sessions = static_cast<double>(random() % 500) / 100;
  s.stage = clv::state::Stage::kActive;
  s.clv = static_cast<double>(random() % 100'000) / 10;
  s.p_purchase = 0.42;
  s.churn_risk = 0.13;
  s.score_ts_ms = a.last_event_ms;
  s.next_timer_ms = a.last_event_ms + 30LL * 86'400'000;
  s.partition = index % 8;
  for (int i = 0; i < kDedupWindow; ++i) s.recent_event_ids.push_back(random());
  s.fp16 = fp16;
  std::normal_distribution<float> normal(0.0f, 0.5f);
  for (int i = 0; i < model_floats; ++i) {
    const float value = normal(random);
    s.model_state.push_back(fp16 ? clv::state::RoundToFp16(value) : value);
  }
  s.attrs = {{"channel", "organic"},
             {"country", "DE"},
             {"device", "mobile"},
             {"signup", "2023-07-14"},
             {"tier", "gold"}};
  return s;
}

size_t EncodedSize(const UserState& state) {
  std::string bytes;
  clv::state::Encode(state, &bytes);
  return bytes.size();
}

// One preloaded store per model size, shared by all runs of a benchmark.
struct Fixture {
  std::filesystem::path dir;
  std::unique_ptr<StateStore> store;
  ~Fixture() {
    store.reset();
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
  }
};

Fixture* GetFixture(int model_floats, benchmark::State& state) {
  static std::map<int, std::unique_ptr<Fixture>> fixtures;
  auto& fixture = fixtures[model_floats];
  if (fixture) return fixture.get();
  fixture = std::make_unique<Fixture>();
  const char* base = std::getenv("CLV_BENCH_STATE_DIR");
  std::filesystem::path root = base != nullptr ? base : std::filesystem::temp_directory_path();
  std::random_device device;
  fixture->dir =
      root / ("clv-state-bench-" + std::to_string(model_floats) + "-" + std::to_string(device()));
  clv::config::StateOptions options;
  options.dir = fixture->dir.string();
  options.block_cache_bytes = kBlockCacheBytes;
  const auto status = clv::state::OpenRocksDbStore(options, &fixture->store);
  if (!status.ok()) {
    state.SkipWithError(status.message.c_str());
    fixtures.erase(model_floats);
    return nullptr;
  }
  for (int first = 0; first < kPopulationUsers; first += kBatchUsers) {
    CommitBatch batch;
    for (int i = first; i < first + kBatchUsers && i < kPopulationUsers; ++i) {
      batch.users.push_back({UserId(i), TypicalState(i, model_floats, /*fp16=*/true)});
    }
    const auto commit = fixture->store->Commit(batch);
    if (!commit.ok()) {
      state.SkipWithError(commit.message.c_str());
      fixtures.erase(model_floats);
      return nullptr;
    }
  }
  return fixture.get();
}

// Arg 0: model floats per user (0 = baseline scorer, 128 = LSTM hidden 64).
// Arg 1: percent of the batch's users that are new (not in the store).
void BM_MultiGetAndCommit(benchmark::State& state) {
  const int model_floats = static_cast<int>(state.range(0));
  const int new_percent = static_cast<int>(state.range(1));
  Fixture* fixture = GetFixture(model_floats, state);
  if (fixture == nullptr) return;
  StateStore& store = *fixture->store;
  std::mt19937 random(12345);
  std::uniform_int_distribution<int> known(0, kPopulationUsers - 1);
  std::uniform_int_distribution<int> percent(0, 99);
  int next_new_user = kPopulationUsers + 1'000'000 * static_cast<int>(state.range(1) + 1);
  int64_t offset = 0;
  std::vector<std::string> ids(kBatchUsers);
  std::vector<std::optional<UserState>> states;
  CommitBatch batch;
  for (auto _ : state) {
    for (std::string& id : ids) {
      id = percent(random) < new_percent ? UserId(next_new_user++) : UserId(known(random));
    }
    auto status = store.MultiGetUsers(ids, &states);
    if (!status.ok()) {
      state.SkipWithError(status.message.c_str());
      break;
    }
    batch.users.clear();
    batch.offsets.clear();
    for (size_t i = 0; i < ids.size(); ++i) {
      UserState updated = states[i] ? std::move(*states[i]) : TypicalState(0, model_floats, true);
      ++updated.seq;
      ++updated.aggregates.events;
      updated.recent_event_ids.erase(updated.recent_event_ids.begin());
      updated.recent_event_ids.push_back(random());
      batch.users.push_back({ids[i], std::move(updated)});
    }
    offset += kBatchUsers;
    batch.offsets.push_back({"clickstream", 0, offset});
    status = store.Commit(batch);
    if (!status.ok()) {
      state.SkipWithError(status.message.c_str());
      break;
    }
  }
  state.SetItemsProcessed(state.iterations() * kBatchUsers);
  state.counters["state_bytes"] =
      static_cast<double>(EncodedSize(TypicalState(1, model_floats, true)));
  state.counters["db_bytes"] = static_cast<double>(store.ApproximateBytes());
  state.counters["db_users"] = static_cast<double>(store.ApproximateUsers());
}
BENCHMARK(BM_MultiGetAndCommit)
    ->ArgNames({"model_floats", "new_pct"})
    ->Args({0, 0})
    ->Args({2 * kLstmHidden, 0})
    ->Args({2 * kLstmHidden, 20})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void BM_Encode(benchmark::State& state) {
  const UserState user = TypicalState(1, static_cast<int>(state.range(0)), true);
  std::string bytes;
  for (auto _ : state) {
    bytes.clear();
    clv::state::Encode(user, &bytes);
    benchmark::DoNotOptimize(bytes.data());
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes.size()));
}
BENCHMARK(BM_Encode)->ArgName("model_floats")->Arg(0)->Arg(2 * kLstmHidden);

void BM_Decode(benchmark::State& state) {
  std::string bytes;
  clv::state::Encode(TypicalState(1, static_cast<int>(state.range(0)), true), &bytes);
  UserState user;
  std::string error;
  for (auto _ : state) {
    if (!clv::state::Decode(bytes, &user, &error)) {
      state.SkipWithError(error.c_str());
      break;
    }
    benchmark::DoNotOptimize(user.seq);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<int64_t>(bytes.size()));
}
BENCHMARK(BM_Decode)->ArgName("model_floats")->Arg(0)->Arg(2 * kLstmHidden);

// Not a timing: reports encoded bytes per user as counters.
void BM_EncodedBytes(benchmark::State& state) {
  const int model_floats = static_cast<int>(state.range(0));
  const bool fp16 = state.range(1) != 0;
  size_t bytes = 0;
  for (auto _ : state) bytes = EncodedSize(TypicalState(1, model_floats, fp16));
  state.counters["bytes_per_user"] = static_cast<double>(bytes);
  state.counters["model_bytes"] = static_cast<double>(model_floats * (fp16 ? 2 : 4));
}
BENCHMARK(BM_EncodedBytes)
    ->ArgNames({"model_floats", "fp16"})
    ->Args({0, 1})
    ->Args({2 * kLstmHidden, 1})
    ->Args({2 * kLstmHidden, 0})
    ->Iterations(1);

}  // namespace

int main(int argc, char** argv) {
  benchmark::AddCustomContext("rocksdb", std::to_string(ROCKSDB_MAJOR) + "." +
                                             std::to_string(ROCKSDB_MINOR) + "." +
                                             std::to_string(ROCKSDB_PATCH));
#ifdef NDEBUG
  benchmark::AddCustomContext("clv_assertions", "off");
#else
  benchmark::AddCustomContext(
      "clv_assertions", "ON (WARNING: build with -DCMAKE_BUILD_TYPE=Release for real numbers)");
#endif
  benchmark::AddCustomContext("batch_users", std::to_string(kBatchUsers));
  benchmark::AddCustomContext("population_users", std::to_string(kPopulationUsers));
  benchmark::AddCustomContext("dedup_window", std::to_string(kDedupWindow));
  benchmark::AddCustomContext("lstm_hidden", std::to_string(kLstmHidden));
  benchmark::AddCustomContext("block_cache_bytes", std::to_string(kBlockCacheBytes));
  benchmark::AddCustomContext("state_bytes_baseline",
                              std::to_string(EncodedSize(TypicalState(1, 0, true))));
  benchmark::AddCustomContext("state_bytes_lstm_fp16",
                              std::to_string(EncodedSize(TypicalState(1, 2 * kLstmHidden, true))));
  benchmark::AddCustomContext("commit", "one WriteBatch per micro-batch, WAL on, sync=false");
  const char* dir = std::getenv("CLV_BENCH_STATE_DIR");
  benchmark::AddCustomContext(
      "state_dir", dir != nullptr ? dir : std::filesystem::temp_directory_path().string());
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
