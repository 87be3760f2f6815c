// `clv bench --latency-only` on the embedded broker: the latency phase feeds
// events at a fixed rate, an external consumer of the scores topic matches
// every score to its event, and the bench prints the latency it saw. What a
// user relies on: every event sent after the warm-up is accounted for (a
// latency, or counted as without a score), and the figures are finite
// numbers. No timing is asserted.
#include <cmath>
#include <regex>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "tests/cli_report.h"
#include "tests/test_support.h"

namespace clv {
namespace {

using testing::TempDir;

constexpr int kTimeoutMs = 180000;

struct ExternalFigures {
  double p50 = NAN, p90 = NAN, p99 = NAN, max = NAN;
  long long counted = -1, unscored = -1, unmatched = -1, after_warmup = -1;
};

long long Number(const std::string& digits) {
  std::string plain;
  for (char c : digits) {
    if (c != ',') plain += c;
  }
  return std::stoll(plain);
}

// The latency lines of the bench's output; fields stay unset if missing.
ExternalFigures Parse(const std::string& out) {
  ExternalFigures f;
  std::smatch m;
  if (std::regex_search(out, m, std::regex(R"(latency +([0-9,]+) events at)"))) {
    f.after_warmup = Number(m[1]);
  }
  const std::regex line(
      R"(p50 ([-0-9.a-z]+) ms, p90 ([-0-9.a-z]+) ms, p99 ([-0-9.a-z]+) ms, max ([-0-9.a-z]+) ms )"
      R"(over ([0-9,]+) events)");
  if (std::regex_search(out, m, line)) {
    f.p50 = std::stod(m[1]);
    f.p90 = std::stod(m[2]);
    f.p99 = std::stod(m[3]);
    f.max = std::stod(m[4]);
    f.counted = Number(m[5]);
  }
  if (std::regex_search(out, m, std::regex(R"(events without a score: ([0-9,]+))"))) {
    f.unscored = Number(m[1]);
  }
  if (std::regex_search(out, m, std::regex(R"(scores matching no event: ([0-9,]+))"))) {
    f.unmatched = Number(m[1]);
  }
  return f;
}

void CheckLatencyRun(const std::string& emit) {
  TempDir dir;
  std::string out;
  int rc = testing::Clv(
      dir, "bench-" + emit,
      {"bench", "--latency-only", "--latency-rate", "400", "--latency-seconds", "2", "--users",
       "300", "--days", "30", "--partitions", "2", "--set", "stream.emit=" + emit},
      kTimeoutMs, &out);
  ASSERT_EQ(rc, 0) << out;
  EXPECT_NE(out.find("warm-up, not counted"), std::string::npos) << out;
  // The throughput phases are skipped.
  EXPECT_EQ(out.find("ceiling  "), std::string::npos) << out;
  auto f = Parse(out);
  // 400 events/s for 2 s after the warm-up.
  EXPECT_EQ(f.after_warmup, 800) << out;
  for (double v : {f.p50, f.p90, f.p99, f.max}) {
    EXPECT_TRUE(std::isfinite(v) && v > 0) << v << "\n" << out;
  }
  EXPECT_LE(f.p50, f.p90) << out;
  EXPECT_LE(f.p90, f.p99) << out;
  EXPECT_LE(f.p99, f.max) << out;
  // Every event after the warm-up has its score (the synthetic shop sends
  // no late or duplicate events), and every score its event.
  EXPECT_EQ(f.counted, f.after_warmup) << out;
  EXPECT_EQ(f.unscored, 0) << out;
  EXPECT_EQ(f.unmatched, 0) << out;
}

TEST(BenchLatency, ExternalConsumerSeesAScoreForEveryEventPerEvent) {
  CheckLatencyRun("per_event");
}

TEST(BenchLatency, ExternalConsumerSeesAScoreForEveryEventPerBatch) {
  CheckLatencyRun("per_batch");
}

TEST(BenchLatency, LatencyOnlyNeedsARate) {
  TempDir dir;
  std::string out;
  int rc = testing::Clv(dir, "bench-no-rate", {"bench", "--latency-only"}, kTimeoutMs, &out);
  EXPECT_EQ(rc, 2) << out;
  EXPECT_NE(out.find("--latency-rate"), std::string::npos) << out;
}

}  // namespace
}  // namespace clv
