// Robustness matrix with known truth: for every shop profile of `clv gen`
// (sim/synthetic_shop.h) a small shop is generated, BG/NBD + Gamma-Gamma is
// fitted (`clv fit-baseline`), the LSTM trained with its default flags
// (`clv train`, only the epochs capped to keep CI short) and both evaluated
// against the generator's truth (`clv eval --json --truth`). What a user
// relies on: a valid JSON report with every number finite, a predicted total
// within a sane ratio of the actual, and an LSTM that ranks at least as well
// as BG/NBD. scripts/robustness-matrix.sh prints the same matrix at a larger
// size, with the real datasets beside it (docs/MODELS.md).
#include <cmath>
#include <ctime>
#include <filesystem>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/cli_report.h"
#include "tests/test_support.h"

namespace clv {
namespace {

using testing::ClvBinary;
using testing::FirstNonFinite;
using testing::ModelNamed;
using testing::ReadFile;
using testing::RunCommand;
using testing::TempDir;

constexpr int kTimeoutMs = 600000;

int Clv(const TempDir& dir, const std::string& name, std::vector<std::string> args,
        std::string* output) {
  return testing::Clv(dir, name, std::move(args), kTimeoutMs, output);
}

struct Shop {
  std::string profile;
  int users;
  int days;
};

class E2eRobustness : public ::testing::TestWithParam<Shop> {};

TEST_P(E2eRobustness, FiniteCalibratedAndAtLeastAsGoodAsBgNbd) {
  const Shop& shop = GetParam();
  TempDir dir;
  const auto events = (dir.path() / "events.jsonl").string();
  const auto truth = (dir.path() / "truth.jsonl").string();
  const auto baseline = (dir.path() / "baseline.json").string();
  const auto model = (dir.path() / "lstm.json").string();
  const auto report = (dir.path() / "report.json").string();
  // The period starts on 2025-01-01 and ends `days` later: the cutoff.
  const int64_t end_ms = 1735689600000LL + int64_t{shop.days} * 86400000LL;
  const std::time_t end_s = static_cast<std::time_t>(end_ms / 1000);
  char cutoff[16];
  std::strftime(cutoff, sizeof(cutoff), "%Y-%m-%d", std::gmtime(&end_s));
  const std::string horizon = "120d";
  std::string out;
  ASSERT_EQ(0, Clv(dir, "gen",
                   {"gen", "--profile", shop.profile, "--users", std::to_string(shop.users),
                    "--days", std::to_string(shop.days), "--seed", "21", "--start", "2025-01-01",
                    "--horizon", horizon, "--out", events, "--truth", truth},
                   &out))
      << out;
  ASSERT_EQ(0, Clv(dir, "fit", {"fit-baseline", "--events", events, "--out", baseline}, &out))
      << out;
  ASSERT_EQ(0, Clv(dir, "train",
                   {"train", "--events", events, "--horizon", horizon, "--out", model, "--epochs",
                    "2", "--threads", "2"},
                   &out))
      << out;
  ASSERT_EQ(0, Clv(dir, "eval",
                   {"eval", "--events", events, "--cutoff", cutoff, "--horizon", horizon, "--model",
                    model, "--baseline", baseline, "--truth", truth, "--json", report},
                   &out))
      << out;
  nlohmann::json json;
  ASSERT_NO_THROW(json = nlohmann::json::parse(ReadFile(report))) << ReadFile(report);
  EXPECT_EQ(FirstNonFinite(json, ""), "") << shop.profile << ": not finite in\n" << json.dump(1);
  const auto* lstm = ModelNamed(json, "LSTM");
  const auto* bgnbd = ModelNamed(json, "BG/NBD");
  ASSERT_NE(lstm, nullptr) << out;
  ASSERT_NE(bgnbd, nullptr) << out;
  for (const auto* m : {lstm, bgnbd}) {
    for (const char* metric :
         {"mae", "normalized_gini", "spearman", "total_predicted", "total_actual"}) {
      ASSERT_TRUE((*m)[metric].is_number())
          << shop.profile << " " << metric << " of " << (*m)["name"];
    }
  }
  const double ratio =
      (*lstm)["total_predicted"].get<double>() / (*lstm)["total_actual"].get<double>();
  EXPECT_GT(ratio, 0.5) << shop.profile << ": LSTM total / actual\n" << out;
  EXPECT_LT(ratio, 2.0) << shop.profile << ": LSTM total / actual\n" << out;
  EXPECT_GE((*lstm)["normalized_gini"].get<double>(),
            (*bgnbd)["normalized_gini"].get<double>() - 0.02)
      << shop.profile << ": LSTM Gini below BG/NBD's\n"
      << out;
}

// Small shops (a few hundred users, two epochs): about 30 s each on a
// 2-core machine; scripts/robustness-matrix.sh runs the larger table.
INSTANTIATE_TEST_SUITE_P(
    Profiles, E2eRobustness,
    ::testing::Values(Shop{"wholesale", 300, 240}, Shop{"one_time", 400, 240},
                      Shop{"no_dropout", 300, 240}, Shop{"high_dropout", 400, 240},
                      Shop{"long_history", 60, 300}, Shop{"day_granularity", 300, 240},
                      Shop{"cents", 300, 240}),
    [](const ::testing::TestParamInfo<Shop>& info) { return info.param.profile; });

}  // namespace
}  // namespace clv
