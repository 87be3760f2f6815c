// Processor: the driver of clvstream for the partitions this instance owns.
// It reads a micro-batch of messages, decodes and validates them (bad ones go
// to the dead-letter topic), drops duplicates, advances each user's scorer
// state one step per event (users stacked into one batched call per round),
// fires stream-time timers for quiet users, publishes scores and alerts, and
// commits user states + input offsets in one RocksDB WriteBatch after the
// sink has acknowledged everything it sent.
//
// Determinism: a micro-batch is processed as if its events were applied one
// by one in partition order. Stream time is kept per input partition number
// (the largest event time seen there) and stored with the offsets, timers fire
// before the first event whose time passes their due time, and a timer's due
// time depends only on the user's aggregates. So (user_id, seq) always names
// the same score, however the input was cut into micro-batches and however
// often the process crashed and replayed. With `stream.emit=per_event` the
// score stream of a replay is byte-identical; with `per_batch` each batch
// emits the latest (user, seq) of each user it touched. Events of one user
// must come from one partition number of the input topics (co-partitioned
// topics, keyed by user id) for this to hold across several input topics.
//
// Thread-safety: one thread drives a Processor (ProcessBatch, Commit and the
// rebalance callbacks run on the polling thread). Counters() may be read from
// any thread.
#pragma once

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "connectors/kafka.h"
#include "models/scorer.h"
#include "state/state_store.h"
#include "stream/decoder.h"
#include "stream/event.h"

namespace clv::stream {

struct ServiceMetrics;

// Running totals, readable from any thread.
struct ProcessorCounters {
  std::atomic<int64_t> consumed{0};
  std::atomic<int64_t> processed{0};  // events folded into state
  std::atomic<int64_t> dead_lettered{0};
  std::atomic<int64_t> duplicates{0};
  std::atomic<int64_t> timer_rescores{0};
  std::atomic<int64_t> scores_emitted{0};
  std::atomic<int64_t> alerts_emitted{0};
  std::atomic<int64_t> commits{0};
  std::atomic<int64_t> batches{0};
  std::atomic<int64_t> users_seen{0};  // users created
  std::atomic<int64_t> scorer_steps{0};
  std::atomic<int64_t> scorer_nanos{0};
  // Where the wall time of the service loop goes (nanoseconds, summed):
  // waiting for input, processing batches, waiting for the producer's
  // acknowledgements before a commit, and writing the RocksDB batch.
  std::atomic<int64_t> poll_nanos{0};
  std::atomic<int64_t> process_nanos{0};
  std::atomic<int64_t> flush_nanos{0};
  std::atomic<int64_t> store_nanos{0};
};

// Adds the nanoseconds since `started` to `counter` when it goes out of scope.
class StageTimer {
 public:
  explicit StageTimer(std::atomic<int64_t>& counter)
      : counter_(counter), started_(std::chrono::steady_clock::now()) {}
  ~StageTimer() {
    counter_.fetch_add(std::chrono::duration_cast<std::chrono::nanoseconds>(
                           std::chrono::steady_clock::now() - started_)
                           .count(),
                       std::memory_order_relaxed);
  }
  StageTimer(const StageTimer&) = delete;
  StageTimer& operator=(const StageTimer&) = delete;

 private:
  std::atomic<int64_t>& counter_;
  std::chrono::steady_clock::time_point started_;
};

// Event-to-score latency: from the input message's timestamp to the moment
// the broker acknowledged the score (measured at commit, after the flush).
// Log-scale buckets from 0.1 ms to ~100 s; quantiles are bucket upper bounds.
class LatencyHistogram {
 public:
  static constexpr int kBuckets = 64;
  void Record(double millis);
  double Quantile(double q) const;  // ms; 0 when empty
  int64_t count() const { return count_; }
  void Reset();
  static double BucketUpperMs(int bucket);

 private:
  std::array<int64_t, kBuckets> counts_{};
  int64_t count_ = 0;
};

// A user's score was computed (every event and timer re-score, emitted or
// not), for the service's live population views (stage counts, CLV
// distribution, top users). Views into the processor's memory: valid only
// during the callback.
struct UserScoreChange {
  std::string_view user_id;
  bool new_user = false;  // the user had no state before this score
  state::Stage previous_stage = state::Stage::kPotential;  // meaningless when new_user
  state::Stage stage = state::Stage::kPotential;
  double previous_clv = 0;  // meaningless when new_user
  double clv = 0;
  double churn_risk = 0;
};

// An alert the processor sent to the alerts topic. Views valid only during
// the callback; `detail_json` and `score_json` are JSON texts.
struct AlertRecord {
  std::string_view kind;  // stage_change, churn_risk, spend_anomaly
  std::string_view user_id;
  std::string_view detail_json;
  std::string_view score_json;
};

// One published score, also kept for the terminal view.
struct ScoreRecord {
  std::string user_id;
  uint64_t seq = 0;
  double clv = 0;
  double churn_risk = 0;
  std::string json;
};

class Processor {
 public:
  // `store`, `scorer` and `sink` are borrowed and must outlive the Processor.
  Processor(const config::Config& config, state::StateStore& store, models::Scorer& scorer,
            connectors::KafkaSink& sink);
  ~Processor();
  Processor(const Processor&) = delete;
  Processor& operator=(const Processor&) = delete;

  // Optional observers (borrowed; may be null).
  void set_metrics(ServiceMetrics* metrics) { metrics_ = metrics; }
  // Called with each emitted score (on the processing thread).
  void set_score_observer(std::function<void(const ScoreRecord&)> observer) {
    score_observer_ = std::move(observer);
  }
  // Called for every computed score, and for every alert sent (processing thread).
  void set_user_observer(std::function<void(const UserScoreChange&)> observer) {
    user_observer_ = std::move(observer);
  }
  void set_alert_observer(std::function<void(const AlertRecord&)> observer) {
    alert_observer_ = std::move(observer);
  }

  // Processes one micro-batch. Messages of partitions not assigned any more
  // are ignored. On error nothing of the batch is committed; the caller should
  // stop (a restart replays from the last commit).
  connectors::Status ProcessBatch(const std::vector<connectors::Message>& messages);

  // Makes everything processed so far durable: waits for the sink to
  // acknowledge all scores, alerts and dead letters, then writes dirty user
  // states, timer changes, stream times and input offsets in one WriteBatch.
  connectors::Status Commit();
  bool HasUncommitted() const { return !dirty_.empty() || !pending_offsets_.empty(); }
  // Commits are two steps so that the next micro-batch runs while the broker
  // acknowledges the last one's outputs:
  //  Seal() closes what was processed since the last seal into one pending
  //  commit (states, timers, event ids, offsets, stream time), tagged with
  //  the producer's Mark() of everything sent so far;
  //  WriteAcknowledged(max_pending) writes, in order, each pending commit
  //  whose outputs are all acknowledged, and waits (up to the flush timeout)
  //  while more than max_pending remain. A commit is never written before
  //  its outputs are acknowledged, so crash safety is that of Commit().
  // Commit() is Seal() + WriteAcknowledged(0): everything written.
  connectors::Status Seal();
  connectors::Status WriteAcknowledged(int max_pending);
  // Pending commits (sealed, not yet written).
  size_t sealed_count() const { return sealed_.size(); }

  // Rebalance hooks (connectors::SourceCallbacks).
  std::optional<int64_t> StartOffset(const connectors::TopicPartition& partition);
  void OnAssigned(const std::vector<connectors::TopicPartition>& partitions);
  void OnRevoked(const std::vector<connectors::TopicPartition>& partitions);

  const ProcessorCounters& counters() const { return counters_; }
  // The service loop times its waits for input into the same counters.
  std::atomic<int64_t>& mutable_poll_nanos() { return counters_.poll_nanos; }
  // Latency of everything committed since the last Reset() (processing thread only).
  LatencyHistogram& latency() { return latency_; }
  // Any thread: the processing thread forgets the latency recorded so far
  // before it records the next sample (e.g. to leave a warm-up out).
  void RequestLatencyReset() { latency_reset_requested_.store(true); }
  const std::string& model_version() const { return model_version_; }
  // The first error met inside a rebalance callback (those cannot return one).
  const std::string& callback_error() const { return callback_error_; }

 private:
  struct CachedUser;
  struct Op;
  struct UserWork;

  connectors::Status ProcessBatchImpl(const std::vector<connectors::Message>& messages);
  connectors::Status LoadUsers(const std::vector<std::string>& user_ids);
  connectors::Status SendDeadLetter(const connectors::Message& message, const std::string& reason);
  std::string BuildScoreJson(const std::string& user_id, const CachedUser& user, const Op& op,
                             const models::Score& score, double prev_clv) const;
  connectors::Status EmitAlert(const std::string& user_id, const std::string& kind,
                               const std::string& detail, const std::string& score_json);
  int64_t NextTimerMs(const CachedUser& user) const;
  void EvictIfNeeded();
  // Whether an event id was folded into a sealed, not yet written commit.
  bool InSealed(const std::pair<int32_t, uint64_t>& id) const;

  struct SealedCommit {
    uint64_t mark = 0;  // KafkaSink::Mark() after its outputs
    state::CommitBatch batch;
    std::set<std::pair<int32_t, uint64_t>> event_ids;
    std::vector<int64_t> timestamps_ms;  // input timestamps, for the latency
    // Given to the writer (its outputs are acknowledged) as its n-th commit.
    bool handed_over = false;
    uint64_t write_number = 0;
  };
  // Pending commits, oldest first; popped once written.
  std::deque<SealedCommit> sealed_;
  // Writes acknowledged commits to the store on its own thread, in order,
  // while this one processes the next batch.
  class Writer;
  std::unique_ptr<Writer> writer_;
  uint64_t handed_over_ = 0;
  // Hands every acknowledged commit to the writer (in order); waits for the
  // oldest one's acknowledgement when `wait` is set.
  connectors::Status HandOver(bool wait);

  config::Config config_;
  state::StateStore& store_;
  models::Scorer& scorer_;
  connectors::KafkaSink& sink_;
  ServiceMetrics* metrics_ = nullptr;
  std::function<void(const ScoreRecord&)> score_observer_;
  std::function<void(const UserScoreChange&)> user_observer_;
  std::function<void(const AlertRecord&)> alert_observer_;
  // Per input topic series of metrics_, looked up once (MetricsFor).
  struct TopicMetrics;
  TopicMetrics& MetricsFor(const std::string& topic);
  std::map<std::string, std::unique_ptr<TopicMetrics>, std::less<>> topic_metrics_;
  std::string last_topic_;
  TopicMetrics* last_topic_metrics_ = nullptr;
  std::unique_ptr<Decoder> decoder_;
  std::string model_version_;
  int state_size_ = 0;
  double anomaly_z_ = 0;  // standard-normal quantile of lifecycle.anomaly_quantile

  std::unordered_map<std::string, std::unique_ptr<CachedUser>> cache_;
  std::set<std::string> dirty_;
  // Uncommitted timers of dirty users: (partition, due, user).
  std::set<std::tuple<int32_t, int64_t, std::string>> pending_timers_;
  std::map<connectors::TopicPartition, int64_t> pending_offsets_;  // next offset
  std::map<int32_t, int64_t> stream_time_ms_;                      // per partition number
  std::set<int32_t> stream_time_dirty_;
  // Latest event time per input topic-partition: events further behind it
  // than stream.dedup_retention_days are refused as too late.
  std::map<connectors::TopicPartition, int64_t> input_time_ms_;
  std::set<connectors::TopicPartition> assigned_;
  uint64_t batch_number_ = 0;
  std::string callback_error_;
  std::string failed_;  // first processing/commit error; the processor is stopped
  std::vector<int64_t> uncommitted_timestamps_ms_;
  // Event ids folded in since the last commit (not yet in the store).
  std::set<std::pair<int32_t, uint64_t>> pending_event_ids_;
  int32_t expired_before_day_ = INT32_MIN;  // input message timestamps since last commit
  LatencyHistogram latency_;
  std::atomic<bool> latency_reset_requested_{false};
  ProcessorCounters counters_;
};

// Lifecycle stage after a score (DESIGN.md "Lifecycle stages").
state::Stage NextStage(state::Stage current, const state::Aggregates& aggregates,
                       const models::Score& score, int64_t now_ms, bool purchased_now,
                       const config::LifecycleOptions& options);

// Quiet days after which a buyer counts as at risk (timers and NextStage).
double AtRiskQuietDays(const state::Aggregates& aggregates, const config::LifecycleOptions& options);

// Value segment of a score: "prospect" (never bought), "high_value",
// "mid_value", "low_value" (clv against the lifecycle options' thresholds).
const char* Segment(const state::Aggregates& aggregates, const models::Score& score,
                    const config::LifecycleOptions& options);

}  // namespace clv::stream
