#include "models/baseline_scorer.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/hash.h"
#include "common/time.h"

namespace clv::models {

namespace {

constexpr double kMsPerWeekDouble = static_cast<double>(kMsPerWeek);

// Seed of the version id hash: not FNV's offset basis (a digit short), kept
// so that the shipped baseline models keep their version ids.
constexpr uint64_t kVersionHashSeed = 1469598103934665603ULL;

void SetFactorName(Factor& factor, const char* name) {
  factor.name.fill('\0');
  std::strncpy(factor.name.data(), name, factor.name.size() - 1);
}

bool ReadNumber(const nlohmann::json& object, const char* key, const std::string& where,
                double* value, std::string* error) {
  auto it = object.find(key);
  if (it == object.end() || !it->is_number()) {
    *error = where + ": missing or non-numeric \"" + key + "\"";
    return false;
  }
  *value = it->get<double>();
  if (!std::isfinite(*value)) {
    *error = where + ": \"" + key + "\" is not finite";
    return false;
  }
  return true;
}

bool ReadObject(const nlohmann::json& parent, const char* key, const std::string& where,
                const nlohmann::json** object, std::string* error) {
  auto it = parent.find(key);
  if (it == parent.end() || !it->is_object()) {
    *error = where + ": missing object \"" + key + "\"";
    return false;
  }
  *object = &*it;
  return true;
}

}  // namespace

std::string BaselineModel::Version() const {
  char buffer[512];
  std::snprintf(buffer, sizeof(buffer),
                "bgnbd %.17g %.17g %.17g %.17g gg %.17g %.17g %.17g simple %.17g %.17g "
                "ref %.17g %.17g %.17g %.17g",
                bgnbd.r, bgnbd.alpha, bgnbd.a, bgnbd.b, gamma_gamma.p, gamma_gamma.q,
                gamma_gamma.gamma, simple.retention, simple.min_tenure_weeks,
                reference.recency_weeks, reference.frequency, reference.monetary,
                reference.tenure_weeks);
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx",
                static_cast<unsigned long long>(Fnv1a(buffer, kVersionHashSeed)));
  return std::string(hex, 12);
}

std::string BaselineFitInfo::Status() const {
  if (bgnbd_status != "ok") return bgnbd_status;
  return gamma_gamma_status;
}

std::string BaselineFitInfo::Reason() const {
  std::string out;
  if (bgnbd_status != "ok") out += "BG/NBD " + bgnbd_status + ": " + bgnbd_reason;
  if (gamma_gamma_status != "ok") {
    if (!out.empty()) out += "; ";
    out += "Gamma-Gamma " + gamma_gamma_status + ": " + gamma_gamma_reason;
  }
  return out;
}

std::vector<RfmSummary> CalibrationSummaries(const Dataset& data, int64_t calibration_end_ms) {
  std::vector<RfmSummary> summaries;
  const int64_t observed_ms = calibration_end_ms - kMsPerDay;
  for (const UserSequence& user : data.users) {
    History history;
    // Spend per purchase day, days in time order (events are time ordered).
    std::vector<std::pair<int64_t, double>> day_spend;
    for (const StepEvent& event : user.events) {
      if (event.ts_ms >= calibration_end_ms) break;
      UpdateHistory(history, event);
      if (event.kind != EventKind::kPurchase && event.kind != EventKind::kRefund) continue;
      const double signed_amount =
          event.kind == EventKind::kPurchase ? event.amount : -event.amount;
      const int64_t day = UtcDay(event.ts_ms);
      if (event.kind == EventKind::kPurchase &&
          (day_spend.empty() || day_spend.back().first != day)) {
        day_spend.emplace_back(day, signed_amount);
      } else if (!day_spend.empty()) {
        day_spend.back().second += signed_amount;  // refunds count against the latest day
      }
    }
    if (history.purchases == 0) continue;
    RfmSummary summary =
        SummaryFromHistory(history, std::max(observed_ms, history.last_purchase_ms));
    if (day_spend.size() > 1) {
      double repeat_spend = 0;
      for (size_t i = 1; i < day_spend.size(); ++i) repeat_spend += day_spend[i].second;
      summary.monetary = std::max(0.0, repeat_spend / static_cast<double>(day_spend.size() - 1));
    } else {
      summary.monetary = 0;
    }
    summaries.push_back(summary);
  }
  return summaries;
}

RfmSummary SummaryFromHistory(const History& history, int64_t now_ms) {
  RfmSummary summary;
  if (history.purchases == 0) {
    // Prospect: acquired at its first event (or now), no repeat purchase.
    const int64_t birth_ms = history.events > 0 ? history.first_event_ms : now_ms;
    summary.T = std::max<double>(0, static_cast<double>(now_ms - birth_ms) / kMsPerWeekDouble);
    return summary;
  }
  const int64_t first = history.first_purchase_ms;
  summary.x = history.purchase_days > 0 ? history.purchase_days - 1.0 : 0.0;
  summary.t_x = static_cast<double>(history.last_purchase_ms - first) / kMsPerWeekDouble;
  summary.T = std::max(summary.t_x, static_cast<double>(now_ms - first) / kMsPerWeekDouble);
  if (summary.x > 0) {
    summary.monetary = std::max(0.0, history.monetary_total / history.purchase_days);
  }
  return summary;
}

bool FitBaseline(const Dataset& data, int64_t calibration_end_ms, BaselineModel* model,
                 std::string* error, const BaselineFitOptions& options) {
  const std::vector<RfmSummary> customers = CalibrationSummaries(data, calibration_end_ms);
  if (customers.size() < 10) {
    *error = "FitBaseline: only " + std::to_string(customers.size()) +
             " customers with a purchase before " + MsToDate(calibration_end_ms) +
             " (need at least 10)";
    return false;
  }
  BgNbdFit bgnbd = FitBgNbd(customers, options.optimizer);
  if (bgnbd.status == "failed" || !std::isfinite(bgnbd.log_likelihood)) {
    *error = "FitBaseline: BG/NBD fit did not reach a finite log-likelihood (" + bgnbd.reason + ")";
    return false;
  }
  GammaGammaFit gamma_gamma;
  if (!data.has_order_values) {
    // No value column: every order is worth 1. p = 1, q = 2, gamma = 1 makes
    // E[M | x, m = 1] = 1 for every x, so clv is E[X] in purchases.
    gamma_gamma.params = {1.0, 2.0, 1.0};
    gamma_gamma.status = "none";
    gamma_gamma.reason = kNoValueColumnReason;
  } else {
    gamma_gamma = FitGammaGamma(customers, options.optimizer);
  }
  if (data.has_order_values && (gamma_gamma.customers < 3 || gamma_gamma.status == "failed" ||
                                !std::isfinite(gamma_gamma.log_likelihood))) {
    char count[32];
    std::snprintf(count, sizeof(count), "%.0f", gamma_gamma.customers);
    *error = std::string("FitBaseline: Gamma-Gamma fit failed (") + count +
             " repeat customers with a positive spend, need at least 3" +
             (gamma_gamma.reason.empty() ? "" : "; " + gamma_gamma.reason) + ")";
    return false;
  }
  BaselineModel result;
  result.bgnbd = bgnbd.params;
  result.gamma_gamma = gamma_gamma.params;
  result.created_by = options.created_by;

  // Population means for top_factors.
  double n = 0, repeaters = 0;
  ReferenceCustomer reference{0, 0, 0, 0};
  for (const RfmSummary& c : customers) {
    n += 1;
    reference.recency_weeks += c.T - c.t_x;
    reference.frequency += c.x;
    reference.tenure_weeks += c.T;
    if (c.x > 0) {
      reference.monetary += c.monetary;
      repeaters += 1;
    }
  }
  reference.recency_weeks /= n;
  reference.frequency /= n;
  reference.tenure_weeks /= n;
  reference.monetary = repeaters > 0 ? reference.monetary / repeaters
                                     : GammaGammaConditionalExpectedValue(result.gamma_gamma, 0, 0);
  result.reference = reference;

  // Simple formula's retention: buyers of the first half who bought again in the second.
  const int64_t start_ms = data.start_ms;
  const int64_t middle_ms = start_ms + (calibration_end_ms - start_ms) / 2;
  double first_half = 0, retained = 0;
  for (const UserSequence& user : data.users) {
    bool early = false, late = false;
    for (const StepEvent& event : user.events) {
      if (event.kind != EventKind::kPurchase || event.ts_ms >= calibration_end_ms) continue;
      (event.ts_ms < middle_ms ? early : late) = true;
    }
    if (early) {
      first_half += 1;
      if (late) retained += 1;
    }
  }
  result.simple.retention = first_half > 0 ? retained / first_half : 0;

  result.fit.bgnbd_status = bgnbd.status;
  result.fit.bgnbd_reason = bgnbd.reason;
  result.fit.bgnbd_penalizer = bgnbd.penalizer;
  result.fit.gamma_gamma_status = gamma_gamma.status;
  result.fit.gamma_gamma_reason = gamma_gamma.reason;
  result.fit.gamma_gamma_penalizer = gamma_gamma.penalizer;
  result.fit.customers = bgnbd.customers;
  result.fit.log_likelihood = bgnbd.log_likelihood;
  result.fit.gamma_gamma_customers = gamma_gamma.customers;
  result.fit.gamma_gamma_log_likelihood = gamma_gamma.log_likelihood;
  result.fit.period_start_ms = start_ms;
  result.fit.period_end_ms = calibration_end_ms;
  *model = result;
  return true;
}

std::string BaselineModelToJson(const BaselineModel& model) {
  nlohmann::ordered_json json;
  json["kind"] = "bgnbd-gg";
  json["version"] = model.Version();
  json["bgnbd"] = {{"r", model.bgnbd.r},
                   {"alpha", model.bgnbd.alpha},
                   {"a", model.bgnbd.a},
                   {"b", model.bgnbd.b}};
  json["gamma_gamma"] = {
      {"p", model.gamma_gamma.p}, {"q", model.gamma_gamma.q}, {"gamma", model.gamma_gamma.gamma}};
  json["time_unit"] = "week";
  json["fit"] = {{"status", model.fit.Status()},
                 {"reason", model.fit.Reason()},
                 {"customers", model.fit.customers},
                 {"log_likelihood", model.fit.log_likelihood},
                 {"gamma_gamma_customers", model.fit.gamma_gamma_customers},
                 {"gamma_gamma_log_likelihood", model.fit.gamma_gamma_log_likelihood},
                 {"period_start", MsToDate(model.fit.period_start_ms)},
                 {"period_end", MsToDate(model.fit.period_end_ms)},
                 {"period_start_ms", model.fit.period_start_ms},
                 {"period_end_ms", model.fit.period_end_ms},
                 {"bgnbd",
                  {{"status", model.fit.bgnbd_status},
                   {"reason", model.fit.bgnbd_reason},
                   {"penalizer", model.fit.bgnbd_penalizer}}},
                 {"gamma_gamma",
                  {{"status", model.fit.gamma_gamma_status},
                   {"reason", model.fit.gamma_gamma_reason},
                   {"penalizer", model.fit.gamma_gamma_penalizer}}}};
  json["reference"] = {{"recency_weeks", model.reference.recency_weeks},
                       {"frequency", model.reference.frequency},
                       {"monetary", model.reference.monetary},
                       {"tenure_weeks", model.reference.tenure_weeks}};
  json["simple"] = {{"retention", model.simple.retention},
                    {"min_tenure_weeks", model.simple.min_tenure_weeks}};
  json["created_by"] = model.created_by;
  return json.dump(2) + "\n";
}

bool BaselineModelFromJson(const std::string& text, const std::string& where, BaselineModel* model,
                           std::string* error) {
  nlohmann::json json = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (json.is_discarded() || !json.is_object()) {
    *error = where + ": not a JSON object";
    return false;
  }
  auto kind = json.find("kind");
  if (kind == json.end() || !kind->is_string() || kind->get<std::string>() != "bgnbd-gg") {
    *error = where + ": \"kind\" must be \"bgnbd-gg\"";
    return false;
  }
  auto unit = json.find("time_unit");
  if (unit != json.end() && (!unit->is_string() || unit->get<std::string>() != "week")) {
    *error = where + ": \"time_unit\" must be \"week\"";
    return false;
  }
  BaselineModel result;
  const nlohmann::json* section = nullptr;
  if (!ReadObject(json, "bgnbd", where, &section, error)) return false;
  const std::string bgnbd_where = where + ": bgnbd";
  if (!ReadNumber(*section, "r", bgnbd_where, &result.bgnbd.r, error) ||
      !ReadNumber(*section, "alpha", bgnbd_where, &result.bgnbd.alpha, error) ||
      !ReadNumber(*section, "a", bgnbd_where, &result.bgnbd.a, error) ||
      !ReadNumber(*section, "b", bgnbd_where, &result.bgnbd.b, error)) {
    return false;
  }
  if (!ReadObject(json, "gamma_gamma", where, &section, error)) return false;
  const std::string gg_where = where + ": gamma_gamma";
  if (!ReadNumber(*section, "p", gg_where, &result.gamma_gamma.p, error) ||
      !ReadNumber(*section, "q", gg_where, &result.gamma_gamma.q, error) ||
      !ReadNumber(*section, "gamma", gg_where, &result.gamma_gamma.gamma, error)) {
    return false;
  }
  for (double value : {result.bgnbd.r, result.bgnbd.alpha, result.bgnbd.a, result.bgnbd.b,
                       result.gamma_gamma.p, result.gamma_gamma.gamma}) {
    if (value <= 0) {
      *error = where + ": every bgnbd and gamma_gamma parameter must be > 0";
      return false;
    }
  }
  if (result.gamma_gamma.q <= 1) {
    *error = where + ": gamma_gamma.q must be > 1 (finite mean order value)";
    return false;
  }
  if (json.contains("reference")) {
    if (!ReadObject(json, "reference", where, &section, error)) return false;
    const std::string ref_where = where + ": reference";
    if (!ReadNumber(*section, "recency_weeks", ref_where, &result.reference.recency_weeks, error) ||
        !ReadNumber(*section, "frequency", ref_where, &result.reference.frequency, error) ||
        !ReadNumber(*section, "monetary", ref_where, &result.reference.monetary, error) ||
        !ReadNumber(*section, "tenure_weeks", ref_where, &result.reference.tenure_weeks, error)) {
      return false;
    }
  }
  if (json.contains("simple")) {
    if (!ReadObject(json, "simple", where, &section, error)) return false;
    const std::string simple_where = where + ": simple";
    if (!ReadNumber(*section, "retention", simple_where, &result.simple.retention, error) ||
        !ReadNumber(*section, "min_tenure_weeks", simple_where, &result.simple.min_tenure_weeks,
                    error)) {
      return false;
    }
  }
  if (json.contains("fit") && json["fit"].is_object()) {
    const nlohmann::json& fit = json["fit"];
    auto number = [&](const char* key, double fallback) {
      auto it = fit.find(key);
      return it != fit.end() && it->is_number() ? it->get<double>() : fallback;
    };
    result.fit.customers = number("customers", 0);
    result.fit.log_likelihood = number("log_likelihood", 0);
    result.fit.gamma_gamma_customers = number("gamma_gamma_customers", 0);
    result.fit.gamma_gamma_log_likelihood = number("gamma_gamma_log_likelihood", 0);
    result.fit.period_start_ms = static_cast<int64_t>(number("period_start_ms", 0));
    result.fit.period_end_ms = static_cast<int64_t>(number("period_end_ms", 0));
    auto sub_fit = [&](const char* key, std::string* status, std::string* reason,
                       double* penalizer) {
      auto it = fit.find(key);
      if (it == fit.end() || !it->is_object()) return;
      if (it->contains("status") && (*it)["status"].is_string()) {
        *status = (*it)["status"].get<std::string>();
      }
      if (it->contains("reason") && (*it)["reason"].is_string()) {
        *reason = (*it)["reason"].get<std::string>();
      }
      if (it->contains("penalizer") && (*it)["penalizer"].is_number()) {
        *penalizer = (*it)["penalizer"].get<double>();
      }
    };
    sub_fit("bgnbd", &result.fit.bgnbd_status, &result.fit.bgnbd_reason,
            &result.fit.bgnbd_penalizer);
    sub_fit("gamma_gamma", &result.fit.gamma_gamma_status, &result.fit.gamma_gamma_reason,
            &result.fit.gamma_gamma_penalizer);
  }
  if (json.contains("created_by") && json["created_by"].is_string()) {
    result.created_by = json["created_by"].get<std::string>();
  }
  auto version = json.find("version");
  if (version != json.end()) {
    if (!version->is_string() || version->get<std::string>() != result.Version()) {
      *error = where + ": \"version\" " + version->dump() +
               " does not match the parameters (their hash is \"" + result.Version() +
               "\"); the file was edited by hand or damaged";
      return false;
    }
  }
  *model = result;
  return true;
}

bool SaveBaselineModel(const BaselineModel& model, const std::string& path, std::string* error) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    *error = path + ": cannot open for writing";
    return false;
  }
  out << BaselineModelToJson(model);
  out.close();
  if (!out) {
    *error = path + ": write failed";
    return false;
  }
  return true;
}

bool LoadBaselineModel(const std::string& path, BaselineModel* model, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = path + ": cannot open baseline model file";
    return false;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  return BaselineModelFromJson(buffer.str(), path, model, error);
}

BaselineScorer::BaselineScorer(BaselineModel model, double horizon_days)
    : model_(std::move(model)), horizon_days_(horizon_days) {}

std::string BaselineScorer::version() const { return "bgnbd-gg/" + model_.Version(); }

double BaselineScorer::ClvOf(const RfmSummary& customer) const {
  return ExpectedClv(model_.bgnbd, model_.gamma_gamma, customer, horizon_days_ / 7.0);
}

Score BaselineScorer::ScoreAt(const History& history, int64_t now_ms, bool with_factors) const {
  const RfmSummary customer = SummaryFromHistory(history, now_ms);
  const double horizon_weeks = horizon_days_ / 7.0;
  const BgNbdParams& p = model_.bgnbd;
  Score score;
  // The series behind E[X | alive] depends on x and T only: computed once
  // here and reused for the recency and monetary factors below (the same
  // expressions as ClvOf, so the same bits).
  const double if_alive =
      BgNbdConditionalExpectedPurchasesIfAlive(p, customer.x, customer.T, horizon_weeks);
  auto expected_purchases_at = [&](double t_x) {
    if (!(horizon_weeks > 0)) return 0.0;
    return BgNbdProbabilityAlive(p, std::max(0.0, customer.x), t_x, std::max(0.0, customer.T)) *
           if_alive;
  };
  const double expected_purchases = expected_purchases_at(customer.t_x);
  score.expected_purchases = expected_purchases;
  score.expected_order_value =
      GammaGammaConditionalExpectedValue(model_.gamma_gamma, customer.x, customer.monetary);
  score.clv = score.expected_purchases * score.expected_order_value;
  score.p_purchase =
      BgNbdProbabilityAnyPurchase(p, customer.x, customer.t_x, customer.T, horizon_weeks);
  score.churn_risk = 1 - BgNbdProbabilityAlive(p, customer.x, customer.t_x, customer.T);
  auto finite_or = [](double value, double fallback) {
    return std::isfinite(value) ? value : fallback;
  };
  score.expected_purchases = finite_or(score.expected_purchases, 0);
  score.expected_order_value = finite_or(score.expected_order_value, 0);
  score.clv = finite_or(score.clv, 0);
  score.p_purchase = std::clamp(finite_or(score.p_purchase, 0), 0.0, 1.0);
  score.churn_risk = std::clamp(finite_or(score.churn_risk, 0), 0.0, 1.0);
  if (!with_factors) return score;

  // top_factors: clv minus clv with one input set to the population mean.
  const ReferenceCustomer& ref = model_.reference;
  const double recency = customer.T - customer.t_x;
  struct Candidate {
    const char* name;
    double contribution;
  };
  std::array<Candidate, 4> candidates{};
  {
    // Recency at the mean, tenure kept: ClvOf(c) with c.t_x changed.
    const double t_x = std::clamp(customer.T - ref.recency_weeks, 0.0, customer.T);
    candidates[0] = {"recency",
                     score.clv - expected_purchases_at(t_x) *
                                     GammaGammaConditionalExpectedValue(
                                         model_.gamma_gamma, customer.x, customer.monetary)};
  }
  {
    RfmSummary c = customer;  // frequency at the mean
    c.x = ref.frequency;
    if (customer.x <= 0) c.monetary = ref.monetary;
    candidates[1] = {"frequency", score.clv - ClvOf(c)};
  }
  {
    // Monetary at the mean: ClvOf(c) with c.monetary changed.
    candidates[2] = {"monetary", score.clv - expected_purchases *
                                                 GammaGammaConditionalExpectedValue(
                                                     model_.gamma_gamma, customer.x, ref.monetary)};
  }
  {
    RfmSummary c = customer;  // tenure at the mean, recency kept
    c.T = std::max(ref.tenure_weeks, 0.0);
    c.t_x = std::clamp(c.T - recency, 0.0, c.T);
    candidates[3] = {"tenure", score.clv - ClvOf(c)};
  }
  for (Candidate& candidate : candidates) {
    if (!std::isfinite(candidate.contribution)) candidate.contribution = 0;
  }
  std::stable_sort(candidates.begin(), candidates.end(),
                   [](const Candidate& l, const Candidate& r) {
                     return std::abs(l.contribution) > std::abs(r.contribution);
                   });
  for (size_t i = 0; i < score.top_factors.size(); ++i) {
    SetFactorName(score.top_factors[i], candidates[i].name);
    constexpr double kFloatMax = std::numeric_limits<float>::max();
    score.top_factors[i].contribution =
        static_cast<float>(std::clamp(candidates[i].contribution, -kFloatMax, kFloatMax));
  }
  return score;
}

double BaselineScorer::SimpleClvAt(const History& history, int64_t now_ms) const {
  if (history.purchases == 0 || history.purchase_days == 0) return 0;
  const double tenure_weeks =
      std::max(0.0, static_cast<double>(now_ms - history.first_purchase_ms) / kMsPerWeekDouble);
  const double mean_day_value = std::max(0.0, history.monetary_total / history.purchase_days);
  return SimpleClv(model_.simple, history.purchase_days, mean_day_value, tenure_weeks,
                   horizon_days_ / 7.0);
}

void BaselineScorer::Step(std::span<const StepInput> inputs, std::span<Score> outputs) {
  for (size_t i = 0; i < inputs.size() && i < outputs.size(); ++i) {
    outputs[i] = ScoreAt(*inputs[i].after, inputs[i].event.ts_ms, inputs[i].want_factors);
  }
}

std::unique_ptr<Scorer> BaselineScorer::Clone() const {
  return std::make_unique<BaselineScorer>(*this);
}

void BaselineScorer::Rescore(std::span<const RescoreInput> inputs, std::span<Score> outputs) {
  for (size_t i = 0; i < inputs.size() && i < outputs.size(); ++i) {
    outputs[i] = ScoreAt(*inputs[i].history, inputs[i].now_ms, inputs[i].want_factors);
  }
}

}  // namespace clv::models
