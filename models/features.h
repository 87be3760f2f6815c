// Feature vectorizer: (event, History before, History after) -> fixed float
// vector. ONE implementation for training, evaluation and serving, so there
// is no train/serve skew.
//
// Layout (kFeatureCount floats):
//   [0, kAggregateBegin)   event features: event-type one-hot, log1p amount,
//                          log1p hours since the previous event and since the
//                          last purchase, first-event / no-purchase-yet flags,
//                          hour-of-day and weekday as sin/cos (UTC).
//   [kAggregateBegin, end) aggregates at a time `now_ms` (the event's time on
//                          Step, the re-score time on Rescore): log-scaled
//                          frequency, monetary, tenure, recency, sessions, cart
//                          adds, views, ..., browsing since the last purchase
//                          (sessions, their mean days after it) and the
//                          decayed recent session count. These also feed the
//                          LSTM's heads. Appending a feature changes
//                          kFeatureCount; older model files are then refused.
// Raw values are standardized with FeatureNorm (mean/scale per feature) that
// the trainer computes and the model file stores.
//
// Thread-safety: pure functions and plain values.
#pragma once

#include <array>
#include <cstdint>
#include <string>

#include "models/scorer.h"

namespace clv::models {

inline constexpr int kFeatureCount = 39;
inline constexpr int kAggregateBegin = 18;
inline constexpr int kAggregateCount = kFeatureCount - kAggregateBegin;

// Stable short name of feature `index` (<= 23 chars, fits Factor::name).
const char* FeatureName(int index);

// Raw (unstandardized) features of one event. `before`/`after` are the
// aggregates before and after UpdateHistory(event). Writes kFeatureCount floats.
// Money features (the amount, average order value, monetary) are log1p of the
// value divided by `money_unit` (LstmPrior::money_unit: 1 for models in the
// training data's currency, the shop's typical order value for portable ones).
void RawStepFeatures(const StepEvent& event, const History& before, const History& after,
                     float* out, double money_unit = 1.0);
// Raw aggregate features of `history` seen at `now_ms` (>= last event).
// Writes kAggregateCount floats; equal to the tail of RawStepFeatures when
// now_ms is the event's time.
void RawAggregateFeatures(const History& history, int64_t now_ms, float* out,
                          double money_unit = 1.0);

// Standardization: standardized = (raw - mean) * inv_scale, clipped to +-kClip.
struct FeatureNorm {
  static constexpr float kClip = 8.0f;
  std::array<float, kFeatureCount> mean{};
  std::array<float, kFeatureCount> scale{};  // 0 entries are treated as 1
  // Identity normalization (mean 0, scale 1).
  static FeatureNorm Identity();
  // In place; `first` is the index of out[0] in the feature layout.
  void Apply(float* values, int count, int first = 0) const;
};

// Running mean/variance (Welford, in double) over raw feature vectors.
class FeatureStatsAccumulator {
 public:
  void Add(const float* raw);  // kFeatureCount floats
  int64_t count() const { return count_; }
  // Scale = standard deviation, or 1 where it is ~0.
  FeatureNorm Finish() const;

 private:
  int64_t count_ = 0;
  std::array<double, kFeatureCount> mean_{};
  std::array<double, kFeatureCount> m2_{};
};

// Convenience: raw + standardized in one call.
inline void StepFeatures(const FeatureNorm& norm, double money_unit, const StepEvent& event,
                         const History& before, const History& after, float* out) {
  RawStepFeatures(event, before, after, out, money_unit);
  norm.Apply(out, kFeatureCount);
}
inline void AggregateFeatures(const FeatureNorm& norm, double money_unit, const History& history,
                              int64_t now_ms, float* out) {
  RawAggregateFeatures(history, now_ms, out, money_unit);
  norm.Apply(out, kAggregateCount, kAggregateBegin);
}

}  // namespace clv::models
