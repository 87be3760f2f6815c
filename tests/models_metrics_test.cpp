// CLV metrics on hand-computed examples, the evaluation harness, the chart.
#include <algorithm>
#include <cmath>
#include <limits>
#include <span>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "models/chart.h"
#include "models/evaluate.h"
#include "models/metrics.h"

namespace clv::models {
namespace {

TEST(Metrics, PerfectRankingHasNormalizedGiniOne) {
  std::vector<double> actual = {0, 10, 0, 50, 5, 0, 0, 100};
  std::vector<double> predicted = {0.1, 2, 0.2, 3, 1, 0.05, 0.3, 9};
  Metrics m = ComputeMetrics(predicted, actual);
  EXPECT_NEAR(m.normalized_gini, 1.0, 1e-12);
  // Inverting the ranking makes it negative.
  std::vector<double> inverted;
  for (double p : predicted) inverted.push_back(-p);
  EXPECT_LT(NormalizedGini(inverted, actual), -0.5);
}

TEST(Metrics, GiniByHand) {
  // 4 users, actual 0,0,0,4. Gain area by the trapezoid rule over users,
  // Gini = 2 * area - 1. Perfect order (buyer first): cumulative shares
  // 1,1,1,1 -> area (0.5 + 1 + 1 + 1) / 4 = 0.875, Gini 0.75.
  // Prediction {4,3,1,2} orders users 0,1,3,2: shares 0,0,1,1 ->
  // area (0 + 0 + 0.5 + 1) / 4 = 0.375, Gini -0.25.
  std::vector<double> actual = {0, 0, 0, 4};
  std::vector<double> predicted = {4, 3, 1, 2};
  Metrics m = ComputeMetrics(predicted, actual);
  EXPECT_NEAR(m.gini, -0.25, 1e-12);
  EXPECT_NEAR(m.normalized_gini, -0.25 / 0.75, 1e-12);
  // Buyer ranked second: shares 0,1,1,1 -> area 0.625, Gini 0.25.
  std::vector<double> second = {4, 1, 0, 3};
  EXPECT_NEAR(NormalizedGini(second, actual), 0.25 / 0.75, 1e-12);
}

TEST(Metrics, SpearmanKnownValues) {
  // Classic example: ranks differ by d = (0, 1, -1, 0, 0) ... computed with
  // 1 - 6 sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 120 = 0.9 (no ties).
  std::vector<double> a = {1, 2, 3, 4, 5};
  std::vector<double> b = {10, 30, 20, 40, 50};
  EXPECT_NEAR(SpearmanCorrelation(a, b), 0.9, 1e-12);
  std::vector<double> reversed = {5, 4, 3, 2, 1};
  EXPECT_NEAR(SpearmanCorrelation(a, reversed), -1.0, 1e-12);
  // Ties get average ranks.
  auto ranks = AverageRanks(std::vector<double>{7, 3, 7, 1});
  EXPECT_EQ(ranks, (std::vector<double>{3.5, 2, 3.5, 1}));
}

TEST(Metrics, ErrorsAndR2ByHand) {
  std::vector<double> actual = {0, 2, 4};
  std::vector<double> predicted = {1, 2, 2};
  Metrics m = ComputeMetrics(predicted, actual);
  EXPECT_NEAR(m.mse, (1.0 + 0 + 4) / 3, 1e-12);
  EXPECT_NEAR(m.mae, (1.0 + 0 + 2) / 3, 1e-12);
  // mean actual 2: ss_tot = 4 + 0 + 4 = 8, ss_res = 5 -> R2 = 3/8.
  EXPECT_NEAR(m.r2, 0.375, 1e-12);
  // MAPE over buyers (2 and 4): (0/2 + 2/4) / 2 = 0.25; the non-buyer is ignored.
  EXPECT_NEAR(m.mape_buyers, 0.25, 1e-12);
  EXPECT_EQ(m.buyers, 2u);
}

TEST(Metrics, DecilesAndTopDecile) {
  // 20 users: actual = i, predictions rank the top two correctly except one swap.
  std::vector<double> actual, predicted;
  for (int i = 0; i < 20; ++i) {
    actual.push_back(i);
    predicted.push_back(i);
  }
  std::swap(predicted[19], predicted[10]);  // user 19 now predicted mid-pack
  Metrics m = ComputeMetrics(predicted, actual);
  ASSERT_EQ(m.deciles.size(), 10u);
  // Decile 1 = users 10 (pred 19) and 18 (pred 18): actual mean (10+18)/2.
  EXPECT_EQ(m.deciles[0].users, 2u);
  EXPECT_NEAR(m.deciles[0].mean_actual, 14.0, 1e-12);
  EXPECT_NEAR(m.deciles[0].mean_predicted, 18.5, 1e-12);
  // Top decile = 2 users; true top = {19, 18}; hits = {18}.
  EXPECT_NEAR(m.top_decile_precision, 0.5, 1e-12);
  EXPECT_NEAR(m.top_decile_recall, 0.5, 1e-12);
  EXPECT_NEAR(m.top_decile_f1, 0.5, 1e-12);
  size_t users = 0;
  for (const auto& row : m.deciles) users += row.users;
  EXPECT_EQ(users, 20u);
}

TEST(Metrics, GainCurveEndsAtOne) {
  std::vector<double> actual = {0, 1, 3};
  auto curve = GainCurve(std::vector<double>{1, 2, 3}, actual, 3);
  ASSERT_EQ(curve.size(), 4u);
  EXPECT_DOUBLE_EQ(curve[0].value_share, 0);
  EXPECT_DOUBLE_EQ(curve[1].value_share, 0.75);
  EXPECT_DOUBLE_EQ(curve[3].value_share, 1);
}

// The evaluation harness on a hand-made dataset with formula and given
// candidates (no torch needed).
TEST(Evaluate, ScoresUsersSeenBeforeTheCutoffAgainstTheirLaterSpend) {
  const int64_t day = kMsPerDay;
  const int64_t t0 = DateToMs(2020, 1, 1);
  std::vector<UserEvent> events = {
      {"a", {EventKind::kPurchase, t0, 10}},
      {"a", {EventKind::kPurchase, t0 + 20 * day, 30}},
      {"b", {EventKind::kPageView, t0 + day, 0}},
      {"b", {EventKind::kPurchase, t0 + 25 * day, 5}},
      {"c", {EventKind::kPurchase, t0 + 2 * day, 50}},
      {"late", {EventKind::kPurchase, t0 + 15 * day, 9}},
  };
  Dataset data = MakeDataset(events);
  const int64_t cutoff = t0 + 10 * day;
  EvalCandidate by_spend{
      "spend so far", nullptr, [](const History& h, int64_t) { return h.monetary_total; }, {}};
  EvalCandidate given{"given", nullptr, {}, {}};
  for (const auto& user : data.users) given.given.push_back(user.user_id == "a" ? 100 : 1);
  EvalReport report = Evaluate(data, cutoff, 30, {by_spend, given}, "tiny");
  ASSERT_EQ(report.population.size(), 3u);  // "late" starts after the cutoff
  ASSERT_EQ(report.models.size(), 2u);
  // Actual after the cutoff: a 30, b 5, c 0.
  std::vector<double> expected_actual;
  for (size_t index : report.population) {
    const auto& id = data.users[index].user_id;
    expected_actual.push_back(id == "a" ? 30 : id == "b" ? 5 : 0);
  }
  EXPECT_EQ(report.actual, expected_actual);
  EXPECT_NEAR(report.models[1].metrics.total_predicted, 102, 1e-9);
  EXPECT_NEAR(report.models[1].metrics.normalized_gini, 1.0, 1e-9);
  std::string text = EvalReportText(report);
  EXPECT_NE(text.find("spend so far"), std::string::npos);
  EXPECT_NE(text.find("Gini"), std::string::npos);
  std::string json = EvalReportJson(report);
  EXPECT_NE(json.find("\"normalized_gini\""), std::string::npos);
  std::string svg = EvalChartSvg(report);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
  EXPECT_NE(svg.find("given (Gini 1.000)"), std::string::npos);
}

// --- degenerate inputs: defined numbers, never NaN ------------------------

// Every number in the JSON document, recursively, is finite (null is the
// undefined marker).
void ExpectFiniteNumbers(const nlohmann::json& json, const std::string& path) {
  if (json.is_number()) {
    EXPECT_TRUE(std::isfinite(json.get<double>())) << path;
  } else if (json.is_object()) {
    for (auto it = json.begin(); it != json.end(); ++it) {
      ExpectFiniteNumbers(it.value(), path + "." + it.key());
    }
  } else if (json.is_array()) {
    for (size_t i = 0; i < json.size(); ++i) {
      ExpectFiniteNumbers(json[i], path + "[" + std::to_string(i) + "]");
    }
  }
}

TEST(Metrics, DegenerateInputsHaveDocumentedValues) {
  const std::vector<double> zeros(7, 0.0), ones(7, 1.0);
  const std::vector<double> rising = {1, 2, 3, 4, 5, 6, 7};
  // All-zero actuals: nothing to rank, no variance, no buyers.
  Metrics m = ComputeMetrics(rising, zeros);
  EXPECT_EQ(m.gini, 0);
  EXPECT_EQ(m.normalized_gini, 0);
  EXPECT_EQ(m.spearman, 0);
  EXPECT_FALSE(IsDefined(m.r2));
  EXPECT_FALSE(IsDefined(m.mape_buyers));
  EXPECT_TRUE(IsDefined(m.mse));
  EXPECT_EQ(m.top_decile_recall, 0);
  // A constant prediction ranks nobody: Gini 0 (not the index order's Gini).
  m = ComputeMetrics(ones, rising);
  EXPECT_EQ(m.gini, 0);
  EXPECT_EQ(m.normalized_gini, 0);
  EXPECT_EQ(NormalizedGini(ones, rising), 0);
  EXPECT_EQ(m.spearman, 0);
  EXPECT_TRUE(IsDefined(m.r2));
  // Fewer than 10 users: empty deciles have 0 users and means 0.
  size_t empty = 0;
  for (const DecileRow& row : m.deciles) {
    if (row.users == 0) {
      ++empty;
      EXPECT_EQ(row.mean_predicted, 0);
      EXPECT_EQ(row.mean_actual, 0);
    }
  }
  EXPECT_EQ(empty, 3u);
  // No users at all.
  m = ComputeMetrics({}, {});
  EXPECT_EQ(m.users, 0u);
  EXPECT_EQ(m.normalized_gini, 0);
  EXPECT_FALSE(IsDefined(m.r2));
  // Non-finite predictions count as 0 and are counted.
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const double inf = std::numeric_limits<double>::infinity();
  m = ComputeMetrics(std::vector<double>{nan, 2, inf, 4, -inf, 6, 7}, rising);
  EXPECT_EQ(m.non_finite_predictions, 3u);
  EXPECT_NEAR(m.total_predicted, 19, 1e-12);
  for (double v : {m.mse, m.mae, m.r2, m.gini, m.normalized_gini, m.spearman}) {
    EXPECT_TRUE(std::isfinite(v));
  }
}

// A recurrent scorer whose state is the user's spend so far; a purchase of
// 666 leaves the state NaN (a diverged model). clv = the state.
class SpendStateScorer : public Scorer {
 public:
  std::string version() const override { return "spend-state"; }
  int state_size() const override { return 2; }
  void Step(std::span<const StepInput> inputs, std::span<Score> outputs) override {
    for (size_t i = 0; i < inputs.size(); ++i) {
      float* state = inputs[i].state;
      state[0] += static_cast<float>(inputs[i].event.amount);
      state[1] = 1;
      if (inputs[i].event.amount == 666) state[0] = std::numeric_limits<float>::quiet_NaN();
      outputs[i].clv = state[0];
    }
  }
  void Rescore(std::span<const RescoreInput> inputs, std::span<Score> outputs) override {
    for (size_t i = 0; i < inputs.size(); ++i) outputs[i].clv = inputs[i].state[0];
  }
};

TEST(Evaluate, ANonFiniteModelStateIsResetAsTheServiceDoesAndCounted) {
  const int64_t day = kMsPerDay;
  const int64_t t0 = DateToMs(2020, 1, 1);
  std::vector<UserEvent> events = {
      {"a", {EventKind::kPurchase, t0, 10}},
      {"a", {EventKind::kPurchase, t0 + day, 666}},
      {"a", {EventKind::kPurchase, t0 + 2 * day, 5}},
      {"b", {EventKind::kPurchase, t0, 7}},
  };
  Dataset data = MakeDataset(events);
  SpendStateScorer scorer;
  EvalCandidate candidate{"recurrent", &scorer, {}, {}};
  EvalReport report = Evaluate(data, t0 + 10 * day, 30, {candidate}, "reset");
  ASSERT_EQ(report.models.size(), 1u);
  const EvalModelResult& model = report.models[0];
  EXPECT_EQ(model.state_resets, 1u);
  EXPECT_EQ(model.metrics.non_finite_predictions, 0u)
      << "the step after the damage starts from the initial state, as in the service";
  std::vector<double> predicted = model.predicted;
  std::sort(predicted.begin(), predicted.end());
  EXPECT_EQ(predicted, (std::vector<double>{5, 7}));
  EXPECT_NE(EvalReportText(report).find("1 non-finite model states reset"), std::string::npos);
  const auto json = nlohmann::json::parse(EvalReportJson(report));
  EXPECT_EQ(json["models"][0]["model_state_resets"].get<int>(), 1);
}

TEST(Evaluate, ReportsOfDegenerateCandidatesAreValidJsonAndPrintNoNan) {
  const int64_t day = kMsPerDay;
  const int64_t t0 = DateToMs(2020, 1, 1);
  // Nobody buys after the cutoff (all-zero actuals); 3 users (< 10: empty deciles).
  std::vector<UserEvent> events = {
      {"a", {EventKind::kPurchase, t0, 10}},
      {"b", {EventKind::kPurchase, t0 + day, 5}},
      {"c", {EventKind::kPurchase, t0 + 2 * day, 50}},
  };
  Dataset data = MakeDataset(events);
  EvalCandidate constant{"constant", nullptr, [](const History&, int64_t) { return 3.0; }, {}};
  EvalCandidate broken{"broken",
                       nullptr,
                       [](const History& h, int64_t) {
                         return h.monetary_total > 20 ? std::numeric_limits<double>::quiet_NaN()
                                                      : std::numeric_limits<double>::infinity();
                       },
                       {}};
  EvalReport report = Evaluate(data, t0 + 10 * day, 30, {constant, broken}, "degenerate");
  ASSERT_EQ(report.models.size(), 2u);
  EXPECT_EQ(report.models[1].metrics.non_finite_predictions, 3u);
  const std::string text = EvalReportText(report);
  for (const char* bad : {"nan", "NaN", "inf"}) {
    EXPECT_EQ(text.find(bad), std::string::npos) << bad << " in\n" << text;
  }
  EXPECT_NE(text.find("n/a"), std::string::npos) << text;  // R2 and MAPE undefined
  EXPECT_NE(text.find("3 non-finite predictions"), std::string::npos) << text;
  const nlohmann::json json =
      nlohmann::json::parse(EvalReportJson(report), nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(json.is_discarded());
  ExpectFiniteNumbers(json, "report");
  ASSERT_EQ(json["models"].size(), 2u);
  EXPECT_TRUE(json["models"][0]["r2"].is_null());
  EXPECT_TRUE(json["models"][0]["mape_buyers"].is_null());
  EXPECT_EQ(json["models"][0]["normalized_gini"].get<double>(), 0);
  EXPECT_EQ(json["models"][1]["non_finite_predictions"].get<int>(), 3);
  const std::string csv = EvalScoresCsv(data, report);
  EXPECT_EQ(csv.find("nan"), std::string::npos) << csv;
  EXPECT_EQ(csv.find("inf"), std::string::npos) << csv;
}

}  // namespace
}  // namespace clv::models
