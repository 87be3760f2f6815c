// Lifecycle rules on their own: stage transitions, timer due times and the
// content of each alert kind (what a subscriber of the alerts topic reads).
#include <cmath>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "stream/lifecycle.h"

namespace clv::stream {
namespace {

using state::Stage;

constexpr int64_t kDayMs = 86400000;
constexpr int64_t kStartMs = 1735689600000;  // 2025-01-01

int64_t Day(double day) { return kStartMs + static_cast<int64_t>(day * kDayMs); }

// Aggregates of a buyer: `purchases` purchases, one every `gap_days`, the
// last at `last_day`.
Aggregates Buyer(uint32_t purchases, double gap_days, double last_day) {
  Aggregates a;
  a.events = a.purchases = a.purchase_days = purchases;
  a.first_event_ms = a.first_purchase_ms = Day(last_day - gap_days * (purchases - 1));
  a.last_event_ms = a.last_purchase_ms = Day(last_day);
  a.ewma_gap_days = purchases >= 2 ? gap_days : 0;
  a.log_value_sum = purchases * std::log(20.0);
  a.log_value_sq_sum = purchases * std::log(20.0) * std::log(20.0);
  return a;
}

models::Score Churn(double churn_risk) {
  models::Score score;
  score.churn_risk = churn_risk;
  return score;
}

TEST(Lifecycle, StagesFollowPurchasesAndQuietSpells) {
  const config::LifecycleOptions options;  // at risk after 2 gaps (60 d default), dormant 180 d
  Aggregates browser;
  browser.events = 3;
  browser.last_event_ms = Day(0);
  EXPECT_EQ(NextStage(Stage::kPotential, browser, Churn(0.1), Day(0), false, options),
            Stage::kPotential);

  const Aggregates first = Buyer(1, 0, 0);
  EXPECT_EQ(NextStage(Stage::kPotential, first, Churn(0.1), Day(0), true, options), Stage::kNew);
  const Aggregates repeat = Buyer(2, 10, 10);
  EXPECT_EQ(NextStage(Stage::kNew, repeat, Churn(0.1), Day(10), true, options), Stage::kActive);
  // Quiet for twice the user's own 10-day rhythm: at risk; not a day before.
  EXPECT_EQ(NextStage(Stage::kActive, repeat, Churn(0.1), Day(29.9), false, options),
            Stage::kActive);
  EXPECT_EQ(NextStage(Stage::kActive, repeat, Churn(0.1), Day(30), false, options), Stage::kAtRisk);
  // Browsing again does not end the risk; only a purchase does.
  Aggregates browsing = repeat;
  browsing.last_event_ms = Day(31);
  EXPECT_EQ(NextStage(Stage::kAtRisk, browsing, Churn(0.1), Day(31), false, options),
            Stage::kAtRisk);
  EXPECT_EQ(NextStage(Stage::kAtRisk, Buyer(3, 10, 31), Churn(0.1), Day(31), true, options),
            Stage::kActive);
  // 180 quiet days: dormant; the next purchase makes a returning customer.
  EXPECT_EQ(NextStage(Stage::kAtRisk, repeat, Churn(0.1), Day(190), false, options),
            Stage::kDormant);
  EXPECT_EQ(NextStage(Stage::kDormant, Buyer(3, 90, 200), Churn(0.1), Day(200), true, options),
            Stage::kReturning);
  // A high churn risk alone makes a buyer at risk once the purchase gap is due.
  Aggregates visiting = repeat;
  visiting.last_event_ms = Day(29);
  EXPECT_EQ(NextStage(Stage::kActive, visiting, Churn(0.5), Day(30), false, options),
            Stage::kActive);
  EXPECT_EQ(NextStage(Stage::kActive, visiting, Churn(0.65), Day(30), false, options),
            Stage::kAtRisk);
}

TEST(Lifecycle, SegmentsByClv) {
  const config::LifecycleOptions options;  // high >= 500, low < 50
  models::Score score;
  score.clv = 900;
  EXPECT_STREQ(Segment(Aggregates{}, score, options), "prospect");
  EXPECT_STREQ(Segment(Buyer(1, 0, 0), score, options), "high_value");
  score.clv = 100;
  EXPECT_STREQ(Segment(Buyer(1, 0, 0), score, options), "mid_value");
  score.clv = 10;
  EXPECT_STREQ(Segment(Buyer(1, 0, 0), score, options), "low_value");
}

TEST(Lifecycle, TimersAreDueWhenTheStageWouldChange) {
  const config::LifecycleOptions options;
  EXPECT_EQ(NextTimerMs(Aggregates{}, options), 0) << "no event, no timer";
  Aggregates browser;
  browser.last_event_ms = Day(5);
  EXPECT_EQ(NextTimerMs(browser, options), Day(185)) << "never bought: only the dormant check";
  EXPECT_EQ(TimerAfterMs(browser, Day(185), options), 0);

  const Aggregates first = Buyer(1, 0, 0);
  EXPECT_DOUBLE_EQ(AtRiskQuietDays(first, options), 60);
  EXPECT_EQ(NextTimerMs(first, options), Day(60));
  const Aggregates repeat = Buyer(2, 10, 10);
  EXPECT_DOUBLE_EQ(AtRiskQuietDays(repeat, options), 20);
  EXPECT_EQ(NextTimerMs(repeat, options), Day(30));
  // After the at-risk check fired, the dormant check; after that, none.
  EXPECT_EQ(TimerAfterMs(repeat, Day(30), options), Day(190));
  EXPECT_EQ(TimerAfterMs(repeat, Day(190), options), 0);
  // A rhythm of hours still waits at least a day.
  EXPECT_DOUBLE_EQ(AtRiskQuietDays(Buyer(5, 0.1, 1), options), 1);
}

TEST(Lifecycle, NormalQuantileMatchesKnownValues) {
  EXPECT_NEAR(NormalQuantile(0.5), 0, 1e-9);
  EXPECT_NEAR(NormalQuantile(0.975), 1.959964, 1e-5);
  EXPECT_NEAR(NormalQuantile(0.999), 3.090232, 1e-5);
}

ScoreChange Change(Stage from, Stage to, double churn_from, double churn_to) {
  ScoreChange change;
  change.seq = 7;
  change.now_ms = Day(30);
  change.previous_stage = from;
  change.stage = to;
  change.previous_churn_risk = churn_from;
  change.churn_risk = churn_to;
  return change;
}

TEST(AlertRules, AStageChangeSaysFromWhereToWhere) {
  AlertRules rules{config::LifecycleOptions{}};
  std::vector<Alert> alerts;
  rules.Decide(Change(Stage::kActive, Stage::kActive, 0.1, 0.2), &alerts);
  EXPECT_TRUE(alerts.empty());
  rules.Decide(Change(Stage::kActive, Stage::kAtRisk, 0.1, 0.2), &alerts);
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_STREQ(alerts[0].kind, "stage_change");
  EXPECT_EQ(alerts[0].detail_json, R"({"from":"active","to":"at_risk","seq":7,"event_ts":)" +
                                       std::to_string(Day(30)) + "}");
}

TEST(AlertRules, ChurnRiskAlertsOnlyWhenCrossingTheThresholdUpwards) {
  config::LifecycleOptions options;
  options.churn_alert = 0.7;
  AlertRules rules(options);
  std::vector<Alert> alerts;
  rules.Decide(Change(Stage::kActive, Stage::kActive, 0.75, 0.9), &alerts);  // already above
  rules.Decide(Change(Stage::kActive, Stage::kActive, 0.9, 0.2), &alerts);   // downwards
  rules.Decide(Change(Stage::kActive, Stage::kActive, 0.2, 0.69), &alerts);  // below
  EXPECT_TRUE(alerts.empty());
  rules.Decide(Change(Stage::kActive, Stage::kActive, 0.65, 0.7), &alerts);
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_STREQ(alerts[0].kind, "churn_risk");
  auto detail = nlohmann::json::parse(alerts[0].detail_json);
  EXPECT_DOUBLE_EQ(detail["from"].get<double>(), 0.65);
  EXPECT_DOUBLE_EQ(detail["to"].get<double>(), 0.7);
  EXPECT_DOUBLE_EQ(detail["threshold"].get<double>(), 0.7);
  EXPECT_EQ(detail["seq"].get<uint64_t>(), 7u);
  EXPECT_EQ(detail["event_ts"].get<int64_t>(), Day(30));
  // Both at once: the stage change comes first.
  alerts.clear();
  rules.Decide(Change(Stage::kActive, Stage::kAtRisk, 0.1, 0.95), &alerts);
  ASSERT_EQ(alerts.size(), 2u);
  EXPECT_STREQ(alerts[0].kind, "stage_change");
  EXPECT_STREQ(alerts[1].kind, "churn_risk");
}

TEST(AlertRules, ASpendAnomalyIsAPurchaseFarAboveTheUsualOrder) {
  config::LifecycleOptions options;
  options.anomaly_quantile = 0.999;
  AlertRules rules(options);
  // Four orders of 20 (no spread: the sd floor 0.25 applies): the threshold
  // is 20 * exp(3.09 * 0.25) = 43.3.
  const Aggregates before = Buyer(4, 10, 30);
  auto purchase = [&](double amount) {
    ScoreChange change = Change(Stage::kActive, Stage::kActive, 0.1, 0.1);
    change.purchase = true;
    change.amount = amount;
    change.before = &before;
    return change;
  };
  std::vector<Alert> alerts;
  rules.Decide(purchase(43), &alerts);
  EXPECT_TRUE(alerts.empty());
  rules.Decide(purchase(44), &alerts);
  ASSERT_EQ(alerts.size(), 1u);
  EXPECT_STREQ(alerts[0].kind, "spend_anomaly");
  EXPECT_EQ(alerts[0].detail_json,
            R"({"amount":44.00,"typical_amount":20.00,"quantile":0.999000,"seq":7,"event_ts":)" +
                std::to_string(Day(30)) + "}");
  // Too little history to know the usual order: no alert.
  const Aggregates young = Buyer(1, 0, 30);
  ScoreChange second = purchase(1000);
  second.before = &young;
  alerts.clear();
  rules.Decide(second, &alerts);
  EXPECT_TRUE(alerts.empty());
  // A timer re-score or a page view is not a purchase.
  ScoreChange not_purchase = purchase(1000);
  not_purchase.purchase = false;
  rules.Decide(not_purchase, &alerts);
  EXPECT_TRUE(alerts.empty());
}

}  // namespace
}  // namespace clv::stream
