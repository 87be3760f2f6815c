#include "stream/processor.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <queue>
#include <set>
#include <span>
#include <tuple>
#include <unordered_map>

#include "common/log.h"
#include "common/time.h"
#include "common/units.h"
#include "state/half.h"
#include "stream/changelog.h"
#include "stream/commit_pipeline.h"
#include "stream/decoder.h"
#include "stream/event.h"
#include "stream/json_text.h"
#include "stream/metrics.h"
#include "stream/work_pool.h"

namespace clv::stream {

using connectors::Status;

namespace {

// Dead letters (SendDeadLetter): what a record costs besides its key, value
// and headers (batch and record framing, with room to spare); the longest
// reason header kept; the key kept of a record that has to be truncated.
constexpr size_t kRecordOverheadBytes = 1024;
constexpr size_t kMaxReasonBytes = 4096;
constexpr size_t kMaxTruncatedKeyBytes = 1024;

std::string StreamTimeKey(int32_t partition) { return StreamTimeMetaKey(partition); }

std::string InputTimeKey(const connectors::TopicPartition& tp) {
  return InputTimeMetaKey(tp.topic, tp.partition);
}

// The entry of `map` for the message's topic-partition, found through `it`
// (left pointing at it): messages come in runs of one partition.
int64_t& EntryFor(std::map<connectors::TopicPartition, int64_t>& map,
                  std::map<connectors::TopicPartition, int64_t>::iterator& it,
                  const connectors::Message& message) {
  if (it == map.end() || it->first.partition != message.partition ||
      it->first.topic != message.topic) {
    it = map.try_emplace({message.topic, message.partition}, 0).first;
  }
  return it->second;
}

// History (aggregates + profile attributes) of a user as it is now.
models::History HistoryOf(const state::UserState& s) {
  models::History history;
  static_cast<Aggregates&>(history) = s.aggregates;
  history.attrs = models::MakeAttrEntries(s.attrs);
  return history;
}

// Sets the profile attributes of a profile event (replace by key, sorted).
void ApplyProfile(const std::vector<std::pair<std::string, std::string>>& attrs,
                  state::UserState& s) {
  for (const auto& [key, value] : attrs) {
    auto it = std::find_if(s.attrs.begin(), s.attrs.end(),
                           [&](const auto& kv) { return kv.first == key; });
    if (it != s.attrs.end()) {
      it->second = value;
    } else {
      s.attrs.emplace_back(key, value);
    }
  }
  std::sort(s.attrs.begin(), s.attrs.end());
}

// Replaces the non-finite outputs of `score` (see processor.h "Non-finite
// scores"); returns how many were.
int ReplaceNonFinite(const state::UserState& previous, models::Score& score) {
  int replaced = 0;
  auto fix = [&](double& value, double fallback) {
    if (std::isfinite(value)) return;
    value = std::isfinite(fallback) ? fallback : 0.0;
    ++replaced;
  };
  fix(score.clv, previous.clv);
  fix(score.p_purchase, previous.p_purchase);
  fix(score.churn_risk, previous.churn_risk);
  fix(score.expected_purchases, 0);
  fix(score.expected_order_value, 0);
  for (auto& factor : score.top_factors) {
    if (!std::isfinite(factor.contribution)) {
      factor.contribution = 0;
      ++replaced;
    }
  }
  return replaced;
}

}  // namespace

// ---------------------------------------------------------------------------
// Per-batch data, phase by phase.

namespace {

struct CachedUser;
struct UserWork;

struct CachedUser {
  std::string user_id;
  state::UserState state;
  int64_t committed_timer_ms = 0;
  int32_t committed_partition = -1;
  uint64_t last_used_batch = 0;
  // This batch's work for the user (valid while work_batch is the batch number).
  UserWork* work = nullptr;
  uint64_t work_batch = 0;
};

// One step of a user within a batch: an event, or a timer re-score.
struct Op {
  bool is_event = true;
  models::StepEvent event;
  models::History before;  // aggregates and attributes before the op
  models::History after;   // ... and after it: what this op's score reads
  int64_t now_ms = 0;
  uint64_t seq = 0;
};

// A user's ops in this batch, in order.
struct UserWork {
  CachedUser* user = nullptr;
  // The user's timer when the batch first touched it.
  int64_t timer_before = 0;
  int32_t partition_before = -1;
  std::vector<Op> ops;
};

// Phase "decode": each message of an assigned partition, decoded or refused.
struct Decoded {
  const connectors::Message* message = nullptr;
  bool ok = false;
  Event event;
  std::string reason;
};
struct DecodedBatch {
  std::vector<Decoded> messages;
  std::map<int32_t, int64_t> max_ts;  // largest event time per partition number
  std::vector<std::string> user_ids;  // of events and of due timers (to load)
};

// Timers that may fire in this batch, per partition number.
struct BatchTimers {
  using Key = std::tuple<int64_t, std::string>;  // (due, user)
  std::map<int32_t, std::priority_queue<Key, std::vector<Key>, std::greater<>>> heaps;
  // Stream time cannot pass this within the batch.
  std::map<int32_t, int64_t> up_to;
};

// Event ids of the batch's decoded events committed before (a late re-send).
struct EventIdLookup {
  std::vector<state::EventIdEntry> entries;
  std::vector<bool> seen;
  size_t next = 0;
};

// Phase "group by user": the batch's ops per user, users in order of first op.
struct BatchWork {
  std::unordered_map<std::string, UserWork> users;  // nodes do not move
  std::vector<UserWork*> order;
};

}  // namespace

namespace {

// The smallest ranges worth a hand-off to another thread (about 20 us of
// work each): a batch smaller than two of them runs on the polling thread.
constexpr size_t kMinDecodeChunk = 128;
constexpr size_t kMinScoreChunk = 32;
constexpr size_t kMinRenderChunk = 32;
constexpr size_t kMinEncodeChunk = 64;

void RoundState(state::UserState& s) {
  if (!s.fp16) return;
  state::RoundToFp16(s.model_state.data(), s.model_state.size());
}

}  // namespace

struct Processor::Impl {
  Impl(const config::Config& config, state::StateStore& store, models::Scorer& scorer,
       connectors::KafkaSink& sink);

  // The phases of one batch, in order.
  Status ProcessBatch(const std::vector<connectors::Message>& messages);
  DecodedBatch Decode(const std::vector<connectors::Message>& messages);
  Status CollectDueTimers(DecodedBatch& batch, BatchTimers* timers);
  Status LoadUsers(const std::vector<std::string>& user_ids);
  Status LookUpEventIds(const DecodedBatch& batch, EventIdLookup* ids);
  Status Fold(const DecodedBatch& batch, BatchTimers& timers, EventIdLookup& ids, BatchWork& work);
  void FireDueTimers(int32_t partition, int64_t stream_time, BatchTimers& timers, BatchWork& work);
  void FoldEvent(const Event& event, int32_t partition, CachedUser& user, BatchTimers& timers,
                 BatchWork& work);
  void IndexTimers(const BatchWork& work);
  Status Score(BatchWork& work);
  // One op's outputs in a round of Score(): DecideOutputs() moves the
  // user's score, stage and alerts (in order, on the polling thread),
  // RenderOutput() writes the score message (any worker), EmitOutput() sends
  // the score and alerts and tells the observers (in order).
  struct RoundOutput {
    CachedUser* user = nullptr;
    const Op* op = nullptr;
    models::Score score;
    double prev_clv = 0;
    state::Stage prev_stage = state::Stage::kPotential;
    bool emit_score = false;
    std::vector<Alert> alerts;
    std::string score_json;
  };
  void DecideOutputs(UserWork& work, size_t round, models::Score& score, const float* pre_state,
                     RoundOutput& out);
  void RenderOutput(RoundOutput& out) const;
  Status EmitOutput(const RoundOutput& out);
  RoundOutput& NextOutput() {
    if (outputs_used == outputs.size()) outputs.emplace_back();
    return outputs[outputs_used++];
  }
  // fn(scorer, begin, end) over [0, n), split among the workers when the
  // scorer can be cloned (each range on its worker's scorer).
  template <typename Fn>
  void RunScorer(const Fn& fn, size_t n) {
    if (worker_scorers.empty()) {
      fn(scorer, 0, n);
      return;
    }
    pool.Run(n, kMinScoreChunk, [&](int worker, size_t begin, size_t end) {
      fn(worker == 0 ? scorer : *worker_scorers[worker - 1], begin, end);
    });
  }
  void Explain(const std::string& user_id, const Op& op, const float* pre_state, int replaced,
               models::Score& score);
  Status Seal();

  // Helpers of the phases.
  UserWork& WorkFor(CachedUser& user, BatchWork& work);
  void SetTimer(CachedUser& user, int32_t partition, int64_t due, BatchTimers& timers);
  bool IsDuplicate(const Decoded& d, CachedUser& user, const state::EventIdEntry& id_entry,
                   bool id_seen_before);
  Status SendDeadLetter(const connectors::Message& message, const std::string& reason);
  void BuildScoreJson(const CachedUser& user, const Op& op, const models::Score& score,
                      double prev_clv, std::string* out) const;
  Status EmitAlert(const std::string& user_id, const Alert& alert, const std::string& score_json);
  void CountNonFinite(const std::string& user_id, const Op& op, int replaced);
  void ResetNonFiniteState(const std::string& user_id, uint64_t seq, state::UserState& s);
  Status WriteAcknowledged(int max_pending);
  void EvictIfNeeded();
  void AddChangelogRecords(PendingCommit& commit);
  Status SendChangelog(PendingCommit& commit, bool* sent);
  Status ChangelogAcked(PendingCommit& commit, int timeout_ms, bool* done);
  void RestoreFromChangelog(int32_t partition);
  void Forget(const std::vector<connectors::TopicPartition>& partitions, bool caches);

  // Per input topic series of metrics, looked up once.
  struct TopicMetrics {
    Counter* consumed = nullptr;
    Counter* processed = nullptr;
    Counter* dead_lettered = nullptr;
    Counter* deduplicated = nullptr;
  };
  TopicMetrics& MetricsFor(const std::string& topic);

  config::Config config;
  state::StateStore& store;
  models::Scorer& scorer;
  connectors::KafkaSink& sink;
  ServiceMetrics* metrics = nullptr;
  std::function<void(const ScoreRecord&)> score_observer;
  std::function<void(const UserScoreChange&)> user_observer;
  std::function<void(const AlertRecord&)> alert_observer;
  RestoredUserObserver restore_observer;
  std::function<void(const std::map<connectors::TopicPartition, int64_t>&)> commit_observer;
  std::map<std::string, std::unique_ptr<TopicMetrics>, std::less<>> topic_metrics;
  std::string last_topic;
  TopicMetrics* last_topic_metrics = nullptr;
  // stream.threads: the workers of a batch's parallel phases, each with its
  // own decoder and scorer (worker 0, the polling thread, uses `scorer`;
  // `worker_scorers` is empty when the scorer cannot be cloned).
  WorkPool pool;
  std::vector<std::unique_ptr<Decoder>> decoders;
  std::vector<std::unique_ptr<models::Scorer>> worker_scorers;
  AlertRules alert_rules;
  std::string model_version;
  int state_size = 0;
  bool per_event = false;  // stream.emit == per_event

  std::unordered_map<std::string, std::unique_ptr<CachedUser>> cache;
  std::set<std::string> dirty;
  // Uncommitted timers of dirty users: (partition, due, user).
  std::set<std::tuple<int32_t, int64_t, std::string>> pending_timers;
  std::map<connectors::TopicPartition, int64_t> pending_offsets;  // next offset
  std::map<int32_t, int64_t> stream_time_ms;                      // per partition number
  std::set<int32_t> stream_time_dirty;
  // Latest event time per input topic-partition: events further behind it
  // than stream.dedup_retention_days are refused as too late.
  std::map<connectors::TopicPartition, int64_t> input_time_ms;
  std::set<connectors::TopicPartition> assigned;
  uint64_t batch_number = 0;
  std::string callback_error;
  std::string failed;  // first processing/commit error; the processor is stopped
  std::vector<int64_t> uncommitted_timestamps_ms;  // input message timestamps since last seal
  // Event ids folded in since the last seal (not yet in the store).
  std::set<std::pair<int32_t, uint64_t>> pending_event_ids;
  int32_t expired_before_day = INT32_MIN;
  LatencyHistogram latency;
  std::atomic<bool> latency_reset_requested{false};
  ProcessorCounters counters;
  // Scratch of Score(): one round's outputs (the first outputs_used; kept
  // for their buffers).
  std::vector<RoundOutput> outputs;
  size_t outputs_used = 0;
  // Scratch of Score(): one round's stacked inputs, outputs and, for the ops
  // whose score is not published, their recurrent state before the op
  // (state_size floats each, what Explain() needs if an alert asks for them).
  std::vector<UserWork*> step_users, rescore_users;
  std::vector<models::StepInput> step_inputs;
  std::vector<models::RescoreInput> rescore_inputs;
  std::vector<models::Score> step_scores, rescore_scores;
  std::vector<float> pre_states;
  std::vector<int64_t> step_pre_at, rescore_pre_at;  // offset in pre_states, -1: none
  std::vector<float> explain_state;                  // scratch of Explain()
  // The state changelog (stream/changelog.h; null: none) and what the
  // processor keeps for it: each user's folded positions since the last
  // seal, the next offset of every input partition known, the partitions
  // restored since their assignment, and per restored input partition the
  // users whose replayed events up to a position are already in their state.
  ChangelogIo* changelog = nullptr;
  std::string changelog_writer;
  std::function<bool()> commit_gate;  // set_commit_gate (empty: always open)
  std::unordered_map<std::string, std::map<std::string, int64_t>> folded_positions;
  std::map<connectors::TopicPartition, int64_t> known_offsets;
  std::set<int32_t> restored_partitions;
  std::map<connectors::TopicPartition, std::unordered_map<std::string, int64_t>> restore_skip;
  // Event ids remembered since the last seal, per input partition and event
  // day (their changelog records), and per owned partition and day how many
  // event-id records its changelog holds (the next record's sequence).
  std::map<int32_t, std::map<int32_t, std::vector<uint64_t>>> changelog_event_ids;
  std::map<int32_t, std::map<int32_t, uint32_t>> event_id_records;
  // Last: its writer thread stops before the members its hooks use go.
  CommitPipeline pipeline;
};

Processor::Impl::Impl(const config::Config& config_in, state::StateStore& store_in,
                      models::Scorer& scorer_in, connectors::KafkaSink& sink_in)
    : config(config_in),
      store(store_in),
      scorer(scorer_in),
      sink(sink_in),
      pool(WorkPool::ThreadsFor(config_in.stream.threads)),
      alert_rules(config_in.lifecycle),
      model_version(scorer_in.version()),
      state_size(scorer_in.state_size()),
      per_event(config_in.stream.emit == "per_event"),
      pipeline(
          store_in, sink_in,
          CommitPipeline::Hooks{
              &counters.flush_nanos, &counters.store_nanos,
              [this](const PendingCommit& commit, int64_t acked_ms) {
                if (latency_reset_requested.exchange(false)) latency.Reset();
                for (int64_t ts : commit.timestamps_ms) {
                  const auto ms = static_cast<double>(std::max<int64_t>(0, acked_ms - ts));
                  latency.Record(ms);
                  if (metrics) metrics->event_to_score_seconds.Observe(ms / 1000.0);
                }
              },
              [this](const PendingCommit& commit) {
                counters.commits.fetch_add(1, std::memory_order_relaxed);
                if (metrics) metrics->commits.Inc();
                if (commit_observer && !commit.batch.offsets.empty()) {
                  std::map<connectors::TopicPartition, int64_t> offsets;
                  for (const auto& o : commit.batch.offsets) {
                    offsets[{o.topic, o.partition}] = o.offset;
                  }
                  commit_observer(offsets);
                }
              },
              [this](PendingCommit& commit, bool* sent) { return SendChangelog(commit, sent); },
              [this](PendingCommit& commit, int timeout_ms, bool* done) {
                return ChangelogAcked(commit, timeout_ms, done);
              },
              [this] { return !commit_gate || commit_gate(); }}) {
  for (int w = 0; w < pool.size(); ++w) {
    decoders.push_back(std::make_unique<Decoder>(config.mapping, config.validation));
  }
  for (int w = 1; w < pool.size(); ++w) {
    auto clone = scorer.Clone();
    if (!clone) {
      worker_scorers.clear();
      break;
    }
    worker_scorers.push_back(std::move(clone));
  }
}

Processor::Impl::TopicMetrics& Processor::Impl::MetricsFor(const std::string& topic) {
  // Messages come in runs of one topic: the last one answers most lookups.
  if (last_topic_metrics != nullptr && last_topic == topic) return *last_topic_metrics;
  auto it = topic_metrics.find(topic);
  if (it != topic_metrics.end()) {
    last_topic = topic;
    last_topic_metrics = it->second.get();
    return *it->second;
  }
  auto series = std::make_unique<TopicMetrics>();
  series->consumed = &metrics->events_consumed.WithLabels({topic});
  series->processed = &metrics->events_processed.WithLabels({topic});
  series->dead_lettered = &metrics->events_dead_lettered.WithLabels({topic});
  series->deduplicated = &metrics->events_deduplicated.WithLabels({topic});
  return *topic_metrics.emplace(topic, std::move(series)).first->second;
}

// ---------------------------------------------------------------------------
// One batch: decode, load, fold (grouped by user), score, decide outputs.

Status Processor::Impl::ProcessBatch(const std::vector<connectors::Message>& messages) {
  ++batch_number;
  counters.batches.fetch_add(1, std::memory_order_relaxed);
  // Decode everything first: the user ids (for one MultiGet) and the largest
  // event time per partition (for the due timers) come before the fold.
  DecodedBatch batch = Decode(messages);
  BatchTimers timers;
  Status status = CollectDueTimers(batch, &timers);
  if (!status.ok()) return status;
  status = LoadUsers(batch.user_ids);
  if (!status.ok()) return status;
  EventIdLookup ids;
  status = LookUpEventIds(batch, &ids);
  if (!status.ok()) return status;
  BatchWork work;
  status = Fold(batch, timers, ids, work);
  if (!status.ok()) return status;
  IndexTimers(work);
  return Score(work);
}

DecodedBatch Processor::Impl::Decode(const std::vector<connectors::Message>& messages) {
  const int64_t now_wall_ms = WallClockMs();
  DecodedBatch batch;
  batch.messages.reserve(messages.size());
  for (const auto& message : messages) {
    if (!assigned.count({message.topic, message.partition})) continue;
    counters.consumed.fetch_add(1, std::memory_order_relaxed);
    if (metrics) MetricsFor(message.topic).consumed->Inc();
    if (message.timestamp_ms > 0) uncommitted_timestamps_ms.push_back(message.timestamp_ms);
    Decoded d;
    d.message = &message;
    batch.messages.push_back(std::move(d));
  }
  pool.Run(batch.messages.size(), kMinDecodeChunk, [&](int worker, size_t begin, size_t end) {
    Decoder& decoder = *decoders[worker];
    for (size_t i = begin; i < end; ++i) {
      Decoded& d = batch.messages[i];
      d.ok = decoder.Decode(d.message->value, now_wall_ms, &d.event, &d.reason);
    }
  });
  for (const Decoded& d : batch.messages) {
    if (!d.ok) continue;
    batch.user_ids.push_back(d.event.user_id);
    auto& max_ts = batch.max_ts[d.message->partition];
    max_ts = std::max(max_ts, d.event.ts_ms);
  }
  return batch;
}

Status Processor::Impl::CollectDueTimers(DecodedBatch& batch, BatchTimers* timers) {
  // Stored timers and uncommitted ones, up to where stream time can get.
  for (const auto& [partition, max_ts] : batch.max_ts) {
    const int64_t up_to = std::max(max_ts, stream_time_ms[partition]);
    timers->up_to[partition] = up_to;
    std::vector<state::TimerEntry> due;
    auto status = store.DueTimers(partition, up_to, 1u << 30, &due);
    if (!status.ok()) return Status::Error("reading due timers: " + status.message);
    auto& heap = timers->heaps[partition];
    for (auto& timer : due) {
      batch.user_ids.push_back(timer.user_id);
      heap.emplace(timer.due_ms, std::move(timer.user_id));
    }
    for (auto it = pending_timers.lower_bound({partition, INT64_MIN, std::string()});
         it != pending_timers.end() && std::get<0>(*it) == partition && std::get<1>(*it) <= up_to;
         ++it) {
      heap.emplace(std::get<1>(*it), std::get<2>(*it));
    }
  }
  return Status::Ok();
}

Status Processor::Impl::LoadUsers(const std::vector<std::string>& user_ids) {
  std::vector<std::string> missing;
  for (const auto& id : user_ids) {
    auto it = cache.find(id);
    if (it == cache.end()) {
      missing.push_back(id);
    } else {
      it->second->last_used_batch = batch_number;
    }
  }
  std::sort(missing.begin(), missing.end());
  missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
  if (missing.empty()) return Status::Ok();
  std::vector<std::optional<state::UserState>> states;
  auto status = store.MultiGetUsers(missing, &states);
  if (!status.ok()) return Status::Error("loading user states: " + status.message);
  for (size_t i = 0; i < missing.size(); ++i) {
    auto user = std::make_unique<CachedUser>();
    user->user_id = missing[i];
    user->last_used_batch = batch_number;
    if (states[i]) {
      user->state = std::move(*states[i]);
      user->committed_timer_ms = user->state.next_timer_ms;
      user->committed_partition = user->state.partition;
      if (static_cast<int>(user->state.model_state.size()) != state_size) {
        // The model changed shape (e.g. baseline -> lstm): start its state anew.
        user->state.model_state.assign(state_size, 0.0f);
        if (state_size > 0) scorer.InitState(user->state.model_state.data());
      }
      ResetNonFiniteState(user->user_id, user->state.seq, user->state);  // e.g. a damaged store
    } else {
      user->state.fp16 = config.state.fp16_hidden;
      user->state.model_state.assign(state_size, 0.0f);
      if (state_size > 0) scorer.InitState(user->state.model_state.data());
      RoundState(user->state);
      user->state.seq = 0;
      counters.users_seen.fetch_add(1, std::memory_order_relaxed);
    }
    cache.emplace(missing[i], std::move(user));
  }
  return Status::Ok();
}

Status Processor::Impl::LookUpEventIds(const DecodedBatch& batch, EventIdLookup* ids) {
  if (config.stream.dedup_retention_days <= 0) return Status::Ok();
  for (const auto& d : batch.messages) {
    if (d.ok) ids->entries.push_back({EventDay(d.event.ts_ms), d.event.event_id_hash});
  }
  auto status = store.SeenEventIds(ids->entries, &ids->seen);
  if (!status.ok()) return Status::Error("reading event ids: " + status.message);
  return Status::Ok();
}

UserWork& Processor::Impl::WorkFor(CachedUser& user, BatchWork& work) {
  if (user.work_batch == batch_number) return *user.work;
  auto [it, inserted] = work.users.try_emplace(user.user_id);
  user.work = &it->second;
  user.work_batch = batch_number;
  if (inserted) {
    it->second.user = &user;
    it->second.timer_before = user.state.next_timer_ms;
    it->second.partition_before = user.state.partition;
    work.order.push_back(&it->second);
  }
  return it->second;
}

// A user's next timer. Only one due within this batch's reach goes on the
// heap now; the uncommitted-timer index is brought up to date once per user
// after the fold (IndexTimers).
void Processor::Impl::SetTimer(CachedUser& user, int32_t partition, int64_t due,
                               BatchTimers& timers) {
  user.state.partition = partition;
  user.state.next_timer_ms = due;
  if (due == 0) return;
  auto reach = timers.up_to.find(partition);
  if (reach != timers.up_to.end() && due <= reach->second) {
    timers.heaps[partition].emplace(due, user.user_id);
  }
}

// Folds the batch in message order: stream time, timers, dedup, aggregates, seq.
Status Processor::Impl::Fold(const DecodedBatch& batch, BatchTimers& timers, EventIdLookup& ids,
                             BatchWork& work) {
  const bool keep_ids = config.stream.dedup_retention_days > 0;
  auto offset_it = pending_offsets.end();
  auto input_time_it = input_time_ms.end();
  for (const auto& d : batch.messages) {
    const auto& message = *d.message;
    EntryFor(pending_offsets, offset_it, message) = message.offset + 1;
    if (!d.ok) {
      auto status = SendDeadLetter(message, d.reason);
      if (!status.ok()) return status;
      continue;
    }
    const int32_t partition = message.partition;
    // Lateness is measured within the event's own topic-partition, whose
    // order is fixed: one topic read ahead of another (a backlog) makes no
    // event of the other late, and the verdict never depends on interleaving.
    int64_t& input_time = EntryFor(input_time_ms, input_time_it, message);
    state::EventIdEntry id_entry;
    bool id_seen_before = false;
    if (keep_ids) {
      id_entry = ids.entries[ids.next];
      id_seen_before = ids.seen[ids.next++];
      // Ids older than the retention are gone: such an event cannot be checked
      // for duplicates, so it is refused (deterministically, by input time).
      const int32_t oldest_day = EventDay(input_time) - config.stream.dedup_retention_days;
      if (input_time > 0 && id_entry.day < oldest_day) {
        auto status = SendDeadLetter(
            message, "event time " + std::to_string(d.event.ts_ms) + " is more than " +
                         std::to_string(config.stream.dedup_retention_days) +
                         " days behind the latest event time " + std::to_string(input_time) +
                         " of " + message.topic + " [" + std::to_string(partition) +
                         "] (stream.dedup_retention_days): too late to check for duplicates");
        if (!status.ok()) return status;
        continue;
      }
    }
    input_time = std::max(input_time, d.event.ts_ms);
    auto& stream_time = stream_time_ms[partition];
    if (d.event.ts_ms > stream_time) {
      stream_time = d.event.ts_ms;
      stream_time_dirty.insert(partition);
    }
    FireDueTimers(partition, stream_time, timers, work);

    CachedUser& user = *cache.at(d.event.user_id);
    user.last_used_batch = batch_number;
    if (!restore_skip.empty()) {
      // Folded (and scored) before a crash that left the user's changelog
      // record ahead of the last marker: in the restored state already.
      auto skip = restore_skip.find({message.topic, partition});
      if (skip != restore_skip.end()) {
        auto position = skip->second.find(d.event.user_id);
        if (position != skip->second.end() && message.offset <= position->second) {
          counters.restore_skipped.fetch_add(1, std::memory_order_relaxed);
          if (metrics) metrics->restore_skipped_events.Inc();
          if (keep_ids && pending_event_ids.emplace(id_entry.day, id_entry.hash).second &&
              changelog != nullptr) {
            changelog_event_ids[partition][id_entry.day].push_back(id_entry.hash);
          }
          continue;
        }
      }
    }
    if (IsDuplicate(d, user, id_entry, id_seen_before)) {
      counters.duplicates.fetch_add(1, std::memory_order_relaxed);
      if (metrics) MetricsFor(message.topic).deduplicated->Inc();
      continue;
    }
    FoldEvent(d.event, partition, user, timers, work);
    if (changelog != nullptr) {
      folded_positions[d.event.user_id][message.topic] = message.offset;
      if (keep_ids) changelog_event_ids[partition][id_entry.day].push_back(id_entry.hash);
    }
    counters.processed.fetch_add(1, std::memory_order_relaxed);
    if (metrics) MetricsFor(message.topic).processed->Inc();
  }
  return Status::Ok();
}

// Timers of `partition` that stream time has passed become re-score ops.
void Processor::Impl::FireDueTimers(int32_t partition, int64_t stream_time, BatchTimers& timers,
                                    BatchWork& work) {
  auto heap_it = timers.heaps.find(partition);
  if (heap_it == timers.heaps.end()) return;
  auto& heap = heap_it->second;
  while (!heap.empty() && std::get<0>(heap.top()) <= stream_time) {
    auto [due, user_id] = heap.top();
    heap.pop();
    auto cached = cache.find(user_id);
    if (cached == cache.end()) continue;
    CachedUser& user = *cached->second;
    if (user.state.next_timer_ms != due || user.state.partition != partition) continue;
    Op op;
    op.is_event = false;
    op.before = op.after = HistoryOf(user.state);
    op.now_ms = due;
    op.seq = ++user.state.seq;
    WorkFor(user, work).ops.push_back(std::move(op));
    SetTimer(user, partition, TimerAfterMs(user.state.aggregates, due, config.lifecycle), timers);
    counters.timer_rescores.fetch_add(1, std::memory_order_relaxed);
  }
}

// Whether the event was seen before: in the user's recent ids, in the store,
// in a sealed commit not yet written, or earlier in this batch. A new id is
// remembered.
bool Processor::Impl::IsDuplicate(const Decoded& d, CachedUser& user,
                                  const state::EventIdEntry& id_entry, bool id_seen_before) {
  auto& ids = user.state.recent_event_ids;
  bool duplicate = std::find(ids.begin(), ids.end(), d.event.event_id_hash) != ids.end();
  if (config.stream.dedup_retention_days > 0) {
    duplicate = duplicate || id_seen_before || pipeline.Contains({id_entry.day, id_entry.hash}) ||
                !pending_event_ids.emplace(id_entry.day, id_entry.hash).second;
  }
  if (duplicate) return true;
  if (config.stream.dedup_window > 0) {
    ids.push_back(d.event.event_id_hash);
    if (static_cast<int>(ids.size()) > config.stream.dedup_window) ids.erase(ids.begin());
  }
  return false;
}

// One event into the user's aggregates, attributes and seq, as an op to score.
void Processor::Impl::FoldEvent(const Event& event, int32_t partition, CachedUser& user,
                                BatchTimers& timers, BatchWork& work) {
  auto& s = user.state;
  Op op;
  op.event = models::StepEvent{event.kind, event.ts_ms, event.amount};
  if (event.kind == models::EventKind::kProfile) {
    op.event.attrs = models::MakeAttrEntries(event.attrs);
  }
  op.before = HistoryOf(s);  // attributes before this event
  op.after = op.before;
  models::UpdateHistory(op.after, op.event);
  op.now_ms = event.ts_ms;
  op.seq = ++s.seq;
  s.aggregates = op.after;
  if (event.kind == models::EventKind::kProfile) ApplyProfile(event.attrs, s);
  WorkFor(user, work).ops.push_back(std::move(op));
  SetTimer(user, partition, NextTimerMs(s.aggregates, config.lifecycle), timers);
}

// The uncommitted-timer index follows each touched user's final timer.
void Processor::Impl::IndexTimers(const BatchWork& work) {
  for (const UserWork* w : work.order) {
    const auto& id = w->user->user_id;
    const auto& s = w->user->state;
    dirty.insert(id);
    if (w->timer_before == s.next_timer_ms && w->partition_before == s.partition) continue;
    if (w->timer_before != 0) pending_timers.erase({w->partition_before, w->timer_before, id});
    if (s.next_timer_ms != 0) pending_timers.insert({s.partition, s.next_timer_ms, id});
  }
}

// Runs the scorer in rounds: round k holds the k-th op of every user, events
// stacked into one Step() and timers into one Rescore(). Only the ops whose
// score is published (every op with stream.emit=per_event, else each user's
// last op of the batch) ask for top_factors; the state before each other op
// is kept for the round, for Explain().
Status Processor::Impl::Score(BatchWork& work) {
  size_t max_ops = 0;
  for (const UserWork* w : work.order) max_ops = std::max(max_ops, w->ops.size());
  for (size_t round = 0; round < max_ops; ++round) {
    step_users.clear();
    rescore_users.clear();
    step_inputs.clear();
    rescore_inputs.clear();
    pre_states.clear();
    step_pre_at.clear();
    rescore_pre_at.clear();
    for (UserWork* w : work.order) {
      if (round >= w->ops.size()) continue;
      const Op& op = w->ops[round];
      auto& model_state = w->user->state.model_state;
      float* state = model_state.empty() ? nullptr : model_state.data();
      const bool published = per_event || round + 1 == w->ops.size();
      int64_t pre_at = -1;
      if (!published && state != nullptr) {
        pre_at = static_cast<int64_t>(pre_states.size());
        pre_states.insert(pre_states.end(), model_state.begin(), model_state.end());
      }
      if (op.is_event) {
        step_users.push_back(w);
        step_inputs.push_back(
            models::StepInput{&op.before, &op.after, op.event, state, /*want_factors=*/published});
        step_pre_at.push_back(pre_at);
      } else {
        rescore_users.push_back(w);
        rescore_inputs.push_back(
            models::RescoreInput{&op.after, op.now_ms, state, /*want_factors=*/published});
        rescore_pre_at.push_back(pre_at);
      }
    }
    step_scores.assign(step_inputs.size(), models::Score{});
    rescore_scores.assign(rescore_inputs.size(), models::Score{});
    {
      StageTimer timer(counters.scorer_nanos);
      // With state.fp16_hidden the new (h, c) is rounded as the store will
      // keep it (on the worker that stepped it).
      auto run = [&](auto method, auto& inputs, auto& scores, const auto& users) {
        if (inputs.empty()) return;
        RunScorer(
            [&](models::Scorer& s, size_t begin, size_t end) {
              (s.*method)(std::span(inputs).subspan(begin, end - begin),
                          std::span(scores).subspan(begin, end - begin));
              for (size_t i = begin; i < end; ++i) RoundState(users[i]->user->state);
            },
            inputs.size());
      };
      run(&models::Scorer::Step, step_inputs, step_scores, step_users);
      run(&models::Scorer::Rescore, rescore_inputs, rescore_scores, rescore_users);
    }
    counters.scorer_steps.fetch_add(static_cast<int64_t>(step_inputs.size()),
                                    std::memory_order_relaxed);
    if (metrics) metrics->scorer_user_steps.Inc(step_inputs.size());
    auto pre_state = [&](int64_t at) { return at < 0 ? nullptr : pre_states.data() + at; };
    // The round's outputs: decided in order (state, stage, alerts), their
    // score messages rendered on the workers, then sent in order.
    outputs_used = 0;
    for (size_t i = 0; i < step_users.size(); ++i) {
      DecideOutputs(*step_users[i], round, step_scores[i], pre_state(step_pre_at[i]), NextOutput());
    }
    for (size_t i = 0; i < rescore_users.size(); ++i) {
      DecideOutputs(*rescore_users[i], round, rescore_scores[i], pre_state(rescore_pre_at[i]),
                    NextOutput());
    }
    pool.Run(outputs_used, kMinRenderChunk, [&](int, size_t begin, size_t end) {
      for (size_t i = begin; i < end; ++i) RenderOutput(outputs[i]);
    });
    for (size_t i = 0; i < outputs_used; ++i) {
      auto status = EmitOutput(outputs[i]);
      if (!status.ok()) return status;
    }
  }
  return Status::Ok();
}

// The top_factors of an op scored without them (its score is not published
// but an alert carries it): the same Step() or Rescore() again, on a copy of
// the state before the op, with factors; the same input, so the same bits as
// if they had been computed in the first place. `replaced` is what
// ReplaceNonFinite() found in the rest of the score.
void Processor::Impl::Explain(const std::string& user_id, const Op& op, const float* pre_state,
                              int replaced, models::Score& score) {
  float* state = nullptr;
  if (pre_state != nullptr) {
    explain_state.assign(pre_state, pre_state + state_size);
    state = explain_state.data();
  }
  models::Score explained;
  {
    StageTimer timer(counters.scorer_nanos);
    if (op.is_event) {
      const models::StepInput input{&op.before, &op.after, op.event, state, true};
      scorer.Step({&input, 1}, {&explained, 1});
    } else {
      const models::RescoreInput input{&op.after, op.now_ms, state, true};
      scorer.Rescore({&input, 1}, {&explained, 1});
    }
  }
  score.top_factors = explained.top_factors;
  int factors_replaced = 0;
  for (auto& factor : score.top_factors) {
    if (!std::isfinite(factor.contribution)) {
      factor.contribution = 0;
      ++factors_replaced;
    }
  }
  // Counted once per score, as if the factors had been there all along.
  if (factors_replaced > 0 && replaced == 0) CountNonFinite(user_id, op, factors_replaced);
}

void Processor::Impl::CountNonFinite(const std::string& user_id, const Op& op, int replaced) {
  const int64_t count = counters.nonfinite_scores.fetch_add(1, std::memory_order_relaxed) + 1;
  if (metrics) metrics->scorer_nonfinite.Inc();
  // Every one up to 100, then one in 10000: a broken model must not flood the log.
  if (count <= 100 || count % 10000 == 0) {
    Log(LogLevel::kWarn, "non-finite score replaced by the previous one",
        {{"user_id", user_id},
         {"seq", op.seq},
         {"outputs", replaced},
         {"model", model_version},
         {"nonfinite_total", count}});
  }
}

// A recurrent state with a NaN or inf in it (left by a step, or read from
// the store) would make every later score of the user non-finite or
// meaningless for ever: it starts anew from the scorer's initial state,
// counted and logged like a non-finite score.
void Processor::Impl::ResetNonFiniteState(const std::string& user_id, uint64_t seq,
                                          state::UserState& s) {
  auto& model_state = s.model_state;
  if (std::all_of(model_state.begin(), model_state.end(),
                  [](float v) { return std::isfinite(v); })) {
    return;
  }
  scorer.InitState(model_state.data());
  RoundState(s);
  const int64_t count = counters.nonfinite_states.fetch_add(1, std::memory_order_relaxed) + 1;
  if (metrics) metrics->scorer_state_resets.Inc();
  if (count <= 100 || count % 10000 == 0) {
    Log(LogLevel::kWarn, "non-finite model state reset to the initial state",
        {{"user_id", user_id},
         {"seq", seq},
         {"model", model_version},
         {"state_resets_total", count}});
  }
}

// The outputs of one op's score: the user's new stage and score, the score
// message (every op with stream.emit=per_event, else the user's last op of
// the batch) and the alerts it raises.
void Processor::Impl::DecideOutputs(UserWork& w, size_t round, models::Score& score,
                                    const float* pre_state, RoundOutput& out) {
  const Op& op = w.ops[round];
  CachedUser& user = *w.user;
  auto& s = user.state;
  const int replaced = ReplaceNonFinite(s, score);
  if (replaced > 0) CountNonFinite(user.user_id, op, replaced);
  ResetNonFiniteState(user.user_id, op.seq, s);
  out.user = &user;
  out.op = &op;
  out.prev_clv = s.clv;
  const double prev_churn = s.churn_risk;
  out.prev_stage = s.stage;
  const bool purchased = op.is_event && op.event.kind == models::EventKind::kPurchase;
  // op.after: the aggregates as of this op (later ops of the batch moved s's).
  s.stage = NextStage(out.prev_stage, op.after, score, op.now_ms, purchased, config.lifecycle);
  s.clv = score.clv;
  s.p_purchase = score.p_purchase;
  s.churn_risk = score.churn_risk;
  s.score_ts_ms = op.now_ms;

  out.alerts.clear();
  alert_rules.Decide(ScoreChange{op.seq, op.now_ms, out.prev_stage, s.stage, prev_churn,
                                 score.churn_risk, purchased, op.event.amount, &op.before},
                     &out.alerts);
  out.emit_score = per_event || round + 1 == w.ops.size();
  if (!out.emit_score && !out.alerts.empty()) {
    Explain(user.user_id, op, pre_state, replaced, score);
  }
  out.score = score;
}

void Processor::Impl::RenderOutput(RoundOutput& out) const {
  if (out.emit_score || !out.alerts.empty()) {
    BuildScoreJson(*out.user, *out.op, out.score, out.prev_clv, &out.score_json);
  } else {
    out.score_json = "null";
  }
}

Status Processor::Impl::EmitOutput(const RoundOutput& out) {
  const CachedUser& user = *out.user;
  const Op& op = *out.op;
  const models::Score& score = out.score;
  if (out.emit_score) {
    auto status = sink.Send(config.kafka.scores_topic, user.user_id, out.score_json);
    if (!status.ok()) return status;
    counters.scores_emitted.fetch_add(1, std::memory_order_relaxed);
    if (metrics) metrics->scores_emitted.Inc();
    if (score_observer) {
      score_observer(
          ScoreRecord{user.user_id, op.seq, score.clv, score.churn_risk, out.score_json});
    }
  }
  for (const Alert& alert : out.alerts) {
    auto status = EmitAlert(user.user_id, alert, out.score_json);
    if (!status.ok()) return status;
  }
  if (user_observer) {
    // seq 1 is the first op of a user that had no stored state.
    user_observer(UserScoreChange{user.user_id, op.seq == 1, out.prev_stage, user.state.stage,
                                  out.prev_clv, score.clv, score.churn_risk, user.state.partition});
  }
  return Status::Ok();
}

void Processor::Impl::BuildScoreJson(const CachedUser& user, const Op& op,
                                     const models::Score& score, double prev_clv,
                                     std::string* out) const {
  std::string factors = "[";
  for (const auto& factor : score.top_factors) {
    if (factor.name[0] == '\0') continue;
    if (factors.size() > 1) factors += ',';
    JsonObjectWriter(factors)
        .String("name", factor.name.data())
        .Fixed("contribution", static_cast<double>(factor.contribution), 4)
        .Close();
  }
  factors += ']';
  std::string& json = *out;
  json.clear();
  json.reserve(384);
  JsonObjectWriter(json)
      .String("user_id", user.user_id)
      .Fixed("clv", score.clv, 4)
      .Fixed("p_purchase", score.p_purchase, 6)
      .Fixed("churn_risk", score.churn_risk, 6)
      .String("stage", state::StageName(user.state.stage))
      .String("segment", Segment(op.after, score, config.lifecycle))
      .UInt("seq", op.seq)
      .Int("event_ts", op.now_ms)
      .String("model", model_version)
      .Raw("top_factors", factors)
      .Fixed("prev_clv", prev_clv, 4)
      .String("trigger", op.is_event ? models::EventKindName(op.event.kind) : "timer")
      .Close();
}

// {"kind":...,"user_id":...,"detail":{...},"score":{...} or null}
Status Processor::Impl::EmitAlert(const std::string& user_id, const Alert& alert,
                                  const std::string& score_json) {
  std::string json;
  JsonObjectWriter(json)
      .String("kind", alert.kind)
      .String("user_id", user_id)
      .Raw("detail", alert.detail_json)
      .Raw("score", score_json)
      .Close();
  counters.alerts_emitted.fetch_add(1, std::memory_order_relaxed);
  if (metrics) metrics->alerts_emitted.WithLabels({alert.kind}).Inc();
  auto sent = sink.Send(config.kafka.alerts_topic, user_id, json);
  if (sent.ok() && alert_observer) {
    alert_observer(AlertRecord{alert.kind, user_id, alert.detail_json, score_json});
  }
  return sent;
}

Status Processor::Impl::SendDeadLetter(const connectors::Message& message,
                                       const std::string& reason) {
  // The record is the original, byte for byte (key and value); where it came
  // from and why it was refused travel in headers, as Kafka Connect does.
  std::vector<std::pair<std::string, std::string>> headers = {
      {"clv.dlq.reason",
       reason.size() <= kMaxReasonBytes ? reason : reason.substr(0, kMaxReasonBytes)},
      {"clv.dlq.topic", message.topic},
      {"clv.dlq.partition", std::to_string(message.partition)},
      {"clv.dlq.offset", std::to_string(message.offset)},
      {"clv.dlq.timestamp_ms", std::to_string(message.timestamp_ms)},
  };
  counters.dead_lettered.fetch_add(1, std::memory_order_relaxed);
  if (metrics) MetricsFor(message.topic).dead_lettered->Inc();
  // A dead letter must fit the producer's record limit, or the one message
  // would stop the partition for good. One that does not fit keeps the start
  // of its key and value, and says so: clv.dlq.truncated, the original sizes
  // and the 64-bit FNV-1a of the original value (docs/OPERATIONS.md).
  auto record_bytes = [&](size_t key_bytes, size_t value_bytes) {
    size_t bytes = key_bytes + value_bytes + kRecordOverheadBytes;
    for (const auto& [name, value] : headers) bytes += name.size() + value.size() + 16;
    return bytes;
  };
  const auto limit = static_cast<size_t>(config.kafka.producer_message_max_bytes);
  if (record_bytes(message.key.size(), message.value.size()) <= limit) {
    return sink.SendWithHeaders(config.kafka.dead_letter_topic, message.key, message.value,
                                headers);
  }
  char hash[17];
  std::snprintf(hash, sizeof(hash), "%016llx",
                static_cast<unsigned long long>(StableHash64(message.value)));
  headers.push_back({"clv.dlq.truncated", "true"});
  headers.push_back({"clv.dlq.original_value_bytes", std::to_string(message.value.size())});
  headers.push_back({"clv.dlq.original_key_bytes", std::to_string(message.key.size())});
  headers.push_back({"clv.dlq.original_value_fnv1a64", hash});
  const size_t key_bytes = std::min(message.key.size(), kMaxTruncatedKeyBytes);
  const size_t fixed = record_bytes(key_bytes, 0);
  const size_t value_bytes = fixed < limit ? std::min(message.value.size(), limit - fixed) : 0;
  return sink.SendWithHeaders(config.kafka.dead_letter_topic,
                              std::string_view(message.key).substr(0, key_bytes),
                              std::string_view(message.value).substr(0, value_bytes), headers);
}

// ---------------------------------------------------------------------------
// Seal and write (stream/commit_pipeline.h).

Status Processor::Impl::Seal() {
  // After a failed batch the cache holds half-applied state: never write it.
  if (!failed.empty()) return Status::Error("not committing after an error: " + failed);
  if (dirty.empty() && pending_offsets.empty() && stream_time_dirty.empty()) {
    return Status::Ok();
  }
  PendingCommit commit;
  state::CommitBatch& batch = commit.batch;
  batch.users.reserve(dirty.size());
  for (const auto& id : dirty) {
    auto it = cache.find(id);
    if (it == cache.end()) continue;
    CachedUser& user = *it->second;
    const auto& s = user.state;
    // Sealed commits are written in order, so the timer index moves from
    // what the previous seal wrote.
    if (user.committed_timer_ms != s.next_timer_ms || user.committed_partition != s.partition) {
      if (user.committed_timer_ms != 0) {
        batch.timers_removed.push_back({user.committed_partition, user.committed_timer_ms, id});
      }
      if (s.next_timer_ms != 0) batch.timers_added.push_back({s.partition, s.next_timer_ms, id});
      user.committed_timer_ms = s.next_timer_ms;
      user.committed_partition = s.partition;
    }
    batch.users.push_back({id, s});
  }
  for (const auto& [tp, offset] : pending_offsets) {
    batch.offsets.push_back({tp.topic, tp.partition, offset});
  }
  for (int32_t partition : stream_time_dirty) {
    batch.meta.emplace_back(StreamTimeKey(partition), std::to_string(stream_time_ms[partition]));
  }
  // Input times move only with events, whose partitions all have an offset
  // to commit.
  for (const auto& [tp, offset] : pending_offsets) {
    auto it = input_time_ms.find(tp);
    if (it != input_time_ms.end() && it->second > 0) {
      batch.meta.emplace_back(InputTimeKey(tp), std::to_string(it->second));
    }
  }
  for (const auto& [day, hash] : pending_event_ids) batch.event_ids_added.push_back({day, hash});
  if (config.stream.dedup_retention_days > 0 && !input_time_ms.empty()) {
    // Every input topic-partition refuses events older than its own latest
    // event time minus the retention, so ids before the slowest one's horizon
    // are never needed.
    int64_t min_stream_time = INT64_MAX;
    for (const auto& [tp, ts] : input_time_ms) {
      if (ts > 0) min_stream_time = std::min(min_stream_time, ts);
    }
    int32_t expire_before = min_stream_time == INT64_MAX
                                ? INT32_MIN
                                : EventDay(min_stream_time) - config.stream.dedup_retention_days;
    if (expire_before > expired_before_day + 1) {
      batch.event_ids_expire_before_day = expire_before;
      expired_before_day = expire_before;
    }
  }
  if (changelog != nullptr) AddChangelogRecords(commit);
  commit.event_ids = std::move(pending_event_ids);
  commit.timestamps_ms = std::move(uncommitted_timestamps_ms);
  pending_event_ids.clear();
  uncommitted_timestamps_ms.clear();
  dirty.clear();
  pending_offsets.clear();
  stream_time_dirty.clear();
  pipeline.Seal(std::move(commit));
  return Status::Ok();
}

Status Processor::Impl::WriteAcknowledged(int max_pending) {
  if (!failed.empty()) return Status::Error("not committing after an error: " + failed);
  // A full cache is trimmed only when nothing is pending: an evicted user must
  // be read back from the store with its latest state.
  const size_t max_users = static_cast<size_t>(std::max(1, config.stream.cache_max_users));
  if (cache.size() > max_users) max_pending = 0;
  auto status = pipeline.WriteAcknowledged(max_pending);
  if (!status.ok()) {
    // A wait cut short by the stop flag leaves the pipeline working.
    if (!pipeline.failed().empty()) failed = status.message;
    return status;
  }
  if (pipeline.pending() == 0 && dirty.empty() && pending_offsets.empty()) {
    // Everything is in the store: the uncommitted-timer index restarts empty.
    pending_timers.clear();
    EvictIfNeeded();
  }
  return Status::Ok();
}

void Processor::Impl::EvictIfNeeded() {
  const size_t max_users = static_cast<size_t>(std::max(1, config.stream.cache_max_users));
  if (cache.size() <= max_users) return;
  // Everything is clean right after a commit: drop the least recently used.
  std::vector<std::pair<uint64_t, std::string>> by_age;
  by_age.reserve(cache.size());
  for (const auto& [id, user] : cache) by_age.emplace_back(user->last_used_batch, id);
  size_t drop = cache.size() - max_users * 9 / 10;
  std::nth_element(by_age.begin(), by_age.begin() + static_cast<std::ptrdiff_t>(drop),
                   by_age.end());
  for (size_t i = 0; i < drop; ++i) cache.erase(by_age[i].second);
}

// ---------------------------------------------------------------------------
// The state changelog (stream/changelog.h).

// One record per dirty user (its folded positions and state) to the
// changelog partition of its input partition, then one marker per partition
// the commit touched: next offsets and input times of every input topic of
// it known here, and its stream time.
void Processor::Impl::AddChangelogRecords(PendingCommit& commit) {
  std::set<int32_t> touched;
  // The users' records, encoded on the workers (each range its own records;
  // folded_positions is only read and its values moved, never resized).
  const auto& users = commit.batch.users;
  const size_t first = commit.changelog.size();
  commit.changelog.resize(first + users.size());
  pool.Run(users.size(), kMinEncodeChunk, [&](int, size_t begin, size_t end) {
    for (size_t i = begin; i < end; ++i) {
      const auto& write = users[i];
      ChangelogUser user;
      auto positions = folded_positions.find(write.user_id);
      if (positions != folded_positions.end()) user.positions = std::move(positions->second);
      user.state = write.state;
      auto& record = commit.changelog[first + i];
      record.partition = std::max<int32_t>(0, write.state.partition);
      record.key = write.user_id;
      record.value = EncodeChangelogUser(user);
    }
  });
  for (size_t i = first; i < commit.changelog.size(); ++i) {
    touched.insert(commit.changelog[i].partition);
  }
  folded_positions.clear();
  for (const auto& o : commit.batch.offsets) {
    known_offsets[{o.topic, o.partition}] = o.offset;
    touched.insert(o.partition);
  }
  // The dedup index: this commit's new ids, one record per partition and
  // event day; a day the commit expires loses every record of it.
  for (auto& [partition, days] : changelog_event_ids) {
    auto& counts = event_id_records[partition];
    for (auto& [day, hashes] : days) {
      commit.changelog.push_back(
          {partition, ChangelogEventIdsKey(day, counts[day]++), EncodeChangelogEventIds(hashes)});
    }
    touched.insert(partition);
  }
  changelog_event_ids.clear();
  const int32_t expire_before = commit.batch.event_ids_expire_before_day;
  if (expire_before != INT32_MIN) {
    for (auto& [partition, counts] : event_id_records) {
      while (!counts.empty() && counts.begin()->first < expire_before) {
        const auto [day, records] = *counts.begin();
        for (uint32_t sequence = 0; sequence < records; ++sequence) {
          commit.changelog.push_back({partition, ChangelogEventIdsKey(day, sequence), "", true});
        }
        counts.erase(counts.begin());
        touched.insert(partition);
      }
    }
  }
  for (int32_t partition : stream_time_dirty) touched.insert(partition);
  for (int32_t partition : touched) {
    ChangelogMarker marker;
    marker.writer = changelog_writer;
    auto st = stream_time_ms.find(partition);
    marker.stream_time_ms = st == stream_time_ms.end() ? 0 : st->second;
    for (const auto& [tp, offset] : known_offsets) {
      if (tp.partition != partition) continue;
      auto it = input_time_ms.find(tp);
      marker.inputs.push_back({tp.topic, offset, it == input_time_ms.end() ? 0 : it->second});
    }
    auto counts = event_id_records.find(partition);
    if (counts != event_id_records.end()) marker.event_id_records = counts->second;
    // Kept locally too, for a restart that reads no marker.
    commit.batch.meta.emplace_back(ChangelogEventIdRecordsKey(partition),
                                   EncodeEventIdRecordCounts(marker.event_id_records));
    commit.changelog.push_back({partition, std::string(kMarkerKey), EncodeChangelogMarker(marker)});
  }
}

// The changelog stage of the commit pipeline (stream/commit_pipeline.h),
// after the commit's outputs are acknowledged and before its local write:
// its records are sent, then looked at (not waited for, unless the pipeline
// must) until acknowledged; the local batch then stores where the changelog
// of each partition goes on (the checkpoint of the next restore). The
// pipeline has one commit's records in flight at a time, so a complete
// Flush names that commit's last offsets.
Status Processor::Impl::SendChangelog(PendingCommit& commit, bool* sent) {
  *sent = false;
  if (changelog == nullptr || commit.changelog.empty()) return Status::Ok();
  for (const auto& record : commit.changelog) {
    auto status =
        changelog->Send(record.partition, record.key, record.tombstone ? nullptr : &record.value);
    if (!status.ok()) return status;
  }
  *sent = true;
  return Status::Ok();
}

Status Processor::Impl::ChangelogAcked(PendingCommit& commit, int timeout_ms, bool* done) {
  *done = false;
  std::map<int32_t, int64_t> last;
  bool timed_out = false;
  auto status = changelog->Flush(timeout_ms, &last, &timed_out);
  if (!status.ok()) return timed_out ? Status::Ok() : status;
  for (const auto& [partition, offset] : last) {
    commit.batch.meta.emplace_back(ChangelogCheckpointKey(partition), std::to_string(offset + 1));
  }
  commit.changelog.clear();
  *done = true;
  return Status::Ok();
}

void Processor::Impl::RestoreFromChangelog(int32_t partition) {
  counters.restoring.fetch_add(1);
  if (metrics) metrics->restore_partitions_restoring.Add(1);
  Log(LogLevel::kInfo, "restoring a partition from the state changelog",
      {{"topic", changelog->topic()}, {"partition", partition}});
  RestoredPartition restored;
  RestoreProgress stats;
  auto status = RestorePartition(
      *changelog, store, partition, &restored, &stats,
      [&](const RestoreProgress& progress) {
        Log(LogLevel::kInfo, "restoring a partition from the state changelog",
            {{"topic", changelog->topic()},
             {"partition", partition},
             {"records", progress.records},
             {"bytes", progress.bytes},
             {"users", progress.users},
             {"seconds", progress.seconds}});
      },
      restore_observer);
  counters.restoring.fetch_sub(1);
  if (metrics) {
    metrics->restore_partitions_restoring.Add(-1);
    metrics->restore_records.Inc(static_cast<uint64_t>(stats.records));
    metrics->restore_bytes.Inc(static_cast<uint64_t>(stats.bytes));
    metrics->restore_seconds.Add(stats.seconds);
  }
  if (!status.ok()) {
    if (callback_error.empty()) {
      callback_error = "restoring partition " + std::to_string(partition) +
                       " from the state changelog '" + changelog->topic() + "': " + status.message;
    }
    return;
  }
  counters.restored_records.fetch_add(stats.records);
  counters.restored_users.fetch_add(stats.users);
  counters.restored_event_ids.fetch_add(stats.event_ids);
  event_id_records[partition] = std::move(restored.event_id_records);
  int64_t skippable = 0;
  for (auto& [topic, users] : restored.skip) {
    skippable += static_cast<int64_t>(users.size());
    restore_skip[{topic, partition}] = std::move(users);
  }
  // What was cached or loaded of these users and of the partition is older
  // than the store now.
  for (const auto& id : restored.users) cache.erase(id);
  stream_time_ms.erase(partition);
  for (auto it = input_time_ms.begin(); it != input_time_ms.end();) {
    it = it->first.partition == partition ? input_time_ms.erase(it) : std::next(it);
  }
  Log(LogLevel::kInfo, "partition restored from the state changelog",
      {{"topic", changelog->topic()},
       {"partition", partition},
       {"from_offset", stats.from},
       {"end_offset", stats.end},
       {"records", stats.records},
       {"users", stats.users},
       {"event_ids", stats.event_ids},
       {"bytes", stats.bytes},
       {"users_ahead_of_marker", skippable},
       {"seconds", stats.seconds}});
}

// ---------------------------------------------------------------------------
// Processor: the public interface over Impl.

Processor::Processor(const config::Config& config, state::StateStore& store, models::Scorer& scorer,
                     connectors::KafkaSink& sink)
    : impl_(std::make_unique<Impl>(config, store, scorer, sink)) {}

Processor::~Processor() = default;

void Processor::set_metrics(ServiceMetrics* metrics) { impl_->metrics = metrics; }
void Processor::set_changelog(ChangelogIo* changelog) {
  impl_->changelog = changelog;
  impl_->changelog_writer = impl_->config.kafka.group_id + "/" + std::to_string(::getpid());
}
void Processor::set_commit_gate(std::function<bool()> gate) {
  impl_->commit_gate = std::move(gate);
}
void Processor::set_score_observer(std::function<void(const ScoreRecord&)> observer) {
  impl_->score_observer = std::move(observer);
}
void Processor::set_user_observer(std::function<void(const UserScoreChange&)> observer) {
  impl_->user_observer = std::move(observer);
}
void Processor::set_alert_observer(std::function<void(const AlertRecord&)> observer) {
  impl_->alert_observer = std::move(observer);
}
void Processor::set_restore_observer(RestoredUserObserver observer) {
  impl_->restore_observer = std::move(observer);
}
void Processor::set_commit_observer(
    std::function<void(const std::map<connectors::TopicPartition, int64_t>&)> observer) {
  impl_->commit_observer = std::move(observer);
}

Status Processor::ProcessBatch(const std::vector<connectors::Message>& messages) {
  if (!impl_->failed.empty()) {
    return Status::Error("processor stopped after an error: " + impl_->failed);
  }
  StageTimer timer(impl_->counters.process_nanos);
  auto status = impl_->ProcessBatch(messages);
  if (!status.ok()) impl_->failed = status.message;
  return status;
}

Status Processor::Commit() {
  auto status = Seal();
  if (!status.ok()) return status;
  return WriteAcknowledged(0);
}

bool Processor::HasUncommitted() const {
  return !impl_->dirty.empty() || !impl_->pending_offsets.empty();
}
Status Processor::Seal() { return impl_->Seal(); }
Status Processor::WriteAcknowledged(int max_pending) {
  return impl_->WriteAcknowledged(max_pending);
}
size_t Processor::sealed_count() const { return impl_->pipeline.pending(); }
void Processor::set_stop_flag(const std::atomic<bool>* stop) { impl_->pipeline.set_stop(stop); }
bool Processor::failed() const { return !impl_->failed.empty(); }

std::optional<int64_t> Processor::StartOffset(const connectors::TopicPartition& partition) {
  Impl& p = *impl_;
  // Offsets come from the store: everything sealed must be in it first.
  if (p.pipeline.pending() > 0) {
    auto written = WriteAcknowledged(0);
    if (!written.ok() && p.callback_error.empty()) p.callback_error = written.message;
  }
  // The partition's state follows it through the changelog: restored
  // before its offset is read (once per assignment).
  if (p.changelog != nullptr && p.callback_error.empty() &&
      p.restored_partitions.insert(partition.partition).second) {
    p.RestoreFromChangelog(partition.partition);
  }
  std::optional<int64_t> offset;
  auto status = p.store.GetOffset(partition.topic, partition.partition, &offset);
  if (!status.ok() && p.callback_error.empty()) p.callback_error = status.message;
  if (offset) p.known_offsets[partition] = *offset;
  return offset;
}

void Processor::OnAssigned(const std::vector<connectors::TopicPartition>& partitions) {
  Impl& p = *impl_;
  for (const auto& tp : partitions) {
    p.assigned.insert(tp);
    if (!p.stream_time_ms.count(tp.partition)) {
      std::optional<std::string> value;
      auto status = p.store.GetMeta(StreamTimeKey(tp.partition), &value);
      if (!status.ok()) {
        if (p.callback_error.empty()) p.callback_error = status.message;
        continue;
      }
      p.stream_time_ms[tp.partition] = value ? std::stoll(*value) : 0;
    }
    if (!p.input_time_ms.count(tp)) {
      std::optional<std::string> value;
      auto status = p.store.GetMeta(InputTimeKey(tp), &value);
      if (!status.ok()) {
        if (p.callback_error.empty()) p.callback_error = status.message;
        continue;
      }
      // A store written before input times were kept: the partition's stream
      // time (the stricter bound it used then).
      p.input_time_ms[tp] = value ? std::stoll(*value) : p.stream_time_ms[tp.partition];
    }
  }
}

void Processor::OnRevoked(const std::vector<connectors::TopicPartition>& partitions) {
  Impl& p = *impl_;
  auto status = Commit();
  if (!status.ok() && p.callback_error.empty()) p.callback_error = status.message;
  p.Forget(partitions, status.ok());
}

// Another instance may own these users next; with `caches`, everything cached
// is forgotten too, so that a later assignment reads the store again.
void Processor::Impl::Forget(const std::vector<connectors::TopicPartition>& partitions,
                             bool caches) {
  for (const auto& tp : partitions) {
    assigned.erase(tp);
    known_offsets.erase(tp);
    restore_skip.erase(tp);
    restored_partitions.erase(tp.partition);
    event_id_records.erase(tp.partition);
  }
  if (caches) {
    cache.clear();
    stream_time_ms.clear();
    input_time_ms.clear();
  }
}

void Processor::OnLost(const std::vector<connectors::TopicPartition>& partitions) {
  Impl& p = *impl_;
  size_t dropped = 0;
  auto status = p.pipeline.DropUnacknowledged(&dropped);
  if (!status.ok() && p.callback_error.empty()) p.callback_error = status.message;
  // What is still in flight belongs to the dropped commits (a commit is
  // handed to the writer only once its outputs and records are acknowledged).
  const uint64_t outputs = p.sink.Purge();
  const uint64_t records = p.changelog != nullptr ? p.changelog->Purge() : 0;
  // Nothing processed since the last seal is kept either.
  const size_t unsealed = p.dirty.size();
  p.dirty.clear();
  p.pending_timers.clear();
  p.pending_offsets.clear();
  p.stream_time_dirty.clear();
  p.pending_event_ids.clear();
  p.uncommitted_timestamps_ms.clear();
  p.folded_positions.clear();
  p.changelog_event_ids.clear();
  // The dropped commits may have moved the expiry: the next one repeats it.
  p.expired_before_day = INT32_MIN;
  // The cache holds the dropped commits' states: the store is read again.
  p.Forget(partitions, true);
  Log(LogLevel::kWarn,
      "partitions lost: their uncommitted work is dropped, the next owner reads those events "
      "again",
      {{"partitions", partitions.size()},
       {"commits_dropped", dropped},
       {"users_unsealed", unsealed},
       {"outputs_dropped", outputs},
       {"changelog_records_dropped", records}});
}

const ProcessorCounters& Processor::counters() const { return impl_->counters; }
std::atomic<int64_t>& Processor::mutable_poll_nanos() { return impl_->counters.poll_nanos; }
LatencyHistogram& Processor::latency() { return impl_->latency; }
void Processor::RequestLatencyReset() { impl_->latency_reset_requested.store(true); }
const std::string& Processor::model_version() const { return impl_->model_version; }
const std::string& Processor::callback_error() const { return impl_->callback_error; }

// ---------------------------------------------------------------------------

double LatencyHistogram::BucketUpperMs(int bucket) {
  // 0.1 ms * 1.3^bucket: bucket 63 is ~1.5e6 ms.
  return 0.1 * std::pow(1.3, bucket);
}

void LatencyHistogram::Record(double millis) {
  // The first bucket whose upper bound is >= millis: log_1.3(millis / 0.1),
  // rounded up, then nudged for rounding at the bounds.
  int bucket = 0;
  if (millis > BucketUpperMs(0)) {
    bucket = static_cast<int>(std::ceil(std::log(millis / 0.1) / std::log(1.3)));
    bucket = std::clamp(bucket, 0, kBuckets - 1);
    while (bucket > 0 && millis <= BucketUpperMs(bucket - 1)) --bucket;
    while (bucket < kBuckets - 1 && millis > BucketUpperMs(bucket)) ++bucket;
  }
  ++counts_[bucket];
  ++count_;
}

double LatencyHistogram::Quantile(double q) const {
  if (count_ == 0) return 0;
  auto rank = static_cast<int64_t>(std::ceil(q * static_cast<double>(count_)));
  int64_t seen = 0;
  for (int bucket = 0; bucket < kBuckets; ++bucket) {
    seen += counts_[bucket];
    if (seen >= rank) return BucketUpperMs(bucket);
  }
  return BucketUpperMs(kBuckets - 1);
}

void LatencyHistogram::Reset() {
  counts_.fill(0);
  count_ = 0;
}

}  // namespace clv::stream
