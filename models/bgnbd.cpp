#include "models/bgnbd.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <tuple>
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
      if (best.evaluations >= options.max_evaluations) break;
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
        for (size_t k = 0; k < n; ++k)
          simplex[i][k] = simplex[0][k] + 0.5 * (simplex[i][k] - simplex[0][k]);
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
    if (best.evaluations >= options.max_evaluations) break;
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
  if (z <= 0.5 || s > 6 || s < -6 || std::abs(s - std::round(s)) < 0.02 ||
      NearNonPositiveInteger(a) || NearNonPositiveInteger(b) || NearNonPositiveInteger(c - a) ||
      NearNonPositiveInteger(c - b) || NearNonPositiveInteger(c)) {
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
      (std::hash<double>{}(a)*31 + std::hash<double>{}(b)*17 + std::hash<double>{}(c)) & 255;
  GammaRatios& ratios = cache[slot];
  if (!ratios.valid || ratios.a != a || ratios.b != b || ratios.c != c) {
    int sign1 = 1;
    const double log1 = LogAbsGamma(c, &sign1) + LogAbsGamma(s, &sign1) -
                        LogAbsGamma(c - a, &sign1) - LogAbsGamma(c - b, &sign1);
    int sign2 = 1;
    const double log2 = LogAbsGamma(c, &sign2) + LogAbsGamma(-s, &sign2) - LogAbsGamma(a, &sign2) -
                        LogAbsGamma(b, &sign2);
    ratios = {a, b, c, true, sign1 * std::exp(log1), sign2 * std::exp(log2)};
  }
  return ratios.coefficient1 * Hyp2F1(a, b, 1 - s, w) +
         ratios.coefficient2 * std::exp(s * std::log(w)) * Hyp2F1(c - a, c - b, 1 + s, w);
}

double ExpectedPurchasesGivenAlive(double k, double beta, double a, double u) {
  if (!(u > 0) || !(k > 0)) return 0;
  // Given the purchase rate lambda and the drop-out probability p, a customer
  // alive at T buys sum_{n>=1} P(N >= n) (1-p)^(n-1) times in the window,
  // N ~ Poisson(lambda t). Over lambda ~ Gamma(k, alpha + T), N is negative
  // binomial: P(N = m) = G(k+m) / (G(k) m!) (1-z)^k z^m, z = u / (1 + u);
  // over p ~ Beta(a, beta), E[(1-p)^j] = w_j = prod_{i<j} (beta+i)/(beta+a+i).
  // So the expectation is sum_{m>=1} P(N = m) S_m with S_m = w_0 + ... +
  // w_{m-1}: positive terms only (no cancellation, no 1/(a-1) pole; it is
  // FHL 2005 eq. 10 summed the other way round). The pmf is carried as a
  // mantissa and a log scale, so (1-z)^k may underflow (k = r + x large).
  const double z = u / (1 + u);
  double log_scale = std::log(k) + std::log(u) - (k + 1) * std::log1p(u);  // log P(N = 1)
  double pmf = 1;      // P(N = m) / exp(log_scale)
  double sum = 0;      // in units of exp(log_scale)
  double w = 1;        // w_{m-1}
  double partial = 1;  // S_m
  constexpr double kRelative = 1e-17;
  // About k u + 40 (1 + u) terms are needed. Beyond this cap (~5 ms; u or
  // k u above ~5e4: a customer with 10^4 purchase days asked for years ahead
  // of a one-day history, or alpha of minutes) the sum stops early: a finite
  // lower bound.
  constexpr long kMaxTerms = 2'000'000;
  // One division per term: the two ratios share the reciprocal of the
  // product of their denominators (beta + a < 1e100 keeps that product far
  // from overflow; beyond, two divisions).
  const bool shared_reciprocal = beta + a < 1e100;
  constexpr int kBlock = 8;  // terms between convergence checks and rescales
  for (long m = 1; m < kMaxTerms; m += kBlock) {
    double term = 0, ratio = 0;
    for (int i = 0; i < kBlock; ++i) {
      const double md = static_cast<double>(m + i);
      term = pmf * partial;
      sum += term;
      const double pmf_denominator = md + 1;
      const double w_denominator = beta + a + md - 1;
      double w_ratio = 0;
      if (shared_reciprocal) {
        const double reciprocal = 1 / (pmf_denominator * w_denominator);
        ratio = (k + md) * z * w_denominator * reciprocal;  // P(N = m+1) / P(N = m)
        w_ratio = (beta + md - 1) * pmf_denominator * reciprocal;
      } else {
        ratio = (k + md) / pmf_denominator * z;
        w_ratio = (beta + md - 1) / w_denominator;
      }
      w *= w_ratio;
      partial += w;
      pmf *= ratio;
    }
    // Later terms shrink at least by q = max(ratio, z) (1 + 1/m) each: the
    // pmf ratio tends monotonically to z, and S_{m+1} / S_m <= 1 + 1/m
    // because w is non-increasing.
    const double last = static_cast<double>(m + kBlock - 1);
    const double q = std::max(ratio, z) * (1 + 1 / last);
    if (q < 1 && term * q / (1 - q) <= kRelative * sum) break;
    if (pmf > 1e200) {  // rescale; what was summed before is negligible if it underflows
      pmf *= 1e-200;
      sum *= 1e-200;
      log_scale += 200 * std::log(10.0);
    }
  }
  return sum * std::exp(log_scale);
}

double BgNbdLogLikelihood(const BgNbdParams& p, std::span<const RfmSummary> customers) {
  const double log_beta_ab = LogBeta(p.a, p.b);
  const double common = -std::lgamma(p.r) + p.r * std::log(p.alpha);
  // The Gamma-function terms depend on x only: computed once per run of
  // equal x (the fitter sorts its customers by x).
  double cached_x = std::numeric_limits<double>::quiet_NaN();
  double a1 = 0, alive_part = 0, dropped_part = 0;
  double total = 0;
  for (const RfmSummary& c : customers) {
    if (!(c.x == cached_x)) {
      cached_x = c.x;
      a1 = std::lgamma(p.r + c.x) + common;
      alive_part = LogBeta(p.a, p.b + c.x) - log_beta_ab;
      dropped_part = c.x > 0 ? LogBeta(p.a + 1, p.b + c.x - 1) - log_beta_ab : 0;
    }
    // Still alive at T (no drop-out after any of the x repeat purchases) ...
    const double a2 = alive_part - (p.r + c.x) * std::log(p.alpha + c.T);
    double tail = a2;
    if (c.x > 0) {
      // ... or dropped out right after the last purchase at t_x.
      const double a3 = dropped_part - (p.r + c.x) * std::log(p.alpha + c.t_x);
      tail = LogAddExp(a2, a3);
    }
    total += c.weight * (a1 + tail);
  }
  return total;
}

namespace {

// log(1e4): a fitted (scale-free) log-parameter beyond this ran to a boundary.
constexpr double kBoundaryLog = 9.2103403719761836;
// log(1e8): the search box; the objective is +inf outside it.
constexpr double kBoxLog = 18.420680743952367;

double Penalty(const std::vector<double>& theta, double penalizer) {
  double total = 0;
  for (double v : theta) total += v * v;
  return penalizer * total;
}

// Best of Nelder-Mead runs from each start.
Minimum MinimizeFromStarts(const std::function<double(const std::vector<double>&)>& objective,
                           const std::vector<std::vector<double>>& starts,
                           const FitOptions& options) {
  Minimum best;
  int evaluations = 0;
  for (const auto& start : starts) {
    Minimum m = NelderMead(objective, start, options);
    evaluations += m.evaluations;
    if (best.point.empty() || m.value < best.value) best = std::move(m);
  }
  best.evaluations = evaluations;
  return best;
}

// The refit of a fit that ran to a boundary: `objective` (the penalized one)
// minimized from `moment_start` and from the boundary point pulled inside the
// search box. `minimum` takes the refit's point when the refit is finite.
// Returns the evaluations of both minimizations.
int RefitInsideTheBox(const std::function<double(const std::vector<double>&)>& objective,
                      const std::vector<double>& moment_start, Minimum& minimum,
                      const FitOptions& options) {
  std::vector<double> inside = minimum.point;
  for (double& v : inside) v = std::clamp(v, -kBoundaryLog, kBoundaryLog);
  Minimum penalized = MinimizeFromStarts(objective, {moment_start, inside}, options);
  if (!penalized.point.empty() && std::isfinite(penalized.value)) {
    minimum.point = penalized.point;
    minimum.converged = penalized.converged;
  }
  return minimum.evaluations + penalized.evaluations;
}

std::string Format(const char* format, double value) {
  char buffer[64];
  std::snprintf(buffer, sizeof(buffer), format, value);
  return buffer;
}

// Names the log-parameters of `theta` beyond the boundary ("" if none).
std::string BoundaryParameters(const std::vector<double>& theta,
                               const std::vector<std::string>& names,
                               const std::vector<double>& values) {
  std::string out;
  for (size_t i = 0; i < theta.size(); ++i) {
    if (std::abs(theta[i]) <= kBoundaryLog) continue;
    if (!out.empty()) out += ", ";
    out += names[i] + " = " + Format("%.4g", values[i]);
  }
  return out;
}

double WeightedMedian(std::vector<std::pair<double, double>> values) {
  if (values.empty()) return 0;
  std::sort(values.begin(), values.end());
  double total = 0;
  for (const auto& v : values) total += v.second;
  double running = 0;
  for (const auto& v : values) {
    running += v.second;
    if (running >= total / 2) return v.first;
  }
  return values.back().first;
}

}  // namespace

BgNbdFit FitBgNbd(std::span<const RfmSummary> customers, const FitOptions& options) {
  BgNbdFit fit;
  fit.customers = SumWeights(customers);
  if (fit.customers <= 0) {
    fit.status = "failed";
    fit.reason = "no customers";
    return fit;
  }
  // Fit in a time unit of the customers' mean age T (scale-free: days or
  // weeks give the same normalized data), then scale alpha back. r, a, b
  // carry no unit.
  double total_T = 0, total_x = 0;
  for (const RfmSummary& c : customers) {
    total_T += c.weight * std::max(0.0, c.T);
    total_x += c.weight * std::max(0.0, c.x);
  }
  const double scale = total_T > 0 && std::isfinite(total_T) ? total_T / fit.customers : 1.0;
  // Customers with the same (x, t_x, T) are one row with their summed
  // weight (day-granular logs have few distinct rows among one-time buyers).
  std::vector<RfmSummary> normalized(customers.begin(), customers.end());
  std::sort(normalized.begin(), normalized.end(), [](const RfmSummary& l, const RfmSummary& r) {
    return std::tie(l.x, l.t_x, l.T) < std::tie(r.x, r.t_x, r.T);
  });
  size_t rows = 0;
  for (size_t i = 0; i < normalized.size(); ++i) {
    const RfmSummary& c = normalized[i];
    if (rows > 0 && normalized[rows - 1].x == c.x && normalized[rows - 1].t_x == c.t_x &&
        normalized[rows - 1].T == c.T) {
      normalized[rows - 1].weight += c.weight;
    } else {
      normalized[rows++] = normalized[i];
    }
  }
  normalized.resize(rows);
  for (RfmSummary& c : normalized) {
    c.t_x /= scale;
    c.T /= scale;
  }
  auto to_params = [scale](const std::vector<double>& theta) {
    return BgNbdParams{std::exp(theta[0]), std::exp(theta[1]) * scale, std::exp(theta[2]),
                       std::exp(theta[3])};
  };
  auto normalized_params = [](const std::vector<double>& theta) {
    return BgNbdParams{std::exp(theta[0]), std::exp(theta[1]), std::exp(theta[2]),
                       std::exp(theta[3])};
  };
  auto make_objective = [&](double penalizer) {
    return [&, penalizer](const std::vector<double>& theta) {
      for (double v : theta) {
        if (!std::isfinite(v) || std::abs(v) > kBoxLog) return kInfinity;
      }
      const double ll = BgNbdLogLikelihood(normalized_params(theta), normalized);
      return std::isfinite(ll) ? -ll / fit.customers + Penalty(theta, penalizer) : kInfinity;
    };
  };
  // Starts: unit parameters, and two moment-based ones (r / alpha = the mean
  // purchase rate, in the normalized unit) with little and much drop-out.
  const double rate = total_x > 0 ? total_x / fit.customers : 0.1;  // per unit of mean T
  const std::vector<std::vector<double>> starts = {
      {0.0, 0.0, 0.0, 0.0},
      {0.0, -std::log(rate), 0.0, std::log(3.0)},
      {std::log(0.3), std::log(0.3 / rate), std::log(0.5), std::log(10.0)},
  };
  Minimum minimum = MinimizeFromStarts(make_objective(0), starts, options);
  if (minimum.point.empty() || !std::isfinite(minimum.value)) {
    fit.status = "failed";
    fit.reason = "no finite log-likelihood from any start";
    fit.evaluations = minimum.evaluations;
    return fit;
  }
  const BgNbdParams unpenalized = to_params(minimum.point);
  const std::string boundary =
      BoundaryParameters(minimum.point, {"r", "alpha", "a", "b"},
                         {unpenalized.r, unpenalized.alpha, unpenalized.a, unpenalized.b});
  // a / (a + b), the mean drop-out probability, running to 0 is the NBD
  // limit (no drop-out) even while a and b stay inside the box.
  const bool no_dropout = unpenalized.a / (unpenalized.a + unpenalized.b) < 1e-5;
  fit.unpenalized_log_likelihood = BgNbdLogLikelihood(unpenalized, customers);
  if ((!boundary.empty() || no_dropout) && options.penalizer > 0) {
    std::string why = boundary.empty() ? "" : boundary + " ran to a boundary";
    if (no_dropout) {
      if (!why.empty()) why += "; ";
      why += "mean drop-out probability a/(a+b) = " +
             Format("%.3g", unpenalized.a / (unpenalized.a + unpenalized.b)) +
             " (the no-drop-out NBD limit)";
    }
    fit.evaluations =
        RefitInsideTheBox(make_objective(options.penalizer), starts[1], minimum, options);
    fit.params = to_params(minimum.point);
    fit.log_likelihood = BgNbdLogLikelihood(fit.params, customers);
    fit.status = "regularized";
    fit.penalizer = options.penalizer;
    fit.reason = "maximum likelihood: " + why + "; refitted with an L2 penalty " +
                 Format("%g", options.penalizer) + " on the log-parameters (log-likelihood " +
                 Format("%.2f", fit.log_likelihood) + " vs " +
                 Format("%.2f", fit.unpenalized_log_likelihood) + " unpenalized)";
  } else {
    fit.params = unpenalized;
    fit.log_likelihood = fit.unpenalized_log_likelihood;
    fit.evaluations = minimum.evaluations;
    if (!boundary.empty() || no_dropout) {
      fit.status = "boundary";
      fit.reason = boundary.empty() ? "mean drop-out probability near 0" : boundary;
    }
  }
  fit.converged = minimum.converged && std::isfinite(fit.log_likelihood);
  if (!fit.converged && fit.reason.empty()) fit.reason = "optimizer hit its iteration limit";
  return fit;
}

double BgNbdExpectedPurchases(const BgNbdParams& p, double t) {
  if (!(t > 0)) return 0;
  return ExpectedPurchasesGivenAlive(p.r, p.b, p.a, t / p.alpha);
}

double BgNbdProbabilityAlive(const BgNbdParams& p, double x, double t_x, double T) {
  if (!(x > 0)) return 1.0;
  t_x = std::clamp(t_x, 0.0, std::max(0.0, T));
  // Odds of having dropped out right after the purchase at t_x:
  // a / (b + x - 1) * ((alpha + T) / (alpha + t_x))^(r + x), in logs.
  const double log_odds =
      std::log(p.a) - std::log(p.b + x - 1) + (p.r + x) * std::log1p((T - t_x) / (p.alpha + t_x));
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

double BgNbdConditionalExpectedPurchasesIfAlive(const BgNbdParams& p, double x, double T,
                                                double t) {
  if (!(t > 0)) return 0;
  x = std::max(0.0, x);
  T = std::max(0.0, T);
  return ExpectedPurchasesGivenAlive(p.r + x, p.b + x, p.a, t / (p.alpha + T));
}

double BgNbdConditionalExpectedPurchases(const BgNbdParams& p, double x, double t_x, double T,
                                         double t) {
  if (!(t > 0)) return 0;
  const double given_alive = BgNbdConditionalExpectedPurchasesIfAlive(p, x, T, t);
  return BgNbdProbabilityAlive(p, std::max(0.0, x), t_x, std::max(0.0, T)) * given_alive;
}

double BgNbdProbabilityAnyPurchase(const BgNbdParams& p, double x, double t_x, double T, double t) {
  if (t <= 0) return 0;
  return BgNbdProbabilityAlive(p, x, t_x, T) * OneMinusRatioPower(p.alpha + T, t, p.r + x);
}

double GammaGammaLogLikelihood(const GammaGammaParams& g, std::span<const RfmSummary> customers) {
  const double common = -std::lgamma(g.q) + g.q * std::log(g.gamma);
  double cached_x = std::numeric_limits<double>::quiet_NaN();
  double per_x = 0;  // the terms that depend on x only
  double total = 0;
  for (const RfmSummary& c : customers) {
    if (!UsableForGammaGamma(c)) continue;
    const double px = g.p * c.x;
    if (!(c.x == cached_x)) {
      cached_x = c.x;
      per_x = std::lgamma(px + g.q) - std::lgamma(px) + common + px * std::log(c.x);
    }
    total += c.weight * (per_x + (px - 1) * std::log(c.monetary) -
                         (px + g.q) * std::log(g.gamma + c.monetary * c.x));
  }
  return total;
}

GammaGammaFit FitGammaGamma(std::span<const RfmSummary> customers, const FitOptions& options) {
  GammaGammaFit fit;
  std::vector<std::pair<double, double>> values;
  for (const RfmSummary& c : customers) {
    if (!UsableForGammaGamma(c) || !std::isfinite(c.monetary)) continue;
    fit.customers += c.weight;
    values.emplace_back(c.monetary, c.weight);
  }
  if (fit.customers <= 0) {
    fit.status = "failed";
    fit.reason = "no repeat customer with a positive spend";
    return fit;
  }
  // Money in units of the median m_x (cents or dollars give the same
  // normalized data); gamma scales back. q enters as log(q - 1): the mean
  // order value p gamma / (q - 1) must be finite.
  const double scale = std::max(WeightedMedian(values), std::numeric_limits<double>::min());
  std::vector<RfmSummary> normalized;
  double mean_value = 0;
  for (const RfmSummary& c : customers) {
    if (!UsableForGammaGamma(c) || !std::isfinite(c.monetary)) continue;
    normalized.push_back(c);
    normalized.back().monetary /= scale;
    mean_value += c.weight * normalized.back().monetary;
  }
  mean_value /= fit.customers;
  std::stable_sort(normalized.begin(), normalized.end(),
                   [](const RfmSummary& l, const RfmSummary& r) { return l.x < r.x; });
  auto normalized_params = [](const std::vector<double>& theta) {
    return GammaGammaParams{std::exp(theta[0]), 1 + std::exp(theta[1]), std::exp(theta[2])};
  };
  auto to_params = [&](const std::vector<double>& theta) {
    GammaGammaParams g = normalized_params(theta);
    g.gamma *= scale;
    return g;
  };
  auto make_objective = [&](double penalizer) {
    return [&, penalizer](const std::vector<double>& theta) {
      for (double v : theta) {
        if (!std::isfinite(v) || std::abs(v) > kBoxLog) return kInfinity;
      }
      const double ll = GammaGammaLogLikelihood(normalized_params(theta), normalized);
      return std::isfinite(ll) ? -ll / fit.customers + Penalty(theta, penalizer) : kInfinity;
    };
  };
  // Starts: unit parameters; moment-based: population mean p gamma / (q-1)
  // = the mean m_x, for q = 3 and p = 1 or 5.
  const double mean = std::max(mean_value, 1e-6);
  const std::vector<std::vector<double>> starts = {
      {0.0, 0.0, 0.0},
      {0.0, std::log(2.0), std::log(2 * mean)},
      {std::log(5.0), std::log(2.0), std::log(2 * mean / 5)},
  };
  Minimum minimum = MinimizeFromStarts(make_objective(0), starts, options);
  if (minimum.point.empty() || !std::isfinite(minimum.value)) {
    fit.status = "failed";
    fit.reason = "no finite log-likelihood from any start";
    fit.evaluations = minimum.evaluations;
    return fit;
  }
  const GammaGammaParams unpenalized = to_params(minimum.point);
  const std::string boundary =
      BoundaryParameters(minimum.point, {"p", "q - 1", "gamma"},
                         {unpenalized.p, unpenalized.q - 1, unpenalized.gamma});
  fit.unpenalized_log_likelihood = GammaGammaLogLikelihood(unpenalized, customers);
  if (!boundary.empty() && options.penalizer > 0) {
    // q - 1 running to 0 (read before the refit moves the point inside).
    const bool heavy = minimum.point[1] < -kBoundaryLog;
    fit.evaluations =
        RefitInsideTheBox(make_objective(options.penalizer), starts[1], minimum, options);
    fit.params = to_params(minimum.point);
    fit.log_likelihood = GammaGammaLogLikelihood(fit.params, customers);
    fit.status = "regularized";
    fit.penalizer = options.penalizer;
    fit.reason = "maximum likelihood: " + boundary + " ran to a boundary" +
                 (heavy ? " (order values so heavy-tailed that the mean is nearly infinite)" : "") +
                 "; refitted with an L2 penalty " + Format("%g", options.penalizer) +
                 " on the log-parameters (log-likelihood " + Format("%.2f", fit.log_likelihood) +
                 " vs " + Format("%.2f", fit.unpenalized_log_likelihood) + " unpenalized)";
  } else {
    fit.params = unpenalized;
    fit.log_likelihood = fit.unpenalized_log_likelihood;
    fit.evaluations = minimum.evaluations;
    if (!boundary.empty()) {
      fit.status = "boundary";
      fit.reason = boundary;
    }
  }
  fit.converged = minimum.converged && std::isfinite(fit.log_likelihood);
  if (!fit.converged && fit.reason.empty()) fit.reason = "optimizer hit its iteration limit";
  return fit;
}

double GammaGammaConditionalExpectedValue(const GammaGammaParams& g, double x, double monetary) {
  if (!(x > 0)) return g.q > 1 ? g.p * g.gamma / (g.q - 1) : kInfinity;
  monetary = std::max(0.0, monetary);
  const double denominator = g.p * x + g.q - 1;
  if (!(denominator > 0)) return kInfinity;
  // p (gamma + x m) / (p x + q - 1), divided term by term so that x m
  // cannot overflow first.
  return g.p * (g.gamma / denominator + monetary * (x / denominator));
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
