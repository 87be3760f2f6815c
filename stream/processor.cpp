#include "stream/processor.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <queue>
#include <thread>

#include "state/half.h"
#include "stream/json_text.h"
#include "stream/metrics.h"

namespace clv::stream {

using connectors::Status;

namespace {

constexpr int kFlushTimeoutMs = 60000;

constexpr int64_t kMsPerDay = 86400000LL;

int64_t WallClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

models::History ToHistory(const state::Aggregates& a) {
  models::History h;
  h.first_event_ms = a.first_event_ms;
  h.last_event_ms = a.last_event_ms;
  h.first_purchase_ms = a.first_purchase_ms;
  h.last_purchase_ms = a.last_purchase_ms;
  h.events = a.events;
  h.purchases = a.purchases;
  h.purchase_days = a.purchase_days;
  h.refunds = a.refunds;
  h.sessions = a.sessions;
  h.cart_adds = a.cart_adds;
  h.views = a.views;
  h.recent_activity = a.recent_activity;
  h.monetary_total = a.monetary_total;
  h.purchase_value_sum = a.purchase_value_sum;
  h.log_value_sum = a.log_value_sum;
  h.log_value_sq_sum = a.log_value_sq_sum;
  h.ewma_gap_days = a.ewma_gap_days;
  h.sessions_since_purchase = a.sessions_since_purchase;
  h.session_days_after_purchase = a.session_days_after_purchase;
  h.recent_sessions = a.recent_sessions;
  return h;
}

state::Aggregates ToAggregates(const models::History& h) {
  state::Aggregates a;
  a.first_event_ms = h.first_event_ms;
  a.last_event_ms = h.last_event_ms;
  a.first_purchase_ms = h.first_purchase_ms;
  a.last_purchase_ms = h.last_purchase_ms;
  a.events = h.events;
  a.purchases = h.purchases;
  a.purchase_days = h.purchase_days;
  a.refunds = h.refunds;
  a.sessions = h.sessions;
  a.cart_adds = h.cart_adds;
  a.views = h.views;
  a.recent_activity = h.recent_activity;
  a.monetary_total = h.monetary_total;
  a.purchase_value_sum = h.purchase_value_sum;
  a.log_value_sum = h.log_value_sum;
  a.log_value_sq_sum = h.log_value_sq_sum;
  a.ewma_gap_days = h.ewma_gap_days;
  a.sessions_since_purchase = h.sessions_since_purchase;
  a.session_days_after_purchase = h.session_days_after_purchase;
  a.recent_sessions = h.recent_sessions;
  return a;
}

// Standard normal quantile by bisection on erfc: slow-ish but exact enough
// and deterministic; computed once per Processor.
double NormalQuantile(double p) {
  double lo = -10, hi = 10;
  for (int i = 0; i < 200; ++i) {
    double mid = 0.5 * (lo + hi);
    double cdf = 0.5 * std::erfc(-mid / std::sqrt(2.0));
    (cdf < p ? lo : hi) = mid;
  }
  return 0.5 * (lo + hi);
}

int32_t EventDay(int64_t ts_ms) {
  return static_cast<int32_t>(ts_ms >= 0 ? ts_ms / kMsPerDay : (ts_ms - kMsPerDay + 1) / kMsPerDay);
}

}  // namespace

// Quiet days after which a buyer is at risk: a multiple of the user's own
// rhythm between purchase days, or the default until there is a rhythm.
// The single rule behind both the timers and NextStage().
double AtRiskQuietDays(const state::Aggregates& a, const config::LifecycleOptions& options) {
  const double days = a.purchase_days >= 2 && a.ewma_gap_days > 0
                          ? options.at_risk_gap_factor * a.ewma_gap_days
                          : options.at_risk_default_days;
  return std::max(1.0, days);
}

namespace {

std::string StreamTimeKey(int32_t partition) { return "stream_time/" + std::to_string(partition); }

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

std::string InputTimeKey(const connectors::TopicPartition& tp) {
  return "input_time/" + tp.topic + "/" + std::to_string(tp.partition);
}

}  // namespace

struct Processor::CachedUser {
  std::string user_id;
  state::UserState state;
  int64_t committed_timer_ms = 0;
  int32_t committed_partition = -1;
  uint64_t last_used_batch = 0;
  // This batch's work for the user (valid while work_batch == batch_number_).
  UserWork* work = nullptr;
  uint64_t work_batch = 0;
};

struct Processor::Op {
  bool is_event = true;
  models::StepEvent event;
  models::History before;
  models::History after;
  int64_t now_ms = 0;
  uint64_t seq = 0;
};

struct Processor::UserWork {
  CachedUser* user = nullptr;
  // The user's timer when the batch first touched it.
  int64_t timer_before = 0;
  int32_t partition_before = -1;
  std::vector<Op> ops;
};

struct Processor::TopicMetrics {
  Counter* consumed = nullptr;
  Counter* processed = nullptr;
  Counter* dead_lettered = nullptr;
  Counter* deduplicated = nullptr;
};

Processor::TopicMetrics& Processor::MetricsFor(const std::string& topic) {
  // Messages come in runs of one topic: the last one answers most lookups.
  if (last_topic_metrics_ != nullptr && last_topic_ == topic) return *last_topic_metrics_;
  auto it = topic_metrics_.find(topic);
  if (it != topic_metrics_.end()) {
    last_topic_ = topic;
    last_topic_metrics_ = it->second.get();
    return *it->second;
  }
  auto series = std::make_unique<TopicMetrics>();
  series->consumed = &metrics_->events_consumed.WithLabels({topic});
  series->processed = &metrics_->events_processed.WithLabels({topic});
  series->dead_lettered = &metrics_->events_dead_lettered.WithLabels({topic});
  series->deduplicated = &metrics_->events_deduplicated.WithLabels({topic});
  return *topic_metrics_.emplace(topic, std::move(series)).first->second;
}

Processor::Processor(const config::Config& config, state::StateStore& store,
                     models::Scorer& scorer, connectors::KafkaSink& sink)
    : config_(config),
      store_(store),
      scorer_(scorer),
      sink_(sink),
      decoder_(std::make_unique<Decoder>(config.mapping, config.validation)),
      model_version_(scorer.version()),
      state_size_(scorer.state_size()),
      anomaly_z_(NormalQuantile(config.lifecycle.anomaly_quantile)) {}

// The store writer: one thread, commits written in the order handed over.
// A failed write stops it; the error is reported to the processing thread.
class Processor::Writer {
 public:
  Writer(state::StateStore& store, std::atomic<int64_t>& store_nanos)
      : store_(store), store_nanos_(store_nanos), thread_([this] { Loop(); }) {}
  ~Writer() {
    {
      std::lock_guard lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  Writer(const Writer&) = delete;
  Writer& operator=(const Writer&) = delete;

  void Submit(const state::CommitBatch* batch) {
    {
      std::lock_guard lock(mu_);
      queue_.push_back(batch);
    }
    cv_.notify_all();
  }
  // Blocks until `count` commits are written (wait) or just reports how many
  // are; the first error, if any, in *error.
  uint64_t Written(uint64_t count, bool wait, std::string* error) {
    std::unique_lock lock(mu_);
    if (wait) cv_.wait(lock, [&] { return written_ >= count || !error_.empty(); });
    *error = error_;
    return written_;
  }

 private:
  void Loop() {
    std::unique_lock lock(mu_);
    for (;;) {
      cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
      if (queue_.empty() || !error_.empty()) return;  // stop, or nothing more may be written
      const state::CommitBatch* batch = queue_.front();
      lock.unlock();
      state::Status status;
      {
        StageTimer timer(store_nanos_);
        status = store_.Commit(*batch);
      }
      lock.lock();
      queue_.pop_front();
      if (status.ok()) {
        ++written_;
      } else {
        error_ = "committing state: " + status.message;
      }
      cv_.notify_all();
    }
  }

  state::StateStore& store_;
  std::atomic<int64_t>& store_nanos_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<const state::CommitBatch*> queue_;  // guarded by mu_
  uint64_t written_ = 0;                         // guarded by mu_
  std::string error_;                            // guarded by mu_
  bool stop_ = false;                            // guarded by mu_
  std::thread thread_;  // last: starts after the members it uses
};

Processor::~Processor() = default;

std::optional<int64_t> Processor::StartOffset(const connectors::TopicPartition& partition) {
  // Offsets come from the store: everything sealed must be in it first.
  if (!sealed_.empty()) {
    auto written = WriteAcknowledged(0);
    if (!written.ok() && callback_error_.empty()) callback_error_ = written.message;
  }
  std::optional<int64_t> offset;
  auto status = store_.GetOffset(partition.topic, partition.partition, &offset);
  if (!status.ok() && callback_error_.empty()) callback_error_ = status.message;
  return offset;
}

void Processor::OnAssigned(const std::vector<connectors::TopicPartition>& partitions) {
  for (const auto& tp : partitions) {
    assigned_.insert(tp);
    if (!stream_time_ms_.count(tp.partition)) {
      std::optional<std::string> value;
      auto status = store_.GetMeta(StreamTimeKey(tp.partition), &value);
      if (!status.ok()) {
        if (callback_error_.empty()) callback_error_ = status.message;
        continue;
      }
      stream_time_ms_[tp.partition] = value ? std::stoll(*value) : 0;
    }
    if (!input_time_ms_.count(tp)) {
      std::optional<std::string> value;
      auto status = store_.GetMeta(InputTimeKey(tp), &value);
      if (!status.ok()) {
        if (callback_error_.empty()) callback_error_ = status.message;
        continue;
      }
      // A store written before input times were kept: the partition's stream
      // time (the stricter bound it used then).
      input_time_ms_[tp] = value ? std::stoll(*value) : stream_time_ms_[tp.partition];
    }
  }
}

void Processor::OnRevoked(const std::vector<connectors::TopicPartition>& partitions) {
  auto status = Commit();
  if (!status.ok() && callback_error_.empty()) callback_error_ = status.message;
  for (const auto& tp : partitions) assigned_.erase(tp);
  // Another instance may own these users next; forget everything cached so
  // that a later assignment reads the store again.
  if (status.ok()) {
    cache_.clear();
    stream_time_ms_.clear();
    input_time_ms_.clear();
  }
}

Status Processor::LoadUsers(const std::vector<std::string>& user_ids) {
  std::vector<std::string> missing;
  for (const auto& id : user_ids) {
    auto it = cache_.find(id);
    if (it == cache_.end()) {
      missing.push_back(id);
    } else {
      it->second->last_used_batch = batch_number_;
    }
  }
  std::sort(missing.begin(), missing.end());
  missing.erase(std::unique(missing.begin(), missing.end()), missing.end());
  if (missing.empty()) return Status::Ok();
  std::vector<std::optional<state::UserState>> states;
  auto status = store_.MultiGetUsers(missing, &states);
  if (!status.ok()) return Status::Error("loading user states: " + status.message);
  for (size_t i = 0; i < missing.size(); ++i) {
    auto user = std::make_unique<CachedUser>();
    user->user_id = missing[i];
    user->last_used_batch = batch_number_;
    if (states[i]) {
      user->state = std::move(*states[i]);
      user->committed_timer_ms = user->state.next_timer_ms;
      user->committed_partition = user->state.partition;
      if (static_cast<int>(user->state.model_state.size()) != state_size_) {
        // The model changed shape (e.g. baseline -> lstm): start its state anew.
        user->state.model_state.assign(state_size_, 0.0f);
        if (state_size_ > 0) scorer_.InitState(user->state.model_state.data());
      }
    } else {
      user->state.fp16 = config_.state.fp16_hidden;
      user->state.model_state.assign(state_size_, 0.0f);
      if (state_size_ > 0) scorer_.InitState(user->state.model_state.data());
      if (user->state.fp16) {
        for (auto& v : user->state.model_state) v = state::RoundToFp16(v);
      }
      user->state.seq = 0;
      counters_.users_seen.fetch_add(1, std::memory_order_relaxed);
    }
    cache_.emplace(missing[i], std::move(user));
  }
  return Status::Ok();
}

int64_t Processor::NextTimerMs(const CachedUser& user) const {
  // Candidates depend only on aggregates, so replays fire the same timers.
  const auto& a = user.state.aggregates;
  if (a.last_event_ms == 0) return 0;
  const auto& lc = config_.lifecycle;
  const int64_t dormant_due = a.last_event_ms + static_cast<int64_t>(lc.dormant_days * kMsPerDay);
  if (a.purchases == 0) return dormant_due;
  const int64_t at_risk_due =
      a.last_event_ms + static_cast<int64_t>(AtRiskQuietDays(a, lc) * kMsPerDay);
  return std::min(at_risk_due, dormant_due);
}

Status Processor::SendDeadLetter(const connectors::Message& message, const std::string& reason) {
  // The record is the original, byte for byte (key and value); where it came
  // from and why it was refused travel in headers, as Kafka Connect does.
  std::vector<std::pair<std::string, std::string>> headers = {
      {"clv.dlq.reason", reason},
      {"clv.dlq.topic", message.topic},
      {"clv.dlq.partition", std::to_string(message.partition)},
      {"clv.dlq.offset", std::to_string(message.offset)},
      {"clv.dlq.timestamp_ms", std::to_string(message.timestamp_ms)},
  };
  counters_.dead_lettered.fetch_add(1, std::memory_order_relaxed);
  if (metrics_) MetricsFor(message.topic).dead_lettered->Inc();
  return sink_.SendWithHeaders(config_.kafka.dead_letter_topic, message.key, message.value,
                               headers);
}

std::string Processor::BuildScoreJson(const std::string& user_id, const CachedUser& user,
                                      const Op& op, const models::Score& score,
                                      double prev_clv) const {
  std::string json;
  json.reserve(384);
  json += "{\"user_id\":";
  AppendJsonString(json, user_id);
  char buffer[256];
  std::snprintf(buffer, sizeof buffer,
                ",\"clv\":%.4f,\"p_purchase\":%.6f,\"churn_risk\":%.6f,\"stage\":\"%s\","
                "\"segment\":\"%s\",\"seq\":%llu,\"event_ts\":%lld,\"model\":",
                score.clv, score.p_purchase, score.churn_risk, state::StageName(user.state.stage),
                Segment(user.state.aggregates, score, config_.lifecycle),
                static_cast<unsigned long long>(op.seq), static_cast<long long>(op.now_ms));
  json += buffer;
  AppendJsonString(json, model_version_);
  json += ",\"top_factors\":[";
  bool first = true;
  for (const auto& factor : score.top_factors) {
    if (factor.name[0] == '\0') continue;
    if (!first) json += ',';
    first = false;
    json += "{\"name\":";
    AppendJsonString(json, std::string(factor.name.data()));
    std::snprintf(buffer, sizeof buffer, ",\"contribution\":%.4f}",
                  static_cast<double>(factor.contribution));
    json += buffer;
  }
  std::snprintf(buffer, sizeof buffer, "],\"prev_clv\":%.4f,\"trigger\":\"%s\"}", prev_clv,
                op.is_event ? models::EventKindName(op.event.kind) : "timer");
  json += buffer;
  return json;
}

Status Processor::EmitAlert(const std::string& user_id, const std::string& kind,
                            const std::string& detail, const std::string& score_json) {
  std::string json = "{\"kind\":\"" + kind + "\",\"user_id\":";
  AppendJsonString(json, user_id);
  json += ",\"detail\":" + detail + ",\"score\":" + score_json + "}";
  counters_.alerts_emitted.fetch_add(1, std::memory_order_relaxed);
  if (metrics_) metrics_->alerts_emitted.WithLabels({kind}).Inc();
  auto sent = sink_.Send(config_.kafka.alerts_topic, user_id, json);
  if (sent.ok() && alert_observer_) alert_observer_(AlertRecord{kind, user_id, detail, score_json});
  return sent;
}

Status Processor::ProcessBatch(const std::vector<connectors::Message>& messages) {
  if (!failed_.empty()) return Status::Error("processor stopped after an error: " + failed_);
  StageTimer timer(counters_.process_nanos);
  auto status = ProcessBatchImpl(messages);
  if (!status.ok()) failed_ = status.message;
  return status;
}

Status Processor::ProcessBatchImpl(const std::vector<connectors::Message>& messages) {
  ++batch_number_;
  counters_.batches.fetch_add(1, std::memory_order_relaxed);
  const int64_t now_wall_ms = WallClockMs();

  // Decode everything first: we need the user ids (for one MultiGet) and the
  // largest event time per partition (for the due timers) before pass 1.
  struct Decoded {
    const connectors::Message* message = nullptr;
    bool ok = false;
    Event event;
    std::string reason;
  };
  std::vector<Decoded> decoded;
  decoded.reserve(messages.size());
  std::map<int32_t, int64_t> batch_max_ts;
  std::vector<std::string> user_ids;
  for (const auto& message : messages) {
    if (!assigned_.count({message.topic, message.partition})) continue;
    counters_.consumed.fetch_add(1, std::memory_order_relaxed);
    if (metrics_) MetricsFor(message.topic).consumed->Inc();
    if (message.timestamp_ms > 0) uncommitted_timestamps_ms_.push_back(message.timestamp_ms);
    Decoded d;
    d.message = &message;
    d.ok = decoder_->Decode(message.value, now_wall_ms, &d.event, &d.reason);
    if (d.ok) {
      user_ids.push_back(d.event.user_id);
      auto& max_ts = batch_max_ts[message.partition];
      max_ts = std::max(max_ts, d.event.ts_ms);
    }
    decoded.push_back(std::move(d));
  }

  // Timers that may fire in this batch: stored ones and uncommitted ones.
  using TimerKey = std::tuple<int64_t, std::string>;  // (due, user)
  std::map<int32_t, std::priority_queue<TimerKey, std::vector<TimerKey>, std::greater<>>> heaps;
  // Stream time cannot pass this within the batch (per partition).
  std::map<int32_t, int64_t> batch_up_to;
  for (const auto& [partition, max_ts] : batch_max_ts) {
    int64_t up_to = std::max(max_ts, stream_time_ms_[partition]);
    batch_up_to[partition] = up_to;
    std::vector<state::TimerEntry> due;
    auto status = store_.DueTimers(partition, up_to, 1u << 30, &due);
    if (!status.ok()) return Status::Error("reading due timers: " + status.message);
    auto& heap = heaps[partition];
    for (auto& timer : due) {
      user_ids.push_back(timer.user_id);
      heap.emplace(timer.due_ms, std::move(timer.user_id));
    }
    for (auto it = pending_timers_.lower_bound({partition, INT64_MIN, std::string()});
         it != pending_timers_.end() && std::get<0>(*it) == partition && std::get<1>(*it) <= up_to;
         ++it) {
      heap.emplace(std::get<1>(*it), std::get<2>(*it));
    }
  }
  Status status = LoadUsers(user_ids);
  if (!status.ok()) return status;

  // Event ids committed before (a late re-send): one MultiGet for the batch.
  const bool keep_ids = config_.stream.dedup_retention_days > 0;
  std::vector<state::EventIdEntry> id_entries;
  std::vector<bool> id_seen;
  if (keep_ids) {
    for (const auto& d : decoded) {
      if (d.ok) id_entries.push_back({EventDay(d.event.ts_ms), d.event.event_id_hash});
    }
    auto store_status = store_.SeenEventIds(id_entries, &id_seen);
    if (!store_status.ok()) return Status::Error("reading event ids: " + store_status.message);
  }
  size_t id_index = 0;

  // Pass 1, in message order: stream time, timers, dedup, aggregates, seq.
  std::unordered_map<std::string, UserWork> work;
  std::vector<std::string> work_order;  // users in order of first op
  auto work_for = [&](CachedUser* user) -> UserWork& {
    if (user->work_batch == batch_number_) return *user->work;
    auto [it, inserted] = work.try_emplace(user->user_id);
    user->work = &it->second;  // nodes of an unordered_map do not move
    user->work_batch = batch_number_;
    if (inserted) {
      it->second.user = user;
      it->second.timer_before = user->state.next_timer_ms;
      it->second.partition_before = user->state.partition;
      work_order.push_back(user->user_id);
    }
    return it->second;
  };
  // A user's next timer. Only one due within this batch's reach goes on the
  // heap now; the uncommitted-timer index is brought up to date once per user
  // after pass 1.
  auto set_timer = [&](CachedUser* user, int32_t partition, int64_t due) {
    auto& s = user->state;
    s.partition = partition;
    s.next_timer_ms = due;
    if (due != 0) {
      auto reach = batch_up_to.find(partition);
      if (reach != batch_up_to.end() && due <= reach->second) {
        heaps[partition].emplace(due, user->user_id);
      }
    }
  };

  std::map<connectors::TopicPartition, int64_t>::iterator offset_it = pending_offsets_.end();
  std::map<connectors::TopicPartition, int64_t>::iterator input_time_it = input_time_ms_.end();
  for (auto& d : decoded) {
    const auto& message = *d.message;
    EntryFor(pending_offsets_, offset_it, message) = message.offset + 1;
    if (!d.ok) {
      status = SendDeadLetter(message, d.reason);
      if (!status.ok()) return status;
      continue;
    }
    const int32_t partition = message.partition;
    auto& stream_time = stream_time_ms_[partition];
    // Lateness is measured within the event's own topic-partition, whose
    // order is fixed: one topic read ahead of another (a backlog) makes no
    // event of the other late, and the verdict never depends on interleaving.
    int64_t& input_time = EntryFor(input_time_ms_, input_time_it, message);
    state::EventIdEntry id_entry;
    bool id_seen_before = false;
    if (keep_ids) {
      id_entry = id_entries[id_index];
      id_seen_before = id_seen[id_index++];
      // Ids older than the retention are gone: such an event cannot be checked
      // for duplicates, so it is refused (deterministically, by input time).
      const int32_t oldest_day = EventDay(input_time) - config_.stream.dedup_retention_days;
      if (input_time > 0 && id_entry.day < oldest_day) {
        status = SendDeadLetter(
            message, "event time " + std::to_string(d.event.ts_ms) + " is more than " +
                         std::to_string(config_.stream.dedup_retention_days) +
                         " days behind the latest event time " + std::to_string(input_time) +
                         " of " + message.topic + " [" + std::to_string(partition) +
                         "] (stream.dedup_retention_days): too late to check for duplicates");
        if (!status.ok()) return status;
        continue;
      }
    }
    input_time = std::max(input_time, d.event.ts_ms);
    if (d.event.ts_ms > stream_time) {
      stream_time = d.event.ts_ms;
      stream_time_dirty_.insert(partition);
    }
    // Fire the timers that stream time has passed.
    auto heap_it = heaps.find(partition);
    while (heap_it != heaps.end() && !heap_it->second.empty() &&
           std::get<0>(heap_it->second.top()) <= stream_time) {
      auto [due, user_id] = heap_it->second.top();
      heap_it->second.pop();
      auto cached = cache_.find(user_id);
      if (cached == cache_.end()) continue;
      CachedUser* user = cached->second.get();
      if (user->state.next_timer_ms != due || user->state.partition != partition) continue;
      Op op;
      op.is_event = false;
      op.before = op.after = ToHistory(user->state.aggregates);
      op.before.attrs = op.after.attrs = models::MakeAttrEntries(user->state.attrs);
      op.now_ms = due;
      op.seq = ++user->state.seq;
      work_for(user).ops.push_back(op);
      // Next check: the next candidate after this one.
      int64_t next = NextTimerMs(*user);
      if (next <= due) {
        // at_risk check passed; the dormant check is next (or none).
        const auto& a = user->state.aggregates;
        int64_t dormant = a.last_event_ms +
                          static_cast<int64_t>(config_.lifecycle.dormant_days * kMsPerDay);
        next = dormant > due ? dormant : 0;
      }
      set_timer(user, partition, next);
      counters_.timer_rescores.fetch_add(1, std::memory_order_relaxed);
    }

    CachedUser* user = cache_.at(d.event.user_id).get();
    user->last_used_batch = batch_number_;
    auto& s = user->state;
    auto& ids = s.recent_event_ids;
    bool duplicate = std::find(ids.begin(), ids.end(), d.event.event_id_hash) != ids.end();
    if (keep_ids) {
      duplicate = duplicate || id_seen_before || InSealed({id_entry.day, id_entry.hash}) ||
                  !pending_event_ids_.emplace(id_entry.day, id_entry.hash).second;
    }
    if (duplicate) {
      counters_.duplicates.fetch_add(1, std::memory_order_relaxed);
      if (metrics_) MetricsFor(message.topic).deduplicated->Inc();
      continue;
    }
    if (config_.stream.dedup_window > 0) {
      ids.push_back(d.event.event_id_hash);
      if (static_cast<int>(ids.size()) > config_.stream.dedup_window) ids.erase(ids.begin());
    }
    Op op;
    op.event = models::StepEvent{d.event.kind, d.event.ts_ms, d.event.amount};
    if (d.event.kind == models::EventKind::kProfile) {
      op.event.attrs = models::MakeAttrEntries(d.event.attrs);
    }
    op.before = ToHistory(s.aggregates);
    op.before.attrs = models::MakeAttrEntries(s.attrs);  // attrs before this event
    op.after = op.before;
    models::UpdateHistory(op.after, op.event);
    op.now_ms = d.event.ts_ms;
    op.seq = ++s.seq;
    s.aggregates = ToAggregates(op.after);
    if (d.event.kind == models::EventKind::kProfile) {
      for (auto& [key, value] : d.event.attrs) {
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
    work_for(user).ops.push_back(op);
    set_timer(user, partition, NextTimerMs(*user));
    counters_.processed.fetch_add(1, std::memory_order_relaxed);
    if (metrics_) MetricsFor(message.topic).processed->Inc();
  }

  for (const auto& id : work_order) {
    const UserWork& w = work.at(id);
    const auto& s = w.user->state;
    dirty_.insert(id);
    if (w.timer_before == s.next_timer_ms && w.partition_before == s.partition) continue;
    if (w.timer_before != 0) pending_timers_.erase({w.partition_before, w.timer_before, id});
    if (s.next_timer_ms != 0) pending_timers_.insert({s.partition, s.next_timer_ms, id});
  }

  // Pass 2: run the scorer in rounds; round k holds the k-th op of every user.
  const double anomaly_z = anomaly_z_;
  size_t max_ops = 0;
  for (const auto& id : work_order) max_ops = std::max(max_ops, work.at(id).ops.size());
  std::vector<UserWork*> step_users, rescore_users;
  std::vector<models::StepInput> step_inputs;
  std::vector<models::RescoreInput> rescore_inputs;
  std::vector<models::Score> step_scores, rescore_scores;
  const bool per_event = config_.stream.emit == "per_event";
  for (size_t round = 0; round < max_ops; ++round) {
    step_users.clear();
    rescore_users.clear();
    step_inputs.clear();
    rescore_inputs.clear();
    for (const auto& id : work_order) {
      auto& w = work.at(id);
      if (round >= w.ops.size()) continue;
      const Op& op = w.ops[round];
      float* model_state = w.user->state.model_state.empty() ? nullptr
                                                              : w.user->state.model_state.data();
      if (op.is_event) {
        step_users.push_back(&w);
        step_inputs.push_back(models::StepInput{&op.before, &op.after, op.event, model_state});
      } else {
        rescore_users.push_back(&w);
        rescore_inputs.push_back(models::RescoreInput{&op.after, op.now_ms, model_state});
      }
    }
    step_scores.assign(step_inputs.size(), models::Score{});
    rescore_scores.assign(rescore_inputs.size(), models::Score{});
    auto started = std::chrono::steady_clock::now();
    if (!step_inputs.empty()) scorer_.Step(step_inputs, step_scores);
    if (!rescore_inputs.empty()) scorer_.Rescore(rescore_inputs, rescore_scores);
    counters_.scorer_nanos.fetch_add(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() -
                                                             started)
            .count(),
        std::memory_order_relaxed);
    counters_.scorer_steps.fetch_add(static_cast<int64_t>(step_inputs.size()),
                                     std::memory_order_relaxed);
    if (metrics_) metrics_->scorer_user_steps.Inc(step_inputs.size());

    auto finish = [&](UserWork& w, const models::Score& score) -> Status {
      const Op& op = w.ops[round];
      auto& s = w.user->state;
      if (s.fp16) {
        for (auto& v : s.model_state) v = state::RoundToFp16(v);
      }
      const double prev_clv = s.clv;
      const double prev_churn = s.churn_risk;
      const state::Stage prev_stage = s.stage;
      const bool purchased = op.is_event && op.event.kind == models::EventKind::kPurchase;
      // Aggregates as of this op (later ops of the batch already moved them).
      state::Aggregates saved = s.aggregates;
      s.aggregates = ToAggregates(op.after);
      s.stage = NextStage(prev_stage, s.aggregates, score, op.now_ms, purchased,
                          config_.lifecycle);
      s.clv = score.clv;
      s.p_purchase = score.p_purchase;
      s.churn_risk = score.churn_risk;
      s.score_ts_ms = op.now_ms;
      const bool last_op = round + 1 == w.ops.size();
      std::string score_json = "null";
      Status st = Status::Ok();
      bool want_alert = prev_stage != s.stage ||
                        (prev_churn < config_.lifecycle.churn_alert &&
                         score.churn_risk >= config_.lifecycle.churn_alert);
      bool anomaly = false;
      if (purchased && op.before.purchases >= 2 && op.event.amount > 0) {
        double n = op.before.purchases;
        double mean = op.before.log_value_sum / n;
        double var = std::max(0.0, op.before.log_value_sq_sum / n - mean * mean);
        double sd = std::max(std::sqrt(var), 0.25);
        anomaly = std::log(op.event.amount) > mean + anomaly_z * sd;
        want_alert = want_alert || anomaly;
      }
      if (per_event || last_op || want_alert) {
        score_json = BuildScoreJson(w.user->user_id, *w.user, op, score, prev_clv);
      }
      if (per_event || last_op) {
        st = sink_.Send(config_.kafka.scores_topic, w.user->user_id, score_json);
        if (!st.ok()) {
          s.aggregates = saved;
          return st;
        }
        counters_.scores_emitted.fetch_add(1, std::memory_order_relaxed);
        if (metrics_) metrics_->scores_emitted.Inc();
        if (score_observer_) {
          score_observer_(ScoreRecord{w.user->user_id, op.seq, score.clv, score.churn_risk,
                                      score_json});
        }
      }
      char detail[256];
      if (prev_stage != s.stage) {
        std::snprintf(detail, sizeof detail,
                      "{\"from\":\"%s\",\"to\":\"%s\",\"seq\":%llu,\"event_ts\":%lld}",
                      state::StageName(prev_stage), state::StageName(s.stage),
                      static_cast<unsigned long long>(op.seq), static_cast<long long>(op.now_ms));
        st = EmitAlert(w.user->user_id, "stage_change", detail, score_json);
        if (!st.ok()) return st;
      }
      if (prev_churn < config_.lifecycle.churn_alert &&
          score.churn_risk >= config_.lifecycle.churn_alert) {
        std::snprintf(detail, sizeof detail,
                      "{\"from\":%.6f,\"to\":%.6f,\"threshold\":%.6f,\"seq\":%llu,\"event_ts\":%lld}",
                      prev_churn, score.churn_risk, config_.lifecycle.churn_alert,
                      static_cast<unsigned long long>(op.seq), static_cast<long long>(op.now_ms));
        st = EmitAlert(w.user->user_id, "churn_risk", detail, score_json);
        if (!st.ok()) return st;
      }
      if (anomaly) {
        double n = op.before.purchases;
        double mean = op.before.log_value_sum / n;
        std::snprintf(detail, sizeof detail,
                      "{\"amount\":%.2f,\"typical_amount\":%.2f,\"quantile\":%.6f,\"seq\":%llu,"
                      "\"event_ts\":%lld}",
                      op.event.amount, std::exp(mean), config_.lifecycle.anomaly_quantile,
                      static_cast<unsigned long long>(op.seq), static_cast<long long>(op.now_ms));
        st = EmitAlert(w.user->user_id, "spend_anomaly", detail, score_json);
        if (!st.ok()) return st;
      }
      if (user_observer_) {
        // seq 1 is the first op of a user that had no stored state.
        user_observer_(UserScoreChange{w.user->user_id, op.seq == 1, prev_stage, s.stage, prev_clv,
                                       score.clv, score.churn_risk});
      }
      s.aggregates = saved;
      return Status::Ok();
    };
    for (size_t i = 0; i < step_users.size(); ++i) {
      status = finish(*step_users[i], step_scores[i]);
      if (!status.ok()) return status;
    }
    for (size_t i = 0; i < rescore_users.size(); ++i) {
      status = finish(*rescore_users[i], rescore_scores[i]);
      if (!status.ok()) return status;
    }
  }
  return Status::Ok();
}

Status Processor::Commit() {
  auto status = Seal();
  if (!status.ok()) return status;
  return WriteAcknowledged(0);
}

Status Processor::Seal() {
  // After a failed batch the cache holds half-applied state: never write it.
  if (!failed_.empty()) return Status::Error("not committing after an error: " + failed_);
  if (!HasUncommitted() && stream_time_dirty_.empty()) return Status::Ok();
  SealedCommit sealed;
  state::CommitBatch& batch = sealed.batch;
  batch.users.reserve(dirty_.size());
  for (const auto& id : dirty_) {
    auto it = cache_.find(id);
    if (it == cache_.end()) continue;
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
  for (const auto& [tp, offset] : pending_offsets_) {
    batch.offsets.push_back({tp.topic, tp.partition, offset});
  }
  for (int32_t partition : stream_time_dirty_) {
    batch.meta.emplace_back(StreamTimeKey(partition), std::to_string(stream_time_ms_[partition]));
  }
  // Input times move only with events, whose partitions all have an offset
  // to commit.
  for (const auto& [tp, offset] : pending_offsets_) {
    auto it = input_time_ms_.find(tp);
    if (it != input_time_ms_.end() && it->second > 0) {
      batch.meta.emplace_back(InputTimeKey(tp), std::to_string(it->second));
    }
  }
  for (const auto& [day, hash] : pending_event_ids_) batch.event_ids_added.push_back({day, hash});
  if (config_.stream.dedup_retention_days > 0 && !input_time_ms_.empty()) {
    // Every input topic-partition refuses events older than its own latest
    // event time minus the retention, so ids before the slowest one's horizon
    // are never needed.
    int64_t min_stream_time = INT64_MAX;
    for (const auto& [tp, ts] : input_time_ms_) {
      if (ts > 0) min_stream_time = std::min(min_stream_time, ts);
    }
    int32_t expire_before = min_stream_time == INT64_MAX
                                ? INT32_MIN
                                : EventDay(min_stream_time) - config_.stream.dedup_retention_days;
    if (expire_before > expired_before_day_ + 1) {
      batch.event_ids_expire_before_day = expire_before;
      expired_before_day_ = expire_before;
    }
  }
  sealed.event_ids = std::move(pending_event_ids_);
  sealed.timestamps_ms = std::move(uncommitted_timestamps_ms_);
  pending_event_ids_.clear();
  uncommitted_timestamps_ms_.clear();
  dirty_.clear();
  pending_offsets_.clear();
  stream_time_dirty_.clear();
  // Everything sent so far (scores, alerts, dead letters of these events).
  sealed.mark = sink_.Mark();
  sealed_.push_back(std::move(sealed));
  return Status::Ok();
}

Status Processor::HandOver(bool wait) {
  for (SealedCommit& sealed : sealed_) {
    if (sealed.handed_over) continue;
    bool done = false;
    int64_t acked_ms = 0;
    Status status = Status::Ok();
    {
      StageTimer timer(counters_.flush_nanos);
      status = sink_.WaitAcked(sealed.mark, wait ? kFlushTimeoutMs : 0, &done, &acked_ms);
    }
    if (!status.ok()) {
      failed_ = "waiting for the producer before commit: " + status.message;
      return Status::Error(failed_);
    }
    if (!done) {
      if (!wait) return Status::Ok();
      failed_ = "waiting for the producer before commit: outputs not acknowledged within " +
                std::to_string(kFlushTimeoutMs) + " ms";
      return Status::Error(failed_);
    }
    if (latency_reset_requested_.exchange(false)) latency_.Reset();
    for (int64_t ts : sealed.timestamps_ms) {
      latency_.Record(static_cast<double>(std::max<int64_t>(0, acked_ms - ts)));
      if (metrics_) {
        metrics_->event_to_score_seconds.Observe(
            static_cast<double>(std::max<int64_t>(0, acked_ms - ts)) / 1000.0);
      }
    }
    if (!writer_) writer_ = std::make_unique<Writer>(store_, counters_.store_nanos);
    sealed.handed_over = true;
    sealed.write_number = ++handed_over_;
    writer_->Submit(&sealed.batch);
    wait = false;  // only the oldest is waited for
  }
  return Status::Ok();
}

Status Processor::WriteAcknowledged(int max_pending) {
  if (!failed_.empty()) return Status::Error("not committing after an error: " + failed_);
  // A full cache is trimmed only when nothing is pending: an evicted user must
  // be read back from the store with its latest state.
  const size_t max_users = static_cast<size_t>(std::max(1, config_.stream.cache_max_users));
  if (cache_.size() > max_users) max_pending = 0;
  auto status = HandOver(false);
  if (!status.ok()) return status;
  while (!sealed_.empty()) {
    SealedCommit& front = sealed_.front();
    const bool must_wait = static_cast<int>(sealed_.size()) > max_pending;
    if (!front.handed_over) {
      if (!must_wait) break;
      status = HandOver(true);
      if (!status.ok()) return status;
    }
    std::string error;
    uint64_t written = 0;
    {
      StageTimer timer(counters_.flush_nanos);
      written = writer_->Written(front.write_number, must_wait, &error);
    }
    if (!error.empty()) {
      failed_ = error;
      return Status::Error(failed_);
    }
    if (written < front.write_number) break;
    sealed_.pop_front();
    counters_.commits.fetch_add(1, std::memory_order_relaxed);
    if (metrics_) metrics_->commits.Inc();
  }
  if (sealed_.empty() && !HasUncommitted()) {
    // Everything is in the store: the uncommitted-timer index restarts empty.
    pending_timers_.clear();
    EvictIfNeeded();
  }
  return Status::Ok();
}

bool Processor::InSealed(const std::pair<int32_t, uint64_t>& id) const {
  for (const auto& sealed : sealed_) {
    if (sealed.event_ids.count(id)) return true;
  }
  return false;
}

void Processor::EvictIfNeeded() {
  const size_t max_users = static_cast<size_t>(std::max(1, config_.stream.cache_max_users));
  if (cache_.size() <= max_users) return;
  // Everything is clean right after a commit: drop the least recently used.
  std::vector<std::pair<uint64_t, std::string>> by_age;
  by_age.reserve(cache_.size());
  for (const auto& [id, user] : cache_) by_age.emplace_back(user->last_used_batch, id);
  size_t drop = cache_.size() - max_users * 9 / 10;
  std::nth_element(by_age.begin(), by_age.begin() + static_cast<std::ptrdiff_t>(drop),
                   by_age.end());
  for (size_t i = 0; i < drop; ++i) cache_.erase(by_age[i].second);
}

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

state::Stage NextStage(state::Stage current, const state::Aggregates& a,
                       const models::Score& score, int64_t now_ms, bool purchased_now,
                       const config::LifecycleOptions& options) {
  using state::Stage;
  if (a.purchases == 0) return Stage::kPotential;
  const double quiet_days = static_cast<double>(now_ms - a.last_event_ms) / kMsPerDay;
  if (purchased_now) {
    if (current == Stage::kDormant) return Stage::kReturning;
    if (a.purchases == 1) return Stage::kNew;
    // A returning customer becomes active again with the next purchase.
    return Stage::kActive;
  }
  if (quiet_days >= options.dormant_days) return Stage::kDormant;
  const double expected_gap_days = AtRiskQuietDays(a, options);
  const double purchase_quiet_days = static_cast<double>(now_ms - a.last_purchase_ms) / kMsPerDay;
  if (quiet_days >= expected_gap_days ||
      (purchase_quiet_days >= expected_gap_days &&
       score.churn_risk >= options.at_risk_churn)) {
    return current == Stage::kDormant ? Stage::kDormant : Stage::kAtRisk;
  }
  if (current == Stage::kAtRisk || current == Stage::kDormant) {
    // Activity (not a purchase) after a quiet spell: still at risk until they buy.
    return current == Stage::kDormant ? Stage::kDormant : Stage::kAtRisk;
  }
  if (current == Stage::kPotential) return a.purchases == 1 ? Stage::kNew : Stage::kActive;
  return current;
}

const char* Segment(const state::Aggregates& a, const models::Score& score,
                    const config::LifecycleOptions& options) {
  if (a.purchases == 0) return "prospect";
  if (score.clv >= options.high_value_clv) return "high_value";
  if (score.clv < options.low_value_clv) return "low_value";
  return "mid_value";
}

}  // namespace clv::stream
