// End to end through the `clv` binary: gen -> train -> eval on a small
// synthetic shop, and fit-baseline on the CDNOW sample (published estimates).
// Small sizes: the whole suite runs in well under a minute on 2 cores.
#include <cmath>
#include <filesystem>
#include <regex>
#include <sstream>
#include <string>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "tests/cli_report.h"
#include "tests/test_support.h"

namespace clv {
namespace {

using testing::ClvBinary;
using testing::ReadFile;
using testing::RunCommand;
using testing::TempDir;

constexpr int kTimeoutMs = 180000;

int Clv(const TempDir& dir, const std::string& name, std::vector<std::string> args,
        std::string* output) {
  return testing::Clv(dir, name, std::move(args), kTimeoutMs, output);
}

TEST(E2eModels, GenTrainEvalWritesTableJsonAndChart) {
  TempDir dir;
  const auto events = (dir.path() / "events.jsonl").string();
  const auto truth = (dir.path() / "truth.jsonl").string();
  const auto model = (dir.path() / "lstm.json").string();
  const auto report = (dir.path() / "report.json").string();
  const auto chart = (dir.path() / "chart.svg").string();
  const auto scores = (dir.path() / "scores.csv").string();
  std::string out;
  // 200 days from 2025-01-01: the period ends on 2025-07-20.
  ASSERT_EQ(0, Clv(dir, "gen",
                   {"gen", "--users", "600", "--days", "200", "--seed", "3", "--start",
                    "2025-01-01", "--horizon", "60d", "--out", events, "--truth", truth},
                   &out))
      << out;
  ASSERT_EQ(0, Clv(dir, "train",
                   {"train", "--events", events, "--horizon", "60d", "--min-horizon", "20d",
                    "--out", model, "--epochs", "2", "--hidden", "16", "--head-hidden", "8",
                    "--batch-users", "64", "--threads", "1"},
                   &out))
      << out;
  EXPECT_NE(out.find("epoch 2/2"), std::string::npos) << "progress per epoch on stderr:\n" << out;
  EXPECT_NE(out.find("written to " + model), std::string::npos) << out;
  auto saved = nlohmann::json::parse(ReadFile(model));
  EXPECT_EQ(saved["format"], "clvstream-lstm");
  EXPECT_EQ(saved["format_version"], 2);
  EXPECT_EQ(saved["horizon_days"], 60);
  EXPECT_EQ(saved["min_horizon_days"], 20);
  EXPECT_EQ(saved["hidden_size"], 16);
  // The heads' BG/NBD prior was fitted on the training events and is stored.
  EXPECT_GT(saved["prior"]["bgnbd"]["r"].get<double>(), 0);
  EXPECT_EQ(saved["prior"]["inputs"].size(), 10u);
  // The synthetic shop browses: the browsing inputs are on, and the fit finds
  // the shop's own browsing: each purchase brings its session and about two
  // research sessions, and browsing fades over about 14 days after a dropout.
  const auto& browse = saved["prior"]["browse"];
  EXPECT_GT(browse["theta"].get<double>(), 0);
  EXPECT_NEAR(browse["sessions_per_purchase"].get<double>(), 3.0, 1.0) << browse.dump();
  EXPECT_GE(browse["fade_days"].get<double>(), 7.0) << browse.dump();
  EXPECT_LE(browse["fade_days"].get<double>(), 30.0) << browse.dump();
  EXPECT_NE(saved["training"].dump().find("--epochs 2"), std::string::npos)
      << "the command line is recorded: " << saved["training"].dump();

  ASSERT_EQ(
      0, Clv(dir, "eval",
             {"eval", "--events", events, "--cutoff", "2025-07-20", "--horizon", "60d", "--model",
              model, "--truth", truth, "--json", report, "--svg", chart, "--scores", scores},
             &out))
      << out;
  // The side-by-side table names every candidate.
  for (const char* name : {"LSTM lstm/", "BG/NBD + Gamma-Gamma", "simple formula", "oracle",
                           "Bayes from the events"}) {
    EXPECT_NE(out.find(name), std::string::npos) << name << " missing from\n" << out;
  }
  auto json = nlohmann::json::parse(ReadFile(report));
  EXPECT_EQ(json["cutoff"], "2025-07-20");
  EXPECT_EQ(json["horizon_days"], 60);
  ASSERT_EQ(json["models"].size(), 5u);
  const auto& lstm = json["models"][0];
  EXPECT_EQ(lstm["name"].get<std::string>().rfind("LSTM lstm/", 0), 0u);
  EXPECT_GT(lstm["users"].get<int>(), 300);
  EXPECT_EQ(lstm["deciles"].size(), 10u);
  for (const char* metric : {"mse", "mae", "r2", "normalized_gini", "spearman", "top_decile_f1"}) {
    ASSERT_TRUE(lstm[metric].is_number()) << metric;
    EXPECT_TRUE(std::isfinite(lstm[metric].get<double>())) << metric;
  }
  // Even two epochs rank buyers better than chance.
  EXPECT_GT(lstm["normalized_gini"].get<double>(), 0.2);
  std::string svg = ReadFile(chart);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u) << svg.substr(0, 200);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("LSTM"), std::string::npos) << "the chart has a legend";

  // Per-user scores: a header naming every model, then one row per scored
  // user whose columns are the predictions the metrics were computed from.
  std::istringstream csv(ReadFile(scores));
  std::string line;
  ASSERT_TRUE(std::getline(csv, line));
  EXPECT_EQ(line.rfind("user_id,actual,\"LSTM lstm/", 0), 0u) << line;
  EXPECT_NE(line.find("\"Bayes from the events\""), std::string::npos) << line;
  int rows = 0;
  double lstm_sum = 0, actual_sum = 0;
  while (std::getline(csv, line)) {
    ++rows;
    std::vector<double> cells;
    std::stringstream fields(line.substr(line.find(',') + 1));
    for (std::string cell; std::getline(fields, cell, ',');) cells.push_back(std::stod(cell));
    ASSERT_EQ(cells.size(), 6u) << line;
    actual_sum += cells[0];
    lstm_sum += cells[1];
  }
  EXPECT_EQ(rows, lstm["users"].get<int>());
  EXPECT_NEAR(actual_sum, lstm["total_actual"].get<double>(), 1e-3 * actual_sum + 1);
  EXPECT_NEAR(lstm_sum, lstm["total_predicted"].get<double>(), 1e-3 * lstm_sum + 1);
}

TEST(E2eModels, BadFlagsAreNamed) {
  TempDir dir;
  std::string out;
  EXPECT_EQ(2, Clv(dir, "cutoff", {"eval", "--events", "x.jsonl", "--cutoff", "tomorrow"}, &out));
  EXPECT_NE(out.find("--cutoff 'tomorrow'"), std::string::npos) << out;
  EXPECT_EQ(2,
            Clv(dir, "horizon",
                {"train", "--events", "x.jsonl", "--out", "m.json", "--horizon", "a year"}, &out));
  EXPECT_NE(out.find("--horizon 'a year'"), std::string::npos) << out;
  EXPECT_NE(
      0, Clv(dir, "missing",
             {"train", "--events", (dir.path() / "nope.jsonl").string(), "--out", "m.json"}, &out));
  EXPECT_NE(out.find("nope.jsonl"), std::string::npos) << out;
}

double Parameter(const std::string& text, const std::string& name) {
  std::smatch match;
  std::regex pattern("\\b" + name + "=([0-9.]+)");
  if (!std::regex_search(text, match, pattern)) return NAN;
  return std::stod(match[1]);
}

TEST(E2eModels, FitBaselinePrintsThePublishedCdnowEstimates) {
  auto sample = testing::SharedDataPath("cdnow/CDNOW_sample.txt");
  CLV_REQUIRE_SHARED_DATA(sample);
  TempDir dir;
  std::string out;
  ASSERT_EQ(
      0, Clv(dir, "fit",
             {"fit-baseline", "--events", sample.string(), "--config",
              (testing::SourceDir() / "config/samples/cdnow.json").string(),
              // The sample has no header and a cohort-id column.
              "--columns", "customer_id,cohort_id,date,number_of_cds,dollar_value",
              "--calibration-end", "1997-10-01", "--out", (dir.path() / "baseline.json").string()},
             &out))
      << out;
  // Fader, Hardie & Lee (2005): r 0.243, alpha 4.414, a 0.793, b 2.426;
  // Fader & Hardie's Gamma-Gamma note: p 6.25, q 3.74, gamma 15.44.
  const std::pair<const char*, double> published[] = {
      {"r", 0.243}, {"alpha", 4.414}, {"a", 0.793},    {"b", 2.426},
      {"p", 6.25},  {"q", 3.74},      {"gamma", 15.44}};
  for (const auto& [name, value] : published) {
    double fitted = Parameter(out, name);
    EXPECT_NEAR(fitted, value, 0.01 * value) << name << " in\n" << out;
  }
  EXPECT_TRUE(std::filesystem::exists(dir.path() / "baseline.json"));
}

}  // namespace
}  // namespace clv
