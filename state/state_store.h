// StateStore: the durable state of one clvstream instance.
//
// Column families (RocksDB implementation):
//   users    user id -> UserState (state/user_state.h encoding)
//   offsets  "topic\0partition" (big-endian int32) -> next offset to read (int64)
//   timers   partition (BE int32) + due ms (BE int64) + user id -> "" (index of
//            users whose re-score is due at that stream time)
//   meta     schema version, model version, free-form keys
//   event_ids  day (BE int32, days since epoch of the event time) + event id
//            hash (BE uint64) -> "" : every event id folded in during the
//            dedup retention, so a re-send is caught however late it comes
// Integers in keys and the offset value are big-endian with the sign bit
// flipped, so byte order is numeric order (state/rocksdb_store.cpp).
//
// Contract: Commit() applies one CommitBatch atomically (one RocksDB
// WriteBatch): the new user states, their timer index changes and the input
// offsets move together. After a crash the store holds exactly the state of
// the last successful Commit(). Nothing is visible to Get() before Commit().
//
// Thread-safety: Commit() from one thread at a time (the processor's store
// writer); every read (users, offsets, timers, meta, event ids) may run
// concurrently with it from other threads (the processing thread reads
// while the writer commits the previous batch), as may Snapshot() readers
// (HTTP). A read sees each Commit() whole or not at all.
//
// Example:
//   std::unique_ptr<state::StateStore> store;
//   auto status = state::OpenRocksDbStore(options, &store);
//   if (!status.ok()) die(status.message);
//   state::CommitBatch batch;
//   batch.users.push_back({"u1", user_state});
//   batch.offsets.push_back({"orders", 0, 1234});
//   status = store->Commit(batch);
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/status.h"
#include "state/user_state.h"

namespace clv::config {
struct StateOptions;
}

namespace clv::state {

using Status = clv::Status;  // common/status.h

struct TopicPartitionOffset {
  std::string topic;
  int32_t partition = 0;
  int64_t offset = 0;  // next offset to read
};

struct TimerEntry {
  int32_t partition = 0;
  int64_t due_ms = 0;
  std::string user_id;
  bool operator==(const TimerEntry&) const = default;
};

// One event id, filed under the UTC day of its event time (the same event
// always lands on the same key; old days are dropped as a whole).
struct EventIdEntry {
  int32_t day = 0;
  uint64_t hash = 0;
  bool operator==(const EventIdEntry&) const = default;
};

struct CommitBatch {
  struct UserWrite {
    std::string user_id;
    UserState state;
  };
  std::vector<UserWrite> users;
  std::vector<std::string> deleted_users;
  std::vector<TimerEntry> timers_added;
  std::vector<TimerEntry> timers_removed;
  std::vector<TopicPartitionOffset> offsets;
  std::vector<std::pair<std::string, std::string>> meta;
  std::vector<EventIdEntry> event_ids_added;
  // When > INT32_MIN: drop every stored event id of a day before this one.
  int32_t event_ids_expire_before_day = INT32_MIN;
};

// Read-only consistent view (RocksDB snapshot), for readers on other threads.
class StateSnapshot {
 public:
  virtual ~StateSnapshot() = default;
  virtual Status GetUser(std::string_view user_id, std::optional<UserState>* state) const = 0;
  // Calls `visit` for every user in key order until it returns false.
  virtual Status ForEachUser(
      const std::function<bool(std::string_view user_id, const UserState&)>& visit) const = 0;
};

class StateStore {
 public:
  virtual ~StateStore() = default;

  // Looks up many users at once; (*states)[i] is empty when user i is unknown.
  virtual Status MultiGetUsers(const std::vector<std::string>& user_ids,
                               std::vector<std::optional<UserState>>* states) = 0;
  virtual Status GetUser(std::string_view user_id, std::optional<UserState>* state) = 0;

  // Stored next offset for topic/partition; empty when never committed.
  virtual Status GetOffset(std::string_view topic, int32_t partition,
                           std::optional<int64_t>* offset) = 0;
  virtual Status GetAllOffsets(std::vector<TopicPartitionOffset>* offsets) = 0;

  // Timers of `partition` with due_ms <= up_to_ms, in (due_ms, user_id) order.
  virtual Status DueTimers(int32_t partition, int64_t up_to_ms, size_t limit,
                           std::vector<TimerEntry>* timers) = 0;

  virtual Status GetMeta(std::string_view key, std::optional<std::string>* value) = 0;

  // (*seen)[i] is true when ids[i] was committed before. Ids of days that a
  // commit expired (CommitBatch::event_ids_expire_before_day) may still
  // answer either way until compaction drops them: callers must refuse such
  // events by their day, not by this answer.
  virtual Status SeenEventIds(const std::vector<EventIdEntry>& ids, std::vector<bool>* seen) = 0;

  virtual Status Commit(const CommitBatch& batch) = 0;

  virtual std::unique_ptr<StateSnapshot> Snapshot() = 0;

  // Approximate bytes on disk (SST + WAL) and number of users.
  virtual uint64_t ApproximateBytes() = 0;
  virtual uint64_t ApproximateUsers() = 0;
};

// Opens (creating if missing) the RocksDB store in options.dir.
Status OpenRocksDbStore(const config::StateOptions& options, std::unique_ptr<StateStore>* store);
// Opens read-only (for `clv inspect` on a stopped service's directory).
Status OpenRocksDbStoreReadOnly(const config::StateOptions& options,
                                std::unique_ptr<StateStore>* store);

}  // namespace clv::state
