// Kafka connectors: KafkaSource (consumer-group member), KafkaSink
// (idempotent producer), topic administration, and the embedded broker.
//
// One code path for every broker: the embedded broker is librdkafka's mock
// cluster speaking the Kafka protocol on 127.0.0.1, so the same source and sink
// run against it and against a real cluster.
//
// Thread-safety: a KafkaSource is used by one thread (its callbacks run inside
// Poll() on that thread). A KafkaSink may be used from several threads.
//
// Example:
//   std::unique_ptr<connectors::KafkaSource> source;
//   auto status = connectors::KafkaSource::Create(options, callbacks, &source);
//   std::vector<connectors::Message> batch;
//   status = source->Poll(10000, 20, &batch);
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"

namespace clv::config {
struct KafkaOptions;
}  // namespace clv::config

namespace clv::connectors {

using Status = clv::Status;  // common/status.h

struct Message {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;
  std::string key;
  std::string value;
  int64_t timestamp_ms = 0;  // broker/producer timestamp
  // Kafka record headers, in order (name, value bytes).
  std::vector<std::pair<std::string, std::string>> headers;
};

struct TopicPartition {
  std::string topic;
  int32_t partition = 0;
  bool operator==(const TopicPartition&) const = default;
  bool operator<(const TopicPartition& o) const {
    return topic != o.topic ? topic < o.topic : partition < o.partition;
  }
};

struct ClientOptions {
  std::string bootstrap_servers;
  std::string group_id;  // consumer only
  std::string client_id = "clvstream";
  // Extra librdkafka properties (security.protocol, sasl.*, ssl.*, ...).
  std::map<std::string, std::string> properties;
};

// Client options of the service's Kafka settings (bootstrap servers, group,
// extra properties; client_id stays the default).
ClientOptions ClientOptionsFrom(const config::KafkaOptions& kafka);

// What a source knows about its cluster (see KafkaSource::Health()).
struct ClusterHealth {
  // False from librdkafka's "all brokers are down" until a broker answers
  // again (a metadata request succeeds, or a message arrives).
  bool reachable = true;
  // While unreachable: the last connection error, e.g. "127.0.0.1:9092/1:
  // Connect to ipv4#127.0.0.1:9092 failed: Connection refused".
  std::string error;
  // Milliseconds since the cluster became unreachable (0 while reachable).
  int64_t unreachable_ms = 0;
  // Milliseconds since a connection to a broker last failed ("Connect to
  // ... failed"), -1 when none has since the last message arrived. librdkafka
  // reports "all brokers are down" (reachable = false) only once every known
  // broker connection is down, which can come many seconds after the first
  // refused connection; this tells an idle clock that the cluster may be
  // gone although `reachable` still says true.
  int64_t connect_failed_ms = -1;
  // The last revocation was a loss (the group session expired, e.g. during
  // an outage): the partitions that went, until the next assignment.
  int partitions_lost = 0;
};

// What an assigned partition does when its start position is not in its log
// (docs/KAFKA.md "Start positions that are not in the log").
enum class OffsetReset {
  kNone,      // Poll() returns an error naming the partition, the offsets and the cause
  kEarliest,  // start at the log start
  kLatest,    // start at the log end
};

// One partition moved by OffsetReset::kEarliest / kLatest at assignment.
struct OffsetResetEvent {
  TopicPartition partition;
  std::optional<int64_t> stored_offset;  // nullopt: never read (expected offset 0)
  int64_t log_start = 0;
  int64_t log_end = 0;
  int64_t new_offset = 0;  // where reading starts now
  std::string cause;       // why the position was not in the log
};

// The log start and end offsets of one partition.
struct PartitionRange {
  int32_t partition = 0;
  int64_t log_start = 0;
  int64_t log_end = 0;
};

// The embedded broker (librdkafka 2.0.2's mock cluster) keeps at most this
// many bytes of record batches per partition and silently drops the oldest
// batches beyond it (also beyond 100,000 batches); not configurable.
inline constexpr int64_t kEmbeddedBrokerPartitionBytes = 5LL << 20;

// Callbacks run on the polling thread, inside Poll().
struct SourceCallbacks {
  // Start offset for a newly assigned partition: the offset stored in our
  // state store, or nullopt to start from the beginning of the partition.
  // The position is checked against the partition's log at assignment: a
  // stored offset before the log start or past its end (topic or cluster
  // recreated, retention), and a partition without one whose log does not
  // start at 0, stop Poll() with an error, unless reset_offsets says where
  // to go instead (then on_offset_reset is told). A position that falls out
  // of the log while reading (retention or the embedded broker's limit
  // overtaking the consumer) always stops Poll() with an error.
  std::function<std::optional<int64_t>(const TopicPartition&)> start_offset;
  OffsetReset reset_offsets = OffsetReset::kNone;
  // Called for each partition reset_offsets moved, before it is assigned,
  // e.g. to store the new position; an error stops Poll().
  std::function<Status(const OffsetResetEvent&)> on_offset_reset;
  // Called after partitions were assigned (already positioned).
  std::function<void(const std::vector<TopicPartition>&)> on_assigned;
  // Called before partitions are taken away: the processor commits what it
  // has processed of them. Messages of revoked partitions that were polled
  // but not yet processed must be dropped by the caller.
  std::function<void(const std::vector<TopicPartition>&)> on_revoked;
  // Called instead of on_revoked when the partitions were lost (the group
  // session expired, e.g. the cluster was unreachable): another instance may
  // own them already, so nothing more of them may be committed. Unset:
  // on_revoked is called.
  std::function<void(const std::vector<TopicPartition>&)> on_lost;
};

class KafkaSource {
 public:
  virtual ~KafkaSource() = default;
  static Status Create(const ClientOptions& options, const std::vector<std::string>& topics,
                       SourceCallbacks callbacks, std::unique_ptr<KafkaSource>* source);
  // Appends up to max_messages to *out, waiting at most timeout_ms for the
  // first one. Consumer errors that are not fatal are logged and skipped.
  virtual Status Poll(int max_messages, int timeout_ms, std::vector<Message>* out) = 0;
  // Partitions currently assigned.
  virtual std::vector<TopicPartition> Assignment() = 0;
  // High watermark minus position per assigned partition (consumer lag).
  virtual std::map<TopicPartition, int64_t> Lag() = 0;
  // Leaves the group cleanly (on_revoked is called).
  virtual Status Close() = 0;
  // The same, waiting at most timeout_ms (the cluster may be unreachable):
  // past it the consumer is dropped without leaving (its partitions move
  // after the group's session timeout) and the error says so.
  virtual Status CloseWithin(int timeout_ms) {
    (void)timeout_ms;
    return Close();
  }
  // Reachability of the cluster as the consumer saw it in its last Poll().
  virtual ClusterHealth Health() { return {}; }
  // Optional courtesy: commits next-offsets to the Kafka group asynchronously
  // so lag tools (kafka-consumer-groups, Burrow) see progress. The truth stays
  // in our state store; start positions always come from start_offset().
  virtual Status CommitAsync(const std::map<TopicPartition, int64_t>& next_offsets) {
    (void)next_offsets;
    return Status::Ok();
  }
  // The offsets the broker acknowledged for this consumer's CommitAsync calls
  // (polling thread; empty where the source does not track them).
  virtual std::map<TopicPartition, int64_t> GroupCommitted() const { return {}; }
  // Whether the group may have given our partitions to another instance
  // without librdkafka having told us yet: the connections failed and nothing
  // was heard from the cluster for more than half the group's session
  // timeout (librdkafka learns of an expired session only at its next
  // heartbeat, seconds after the cluster is back). A commit must not reach
  // the changelog meanwhile (Processor::set_commit_gate); once the cluster
  // answers again after more than the session timeout, the source drops the
  // partitions (on_lost) and joins the group again. Polling thread only.
  virtual bool SessionInDoubt() const { return false; }
};

class KafkaSink {
 public:
  virtual ~KafkaSink() = default;
  // Idempotent producer (enable.idempotence=true, acks=all).
  static Status Create(const ClientOptions& options, std::unique_ptr<KafkaSink>* sink);
  // Queues one message (partition chosen by key hash, or `partition` if >= 0).
  // Blocks while the local queue is full.
  virtual Status Send(std::string_view topic, std::string_view key, std::string_view value,
                      int32_t partition = -1) = 0;
  // The same, with record headers.
  virtual Status SendWithHeaders(
      std::string_view topic, std::string_view key, std::string_view value,
      const std::vector<std::pair<std::string, std::string>>& headers) = 0;
  // Waits until every queued message is acknowledged by the broker. Error if
  // any delivery failed since the last Flush (names topic and reason).
  virtual Status Flush(int timeout_ms) = 0;
  // Acknowledgements without a flush, so that sending goes on while earlier
  // messages are in flight. Mark() closes the current group of sent messages
  // and returns its number: every message sent before the call belongs to a
  // group <= that number. WaitAcked() serves delivery reports for up to
  // timeout_ms (0: only those already there) and sets *done once every
  // message of the groups <= mark is acknowledged; *acked_ms (if given) is
  // then the wall-clock time the last of them was. Error if a delivery failed
  // (names topic, partition and reason).
  // Connects and learns the topics' partitions now, so that the first
  // messages do not wait for it (the first batch of a service would).
  virtual Status Prepare(const std::vector<std::string>& topics, int timeout_ms) = 0;
  virtual uint64_t Mark() = 0;
  virtual Status WaitAcked(uint64_t mark, int timeout_ms, bool* done,
                           int64_t* acked_ms = nullptr) = 0;
  virtual uint64_t delivered() const = 0;
  // Drops every message not yet acknowledged (the shutdown gave up on them),
  // so that destroying the sink does not wait for the cluster.
  virtual void Abandon() {}
  // Drops every message not yet acknowledged and goes on: their groups count
  // as settled and their dropped deliveries as no failure; returns how many
  // were dropped. For outputs that must not land any more (their partitions
  // were lost to another instance, which sends them again).
  virtual uint64_t Purge() { return 0; }
};

// Creates topics that do not exist yet (existing ones are left alone), with
// topic configs (e.g. cleanup.policy=compact; the embedded broker ignores
// them, it has no compaction). replication_factor -1: the broker's default
// (a real cluster). The embedded broker in another process (`clv broker`)
// cannot create topics: an error says to start it with --topics.
Status EnsureTopics(const ClientOptions& options, const std::vector<std::string>& topics,
                    int partitions, int replication_factor,
                    const std::map<std::string, std::string>& configs = {});

// Deletes topics (Admin API; a real cluster only, the embedded broker cannot
// delete). Unknown topics are fine. Deletion finishes in the background: the
// topic may still show in metadata for a moment.
Status DeleteTopics(const ClientOptions& options, const std::vector<std::string>& topics);

// Deletes the records of `topic` [partition] before `before_offset` (Admin
// API, as retention would; a real cluster only): the log then starts there.
Status DeleteRecordsBefore(const ClientOptions& options, const std::string& topic,
                           int32_t partition, int64_t before_offset);

// A consumer group as the cluster sees it (Admin API, a real cluster only).
struct GroupDescription {
  std::string state;  // "Empty", "Stable", "PreparingRebalance", ... ("Dead": unknown group)
  int members = 0;
};
Status DescribeGroup(const ClientOptions& options, const std::string& group_id,
                     GroupDescription* description);

// Partition count of a topic (from metadata).
Status PartitionCount(const ClientOptions& options, const std::string& topic, int* partitions);

// Every topic of the cluster with its partition count (from metadata).
Status ListTopics(const ClientOptions& options, std::map<std::string, int>* topics,
                  int timeout_ms = 10000);

// Waits until a broker at options.bootstrap_servers answers a metadata
// request: at most timeout_ms, or until *stop is set (may be null). While it
// waits, `progress` (may be empty) is called about once a second with the
// last connection error. The error names the bootstrap servers and what the
// client saw (e.g. "Connect to ipv4#127.0.0.1:9 failed: Connection refused").
Status WaitForCluster(const ClientOptions& options, int timeout_ms, const std::atomic<bool>* stop,
                      const std::function<void(const std::string&)>& progress = {});
// Log start and end offset of every partition of `topic`; *embedded (if
// given) says whether the cluster is an embedded broker (librdkafka's mock
// cluster, in this process or in `clv broker`).
Status TopicRanges(const ClientOptions& options, const std::string& topic,
                   std::vector<PartitionRange>* ranges, bool* embedded = nullptr);

// The embedded development broker: librdkafka's mock cluster, on 127.0.0.1.
class EmbeddedBroker {
 public:
  virtual ~EmbeddedBroker() = default;
  // brokers: number of mock brokers; partitions: default for CreateTopic.
  // port 0: each broker listens on a free port; port N: broker i (1-based)
  // listens on 127.0.0.1:N+i-1, so a restarted broker keeps its address
  // (error naming the port when it is taken).
  // Topics that clients auto-create (producing to, or subscribing to, an
  // unknown topic) get librdkafka's fixed 4 partitions: librdkafka 2.0.2's
  // mock has no setting for it. Create topics up front with CreateTopic.
  static Status Start(int brokers, int partitions, std::unique_ptr<EmbeddedBroker>* broker,
                      int port = 0);
  virtual std::string bootstrap_servers() const = 0;
  // partitions <= 0: the default given to Start().
  virtual Status CreateTopic(const std::string& topic, int partitions) = 0;
  // Fault injection for tests: the next `count` Produce requests fail with
  // the Kafka protocol error `kafka_error_code` (e.g. 29 = topic authorization
  // failed, not retriable).
  virtual Status FailNextProduceRequests(int count, int kafka_error_code) {
    (void)count;
    (void)kafka_error_code;
    return Status::Error("FailNextProduceRequests: not supported by this broker");
  }
  // Fault injection for tests: every broker goes down (its listener and
  // connections close: clients see "all brokers are down") or comes back up
  // on the same address with its data.
  virtual Status SetAllBrokersDown(bool down) {
    (void)down;
    return Status::Error("SetAllBrokersDown: not supported by this broker");
  }
};

// Result of a consume-only pass (the ceiling printed next to `clv bench`).
struct ConsumeStats {
  int64_t messages = 0;
  int64_t bytes = 0;        // key + value bytes
  double seconds = 0;       // first message to last
  double join_seconds = 0;  // consumer creation to first message (group join, fetch start)
};

// Reads `expected_messages` from `topics` from the beginning with a fresh
// consumer group (options.group_id, or a unique one when empty) and measures
// the rate. Error when fewer arrive within timeout_ms (names the topics).
Status ConsumeOnlyPass(const ClientOptions& options, const std::vector<std::string>& topics,
                       int64_t expected_messages, int timeout_ms, ConsumeStats* stats);

// Consumer properties that make librdkafka's mock cluster fast (see
// docs/KAFKA.md "Mock broker throughput"); harmless on a real cluster.
std::map<std::string, std::string> MockFriendlyConsumerProperties();

}  // namespace clv::connectors

namespace clv::connectors {

// A producer for a keyed log whose records go to explicit partitions (the
// state changelog, stream/changelog.h): idempotent, acks=all, so the records
// of one partition land in the order sent. Used by one thread.
class PartitionLogWriter {
 public:
  virtual ~PartitionLogWriter() = default;
  static Status Create(const ClientOptions& options, const std::string& topic,
                       std::unique_ptr<PartitionLogWriter>* writer);
  // Queues one record for `partition`; a null `value` is a tombstone (a
  // record without value, which compaction deletes the key for).
  virtual Status Send(int32_t partition, std::string_view key, const std::string* value) = 0;
  // Waits up to timeout_ms until every record sent is acknowledged. Error if
  // one failed (names the topic, partition and reason) or, with *timed_out
  // set, if some are not acknowledged in time (call again to wait more).
  // Once all are, *last_offsets (if given) gets, per partition, the offset of
  // the last record acknowledged since the previous complete Flush.
  virtual Status Flush(int timeout_ms, std::map<int32_t, int64_t>* last_offsets,
                       bool* timed_out) = 0;
  // Drops what is not acknowledged yet (a shutdown that gave up on Kafka),
  // so that destroying the writer does not wait for it.
  virtual void Abandon() = 0;
  // Drops what is not acknowledged yet and goes on, as if it had never been
  // sent (no failure; the next Flush names only what is sent after). Returns
  // how many records were dropped.
  virtual uint64_t Purge() = 0;
};

// One record read by ReadPartitionToEnd; `value` is empty for a tombstone.
struct LogRecord {
  int64_t offset = 0;
  std::string_view key;
  std::optional<std::string_view> value;
};

// Reads topic[partition] from offset `from` (moved up to the log start when
// it is before it) to the partition's end offset at the call, in order,
// without joining a group. *end gets that end offset, *log_start the log
// start. An error from `visit` stops the read and is returned.
Status ReadPartitionToEnd(const ClientOptions& options, const std::string& topic, int32_t partition,
                          int64_t from, const std::function<Status(const LogRecord&)>& visit,
                          int64_t* end, int64_t* log_start, int timeout_ms);

// The value of one topic config (DescribeConfigs, a real cluster only; the
// embedded broker answers *value empty).
Status DescribeTopicConfig(const ClientOptions& options, const std::string& topic,
                           const std::string& name, std::optional<std::string>* value);

}  // namespace clv::connectors
