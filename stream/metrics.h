// Prometheus metrics: a small registry of counters, gauges and fixed-bucket
// histograms with labels, rendered in the Prometheus text exposition format
// 0.0.4 (what GET /metrics serves), plus ServiceMetrics, the service's own set.
//
// Contract:
//  * Names follow Prometheus conventions and are checked at registration:
//    [a-zA-Z_:][a-zA-Z0-9_:]*, counters end in `_total`, label names
//    [a-zA-Z_][a-zA-Z0-9_]* (no `__` prefix, `le` reserved for histograms).
//    A bad or duplicate name, or a label-value count that does not match the
//    family, is a programming error: std::invalid_argument.
//  * Render() writes every family in registration order: `# HELP`, `# TYPE`,
//    then its series sorted by label values. Label values and help text are
//    escaped (backslash, double quote, newline). Histograms are cumulative
//    `_bucket{le="..."}` lines ending in le="+Inf", then `_sum` and `_count`
//    (`_count` always equals the +Inf bucket).
//
// Thread-safety: Inc/Set/Add/Observe are lock-free atomics, safe from any
// thread (the processing thread increments; the HTTP thread renders).
// Family::WithLabels takes the family's mutex: look a series up once (per
// topic, per partition) and keep the reference; references stay valid until
// that series is removed (Remove/Clear) or the registry is destroyed.
//
// Example:
//   ServiceMetrics metrics;
//   Counter& consumed = metrics.events_consumed.WithLabels({"orders"});
//   consumed.Inc(batch.size());                         // processing thread
//   metrics.batch_duration_seconds.Observe(0.012);
//   std::string text = metrics.registry.Render();       // HTTP thread
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace clv::stream {

// Label values of one series, in the order of its family's label names.
using LabelValues = std::vector<std::string>;

class Counter {
 public:
  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_ = 0;
};

class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_ = 0;
};

class Histogram {
 public:
  // `upper_bounds`: strictly increasing, finite; +Inf is implicit.
  explicit Histogram(std::vector<double> upper_bounds);
  // O(log buckets); NaN is ignored.
  void Observe(double value);

  struct Snapshot {
    std::vector<double> upper_bounds;
    std::vector<uint64_t> cumulative_counts;  // one per bound, then +Inf
    double sum = 0;
    uint64_t count = 0;  // == cumulative_counts.back()
  };
  Snapshot Collect() const;
  const std::vector<double>& upper_bounds() const { return upper_bounds_; }

 private:
  const std::vector<double> upper_bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;  // per bucket, not cumulative
  std::atomic<double> sum_ = 0;
};

// Bucket helpers: start, start*factor, ... (count bounds).
std::vector<double> ExponentialBuckets(double start, double factor, int count);

enum class MetricType { kCounter, kGauge, kHistogram };

// Common part of a family: name, help, label names, rendering.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, MetricType type,
             std::vector<std::string> label_names);
  virtual ~FamilyBase() = default;
  FamilyBase(const FamilyBase&) = delete;
  FamilyBase& operator=(const FamilyBase&) = delete;
  const std::string& name() const { return name_; }
  // Appends HELP, TYPE and every series.
  void Render(std::string* out) const;

 protected:
  virtual void RenderSeries(std::string* out) const = 0;
  void CheckLabelCount(const LabelValues& values) const;
  // `name{labels}` with `extra_label` (e.g. le="0.5") appended when not empty.
  void AppendSeriesName(std::string* out, std::string_view suffix, const LabelValues& values,
                        std::string_view extra_label) const;

  const std::string name_;
  const std::string help_;
  const MetricType type_;
  const std::vector<std::string> label_names_;
};

// All series of one metric name, one per combination of label values.
template <class Metric>
class Family final : public FamilyBase {
 public:
  using Factory = std::function<std::unique_ptr<Metric>()>;
  Family(std::string name, std::string help, MetricType type, std::vector<std::string> label_names,
         Factory factory)
      : FamilyBase(std::move(name), std::move(help), type, std::move(label_names)),
        factory_(std::move(factory)) {}

  // The series for these label values, created (at zero) on first use.
  Metric& WithLabels(const LabelValues& values) {
    CheckLabelCount(values);
    std::lock_guard lock(mutex_);
    auto& slot = series_[values];
    if (!slot) slot = factory_();
    return *slot;
  }
  // Drops one series (e.g. the lag gauge of a revoked partition). References
  // to it become dangling: only the thread that updates it may call this.
  void Remove(const LabelValues& values) {
    std::lock_guard lock(mutex_);
    series_.erase(values);
  }
  void Clear() {
    std::lock_guard lock(mutex_);
    series_.clear();
  }
  size_t size() const {
    std::lock_guard lock(mutex_);
    return series_.size();
  }

 private:
  void RenderSeries(std::string* out) const override;

  const Factory factory_;
  mutable std::mutex mutex_;
  std::map<LabelValues, std::unique_ptr<Metric>> series_;
};

// Rendering per metric type (defined in metrics.cpp).
template <>
void Family<Counter>::RenderSeries(std::string* out) const;
template <>
void Family<Gauge>::RenderSeries(std::string* out) const;
template <>
void Family<Histogram>::RenderSeries(std::string* out) const;

class MetricsRegistry {
 public:
  MetricsRegistry() = default;
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Unlabelled metrics (a family with no labels, its one series).
  Counter& AddCounter(std::string name, std::string help);
  Gauge& AddGauge(std::string name, std::string help);
  Histogram& AddHistogram(std::string name, std::string help, std::vector<double> upper_bounds);
  // Labelled families.
  Family<Counter>& AddCounterFamily(std::string name, std::string help,
                                    std::vector<std::string> label_names);
  Family<Gauge>& AddGaugeFamily(std::string name, std::string help,
                                std::vector<std::string> label_names);
  Family<Histogram>& AddHistogramFamily(std::string name, std::string help,
                                        std::vector<std::string> label_names,
                                        std::vector<double> upper_bounds);

  // Runs at the start of every Render(), on the rendering thread: the place to
  // refresh gauges that are cheaper to read on demand (RocksDB properties).
  // Hooks must be thread-safe. Register hooks before rendering starts.
  void AddCollectHook(std::function<void()> hook);

  // Text exposition format 0.0.4.
  std::string Render() const;

 private:
  void CheckNewName(const std::string& name) const;

  mutable std::mutex mutex_;  // guards families_ and hooks_ (registration vs render)
  std::vector<std::unique_ptr<FamilyBase>> families_;
  std::vector<std::function<void()>> hooks_;
};

// Events/s and the like from an ever-growing total, over a sliding window.
// Thread-safe (a mutex; meant for the HTTP thread, once per request).
class RateMeter {
 public:
  explicit RateMeter(int64_t window_ms = 5000) : window_ms_(window_ms) {}
  // Records `total` at `now_ms` (a steady clock) and returns the rate per
  // second over the last window (0 until two samples are at least 1 ms apart).
  double Update(int64_t now_ms, double total);

 private:
  const int64_t window_ms_;
  std::mutex mutex_;
  std::vector<std::pair<int64_t, double>> samples_;  // oldest first
};

// The metrics of the clvstream service (DESIGN.md, issue 4). Names in the
// comments; `topic` is the input topic, `kind` the alert kind.
struct ServiceMetrics {
  ServiceMetrics();
  ServiceMetrics(const ServiceMetrics&) = delete;
  ServiceMetrics& operator=(const ServiceMetrics&) = delete;

  // Replaces the model info series: clv_model_info{scorer,version} 1.
  void SetModelInfo(const std::string& scorer, const std::string& version);

  MetricsRegistry registry;  // first: the members below live in it

  // clv_events_consumed_total{topic}: read from Kafka.
  Family<Counter>& events_consumed;
  // clv_events_processed_total{topic}: folded into state and scored.
  Family<Counter>& events_processed;
  // clv_events_dead_lettered_total{topic}: malformed, sent to the dead-letter topic.
  Family<Counter>& events_dead_lettered;
  // clv_events_deduplicated_total{topic}: duplicates skipped.
  Family<Counter>& events_deduplicated;
  // clv_batch_events: events per micro-batch.
  Histogram& batch_events;
  // clv_batch_duration_seconds: one micro-batch, poll end to commit.
  Histogram& batch_duration_seconds;
  // clv_event_to_score_seconds: Kafka timestamp of an event to its score sent.
  Histogram& event_to_score_seconds;
  // clv_consumer_lag_messages{topic,partition}: high watermark - position.
  Family<Gauge>& consumer_lag;
  // clv_state_users: users with stored state.
  Gauge& users_in_state;
  // clv_state_disk_bytes: RocksDB files on disk.
  Gauge& state_disk_bytes;
  // clv_model_info{scorer,version} 1 (use SetModelInfo).
  Family<Gauge>& model_info;
  // clv_scorer_user_steps_total: user-steps computed by the scorer.
  Counter& scorer_user_steps;
  // clv_scorer_user_steps_per_second: scorer throughput in the last batch.
  Gauge& scorer_user_steps_per_second;
  // clv_scorer_nonfinite_total: scores with a NaN/inf output, replaced by
  // the fallback (stream/processor.h "Non-finite scores").
  Counter& scorer_nonfinite;
  // clv_scorer_state_resets_total: users whose recurrent state held a NaN/inf
  // after a step, reset to the initial state (stream/processor.h).
  Counter& scorer_state_resets;
  // clv_alerts_emitted_total{kind}
  Family<Counter>& alerts_emitted;
  // clv_scores_emitted_total
  Counter& scores_emitted;
  // clv_commits_total: state + offsets WriteBatches written.
  Counter& commits;
  // clv_commit_duration_seconds
  Histogram& commit_duration_seconds;
  // clv_restore_*: partitions restored from the state changelog
  // (stream/changelog.h): records, bytes and seconds read, partitions being
  // restored now, replayed events skipped as already in a restored state.
  Counter& restore_records;
  Counter& restore_bytes;
  Gauge& restore_seconds;
  Gauge& restore_partitions_restoring;
  Counter& restore_skipped_events;
  // clv_partitions_assigned_total / clv_partitions_revoked_total: input
  // partitions the group gave this instance / took from it (a cooperative
  // rebalance revokes only the partitions that move).
  Counter& partitions_assigned;
  Counter& partitions_revoked;
  // clv_ready: 1 while /readyz answers 200.
  Gauge& ready;
  // clv_start_time_seconds: process start, Unix time (set by the constructor).
  Gauge& start_time_seconds;
};

}  // namespace clv::stream
