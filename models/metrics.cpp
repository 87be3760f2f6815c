#include "models/metrics.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

namespace clv::models {

namespace {

// Indices ordered by descending key, ties by index.
std::vector<size_t> DescendingOrder(std::span<const double> key) {
  std::vector<size_t> order(key.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return key[a] > key[b]; });
  return order;
}

// Gini of the ranking `order` on `actual`: 2 * (area under gain curve) - 1,
// with the area computed by the trapezoid rule over users.
double GiniOfOrder(const std::vector<size_t>& order, std::span<const double> actual) {
  const size_t n = order.size();
  double total = 0;
  for (double a : actual) total += a;
  if (n == 0 || total == 0) return 0;
  double cumulative = 0, area = 0;
  for (size_t i = 0; i < n; ++i) {
    double previous = cumulative;
    cumulative += actual[order[i]] / total;
    area += 0.5 * (previous + cumulative) / double(n);
  }
  return 2 * area - 1;
}

double Pearson(const std::vector<double>& a, const std::vector<double>& b) {
  const size_t n = a.size();
  if (n < 2) return 0;
  double mean_a = std::accumulate(a.begin(), a.end(), 0.0) / n;
  double mean_b = std::accumulate(b.begin(), b.end(), 0.0) / n;
  double cov = 0, var_a = 0, var_b = 0;
  for (size_t i = 0; i < n; ++i) {
    cov += (a[i] - mean_a) * (b[i] - mean_b);
    var_a += (a[i] - mean_a) * (a[i] - mean_a);
    var_b += (b[i] - mean_b) * (b[i] - mean_b);
  }
  if (var_a == 0 || var_b == 0) return 0;
  return cov / std::sqrt(var_a * var_b);
}

}  // namespace

std::vector<double> AverageRanks(std::span<const double> values) {
  std::vector<size_t> order(values.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return values[a] < values[b]; });
  std::vector<double> ranks(values.size());
  size_t i = 0;
  while (i < order.size()) {
    size_t j = i;
    while (j + 1 < order.size() && values[order[j + 1]] == values[order[i]]) ++j;
    double rank = 0.5 * double(i + j) + 1.0;
    for (size_t k = i; k <= j; ++k) ranks[order[k]] = rank;
    i = j + 1;
  }
  return ranks;
}

double SpearmanCorrelation(std::span<const double> a, std::span<const double> b) {
  return Pearson(AverageRanks(a), AverageRanks(b));
}

namespace {

bool IsConstant(std::span<const double> values) {
  for (double v : values) {
    if (!(v == values.front())) return false;
  }
  return true;
}

}  // namespace

double NormalizedGini(std::span<const double> predicted, std::span<const double> actual) {
  const size_t n = std::min(predicted.size(), actual.size());
  predicted = predicted.first(n);
  actual = actual.first(n);
  if (n == 0 || IsConstant(predicted)) return 0;
  double perfect = GiniOfOrder(DescendingOrder(actual), actual);
  if (perfect == 0 || !std::isfinite(perfect)) return 0;
  const double gini = GiniOfOrder(DescendingOrder(predicted), actual) / perfect;
  return std::isfinite(gini) ? gini : 0;
}

std::vector<GainPoint> GainCurve(std::span<const double> predicted, std::span<const double> actual,
                                 int points) {
  std::vector<GainPoint> curve;
  const size_t n = predicted.size();
  if (points < 1) points = 1;
  auto order = DescendingOrder(predicted);
  double total = 0;
  for (double a : actual) total += a;
  std::vector<double> cumulative(n + 1, 0.0);
  for (size_t i = 0; i < n; ++i) cumulative[i + 1] = cumulative[i] + actual[order[i]];
  for (int p = 0; p <= points; ++p) {
    double share = double(p) / points;
    size_t taken = static_cast<size_t>(std::llround(share * double(n)));
    curve.push_back({share, total > 0 ? cumulative[taken] / total : 0.0});
  }
  return curve;
}

Metrics ComputeMetrics(std::span<const double> predicted_in, std::span<const double> actual) {
  Metrics m;
  constexpr double kUndefined = std::numeric_limits<double>::quiet_NaN();
  const size_t n = std::min(predicted_in.size(), actual.size());
  actual = actual.first(n);
  std::vector<double> predicted_values(predicted_in.begin(), predicted_in.begin() + n);
  for (double& v : predicted_values) {
    if (!std::isfinite(v)) {
      v = 0;
      ++m.non_finite_predictions;
    }
  }
  std::span<const double> predicted(predicted_values);
  m.users = n;
  if (n == 0) {
    m.r2 = kUndefined;
    m.mape_buyers = kUndefined;
    return m;
  }
  double mean_actual = 0;
  for (size_t i = 0; i < n; ++i) {
    mean_actual += actual[i];
    m.total_predicted += predicted[i];
  }
  m.total_actual = mean_actual;
  mean_actual /= double(n);
  double ss_res = 0, ss_tot = 0, ape = 0;
  for (size_t i = 0; i < n; ++i) {
    double err = predicted[i] - actual[i];
    ss_res += err * err;
    ss_tot += (actual[i] - mean_actual) * (actual[i] - mean_actual);
    m.mae += std::fabs(err);
    if (actual[i] > 0) {
      ++m.buyers;
      ape += std::fabs(err) / actual[i];
    }
  }
  m.mse = ss_res / double(n);
  m.mae /= double(n);
  m.r2 = ss_tot > 0 ? 1 - ss_res / ss_tot : kUndefined;
  m.mape_buyers = m.buyers > 0 ? ape / double(m.buyers) : kUndefined;

  auto by_prediction = DescendingOrder(predicted);
  auto by_actual = DescendingOrder(actual);
  const bool constant = IsConstant(predicted);
  m.gini = constant ? 0 : GiniOfOrder(by_prediction, actual);
  double perfect = GiniOfOrder(by_actual, actual);
  m.normalized_gini = perfect != 0 && !constant ? m.gini / perfect : 0;
  m.spearman = SpearmanCorrelation(predicted, actual);

  for (int d = 0; d < 10; ++d) {
    size_t begin = n * d / 10, end = n * (d + 1) / 10;
    DecileRow row;
    row.decile = d + 1;
    row.users = end - begin;
    for (size_t i = begin; i < end; ++i) {
      row.mean_predicted += predicted[by_prediction[i]];
      row.mean_actual += actual[by_prediction[i]];
    }
    if (row.users > 0) {
      row.mean_predicted /= double(row.users);
      row.mean_actual /= double(row.users);
    }
    m.deciles.push_back(row);
  }

  size_t top = (n + 9) / 10;
  std::vector<char> actual_top(n, 0);
  size_t actual_top_count = 0;
  for (size_t i = 0; i < top; ++i) {
    if (actual[by_actual[i]] > 0) {  // a zero-spend user is never "high value"
      actual_top[by_actual[i]] = 1;
      ++actual_top_count;
    }
  }
  size_t hits = 0;
  for (size_t i = 0; i < top; ++i) hits += actual_top[by_prediction[i]];
  m.top_decile_precision = double(hits) / double(top);
  m.top_decile_recall = actual_top_count > 0 ? double(hits) / double(actual_top_count) : 0;
  double pr = m.top_decile_precision + m.top_decile_recall;
  m.top_decile_f1 = pr > 0 ? 2 * m.top_decile_precision * m.top_decile_recall / pr : 0;
  return m;
}

}  // namespace clv::models
