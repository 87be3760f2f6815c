// BG/NBD + Gamma-Gamma prior inputs of the LSTM heads (see lstm.h).
#include <algorithm>
#include <cmath>

#include "models/baseline_scorer.h"
#include "models/lstm.h"

namespace clv::models {

const char* PriorName(int index) {
  static constexpr const char* kNames[kPriorCount] = {
      "bg_p_alive",         "bg_logit_alive",      "bg_log_purchases", "bg_log_purchases_alive",
      "gg_log_order_value", "bg_log_clv",          "bg_logit_any",     "log_horizon_days",
      "browse_gone_llr",    "browse_gone_llr_slow"};
  return index >= 0 && index < kPriorCount ? kNames[index] : "?";
}

void RawPriorInputs(const LstmPrior& prior, const History& history, int64_t now_ms,
                    double horizon_days, float* raw, float* offsets) {
  const RfmSummary c = SummaryFromHistory(history, std::max(now_ms, history.last_event_ms));
  const double weeks = horizon_days / 7.0;
  const BgNbdParams& p = prior.bgnbd;
  double alive = BgNbdProbabilityAlive(p, c.x, c.t_x, c.T);
  double purchases = BgNbdConditionalExpectedPurchases(p, c.x, c.t_x, c.T, weeks);
  double order_value = GammaGammaConditionalExpectedValue(prior.gamma_gamma, c.x, c.monetary);
  double any = BgNbdProbabilityAnyPurchase(p, c.x, c.t_x, c.T, weeks);
  // Guard against NaN/inf from degenerate parameters: the heads must stay finite.
  auto finite_or = [](double v, double fallback) { return std::isfinite(v) ? v : fallback; };
  alive = std::clamp(finite_or(alive, 1.0), 0.0, 1.0);
  purchases = std::max(0.0, finite_or(purchases, 0.0));
  order_value = std::max(1e-3, finite_or(order_value, 1.0));
  any = std::clamp(finite_or(any, 0.5), 1e-4, 1.0 - 1e-4);
  const double spend = purchases * order_value;
  const double alive_clamped = std::clamp(alive, 1e-4, 1.0 - 1e-4);
  raw[0] = static_cast<float>(alive);
  raw[1] = static_cast<float>(std::log(alive_clamped / (1.0 - alive_clamped)));
  raw[2] = static_cast<float>(std::log1p(purchases));
  // Expected purchases of a user known to be alive (BG/NBD's E[X] / P(alive)):
  // lets the heads swap BG/NBD's P(alive) for what browsing says.
  raw[3] = static_cast<float>(std::log1p(purchases / std::max(alive, 1e-4)));
  raw[4] = static_cast<float>(std::log(order_value / prior.money_unit));
  raw[5] = static_cast<float>(std::log1p(spend / prior.money_unit));
  raw[6] = static_cast<float>(std::log(any / (1.0 - any)));
  raw[7] = static_cast<float>(std::log(std::max(1.0, horizon_days)));
  BrowseGoneLogLikelihoodRatios(prior, history, now_ms, &raw[8]);
  if (!(prior.browse_theta > 0) || history.purchases == 0) {
    offsets[0] = raw[6];
    offsets[1] = static_cast<float>(std::log(std::max(spend, 1e-4) / any));
    return;
  }
  // With browsing: the offsets start from P(alive | purchases, browsing).
  // Purchase odds of "dropped out after the last purchase" as in MBG/NBD
  // (a dropout may follow any purchase, the first too), times the browsing
  // likelihood ratio at the fitted fade.
  const double log_odds_gone = BrowsePurchaseLogOddsGone(p, c) + raw[8];
  const double alive_browsing = 1.0 / (1.0 + std::exp(std::clamp(log_odds_gone, -50.0, 50.0)));
  const double any_if_alive = std::min(1.0, any / std::max(alive, 1e-4));
  const double purchases_if_alive = purchases / std::max(alive, 1e-4);
  const double any_browsing = std::clamp(alive_browsing * any_if_alive, 1e-4, 1.0 - 1e-4);
  const double spend_browsing = alive_browsing * purchases_if_alive * order_value;
  offsets[0] = static_cast<float>(std::log(any_browsing / (1.0 - any_browsing)));
  offsets[1] = static_cast<float>(std::log(std::max(spend_browsing, 1e-4) / any_browsing));
}

double BrowsePurchaseLogOddsGone(const BgNbdParams& p, const RfmSummary& c) {
  return std::log(p.a / (p.b + c.x)) +
         (p.r + c.x) * (std::log(p.alpha + c.T) - std::log(p.alpha + c.t_x));
}

BrowseSessions BrowseSessionsOf(const LstmPrior& prior, const History& history, int64_t now_ms) {
  const double day = static_cast<double>(kMsPerDay);
  const int64_t now = std::max(now_ms, history.last_event_ms);
  BrowseSessions s;
  s.tenure = static_cast<double>(now - history.first_event_ms) / day;
  s.to_purchase =
      std::max(0.0, static_cast<double>(history.last_purchase_ms - history.first_event_ms) / day);
  s.base_sessions = std::max(
      1.0, static_cast<double>(history.sessions) -
               prior.browse_sessions_per_purchase * static_cast<double>(history.purchases));
  s.after_sum = history.session_days_after_purchase;
  return s;
}

BrowseLogLikelihood BrowseLogLikelihoods(double theta, double fade, const BrowseSessions& s) {
  // Expected sessions per unit rate: all of the tenure when active; up to the
  // last purchase, then the fading tail, when gone.
  const double since_purchase = std::max(0.0, s.tenure - s.to_purchase);
  const double exposure_gone = s.to_purchase + fade * -std::expm1(-since_purchase / fade);
  return {-(kBrowseKappa + s.base_sessions) * std::log(theta + s.tenure),
          -s.after_sum / fade - (kBrowseKappa + s.base_sessions) * std::log(theta + exposure_gone)};
}

void BrowseGoneLogLikelihoodRatios(const LstmPrior& prior, const History& history, int64_t now_ms,
                                   float* out) {
  out[0] = out[1] = 0.0f;
  if (!(prior.browse_theta > 0) || history.purchases == 0 || history.first_event_ms == 0) return;
  const BrowseSessions sessions = BrowseSessionsOf(prior, history, now_ms);
  for (int i = 0; i < 2; ++i) {
    const double fade = prior.browse_fade_days * (i == 0 ? 1.0 : kBrowseSlowFade);
    const BrowseLogLikelihood l = BrowseLogLikelihoods(prior.browse_theta, fade, sessions);
    const double llr = l.gone - l.active;
    out[i] = static_cast<float>(std::clamp(std::isfinite(llr) ? llr : 0.0, -50.0, 50.0));
  }
}

double TypicalOrderValue(const GammaGammaParams& gg) {
  const double value = gg.p * gg.gamma / gg.q;
  return std::isfinite(value) && value > 0 ? value : 1.0;
}

void UseBaselinePrior(LstmModel* model, const BgNbdParams& bgnbd,
                      const GammaGammaParams& gamma_gamma) {
  if (!model->prior.from_baseline) return;
  model->prior.bgnbd = bgnbd;
  model->prior.gamma_gamma = gamma_gamma;
  model->prior.money_unit = TypicalOrderValue(gamma_gamma);
  model->version = LstmModelVersion(*model);
}

void AttrIndicators(const std::vector<AttrVocabEntry>& vocab, const History& history, float* out) {
  for (size_t i = 0; i < vocab.size(); ++i) {
    out[i] = HasAttrPair(history.attrs, vocab[i].pair_hash) ? 1.0f : 0.0f;
  }
}

void StandardizePrior(const LstmPrior& prior, float* values) {
  for (int i = 0; i < kPriorCount; ++i) {
    float scale = prior.scale[i] != 0.0f ? prior.scale[i] : 1.0f;
    float v = (values[i] - prior.mean[i]) / scale;
    values[i] = std::clamp(v, -FeatureNorm::kClip, FeatureNorm::kClip);
  }
}

}  // namespace clv::models
