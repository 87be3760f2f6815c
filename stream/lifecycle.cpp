#include "stream/lifecycle.h"

#include <algorithm>
#include <cmath>

#include "common/units.h"
#include "stream/json_text.h"

namespace clv::stream {

namespace {

int64_t DormantDueMs(const Aggregates& a, const config::LifecycleOptions& options) {
  return a.last_event_ms + static_cast<int64_t>(options.dormant_days * kMsPerDay);
}

}  // namespace

double AtRiskQuietDays(const Aggregates& a, const config::LifecycleOptions& options) {
  const double days = a.purchase_days >= 2 && a.ewma_gap_days > 0
                          ? options.at_risk_gap_factor * a.ewma_gap_days
                          : options.at_risk_default_days;
  return std::max(1.0, days);
}

state::Stage NextStage(state::Stage current, const Aggregates& a, const models::Score& score,
                       int64_t now_ms, bool purchased_now,
                       const config::LifecycleOptions& options) {
  using state::Stage;
  if (a.purchases == 0) return Stage::kPotential;
  const double quiet_days = static_cast<double>(now_ms - a.last_event_ms) / kMsPerDay;
  if (purchased_now) {
    if (current == Stage::kDormant) return Stage::kReturning;
    if (a.purchases == 1) return Stage::kNew;
    // A returning customer becomes active again with the next purchase.
    return Stage::kActive;
  }
  if (quiet_days >= options.dormant_days) return Stage::kDormant;
  const double expected_gap_days = AtRiskQuietDays(a, options);
  const double purchase_quiet_days = static_cast<double>(now_ms - a.last_purchase_ms) / kMsPerDay;
  if (quiet_days >= expected_gap_days ||
      (purchase_quiet_days >= expected_gap_days && score.churn_risk >= options.at_risk_churn)) {
    return current == Stage::kDormant ? Stage::kDormant : Stage::kAtRisk;
  }
  if (current == Stage::kAtRisk || current == Stage::kDormant) {
    // Activity (not a purchase) after a quiet spell: still at risk until they buy.
    return current;
  }
  if (current == Stage::kPotential) return a.purchases == 1 ? Stage::kNew : Stage::kActive;
  return current;
}

const char* Segment(const Aggregates& a, const models::Score& score,
                    const config::LifecycleOptions& options) {
  if (a.purchases == 0) return "prospect";
  if (score.clv >= options.high_value_clv) return "high_value";
  if (score.clv < options.low_value_clv) return "low_value";
  return "mid_value";
}

int64_t NextTimerMs(const Aggregates& a, const config::LifecycleOptions& options) {
  if (a.last_event_ms == 0) return 0;
  const int64_t dormant_due = DormantDueMs(a, options);
  if (a.purchases == 0) return dormant_due;
  const int64_t at_risk_due =
      a.last_event_ms + static_cast<int64_t>(AtRiskQuietDays(a, options) * kMsPerDay);
  return std::min(at_risk_due, dormant_due);
}

int64_t TimerAfterMs(const Aggregates& a, int64_t fired_due_ms,
                     const config::LifecycleOptions& options) {
  const int64_t next = NextTimerMs(a, options);
  if (next > fired_due_ms) return next;
  // The at-risk check has passed; the dormant check is next (or none).
  const int64_t dormant_due = DormantDueMs(a, options);
  return dormant_due > fired_due_ms ? dormant_due : 0;
}

double NormalQuantile(double p) {
  double lo = -10, hi = 10;
  for (int i = 0; i < 200; ++i) {
    double mid = 0.5 * (lo + hi);
    double cdf = 0.5 * std::erfc(-mid / std::sqrt(2.0));
    (cdf < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

AlertRules::AlertRules(const config::LifecycleOptions& options)
    : options_(options), anomaly_z_(NormalQuantile(options.anomaly_quantile)) {}

void AlertRules::Decide(const ScoreChange& change, std::vector<Alert>* alerts) const {
  if (change.previous_stage != change.stage) {
    Alert alert{"stage_change", {}};
    JsonObjectWriter(alert.detail_json)
        .String("from", state::StageName(change.previous_stage))
        .String("to", state::StageName(change.stage))
        .UInt("seq", change.seq)
        .Int("event_ts", change.now_ms)
        .Close();
    alerts->push_back(std::move(alert));
  }
  if (change.previous_churn_risk < options_.churn_alert &&
      change.churn_risk >= options_.churn_alert) {
    Alert alert{"churn_risk", {}};
    JsonObjectWriter(alert.detail_json)
        .Fixed("from", change.previous_churn_risk, 6)
        .Fixed("to", change.churn_risk, 6)
        .Fixed("threshold", options_.churn_alert, 6)
        .UInt("seq", change.seq)
        .Int("event_ts", change.now_ms)
        .Close();
    alerts->push_back(std::move(alert));
  }
  const Aggregates* before = change.before;
  if (change.purchase && before != nullptr && before->purchases >= 2 && change.amount > 0) {
    const double n = before->purchases;
    const double mean = before->log_value_sum / n;
    const double var = std::max(0.0, before->log_value_sq_sum / n - mean * mean);
    const double sd = std::max(std::sqrt(var), 0.25);
    if (std::log(change.amount) > mean + anomaly_z_ * sd) {
      Alert alert{"spend_anomaly", {}};
      JsonObjectWriter(alert.detail_json)
          .Fixed("amount", change.amount, 2)
          .Fixed("typical_amount", std::exp(mean), 2)
          .Fixed("quantile", options_.anomaly_quantile, 6)
          .UInt("seq", change.seq)
          .Int("event_ts", change.now_ms)
          .Close();
      alerts->push_back(std::move(alert));
    }
  }
}

}  // namespace clv::stream
