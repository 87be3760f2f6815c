#include "models/features.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "common/units.h"

namespace clv::models {

namespace {

constexpr std::array<const char*, kFeatureCount> kFeatureNames = {
    // event features
    "type_page_view", "type_search", "type_add_to_cart", "type_remove_from_cart", "type_wishlist",
    "type_ad_click", "type_purchase", "type_refund", "type_profile", "amount", "hours_since_event",
    "hours_since_purchase", "first_event", "no_purchase_yet", "hour_sin", "hour_cos", "weekday_sin",
    "weekday_cos",
    // aggregates at `now`
    "purchase_days", "purchases", "avg_order_value", "monetary", "tenure_days", "recency_days",
    "idle_days", "purchase_span_days", "sessions", "cart_adds", "views", "events", "refunds",
    "session_activity", "mean_gap_days", "order_value_spread", "has_purchased", "overdue_ratio",
    "sessions_since_buy", "browse_days_after_buy", "recent_sessions"};

float LogDays(int64_t from_ms, int64_t to_ms) {
  return static_cast<float>(std::log1p(std::max<double>(0.0, double(to_ms - from_ms) / kMsPerDay)));
}
float LogHours(int64_t from_ms, int64_t to_ms) {
  return static_cast<float>(
      std::log1p(std::max<double>(0.0, double(to_ms - from_ms) / kMsPerHour)));
}
float Log1p(double value) { return static_cast<float>(std::log1p(std::max(0.0, value))); }

}  // namespace

const char* FeatureName(int index) {
  return index >= 0 && index < kFeatureCount ? kFeatureNames[index] : "unknown";
}

void RawAggregateFeatures(const History& h, int64_t now_ms, float* out, double money_unit) {
  const bool purchased = h.purchases > 0;
  out[0] = Log1p(h.purchase_days);
  out[1] = Log1p(h.purchases);
  out[2] = purchased ? Log1p(h.purchase_value_sum / h.purchases / money_unit) : 0.0f;
  out[3] = Log1p(h.monetary_total / money_unit);
  out[4] = h.first_event_ms != 0 ? LogDays(h.first_event_ms, now_ms) : 0.0f;
  out[5] = purchased ? LogDays(h.last_purchase_ms, now_ms) : 0.0f;
  out[6] = h.last_event_ms != 0 ? LogDays(h.last_event_ms, now_ms) : 0.0f;
  out[7] = purchased ? LogDays(h.first_purchase_ms, h.last_purchase_ms) : 0.0f;
  out[8] = Log1p(h.sessions);
  out[9] = Log1p(h.cart_adds);
  out[10] = Log1p(h.views);
  out[11] = Log1p(h.events);
  out[12] = Log1p(h.refunds);
  out[13] = Log1p(h.recent_activity);
  out[14] = Log1p(h.ewma_gap_days);
  double spread = 0;
  if (h.purchases > 1) {
    double mean = h.log_value_sum / h.purchases;
    spread = std::sqrt(std::max(0.0, h.log_value_sq_sum / h.purchases - mean * mean));
  }
  out[15] = static_cast<float>(spread);
  out[16] = purchased ? 1.0f : 0.0f;
  double overdue = 0;
  if (purchased) {
    double quiet_days = std::max(0.0, double(now_ms - h.last_purchase_ms) / kMsPerDay);
    overdue = quiet_days / std::max(1.0, h.ewma_gap_days);
  }
  out[17] = Log1p(overdue);
  out[18] = Log1p(h.sessions_since_purchase);
  out[19] = h.sessions_since_purchase > 0
                ? Log1p(h.session_days_after_purchase / h.sessions_since_purchase)
                : 0.0f;
  double recent = 0;
  if (h.last_event_ms != 0) {
    const double idle_days = std::max(0.0, double(now_ms - h.last_event_ms) / kMsPerDay);
    recent = h.recent_sessions * std::exp(-idle_days / kRecentSessionsDays);
  }
  out[20] = Log1p(recent);
}

void RawStepFeatures(const StepEvent& event, const History& before, const History& after,
                     float* out, double money_unit) {
  std::fill(out, out + kFeatureCount, 0.0f);
  auto kind = static_cast<int>(event.kind);
  if (kind >= 0 && kind < kEventKindCount) out[kind] = 1.0f;
  out[9] = Log1p(event.amount / money_unit);
  const bool first = before.events == 0;
  out[10] = first ? 0.0f : LogHours(before.last_event_ms, event.ts_ms);
  out[11] = before.purchases > 0 ? LogHours(before.last_purchase_ms, event.ts_ms) : 0.0f;
  out[12] = first ? 1.0f : 0.0f;
  out[13] = before.purchases == 0 ? 1.0f : 0.0f;
  // Hour of day and weekday in UTC; 1970-01-01 was a Thursday (weekday 4, Sunday = 0).
  int64_t day = FloorDiv(event.ts_ms, kMsPerDay);
  double hour = double(event.ts_ms - day * kMsPerDay) / double(kMsPerHour);
  int weekday = static_cast<int>(((day + 4) % 7 + 7) % 7);
  constexpr double kTwoPi = 2.0 * std::numbers::pi;
  out[14] = static_cast<float>(std::sin(kTwoPi * hour / 24.0));
  out[15] = static_cast<float>(std::cos(kTwoPi * hour / 24.0));
  out[16] = static_cast<float>(std::sin(kTwoPi * weekday / 7.0));
  out[17] = static_cast<float>(std::cos(kTwoPi * weekday / 7.0));
  RawAggregateFeatures(after, event.ts_ms, out + kAggregateBegin, money_unit);
}

FeatureNorm FeatureNorm::Identity() {
  FeatureNorm norm;
  norm.scale.fill(1.0f);
  return norm;
}

void FeatureNorm::Apply(float* values, int count, int first) const {
  for (int i = 0; i < count; ++i) {
    float s = scale[first + i];
    float inv = s > 0 ? 1.0f / s : 1.0f;
    float v = (values[i] - mean[first + i]) * inv;
    values[i] = std::clamp(v, -kClip, kClip);
  }
}

void FeatureStatsAccumulator::Add(const float* raw) {
  ++count_;
  for (int i = 0; i < kFeatureCount; ++i) {
    double delta = raw[i] - mean_[i];
    mean_[i] += delta / double(count_);
    m2_[i] += delta * (raw[i] - mean_[i]);
  }
}

FeatureNorm FeatureStatsAccumulator::Finish() const {
  FeatureNorm norm = FeatureNorm::Identity();
  if (count_ == 0) return norm;
  for (int i = 0; i < kFeatureCount; ++i) {
    norm.mean[i] = static_cast<float>(mean_[i]);
    double sd = count_ > 1 ? std::sqrt(m2_[i] / double(count_ - 1)) : 0.0;
    norm.scale[i] = sd > 1e-6 ? static_cast<float>(sd) : 1.0f;
  }
  return norm;
}

}  // namespace clv::models
