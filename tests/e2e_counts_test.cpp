// Data without order values, end to end through the `clv` binary with
// config/samples/grocery.json (mapping.amount_field ""): a small count-only
// file made from a generated shop, and the real ../shared/data/grocery log.
// What a user relies on: the file loads, `clv fit-baseline` says Gamma-Gamma
// is not fitted because there is no value column, and `clv eval` judges
// every model on purchases, says so in text and JSON, with every number
// finite and a BG/NBD that ranks buyers.
#include <cmath>
#include <ctime>
#include <fstream>
#include <set>
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

constexpr int kTimeoutMs = 300000;

int Clv(const TempDir& dir, const std::string& name, std::vector<std::string> args,
        std::string* output) {
  return testing::Clv(dir, name, std::move(args), kTimeoutMs, output);
}

std::string GroceryConfig() {
  return (testing::SourceDir() / "config/samples/grocery.json").string();
}

// The checks every count-only report must pass; returns the parsed JSON.
nlohmann::json CheckCountReport(const std::string& report_path, const std::string& text) {
  EXPECT_NE(text.find("actual purchases"), std::string::npos) << text;
  EXPECT_NE(text.find("no value column"), std::string::npos) << text;
  EXPECT_EQ(text.find("Gamma-Gamma "), text.find("Gamma-Gamma not fitted"))
      << "no Gamma-Gamma model in a count-only table:\n"
      << text;
  EXPECT_EQ(text.find("n/a"), std::string::npos) << text;
  nlohmann::json json;
  EXPECT_NO_THROW(json = nlohmann::json::parse(ReadFile(report_path)));
  EXPECT_EQ(json["target"], "purchases");
  EXPECT_EQ(json["value_column"], false);
  EXPECT_EQ(FirstNonFinite(json, ""), "") << json.dump(1);
  for (const auto& model : json["models"]) {
    for (const char* metric : {"mae", "normalized_gini", "spearman", "total_predicted", "r2"}) {
      EXPECT_TRUE(model[metric].is_number()) << model["name"] << " " << metric;
    }
  }
  return json;
}

// A generated shop's purchases as `cust,date` rows (no amounts), split at
// day 240 of 360: the shop's rhythm is known, so BG/NBD must rank buyers.
TEST(E2eCounts, CountOnlyFileLoadsAndIsJudgedOnPurchases) {
  TempDir dir;
  const auto generated = (dir.path() / "shop.jsonl").string();
  const auto events = (dir.path() / "counts.csv").string();
  const auto baseline = (dir.path() / "baseline.json").string();
  const auto model = (dir.path() / "lstm.json").string();
  const auto report = (dir.path() / "report.json").string();
  std::string out;
  ASSERT_EQ(0, Clv(dir, "gen",
                   {"gen", "--profile", "day_granularity", "--users", "500", "--days", "360",
                    "--seed", "5", "--start", "2025-01-01", "--out", generated},
                   &out))
      << out;
  {
    std::ifstream in(generated);
    std::ofstream csv(events);
    csv << "cust,date\n";
    std::string line;
    while (std::getline(in, line)) {
      auto event = nlohmann::json::parse(line);
      if (event["type"] != "purchase") continue;
      csv << event["user_id"].get<std::string>() << "," << event["ts"].get<std::string>() << "\n";
    }
  }
  // A value column named in the mapping but absent from the rows: every row
  // is rejected with the reason and the way out.
  EXPECT_NE(0, Clv(dir, "with-amounts",
                   {"fit-baseline", "--events", events, "--config", GroceryConfig(), "--set",
                    "mapping.amount_field=amount", "--out", baseline},
                   &out));
  EXPECT_NE(out.find("'amount': missing (required for purchase; if the data has no order values, "
                     "set mapping.amount_field to \"\")"),
            std::string::npos)
      << out;

  ASSERT_EQ(0, Clv(dir, "fit",
                   {"fit-baseline", "--events", events, "--config", GroceryConfig(),
                    "--calibration-end", "2025-08-29", "--out", baseline},
                   &out))
      << out;
  EXPECT_NE(out.find("Gamma-Gamma not fitted: the data has no value column"), std::string::npos)
      << out;
  EXPECT_EQ(out.find("nan"), std::string::npos) << out;

  ASSERT_EQ(
      0, Clv(dir, "train",
             {"train", "--events", events, "--config", GroceryConfig(), "--calibration-end",
              "2025-08-29", "--horizon", "120d", "--out", model, "--epochs", "2", "--threads", "1"},
             &out))
      << out;
  EXPECT_NE(out.find("no value column"), std::string::npos) << out;

  ASSERT_EQ(0, Clv(dir, "eval",
                   {"eval", "--events", events, "--config", GroceryConfig(), "--cutoff",
                    "2025-08-29", "--horizon", "120d", "--model", model, "--json", report},
                   &out))
      << out;
  auto json = CheckCountReport(report, out);
  const auto* bgnbd = ModelNamed(json, "BG/NBD");
  const auto* lstm = ModelNamed(json, "LSTM");
  ASSERT_NE(bgnbd, nullptr) << out;
  ASSERT_NE(lstm, nullptr) << out;
  EXPECT_EQ((*bgnbd)["name"], "BG/NBD");
  EXPECT_GT((*bgnbd)["normalized_gini"].get<double>(), 0.3) << out;
  // The actual is the number of purchases in the window, the same for every model.
  const double actual = (*bgnbd)["total_actual"].get<double>();
  EXPECT_GT(actual, 100);
  EXPECT_EQ(actual, std::floor(actual)) << "a count";
  for (const auto* m : {bgnbd, lstm}) {
    const double ratio = (*m)["total_predicted"].get<double>() / actual;
    EXPECT_GT(ratio, 0.5) << (*m)["name"] << "\n" << out;
    EXPECT_LT(ratio, 2.0) << (*m)["name"] << "\n" << out;
  }
}

// The real log (../shared/data/grocery): one year of calibration, the next
// year held out, default flags otherwise (the shipped LSTM, BG/NBD fitted
// before the cutoff).
TEST(E2eCounts, RealGroceryLogIsJudgedOnPurchases) {
  auto data = testing::SharedDataPath("grocery/groceryElog.csv");
  CLV_REQUIRE_SHARED_DATA(data);
  TempDir dir;
  const auto report = (dir.path() / "report.json").string();
  std::string out;
  ASSERT_EQ(0, Clv(dir, "eval",
                   {"eval", "--events", data.string(), "--config", GroceryConfig(), "--cutoff",
                    "2007-01-01", "--horizon", "52w", "--json", report},
                   &out))
      << out;
  EXPECT_NE(out.find("loaded 10,483 events of 1,525 users"), std::string::npos) << out;
  auto json = CheckCountReport(report, out);
  const auto* bgnbd = ModelNamed(json, "BG/NBD");
  ASSERT_NE(bgnbd, nullptr) << out;
  EXPECT_GT((*bgnbd)["normalized_gini"].get<double>(), 0.5) << out;
  const double ratio =
      (*bgnbd)["total_predicted"].get<double>() / (*bgnbd)["total_actual"].get<double>();
  EXPECT_GT(ratio, 0.7) << out;
  EXPECT_LT(ratio, 1.4) << out;
}

}  // namespace
}  // namespace clv
