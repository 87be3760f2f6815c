// The state changelog: each input partition's users, mirrored to partition p
// (= the input partition number) of a compacted Kafka topic, so that the
// state follows its partition to whichever instance of the group owns it.
//
// Records (key -> value; integers little-endian):
//   user id -> 'U' 1, u32 n, n x (u16 topic length, topic, i64 offset), the
//              UserState encoding (state/user_state.h). The offsets are the
//              user's folded positions: per input topic, the offset of the
//              last event of the user folded into this state.
//   user id -> no value (tombstone): the user is deleted.
//   kMarkerKey -> 'M' 1, u16 writer length, writer, i64 stream time,
//              u32 n, n x (u16 topic length, topic, i64 next offset,
//              i64 input time), then (may be absent: none) u32 m,
//              m x (i32 day, u32 count): per event day, how many event-id
//              records the partition has; written last by each commit that
//              touched the partition.
//   ChangelogEventIdsKey(day, sequence) -> 'I' 1, u32 n, n x u64: the ids
//              (state::EventIdEntry hashes) of the events of that day first
//              folded by one commit, so that the dedup index
//              (stream.dedup_retention_days) follows the partition too. A
//              partition's records of a day are numbered 0, 1, ... (the
//              marker's count); once the day is older than the retention
//              every one of them gets a tombstone, so compaction removes them.
//
// Contract (Processor, through the changelog stage of the commit pipeline,
// stream/commit_pipeline.h): a commit's records are produced after every
// score, alert and dead letter of it is acknowledged, their acknowledgement
// is looked for without blocking the polling thread, and only then is its
// local WriteBatch written, which also stores the next changelog offset after the marker
// (the local checkpoint). A crash between the two can leave user records
// after the last marker ("orphans"): RestorePartition applies every record
// in log order (the latest per key wins), takes offsets and stream time
// from the last marker, and reports, per orphan user and input topic, the
// folded position at or past that marker: the processor skips those
// replayed events (they are in the state, and their scores were sent).
//
// Thread-safety: a ChangelogIo is used by the processing thread only (the
// commit pipeline's hooks run there).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "connectors/kafka.h"
#include "state/state_store.h"

namespace clv::stream {

inline constexpr std::string_view kMarkerKey("\0marker", 7);
inline constexpr std::string_view kEventIdsKeyPrefix("\0ids/", 5);

// Meta keys of the store shared with the processor.
std::string StreamTimeMetaKey(int32_t partition);
std::string InputTimeMetaKey(const std::string& topic, int32_t partition);
std::string ChangelogCheckpointKey(int32_t partition);
// Per partition: the event-id record counts (day -> count) of its last
// marker, for a restart that reads nothing new from the changelog.
std::string ChangelogEventIdRecordsKey(int32_t partition);

struct ChangelogUser {
  std::map<std::string, int64_t> positions;  // input topic -> offset of the last folded event
  state::UserState state;
};
struct ChangelogMarker {
  std::string writer;
  int64_t stream_time_ms = 0;
  struct Input {
    std::string topic;
    int64_t next_offset = 0;
    int64_t input_time_ms = 0;
  };
  std::vector<Input> inputs;
  std::map<int32_t, uint32_t> event_id_records;  // event day -> records of that day
};

std::string EncodeChangelogUser(const ChangelogUser& user);
bool DecodeChangelogUser(std::string_view bytes, ChangelogUser* user, std::string* error);
std::string EncodeChangelogMarker(const ChangelogMarker& marker);
bool DecodeChangelogMarker(std::string_view bytes, ChangelogMarker* marker, std::string* error);
std::string ChangelogEventIdsKey(int32_t day, uint32_t sequence);
// False when `key` is not an event-id record key.
bool ParseChangelogEventIdsKey(std::string_view key, int32_t* day, uint32_t* sequence);
std::string EncodeChangelogEventIds(const std::vector<uint64_t>& hashes);
bool DecodeChangelogEventIds(std::string_view bytes, std::vector<uint64_t>* hashes,
                             std::string* error);
std::string EncodeEventIdRecordCounts(const std::map<int32_t, uint32_t>& counts);
bool DecodeEventIdRecordCounts(std::string_view bytes, std::map<int32_t, uint32_t>* counts);

// The changelog topic as the processor sees it.
class ChangelogIo {
 public:
  virtual ~ChangelogIo() = default;
  virtual const std::string& topic() const = 0;
  // A null value is a tombstone.
  virtual connectors::Status Send(int32_t partition, std::string_view key,
                                  const std::string* value) = 0;
  // Waits up to timeout_ms for every record sent (connectors::
  // PartitionLogWriter::Flush): *timed_out when some are still in flight.
  virtual connectors::Status Flush(int timeout_ms, std::map<int32_t, int64_t>* last_offsets,
                                   bool* timed_out) = 0;
  // Drops the records not acknowledged yet (connectors::PartitionLogWriter::
  // Abandon): a shutdown that gave up on Kafka. Their commits are not in
  // the store; records that did land are orphans a restore handles.
  virtual void Abandon() = 0;
  // Drops the records not acknowledged yet and goes on (connectors::
  // PartitionLogWriter::Purge): their commits are dropped, e.g. because
  // their partitions were lost to another instance. Returns how many.
  virtual uint64_t Purge() = 0;
  // Reads partition `partition` from `from` to its end offset now.
  virtual connectors::Status Read(
      int32_t partition, int64_t from,
      const std::function<connectors::Status(const connectors::LogRecord&)>& visit, int64_t* end,
      int64_t* log_start) = 0;
};

// The changelog on Kafka (connectors::PartitionLogWriter + ReadPartitionToEnd).
connectors::Status OpenKafkaChangelog(const connectors::ClientOptions& options,
                                      const std::string& topic, std::unique_ptr<ChangelogIo>* io);

// The changelog topic of `config` (state.changelog_topic or its default).
std::string ChangelogTopicName(const config::Config& config);

// Creates the changelog topic with the input topics' partition count (the
// largest) and cleanup.policy=compact, or checks an existing one; the error
// names the topic, what was found and what is expected.
connectors::Status EnsureChangelogTopic(const config::Config& config);

struct RestoreProgress {
  int64_t records = 0;
  int64_t bytes = 0;
  int64_t users = 0;      // distinct users written (a user in two chunks counts twice)
  int64_t event_ids = 0;  // event ids added to the dedup index
  int64_t from = 0;
  int64_t end = 0;
  double seconds = 0;
  bool marker = false;  // a marker was read
};

// What the processor must know after a restore of one partition.
struct RestoredPartition {
  // Input topic -> user -> folded position: replayed events of that user at
  // or below it are already in the state.
  std::map<std::string, std::unordered_map<std::string, int64_t>> skip;
  std::vector<std::string> users;  // every user written (drop them from caches)
  // The partition's event-id record counts (day -> count): the last
  // marker's, else what the store kept from the last commit.
  std::map<int32_t, uint32_t> event_id_records;
};

// One user a restore wrote: its local state before (nullopt: none) and the
// restored one (nullopt: deleted by a tombstone). Called as each WriteBatch of
// the restore is built, before it is written.
using RestoredUserObserver =
    std::function<void(const std::string& user_id, const std::optional<state::UserState>& before,
                       const std::optional<state::UserState>& after)>;

// Brings the store's users, timers, event ids, input offsets and stream time
// of input partition `partition` up to the changelog: reads from the store's
// checkpoint (0 if none) to the end, applies it in WriteBatches and stores
// the new checkpoint. `progress` (may be empty) is called every few seconds;
// `on_user` (may be empty) with every user written.
connectors::Status RestorePartition(ChangelogIo& io, state::StateStore& store, int32_t partition,
                                    RestoredPartition* restored, RestoreProgress* stats,
                                    const std::function<void(const RestoreProgress&)>& progress,
                                    const RestoredUserObserver& on_user = {});

}  // namespace clv::stream
