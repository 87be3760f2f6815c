// Kafka connectors on librdkafka's C API (see kafka.h for the contract).
//
// Defaults are applied first and the caller's `properties` last, so every
// tuning below can be overridden from config (kafka.properties.*).
#include "connectors/kafka.h"

#include <dlfcn.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <set>
#include <thread>

#include <arpa/inet.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include "common/log.h"
#include "common/time.h"
#include "config/config.h"

namespace clv::connectors {
namespace {

// Consumer defaults. Exactly-once comes from our state store: Kafka offsets
// are never auto-committed or auto-stored, the start position of every
// assigned partition comes from SourceCallbacks::start_offset.
//   partition.assignment.strategy: "cooperative-sticky". A rebalance
//   revokes only the partitions that move (incremental assign/unassign in
//   the rebalance callback when the group protocol is COOPERATIVE): the
//   others keep being processed, and keep their restored state. "range"
//   (eager: revoke everything, then reassign) still works through
//   properties; every member of a group must use the same kind.
constexpr const char* kConsumerDefaults[][2] = {
    {"enable.auto.commit", "false"},
    {"enable.auto.offset.store", "false"},
    // A position not in the log is never moved silently: every partition
    // starts at an explicit offset (stored, or the beginning), and one that
    // falls out of the log while being read stops Poll() with an error.
    {"auto.offset.reset", "error"},
    {"isolation.level", "read_committed"},
    {"partition.assignment.strategy", "cooperative-sticky"},
    {"enable.partition.eof", "false"},
    {"allow.auto.create.topics", "true"},
    {"log.connection.close", "false"},
};

// Producer defaults: idempotent, all replicas, small linger, large batches.
constexpr const char* kProducerDefaults[][2] = {
    {"enable.idempotence", "true"},
    {"acks", "all"},
    {"linger.ms", "5"},
    {"batch.num.messages", "10000"},
    {"batch.size", "1000000"},
    {"queue.buffering.max.messages", "1000000"},
    {"compression.type", "lz4"},
    {"log.connection.close", "false"},
};

struct ConfDeleter {
  void operator()(rd_kafka_conf_t* conf) const { rd_kafka_conf_destroy(conf); }
};
struct HandleDeleter {
  void operator()(rd_kafka_t* rk) const { rd_kafka_destroy(rk); }
};
struct PartitionListDeleter {
  void operator()(rd_kafka_topic_partition_list_t* list) const {
    rd_kafka_topic_partition_list_destroy(list);
  }
};
struct QueueDeleter {
  void operator()(rd_kafka_queue_t* queue) const { rd_kafka_queue_destroy(queue); }
};
struct EventDeleter {
  void operator()(rd_kafka_event_t* event) const { rd_kafka_event_destroy(event); }
};
using ConfPtr = std::unique_ptr<rd_kafka_conf_t, ConfDeleter>;
using HandlePtr = std::unique_ptr<rd_kafka_t, HandleDeleter>;
using PartitionListPtr = std::unique_ptr<rd_kafka_topic_partition_list_t, PartitionListDeleter>;
using QueuePtr = std::unique_ptr<rd_kafka_queue_t, QueueDeleter>;
using EventPtr = std::unique_ptr<rd_kafka_event_t, EventDeleter>;

Status SetProperty(rd_kafka_conf_t* conf, const std::string& key, const std::string& value) {
  char errstr[512];
  if (rd_kafka_conf_set(conf, key.c_str(), value.c_str(), errstr, sizeof(errstr)) !=
      RD_KAFKA_CONF_OK) {
    return Status::Error("Kafka property '" + key + "'='" + value + "': " + errstr);
  }
  return Status::Ok();
}

// Builds a librdkafka config: defaults, then connection settings, then the
// caller's properties (which win).
template <size_t N>
Status MakeConf(const ClientOptions& options, const char* const (&defaults)[N][2], ConfPtr* out) {
  ConfPtr conf(rd_kafka_conf_new());
  for (const auto& kv : defaults) {
    if (auto s = SetProperty(conf.get(), kv[0], kv[1]); !s.ok()) return s;
  }
  if (options.bootstrap_servers.empty()) {
    return Status::Error("Kafka bootstrap_servers is empty");
  }
  if (auto s = SetProperty(conf.get(), "bootstrap.servers", options.bootstrap_servers); !s.ok()) {
    return s;
  }
  if (!options.client_id.empty()) {
    if (auto s = SetProperty(conf.get(), "client.id", options.client_id); !s.ok()) return s;
  }
  for (const auto& [key, value] : options.properties) {
    if (auto s = SetProperty(conf.get(), key, value); !s.ok()) return s;
  }
  *out = std::move(conf);
  return Status::Ok();
}

Status MakeHandle(rd_kafka_type_t type, ConfPtr conf, HandlePtr* out) {
  char errstr[512];
  // rd_kafka_new takes ownership of conf only on success.
  rd_kafka_t* rk = rd_kafka_new(type, conf.get(), errstr, sizeof(errstr));
  if (rk == nullptr) {
    return Status::Error(std::string("creating Kafka ") +
                         (type == RD_KAFKA_PRODUCER ? "producer" : "consumer") + ": " + errstr);
  }
  (void)conf.release();
  out->reset(rk);
  return Status::Ok();
}

std::string PartitionName(const std::string& topic, int32_t partition) {
  return "topic '" + topic + "' [" + std::to_string(partition) + "]";
}

bool IsFatalConsumerError(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR__FATAL:
    case RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR_CLUSTER_AUTHORIZATION_FAILED:
    case RD_KAFKA_RESP_ERR__AUTHENTICATION:
    case RD_KAFKA_RESP_ERR_SASL_AUTHENTICATION_FAILED:
    case RD_KAFKA_RESP_ERR__INVALID_ARG: return true;
    default: return false;
  }
}

std::vector<TopicPartition> ToVector(const rd_kafka_topic_partition_list_t* list) {
  std::vector<TopicPartition> out;
  if (list == nullptr) return out;
  out.reserve(list->cnt);
  for (int i = 0; i < list->cnt; ++i) {
    out.push_back({list->elems[i].topic, list->elems[i].partition});
  }
  return out;
}

// Whether `rk` is connected to librdkafka's mock cluster (the embedded broker,
// in this process or in `clv broker`): its cluster id is "mockCluster<hex>".
bool IsEmbeddedCluster(rd_kafka_t* rk) {
  char* id = rd_kafka_clusterid(rk, 2000);
  if (id == nullptr) return false;
  const bool mock = std::string_view(id).rfind("mockCluster", 0) == 0;
  rd_kafka_mem_free(rk, id);
  return mock;
}

// Why events before the log start are gone.
std::string DeletionCause(bool embedded) {
  if (embedded) {
    return "the embedded broker (librdkafka's mock cluster) keeps only about " +
           std::to_string(kEmbeddedBrokerPartitionBytes >> 20) +
           " MiB of record batches per partition and drops older ones: use more partitions or a "
           "real Kafka";
  }
  return "deleted by retention (the topic's retention.ms / retention.bytes) before they were read";
}

// What is wrong with reading `tp` at `offset` (`stored`: the state store's
// next offset, else the partition was never read and 0 is expected) in a log
// of [low, high); empty when nothing is.
std::string StartProblem(const TopicPartition& tp, int64_t offset, bool stored, int64_t low,
                         int64_t high, bool embedded) {
  const std::string where = PartitionName(tp.topic, tp.partition) + ": ";
  const std::string range =
      " (log start " + std::to_string(low) + ", log end " + std::to_string(high) + ")";
  if (offset > high) {
    return where + "the stored offset " + std::to_string(offset) + " is past the log end" + range +
           ": the topic or the cluster was recreated since it was stored (or the broker lost "
           "data); reading on would skip or reuse offsets of another log";
  }
  if (offset >= low) return "";
  const std::string lost =
      "offsets " + std::to_string(offset) + ".." + std::to_string(low - 1) + " are gone";
  if (stored) {
    return where + "the stored offset " + std::to_string(offset) + " is before the log start" +
           range + ": " + lost + " (" + DeletionCause(embedded) + ")";
  }
  return where + "this state has never read the partition, so it starts at offset 0, but the log " +
         "starts later" + range + ": " + lost + " (" + DeletionCause(embedded) + ")";
}

constexpr const char* kResetHint =
    ". Events counted so far stay in the state. To go on, start once with `--reset-offsets "
    "earliest` (read the partition from its log start) or `--reset-offsets latest` (from its "
    "end), i.e. option kafka.reset_offsets; see docs/KAFKA.md";

constexpr int kWatermarkTimeoutMs = 10000;

// Errors a partition's watermark query meets while its topic is new or its
// leadership moves (the leader not elected yet, metadata not propagated):
// asked again, they go away.
bool TransientPartitionError(rd_kafka_resp_err_t err) {
  switch (err) {
    case RD_KAFKA_RESP_ERR_LEADER_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION:
    case RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART:
    case RD_KAFKA_RESP_ERR_REPLICA_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR_FENCED_LEADER_EPOCH:
    case RD_KAFKA_RESP_ERR_UNKNOWN_LEADER_EPOCH:
    case RD_KAFKA_RESP_ERR_OFFSET_NOT_AVAILABLE:
    case RD_KAFKA_RESP_ERR__UNKNOWN_PARTITION:
    case RD_KAFKA_RESP_ERR__TRANSPORT: return true;
    default: return false;
  }
}

// rd_kafka_query_watermark_offsets, asked again while the answer is a
// transient error, within timeout_ms in all.
rd_kafka_resp_err_t QueryWatermarks(rd_kafka_t* rk, const std::string& topic, int32_t partition,
                                    int64_t* low, int64_t* high, int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                          deadline - std::chrono::steady_clock::now())
                          .count();
    auto err = rd_kafka_query_watermark_offsets(rk, topic.c_str(), partition, low, high,
                                                static_cast<int>(std::max<int64_t>(left, 100)));
    if (!err || !TransientPartitionError(err) || left <= 100) return err;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

// ---------------------------------------------------------------- source

class KafkaSourceImpl final : public KafkaSource {
 public:
  explicit KafkaSourceImpl(SourceCallbacks callbacks) : callbacks_(std::move(callbacks)) {}
  ~KafkaSourceImpl() override {
    if (rk_ != nullptr && !closed_) {
      (void)Close();
    }
  }
  KafkaSourceImpl(const KafkaSourceImpl&) = delete;
  KafkaSourceImpl& operator=(const KafkaSourceImpl&) = delete;

  Status Init(const ClientOptions& options, const std::vector<std::string>& topics) {
    if (options.group_id.empty()) return Status::Error("KafkaSource: group_id is empty");
    if (topics.empty()) return Status::Error("KafkaSource: no topics to subscribe to");
    ConfPtr conf;
    if (auto s = MakeConf(options, kConsumerDefaults, &conf); !s.ok()) return s;
    if (auto s = SetProperty(conf.get(), "group.id", options.group_id); !s.ok()) return s;
    rd_kafka_conf_set_opaque(conf.get(), this);
    rd_kafka_conf_set_rebalance_cb(conf.get(), &KafkaSourceImpl::RebalanceThunk);
    // Client-level errors (a broker down, all brokers down) come here, on the
    // polling thread; without it librdkafka only logs them. They stay on the
    // main queue (not redirected to the consumer's), which every Poll()
    // serves first: a Poll that reads no message (the service's probe while
    // its commits wait for acknowledgements) still sees an outage.
    rd_kafka_conf_set_error_cb(conf.get(), &KafkaSourceImpl::ErrorThunk);
    // The broker's answer to each CommitAsync (served by Poll, on the polling
    // thread): GroupCommitted() tells what the group holds.
    rd_kafka_conf_set_offset_commit_cb(conf.get(), &KafkaSourceImpl::OffsetCommitThunk);
    bootstrap_ = options.bootstrap_servers;
    options_ = options;
    topics_ = topics;
    char session[32] = {0};
    size_t session_size = sizeof session;
    if (rd_kafka_conf_get(conf.get(), "session.timeout.ms", session, &session_size) ==
        RD_KAFKA_CONF_OK) {
      session_timeout_ms_ = std::atoi(session);
    }
    if (auto s = MakeHandle(RD_KAFKA_CONSUMER, std::move(conf), &rk_); !s.ok()) return s;

    PartitionListPtr subscription(
        rd_kafka_topic_partition_list_new(static_cast<int>(topics.size())));
    for (const auto& topic : topics) {
      rd_kafka_topic_partition_list_add(subscription.get(), topic.c_str(), RD_KAFKA_PARTITION_UA);
    }
    if (auto err = rd_kafka_subscribe(rk_.get(), subscription.get()); err) {
      return Status::Error("KafkaSource: subscribing group '" + options.group_id +
                           "': " + rd_kafka_err2str(err));
    }
    return Status::Ok();
  }

  Status Poll(int max_messages, int timeout_ms, std::vector<Message>* out) override {
    if (closed_) return Status::Error("KafkaSource::Poll after Close");
    if (auto s = StartError(); !s.ok()) return s;
    rd_kafka_poll(rk_.get(), 0);  // the error callback (main queue)
    const size_t before = out->size();
    auto status = PollMessages(max_messages, timeout_ms, out);
    if (out->size() > before) {
      MarkReachable();
      connect_failed_ = false;
      HeardFromCluster();
    } else if ((!reachable_ || doubt_since_.has_value()) &&
               Clock::now() - last_probe_ >= std::chrono::seconds(1)) {
      // No broker-up event exists: ask for metadata, which only a broker
      // answers (short wait; nothing to read meanwhile anyway).
      last_probe_ = Clock::now();
      const rd_kafka_metadata_t* metadata = nullptr;
      if (rd_kafka_metadata(rk_.get(), 0, nullptr, &metadata, 500) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        rd_kafka_metadata_destroy(metadata);
        MarkReachable();
        HeardFromCluster();
      }
    }
    if (rejoin_) {
      // Fetched by a member that may no longer own them: read again by
      // whichever instance the new assignment gives them to.
      out->resize(before);
      if (auto s = Rejoin(); !s.ok()) return s;
    }
    return status;
  }

  ClusterHealth Health() override {
    ClusterHealth health;
    health.reachable = reachable_;
    if (!reachable_) {
      health.error = last_error_;
      health.unreachable_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - unreachable_since_)
              .count();
    }
    health.partitions_lost = partitions_lost_;
    if (connect_failed_) {
      health.connect_failed_ms =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - connect_failed_at_)
              .count();
    }
    return health;
  }

  Status PollMessages(int max_messages, int timeout_ms, std::vector<Message>* out) {
    int wait_ms = timeout_ms;
    for (int taken = 0; taken < max_messages;) {
      rd_kafka_message_t* raw = rd_kafka_consumer_poll(rk_.get(), wait_ms);
      if (raw == nullptr) break;
      wait_ms = 0;  // only the first message is waited for
      std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> msg(
          raw, &rd_kafka_message_destroy);
      // An assignment inside this poll found a position not in the log.
      if (auto s = StartError(); !s.ok()) return s;
      const std::string topic = msg->rkt != nullptr ? rd_kafka_topic_name(msg->rkt) : "";
      if (msg->err) {
        if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) continue;
        std::string where =
            topic.empty() ? std::string("consumer") : PartitionName(topic, msg->partition);
        std::string text = rd_kafka_message_errstr(msg.get());
        if (msg->err == RD_KAFKA_RESP_ERR__FATAL) {
          char fatal[512];
          rd_kafka_fatal_error(rk_.get(), fatal, sizeof(fatal));
          text = fatal;
        }
        if (IsFatalConsumerError(msg->err)) {
          return Status::Error("Kafka consumer fatal error on " + where + ": " + text);
        }
        if (msg->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET && !topic.empty()) {
          return OutOfLogError({topic, msg->partition}, msg->offset, text);
        }
        if (++transient_errors_ <= 20 || transient_errors_ % 1000 == 0) {
          Log(LogLevel::kWarn, "Kafka consumer error (not fatal)",
              {{"where", where}, {"count", transient_errors_}, {"error", text}});
        }
        continue;
      }
      if (auto s = CheckUnchecked({topic, msg->partition}, msg->offset); !s.ok()) return s;
      Message& m = out->emplace_back();
      m.topic = topic;
      m.partition = msg->partition;
      m.offset = msg->offset;
      if (msg->key != nullptr) m.key.assign(static_cast<const char*>(msg->key), msg->key_len);
      if (msg->payload != nullptr) {
        m.value.assign(static_cast<const char*>(msg->payload), msg->len);
      }
      m.timestamp_ms = rd_kafka_message_timestamp(msg.get(), nullptr);
      rd_kafka_headers_t* record_headers = nullptr;
      if (rd_kafka_message_headers(msg.get(), &record_headers) == RD_KAFKA_RESP_ERR_NO_ERROR) {
        const char* name = nullptr;
        const void* header_value = nullptr;
        size_t size = 0;
        for (size_t i = 0; rd_kafka_header_get_all(record_headers, i, &name, &header_value,
                                                   &size) == RD_KAFKA_RESP_ERR_NO_ERROR;
             ++i) {
          m.headers.emplace_back(name,
                                 header_value != nullptr
                                     ? std::string(static_cast<const char*>(header_value), size)
                                     : std::string());
        }
      }
      next_offset_[{m.topic, m.partition}] = m.offset + 1;
      ++taken;
    }
    return Status::Ok();
  }

  std::vector<TopicPartition> Assignment() override {
    rd_kafka_topic_partition_list_t* raw = nullptr;
    if (closed_ || rd_kafka_assignment(rk_.get(), &raw) != RD_KAFKA_RESP_ERR_NO_ERROR) return {};
    PartitionListPtr list(raw);
    return ToVector(list.get());
  }

  std::map<TopicPartition, int64_t> Lag() override {
    std::map<TopicPartition, int64_t> lag;
    for (const auto& tp : Assignment()) {
      int64_t low = -1;
      int64_t high = -1;
      if (rd_kafka_get_watermark_offsets(rk_.get(), tp.topic.c_str(), tp.partition, &low, &high) !=
              RD_KAFKA_RESP_ERR_NO_ERROR ||
          high < 0 || low < 0) {
        // Nothing fetched yet: ask the partition leader.
        if (rd_kafka_query_watermark_offsets(rk_.get(), tp.topic.c_str(), tp.partition, &low, &high,
                                             5000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
          continue;
        }
      }
      int64_t next = low;
      if (auto it = next_offset_.find(tp); it != next_offset_.end() && it->second >= 0) {
        next = std::max(it->second, low);
      }
      lag[tp] = std::max<int64_t>(0, high - next);
    }
    return lag;
  }

  std::map<TopicPartition, int64_t> GroupCommitted() const override { return group_committed_; }

  Status CommitAsync(const std::map<TopicPartition, int64_t>& next_offsets) override {
    if (closed_ || next_offsets.empty()) return Status::Ok();
    PartitionListPtr list(rd_kafka_topic_partition_list_new(static_cast<int>(next_offsets.size())));
    for (const auto& [tp, offset] : next_offsets) {
      rd_kafka_topic_partition_list_add(list.get(), tp.topic.c_str(), tp.partition)->offset =
          offset;
    }
    if (auto err = rd_kafka_commit(rk_.get(), list.get(), /*async=*/1); err) {
      return Status::Error(std::string("KafkaSource::CommitAsync: ") + rd_kafka_err2str(err));
    }
    return Status::Ok();
  }

  Status Close() override {
    if (closed_) return Status::Ok();
    closed_ = true;
    // Runs the rebalance callback (revoke) on this thread, then leaves.
    rd_kafka_resp_err_t err = rd_kafka_consumer_close(rk_.get());
    rk_.reset();
    if (err) return Status::Error(std::string("KafkaSource::Close: ") + rd_kafka_err2str(err));
    return Status::Ok();
  }

  Status CloseWithin(int timeout_ms) override {
    if (closed_) return Status::Ok();
    if (timeout_ms < 0) return Close();
    closed_ = true;
    return CloseHandle(timeout_ms);
  }

 private:
  using Clock = std::chrono::steady_clock;

  // Closes rk_ (leaves the group, the revocation served here) within
  // timeout_ms, else destroys it without leaving; rk_ is null after.
  Status CloseHandle(int timeout_ms) {
    const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
    // The close runs in librdkafka's threads; its revocation is served here
    // from `queue` until it is done or time is up.
    QueuePtr queue(rd_kafka_queue_new(rk_.get()));
    std::string error;
    if (rd_kafka_error_t* failed = rd_kafka_consumer_close_queue(rk_.get(), queue.get())) {
      error = rd_kafka_error_string(failed);
      rd_kafka_error_destroy(failed);
    }
    while (error.empty() && !rd_kafka_consumer_closed(rk_.get())) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) break;
      // Served as events (a callback poll asserts on ops without one): the
      // revocation goes through the same handler as the rebalance callback.
      EventPtr event(
          rd_kafka_queue_poll(queue.get(), static_cast<int>(std::min<int64_t>(left, 100))));
      if (event != nullptr && rd_kafka_event_type(event.get()) == RD_KAFKA_EVENT_REBALANCE) {
        OnRebalance(rk_.get(), rd_kafka_event_error(event.get()),
                    rd_kafka_event_topic_partition_list(event.get()));
      }
    }
    const bool left_group = error.empty() && rd_kafka_consumer_closed(rk_.get()) != 0;
    queue.reset();  // before the handle
    if (left_group) {
      rk_.reset();
      return Status::Ok();
    }
    rd_kafka_destroy_flags(rk_.release(), RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    if (!error.empty()) return Status::Error("KafkaSource::Close: " + error);
    return Status::Error("KafkaSource::Close: the consumer did not leave the group within " +
                         std::to_string(timeout_ms) + " ms (cluster at " + bootstrap_ +
                         (reachable_ ? "" : " unreachable") +
                         "); its partitions move after the group's session timeout");
  }

  // The cluster was unreachable longer than the group session: the
  // coordinator may have given our partitions to another instance, which
  // restores them from the changelog, while librdkafka has not told us yet
  // (it learns it at its next heartbeat, seconds later, and fetches on
  // meanwhile). Their uncommitted work is dropped at once (on_lost), and a
  // new consumer joins the group, so that whatever we own next is assigned
  // (and restored) afresh.
  Status Rejoin() {
    rejoin_ = false;
    const std::vector<TopicPartition> assignment = Assignment();
    Log(LogLevel::kWarn,
        "Kafka cluster was unreachable longer than the group session: the partitions may be "
        "another instance's now; dropping their uncommitted work and joining the group again",
        {{"bootstrap", bootstrap_},
         {"unreachable_seconds", last_outage_seconds_},
         {"session_timeout_ms", session_timeout_ms_},
         {"partitions", assignment.size()}});
    if (!assignment.empty()) {
      partitions_lost_ = static_cast<int>(assignment.size());
      if (callbacks_.on_lost) callbacks_.on_lost(assignment);
    }
    // The old member's revocation was just handled: the close only unassigns.
    rejoining_ = true;
    (void)CloseHandle(std::min(session_timeout_ms_, 10000));
    rejoining_ = false;
    next_offset_.clear();
    unchecked_.clear();
    group_committed_.clear();
    if (auto s = Init(options_, topics_); !s.ok()) {
      return Status::Error("KafkaSource: joining the group again after the outage: " + s.message);
    }
    return Status::Ok();
  }

  static void OffsetCommitThunk(rd_kafka_t*, rd_kafka_resp_err_t,
                                rd_kafka_topic_partition_list_t* offsets, void* opaque) {
    auto* self = static_cast<KafkaSourceImpl*>(opaque);
    if (offsets == nullptr) return;
    for (int i = 0; i < offsets->cnt; ++i) {
      const auto& p = offsets->elems[i];
      if (p.err != RD_KAFKA_RESP_ERR_NO_ERROR || p.offset < 0) continue;
      self->group_committed_[TopicPartition{p.topic, p.partition}] = p.offset;
    }
  }

  static void ErrorThunk(rd_kafka_t*, int err, const char* reason, void* opaque) {
    static_cast<KafkaSourceImpl*>(opaque)->OnError(static_cast<rd_kafka_resp_err_t>(err),
                                                   reason != nullptr ? reason : "");
  }

  void OnError(rd_kafka_resp_err_t err, const std::string& reason) {
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT || err == RD_KAFKA_RESP_ERR__RESOLVE ||
        err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) {
      // "all brokers down" repeats the count only; keep the connection error.
      if (err != RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN || last_error_.empty()) last_error_ = reason;
    }
    const bool connect_failed =
        err == RD_KAFKA_RESP_ERR__TRANSPORT && reason.find("Connect to ") != std::string::npos;
    if ((connect_failed || err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN) && !doubt_since_) {
      doubt_since_ = Clock::now();
    }
    if (connect_failed) {
      connect_failed_ = true;
      connect_failed_at_ = Clock::now();
    }
    if (err == RD_KAFKA_RESP_ERR__ALL_BROKERS_DOWN && reachable_) {
      reachable_ = false;
      unreachable_since_ = Clock::now();
      last_probe_ = Clock::now();
      Log(LogLevel::kWarn, "Kafka cluster unreachable: all brokers are down (retrying)",
          {{"bootstrap", bootstrap_}, {"error", last_error_}});
      return;
    }
    if (err == RD_KAFKA_RESP_ERR__FATAL) return;  // reaches Poll() as a consumer error
    if (++transient_errors_ <= 20 || transient_errors_ % 1000 == 0) {
      Log(LogLevel::kWarn, "Kafka consumer error (not fatal)",
          {{"where", "client"}, {"count", transient_errors_}, {"error", reason}});
    }
  }

  void MarkReachable() {
    if (reachable_) return;
    reachable_ = true;
    Log(LogLevel::kInfo, "Kafka cluster reachable again",
        {{"bootstrap", bootstrap_},
         {"unreachable_seconds",
          std::chrono::duration<double>(Clock::now() - unreachable_since_).count()}});
    last_error_.clear();
  }

  // The cluster answered (a message, a metadata reply) after connections
  // failed: longer than the session timeout, and without a rebalance since
  // (which would have settled what we own), the session may have expired
  // (SessionInDoubt).
  void HeardFromCluster() {
    if (!doubt_since_) return;
    last_outage_seconds_ = std::chrono::duration<double>(Clock::now() - *doubt_since_).count();
    doubt_since_.reset();
    // With a callback for lost partitions only (the caller can drop work).
    if (callbacks_.on_lost && last_outage_seconds_ * 1000 > session_timeout_ms_) rejoin_ = true;
  }

  bool SessionInDoubt() const override {
    if (rejoin_) return true;
    if (!doubt_since_) return false;
    return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - *doubt_since_)
               .count() > session_timeout_ms_ / 2;
  }

  static void RebalanceThunk(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                             rd_kafka_topic_partition_list_t* partitions, void* opaque) {
    static_cast<KafkaSourceImpl*>(opaque)->OnRebalance(rk, err, partitions);
  }

  void OnRebalance(rd_kafka_t* rk, rd_kafka_resp_err_t err,
                   rd_kafka_topic_partition_list_t* partitions) {
    const bool cooperative = std::string_view(rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE";
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
      for (int i = 0; i < partitions->cnt; ++i) {
        auto& elem = partitions->elems[i];
        const TopicPartition tp{elem.topic, elem.partition};
        std::optional<int64_t> start;
        if (callbacks_.start_offset) start = callbacks_.start_offset(tp);
        if (start.has_value() && *start < 0) start.reset();
        elem.offset = start.has_value() ? *start : RD_KAFKA_OFFSET_BEGINNING;
        CheckStart(rk, tp, start, &elem.offset);
        next_offset_[tp] = elem.offset;
      }
      if (cooperative) {
        if (rd_kafka_error_t* error = rd_kafka_incremental_assign(rk, partitions)) {
          Log(LogLevel::kWarn, "Kafka incremental assign failed",
              {{"error", rd_kafka_error_string(error)}});
          rd_kafka_error_destroy(error);
        }
      } else if (auto e = rd_kafka_assign(rk, partitions); e) {
        Log(LogLevel::kWarn, "Kafka assign failed", {{"error", rd_kafka_err2str(e)}});
      }
      partitions_lost_ = 0;
      // The group answered: what we own now is settled.
      doubt_since_.reset();
      rejoin_ = false;
      if (callbacks_.on_assigned) callbacks_.on_assigned(ToVector(partitions));
      return;
    }
    if (err != RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
      Log(LogLevel::kWarn, "Kafka rebalance error", {{"error", rd_kafka_err2str(err)}});
    }
    // Revoke (or lost, or error): the owner commits before we let go.
    const auto revoked = ToVector(partitions);
    const bool lost = rd_kafka_assignment_lost(rk) != 0;
    if (lost) {
      if (!revoked.empty()) {
        partitions_lost_ = static_cast<int>(revoked.size());
        Log(LogLevel::kWarn, "Kafka partitions lost (the group session expired)",
            {{"partitions", revoked.size()}, {"bootstrap", bootstrap_}});
      }
      // librdkafka drops the assignment and joins again by itself.
      doubt_since_.reset();
      rejoin_ = false;
    }
    // Rejoin(): the owner dropped them already; only unassign.
    if (!revoked.empty() && !rejoining_) {
      if (lost && callbacks_.on_lost) {
        callbacks_.on_lost(revoked);
      } else if (callbacks_.on_revoked) {
        callbacks_.on_revoked(revoked);
      }
    }
    for (const auto& tp : revoked) {
      next_offset_.erase(tp);
      unchecked_.erase(tp);
    }
    if (cooperative) {
      if (rd_kafka_error_t* error = rd_kafka_incremental_unassign(rk, partitions)) {
        Log(LogLevel::kWarn, "Kafka incremental unassign failed",
            {{"error", rd_kafka_error_string(error)}});
        rd_kafka_error_destroy(error);
      }
    } else {
      (void)rd_kafka_assign(rk, nullptr);
    }
  }

  // Checks the start position of a newly assigned partition against its
  // log (SourceCallbacks::start_offset): moves *offset as reset_offsets says,
  // or keeps an error for the next Poll().
  void CheckStart(rd_kafka_t* rk, const TopicPartition& tp, std::optional<int64_t> stored,
                  int64_t* offset) {
    int64_t low = -1;
    int64_t high = -1;
    const int64_t expected = stored.value_or(0);
    auto err = QueryWatermarks(rk, tp.topic, tp.partition, &low, &high, kWatermarkTimeoutMs);
    if (err || low < 0 || high < 0) {
      // Checked on the first message instead (and a stored offset out of
      // range still fails the fetch: auto.offset.reset=error).
      unchecked_[tp] = expected;
      Log(LogLevel::kWarn, "start position not checked against the log yet",
          {{"partition", PartitionName(tp.topic, tp.partition)}, {"error", rd_kafka_err2str(err)}});
      return;
    }
    const bool embedded = IsEmbeddedCluster(rk);
    std::string problem = StartProblem(tp, expected, stored.has_value(), low, high, embedded);
    if (problem.empty()) return;
    if (callbacks_.reset_offsets == OffsetReset::kNone) {
      start_errors_.push_back(std::move(problem));
      return;
    }
    OffsetResetEvent event;
    event.partition = tp;
    event.stored_offset = stored;
    event.log_start = low;
    event.log_end = high;
    event.new_offset = callbacks_.reset_offsets == OffsetReset::kEarliest ? low : high;
    event.cause = std::move(problem);
    if (callbacks_.on_offset_reset) {
      if (auto s = callbacks_.on_offset_reset(event); !s.ok()) {
        start_errors_.push_back(PartitionName(tp.topic, tp.partition) +
                                ": resetting the offset: " + s.message);
        return;
      }
    }
    *offset = event.new_offset;
  }

  Status StartError() const {
    if (start_errors_.empty()) return Status::Ok();
    std::string text = start_errors_.front();
    if (start_errors_.size() > 1) {
      text += " (and " + std::to_string(start_errors_.size() - 1) + " more partition(s))";
    }
    return Status::Error("Kafka consumer: " + text + kResetHint);
  }

  // The first message of a partition whose start could not be checked at
  // assignment: a jump past the expected offset is a gap only when the log
  // now starts after it (control records and compaction also skip offsets).
  Status CheckUnchecked(const TopicPartition& tp, int64_t offset) {
    if (unchecked_.empty()) return Status::Ok();
    auto it = unchecked_.find(tp);
    if (it == unchecked_.end()) return Status::Ok();
    const int64_t expected = it->second;
    unchecked_.erase(it);
    if (offset <= expected) return Status::Ok();
    int64_t low = -1;
    int64_t high = -1;
    if (rd_kafka_query_watermark_offsets(rk_.get(), tp.topic.c_str(), tp.partition, &low, &high,
                                         kWatermarkTimeoutMs) != RD_KAFKA_RESP_ERR_NO_ERROR ||
        low <= expected) {
      return Status::Ok();
    }
    return Status::Error(
        "Kafka consumer: " +
        StartProblem(tp, expected, expected > 0, low, high, IsEmbeddedCluster(rk_.get())) +
        kResetHint);
  }

  // A position that left the log while the partition was read
  // (auto.offset.reset=error reported it).
  Status OutOfLogError(const TopicPartition& tp, int64_t offset, const std::string& text) {
    int64_t low = -1;
    int64_t high = -1;
    std::string message = "Kafka consumer: " + PartitionName(tp.topic, tp.partition) +
                          ": the position " + std::to_string(offset) + " is not in the log";
    if (rd_kafka_query_watermark_offsets(rk_.get(), tp.topic.c_str(), tp.partition, &low, &high,
                                         kWatermarkTimeoutMs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
      message += " (log start " + std::to_string(low) + ", log end " + std::to_string(high) + ")";
      if (offset >= 0 && offset < low) {
        message += ": offsets " + std::to_string(offset) + ".." + std::to_string(low - 1) +
                   " are gone (" + DeletionCause(IsEmbeddedCluster(rk_.get())) + ")";
      } else if (offset > high) {
        message += ": the topic was recreated (or the broker lost data) while it was read";
      }
    }
    message += " [" + text + "]. Nothing after the last commit is counted; a restart stops at the";
    message += " same place until it is started with --reset-offsets earliest|latest";
    return Status::Error(message);
  }

  SourceCallbacks callbacks_;
  HandlePtr rk_;
  bool closed_ = false;
  std::vector<std::string> start_errors_;  // positions not in the log (CheckStart)
  // Partitions whose start could not be checked at assignment: expected offset.
  std::map<TopicPartition, int64_t> unchecked_;
  int64_t transient_errors_ = 0;
  std::string bootstrap_;
  // Cluster reachability (polling thread only; see ClusterHealth).
  bool reachable_ = true;
  Clock::time_point unreachable_since_{};
  Clock::time_point last_probe_{};
  // A connection attempt failed since the last message (Health().connect_failed_ms).
  bool connect_failed_ = false;
  Clock::time_point connect_failed_at_{};
  std::string last_error_;
  int partitions_lost_ = 0;
  // Rejoin() after an outage longer than the group session.
  ClientOptions options_;
  std::vector<std::string> topics_;
  int session_timeout_ms_ = 45000;
  double last_outage_seconds_ = 0;
  // Since the first failed connection with nothing heard from the cluster
  // since (SessionInDoubt).
  std::optional<Clock::time_point> doubt_since_;
  bool rejoin_ = false;
  bool rejoining_ = false;
  std::map<TopicPartition, int64_t> next_offset_;  // next offset to be returned by Poll
  // Offsets the group holds, as the broker acknowledged our commits.
  std::map<TopicPartition, int64_t> group_committed_;
};

// ---------------------------------------------------------------- sink

class KafkaSinkImpl final : public KafkaSink {
 public:
  KafkaSinkImpl() = default;
  ~KafkaSinkImpl() override {
    if (rk_ != nullptr) rd_kafka_flush(rk_.get(), abandoned_ ? 100 : 10000);
  }
  KafkaSinkImpl(const KafkaSinkImpl&) = delete;
  KafkaSinkImpl& operator=(const KafkaSinkImpl&) = delete;

  Status Init(const ClientOptions& options) {
    ConfPtr conf;
    if (auto s = MakeConf(options, kProducerDefaults, &conf); !s.ok()) return s;
    rd_kafka_conf_set_opaque(conf.get(), this);
    rd_kafka_conf_set_dr_msg_cb(conf.get(), &KafkaSinkImpl::DeliveryThunk);
    return MakeHandle(RD_KAFKA_PRODUCER, std::move(conf), &rk_);
  }

  Status Send(std::string_view topic, std::string_view key, std::string_view value,
              int32_t partition) override {
    return Produce(topic, key, value, partition, nullptr);
  }

  Status SendWithHeaders(std::string_view topic, std::string_view key, std::string_view value,
                         const std::vector<std::pair<std::string, std::string>>& headers) override {
    return Produce(topic, key, value, -1, &headers);
  }

  Status Produce(std::string_view topic, std::string_view key, std::string_view value,
                 int32_t partition,
                 const std::vector<std::pair<std::string, std::string>>* headers) {
    const std::string topic_name(topic);
    const uint64_t group = group_;
    {
      std::lock_guard lock(mu_);
      ++outstanding_[group];
    }
    for (;;) {
      // Ownership of the header list passes to librdkafka on success only.
      rd_kafka_headers_t* record_headers = nullptr;
      if (headers != nullptr) {
        record_headers = rd_kafka_headers_new(headers->size());
        for (const auto& [name, header_value] : *headers) {
          rd_kafka_header_add(record_headers, name.data(), static_cast<ssize_t>(name.size()),
                              header_value.data(), static_cast<ssize_t>(header_value.size()));
        }
      }
      rd_kafka_resp_err_t err = rd_kafka_producev(
          rk_.get(), RD_KAFKA_V_TOPIC(topic_name.c_str()),
          RD_KAFKA_V_PARTITION(partition >= 0 ? partition : RD_KAFKA_PARTITION_UA),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
          RD_KAFKA_V_KEY(key.empty() ? nullptr : const_cast<char*>(key.data()), key.size()),
          RD_KAFKA_V_VALUE(const_cast<char*>(value.data()), value.size()),
          RD_KAFKA_V_HEADERS(record_headers),
          // The opaque carries the group number, not a pointer.
          // NOLINTNEXTLINE(performance-no-int-to-ptr)
          RD_KAFKA_V_OPAQUE(reinterpret_cast<void*>(static_cast<uintptr_t>(group))),
          RD_KAFKA_V_END);
      if (err != RD_KAFKA_RESP_ERR_NO_ERROR && record_headers != nullptr) {
        rd_kafka_headers_destroy(record_headers);
      }
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) break;
      if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        std::lock_guard lock(mu_);
        Settle(group);  // never queued: nothing to wait for
      }
      if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        rd_kafka_poll(rk_.get(), 50);  // serve delivery reports, frees queue space
        continue;
      }
      if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char fatal[512];
        rd_kafka_fatal_error(rk_.get(), fatal, sizeof(fatal));
        return Status::Error("KafkaSink: producer fatal error sending to topic '" + topic_name +
                             "': " + fatal);
      }
      return Status::Error("KafkaSink: sending " + std::to_string(value.size()) +
                           " bytes to topic '" + topic_name + "': " + rd_kafka_err2str(err));
    }
    if ((sends_.fetch_add(1, std::memory_order_relaxed) & 63) == 0) rd_kafka_poll(rk_.get(), 0);
    return Status::Ok();
  }

  Status Flush(int timeout_ms) override {
    rd_kafka_resp_err_t err = rd_kafka_flush(rk_.get(), timeout_ms);
    std::lock_guard lock(mu_);
    Status result = Status::Ok();
    if (failures_ > 0) {
      result = Status::Error(
          "KafkaSink: " + std::to_string(failures_) +
          " message(s) failed delivery since the last Flush; first: " + first_failure_);
    } else if (err == RD_KAFKA_RESP_ERR__TIMED_OUT) {
      result = Status::Error("KafkaSink::Flush: " + std::to_string(rd_kafka_outq_len(rk_.get())) +
                             " message(s) not acknowledged within " + std::to_string(timeout_ms) +
                             " ms");
    }
    failures_ = 0;
    first_failure_.clear();
    return result;
  }

  Status Prepare(const std::vector<std::string>& topics, int timeout_ms) override {
    for (const auto& topic : topics) {
      std::unique_ptr<rd_kafka_topic_t, void (*)(rd_kafka_topic_t*)> rkt(
          rd_kafka_topic_new(rk_.get(), topic.c_str(), nullptr), &rd_kafka_topic_destroy);
      const rd_kafka_metadata_t* metadata = nullptr;
      if (auto err = rd_kafka_metadata(rk_.get(), 0, rkt.get(), &metadata, timeout_ms); err) {
        return Status::Error("KafkaSink: metadata of topic '" + topic +
                             "': " + rd_kafka_err2str(err));
      }
      rd_kafka_metadata_destroy(metadata);
    }
    return Status::Ok();
  }

  uint64_t Mark() override { return group_++; }

  Status WaitAcked(uint64_t mark, int timeout_ms, bool* done, int64_t* acked_ms) override {
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + std::chrono::milliseconds(std::max(0, timeout_ms));
    *done = false;
    for (;;) {
      rd_kafka_poll(rk_.get(), 0);  // serves delivery reports on this thread
      {
        std::lock_guard lock(mu_);
        if (failures_ > 0) {
          Status error = Status::Error("KafkaSink: " + std::to_string(failures_) +
                                       " message(s) failed delivery; first: " + first_failure_);
          failures_ = 0;
          first_failure_.clear();
          return error;
        }
        if (outstanding_.empty() || outstanding_.begin()->first > mark) {
          *done = true;
          int64_t last = 0;
          while (!settled_ms_.empty() && settled_ms_.begin()->first <= mark) {
            last = std::max(last, settled_ms_.begin()->second);
            settled_ms_.erase(settled_ms_.begin());
          }
          if (acked_ms != nullptr) *acked_ms = last > 0 ? last : WallClockMs();
          return Status::Ok();
        }
      }
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
      if (left <= 0) return Status::Ok();
      rd_kafka_poll(rk_.get(), static_cast<int>(std::min<int64_t>(left, 5)));
    }
  }

  uint64_t delivered() const override { return delivered_.load(std::memory_order_relaxed); }

  void Abandon() override {
    abandoned_ = true;
    rd_kafka_purge(rk_.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(rk_.get(), 0);  // their (failed) delivery reports
  }

  uint64_t Purge() override {
    uint64_t dropped = 0;
    {
      std::lock_guard lock(mu_);
      for (const auto& [group, count] : outstanding_) dropped += count;
    }
    rd_kafka_purge(rk_.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(rk_.get(), 0);  // their delivery reports (ERR__PURGE_*: no failure)
    // Reports still to come settle nothing more.
    std::lock_guard lock(mu_);
    for (const auto& [group, count] : outstanding_) settled_ms_[group] = WallClockMs();
    outstanding_.clear();
    return dropped;
  }

 private:
  // One message of `group` is done (acknowledged, failed or never queued).
  // Caller holds mu_.
  void Settle(uint64_t group) {
    auto it = outstanding_.find(group);
    if (it == outstanding_.end()) return;
    if (--it->second == 0) {
      outstanding_.erase(it);
      settled_ms_[group] = WallClockMs();
    }
  }

  static void DeliveryThunk(rd_kafka_t*, const rd_kafka_message_t* msg, void* opaque) {
    static_cast<KafkaSinkImpl*>(opaque)->OnDelivery(msg);
  }

  void OnDelivery(const rd_kafka_message_t* msg) {
    std::lock_guard lock(mu_);
    Settle(static_cast<uint64_t>(reinterpret_cast<uintptr_t>(msg->_private)));
    if (!msg->err) {
      delivered_.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    // Dropped on purpose (Purge, Abandon).
    if (msg->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
        msg->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
      return;
    }
    if (failures_++ == 0) {
      first_failure_ = PartitionName(rd_kafka_topic_name(msg->rkt), msg->partition) + ": " +
                       rd_kafka_err2str(msg->err);
    }
  }

  HandlePtr rk_;
  std::atomic<bool> abandoned_ = false;
  std::atomic<uint64_t> delivered_ = 0;
  std::atomic<uint64_t> sends_ = 0;
  std::mutex mu_;
  uint64_t failures_ = 0;      // guarded by mu_
  std::string first_failure_;  // guarded by mu_
  // Messages sent from now on belong to this group (Mark() closes it).
  uint64_t group_ = 1;
  // Messages not yet acknowledged, per group; when each group settled.
  std::map<uint64_t, uint64_t> outstanding_;  // guarded by mu_
  std::map<uint64_t, int64_t> settled_ms_;    // guarded by mu_
};

// ---------------------------------------------------------------- broker

// Listener ports for the mock brokers being created on this thread (see
// bind() below): the next port to hand out, how many are left, and the
// errno of a failed bind.
thread_local int t_mock_port = 0;
thread_local int t_mock_ports_left = 0;
thread_local int t_mock_bind_errno = 0;

// Embedded brokers of this process by bootstrap string. librdkafka 2.0.2's
// mock cluster reports no controller, so the Admin API cannot create topics
// on it; EnsureTopics creates them through the mock API instead.
std::mutex& RegistryMutex() {
  static std::mutex mu;
  return mu;
}
std::map<std::string, rd_kafka_mock_cluster_t*>& Registry() {
  static std::map<std::string, rd_kafka_mock_cluster_t*> registry;
  return registry;
}
rd_kafka_mock_cluster_t* FindEmbedded(const std::string& bootstrap) {
  std::lock_guard lock(RegistryMutex());
  auto it = Registry().find(bootstrap);
  return it == Registry().end() ? nullptr : it->second;
}

// Whether 127.0.0.1:port can be listened on (as the mock does: SO_REUSEADDR).
Status CheckListenPort(int port) {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return Status::Error(std::string("EmbeddedBroker: socket: ") + std::strerror(errno));
  const int on = 1;
  (void)::setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast)
  int result = ::bind(fd, reinterpret_cast<const sockaddr*>(&address), sizeof address);
  if (result == 0) result = ::listen(fd, 1);
  const int error = errno;
  ::close(fd);
  if (result != 0) {
    return Status::Error("EmbeddedBroker: listening on 127.0.0.1:" + std::to_string(port) + ": " +
                         std::strerror(error));
  }
  return Status::Ok();
}

class EmbeddedBrokerImpl final : public EmbeddedBroker {
 public:
  ~EmbeddedBrokerImpl() override {
    if (cluster_ == nullptr) return;
    {
      std::lock_guard lock(RegistryMutex());
      Registry().erase(bootstrap_);
    }
    rd_kafka_mock_cluster_destroy(cluster_);
  }

  Status Init(int brokers, int partitions, int port) {
    if (brokers < 1) return Status::Error("EmbeddedBroker: brokers must be >= 1");
    if (port < 0 || port + brokers - 1 > 65535) {
      return Status::Error("EmbeddedBroker: port " + std::to_string(port) + " with " +
                           std::to_string(brokers) + " broker(s) is outside 1..65535");
    }
    default_partitions_ = partitions > 0 ? partitions : 1;
    brokers_ = brokers;
    ConfPtr conf(rd_kafka_conf_new());
    if (auto s = SetProperty(conf.get(), "log.connection.close", "false"); !s.ok()) return s;
    // This handle only hosts the cluster; hide its "no bootstrap.servers" notice.
    if (auto s = SetProperty(conf.get(), "log_level", "4"); !s.ok()) return s;
    if (auto s = MakeHandle(RD_KAFKA_PRODUCER, std::move(conf), &rk_); !s.ok()) return s;
    // The mock aborts when it cannot listen: check the ports first.
    for (int i = 0; port > 0 && i < brokers; ++i) {
      if (auto s = CheckListenPort(port + i); !s.ok()) return s;
    }
    // librdkafka 2.0.2's mock binds every broker to 127.0.0.1:0 (a free port)
    // and has no option for it; its brokers are created on this thread, so
    // bind() below gives them port, port+1, ... instead.
    t_mock_port = port;
    t_mock_ports_left = port > 0 ? brokers : 0;
    t_mock_bind_errno = 0;
    cluster_ = rd_kafka_mock_cluster_new(rk_.get(), brokers);
    const int bind_errno = t_mock_bind_errno;
    const int failed_port = t_mock_port;
    t_mock_port = 0;
    t_mock_ports_left = 0;
    if (cluster_ == nullptr) {
      if (bind_errno != 0) {
        return Status::Error("EmbeddedBroker: listening on 127.0.0.1:" +
                             std::to_string(failed_port) + ": " + std::strerror(bind_errno));
      }
      return Status::Error("EmbeddedBroker: could not start mock cluster");
    }
    bootstrap_ = rd_kafka_mock_cluster_bootstraps(cluster_);
    std::lock_guard lock(RegistryMutex());
    Registry()[bootstrap_] = cluster_;
    return Status::Ok();
  }

  std::string bootstrap_servers() const override { return bootstrap_; }

  Status CreateTopic(const std::string& topic, int partitions) override {
    const int count = partitions > 0 ? partitions : default_partitions_;
    auto err = rd_kafka_mock_topic_create(cluster_, topic.c_str(), count, std::min(brokers_, 3));
    if (err) {
      return Status::Error("EmbeddedBroker: creating topic '" + topic +
                           "': " + rd_kafka_err2str(err));
    }
    return Status::Ok();
  }

  Status FailNextProduceRequests(int count, int kafka_error_code) override {
    std::vector<rd_kafka_resp_err_t> errors(count,
                                            static_cast<rd_kafka_resp_err_t>(kafka_error_code));
    rd_kafka_mock_push_request_errors_array(cluster_, /*Produce*/ 0, errors.size(), errors.data());
    return Status::Ok();
  }

  Status SetAllBrokersDown(bool down) override {
    for (int32_t id = 1; id <= brokers_; ++id) {
      auto err = down ? rd_kafka_mock_broker_set_down(cluster_, id)
                      : rd_kafka_mock_broker_set_up(cluster_, id);
      if (err) {
        return Status::Error("EmbeddedBroker: setting broker " + std::to_string(id) +
                             (down ? " down: " : " up: ") + rd_kafka_err2str(err));
      }
    }
    return Status::Ok();
  }

 private:
  HandlePtr rk_;  // destroyed after the cluster (members destruct in reverse order)
  rd_kafka_mock_cluster_t* cluster_ = nullptr;  // owned; destroyed in the destructor
  std::string bootstrap_;
  int brokers_ = 1;
  int default_partitions_ = 1;
};

}  // namespace

}  // namespace clv::connectors

// The mock's listeners: while EmbeddedBrokerImpl::Init asks for a port, a
// bind of this thread to 127.0.0.1:0 (what librdkafka's mock broker does)
// gets the next asked-for port. Every other bind passes through unchanged.
// Defined here, in the executable, it takes precedence over libc's for
// librdkafka's shared library.
// NOLINTNEXTLINE(readability-inconsistent-declaration-parameter-name)
extern "C" int bind(int fd, const struct sockaddr* address, socklen_t length) noexcept {
  using BindFunction = int (*)(int, const struct sockaddr*, socklen_t);
  // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast)
  static const auto libc_bind = reinterpret_cast<BindFunction>(dlsym(RTLD_NEXT, "bind"));
  if (libc_bind == nullptr) {
    errno = ENOSYS;
    return -1;
  }
  using clv::connectors::t_mock_bind_errno;
  using clv::connectors::t_mock_port;
  using clv::connectors::t_mock_ports_left;
  if (t_mock_ports_left > 0 && address != nullptr && address->sa_family == AF_INET &&
      length >= static_cast<socklen_t>(sizeof(sockaddr_in))) {
    sockaddr_in wanted{};
    std::memcpy(&wanted, address, sizeof wanted);
    if (wanted.sin_port == 0 && wanted.sin_addr.s_addr == htonl(INADDR_LOOPBACK)) {
      wanted.sin_port = htons(static_cast<uint16_t>(t_mock_port));
      // NOLINTNEXTLINE(cppcoreguidelines-pro-type-reinterpret-cast)
      const int result = libc_bind(fd, reinterpret_cast<const sockaddr*>(&wanted), sizeof wanted);
      if (result != 0) {
        t_mock_bind_errno = errno;
        t_mock_ports_left = 0;
        return result;
      }
      ++t_mock_port;
      --t_mock_ports_left;
      return result;
    }
  }
  return libc_bind(fd, address, length);
}

namespace clv::connectors {

Status KafkaSource::Create(const ClientOptions& options, const std::vector<std::string>& topics,
                           SourceCallbacks callbacks, std::unique_ptr<KafkaSource>* source) {
  auto impl = std::make_unique<KafkaSourceImpl>(std::move(callbacks));
  ClientOptions effective = options;
  if (FindEmbedded(options.bootstrap_servers) != nullptr) {
    // This process's embedded broker: its fetch handling wants short waits
    // (the user's own properties still win).
    for (const auto& [key, value] : MockFriendlyConsumerProperties()) {
      effective.properties.try_emplace(key, value);
    }
  }
  if (auto s = impl->Init(effective, topics); !s.ok()) return s;
  *source = std::move(impl);
  return Status::Ok();
}

Status KafkaSink::Create(const ClientOptions& options, std::unique_ptr<KafkaSink>* sink) {
  auto impl = std::make_unique<KafkaSinkImpl>();
  if (auto s = impl->Init(options); !s.ok()) return s;
  *sink = std::move(impl);
  return Status::Ok();
}

Status EmbeddedBroker::Start(int brokers, int partitions, std::unique_ptr<EmbeddedBroker>* broker,
                             int port) {
  auto impl = std::make_unique<EmbeddedBrokerImpl>();
  if (auto s = impl->Init(brokers, partitions, port); !s.ok()) return s;
  *broker = std::move(impl);
  return Status::Ok();
}

Status EnsureTopics(const ClientOptions& options, const std::vector<std::string>& topics,
                    int partitions, int replication_factor,
                    const std::map<std::string, std::string>& configs) {
  if (topics.empty()) return Status::Ok();
  if (rd_kafka_mock_cluster_t* cluster = FindEmbedded(options.bootstrap_servers)) {
    for (const auto& topic : topics) {
      auto err = rd_kafka_mock_topic_create(cluster, topic.c_str(), partitions, replication_factor);
      if (err && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
        return Status::Error("EnsureTopics: embedded broker topic '" + topic +
                             "': " + rd_kafka_err2str(err));
      }
    }
    return Status::Ok();
  }
  static constexpr const char* kAdminDefaults[][2] = {{"log.connection.close", "false"}};
  ConfPtr conf;
  if (auto s = MakeConf(options, kAdminDefaults, &conf); !s.ok()) return s;
  HandlePtr rk;
  if (auto s = MakeHandle(RD_KAFKA_PRODUCER, std::move(conf), &rk); !s.ok()) return s;
  if (IsEmbeddedCluster(rk.get())) {
    // `clv broker` in another process: the mock has no controller (the Admin
    // API would time out), and auto-creates topics with 4 partitions.
    std::string names;
    std::string flags;
    for (const auto& topic : topics) {
      names += (names.empty() ? "'" : ", '") + topic + "'";
      flags += (flags.empty() ? "--topic " : " --topic ") + topic;
    }
    return Status::Error("EnsureTopics: creating " + names +
                         ": the embedded broker in another process (`clv broker`) cannot create "
                         "topics; start it with `" +
                         flags + "`");
  }

  char errstr[512];
  std::vector<rd_kafka_NewTopic_t*> new_topics;
  Status status = Status::Ok();
  for (const auto& topic : topics) {
    rd_kafka_NewTopic_t* nt = rd_kafka_NewTopic_new(topic.c_str(), partitions, replication_factor,
                                                    errstr, sizeof(errstr));
    if (nt == nullptr) {
      status = Status::Error("EnsureTopics: topic '" + topic + "': " + errstr);
      break;
    }
    new_topics.push_back(nt);
    for (const auto& [name, value] : configs) {
      if (rd_kafka_NewTopic_set_config(nt, name.c_str(), value.c_str()) != 0) {
        status = Status::Error("EnsureTopics: topic '" + topic + "': config " + name + "=" + value +
                               " refused");
      }
    }
    if (!status.ok()) break;
  }
  if (status.ok()) {
    QueuePtr queue(rd_kafka_queue_new(rk.get()));
    rd_kafka_AdminOptions_t* admin_options =
        rd_kafka_AdminOptions_new(rk.get(), RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_AdminOptions_set_operation_timeout(admin_options, 15000, errstr, sizeof(errstr));
    rd_kafka_AdminOptions_set_request_timeout(admin_options, 20000, errstr, sizeof(errstr));
    rd_kafka_CreateTopics(rk.get(), new_topics.data(), new_topics.size(), admin_options,
                          queue.get());
    rd_kafka_AdminOptions_destroy(admin_options);
    EventPtr event(rd_kafka_queue_poll(queue.get(), 30000));
    if (event == nullptr) {
      status = Status::Error("EnsureTopics: no CreateTopics answer from " +
                             options.bootstrap_servers + " within 30 s");
    } else if (rd_kafka_event_error(event.get())) {
      status =
          Status::Error("EnsureTopics: " + std::string(rd_kafka_event_error_string(event.get())));
    } else {
      const rd_kafka_CreateTopics_result_t* result =
          rd_kafka_event_CreateTopics_result(event.get());
      size_t count = 0;
      const rd_kafka_topic_result_t** results = rd_kafka_CreateTopics_result_topics(result, &count);
      for (size_t i = 0; i < count && status.ok(); ++i) {
        auto err = rd_kafka_topic_result_error(results[i]);
        if (err && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
          const char* text = rd_kafka_topic_result_error_string(results[i]);
          status = Status::Error("EnsureTopics: topic '" +
                                 std::string(rd_kafka_topic_result_name(results[i])) +
                                 "': " + (text != nullptr ? text : rd_kafka_err2str(err)));
        }
      }
    }
  }
  rd_kafka_NewTopic_destroy_array(new_topics.data(), new_topics.size());
  return status;
}

Status DeleteTopics(const ClientOptions& options, const std::vector<std::string>& topics) {
  if (topics.empty()) return Status::Ok();
  if (FindEmbedded(options.bootstrap_servers) != nullptr) {
    return Status::Error("DeleteTopics: the embedded broker cannot delete topics");
  }
  static constexpr const char* kAdminDefaults[][2] = {{"log.connection.close", "false"}};
  ConfPtr conf;
  if (auto s = MakeConf(options, kAdminDefaults, &conf); !s.ok()) return s;
  HandlePtr rk;
  if (auto s = MakeHandle(RD_KAFKA_PRODUCER, std::move(conf), &rk); !s.ok()) return s;
  std::vector<rd_kafka_DeleteTopic_t*> delete_topics;
  delete_topics.reserve(topics.size());
  for (const auto& topic : topics) delete_topics.push_back(rd_kafka_DeleteTopic_new(topic.c_str()));
  QueuePtr queue(rd_kafka_queue_new(rk.get()));
  rd_kafka_DeleteTopics(rk.get(), delete_topics.data(), delete_topics.size(), nullptr, queue.get());
  rd_kafka_DeleteTopic_destroy_array(delete_topics.data(), delete_topics.size());
  EventPtr event(rd_kafka_queue_poll(queue.get(), 30000));
  if (event == nullptr) {
    return Status::Error("DeleteTopics: no answer from " + options.bootstrap_servers +
                         " within 30 s");
  }
  if (rd_kafka_event_error(event.get())) {
    return Status::Error("DeleteTopics: " + std::string(rd_kafka_event_error_string(event.get())));
  }
  const rd_kafka_DeleteTopics_result_t* result = rd_kafka_event_DeleteTopics_result(event.get());
  size_t count = 0;
  const rd_kafka_topic_result_t** results = rd_kafka_DeleteTopics_result_topics(result, &count);
  for (size_t i = 0; i < count; ++i) {
    auto err = rd_kafka_topic_result_error(results[i]);
    if (err && err != RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) {
      const char* text = rd_kafka_topic_result_error_string(results[i]);
      return Status::Error("DeleteTopics: topic '" +
                           std::string(rd_kafka_topic_result_name(results[i])) +
                           "': " + (text != nullptr ? text : rd_kafka_err2str(err)));
    }
  }
  return Status::Ok();
}

namespace {

// An admin client on a real cluster (`what` names the caller in errors).
Status AdminHandle(const ClientOptions& options, const char* what, HandlePtr* rk) {
  if (FindEmbedded(options.bootstrap_servers) != nullptr) {
    return Status::Error(std::string(what) + ": not supported by the embedded broker");
  }
  static constexpr const char* kAdminDefaults[][2] = {{"log.connection.close", "false"}};
  ConfPtr conf;
  if (auto s = MakeConf(options, kAdminDefaults, &conf); !s.ok()) return s;
  return MakeHandle(RD_KAFKA_PRODUCER, std::move(conf), rk);
}

// The answer of an admin request on `queue`, or an error naming `what`.
Status AdminAnswer(const ClientOptions& options, const char* what, rd_kafka_queue_t* queue,
                   EventPtr* event) {
  event->reset(rd_kafka_queue_poll(queue, 30000));
  if (*event == nullptr) {
    return Status::Error(std::string(what) + ": no answer from " + options.bootstrap_servers +
                         " within 30 s");
  }
  if (rd_kafka_event_error(event->get())) {
    return Status::Error(std::string(what) + ": " + rd_kafka_event_error_string(event->get()));
  }
  return Status::Ok();
}

}  // namespace

Status DeleteRecordsBefore(const ClientOptions& options, const std::string& topic,
                           int32_t partition, int64_t before_offset) {
  HandlePtr rk;
  if (auto s = AdminHandle(options, "DeleteRecordsBefore", &rk); !s.ok()) return s;
  rd_kafka_topic_partition_list_t* offsets = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(offsets, topic.c_str(), partition)->offset = before_offset;
  rd_kafka_DeleteRecords_t* request = rd_kafka_DeleteRecords_new(offsets);
  rd_kafka_topic_partition_list_destroy(offsets);
  QueuePtr queue(rd_kafka_queue_new(rk.get()));
  rd_kafka_DeleteRecords(rk.get(), &request, 1, nullptr, queue.get());
  rd_kafka_DeleteRecords_destroy(request);
  EventPtr event(nullptr);
  if (auto s = AdminAnswer(options, "DeleteRecordsBefore", queue.get(), &event); !s.ok()) return s;
  const rd_kafka_topic_partition_list_t* result =
      rd_kafka_DeleteRecords_result_offsets(rd_kafka_event_DeleteRecords_result(event.get()));
  for (int i = 0; result != nullptr && i < result->cnt; ++i) {
    if (result->elems[i].err) {
      return Status::Error("DeleteRecordsBefore: " +
                           PartitionName(result->elems[i].topic, result->elems[i].partition) +
                           ": " + rd_kafka_err2str(result->elems[i].err));
    }
  }
  return Status::Ok();
}

Status DescribeGroup(const ClientOptions& options, const std::string& group_id,
                     GroupDescription* description) {
  HandlePtr rk;
  if (auto s = AdminHandle(options, "DescribeGroup", &rk); !s.ok()) return s;
  QueuePtr queue(rd_kafka_queue_new(rk.get()));
  const char* groups[] = {group_id.c_str()};
  rd_kafka_DescribeConsumerGroups(rk.get(), groups, 1, nullptr, queue.get());
  EventPtr event(nullptr);
  if (auto s = AdminAnswer(options, "DescribeGroup", queue.get(), &event); !s.ok()) return s;
  size_t count = 0;
  const rd_kafka_ConsumerGroupDescription_t** found = rd_kafka_DescribeConsumerGroups_result_groups(
      rd_kafka_event_DescribeConsumerGroups_result(event.get()), &count);
  if (count != 1) return Status::Error("DescribeGroup: no answer for group '" + group_id + "'");
  if (const rd_kafka_error_t* error = rd_kafka_ConsumerGroupDescription_error(found[0])) {
    return Status::Error("DescribeGroup: group '" + group_id +
                         "': " + rd_kafka_error_string(error));
  }
  description->state =
      rd_kafka_consumer_group_state_name(rd_kafka_ConsumerGroupDescription_state(found[0]));
  description->members = static_cast<int>(rd_kafka_ConsumerGroupDescription_member_count(found[0]));
  return Status::Ok();
}

Status PartitionCount(const ClientOptions& options, const std::string& topic, int* partitions) {
  static constexpr const char* kMetadataDefaults[][2] = {{"log.connection.close", "false"},
                                                         {"allow.auto.create.topics", "false"}};
  ConfPtr conf;
  if (auto s = MakeConf(options, kMetadataDefaults, &conf); !s.ok()) return s;
  HandlePtr rk;
  if (auto s = MakeHandle(RD_KAFKA_CONSUMER, std::move(conf), &rk); !s.ok()) return s;
  std::unique_ptr<rd_kafka_topic_t, void (*)(rd_kafka_topic_t*)> rkt(
      rd_kafka_topic_new(rk.get(), topic.c_str(), nullptr), &rd_kafka_topic_destroy);
  const rd_kafka_metadata_t* metadata = nullptr;
  auto err = rd_kafka_metadata(rk.get(), 0, rkt.get(), &metadata, 10000);
  if (err) {
    return Status::Error("PartitionCount: metadata of topic '" + topic + "' from " +
                         options.bootstrap_servers + ": " + rd_kafka_err2str(err));
  }
  std::unique_ptr<const rd_kafka_metadata_t, void (*)(const rd_kafka_metadata_t*)> md(
      metadata, &rd_kafka_metadata_destroy);
  if (md->topic_cnt != 1)
    return Status::Error("PartitionCount: no metadata for topic '" + topic + "'");
  if (md->topics[0].err) {
    return Status::Error("PartitionCount: topic '" + topic +
                         "': " + rd_kafka_err2str(md->topics[0].err));
  }
  *partitions = md->topics[0].partition_cnt;
  return Status::Ok();
}

Status ListTopics(const ClientOptions& options, std::map<std::string, int>* topics,
                  int timeout_ms) {
  static constexpr const char* kMetadataDefaults[][2] = {{"log.connection.close", "false"}};
  ConfPtr conf;
  if (auto s = MakeConf(options, kMetadataDefaults, &conf); !s.ok()) return s;
  HandlePtr rk;
  if (auto s = MakeHandle(RD_KAFKA_PRODUCER, std::move(conf), &rk); !s.ok()) return s;
  const rd_kafka_metadata_t* metadata = nullptr;
  if (auto err = rd_kafka_metadata(rk.get(), 1, nullptr, &metadata, timeout_ms); err) {
    return Status::Error("ListTopics: metadata from " + options.bootstrap_servers + ": " +
                         rd_kafka_err2str(err));
  }
  topics->clear();
  for (int i = 0; i < metadata->topic_cnt; ++i) {
    const auto& topic = metadata->topics[i];
    if (topic.err == RD_KAFKA_RESP_ERR_NO_ERROR) (*topics)[topic.topic] = topic.partition_cnt;
  }
  rd_kafka_metadata_destroy(metadata);
  return Status::Ok();
}

namespace {

// The last connection error of a probe handle (served on the probing thread).
struct ProbeErrors {
  std::mutex mu;
  std::string last;  // guarded by mu
};

void ProbeErrorThunk(rd_kafka_t*, int, const char* reason, void* opaque) {
  auto* errors = static_cast<ProbeErrors*>(opaque);
  std::lock_guard lock(errors->mu);
  errors->last = reason != nullptr ? reason : "";
}

}  // namespace

Status WaitForCluster(const ClientOptions& options, int timeout_ms, const std::atomic<bool>* stop,
                      const std::function<void(const std::string&)>& progress) {
  using Clock = std::chrono::steady_clock;
  static constexpr const char* kProbeDefaults[][2] = {{"log.connection.close", "false"}};
  ConfPtr conf;
  if (auto s = MakeConf(options, kProbeDefaults, &conf); !s.ok()) return s;
  ProbeErrors errors;
  rd_kafka_conf_set_opaque(conf.get(), &errors);
  rd_kafka_conf_set_error_cb(conf.get(), &ProbeErrorThunk);
  HandlePtr rk;
  if (auto s = MakeHandle(RD_KAFKA_PRODUCER, std::move(conf), &rk); !s.ok()) return s;
  const auto started = Clock::now();
  const auto deadline = started + std::chrono::milliseconds(std::max(0, timeout_ms));
  std::string last_metadata_error;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    const rd_kafka_metadata_t* metadata = nullptr;
    auto err = rd_kafka_metadata(rk.get(), 0, nullptr, &metadata,
                                 static_cast<int>(std::clamp<int64_t>(left, 1, 1000)));
    if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      rd_kafka_metadata_destroy(metadata);
      return Status::Ok();
    }
    last_metadata_error = rd_kafka_err2str(err);
    rd_kafka_poll(rk.get(), 0);  // serves the error callback
    std::string seen;
    {
      std::lock_guard lock(errors.mu);
      seen = errors.last;
    }
    if (seen.empty()) seen = last_metadata_error;
    const bool stopped = stop != nullptr && stop->load();
    if (stopped || Clock::now() >= deadline) {
      const auto waited =
          std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - started).count();
      return Status::Error("no Kafka broker answered at " + options.bootstrap_servers +
                           " (kafka.bootstrap_servers) within " + std::to_string(waited) + " ms" +
                           (stopped ? " (stop requested)" : "") + ": " + seen);
    }
    if (progress) progress(seen);
    // A refused connection answers at once: do not spin.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

Status TopicRanges(const ClientOptions& options, const std::string& topic,
                   std::vector<PartitionRange>* ranges, bool* embedded) {
  int partitions = 0;
  if (auto s = PartitionCount(options, topic, &partitions); !s.ok()) return s;
  static constexpr const char* kDefaults[][2] = {{"log.connection.close", "false"}};
  ConfPtr conf;
  if (auto s = MakeConf(options, kDefaults, &conf); !s.ok()) return s;
  HandlePtr rk;
  if (auto s = MakeHandle(RD_KAFKA_PRODUCER, std::move(conf), &rk); !s.ok()) return s;
  ranges->clear();
  for (int32_t p = 0; p < partitions; ++p) {
    PartitionRange range;
    range.partition = p;
    auto err =
        QueryWatermarks(rk.get(), topic, p, &range.log_start, &range.log_end, kWatermarkTimeoutMs);
    if (err) {
      return Status::Error("TopicRanges: offsets of " + PartitionName(topic, p) + " from " +
                           options.bootstrap_servers + ": " + rd_kafka_err2str(err));
    }
    ranges->push_back(range);
  }
  if (embedded != nullptr) *embedded = IsEmbeddedCluster(rk.get());
  return Status::Ok();
}

std::map<std::string, std::string> MockFriendlyConsumerProperties() {
  // See docs/KAFKA.md: the mock answers a Fetch with at most one producer
  // batch per partition and parks an empty Fetch for the full
  // fetch.wait.max.ms; more data per request and no long parking.
  return {{"fetch.wait.max.ms", "10"}, {"fetch.error.backoff.ms", "10"}};
}

Status ConsumeOnlyPass(const ClientOptions& options, const std::vector<std::string>& topics,
                       int64_t expected_messages, int timeout_ms, ConsumeStats* stats) {
  using Clock = std::chrono::steady_clock;
  ClientOptions consumer_options = options;
  if (consumer_options.group_id.empty()) {
    consumer_options.group_id =
        "clv-consume-only-" + std::to_string(getpid()) + "-" +
        std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
  }
  const auto created = Clock::now();
  std::unique_ptr<KafkaSource> source;
  SourceCallbacks callbacks;
  callbacks.start_offset = [](const TopicPartition&) { return std::optional<int64_t>(); };
  if (auto s = KafkaSource::Create(consumer_options, topics, callbacks, &source); !s.ok()) return s;

  ConsumeStats result;
  Clock::time_point first;
  Clock::time_point last;
  const auto deadline = created + std::chrono::milliseconds(timeout_ms);
  std::vector<Message> batch;
  while (result.messages < expected_messages && Clock::now() < deadline) {
    batch.clear();
    if (auto s = source->Poll(10000, 100, &batch); !s.ok()) return s;
    if (batch.empty()) continue;
    if (result.messages == 0) first = Clock::now();
    last = Clock::now();
    result.messages += static_cast<int64_t>(batch.size());
    for (const auto& m : batch) result.bytes += static_cast<int64_t>(m.key.size() + m.value.size());
  }
  (void)source->Close();
  if (result.messages > 0) {
    result.join_seconds = std::chrono::duration<double>(first - created).count();
    result.seconds = std::chrono::duration<double>(last - first).count();
  }
  *stats = result;
  if (result.messages < expected_messages) {
    std::string names;
    for (const auto& t : topics) names += (names.empty() ? "" : ",") + t;
    return Status::Error("ConsumeOnlyPass: got " + std::to_string(result.messages) + " of " +
                         std::to_string(expected_messages) + " messages from topics " + names +
                         " within " + std::to_string(timeout_ms) + " ms");
  }
  return Status::Ok();
}

ClientOptions ClientOptionsFrom(const config::KafkaOptions& kafka) {
  ClientOptions options;
  options.bootstrap_servers = kafka.bootstrap_servers;
  options.group_id = kafka.group_id;
  options.properties = kafka.properties;
  return options;
}

}  // namespace clv::connectors

// ------------------------------------------------- partition log (changelog)

namespace clv::connectors {
namespace {

class PartitionLogWriterImpl final : public PartitionLogWriter {
 public:
  explicit PartitionLogWriterImpl(std::string topic) : topic_(std::move(topic)) {}
  ~PartitionLogWriterImpl() override {
    if (rk_ != nullptr && !abandoned_) rd_kafka_flush(rk_.get(), 10000);
  }
  PartitionLogWriterImpl(const PartitionLogWriterImpl&) = delete;
  PartitionLogWriterImpl& operator=(const PartitionLogWriterImpl&) = delete;

  Status Init(const ClientOptions& options) {
    ConfPtr conf;
    if (auto s = MakeConf(options, kProducerDefaults, &conf); !s.ok()) return s;
    rd_kafka_conf_set_opaque(conf.get(), this);
    rd_kafka_conf_set_dr_msg_cb(conf.get(), &PartitionLogWriterImpl::DeliveryThunk);
    return MakeHandle(RD_KAFKA_PRODUCER, std::move(conf), &rk_);
  }

  Status Send(int32_t partition, std::string_view key, const std::string* value) override {
    // A null payload is a tombstone.
    char* payload = value != nullptr ? const_cast<char*>(value->data()) : nullptr;
    const size_t payload_size = value != nullptr ? value->size() : 0;
    for (;;) {
      rd_kafka_resp_err_t err = rd_kafka_producev(
          rk_.get(), RD_KAFKA_V_TOPIC(topic_.c_str()), RD_KAFKA_V_PARTITION(partition),
          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
          RD_KAFKA_V_KEY(const_cast<char*>(key.data()), key.size()),
          RD_KAFKA_V_VALUE(payload, payload_size), RD_KAFKA_V_END);
      if (err == RD_KAFKA_RESP_ERR_NO_ERROR) {
        ++sent_;
        return Status::Ok();
      }
      if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
        rd_kafka_poll(rk_.get(), 50);
        continue;
      }
      return Status::Error("changelog: sending to " + PartitionName(topic_, partition) + ": " +
                           rd_kafka_err2str(err));
    }
  }

  Status Flush(int timeout_ms, std::map<int32_t, int64_t>* last_offsets, bool* timed_out) override {
    const rd_kafka_resp_err_t err = rd_kafka_flush(rk_.get(), timeout_ms);
    rd_kafka_poll(rk_.get(), 0);
    *timed_out = false;
    if (failures_ > 0) {
      Status result = Status::Error("changelog: " + std::to_string(failures_) +
                                    " record(s) failed delivery; first: " + first_failure_);
      failures_ = 0;
      first_failure_.clear();
      last_offsets_.clear();
      return result;
    }
    if (err == RD_KAFKA_RESP_ERR__TIMED_OUT) {
      *timed_out = true;
      return Status::Error("changelog: " + std::to_string(rd_kafka_outq_len(rk_.get())) +
                           " record(s) to topic '" + topic_ + "' not acknowledged within " +
                           std::to_string(timeout_ms) + " ms");
    }
    if (last_offsets != nullptr) *last_offsets = last_offsets_;
    last_offsets_.clear();
    return Status::Ok();
  }

  void Abandon() override {
    abandoned_ = true;
    rd_kafka_purge(rk_.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(rk_.get(), 0);  // their (failed) delivery reports
  }

  uint64_t Purge() override {
    const uint64_t dropped = sent_ - reported_;
    rd_kafka_purge(rk_.get(), RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(rk_.get(), 0);  // their delivery reports (ERR__PURGE_*: no failure)
    // What was acknowledged before belongs to the dropped records' commits.
    last_offsets_.clear();
    reported_ = sent_;
    return dropped;
  }

 private:
  static void DeliveryThunk(rd_kafka_t*, const rd_kafka_message_t* msg, void* opaque) {
    static_cast<PartitionLogWriterImpl*>(opaque)->OnDelivery(msg);
  }
  // Delivery reports are served by Flush() on the caller's thread.
  void OnDelivery(const rd_kafka_message_t* msg) {
    if (reported_ < sent_) ++reported_;
    if (!msg->err) {
      auto& last = last_offsets_[msg->partition];
      last = std::max(last, msg->offset);
      return;
    }
    // Dropped on purpose (Purge, Abandon).
    if (msg->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE ||
        msg->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT) {
      return;
    }
    if (failures_++ == 0) {
      first_failure_ = PartitionName(topic_, msg->partition) + ": " + rd_kafka_err2str(msg->err);
    }
  }

  std::string topic_;
  HandlePtr rk_;
  uint64_t failures_ = 0;
  std::string first_failure_;
  std::map<int32_t, int64_t> last_offsets_;
  bool abandoned_ = false;
  // Records queued, and delivery reports served (a purged record's late
  // report counts nothing: reported_ never passes sent_).
  uint64_t sent_ = 0;
  uint64_t reported_ = 0;
};

}  // namespace

Status PartitionLogWriter::Create(const ClientOptions& options, const std::string& topic,
                                  std::unique_ptr<PartitionLogWriter>* writer) {
  auto impl = std::make_unique<PartitionLogWriterImpl>(topic);
  if (auto s = impl->Init(options); !s.ok()) return s;
  *writer = std::move(impl);
  return Status::Ok();
}

Status ReadPartitionToEnd(const ClientOptions& options, const std::string& topic, int32_t partition,
                          int64_t from, const std::function<Status(const LogRecord&)>& visit,
                          int64_t* end, int64_t* log_start, int timeout_ms) {
  static constexpr const char* kReaderDefaults[][2] = {
      {"enable.auto.commit", "false"},   {"enable.auto.offset.store", "false"},
      {"auto.offset.reset", "earliest"}, {"enable.partition.eof", "true"},
      {"log.connection.close", "false"}, {"fetch.wait.max.ms", "10"},
      {"fetch.error.backoff.ms", "10"}};
  ClientOptions reader = options;
  // A group id is required by the consumer API; assign() never joins it.
  if (reader.group_id.empty()) reader.group_id = "clv-changelog-reader";
  ConfPtr conf;
  if (auto s = MakeConf(reader, kReaderDefaults, &conf); !s.ok()) return s;
  if (auto s = SetProperty(conf.get(), "group.id", reader.group_id + "-changelog-reader");
      !s.ok()) {
    return s;
  }
  HandlePtr rk;
  if (auto s = MakeHandle(RD_KAFKA_CONSUMER, std::move(conf), &rk); !s.ok()) return s;
  int64_t low = 0;
  int64_t high = 0;
  auto err = QueryWatermarks(rk.get(), topic, partition, &low, &high, kWatermarkTimeoutMs);
  if (err) {
    return Status::Error("changelog: offsets of " + PartitionName(topic, partition) + " from " +
                         options.bootstrap_servers + ": " + rd_kafka_err2str(err));
  }
  *end = high;
  *log_start = low;
  from = std::max(from, low);
  if (from >= high) return Status::Ok();
  PartitionListPtr list(rd_kafka_topic_partition_list_new(1));
  rd_kafka_topic_partition_list_add(list.get(), topic.c_str(), partition)->offset = from;
  if (auto e = rd_kafka_assign(rk.get(), list.get()); e) {
    return Status::Error("changelog: assigning " + PartitionName(topic, partition) + ": " +
                         rd_kafka_err2str(e));
  }
  using Clock = std::chrono::steady_clock;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  int64_t next = from;
  Status result = Status::Ok();
  while (next < high) {
    if (Clock::now() >= deadline) {
      result = Status::Error("changelog: reading " + PartitionName(topic, partition) +
                             " stopped at offset " + std::to_string(next) + " of " +
                             std::to_string(high) + ": nothing more within " +
                             std::to_string(timeout_ms) + " ms");
      break;
    }
    rd_kafka_message_t* raw = rd_kafka_consumer_poll(rk.get(), 100);
    if (raw == nullptr) continue;
    std::unique_ptr<rd_kafka_message_t, void (*)(rd_kafka_message_t*)> msg(
        raw, &rd_kafka_message_destroy);
    if (msg->err == RD_KAFKA_RESP_ERR__PARTITION_EOF) {
      // Compaction may leave the last offsets empty: the end is reached.
      next = std::max(next, msg->offset);
      if (next >= high || msg->offset >= high) break;
      continue;
    }
    if (msg->err) {
      if (IsFatalConsumerError(msg->err) || msg->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) {
        result = Status::Error("changelog: reading " + PartitionName(topic, partition) + ": " +
                               rd_kafka_message_errstr(msg.get()));
        break;
      }
      continue;
    }
    if (msg->offset >= high) break;
    next = msg->offset + 1;
    LogRecord record;
    record.offset = msg->offset;
    record.key = std::string_view(static_cast<const char*>(msg->key), msg->key_len);
    if (msg->payload != nullptr) {
      record.value = std::string_view(static_cast<const char*>(msg->payload), msg->len);
    }
    result = visit(record);
    if (!result.ok()) break;
  }
  (void)rd_kafka_assign(rk.get(), nullptr);
  rd_kafka_consumer_close(rk.get());
  return result;
}

Status DescribeTopicConfig(const ClientOptions& options, const std::string& topic,
                           const std::string& name, std::optional<std::string>* value) {
  value->reset();
  if (FindEmbedded(options.bootstrap_servers) != nullptr) return Status::Ok();
  static constexpr const char* kAdminDefaults[][2] = {{"log.connection.close", "false"}};
  ConfPtr conf;
  if (auto s = MakeConf(options, kAdminDefaults, &conf); !s.ok()) return s;
  HandlePtr rk;
  if (auto s = MakeHandle(RD_KAFKA_PRODUCER, std::move(conf), &rk); !s.ok()) return s;
  if (IsEmbeddedCluster(rk.get())) return Status::Ok();  // `clv broker`: no configs
  rd_kafka_ConfigResource_t* resource =
      rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic.c_str());
  QueuePtr queue(rd_kafka_queue_new(rk.get()));
  char errstr[512];
  rd_kafka_AdminOptions_t* admin_options =
      rd_kafka_AdminOptions_new(rk.get(), RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
  rd_kafka_AdminOptions_set_request_timeout(admin_options, 20000, errstr, sizeof(errstr));
  rd_kafka_DescribeConfigs(rk.get(), &resource, 1, admin_options, queue.get());
  rd_kafka_AdminOptions_destroy(admin_options);
  EventPtr event(rd_kafka_queue_poll(queue.get(), 30000));
  Status status = Status::Ok();
  if (event == nullptr) {
    status =
        Status::Error("describing the configs of topic '" + topic + "': no answer within 30 s");
  } else if (rd_kafka_event_error(event.get())) {
    status = Status::Error("describing the configs of topic '" + topic +
                           "': " + std::string(rd_kafka_event_error_string(event.get())));
  } else {
    size_t count = 0;
    const rd_kafka_ConfigResource_t** resources = rd_kafka_DescribeConfigs_result_resources(
        rd_kafka_event_DescribeConfigs_result(event.get()), &count);
    for (size_t i = 0; i < count; ++i) {
      if (rd_kafka_ConfigResource_error(resources[i])) {
        status = Status::Error("describing the configs of topic '" + topic +
                               "': " + rd_kafka_ConfigResource_error_string(resources[i]));
        break;
      }
      size_t entries = 0;
      const rd_kafka_ConfigEntry_t** configs =
          rd_kafka_ConfigResource_configs(resources[i], &entries);
      for (size_t j = 0; j < entries; ++j) {
        if (name == rd_kafka_ConfigEntry_name(configs[j])) {
          const char* text = rd_kafka_ConfigEntry_value(configs[j]);
          *value = text != nullptr ? text : "";
        }
      }
    }
  }
  rd_kafka_ConfigResource_destroy(resource);
  return status;
}

}  // namespace clv::connectors
