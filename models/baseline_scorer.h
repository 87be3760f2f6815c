// The baseline scorer: BG/NBD purchase counts x Gamma-Gamma order value,
// computed in O(1) per user from the running aggregates (History). It is what
// most teams run today; the LSTM must beat it on held-out data.
//
// Per user at time `now` (the event's time on Step, the timer's on Rescore):
//   x   = purchase_days - 1 (repeat purchase days), t_x = last - first
//         purchase, T = now - first purchase, in weeks;
//   m_x = net spend per purchase day (monetary_total / purchase_days): History
//         does not keep the first order's value apart, so online scoring uses
//         the mean over all purchase days where the fit used repeat days only;
//   clv = E[X(T, T+h) | x, t_x, T] * E[M | x, m_x], h = horizon_days / 7;
//   p_purchase = P(X(T, T+h) >= 1 | ...), churn_risk = 1 - P(alive | ...).
// Users without a purchase are scored as a customer acquired at their first
// event who has not bought again (x = 0): an optimistic prior for prospects.
// top_factors: for recency (T - t_x), frequency (x), monetary (m_x) and tenure
// (T), the change in clv when that input is replaced by the population mean
// stored in the model (clv - clv_with_mean); the three largest in magnitude.
//
// Model file (JSON): {"kind":"bgnbd-gg","version":"<hash of params>",
//   "bgnbd":{r,alpha,a,b},"gamma_gamma":{p,q,gamma},"time_unit":"week",
//   "fit":{status, reason, customers, log_likelihood, gamma_gamma_customers,
//          gamma_gamma_log_likelihood, period_start, period_end,
//          bgnbd:{status, reason, penalizer}, gamma_gamma:{status, reason, penalizer}},
//   fit.status: "ok" when both fits are interior maximum likelihood,
//   "regularized" when either ran to a boundary and was refitted with the
//   penalty (FitOptions::penalizer); reason says which and why.
//   "reference":{recency_weeks, frequency, monetary, tenure_weeks},
//   "simple":{retention, min_tenure_weeks}, "created_by":"..."}
//
// Every score field is finite for any History: a non-finite intermediate
// (only reachable with hand-made parameters) falls back to 0 for the amounts,
// P(alive) = 1 and P(purchase) = 0.
//
// Thread-safety: BaselineModel is a plain value; a BaselineScorer is used from
// one thread at a time (Scorer contract) but holds no mutable state.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/bgnbd.h"
#include "models/dataset.h"
#include "models/scorer.h"

namespace clv::models {

// Population means the top_factors compare against.
struct ReferenceCustomer {
  double recency_weeks = 10;  // T - t_x
  double frequency = 1;       // x
  double monetary = 35;       // m_x (customers with x > 0)
  double tenure_weeks = 30;   // T
};

struct BaselineFitInfo {
  std::string bgnbd_status = "ok";  // BgNbdFit::status
  std::string bgnbd_reason;
  double bgnbd_penalizer = 0;
  std::string gamma_gamma_status = "ok";
  std::string gamma_gamma_reason;
  double gamma_gamma_penalizer = 0;
  // "ok" if both are, else the first that is not.
  std::string Status() const;
  // The reasons of the fits that are not "ok", "BG/NBD: ...; Gamma-Gamma: ...".
  std::string Reason() const;
  double customers = 0;
  double log_likelihood = 0;
  double gamma_gamma_customers = 0;
  double gamma_gamma_log_likelihood = 0;
  int64_t period_start_ms = 0;  // calibration period [start, end)
  int64_t period_end_ms = 0;
};

struct BaselineModel {
  BgNbdParams bgnbd;
  GammaGammaParams gamma_gamma;
  SimpleFormulaParams simple;
  ReferenceCustomer reference;
  BaselineFitInfo fit;
  std::string created_by = "clvstream";
  // 12 hex digits of a hash of every parameter above (fit info excluded).
  std::string Version() const;
};

// Summaries of the users of `data` with a purchase before calibration_end_ms,
// in the order of data.users (users without purchases are left out):
// x = purchase days - 1, t_x and T in weeks with T measured at
// calibration_end_ms - 1 day (the start of the last calibration day, so a
// 39-week period ending 1997-09-30 inclusive gives T = 38.86 weeks for a
// customer who first bought on 1997-01-01), monetary = mean spend of the
// repeat purchase days (the first day left out, Fader & Hardie 2013).
std::vector<RfmSummary> CalibrationSummaries(const Dataset& data, int64_t calibration_end_ms);

struct BaselineFitOptions {
  FitOptions optimizer;
  std::string created_by = "clvstream";
};

// Fits BG/NBD and Gamma-Gamma on the events before calibration_end_ms, plus
// the reference customer and the simple formula's retention. False + *error
// when there are too few customers or the fit fails. Data without order
// values (Dataset::has_order_values false, every order worth 1): Gamma-Gamma
// is not fitted (fit.gamma_gamma status "none", kNoValueColumnReason) but set
// to p = 1, q = 2, gamma = 1, whose expected order value is exactly 1, so the
// model's clv is the expected number of purchases.
inline constexpr const char* kNoValueColumnReason =
    "not fitted: the data has no value column (mapping.amount_field is empty); every order "
    "counts as 1, so clv is the expected number of purchases";
bool FitBaseline(const Dataset& data, int64_t calibration_end_ms, BaselineModel* model,
                 std::string* error, const BaselineFitOptions& options = {});

std::string BaselineModelToJson(const BaselineModel& model);
// Parses a model file's text; `where` names it in errors.
bool BaselineModelFromJson(const std::string& text, const std::string& where, BaselineModel* model,
                           std::string* error);
bool SaveBaselineModel(const BaselineModel& model, const std::string& path, std::string* error);
bool LoadBaselineModel(const std::string& path, BaselineModel* model, std::string* error);

// The RFM summary BaselineScorer uses for `history` seen at now_ms.
RfmSummary SummaryFromHistory(const History& history, int64_t now_ms);

// The shipped baseline model file (models/default/baseline.json in the source
// tree, else ../share/clvstream/ beside the installed executable).
std::string DefaultBaselineModelPath();

class BaselineScorer : public Scorer {
 public:
  BaselineScorer(BaselineModel model, double horizon_days);

  std::string version() const override;  // "bgnbd-gg/<hash>"
  int state_size() const override { return 0; }
  void Step(std::span<const StepInput> inputs, std::span<Score> outputs) override;
  void Rescore(std::span<const RescoreInput> inputs, std::span<Score> outputs) override;
  std::unique_ptr<Scorer> Clone() const override;

  // The score of `history` at now_ms (what Step and Rescore return); with
  // with_factors false, top_factors are left empty and every other field has
  // the same bits (the factors cost about three more clv evaluations).
  Score ScoreAt(const History& history, int64_t now_ms, bool with_factors = true) const;
  // The simple-formula CLV of `history` at now_ms over the same horizon.
  double SimpleClvAt(const History& history, int64_t now_ms) const;

  const BaselineModel& model() const { return model_; }
  double horizon_days() const { return horizon_days_; }

 private:
  double ClvOf(const RfmSummary& customer) const;

  BaselineModel model_;
  double horizon_days_ = 365;
};

}  // namespace clv::models
