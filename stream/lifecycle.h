// Lifecycle: the rules that turn a user's scores into stages, timers and
// alerts (DESIGN.md "Lifecycle stages"). Pure functions of the aggregates,
// the score and config::LifecycleOptions, so a replay decides the same.
//
//   * NextStage(): the stage after a score; AtRiskQuietDays() the one quiet
//     spell rule behind both stages and timers; Segment() the value segment.
//   * NextTimerMs() / TimerAfterMs(): when stream time re-scores a quiet user
//     (depends only on the aggregates, so replays fire the same timers).
//   * AlertRules::Decide(): the alerts one score raises, in the order they are
//     sent (stage_change, churn_risk, spend_anomaly), each with its detail JSON.
//
// Example:
//   AlertRules rules(config.lifecycle);
//   std::vector<Alert> alerts;
//   rules.Decide(change, &alerts);  // change: what moved with this score
//
// Thread-safety: free functions are pure; an AlertRules is immutable.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/aggregates.h"
#include "config/config.h"
#include "models/scorer.h"
#include "state/user_state.h"

namespace clv::stream {

// Lifecycle stage after a score: `aggregates` are those as of the score,
// `purchased_now` whether the score is for a purchase event.
state::Stage NextStage(state::Stage current, const Aggregates& aggregates,
                       const models::Score& score, int64_t now_ms, bool purchased_now,
                       const config::LifecycleOptions& options);

// Quiet days after which a buyer counts as at risk (timers and NextStage): a
// multiple of the user's own rhythm between purchase days, or the default
// until there is a rhythm; at least 1.
double AtRiskQuietDays(const Aggregates& aggregates, const config::LifecycleOptions& options);

// Value segment of a score: "prospect" (never bought), "high_value",
// "mid_value", "low_value" (clv against the lifecycle options' thresholds).
const char* Segment(const Aggregates& aggregates, const models::Score& score,
                    const config::LifecycleOptions& options);

// Stream time of the user's next timer after an event: the at-risk check
// (buyers) or the dormant check, whichever is first; 0 = none (no event yet).
int64_t NextTimerMs(const Aggregates& aggregates, const config::LifecycleOptions& options);

// The timer after one that fired at `fired_due_ms` without an event since:
// the next candidate after it (the dormant check after the at-risk one), or
// 0 when none is left.
int64_t TimerAfterMs(const Aggregates& aggregates, int64_t fired_due_ms,
                     const config::LifecycleOptions& options);

// Standard normal quantile (bisection on erfc: exact enough, deterministic).
double NormalQuantile(double p);

// What changed with one score, as the alert rules see it.
struct ScoreChange {
  uint64_t seq = 0;
  int64_t now_ms = 0;  // event time, or the timer's due time
  state::Stage previous_stage = state::Stage::kPotential;
  state::Stage stage = state::Stage::kPotential;
  double previous_churn_risk = 0;
  double churn_risk = 0;
  bool purchase = false;  // the score is for a purchase event ...
  double amount = 0;      // ... of this amount
  // Aggregates before the event (for the user's usual order value).
  const Aggregates* before = nullptr;
};

// One alert: its kind (stage_change, churn_risk, spend_anomaly) and its
// detail as JSON text, e.g. {"from":"active","to":"at_risk","seq":7,"event_ts":...}.
struct Alert {
  const char* kind = "";
  std::string detail_json;
};

class AlertRules {
 public:
  explicit AlertRules(const config::LifecycleOptions& options);
  // Appends the alerts `change` raises to *alerts:
  //  stage_change  the stage moved: {"from","to","seq","event_ts"};
  //  churn_risk    churn risk crossed lifecycle.churn_alert upwards:
  //                {"from","to","threshold","seq","event_ts"};
  //  spend_anomaly a purchase (of a user with >= 2 before) whose log amount is
  //                above the lifecycle.anomaly_quantile of the user's log order
  //                values (mean + z * sd, sd at least 0.25):
  //                {"amount","typical_amount" (geometric mean),"quantile","seq","event_ts"}.
  void Decide(const ScoreChange& change, std::vector<Alert>* alerts) const;

 private:
  config::LifecycleOptions options_;
  double anomaly_z_ = 0;  // standard-normal quantile of options_.anomaly_quantile
};

}  // namespace clv::stream
