// Accuracy metrics for CLV predictions (DESIGN.md "Model": the seed papers'
// MSE/MAE/R²/MAPE, the ZILN paper's normalized Gini and Spearman, decile
// calibration, top-decile precision/recall/F1). Pure functions, no torch.
//
// Conventions (all documented here because they change numbers):
//  * Ties in the prediction are ordered by input index (stable sort), in
//    gain curves, Gini, deciles and the top decile.
//  * Normalized Gini = Gini(ranking by prediction) / Gini(ranking by actual),
//    Gini = 2 * (area under the cumulative-gain curve - 1/2): 1 for a perfect
//    ranking, about 0 for a random one, negative for an inverted one.
//  * Spearman: Pearson correlation of ranks, ties given their average rank.
//  * MAPE averages |pred - actual| / actual over buyers (actual > 0) only.
//  * Degenerate inputs give defined numbers, never a NaN from arithmetic:
//    a non-finite prediction counts as 0 (and in non_finite_predictions);
//    Gini, normalized Gini and Spearman are 0 for a constant prediction or
//    when every actual is equal (all zero: nothing to rank); an empty decile
//    (fewer than 10 users) has 0 users and means 0. Two metrics can be
//    undefined and are then NaN, which the reports print as "n/a" (text) and
//    null (JSON): R2 when every actual is equal (no variance to explain) and
//    MAPE when nobody bought. IsDefined() tells.
//  * Deciles: users sorted by prediction, highest first, cut into 10 groups
//    of n/10 (sizes differ by at most one); decile 1 = highest predictions.
//  * Top decile: the ceil(n/10) highest predictions vs the ceil(n/10)
//    highest actual values (ties in actual by index; users who spent 0 are
//    never "high value"). Precision = hits / ceil(n/10).
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <span>
#include <vector>

namespace clv::models {

struct DecileRow {
  int decile = 0;  // 1 = highest predictions
  size_t users = 0;
  double mean_predicted = 0;
  double mean_actual = 0;
};

struct Metrics {
  size_t users = 0;
  size_t buyers = 0;  // actual > 0
  double mse = 0;
  double mae = 0;
  double r2 = 0;
  double mape_buyers = 0;
  double gini = 0;             // raw Gini of the prediction's ranking
  double normalized_gini = 0;  // gini / gini of the perfect ranking
  double spearman = 0;
  double top_decile_precision = 0;
  double top_decile_recall = 0;
  double top_decile_f1 = 0;
  double total_predicted = 0;
  double total_actual = 0;
  size_t non_finite_predictions = 0;  // counted as 0 above
  std::vector<DecileRow> deciles;
};

// False for the NaN that marks an undefined R2 or MAPE (and any non-finite value).
inline bool IsDefined(double metric) { return metric - metric == 0; }

// All metrics at once. predicted.size() must equal actual.size().
Metrics ComputeMetrics(std::span<const double> predicted, std::span<const double> actual);

double NormalizedGini(std::span<const double> predicted, std::span<const double> actual);
double SpearmanCorrelation(std::span<const double> a, std::span<const double> b);
// Average ranks (1-based) with ties sharing their mean rank.
std::vector<double> AverageRanks(std::span<const double> values);

// Cumulative gain curve: points (share of users, share of total actual) after
// taking users in descending order of `predicted`, at `points`+1 evenly spaced
// user shares 0..1.
struct GainPoint {
  double user_share = 0;
  double value_share = 0;
};
std::vector<GainPoint> GainCurve(std::span<const double> predicted, std::span<const double> actual,
                                 int points = 100);

}  // namespace clv::models
