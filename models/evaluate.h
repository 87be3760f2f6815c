// `clv eval`: score every user at a cutoff from the events before it and
// compare with what each really spent in [cutoff, cutoff + horizon).
// On data without a value column (mapping.amount_field "") the same
// comparison is on purchases: every order is worth 1, the actual is the
// number of purchases in the window, each model's prediction its expected
// number of purchases (BG/NBD's E[X], Gamma-Gamma not fitted); the text and
// JSON reports say "purchases" and there are no spend metrics.
//
// Population: users of the dataset with at least one event before the
// cutoff, in dataset order. Each candidate predicts one number per user:
//   * a Scorer: each user's events before the cutoff are replayed through
//     UpdateHistory and Step() (users stacked into batches, one event per
//     user per call, in event order), then the user is Rescore()d at the
//     cutoff -- exactly what the service's stream-time timer does;
//   * a formula of the user's History at the cutoff (the simple formula);
//   * given values per dataset user (e.g. the synthetic generator's oracle).
// Metrics and conventions: metrics.h. Output: text table, JSON, SVG chart.
//
// Thread-safety: plain functions; a Scorer is used from the calling thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "models/dataset.h"
#include "models/metrics.h"
#include "models/scorer.h"

namespace clv::models {

struct EvalCandidate {
  std::string name;
  // Exactly one of the three is used: scorer, formula, given.
  Scorer* scorer = nullptr;  // borrowed
  std::function<double(const History& history, int64_t now_ms)> formula;
  std::vector<double> given;  // one per data.users entry
};

struct EvalModelResult {
  std::string name;
  Metrics metrics;
  std::vector<GainPoint> gain;
  std::vector<double> predicted;  // per population user
  // Users whose recurrent model state held a NaN or inf after a step and was
  // reset to the scorer's initial state, as the service does (see
  // ScoreAtCutoff): the predictions are what the service would publish.
  size_t state_resets = 0;
};

struct EvalReport {
  // False for data without a value column (Dataset::has_order_values): every
  // order is worth 1, so the actual and every prediction are numbers of
  // purchases, and the report says so ("target": "purchases").
  bool order_values = true;
  int64_t cutoff_ms = 0;
  double horizon_days = 0;
  std::string title;
  std::vector<size_t> population;  // indices into data.users
  std::vector<double> actual;      // per population user
  std::vector<EvalModelResult> models;
  std::vector<GainPoint> perfect_gain;
};

// Indices of users with at least one event before cutoff_ms.
std::vector<size_t> EvalPopulation(const Dataset& data, int64_t cutoff_ms);

// Scores the population with `scorer` at cutoff_ms (see above). A recurrent
// state left with a NaN or inf by a step is reset to the scorer's initial
// state before the user's next step, exactly as the stream processor does
// (stream/processor.h "Non-finite scores"), and counted in *state_resets
// (may be null).
std::vector<double> ScoreAtCutoff(Scorer& scorer, const Dataset& data,
                                  const std::vector<size_t>& population, int64_t cutoff_ms,
                                  int batch_users = 8192, size_t* state_resets = nullptr);

// `actual_by_user` (one per data.users entry), when given, replaces the spend
// found in the events after the cutoff (e.g. the synthetic truth's realized
// spend when the event log ends at the cutoff).
EvalReport Evaluate(const Dataset& data, int64_t cutoff_ms, double horizon_days,
                    std::vector<EvalCandidate> candidates, const std::string& title = "",
                    const std::vector<double>* actual_by_user = nullptr);

// Readable table, models side by side, then decile calibration.
std::string EvalReportText(const EvalReport& report);
// JSON: cutoff, horizon, users, per model: metrics + deciles + gain curve.
std::string EvalReportJson(const EvalReport& report);
// CSV, one row per population user: user_id, actual, each model's prediction
// (header: the model names).
std::string EvalScoresCsv(const Dataset& data, const EvalReport& report);

// Everything `clv eval` does, in one call. The LSTM is loaded from
// lstm_model_path ("" = the shipped default); the BG/NBD + Gamma-Gamma
// baseline is fitted on the events before the cutoff (or loaded from
// baseline_model_path); the simple formula comes with it.
struct EvalRunOptions {
  int64_t cutoff_ms = 0;
  double horizon_days = 365;
  std::string lstm_model_path = "";
  // "" = fit BG/NBD + Gamma-Gamma on the events before the cutoff.
  std::string baseline_model_path = "";
  std::string device = "cpu";
  // user_id -> true expected spend in the horizon (synthetic data); shown as
  // "oracle" when not empty.
  std::map<std::string, double> oracle;
  // user_id -> expected spend given only the events, by Bayes' rule under the
  // generator's own parameters (synthetic truth's posterior_expected_spend):
  // the best a model can approach; shown as "Bayes from the events" when not
  // empty.
  std::map<std::string, double> events_posterior;
  // user_id -> actual spend in the horizon; when not empty it replaces the
  // spend found in the events after the cutoff (synthetic truth's
  // realized_spend, for an event log that ends at the cutoff).
  std::map<std::string, double> actual;
  // Outputs ("" = skip).
  std::string json_path = "";
  std::string svg_path = "";
  // Per-user CSV: user_id, actual, then one column per model.
  std::string scores_path = "";
  std::string title = "";
};
bool RunEvaluation(const Dataset& data, const EvalRunOptions& options, EvalReport* report,
                   std::string* error);

}  // namespace clv::models
