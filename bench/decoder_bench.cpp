// Decoder and synthetic-shop throughput, single thread.
//
//   BM_ShopGenerate/<users>/<days>  events/s of SyntheticShop::Next (JSON text included)
//   BM_Decode                       events/s and bytes/s of Decoder::Decode on shop events
//   BM_SimdjsonParseOnly            ceiling: simdjson DOM parse of the same bytes, no validation
//   BM_Decode{Bad,Purchase}         a rejected message / a full purchase
//
// Run: build-*/bench/decoder_bench --benchmark_counters_tabular=true
// The context block lists machine, build type and every parameter first.
#include <simdjson.h>

#include <string>
#include <vector>

#include <benchmark/benchmark.h>

#include "config/config.h"
#include "sim/synthetic_shop.h"
#include "stream/decoder.h"
#include "stream/event.h"

namespace {

using clv::sim::GeneratedEvent;
using clv::sim::ShopOptions;
using clv::sim::SyntheticShop;
using clv::stream::Decoder;
using clv::stream::Event;

constexpr int64_t kSampleUsers = 20000;
constexpr double kSampleDays = 60;
constexpr uint64_t kSeed = 1;

const std::vector<std::string>& SampleEvents() {
  static const std::vector<std::string> events = [] {
    std::vector<std::string> result;
    SyntheticShop shop({.users = kSampleUsers, .days = kSampleDays, .seed = kSeed});
    GeneratedEvent event;
    while (shop.Next(&event) && result.size() < 200000) result.push_back(event.json);
    return result;
  }();
  return events;
}

void BM_ShopGenerate(benchmark::State& state) {
  const ShopOptions options{
      .users = state.range(0), .days = static_cast<double>(state.range(1)), .seed = kSeed};
  int64_t events = 0;
  int64_t bytes = 0;
  for (auto _ : state) {
    state.PauseTiming();
    SyntheticShop shop(options);  // construction (latent draws) is not timed
    GeneratedEvent event;
    state.ResumeTiming();
    while (shop.Next(&event)) {
      ++events;
      bytes += static_cast<int64_t>(event.json.size());
    }
  }
  state.SetItemsProcessed(events);
  state.SetBytesProcessed(bytes);
  state.counters["events_per_run"] =
      benchmark::Counter(static_cast<double>(events) / static_cast<double>(state.iterations()));
}
BENCHMARK(BM_ShopGenerate)->Args({10000, 90})->Args({200000, 30})->Unit(benchmark::kMillisecond);

void BM_Decode(benchmark::State& state) {
  const auto& events = SampleEvents();
  Decoder decoder({}, {});
  Event event;
  std::string reason;
  size_t next = 0;
  int64_t bytes = 0;
  int64_t failures = 0;
  for (auto _ : state) {
    const std::string& message = events[next];
    if (++next == events.size()) next = 0;
    if (!decoder.Decode(message, 1767225600000, &event, &reason)) ++failures;
    bytes += static_cast<int64_t>(message.size());
    benchmark::DoNotOptimize(event.ts_ms);
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(bytes);
  state.counters["failures"] = static_cast<double>(failures);
}
BENCHMARK(BM_Decode);

void BM_SimdjsonParseOnly(benchmark::State& state) {
  const auto& events = SampleEvents();
  std::vector<simdjson::padded_string> padded;
  padded.reserve(events.size());
  for (const auto& message : events) padded.emplace_back(message);
  simdjson::dom::parser parser;
  size_t next = 0;
  int64_t bytes = 0;
  for (auto _ : state) {
    simdjson::dom::element root;
    auto error = parser.parse(padded[next]).get(root);
    benchmark::DoNotOptimize(error);
    bytes += static_cast<int64_t>(padded[next].size());
    if (++next == padded.size()) next = 0;
  }
  state.SetItemsProcessed(state.iterations());
  state.SetBytesProcessed(bytes);
}
BENCHMARK(BM_SimdjsonParseOnly);

void BM_DecodeBad(benchmark::State& state) {
  const std::string message =
      R"({"user_id":"u1","type":"purchase","ts":1767225600000,"amount":-5,"currency":"EUR"})";
  Decoder decoder({}, {});
  Event event;
  std::string reason;
  for (auto _ : state) {
    benchmark::DoNotOptimize(decoder.Decode(message, 1767225600000, &event, &reason));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecodeBad);

void BM_DecodePurchase(benchmark::State& state) {
  const std::string message =
      R"({"event_id":"e1","user_id":"u1","type":"purchase","ts":"2026-01-01T00:00:00Z",)"
      R"("amount":12.5,"currency":"EUR","order_id":"o1","items":2,"product_id":"p1",)"
      R"("category":"books","session_id":"s1"})";
  Decoder decoder({}, {});
  Event event;
  std::string reason;
  for (auto _ : state) {
    benchmark::DoNotOptimize(decoder.Decode(message, 1767225600000, &event, &reason));
  }
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_DecodePurchase);

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
#ifdef NDEBUG
  benchmark::AddCustomContext("assertions", "off");
#else
  benchmark::AddCustomContext("assertions", "ON (numbers are not representative)");
#endif
  benchmark::AddCustomContext("simdjson_implementation",
                              simdjson::get_active_implementation()->name());
  benchmark::AddCustomContext("sample", "SyntheticShop users=" + std::to_string(kSampleUsers) +
                                            " days=" + std::to_string(kSampleDays) +
                                            " seed=" + std::to_string(kSeed) +
                                            " (first 200000 events), default mapping/limits");
  benchmark::AddCustomContext("threads", "1");
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
