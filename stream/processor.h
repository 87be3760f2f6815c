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
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "connectors/kafka.h"
#include "models/scorer.h"
#include "state/state_store.h"
#include "stream/changelog.h"
#include "stream/lifecycle.h"
#include "stream/stage_timer.h"

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
  // Scores with a non-finite output (NaN or inf), replaced by the fallback
  // (Processor: "Non-finite scores").
  std::atomic<int64_t> nonfinite_scores{0};
  // Users whose recurrent model state held a NaN or inf after a step: reset
  // to the scorer's initial state (Processor: "Non-finite scores").
  std::atomic<int64_t> nonfinite_states{0};
  // State changelog (stream/changelog.h): partitions being restored now,
  // records and users restored, replayed events skipped because a restored
  // state already held them.
  std::atomic<int64_t> restoring{0};
  std::atomic<int64_t> restored_records{0};
  std::atomic<int64_t> restored_users{0};
  std::atomic<int64_t> restored_event_ids{0};  // dedup-index ids restored
  std::atomic<int64_t> restore_skipped{0};
  // Where the wall time of the service loop goes (nanoseconds, summed):
  // waiting for input, processing batches, waiting for the producer's
  // acknowledgements before a commit, and writing the RocksDB batch.
  std::atomic<int64_t> poll_nanos{0};
  std::atomic<int64_t> process_nanos{0};
  std::atomic<int64_t> flush_nanos{0};
  std::atomic<int64_t> store_nanos{0};
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
  int32_t partition = -1;  // the input partition number the user's events come from
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

// Non-finite scores: a scorer output that is NaN or inf is a defect of the
// model. It is counted (clv_scorer_nonfinite_total, counters().nonfinite_scores),
// logged with the user id, and replaced before anything reads it: clv,
// p_purchase and churn_risk by the user's previous score (0 for a new user),
// the other outputs and factor contributions by 0. NaN is never published.
// A recurrent state (the LSTM's h and c) left with a NaN or inf after a step
// is reset to the scorer's initial state (Scorer::InitState), counted
// (clv_scorer_state_resets_total, counters().nonfinite_states) and logged with
// the user id, so the user's next event is scored by the model again instead
// of falling back for ever.
//
// top_factors are asked of the scorer only for the scores that are published
// (StepInput::want_factors): every op with per_event, the user's last op of
// the batch with per_batch. An alert raised by an op whose score is not
// published carries that score with its factors, computed again from the
// state before the op (the same input, so the same bits). So every published
// message has the bytes it would have if every op computed its factors; a
// non-finite contribution is counted only where factors are computed.
class Processor {
 public:
  // `store`, `scorer` and `sink` are borrowed and must outlive the Processor.
  Processor(const config::Config& config, state::StateStore& store, models::Scorer& scorer,
            connectors::KafkaSink& sink);
  ~Processor();
  Processor(const Processor&) = delete;
  Processor& operator=(const Processor&) = delete;

  // Optional observers (borrowed; may be null).
  void set_metrics(ServiceMetrics* metrics);
  // The state changelog (borrowed, may be null: none). With one, every
  // commit goes to the changelog after its outputs are acknowledged and
  // before the store, and StartOffset() first restores the partition from
  // it (stream/changelog.h). Set before the first batch.
  void set_changelog(ChangelogIo* changelog);
  // Called with each emitted score (on the processing thread).
  void set_score_observer(std::function<void(const ScoreRecord&)> observer);
  // Called for every computed score, and for every alert sent (processing thread).
  void set_user_observer(std::function<void(const UserScoreChange&)> observer);
  void set_alert_observer(std::function<void(const AlertRecord&)> observer);
  // Called for every user a restore from the state changelog writes, with its
  // local state before and the restored one (processing thread, inside the
  // assignment).
  void set_restore_observer(RestoredUserObserver observer);
  // Called after each commit is in the store with the next input offsets it
  // wrote (processing thread), e.g. to commit them to the Kafka group too.
  void set_commit_observer(
      std::function<void(const std::map<connectors::TopicPartition, int64_t>&)> observer);

  // Processes one micro-batch. Messages of partitions not assigned any more
  // are ignored. On error nothing of the batch is committed; the caller should
  // stop (a restart replays from the last commit).
  connectors::Status ProcessBatch(const std::vector<connectors::Message>& messages);

  // Makes everything processed so far durable: waits for the sink to
  // acknowledge all scores, alerts and dead letters, then writes dirty user
  // states, timer changes, stream times and input offsets in one WriteBatch.
  connectors::Status Commit();
  bool HasUncommitted() const;
  // Commits are two steps so that the next micro-batch runs while the broker
  // acknowledges the last one's outputs (stream/commit_pipeline.h):
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
  // A flag (borrowed, may be null) that cuts the waits of WriteAcknowledged
  // and Commit short with an error (CommitPipeline::set_stop); the processor
  // stays usable, e.g. to write what is acknowledged before a shutdown ends.
  void set_stop_flag(const std::atomic<bool>* stop);
  // Whether processing or committing failed (every later Seal, Commit and
  // WriteAcknowledged answers that error); a wait cut short is no failure.
  bool failed() const;
  // Pending commits (sealed, not yet written).
  size_t sealed_count() const;

  // Rebalance hooks (connectors::SourceCallbacks).
  std::optional<int64_t> StartOffset(const connectors::TopicPartition& partition);
  void OnAssigned(const std::vector<connectors::TopicPartition>& partitions);
  void OnRevoked(const std::vector<connectors::TopicPartition>& partitions);
  // The partitions were lost (connectors::SourceCallbacks::on_lost): another
  // instance may be restoring them from the changelog already, so nothing
  // more of them may reach Kafka or the store. Waits for the commits whose
  // outputs and changelog records are acknowledged (already in Kafka, so the
  // new owner reads them) to be written, and drops the rest: the work not
  // sealed yet, the sealed commits and their outputs and changelog records
  // still in flight (the sink's and the changelog's). The new owner reads
  // their events again and sends the same scores.
  void OnLost(const std::vector<connectors::TopicPartition>& partitions);
  // While `gate` says false, no commit moves past its outputs' acknowledgement
  // (CommitPipeline::Hooks::may_commit), e.g. while the group session is in
  // doubt (connectors::KafkaSource::SessionInDoubt). Empty: always open.
  void set_commit_gate(std::function<bool()> gate);

  const ProcessorCounters& counters() const;
  // The service loop times its waits for input into the same counters.
  std::atomic<int64_t>& mutable_poll_nanos();
  // Latency of everything committed since the last Reset() (processing thread only).
  LatencyHistogram& latency();
  // Any thread: the processing thread forgets the latency recorded so far
  // before it records the next sample (e.g. to leave a warm-up out).
  void RequestLatencyReset();
  const std::string& model_version() const;
  // The first error met inside a rebalance callback (those cannot return one).
  const std::string& callback_error() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace clv::stream
