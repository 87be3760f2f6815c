// BG/NBD purchase-count model with the Gamma-Gamma spend model: the classic
// probabilistic CLV baseline, fitted by maximum likelihood.
//
//  * BG/NBD: Fader, Hardie & Lee (2005), "'Counting your customers' the easy
//    way: an alternative to the Pareto/NBD model", Marketing Science 24(2).
//    Per customer: x = repeat purchases (we count repeat purchase DAYS, as the
//    paper does for CDNOW), t_x = time of the last purchase and T = time of
//    observation, both measured from the first purchase. Time unit: weeks.
//  * Gamma-Gamma: Fader & Hardie (2013), "The Gamma-Gamma Model of Monetary
//    Value". Per customer with x > 0: m_x = mean value of the x repeat
//    transactions (the first purchase is left out).
//  * Simple formula (the seed papers' back-of-envelope CLV), see SimpleClv().
//
// All functions are pure, deterministic and O(1) per customer except the
// fitters and the hypergeometric series (a few dozen terms typically, a few
// hundred when the horizon is long against a short history).
//
// Example:
//   auto fit = models::FitBgNbd(customers);          // customers: RfmSummary
//   double n = models::BgNbdConditionalExpectedPurchases(fit.params, x, t_x, T, 52);
//
// Thread-safety: pure functions and plain values.
#pragma once

#include <cstdint>
#include <span>
#include <string>

namespace clv::models {

struct BgNbdParams {
  double r = 0.243;      // shape of the gamma prior on the purchase rate
  double alpha = 4.414;  // scale (weeks) of the gamma prior on the purchase rate
  double a = 0.793;      // beta prior on the drop-out probability ...
  double b = 2.426;      // ... after each purchase
};

struct GammaGammaParams {
  double p = 6.25;       // shape of the transaction value distribution
  double q = 3.74;       // shape of the gamma prior on its scale
  double gamma = 15.44;  // rate of the gamma prior on its scale
};

// One customer's purchase summary (time unit: weeks).
struct RfmSummary {
  double x = 0;         // repeat purchases (purchase days - 1)
  double t_x = 0;       // first purchase -> last purchase
  double T = 0;         // first purchase -> observation time (>= t_x)
  double monetary = 0;  // mean value of the repeat purchases (0 when x = 0)
  double weight = 1;    // number of customers with exactly this summary
};

struct FitOptions {
  // Nelder-Mead on log-parameters: iterations per start, and restarts from
  // the best point so far (ends early when a restart no longer improves).
  int max_iterations = 4000;
  int restarts = 6;
  // Budget of objective evaluations per start (restarts included): a
  // likelihood that keeps creeping along a flat ridge toward a boundary
  // stops here (and the boundary test below catches it).
  int max_evaluations = 6000;
  // Stop a start when the simplex's log-likelihood spread is below this.
  double tolerance = 1e-10;
  // Regularized maximum likelihood (like lifetimes' penalizer_coef): when the
  // plain maximum-likelihood fit runs to a boundary (a scale-free parameter
  // beyond 1e-4..1e4, or for BG/NBD a mean drop-out probability a/(a+b)
  // below 1e-5: the NBD limit), the fit is redone minimizing
  //   -(log-likelihood) / customers + penalizer * sum(log(theta)^2)
  // over the scale-free log-parameters (BG/NBD: r, alpha / mean T, a, b;
  // Gamma-Gamma: p, q - 1, gamma / median m_x). 0 keeps the boundary fit
  // (status "boundary"). Fits inside the boundary are plain maximum
  // likelihood, whatever this is. The default 1e-4 is small: on simulated
  // shops whose fits run to a boundary it costs under one log-likelihood
  // unit (less than the noise of the fit) while keeping every parameter
  // inside 1e-4..1e4 of its scale.
  double penalizer = 1e-4;
};

// How a fit ended. status: "ok" (interior maximum likelihood),
// "regularized" (the maximum-likelihood fit ran to a boundary and was refitted
// with the penalty, see FitOptions::penalizer), "boundary" (ran to a boundary,
// penalizer 0), "failed" (no finite likelihood; params are the defaults).
// reason says which parameter ran where, in words. Parameters are always
// finite and > 0 (q > 1).
struct BgNbdFit {
  BgNbdParams params;
  double log_likelihood = 0;              // at params, summed over customers
  double unpenalized_log_likelihood = 0;  // of the plain maximum-likelihood fit
  double customers = 0;                   // sum of weights
  int evaluations = 0;
  bool converged = false;
  std::string status = "ok";
  std::string reason;
  double penalizer = 0;  // the penalty used (0 unless regularized)
};

struct GammaGammaFit {
  GammaGammaParams params;
  double log_likelihood = 0;
  double unpenalized_log_likelihood = 0;
  double customers = 0;  // customers with x > 0 and monetary > 0 that were used
  int evaluations = 0;
  bool converged = false;
  std::string status = "ok";
  std::string reason;
  double penalizer = 0;
};

// --- BG/NBD -------------------------------------------------------------

// Log-likelihood of the summaries under `params` (weights multiply).
double BgNbdLogLikelihood(const BgNbdParams& params, std::span<const RfmSummary> customers);
// Maximum-likelihood fit. Customers with T <= 0 still count (they carry
// information through x = 0, T = 0: none).
BgNbdFit FitBgNbd(std::span<const RfmSummary> customers, const FitOptions& options = {});

// E[purchases in the next window | alive] with k = r + x, beta = b + x and
// u = t / (alpha + T): E_p[(1 - (1 + p u)^-k) / p], p ~ Beta(a, beta), summed
// as a series of positive terms (see bgnbd.cpp); accurate to ~1e-14 relative
// for any a, beta, k > 0 and u >= 0, with about k u + 40 (1 + u) terms
// (capped at 2e6 terms, a lower bound beyond: far outside real histories).
double ExpectedPurchasesGivenAlive(double k, double beta, double a, double u);

// E[X(t)]: expected purchases in (0, t] of a customer just acquired at 0.
double BgNbdExpectedPurchases(const BgNbdParams& params, double t);
// E[X(T, T + t) | x, t_x, T]: expected purchases in the next t weeks. It is
// P(alive | x, t_x, T) times the next one, which does not depend on t_x.
double BgNbdConditionalExpectedPurchases(const BgNbdParams& params, double x, double t_x, double T,
                                         double t);
// E[X(T, T + t) | x, T, alive at T]: the expensive part (a series), to reuse
// when only t_x changes.
double BgNbdConditionalExpectedPurchasesIfAlive(const BgNbdParams& params, double x, double T,
                                                double t);
// Same, by numeric integration over the posterior of the drop-out
// probability (independent of the series; a cross-check in tests, for
// moderate parameters only: Simpson's rule, ~1e-6).
double BgNbdConditionalExpectedPurchasesByQuadrature(const BgNbdParams& params, double x,
                                                     double t_x, double T, double t);
// P(alive at T | x, t_x, T). Equals 1 when x = 0 (a BG/NBD property: drop-out
// can only happen right after a repeat purchase).
double BgNbdProbabilityAlive(const BgNbdParams& params, double x, double t_x, double T);
// P(X(T, T + t) >= 1 | x, t_x, T) = P(alive) * (1 - ((alpha+T)/(alpha+T+t))^(r+x)):
// a customer alive at T buys in the next t weeks unless its Poisson clock
// stays silent (it cannot drop out before buying), and its rate given alive
// is Gamma(r + x, alpha + T).
double BgNbdProbabilityAnyPurchase(const BgNbdParams& params, double x, double t_x, double T,
                                   double t);

// Gauss hypergeometric 2F1(a, b; c; z) for 0 <= z < 1 by its power series.
double Hyp2F1(double a, double b, double c, double z);
// The same, fast for z near 1 (connection formula in 1 - z); falls back to
// the series where that formula is singular. Agrees with Hyp2F1 to ~1e-12.
double Hyp2F1NearOne(double a, double b, double c, double z);

// --- Gamma-Gamma --------------------------------------------------------

// Log-likelihood over customers with x > 0 and monetary > 0 (others skipped).
double GammaGammaLogLikelihood(const GammaGammaParams& params,
                               std::span<const RfmSummary> customers);
GammaGammaFit FitGammaGamma(std::span<const RfmSummary> customers, const FitOptions& options = {});
// E[M | x, m_x] = p (gamma + x m_x) / (p x + q - 1); the population mean
// p gamma / (q - 1) when x = 0. With q <= 1 the population mean is infinite:
// +inf for x = 0 (fits and model files always have q > 1).
double GammaGammaConditionalExpectedValue(const GammaGammaParams& params, double x,
                                          double monetary);

// --- CLV ----------------------------------------------------------------

// Expected spend in the next horizon_weeks: conditional expected purchases x
// conditional expected order value. discount_rate_per_week > 0 discounts each
// week's expected spend by (1 + rate)^-k (k = 1..ceil(horizon)); 0 = none.
double ExpectedClv(const BgNbdParams& bgnbd, const GammaGammaParams& gamma_gamma,
                   const RfmSummary& customer, double horizon_weeks,
                   double discount_rate_per_week = 0);

// The "simple formula" (seed papers): CLV = average order value x purchase
// frequency x retention, per customer over the horizon:
//   average order value = mean spend per purchase day (the customer's own),
//   purchase frequency  = purchase days per week over the customer's tenure
//                         (first purchase -> now, at least min_tenure_weeks)
//                         x horizon_weeks,
//   retention           = the population's retention rate: share of
//                         customers who bought in the first half of the
//                         calibration period and bought again in the second.
struct SimpleFormulaParams {
  double retention = 0.5;
  double min_tenure_weeks = 1;
};
// purchase_days = x + 1 of `customer`; returns 0 for customers with no purchase.
double SimpleClv(const SimpleFormulaParams& params, double purchase_days, double mean_day_value,
                 double tenure_weeks, double horizon_weeks);

}  // namespace clv::models
