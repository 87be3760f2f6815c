// RocksDB implementation of StateStore (state/state_store.h).
//
// Durability choice: every Commit() is one WriteBatch written with the WAL on
// and sync=false. The batch reaches the WAL file (the OS page cache) before
// Commit() returns, so a killed process loses nothing: on reopen RocksDB
// replays the WAL and the store holds exactly the last successful Commit().
// A power loss or kernel crash may lose the last few commits, but always
// whole batches, states and offsets together, so the store rolls back to an
// earlier consistent point and Kafka re-delivers the events after it (scores
// are re-sent with the same seq). Syncing every commit would cost an fsync
// per micro-batch for no change in what consumers can observe.
//
// Key encodings: integers in keys are big-endian with the sign bit flipped,
// so byte order is numeric order (negative partitions/times sort first).
#include "state/rocksdb_store.h"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <cstdarg>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <mutex>

#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/filter_policy.h>
#include <rocksdb/options.h>
#include <rocksdb/slice_transform.h>
#include <rocksdb/table.h>
#include <rocksdb/utilities/options_util.h>
#include <rocksdb/write_batch.h>
#include <sys/time.h>

#include "config/config.h"
#include "state/state_store.h"

namespace clv::state {
namespace {

// ---- Tuning: every RocksDB knob we set, in one place. ----
// (Kafka Streams RocksDBStore style; defaults suit one instance handling a
// few million users on a small machine. The block cache size comes from
// config state.block_cache_bytes.)
struct Tuning {
  // Memtable of the users column family (the hot one), bytes.
  static constexpr size_t kUsersWriteBufferBytes = 64u << 20;
  // Memtable of the event_ids column family (12-byte keys), bytes.
  static constexpr size_t kEventIdsWriteBufferBytes = 32u << 20;
  // Memtable of the small column families (offsets, timers, meta), bytes.
  static constexpr size_t kSmallWriteBufferBytes = 4u << 20;
  // Memtables per column family before writes stall.
  static constexpr int kMaxWriteBufferNumber = 3;
  // SST block size, bytes (point lookups of ~700-byte values).
  static constexpr size_t kBlockBytes = 4u << 10;
  // Bloom filter bits per key (~1% false positives): MultiGet of
  // users or event ids never seen before skips the SST reads.
  static constexpr double kBloomBitsPerKey = 10;
  // Memtable bloom filter (whole keys) as a share of the memtable size: a
  // lookup of a key that is not there (a new event id, a new user) skips
  // the memtable's skip-list search.
  static constexpr double kMemtableBloomRatio = 0.1;
  // Flush + compaction threads.
  static constexpr int kMaxBackgroundJobs = 2;
  // Compression of every level: LZ4 (cheap; states of similar users share
  // much of their bytes).
  static constexpr rocksdb::CompressionType kCompression = rocksdb::kLZ4Compression;
  // Commit(): WAL on, not fsynced per commit (see the top of this file).
  static constexpr bool kSyncCommits = false;
  // Timers are read per partition: prefix = 4-byte partition.
  static constexpr size_t kTimersPrefixBytes = 4;
};

constexpr std::string_view kDefaultColumnFamily = "default";

// RocksDB's info log, written by us. RocksDB's own file logger asserts
// (SIGABRT) when it appends after an earlier failed write, which is what a
// full disk does to it; this one writes through stdio, so a full disk only
// loses log lines, and the write error reaches Commit() as a Status that
// names the state directory. Lines go to DIR/LOG (renamed to LOG.old past
// kMaxInfoLogFileBytes); warnings and errors also to stderr, as logfmt.
class StateDirLogger final : public rocksdb::Logger {
 public:
  explicit StateDirLogger(std::string dir)
      : rocksdb::Logger(rocksdb::InfoLogLevel::INFO_LEVEL), dir_(std::move(dir)) {}
  ~StateDirLogger() override {
    if (file_ != nullptr) std::fclose(file_);
  }

  using rocksdb::Logger::Logv;
  void Logv(const char* format, va_list ap) override {
    Logv(rocksdb::InfoLogLevel::INFO_LEVEL, format, ap);
  }
  void Logv(const rocksdb::InfoLogLevel level, const char* format, va_list ap) override {
    if (level < GetInfoLogLevel()) return;
    char text[2048];
    va_list copy;
    va_copy(copy, ap);
    int n = std::vsnprintf(text, sizeof(text), format, copy);
    va_end(copy);
    if (n < 0) return;
    std::string_view line(text, std::min<size_t>(static_cast<size_t>(n), sizeof(text) - 1));
    std::lock_guard<std::mutex> lock(mutex_);
    WriteToFile(line);
    if (level >= rocksdb::InfoLogLevel::WARN_LEVEL && Fresh(line)) {
      std::string escaped;
      for (char c : line) {
        if (c == '"' || c == '\\') escaped += '\\';
        escaped += (c == '\n' ? ' ' : c);
      }
      std::fprintf(stderr, "level=%s msg=\"rocksdb: %s\" state_dir=\"%s\"\n",
                   level >= rocksdb::InfoLogLevel::ERROR_LEVEL ? "error" : "warn", escaped.c_str(),
                   dir_.c_str());
    }
  }

 private:
  // RocksDB retries recovery from a full disk every few seconds, logging the
  // same lines each time: stderr gets each text once a minute at most.
  bool Fresh(std::string_view line) {
    const std::time_t now = std::time(nullptr);
    auto [it, inserted] = last_printed_.try_emplace(std::string(line), now);
    if (!inserted && now - it->second < 60) return false;
    it->second = now;
    if (last_printed_.size() > 256) last_printed_.clear();
    return true;
  }

  void WriteToFile(std::string_view line) {
    const std::string path = dir_ + "/LOG";
    if (file_ != nullptr && written_ > static_cast<long>(kMaxInfoLogFileBytes)) {
      std::fclose(file_);
      file_ = nullptr;
      std::rename(path.c_str(), (path + ".old").c_str());
    }
    if (file_ == nullptr) {
      file_ = std::fopen(path.c_str(), "a");
      if (file_ == nullptr) return;  // no directory yet, or no space: the line is lost
      written_ = std::ftell(file_);
    }
    timeval now{};
    gettimeofday(&now, nullptr);
    tm utc{};
    gmtime_r(&now.tv_sec, &utc);
    char stamp[100];
    std::snprintf(stamp, sizeof(stamp), "%04d/%02d/%02d-%02d:%02d:%02d.%06ld ", utc.tm_year + 1900,
                  utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec,
                  static_cast<long>(now.tv_usec));
    int n = std::fprintf(file_, "%s%.*s\n", stamp, static_cast<int>(line.size()), line.data());
    if (n > 0) written_ += n;
    std::fflush(file_);
  }

  static constexpr size_t kMaxInfoLogFileBytes = 16u << 20;
  const std::string dir_;
  std::mutex mutex_;
  std::FILE* file_ = nullptr;
  long written_ = 0;
  std::map<std::string, std::time_t> last_printed_;
};

rocksdb::DBOptions MakeDbOptions(bool read_only, const std::string& dir) {
  rocksdb::DBOptions options;
  options.info_log = std::make_shared<StateDirLogger>(dir);
  options.create_if_missing = !read_only;
  options.create_missing_column_families = !read_only;
  options.max_background_jobs = Tuning::kMaxBackgroundJobs;
  return options;
}

rocksdb::ColumnFamilyOptions MakeColumnFamilyOptions(std::string_view name,
                                                     const std::shared_ptr<rocksdb::Cache>& cache) {
  rocksdb::ColumnFamilyOptions options;
  options.compression = Tuning::kCompression;
  options.max_write_buffer_number = Tuning::kMaxWriteBufferNumber;
  options.level_compaction_dynamic_level_bytes = true;
  rocksdb::BlockBasedTableOptions table;
  table.block_cache = cache;
  table.block_size = Tuning::kBlockBytes;
  // Point lookups of keys that are mostly absent (new users, new event ids):
  // bloom filters in the SSTs and in the memtable answer them.
  auto bloom_filtered = [&] {
    table.filter_policy.reset(rocksdb::NewBloomFilterPolicy(Tuning::kBloomBitsPerKey));
    table.cache_index_and_filter_blocks = true;
    table.pin_l0_filter_and_index_blocks_in_cache = true;
    options.memtable_prefix_bloom_size_ratio = Tuning::kMemtableBloomRatio;
    options.memtable_whole_key_filtering = true;
  };
  options.write_buffer_size = Tuning::kSmallWriteBufferBytes;
  if (name == kUsersColumnFamily) {
    options.write_buffer_size = Tuning::kUsersWriteBufferBytes;
    bloom_filtered();
  }
  if (name == kEventIdsColumnFamily) {
    options.write_buffer_size = Tuning::kEventIdsWriteBufferBytes;
    bloom_filtered();
  }
  if (name == kTimersColumnFamily) {
    options.prefix_extractor.reset(rocksdb::NewFixedPrefixTransform(Tuning::kTimersPrefixBytes));
  }
  options.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  return options;
}

// ---- Key encodings ----

void PutOrdered32(int32_t value, std::string* out) {
  const uint32_t bits = static_cast<uint32_t>(value) ^ 0x80000000u;
  for (int shift = 24; shift >= 0; shift -= 8) out->push_back(static_cast<char>(bits >> shift));
}

void PutOrdered64(int64_t value, std::string* out) {
  const uint64_t bits = static_cast<uint64_t>(value) ^ 0x8000000000000000ull;
  for (int shift = 56; shift >= 0; shift -= 8) out->push_back(static_cast<char>(bits >> shift));
}

uint64_t ReadBigEndian(std::string_view bytes) {
  uint64_t value = 0;
  for (char c : bytes) value = (value << 8) | static_cast<uint8_t>(c);
  return value;
}

int32_t ReadOrdered32(std::string_view bytes) {
  return static_cast<int32_t>(static_cast<uint32_t>(ReadBigEndian(bytes.substr(0, 4))) ^
                              0x80000000u);
}

int64_t ReadOrdered64(std::string_view bytes) {
  return static_cast<int64_t>(ReadBigEndian(bytes.substr(0, 8)) ^ 0x8000000000000000ull);
}

std::string OffsetKey(std::string_view topic, int32_t partition) {
  std::string key(topic);
  key.push_back('\0');
  PutOrdered32(partition, &key);
  return key;
}

std::string OffsetValue(int64_t offset) {
  std::string value;
  PutOrdered64(offset, &value);
  return value;
}

std::string EventIdKey(const EventIdEntry& id) {
  std::string key;
  key.reserve(12);
  PutOrdered32(id.day, &key);
  for (int shift = 56; shift >= 0; shift -= 8) key.push_back(static_cast<char>(id.hash >> shift));
  return key;
}

std::string TimerKey(const TimerEntry& timer) {
  std::string key;
  key.reserve(12 + timer.user_id.size());
  PutOrdered32(timer.partition, &key);
  PutOrdered64(timer.due_ms, &key);
  key.append(timer.user_id);
  return key;
}

std::string_view View(const rocksdb::Slice& slice) { return {slice.data(), slice.size()}; }
rocksdb::Slice ToSlice(std::string_view view) { return {view.data(), view.size()}; }

// ---- The open database, shared by the store and its snapshots ----

struct Engine {
  std::string dir;
  bool read_only = false;
  std::unique_ptr<rocksdb::DB> db;
  // Owned by this Engine (destroyed before db); borrowed by everything else.
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::ColumnFamilyHandle* users = nullptr;
  rocksdb::ColumnFamilyHandle* offsets = nullptr;
  rocksdb::ColumnFamilyHandle* timers = nullptr;
  rocksdb::ColumnFamilyHandle* meta = nullptr;
  rocksdb::ColumnFamilyHandle* event_ids = nullptr;
  // A write failed (full disk, read-only remount, I/O error). RocksDB then
  // refuses further writes, and syncing its WAL writer after the error
  // aborts the process on an assertion, so a failed store is closed without
  // the final SyncWAL. Nothing is lost by that: every commit that returned
  // Ok is in the WAL already (the top of this file), and the next open
  // replays it.
  std::atomic<bool> write_failed{false};

  Engine() = default;
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;
  ~Engine() {
    if (db == nullptr) return;
    if (!read_only && !write_failed.load()) (void)db->SyncWAL();
    for (rocksdb::ColumnFamilyHandle* handle : handles) (void)db->DestroyColumnFamilyHandle(handle);
    (void)db->Close();
  }

  Status Error(std::string_view operation, const rocksdb::Status& status) const {
    return Status::Error("state store " + dir + ": " + std::string(operation) + ": " +
                         status.ToString());
  }
};

Status DecodeUser(const Engine& engine, std::string_view user_id, std::string_view bytes,
                  UserState* state) {
  std::string error;
  if (!Decode(bytes, state, &error)) {
    return Status::Error("state store " + engine.dir + ": read user '" + std::string(user_id) +
                         "': " + error);
  }
  return Status::Ok();
}

Status GetUserAt(const Engine& engine, const rocksdb::ReadOptions& read_options,
                 std::string_view user_id, std::optional<UserState>* state) {
  state->reset();
  rocksdb::PinnableSlice value;
  rocksdb::Status status = engine.db->Get(read_options, engine.users, ToSlice(user_id), &value);
  if (status.IsNotFound()) return Status::Ok();
  if (!status.ok()) return engine.Error("get user '" + std::string(user_id) + "'", status);
  UserState decoded;
  Status decode_status = DecodeUser(engine, user_id, View(value), &decoded);
  if (!decode_status.ok()) return decode_status;
  *state = std::move(decoded);
  return Status::Ok();
}

Status ForEachUserAt(const Engine& engine, const rocksdb::ReadOptions& read_options,
                     const std::function<bool(std::string_view, const UserState&)>& visit) {
  std::unique_ptr<rocksdb::Iterator> it(engine.db->NewIterator(read_options, engine.users));
  for (it->SeekToFirst(); it->Valid(); it->Next()) {
    UserState state;
    Status decode_status = DecodeUser(engine, View(it->key()), View(it->value()), &state);
    if (!decode_status.ok()) return decode_status;
    if (!visit(View(it->key()), state)) break;
  }
  if (!it->status().ok()) return engine.Error("scan users", it->status());
  return Status::Ok();
}

class RocksDbSnapshot final : public StateSnapshot {
 public:
  explicit RocksDbSnapshot(std::shared_ptr<Engine> engine)
      : engine_(std::move(engine)), snapshot_(engine_->db->GetSnapshot()) {}
  RocksDbSnapshot(const RocksDbSnapshot&) = delete;
  RocksDbSnapshot& operator=(const RocksDbSnapshot&) = delete;
  ~RocksDbSnapshot() override {
    if (snapshot_ != nullptr) engine_->db->ReleaseSnapshot(snapshot_);
  }

  Status GetUser(std::string_view user_id, std::optional<UserState>* state) const override {
    return GetUserAt(*engine_, ReadOptions(), user_id, state);
  }

  Status ForEachUser(
      const std::function<bool(std::string_view user_id, const UserState&)>& visit) const override {
    return ForEachUserAt(*engine_, ReadOptions(), visit);
  }

 private:
  rocksdb::ReadOptions ReadOptions() const {
    rocksdb::ReadOptions options;
    options.snapshot = snapshot_;
    return options;
  }

  std::shared_ptr<Engine> engine_;
  // Borrowed from engine_->db, released at destruction. May be null where the
  // DB cannot take snapshots (read-only open): then reads see the open-time state,
  // which cannot change anyway.
  const rocksdb::Snapshot* snapshot_ = nullptr;
};

class RocksDbStore final : public StateStore {
 public:
  explicit RocksDbStore(std::shared_ptr<Engine> engine) : engine_(std::move(engine)) {}

  Status MultiGetUsers(const std::vector<std::string>& user_ids,
                       std::vector<std::optional<UserState>>* states) override {
    const size_t count = user_ids.size();
    states->assign(count, std::nullopt);
    if (count == 0) return Status::Ok();
    std::vector<rocksdb::Slice> keys;
    keys.reserve(count);
    for (const std::string& id : user_ids) keys.emplace_back(id);
    std::vector<rocksdb::PinnableSlice> values(count);
    std::vector<rocksdb::Status> statuses(count);
    engine_->db->MultiGet(rocksdb::ReadOptions(), engine_->users, count, keys.data(), values.data(),
                          statuses.data());
    for (size_t i = 0; i < count; ++i) {
      if (statuses[i].IsNotFound()) continue;
      if (!statuses[i].ok()) {
        return engine_->Error("multi-get user '" + user_ids[i] + "'", statuses[i]);
      }
      UserState state;
      Status decode_status = DecodeUser(*engine_, user_ids[i], View(values[i]), &state);
      if (!decode_status.ok()) return decode_status;
      (*states)[i] = std::move(state);
    }
    return Status::Ok();
  }

  Status GetUser(std::string_view user_id, std::optional<UserState>* state) override {
    return GetUserAt(*engine_, rocksdb::ReadOptions(), user_id, state);
  }

  Status GetOffset(std::string_view topic, int32_t partition,
                   std::optional<int64_t>* offset) override {
    offset->reset();
    std::string value;
    rocksdb::Status status = engine_->db->Get(rocksdb::ReadOptions(), engine_->offsets,
                                              OffsetKey(topic, partition), &value);
    const std::string what = "get offset " + std::string(topic) + "/" + std::to_string(partition);
    if (status.IsNotFound()) return Status::Ok();
    if (!status.ok()) return engine_->Error(what, status);
    if (value.size() != 8) {
      return Status::Error("state store " + engine_->dir + ": " + what + ": stored value has " +
                           std::to_string(value.size()) + " bytes, expected 8");
    }
    *offset = ReadOrdered64(value);
    return Status::Ok();
  }

  Status GetAllOffsets(std::vector<TopicPartitionOffset>* offsets) override {
    offsets->clear();
    std::unique_ptr<rocksdb::Iterator> it(
        engine_->db->NewIterator(rocksdb::ReadOptions(), engine_->offsets));
    for (it->SeekToFirst(); it->Valid(); it->Next()) {
      const std::string_view key = View(it->key());
      const std::string_view value = View(it->value());
      if (key.size() < 5 || key[key.size() - 5] != '\0' || value.size() != 8) {
        return Status::Error("state store " + engine_->dir + ": scan offsets: malformed entry (" +
                             std::to_string(key.size()) + "-byte key, " +
                             std::to_string(value.size()) + "-byte value)");
      }
      offsets->push_back({std::string(key.substr(0, key.size() - 5)),
                          ReadOrdered32(key.substr(key.size() - 4)), ReadOrdered64(value)});
    }
    if (!it->status().ok()) return engine_->Error("scan offsets", it->status());
    return Status::Ok();
  }

  Status DueTimers(int32_t partition, int64_t up_to_ms, size_t limit,
                   std::vector<TimerEntry>* timers) override {
    timers->clear();
    if (limit == 0) return Status::Ok();
    std::string prefix;
    PutOrdered32(partition, &prefix);
    rocksdb::ReadOptions read_options;
    read_options.prefix_same_as_start = true;
    std::unique_ptr<rocksdb::Iterator> it(engine_->db->NewIterator(read_options, engine_->timers));
    for (it->Seek(prefix); it->Valid() && timers->size() < limit; it->Next()) {
      const std::string_view key = View(it->key());
      if (key.size() < 12 || key.substr(0, 4) != prefix) break;
      const int64_t due_ms = ReadOrdered64(key.substr(4, 8));
      if (due_ms > up_to_ms) break;
      timers->push_back({partition, due_ms, std::string(key.substr(12))});
    }
    if (!it->status().ok()) {
      return engine_->Error("scan timers of partition " + std::to_string(partition), it->status());
    }
    return Status::Ok();
  }

  Status GetMeta(std::string_view key, std::optional<std::string>* value) override {
    value->reset();
    std::string stored;
    rocksdb::Status status =
        engine_->db->Get(rocksdb::ReadOptions(), engine_->meta, ToSlice(key), &stored);
    if (status.IsNotFound()) return Status::Ok();
    if (!status.ok()) return engine_->Error("get meta '" + std::string(key) + "'", status);
    *value = std::move(stored);
    return Status::Ok();
  }

  Status SeenEventIds(const std::vector<EventIdEntry>& ids, std::vector<bool>* seen) override {
    const size_t count = ids.size();
    seen->assign(count, false);
    if (count == 0) return Status::Ok();
    std::vector<std::string> key_bytes;
    key_bytes.reserve(count);
    for (const auto& id : ids) key_bytes.push_back(EventIdKey(id));
    std::vector<rocksdb::Slice> keys(key_bytes.begin(), key_bytes.end());
    std::vector<rocksdb::PinnableSlice> values(count);
    std::vector<rocksdb::Status> statuses(count);
    // The only range deletions in this column family expire days that every
    // partition already refuses as too late (stream.dedup_retention_days), so
    // the answer for such an id never matters; ignoring them keeps the
    // memtable's bloom filter usable (RocksDB skips it while a memtable holds
    // a range tombstone), and almost every id looked up is new.
    rocksdb::ReadOptions read_options;
    read_options.ignore_range_deletions = true;
    engine_->db->MultiGet(read_options, engine_->event_ids, count, keys.data(), values.data(),
                          statuses.data());
    for (size_t i = 0; i < count; ++i) {
      if (statuses[i].IsNotFound()) continue;
      if (!statuses[i].ok()) return engine_->Error("multi-get event ids", statuses[i]);
      (*seen)[i] = true;
    }
    return Status::Ok();
  }

  Status Commit(const CommitBatch& batch) override {
    if (engine_->read_only) {
      return Status::Error("state store " + engine_->dir + ": commit: store is open read-only");
    }
    rocksdb::WriteBatch write_batch;
    std::string encoded;
    auto check = [&](const rocksdb::Status& status, std::string_view what) {
      return status.ok() ? Status::Ok() : engine_->Error("commit: " + std::string(what), status);
    };
    for (const CommitBatch::UserWrite& user : batch.users) {
      encoded.clear();
      Encode(user.state, &encoded);
      if (Status s = check(write_batch.Put(engine_->users, user.user_id, encoded), "put user");
          !s.ok()) {
        return s;
      }
    }
    for (const std::string& user_id : batch.deleted_users) {
      if (Status s = check(write_batch.Delete(engine_->users, user_id), "delete user"); !s.ok()) {
        return s;
      }
    }
    // Removals first, so a timer both removed and added in one batch stays.
    for (const TimerEntry& timer : batch.timers_removed) {
      if (Status s = check(write_batch.Delete(engine_->timers, TimerKey(timer)), "delete timer");
          !s.ok()) {
        return s;
      }
    }
    for (const TimerEntry& timer : batch.timers_added) {
      if (Status s = check(write_batch.Put(engine_->timers, TimerKey(timer), ""), "put timer");
          !s.ok()) {
        return s;
      }
    }
    for (const TopicPartitionOffset& offset : batch.offsets) {
      if (Status s =
              check(write_batch.Put(engine_->offsets, OffsetKey(offset.topic, offset.partition),
                                    OffsetValue(offset.offset)),
                    "put offset");
          !s.ok()) {
        return s;
      }
    }
    if (batch.event_ids_expire_before_day != INT32_MIN) {
      std::string begin, end;
      PutOrdered32(INT32_MIN, &begin);
      PutOrdered32(batch.event_ids_expire_before_day, &end);
      if (Status s =
              check(write_batch.DeleteRange(engine_->event_ids, begin, end), "expire event ids");
          !s.ok()) {
        return s;
      }
    }
    for (const EventIdEntry& id : batch.event_ids_added) {
      if (Status s = check(write_batch.Put(engine_->event_ids, EventIdKey(id), ""), "put event id");
          !s.ok()) {
        return s;
      }
    }
    for (const auto& [key, value] : batch.meta) {
      if (Status s = check(write_batch.Put(engine_->meta, key, value), "put meta"); !s.ok()) {
        return s;
      }
    }
    if (write_batch.Count() == 0) return Status::Ok();
    rocksdb::WriteOptions write_options;
    write_options.sync = Tuning::kSyncCommits;
    write_options.disableWAL = false;
    rocksdb::Status status = engine_->db->Write(write_options, &write_batch);
    if (!status.ok()) {
      engine_->write_failed.store(true);
      Status error = engine_->Error("commit of " + std::to_string(batch.users.size()) + " users, " +
                                        std::to_string(batch.offsets.size()) + " offsets",
                                    status);
      error.message += status.IsNoSpace() || status.IsIOError()
                           ? " (the store stops here; every earlier commit is on disk: free space "
                             "or fix the device, and the next start resumes from the last commit)"
                           : "";
      return error;
    }
    return Status::Ok();
  }

  std::unique_ptr<StateSnapshot> Snapshot() override {
    return std::make_unique<RocksDbSnapshot>(engine_);
  }

  uint64_t ApproximateBytes() override {
    uint64_t total = 0;
    uint64_t sst_bytes = 0;
    if (engine_->db->GetAggregatedIntProperty(rocksdb::DB::Properties::kTotalSstFilesSize,
                                              &sst_bytes)) {
      total += sst_bytes;
    }
    rocksdb::VectorLogPtr wal_files;
    if (engine_->db->GetSortedWalFiles(wal_files).ok()) {
      for (const auto& file : wal_files) total += file->SizeFileBytes();
    }
    return total;
  }

  uint64_t ApproximateUsers() override {
    uint64_t keys = 0;
    if (!engine_->db->GetIntProperty(engine_->users, rocksdb::DB::Properties::kEstimateNumKeys,
                                     &keys)) {
      return 0;
    }
    return keys;
  }

 private:
  std::shared_ptr<Engine> engine_;
};

// Checks (and on a fresh read-write store writes) the schema version.
Status CheckSchemaVersion(Engine& engine) {
  std::string stored;
  rocksdb::Status status =
      engine.db->Get(rocksdb::ReadOptions(), engine.meta, ToSlice(kMetaSchemaVersionKey), &stored);
  if (status.IsNotFound()) {
    if (engine.read_only) return Status::Ok();
    rocksdb::WriteOptions write_options;
    write_options.sync = true;
    status = engine.db->Put(write_options, engine.meta, ToSlice(kMetaSchemaVersionKey),
                            std::to_string(kStateSchemaVersion));
    return status.ok() ? Status::Ok() : engine.Error("write schema version", status);
  }
  if (!status.ok()) return engine.Error("read schema version", status);
  int version = 0;
  const auto [end, parse_error] =
      std::from_chars(stored.data(), stored.data() + stored.size(), version);
  if (parse_error != std::errc() || end != stored.data() + stored.size() || version < 1) {
    return Status::Error("state store " + engine.dir + ": meta '" +
                         std::string(kMetaSchemaVersionKey) + "' holds '" + stored +
                         "', not a schema version");
  }
  if (version > kStateSchemaVersion) {
    return Status::Error("state store " + engine.dir + ": schema version " +
                         std::to_string(version) + " is newer than this build supports (" +
                         std::to_string(kStateSchemaVersion) +
                         "); run the clvstream version that wrote it, or point state.dir at a "
                         "fresh directory and let the service rebuild from Kafka");
  }
  return Status::Ok();
}

Status OpenStore(const config::StateOptions& options, bool read_only,
                 std::unique_ptr<StateStore>* store) {
  auto engine = std::make_shared<Engine>();
  engine->dir = options.dir;
  engine->read_only = read_only;
  const char* mode = read_only ? "open read-only" : "open";
  if (options.dir.empty())
    return Status::Error("state store: " + std::string(mode) + ": state.dir is empty");
  if (options.block_cache_bytes < 0) {
    return Status::Error("state store " + options.dir + ": " + mode +
                         ": state.block_cache_bytes is negative");
  }

  const rocksdb::DBOptions db_options = MakeDbOptions(read_only, options.dir);
  std::vector<std::string> existing;
  // A directory without a CURRENT file holds no store yet: asking RocksDB for
  // its column families would only log a misleading "NotFound" error.
  std::error_code no_error;
  const bool has_store = std::filesystem::exists(options.dir + "/CURRENT", no_error);
  rocksdb::Status status = rocksdb::Status::NotFound(options.dir + "/CURRENT", "no such file");
  if (has_store) status = rocksdb::DB::ListColumnFamilies(db_options, options.dir, &existing);
  if (!status.ok()) {
    if (read_only) {
      return Status::Error("state store " + options.dir +
                           ": open read-only: no clvstream state here (" + status.ToString() + ")");
    }
    existing.clear();  // a new store
  }
  const std::vector<std::string_view> ours = {kDefaultColumnFamily, kUsersColumnFamily,
                                              kOffsetsColumnFamily, kTimersColumnFamily,
                                              kMetaColumnFamily,    kEventIdsColumnFamily};
  std::vector<std::string> names(existing);
  for (std::string_view name : ours) {
    if (std::find(names.begin(), names.end(), name) == names.end()) {
      if (read_only) {
        return Status::Error("state store " + options.dir +
                             ": open read-only: not a clvstream state directory (column family '" +
                             std::string(name) + "' missing)");
      }
      names.emplace_back(name);
    }
  }

  auto cache = rocksdb::NewLRUCache(static_cast<size_t>(options.block_cache_bytes));
  std::vector<rocksdb::ColumnFamilyDescriptor> descriptors;
  descriptors.reserve(names.size());
  for (const std::string& name : names) {
    descriptors.emplace_back(name, MakeColumnFamilyOptions(name, cache));
  }
  rocksdb::DB* raw_db = nullptr;
  if (read_only) {
    status = rocksdb::DB::OpenForReadOnly(db_options, options.dir, descriptors, &engine->handles,
                                          &raw_db);
  } else {
    // RocksDB creates a missing directory too, but logs a misleading
    // "NotFound" error on the way; creating it first keeps the log clean (a
    // failure here shows as the Open error below).
    if (!has_store) std::filesystem::create_directories(options.dir, no_error);
    status = rocksdb::DB::Open(db_options, options.dir, descriptors, &engine->handles, &raw_db);
  }
  engine->db.reset(raw_db);
  if (!status.ok()) {
    std::string message = "state store " + options.dir + ": " + mode + ": " + status.ToString();
    if (status.IsIOError() && status.ToString().find("lock") != std::string::npos) {
      message += " (is another clvstream process using this state.dir?)";
    }
    return Status::Error(std::move(message));
  }
  for (size_t i = 0; i < names.size(); ++i) {
    rocksdb::ColumnFamilyHandle* handle = engine->handles[i];
    if (names[i] == kUsersColumnFamily) engine->users = handle;
    if (names[i] == kOffsetsColumnFamily) engine->offsets = handle;
    if (names[i] == kTimersColumnFamily) engine->timers = handle;
    if (names[i] == kMetaColumnFamily) engine->meta = handle;
    if (names[i] == kEventIdsColumnFamily) engine->event_ids = handle;
  }
  Status schema_status = CheckSchemaVersion(*engine);
  if (!schema_status.ok()) return schema_status;
  *store = std::make_unique<RocksDbStore>(std::move(engine));
  return Status::Ok();
}

}  // namespace

Status OpenRocksDbStore(const config::StateOptions& options, std::unique_ptr<StateStore>* store) {
  return OpenStore(options, /*read_only=*/false, store);
}

Status OpenRocksDbStoreReadOnly(const config::StateOptions& options,
                                std::unique_ptr<StateStore>* store) {
  return OpenStore(options, /*read_only=*/true, store);
}

}  // namespace clv::state
