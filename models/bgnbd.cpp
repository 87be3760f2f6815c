#include "models/bgnbd.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <limits>
#include <vector>

namespace clv::models {

namespace {

constexpr double kInfinity = std::numeric_limits<double>::infinity();

double LogBeta(double a, double b) { return std::lgamma(a) + std::lgamma(b) - std::lgamma(a + b); }

double LogAddExp(double u, double v) {
  const double high = std::max(u, v);
  if (high == -kInfinity) return -kInfinity;
  return high + std::log1p(std::exp(std::min(u, v) - high));
}

// Result of one minimization.
struct Minimum {
  std::vector<double> point;
  double value = kInfinity;
  int evaluations = 0;
  bool converged = false;
};

// Nelder-Mead downhill simplex (standard coefficients: reflect 1, expand 2,
// contract 1/2, shrink 1/2), restarted from the best point until a restart
// stops improving. `objective` returns +inf outside its domain.
Minimum NelderMead(const std::function<double(const std::vector<double>&)>& objective,
                   std::vector<double> start, const FitOptions& options) {
  const size_t n = start.size();
  Minimum best;
  best.point = start;
  best.value = objective(start);
  best.evaluations = 1;
  for (int restart = 0; restart <= options.restarts; ++restart) {
    std::vector<std::vector<double>> simplex(n + 1, best.point);
    std::vector<double> values(n + 1, best.value);
    for (size_t i = 0; i < n; ++i) {
      simplex[i + 1][i] += restart == 0 ? 0.5 : 0.1;
      values[i + 1] = objective(simplex[i + 1]);
      ++best.evaluations;
    }
    bool converged = false;
    for (int iteration = 0; iteration < options.max_iterations; ++iteration) {
      // Order: simplex[0] best ... simplex[n] worst.
      std::vector<size_t> order(n + 1);
      for (size_t i = 0; i <= n; ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t i, size_t j) { return values[i] < values[j]; });
      std::vector<std::vector<double>> sorted_simplex(n + 1);
      std::vector<double> sorted_values(n + 1);
      for (size_t i = 0; i <= n; ++i) {
        sorted_simplex[i] = simplex[order[i]];
        sorted_values[i] = values[order[i]];
      }
      simplex.swap(sorted_simplex);
      values.swap(sorted_values);
      if (std::isfinite(values[n]) &&
          values[n] - values[0] <= options.tolerance * (1 + std::abs(values[0]))) {
        converged = true;
        break;
      }
      std::vector<double> centroid(n, 0.0);
      for (size_t i = 0; i < n; ++i) {
        for (size_t k = 0; k < n; ++k) centroid[k] += simplex[i][k] / static_cast<double>(n);
      }
      auto along = [&](double coefficient) {
        std::vector<double> point(n);
        for (size_t k = 0; k < n; ++k) {
          point[k] = centroid[k] + coefficient * (simplex[n][k] - centroid[k]);
        }
        return point;
      };
      auto reflected = along(-1.0);
      const double reflected_value = objective(reflected);
      ++best.evaluations;
      if (reflected_value < values[0]) {
        auto expanded = along(-2.0);
        const double expanded_value = objective(expanded);
        ++best.evaluations;
        if (expanded_value < reflected_value) {
          simplex[n] = expanded;
          values[n] = expanded_value;
        } else {
          simplex[n] = reflected;
          values[n] = reflected_value;
        }
        continue;
      }
      if (reflected_value < values[n - 1]) {
        simplex[n] = reflected;
        values[n] = reflected_value;
        continue;
      }
      const bool outside = reflected_value < values[n];
      auto contracted = along(outside ? -0.5 : 0.5);
      const double contracted_value = objective(contracted);
      ++best.evaluations;
      if (contracted_value < std::min(reflected_value, values[n])) {
        simplex[n] = contracted;
        values[n] = contracted_value;
        continue;
      }
      for (size_t i = 1; i <= n; ++i) {  // shrink toward the best point
        for (size_t k = 0; k < n; ++k) simplex[i][k] = simplex[0][k] + 0.5 * (simplex[i][k] - simplex[0][k]);
        values[i] = objective(simplex[i]);
        ++best.evaluations;
      }
    }
    const size_t best_index =
        static_cast<size_t>(std::min_element(values.begin(), values.end()) - values.begin());
    const double improvement = best.value - values[best_index];
    if (values[best_index] < best.value) {
      best.value = values[best_index];
      best.point = simplex[best_index];
    }
    best.converged = converged;
    if (restart > 0 && converged && improvement <= options.tolerance * (1 + std::abs(best.value))) {
      break;
    }
  }
  return best;
}

double SumWeights(std::span<const RfmSummary> customers) {
  double total = 0;
  for (const RfmSummary& c : customers) total += c.weight;
  return total;
}

bool UsableForGammaGamma(const RfmSummary& c) { return c.x > 0 && c.monetary > 0; }

// 1 - ((alpha+T)/(alpha+T+s))^k, accurate for small s.
double OneMinusRatioPower(double base, double s, double k) {
  return -std::expm1(-k * std::log1p(s / base));
}

}  // namespace

double Hyp2F1(double a, double b, double c, double z) {
  double term = 1.0;
  double sum = 1.0;
  for (int n = 0; n < 200000; ++n) {
    const double ratio = (a + n) * (b + n) / ((c + n) * (n + 1.0)) * z;
    term *= ratio;
    sum += term;
    if (std::abs(term) <= 1e-16 * std::abs(sum) && std::abs(ratio) < 1.0) break;
    if (!std::isfinite(sum)) break;
  }
  return sum;
}

namespace {

// log|Gamma(v)| and its sign.
double LogAbsGamma(double v, int* sign) {
  int s = 1;
  const double value = ::lgamma_r(v, &s);
  *sign *= s;
  return value;
}

bool NearNonPositiveInteger(double v) { return v <= 0 && std::abs(v - std::round(v)) < 1e-9; }

}  // namespace

double Hyp2F1NearOne(double a, double b, double c, double z) {
  // The series converges like z^n: hundreds of terms once z > 0.9, more when
  // its terms first grow (a + b - c large). Around z = 1 the connection
  // formula (Abramowitz & Stegun 15.3.6) needs two series in 1 - z instead.
  // It is singular when c - a - b is an integer (there the series is kept),
  // and a terminating series (a or b a non-positive integer) is cheap anyway.
  const double s = c - a - b;
  // With c - a - b large the series' terms shrink fast from the start (and
  // the 1 - z series would cancel catastrophically): keep it.
  if (z <= 0.5 || s > 6 || s < -6 || std::abs(s - std::round(s)) < 0.02 || NearNonPositiveInteger(a) ||
      NearNonPositiveInteger(b) || NearNonPositiveInteger(c - a) || NearNonPositiveInteger(c - b) ||
      NearNonPositiveInteger(c)) {
    return Hyp2F1(a, b, c, z);
  }
  const double w = 1 - z;
  // The two Gamma ratios depend on (a, b, c) only: a scorer asks for the same
  // few (its model's parameters, a user's purchase count) over and over.
  struct GammaRatios {
    double a = 0, b = 0, c = 0;
    bool valid = false;
    double coefficient1 = 0;  // G(c) G(s) / (G(c-a) G(c-b))
    double coefficient2 = 0;  // G(c) G(-s) / (G(a) G(b))
  };
  static thread_local std::array<GammaRatios, 256> cache;
  const size_t slot =
      (std::hash<double>{}(a) * 31 + std::hash<double>{}(b) * 17 + std::hash<double>{}(c)) & 255;
  GammaRatios& ratios = cache[slot];
  if (!ratios.valid || ratios.a != a || ratios.b != b || ratios.c != c) {
    int sign1 = 1;
    const double log1 = LogAbsGamma(c, &sign1) + LogAbsGamma(s, &sign1) -
                        LogAbsGamma(c - a, &sign1) - LogAbsGamma(c - b, &sign1);
    int sign2 = 1;
    const double log2 = LogAbsGamma(c, &sign2) + LogAbsGamma(-s, &sign2) -
                        LogAbsGamma(a, &sign2) - LogAbsGamma(b, &sign2);
    ratios = {a, b, c, true, sign1 * std::exp(log1), sign2 * std::exp(log2)};
  }
  return ratios.coefficient1 * Hyp2F1(a, b, 1 - s, w) +
         ratios.coefficient2 * std::exp(s * std::log(w)) * Hyp2F1(c - a, c - b, 1 + s, w);
}

double BgNbdLogLikelihood(const BgNbdParams& p, std::span<const RfmSummary> customers) {
  const double log_beta_ab = LogBeta(p.a, p.b);
  const double common = -std::lgamma(p.r) + p.r * std::log(p.alpha);
  double total = 0;
  for (const RfmSummary& c : customers) {
    const double a1 = std::lgamma(p.r + c.x) + common;
    // Still alive at T (no drop-out after any of the x repeat purchases) ...
    const double a2 = LogBeta(p.a, p.b + c.x) - log_beta_ab - (p.r + c.x) * std::log(p.alpha + c.T);
    double tail = a2;
    if (c.x > 0) {
      // ... or dropped out right after the last purchase at t_x.
      const double a3 =
          LogBeta(p.a + 1, p.b + c.x - 1) - log_beta_ab - (p.r + c.x) * std::log(p.alpha + c.t_x);
      tail = LogAddExp(a2, a3);
    }
    total += c.weight * (a1 + tail);
  }
  return total;
}

BgNbdFit FitBgNbd(std::span<const RfmSummary> customers, const FitOptions& options) {
  BgNbdFit fit;
  fit.customers = SumWeights(customers);
  if (fit.customers <= 0) return fit;
  auto to_params = [](const std::vector<double>& theta) {
    return BgNbdParams{std::exp(theta[0]), std::exp(theta[1]), std::exp(theta[2]),
                       std::exp(theta[3])};
  };
  auto objective = [&](const std::vector<double>& theta) {
    for (double v : theta) {
      if (!std::isfinite(v) || std::abs(v) > 30) return kInfinity;
    }
    const double ll = BgNbdLogLikelihood(to_params(theta), customers);
    return std::isfinite(ll) ? -ll / fit.customers : kInfinity;
  };
  Minimum minimum = NelderMead(objective, {0.0, 0.0, 0.0, 0.0}, options);
  fit.params = to_params(minimum.point);
  fit.log_likelihood = BgNbdLogLikelihood(fit.params, customers);
  fit.evaluations = minimum.evaluations;
  fit.converged = minimum.converged && std::isfinite(fit.log_likelihood);
  return fit;
}

double BgNbdExpectedPurchases(const BgNbdParams& p, double t) {
  if (t <= 0) return 0;
  const double z = t / (p.alpha + t);
  const double hyp = Hyp2F1(p.r, p.b, p.a + p.b - 1, z);
  return (p.a + p.b - 1) / (p.a - 1) * (1 - std::pow(p.alpha / (p.alpha + t), p.r) * hyp);
}

double BgNbdProbabilityAlive(const BgNbdParams& p, double x, double t_x, double T) {
  if (x <= 0) return 1.0;
  const double log_odds = std::log(p.a / (p.b + x - 1)) +
                          (p.r + x) * (std::log(p.alpha + T) - std::log(p.alpha + t_x));
  // 1 / (1 + exp(log_odds)) without overflow.
  return log_odds > 0 ? std::exp(-log_odds) / (1 + std::exp(-log_odds))
                      : 1 / (1 + std::exp(log_odds));
}

double BgNbdConditionalExpectedPurchasesByQuadrature(const BgNbdParams& p, double x, double t_x,
                                                     double T, double t) {
  if (t <= 0) return 0;
  // E[X | alive] = E_p[(1 - ((alpha+T)/(alpha+T+p t))^(r+x)) / p], p ~ Beta(a, b+x).
  // Substituting p = u^(1/a) removes the density's p^(a-1) factor:
  // Beta(a, b+x) dp = (1-p)^(b+x-1) / (a B(a, b+x)) du.
  const double base = p.alpha + T;
  const double k = p.r + x;
  const double log_norm = -std::log(p.a) - LogBeta(p.a, p.b + x);
  auto integrand = [&](double u) {
    if (u <= 0) return std::exp(log_norm) * k * t / base;  // limit p -> 0
    const double prob = std::pow(u, 1 / p.a);
    if (prob >= 1) return p.b + x - 1 > 0 ? 0.0 : kInfinity;
    const double value = OneMinusRatioPower(base, prob * t, k) / prob;
    return value * std::exp(log_norm + (p.b + x - 1) * std::log1p(-prob));
  };
  // Composite Simpson on [0, 1 - eps]; the endpoint at 1 is where a weakly
  // singular factor may sit, and it carries no mass worth counting.
  constexpr int kIntervals = 20000;
  const double upper = 1 - 1e-12;
  const double h = upper / kIntervals;
  double sum = integrand(0) + integrand(upper);
  for (int i = 1; i < kIntervals; ++i) sum += integrand(i * h) * (i % 2 == 1 ? 4 : 2);
  return BgNbdProbabilityAlive(p, x, t_x, T) * sum * h / 3;
}

double BgNbdConditionalExpectedPurchases(const BgNbdParams& p, double x, double t_x, double T,
                                         double t) {
  if (t <= 0) return 0;
  const double c = p.a + p.b + x - 1;
  if (std::abs(p.a - 1) < 1e-6 || c <= 0) {
    return BgNbdConditionalExpectedPurchasesByQuadrature(p, x, t_x, T, t);
  }
  const double base = p.alpha + T;
  const double z = t / (base + t);
  // The paper's ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; c; z), with
  // Euler's transformation 2F1(A, B; C; z) = (1-z)^(C-A-B) 2F1(C-A, C-B; C; z)
  // and 1 - z = (alpha+T)/(alpha+T+t): (1-z)^(a-1) 2F1(a+b-1-r, a-1; c; z).
  // Its terms no longer grow with x before they fall.
  const double hyp = Hyp2F1NearOne(p.a + p.b - 1 - p.r, p.a - 1, c, z);
  const double power = std::exp((p.a - 1) * (std::log(base) - std::log(base + t)));
  const double given_alive = c / (p.a - 1) * (1 - power * hyp);
  return BgNbdProbabilityAlive(p, x, t_x, T) * given_alive;
}

double BgNbdProbabilityAnyPurchase(const BgNbdParams& p, double x, double t_x, double T,
                                   double t) {
  if (t <= 0) return 0;
  return BgNbdProbabilityAlive(p, x, t_x, T) * OneMinusRatioPower(p.alpha + T, t, p.r + x);
}

double GammaGammaLogLikelihood(const GammaGammaParams& g, std::span<const RfmSummary> customers) {
  const double common = -std::lgamma(g.q) + g.q * std::log(g.gamma);
  double total = 0;
  for (const RfmSummary& c : customers) {
    if (!UsableForGammaGamma(c)) continue;
    const double px = g.p * c.x;
    total += c.weight * (std::lgamma(px + g.q) - std::lgamma(px) + common +
                         (px - 1) * std::log(c.monetary) + px * std::log(c.x) -
                         (px + g.q) * std::log(g.gamma + c.monetary * c.x));
  }
  return total;
}

GammaGammaFit FitGammaGamma(std::span<const RfmSummary> customers, const FitOptions& options) {
  GammaGammaFit fit;
  for (const RfmSummary& c : customers) {
    if (UsableForGammaGamma(c)) fit.customers += c.weight;
  }
  if (fit.customers <= 0) return fit;
  auto to_params = [](const std::vector<double>& theta) {
    return GammaGammaParams{std::exp(theta[0]), std::exp(theta[1]), std::exp(theta[2])};
  };
  auto objective = [&](const std::vector<double>& theta) {
    for (double v : theta) {
      if (!std::isfinite(v) || std::abs(v) > 30) return kInfinity;
    }
    const double ll = GammaGammaLogLikelihood(to_params(theta), customers);
    return std::isfinite(ll) ? -ll / fit.customers : kInfinity;
  };
  Minimum minimum = NelderMead(objective, {0.0, 0.0, 0.0}, options);
  fit.params = to_params(minimum.point);
  fit.log_likelihood = GammaGammaLogLikelihood(fit.params, customers);
  fit.evaluations = minimum.evaluations;
  fit.converged = minimum.converged && std::isfinite(fit.log_likelihood);
  return fit;
}

double GammaGammaConditionalExpectedValue(const GammaGammaParams& g, double x, double monetary) {
  if (x <= 0) return g.p * g.gamma / (g.q - 1);
  return g.p * (g.gamma + x * monetary) / (g.p * x + g.q - 1);
}

double ExpectedClv(const BgNbdParams& bgnbd, const GammaGammaParams& gamma_gamma,
                   const RfmSummary& c, double horizon_weeks, double discount_rate_per_week) {
  if (horizon_weeks <= 0) return 0;
  const double order_value = GammaGammaConditionalExpectedValue(gamma_gamma, c.x, c.monetary);
  if (discount_rate_per_week <= 0) {
    return BgNbdConditionalExpectedPurchases(bgnbd, c.x, c.t_x, c.T, horizon_weeks) * order_value;
  }
  double total = 0;
  double previous = 0;
  const int weeks = static_cast<int>(std::ceil(horizon_weeks));
  for (int k = 1; k <= weeks; ++k) {
    const double until = std::min<double>(k, horizon_weeks);
    const double cumulative = BgNbdConditionalExpectedPurchases(bgnbd, c.x, c.t_x, c.T, until);
    total += (cumulative - previous) / std::pow(1 + discount_rate_per_week, k);
    previous = cumulative;
  }
  return total * order_value;
}

double SimpleClv(const SimpleFormulaParams& params, double purchase_days, double mean_day_value,
                 double tenure_weeks, double horizon_weeks) {
  if (purchase_days <= 0 || horizon_weeks <= 0) return 0;
  const double tenure = std::max(tenure_weeks, params.min_tenure_weeks);
  const double purchases_in_horizon = purchase_days / tenure * horizon_weeks;
  return mean_day_value * purchases_in_horizon * params.retention;
}

}  // namespace clv::models
