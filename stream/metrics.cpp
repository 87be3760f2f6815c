#include "stream/metrics.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <stdexcept>

namespace clv::stream {
namespace {

bool ValidMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    const bool digit = c >= '0' && c <= '9';
    if (!(letter || (i > 0 && digit))) return false;
  }
  return true;
}

bool ValidLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    const char c = name[i];
    const bool letter = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    const bool digit = c >= '0' && c <= '9';
    if (!(letter || (i > 0 && digit))) return false;
  }
  return true;
}

// Prometheus float: shortest round-trip form, +Inf/-Inf/NaN spelled out.
void AppendDouble(double value, std::string* out) {
  if (std::isnan(value)) {
    *out += "NaN";
  } else if (std::isinf(value)) {
    *out += value > 0 ? "+Inf" : "-Inf";
  } else {
    char buffer[32];
    const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
    out->append(buffer, result.ptr);
  }
}

void AppendUint(uint64_t value, std::string* out) {
  char buffer[24];
  const auto result = std::to_chars(buffer, buffer + sizeof(buffer), value);
  out->append(buffer, result.ptr);
}

// Label value: backslash, double quote and newline escaped.
void AppendLabelValue(std::string_view value, std::string* out) {
  for (const char c : value) {
    switch (c) {
      case '\\': *out += "\\\\"; break;
      case '"': *out += "\\\""; break;
      case '\n': *out += "\\n"; break;
      default: out->push_back(c);
    }
  }
}

// HELP text: backslash and newline escaped.
void AppendHelp(std::string_view help, std::string* out) {
  for (const char c : help) {
    switch (c) {
      case '\\': *out += "\\\\"; break;
      case '\n': *out += "\\n"; break;
      default: out->push_back(c);
    }
  }
}

const char* TypeName(MetricType type) {
  switch (type) {
    case MetricType::kCounter: return "counter";
    case MetricType::kGauge: return "gauge";
    case MetricType::kHistogram: return "histogram";
  }
  return "untyped";
}

void CheckBuckets(const std::string& name, const std::vector<double>& upper_bounds) {
  for (size_t i = 0; i < upper_bounds.size(); ++i) {
    if (!std::isfinite(upper_bounds[i]) || (i > 0 && upper_bounds[i] <= upper_bounds[i - 1])) {
      throw std::invalid_argument(
          "metric " + name + ": histogram bounds must be finite and strictly increasing (bound " +
          std::to_string(i) + ")");
    }
  }
}

}  // namespace

// --- Histogram ---------------------------------------------------------------

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      counts_(std::make_unique<std::atomic<uint64_t>[]>(upper_bounds_.size() + 1)) {
  CheckBuckets("histogram", upper_bounds_);
}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  // First bound >= value (buckets are `le`: value <= bound); past the end = +Inf.
  const size_t bucket = static_cast<size_t>(
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin());
  counts_[bucket].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::Collect() const {
  Snapshot snapshot;
  snapshot.upper_bounds = upper_bounds_;
  snapshot.cumulative_counts.resize(upper_bounds_.size() + 1);
  uint64_t running = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) {
    running += counts_[i].load(std::memory_order_relaxed);
    snapshot.cumulative_counts[i] = running;
  }
  snapshot.count = running;
  snapshot.sum = sum_.load(std::memory_order_relaxed);
  return snapshot;
}

std::vector<double> ExponentialBuckets(double start, double factor, int count) {
  if (!(start > 0) || !(factor > 1) || count < 1) {
    throw std::invalid_argument("ExponentialBuckets: need start > 0, factor > 1, count >= 1");
  }
  std::vector<double> bounds;
  bounds.reserve(static_cast<size_t>(count));
  double bound = start;
  for (int i = 0; i < count; ++i, bound *= factor) bounds.push_back(bound);
  return bounds;
}

// --- Families ----------------------------------------------------------------

FamilyBase::FamilyBase(std::string name, std::string help, MetricType type,
                       std::vector<std::string> label_names)
    : name_(std::move(name)),
      help_(std::move(help)),
      type_(type),
      label_names_(std::move(label_names)) {
  if (!ValidMetricName(name_)) {
    throw std::invalid_argument("metric name '" + name_ + "': must match [a-zA-Z_:][a-zA-Z0-9_:]*");
  }
  if (type_ == MetricType::kCounter && !name_.ends_with("_total")) {
    throw std::invalid_argument("metric " + name_ + ": counter names end in _total");
  }
  for (size_t i = 0; i < label_names_.size(); ++i) {
    const std::string& label = label_names_[i];
    if (!ValidLabelName(label)) {
      throw std::invalid_argument("metric " + name_ + ": label name '" + label +
                                  "' must match [a-zA-Z_][a-zA-Z0-9_]* without a __ prefix");
    }
    if (type_ == MetricType::kHistogram && label == "le") {
      throw std::invalid_argument("metric " + name_ +
                                  ": label 'le' is reserved for histogram buckets");
    }
    if (std::find(label_names_.begin(), label_names_.begin() + static_cast<std::ptrdiff_t>(i),
                  label) != label_names_.begin() + static_cast<std::ptrdiff_t>(i)) {
      throw std::invalid_argument("metric " + name_ + ": label '" + label + "' listed twice");
    }
  }
}

void FamilyBase::CheckLabelCount(const LabelValues& values) const {
  if (values.size() != label_names_.size()) {
    throw std::invalid_argument("metric " + name_ + ": expected " +
                                std::to_string(label_names_.size()) + " label values, got " +
                                std::to_string(values.size()));
  }
}

void FamilyBase::Render(std::string* out) const {
  *out += "# HELP ";
  *out += name_;
  out->push_back(' ');
  AppendHelp(help_, out);
  *out += "\n# TYPE ";
  *out += name_;
  out->push_back(' ');
  *out += TypeName(type_);
  out->push_back('\n');
  RenderSeries(out);
}

void FamilyBase::AppendSeriesName(std::string* out, std::string_view suffix,
                                  const LabelValues& values, std::string_view extra_label) const {
  *out += name_;
  *out += suffix;
  if (values.empty() && extra_label.empty()) return;
  out->push_back('{');
  for (size_t i = 0; i < values.size(); ++i) {
    if (i > 0) out->push_back(',');
    *out += label_names_[i];
    *out += "=\"";
    AppendLabelValue(values[i], out);
    out->push_back('"');
  }
  if (!extra_label.empty()) {
    if (!values.empty()) out->push_back(',');
    *out += extra_label;
  }
  out->push_back('}');
}

template <>
void Family<Counter>::RenderSeries(std::string* out) const {
  std::lock_guard lock(mutex_);
  for (const auto& [values, counter] : series_) {
    AppendSeriesName(out, "", values, "");
    out->push_back(' ');
    AppendUint(counter->value(), out);
    out->push_back('\n');
  }
}

template <>
void Family<Gauge>::RenderSeries(std::string* out) const {
  std::lock_guard lock(mutex_);
  for (const auto& [values, gauge] : series_) {
    AppendSeriesName(out, "", values, "");
    out->push_back(' ');
    AppendDouble(gauge->value(), out);
    out->push_back('\n');
  }
}

template <>
void Family<Histogram>::RenderSeries(std::string* out) const {
  std::lock_guard lock(mutex_);
  std::string le;
  for (const auto& [values, histogram] : series_) {
    const Histogram::Snapshot snapshot = histogram->Collect();
    for (size_t i = 0; i < snapshot.cumulative_counts.size(); ++i) {
      le = "le=\"";
      if (i < snapshot.upper_bounds.size()) {
        AppendDouble(snapshot.upper_bounds[i], &le);
      } else {
        le += "+Inf";
      }
      le.push_back('"');
      AppendSeriesName(out, "_bucket", values, le);
      out->push_back(' ');
      AppendUint(snapshot.cumulative_counts[i], out);
      out->push_back('\n');
    }
    AppendSeriesName(out, "_sum", values, "");
    out->push_back(' ');
    AppendDouble(snapshot.sum, out);
    out->push_back('\n');
    AppendSeriesName(out, "_count", values, "");
    out->push_back(' ');
    AppendUint(snapshot.count, out);
    out->push_back('\n');
  }
}

// --- Registry ----------------------------------------------------------------

void MetricsRegistry::CheckNewName(const std::string& name) const {
  for (const auto& family : families_) {
    if (family->name() == name)
      throw std::invalid_argument("metric " + name + ": registered twice");
  }
}

Family<Counter>& MetricsRegistry::AddCounterFamily(std::string name, std::string help,
                                                   std::vector<std::string> label_names) {
  std::lock_guard lock(mutex_);
  CheckNewName(name);
  auto family = std::make_unique<Family<Counter>>(std::move(name), std::move(help),
                                                  MetricType::kCounter, std::move(label_names),
                                                  [] { return std::make_unique<Counter>(); });
  Family<Counter>& result = *family;
  families_.push_back(std::move(family));
  return result;
}

Family<Gauge>& MetricsRegistry::AddGaugeFamily(std::string name, std::string help,
                                               std::vector<std::string> label_names) {
  std::lock_guard lock(mutex_);
  CheckNewName(name);
  auto family = std::make_unique<Family<Gauge>>(std::move(name), std::move(help),
                                                MetricType::kGauge, std::move(label_names),
                                                [] { return std::make_unique<Gauge>(); });
  Family<Gauge>& result = *family;
  families_.push_back(std::move(family));
  return result;
}

Family<Histogram>& MetricsRegistry::AddHistogramFamily(std::string name, std::string help,
                                                       std::vector<std::string> label_names,
                                                       std::vector<double> upper_bounds) {
  CheckBuckets(name, upper_bounds);
  std::lock_guard lock(mutex_);
  CheckNewName(name);
  auto family = std::make_unique<Family<Histogram>>(
      std::move(name), std::move(help), MetricType::kHistogram, std::move(label_names),
      [bounds = std::move(upper_bounds)] { return std::make_unique<Histogram>(bounds); });
  Family<Histogram>& result = *family;
  families_.push_back(std::move(family));
  return result;
}

Counter& MetricsRegistry::AddCounter(std::string name, std::string help) {
  return AddCounterFamily(std::move(name), std::move(help), {}).WithLabels({});
}

Gauge& MetricsRegistry::AddGauge(std::string name, std::string help) {
  return AddGaugeFamily(std::move(name), std::move(help), {}).WithLabels({});
}

Histogram& MetricsRegistry::AddHistogram(std::string name, std::string help,
                                         std::vector<double> upper_bounds) {
  return AddHistogramFamily(std::move(name), std::move(help), {}, std::move(upper_bounds))
      .WithLabels({});
}

void MetricsRegistry::AddCollectHook(std::function<void()> hook) {
  std::lock_guard lock(mutex_);
  hooks_.push_back(std::move(hook));
}

std::string MetricsRegistry::Render() const {
  std::lock_guard lock(mutex_);
  for (const auto& hook : hooks_) hook();
  std::string out;
  out.reserve(4096);
  for (const auto& family : families_) family->Render(&out);
  return out;
}

// --- RateMeter ---------------------------------------------------------------

double RateMeter::Update(int64_t now_ms, double total) {
  std::lock_guard lock(mutex_);
  samples_.emplace_back(now_ms, total);
  // Keep the newest sample older than the window as the baseline.
  size_t drop = 0;
  while (drop + 1 < samples_.size() && samples_[drop + 1].first <= now_ms - window_ms_) ++drop;
  samples_.erase(samples_.begin(), samples_.begin() + static_cast<std::ptrdiff_t>(drop));
  const auto& [first_ms, first_total] = samples_.front();
  const int64_t elapsed_ms = now_ms - first_ms;
  if (elapsed_ms < 1) return 0;
  return (total - first_total) * 1000.0 / static_cast<double>(elapsed_ms);
}

// --- ServiceMetrics ----------------------------------------------------------

namespace {
const std::vector<double> kLatencyBuckets = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                                             0.25,   0.5,   1,      2.5,   5,    10,    30,   60};
const std::vector<double> kBatchSizeBuckets = {1,    10,   50,    100,   500,  1000,
                                               2000, 5000, 10000, 20000, 50000};
}  // namespace

ServiceMetrics::ServiceMetrics()
    : events_consumed(registry.AddCounterFamily("clv_events_consumed_total",
                                                "Input events read from Kafka, per input topic.",
                                                {"topic"})),
      events_processed(registry.AddCounterFamily(
          "clv_events_processed_total",
          "Input events folded into user state and scored, per input topic.", {"topic"})),
      events_dead_lettered(registry.AddCounterFamily(
          "clv_events_dead_lettered_total",
          "Malformed input events sent to the dead-letter topic, per input topic.", {"topic"})),
      events_deduplicated(registry.AddCounterFamily(
          "clv_events_deduplicated_total",
          "Duplicate input events skipped (event id seen before), per input topic.", {"topic"})),
      batch_events(
          registry.AddHistogram("clv_batch_events", "Events per micro-batch.", kBatchSizeBuckets)),
      batch_duration_seconds(registry.AddHistogram(
          "clv_batch_duration_seconds", "Time to process one micro-batch, from poll to commit.",
          kLatencyBuckets)),
      event_to_score_seconds(registry.AddHistogram(
          "clv_event_to_score_seconds",
          "From an event's Kafka timestamp to the score it produced being sent.", kLatencyBuckets)),
      consumer_lag(
          registry.AddGaugeFamily("clv_consumer_lag_messages",
                                  "High watermark minus consumer position, per assigned partition.",
                                  {"topic", "partition"})),
      users_in_state(registry.AddGauge("clv_state_users", "Users with stored state.")),
      state_disk_bytes(
          registry.AddGauge("clv_state_disk_bytes", "Size of the RocksDB state files on disk.")),
      model_info(registry.AddGaugeFamily("clv_model_info", "The serving model (value is always 1).",
                                         {"scorer", "version"})),
      scorer_user_steps(
          registry.AddCounter("clv_scorer_user_steps_total", "User-steps computed by the scorer.")),
      scorer_user_steps_per_second(registry.AddGauge(
          "clv_scorer_user_steps_per_second", "Scorer throughput during the last micro-batch.")),
      scorer_nonfinite(registry.AddCounter(
          "clv_scorer_nonfinite_total",
          "Scores with a non-finite (NaN/inf) output, published with the fallback instead.")),
      scorer_state_resets(registry.AddCounter(
          "clv_scorer_state_resets_total",
          "Users whose recurrent model state held a NaN/inf after a step, reset to the "
          "initial state.")),
      alerts_emitted(registry.AddCounterFamily("clv_alerts_emitted_total",
                                               "Alerts sent, per alert kind.", {"kind"})),
      scores_emitted(
          registry.AddCounter("clv_scores_emitted_total", "Scores sent to the scores topic.")),
      commits(registry.AddCounter(
          "clv_commits_total",
          "Commits written (user states and input offsets in one RocksDB WriteBatch).")),
      commit_duration_seconds(registry.AddHistogram("clv_commit_duration_seconds",
                                                    "Time to write one commit.", kLatencyBuckets)),
      restore_records(registry.AddCounter("clv_restore_records_total",
                                          "State changelog records read to restore partitions.")),
      restore_bytes(registry.AddCounter("clv_restore_bytes_total",
                                        "State changelog bytes (keys + values) read to restore.")),
      restore_seconds(registry.AddGauge("clv_restore_seconds",
                                        "Seconds spent restoring partitions from the changelog, "
                                        "in total.")),
      restore_partitions_restoring(registry.AddGauge(
          "clv_restore_partitions_restoring",
          "Partitions being restored from the state changelog now (not ready meanwhile).")),
      restore_skipped_events(registry.AddCounter(
          "clv_restore_skipped_events_total",
          "Replayed events skipped because a restored user state already held them (a crash "
          "between the changelog and the local commit).")),
      partitions_assigned(
          registry.AddCounter("clv_partitions_assigned_total",
                              "Input partitions the consumer group assigned to this instance.")),
      partitions_revoked(registry.AddCounter(
          "clv_partitions_revoked_total",
          "Input partitions the consumer group took from this instance (a cooperative "
          "rebalance takes only those that move).")),
      ready(registry.AddGauge("clv_ready",
                              "1 when the service is ready (partitions assigned, state restored, "
                              "model loaded), else 0.")),
      start_time_seconds(
          registry.AddGauge("clv_start_time_seconds", "Start time of the process, Unix seconds.")) {
  const auto now = std::chrono::system_clock::now().time_since_epoch();
  start_time_seconds.Set(std::chrono::duration<double>(now).count());
}

void ServiceMetrics::SetModelInfo(const std::string& scorer, const std::string& version) {
  model_info.Clear();
  model_info.WithLabels({scorer, version}).Set(1);
}

}  // namespace clv::stream
