#include "stream/changelog.h"

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>

#include "common/log.h"

namespace clv::stream {

using connectors::Status;

namespace {

using Clock = std::chrono::steady_clock;

constexpr char kUserTag = 'U';
constexpr char kMarkerTag = 'M';
constexpr char kEventIdsTag = 'I';
constexpr char kVersion = 1;
// Users applied per WriteBatch while restoring.
constexpr size_t kRestoreChunkUsers = 10000;
constexpr int kRestoreTimeoutMs = 600000;
constexpr int kProgressLogSeconds = 5;

template <typename T>
void Put(std::string* out, T value) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));  // little-endian hosts only (as the store)
  out->append(bytes, sizeof(T));
}
void PutString(std::string* out, std::string_view text) {
  Put<uint16_t>(out, static_cast<uint16_t>(text.size()));
  out->append(text);
}

// Reads from the front of `in`; false when it is too short.
template <typename T>
bool Get(std::string_view* in, T* value) {
  if (in->size() < sizeof(T)) return false;
  std::memcpy(value, in->data(), sizeof(T));
  in->remove_prefix(sizeof(T));
  return true;
}
bool GetString(std::string_view* in, std::string* text) {
  uint16_t size = 0;
  if (!Get(in, &size) || in->size() < size) return false;
  text->assign(in->data(), size);
  in->remove_prefix(size);
  return true;
}

bool GetHeader(std::string_view* in, char tag, std::string* error) {
  if (in->size() < 2 || (*in)[0] != tag) {
    *error = std::string("not a changelog ") +
             (tag == kUserTag     ? "user"
              : tag == kMarkerTag ? "marker"
                                  : "event-id") +
             " record";
    return false;
  }
  if ((*in)[1] != kVersion) {
    *error = "changelog record version " + std::to_string(static_cast<int>((*in)[1])) +
             " is newer than this build reads (" + std::to_string(kVersion) + ")";
    return false;
  }
  in->remove_prefix(2);
  return true;
}

class KafkaChangelog final : public ChangelogIo {
 public:
  KafkaChangelog(connectors::ClientOptions options, std::string topic,
                 std::unique_ptr<connectors::PartitionLogWriter> writer)
      : options_(std::move(options)), topic_(std::move(topic)), writer_(std::move(writer)) {}
  const std::string& topic() const override { return topic_; }
  Status Send(int32_t partition, std::string_view key, const std::string* value) override {
    return writer_->Send(partition, key, value);
  }
  Status Flush(int timeout_ms, std::map<int32_t, int64_t>* last_offsets, bool* timed_out) override {
    return writer_->Flush(timeout_ms, last_offsets, timed_out);
  }
  void Abandon() override { writer_->Abandon(); }
  uint64_t Purge() override { return writer_->Purge(); }
  Status Read(int32_t partition, int64_t from,
              const std::function<Status(const connectors::LogRecord&)>& visit, int64_t* end,
              int64_t* log_start) override {
    return connectors::ReadPartitionToEnd(options_, topic_, partition, from, visit, end, log_start,
                                          kRestoreTimeoutMs);
  }

 private:
  connectors::ClientOptions options_;
  std::string topic_;
  std::unique_ptr<connectors::PartitionLogWriter> writer_;
};

}  // namespace

std::string StreamTimeMetaKey(int32_t partition) {
  return "stream_time/" + std::to_string(partition);
}
std::string InputTimeMetaKey(const std::string& topic, int32_t partition) {
  return "input_time/" + topic + "/" + std::to_string(partition);
}
std::string ChangelogCheckpointKey(int32_t partition) {
  return "changelog_next/" + std::to_string(partition);
}
std::string ChangelogEventIdRecordsKey(int32_t partition) {
  return "changelog_event_id_records/" + std::to_string(partition);
}

std::string ChangelogEventIdsKey(int32_t day, uint32_t sequence) {
  std::string key(kEventIdsKeyPrefix);
  Put<int32_t>(&key, day);
  Put<uint32_t>(&key, sequence);
  return key;
}

bool ParseChangelogEventIdsKey(std::string_view key, int32_t* day, uint32_t* sequence) {
  if (key.size() != kEventIdsKeyPrefix.size() + 8 || !key.starts_with(kEventIdsKeyPrefix)) {
    return false;
  }
  key.remove_prefix(kEventIdsKeyPrefix.size());
  return Get(&key, day) && Get(&key, sequence);
}

std::string EncodeChangelogEventIds(const std::vector<uint64_t>& hashes) {
  std::string out;
  out.reserve(6 + hashes.size() * 8);
  out.push_back(kEventIdsTag);
  out.push_back(kVersion);
  Put<uint32_t>(&out, static_cast<uint32_t>(hashes.size()));
  for (uint64_t hash : hashes) Put<uint64_t>(&out, hash);
  return out;
}

bool DecodeChangelogEventIds(std::string_view bytes, std::vector<uint64_t>* hashes,
                             std::string* error) {
  if (!GetHeader(&bytes, kEventIdsTag, error)) return false;
  uint32_t count = 0;
  if (!Get(&bytes, &count) || bytes.size() != static_cast<size_t>(count) * 8) {
    *error = "changelog event-id record: " + std::to_string(bytes.size()) +
             " bytes do not hold the ids it counts";
    return false;
  }
  hashes->resize(count);
  for (uint32_t i = 0; i < count; ++i) Get(&bytes, &(*hashes)[i]);
  return true;
}

namespace {
void PutCounts(std::string* out, const std::map<int32_t, uint32_t>& counts) {
  Put<uint32_t>(out, static_cast<uint32_t>(counts.size()));
  for (const auto& [day, count] : counts) {
    Put<int32_t>(out, day);
    Put<uint32_t>(out, count);
  }
}
bool GetCounts(std::string_view* in, std::map<int32_t, uint32_t>* counts) {
  uint32_t n = 0;
  if (!Get(in, &n)) return false;
  counts->clear();
  for (uint32_t i = 0; i < n; ++i) {
    int32_t day = 0;
    uint32_t count = 0;
    if (!Get(in, &day) || !Get(in, &count)) return false;
    (*counts)[day] = count;
  }
  return true;
}
}  // namespace

std::string EncodeEventIdRecordCounts(const std::map<int32_t, uint32_t>& counts) {
  std::string out;
  PutCounts(&out, counts);
  return out;
}

bool DecodeEventIdRecordCounts(std::string_view bytes, std::map<int32_t, uint32_t>* counts) {
  return GetCounts(&bytes, counts) && bytes.empty();
}

std::string EncodeChangelogUser(const ChangelogUser& user) {
  std::string out;
  out.push_back(kUserTag);
  out.push_back(kVersion);
  Put<uint32_t>(&out, static_cast<uint32_t>(user.positions.size()));
  for (const auto& [topic, offset] : user.positions) {
    PutString(&out, topic);
    Put<int64_t>(&out, offset);
  }
  state::Encode(user.state, &out);
  return out;
}

bool DecodeChangelogUser(std::string_view bytes, ChangelogUser* user, std::string* error) {
  if (!GetHeader(&bytes, kUserTag, error)) return false;
  uint32_t count = 0;
  if (!Get(&bytes, &count)) {
    *error = "changelog user record: truncated";
    return false;
  }
  user->positions.clear();
  for (uint32_t i = 0; i < count; ++i) {
    std::string topic;
    int64_t offset = 0;
    if (!GetString(&bytes, &topic) || !Get(&bytes, &offset)) {
      *error = "changelog user record: truncated positions";
      return false;
    }
    user->positions[topic] = offset;
  }
  return state::Decode(bytes, &user->state, error);
}

std::string EncodeChangelogMarker(const ChangelogMarker& marker) {
  std::string out;
  out.push_back(kMarkerTag);
  out.push_back(kVersion);
  PutString(&out, marker.writer);
  Put<int64_t>(&out, marker.stream_time_ms);
  Put<uint32_t>(&out, static_cast<uint32_t>(marker.inputs.size()));
  for (const auto& input : marker.inputs) {
    PutString(&out, input.topic);
    Put<int64_t>(&out, input.next_offset);
    Put<int64_t>(&out, input.input_time_ms);
  }
  PutCounts(&out, marker.event_id_records);
  return out;
}

bool DecodeChangelogMarker(std::string_view bytes, ChangelogMarker* marker, std::string* error) {
  if (!GetHeader(&bytes, kMarkerTag, error)) return false;
  uint32_t count = 0;
  if (!GetString(&bytes, &marker->writer) || !Get(&bytes, &marker->stream_time_ms) ||
      !Get(&bytes, &count)) {
    *error = "changelog marker: truncated";
    return false;
  }
  marker->inputs.clear();
  for (uint32_t i = 0; i < count; ++i) {
    ChangelogMarker::Input input;
    if (!GetString(&bytes, &input.topic) || !Get(&bytes, &input.next_offset) ||
        !Get(&bytes, &input.input_time_ms)) {
      *error = "changelog marker: truncated inputs";
      return false;
    }
    marker->inputs.push_back(std::move(input));
  }
  marker->event_id_records.clear();
  if (!bytes.empty() && !GetCounts(&bytes, &marker->event_id_records)) {
    *error = "changelog marker: truncated event-id record counts";
    return false;
  }
  if (!bytes.empty()) {
    *error = "changelog marker: " + std::to_string(bytes.size()) + " trailing bytes";
    return false;
  }
  return true;
}

Status OpenKafkaChangelog(const connectors::ClientOptions& options, const std::string& topic,
                          std::unique_ptr<ChangelogIo>* io) {
  std::unique_ptr<connectors::PartitionLogWriter> writer;
  auto status = connectors::PartitionLogWriter::Create(options, topic, &writer);
  if (!status.ok()) return status;
  *io = std::make_unique<KafkaChangelog>(options, topic, std::move(writer));
  return Status::Ok();
}

std::string ChangelogTopicName(const config::Config& config) {
  return config.state.changelog_topic.empty() ? config.kafka.group_id + "-state-changelog"
                                              : config.state.changelog_topic;
}

Status EnsureChangelogTopic(const config::Config& config) {
  const auto client = connectors::ClientOptionsFrom(config.kafka);
  const std::string topic = ChangelogTopicName(config);
  int expected = 0;
  for (const auto& input : config.kafka.input_topics) {
    int partitions = 0;
    auto status = connectors::PartitionCount(client, input, &partitions);
    if (!status.ok()) {
      return Status::Error("state changelog: partition count of input topic '" + input +
                           "': " + status.message);
    }
    expected = std::max(expected, partitions);
  }
  if (expected <= 0) {
    return Status::Error("state changelog: the input topics have no partitions yet");
  }
  // Created first: a metadata request naming a missing topic makes the
  // embedded broker create it with its fixed 4 partitions. An existing topic
  // is fine.
  auto created =
      connectors::EnsureTopics(client, {topic}, expected, -1, {{"cleanup.policy", "compact"}});
  int found = 0;
  if (!created.ok()) {
    // Not created (e.g. `clv broker` in another process, which cannot): it
    // may exist already; the metadata of every topic does not create it.
    std::map<std::string, int> topics;
    if (connectors::ListTopics(client, &topics, 10000).ok() && topics.count(topic)) {
      found = topics.at(topic);
    }
  }
  for (int i = 0; i < 50 && created.ok(); ++i) {
    if (connectors::PartitionCount(client, topic, &found).ok() && found > 0) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (found <= 0) {
    return Status::Error("state changelog: " +
                         (created.ok() ? "topic '" + topic + "' not in the metadata after creation"
                                       : created.message));
  }
  if (found != expected) {
    return Status::Error("state changelog topic '" + topic + "' has " + std::to_string(found) +
                         " partition(s), expected " + std::to_string(expected) +
                         " (the input topics' partition count): delete it or name another "
                         "with state.changelog_topic");
  }
  std::optional<std::string> policy;
  auto status = connectors::DescribeTopicConfig(client, topic, "cleanup.policy", &policy);
  if (!status.ok()) {
    Log(LogLevel::kWarn, "state changelog: cleanup.policy not checked",
        {{"topic", topic}, {"error", status.message}});
  } else if (policy && policy->find("compact") == std::string::npos) {
    return Status::Error("state changelog topic '" + topic + "' has cleanup.policy=" + *policy +
                         ", expected compact (retention would delete users' state): set it with "
                         "kafka-configs.sh --alter --add-config cleanup.policy=compact, or name "
                         "another topic with state.changelog_topic");
  }
  return Status::Ok();
}

Status RestorePartition(ChangelogIo& io, state::StateStore& store, int32_t partition,
                        RestoredPartition* restored, RestoreProgress* stats,
                        const std::function<void(const RestoreProgress&)>& progress,
                        const RestoredUserObserver& on_user) {
  const auto started = Clock::now();
  auto last_progress = started;
  std::optional<std::string> checkpoint;
  auto status = store.GetMeta(ChangelogCheckpointKey(partition), &checkpoint);
  if (!status.ok()) return Status::Error("reading the changelog checkpoint: " + status.message);
  RestoreProgress result;
  result.from = checkpoint ? std::stoll(*checkpoint) : 0;

  // The latest record per user of the chunk (nullopt: tombstone), in order.
  std::map<std::string, std::optional<state::UserState>> chunk;
  // Users written after the last marker read so far: their folded positions.
  std::unordered_map<std::string, std::map<std::string, int64_t>> since_marker;
  std::optional<ChangelogMarker> marker;
  int64_t marker_offset = -1;
  // Event ids up to the last marker read, for the next WriteBatch; those of
  // records after it are dropped at the end (their events are replayed, and
  // skipped or folded again, which remembers their ids again).
  std::vector<state::EventIdEntry> event_ids;
  size_t event_ids_confirmed = 0;
  // Moves the confirmed ids into `batch` (the chunk's WriteBatch, or the last).
  auto take_confirmed_ids = [&](state::CommitBatch* batch) {
    const auto confirmed = event_ids.begin() + static_cast<std::ptrdiff_t>(event_ids_confirmed);
    batch->event_ids_added.assign(event_ids.begin(), confirmed);
    result.event_ids += static_cast<int64_t>(event_ids_confirmed);
    event_ids.erase(event_ids.begin(), confirmed);
    event_ids_confirmed = 0;
  };

  auto apply_chunk = [&](state::CommitBatch* batch) -> Status {
    std::vector<std::string> ids;
    ids.reserve(chunk.size());
    for (const auto& [id, s] : chunk) ids.push_back(id);
    std::vector<std::optional<state::UserState>> old;
    auto read = store.MultiGetUsers(ids, &old);
    if (!read.ok()) return Status::Error("restoring: reading local users: " + read.message);
    size_t i = 0;
    for (auto& [id, s] : chunk) {
      const auto& before = old[i++];
      if (on_user) on_user(id, before, s);
      if (before && before->next_timer_ms != 0) {
        batch->timers_removed.push_back({before->partition, before->next_timer_ms, id});
      }
      if (s) {
        if (s->next_timer_ms != 0)
          batch->timers_added.push_back({s->partition, s->next_timer_ms, id});
        batch->users.push_back({id, std::move(*s)});
      } else {
        batch->deleted_users.push_back(id);
      }
      restored->users.push_back(id);
    }
    result.users += static_cast<int64_t>(chunk.size());
    chunk.clear();
    return Status::Ok();
  };

  int64_t end = 0;
  int64_t log_start = 0;
  const std::function<Status(const connectors::LogRecord&)> visit =
      [&](const connectors::LogRecord& record) -> Status {
    ++result.records;
    result.bytes +=
        static_cast<int64_t>(record.key.size() + (record.value ? record.value->size() : 0));
    std::string error;
    int32_t day = 0;
    uint32_t sequence = 0;
    if (ParseChangelogEventIdsKey(record.key, &day, &sequence)) {
      // A tombstone: a day past the retention (its ids expire locally too).
      if (!record.value) return Status::Ok();
      std::vector<uint64_t> hashes;
      if (!DecodeChangelogEventIds(*record.value, &hashes, &error)) {
        return Status::Error("changelog " + io.topic() + " [" + std::to_string(partition) +
                             "] offset " + std::to_string(record.offset) + ": " + error);
      }
      for (uint64_t hash : hashes) event_ids.push_back({day, hash});
      return Status::Ok();
    }
    if (record.key == kMarkerKey) {
      ChangelogMarker m;
      if (!record.value || !DecodeChangelogMarker(*record.value, &m, &error)) {
        return Status::Error("changelog " + io.topic() + " [" + std::to_string(partition) +
                             "] offset " + std::to_string(record.offset) + ": " +
                             (record.value ? error : "marker without value"));
      }
      marker = std::move(m);
      marker_offset = record.offset;
      since_marker.clear();
      event_ids_confirmed = event_ids.size();
    } else if (!record.value) {
      chunk[std::string(record.key)] = std::nullopt;
      since_marker.erase(std::string(record.key));
    } else {
      ChangelogUser user;
      if (!DecodeChangelogUser(*record.value, &user, &error)) {
        return Status::Error("changelog " + io.topic() + " [" + std::to_string(partition) +
                             "] offset " + std::to_string(record.offset) + " (user '" +
                             std::string(record.key) + "'): " + error);
      }
      std::string id(record.key);
      since_marker[id] = std::move(user.positions);
      chunk[id] = std::move(user.state);
    }
    if (chunk.size() >= kRestoreChunkUsers) {
      state::CommitBatch batch;
      take_confirmed_ids(&batch);
      auto applied = apply_chunk(&batch);
      if (!applied.ok()) return applied;
      auto committed = store.Commit(batch);
      if (!committed.ok()) return Status::Error("restoring: " + committed.message);
    }
    if (progress && Clock::now() - last_progress >= std::chrono::seconds(kProgressLogSeconds)) {
      last_progress = Clock::now();
      result.seconds = std::chrono::duration<double>(last_progress - started).count();
      progress(result);
    }
    return Status::Ok();
  };
  status = io.Read(partition, result.from, visit, &end, &log_start);
  if (status.ok() && result.from > end) {
    // The checkpoint is past the log end: the topic was recreated.
    Log(LogLevel::kWarn, "state changelog checkpoint past the log end: reading it from its start",
        {{"topic", io.topic()},
         {"partition", partition},
         {"checkpoint", result.from},
         {"log_end", end}});
    result.from = 0;
    status = io.Read(partition, 0, visit, &end, &log_start);
  }
  if (!status.ok()) return status;
  result.end = end;
  result.marker = marker.has_value();

  state::CommitBatch batch;
  status = apply_chunk(&batch);
  if (!status.ok()) return status;
  take_confirmed_ids(&batch);
  // The horizon: where the last commit of the log left each input topic.
  std::map<std::string, int64_t> horizon;
  if (marker) {
    for (const auto& input : marker->inputs) {
      horizon[input.topic] = input.next_offset;
      batch.offsets.push_back({input.topic, partition, input.next_offset});
      if (input.input_time_ms > 0) {
        batch.meta.emplace_back(InputTimeMetaKey(input.topic, partition),
                                std::to_string(input.input_time_ms));
      }
    }
    batch.meta.emplace_back(StreamTimeMetaKey(partition), std::to_string(marker->stream_time_ms));
    // Orphans after the marker are read again by the next restore.
    batch.meta.emplace_back(ChangelogCheckpointKey(partition), std::to_string(marker_offset + 1));
    batch.meta.emplace_back(ChangelogEventIdRecordsKey(partition),
                            EncodeEventIdRecordCounts(marker->event_id_records));
    restored->event_id_records = marker->event_id_records;
  } else {
    std::optional<std::string> counts;
    status = store.GetMeta(ChangelogEventIdRecordsKey(partition), &counts);
    if (!status.ok()) return Status::Error("restoring: " + status.message);
    if (counts && !DecodeEventIdRecordCounts(*counts, &restored->event_id_records)) {
      return Status::Error("restoring: the stored event-id record counts of partition " +
                           std::to_string(partition) + " are damaged");
    }
  }
  for (const auto& [user, positions] : since_marker) {
    for (const auto& [topic, position] : positions) {
      int64_t next = 0;
      auto h = horizon.find(topic);
      if (h != horizon.end()) {
        next = h->second;
      } else {
        std::optional<int64_t> stored;
        auto read = store.GetOffset(topic, partition, &stored);
        if (!read.ok()) return Status::Error("restoring: " + read.message);
        next = stored.value_or(0);
      }
      if (position >= next) restored->skip[topic][user] = position;
    }
  }
  status = store.Commit(batch);
  if (!status.ok()) return Status::Error("restoring: " + status.message);
  result.seconds = std::chrono::duration<double>(Clock::now() - started).count();
  *stats = result;
  return Status::Ok();
}

}  // namespace clv::stream
