// The state changelog (stream/changelog.h) on real components: RocksDB in a
// temp dir, the embedded broker in this process holding the changelog topic,
// the shipped baseline scorer; scores go to a fake sink. What a user of a
// group of instances notices:
//  * a partition whose input before the stored offset is gone (retention)
//    moves to an instance with an empty store: it restores the partition's
//    users, offsets and stream time from the changelog and ends with every
//    user's state and every (user, seq) score equal to one uninterrupted run;
//  * an instance that gets its own partitions back reads only what was
//    written since its checkpoint;
//  * a crash after a commit's user records reached the changelog but before
//    its marker and its local write: no event is folded twice, none lost;
//  * the dedup index follows the partition: an upstream re-send of an event
//    older than its user's recent ids is still a duplicate on the new owner,
//    and the event-id records of days past the retention get tombstones;
//  * a changelog topic with the wrong partition count stops the start.
#include <algorithm>
#include <array>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "config/config.h"
#include "connectors/kafka.h"
#include "models/scorer.h"
#include "state/state_store.h"
#include "stream/changelog.h"
#include "stream/live_views.h"
#include "stream/processor.h"
#include "tests/fake_sink.h"
#include "tests/test_support.h"

namespace clv::stream {
namespace {

constexpr int kPartitions = 4;
constexpr int64_t kDayMs = 86400000;
constexpr int64_t kStartMs = 1735689600000;  // 2025-01-01

// A generated stream: user u on partition u % kPartitions, events in time order.
std::vector<connectors::Message> Stream(int users, int events) {
  std::vector<connectors::Message> out;
  std::map<int32_t, int64_t> next_offset;
  for (int i = 0; i < events; ++i) {
    const int user = (i * 7919) % users;
    const auto partition = static_cast<int32_t>(user % kPartitions);
    connectors::Message m;
    m.topic = "events";
    m.partition = partition;
    m.offset = next_offset[partition]++;
    m.key = "u" + std::to_string(user);
    const int64_t ts = kStartMs + static_cast<int64_t>(i) * (kDayMs / 20);
    const bool purchase = (i % 3) == 0;
    m.value = R"({"event_id":"e)" + std::to_string(i) + R"(","user_id":")" + m.key +
              R"(","type":")" + (purchase ? "purchase" : "page_view") + R"(","ts":)" +
              std::to_string(ts) +
              (purchase ? R"(,"amount":)" + std::to_string(10 + i % 40) + "}" : "}");
    m.timestamp_ms = ts;
    out.push_back(std::move(m));
  }
  return out;
}

using Scores = std::map<std::pair<std::string, uint64_t>, std::string>;
using Users = std::map<std::string, state::UserState>;

class Changelog : public ::testing::Test {
 protected:
  void SetUp() override {
    auto status = connectors::EmbeddedBroker::Start(1, kPartitions, &broker_);
    ASSERT_TRUE(status.ok()) << status.message;
    config_.kafka.bootstrap_servers = broker_->bootstrap_servers();
    config_.kafka.input_topics = {"events"};
    config_.stream.emit = "per_event";
    ASSERT_TRUE(broker_->CreateTopic("events", kPartitions).ok());
    ASSERT_TRUE(broker_->CreateTopic(ChangelogTopicName(config_), kPartitions).ok());
    std::string error;
    scorer_ = models::LoadScorer(config_.model, &error);
    ASSERT_TRUE(scorer_) << error;
    stream_ = Stream(300, 3000);
  }

  // One instance: its store, sink, changelog and processor.
  struct Instance {
    std::unique_ptr<state::StateStore> store;
    testing::FakeSink sink;
    std::unique_ptr<ChangelogIo> changelog;
    std::unique_ptr<Processor> processor;
    std::map<connectors::TopicPartition, int64_t> start;
  };

  // With `live`: the service's live views, seeded from the store and fed by
  // the processor (scores and restores), as stream/service.cpp wires them.
  std::unique_ptr<Instance> Open(const std::string& dir, bool changelog,
                                 std::unique_ptr<ChangelogIo> io = nullptr,
                                 LiveViews* live = nullptr) {
    auto instance = std::make_unique<Instance>();
    config::Config config = config_;
    config.state.dir = (dir_.path() / dir).string();
    auto status = state::OpenRocksDbStore(config.state, &instance->store);
    EXPECT_TRUE(status.ok()) << status.message;
    instance->sink.AckAll();
    instance->processor =
        std::make_unique<Processor>(config, *instance->store, *scorer_, instance->sink);
    if (changelog) {
      if (io == nullptr) {
        status = OpenKafkaChangelog(connectors::ClientOptionsFrom(config.kafka),
                                    ChangelogTopicName(config), &io);
        EXPECT_TRUE(status.ok()) << status.message;
      }
      instance->changelog = std::move(io);
      instance->processor->set_changelog(instance->changelog.get());
    }
    if (live != nullptr) {
      for (const auto& [id, s] : UsersOf(*instance->store)) live->Seed(id, s);
      live->FlushPending();
      instance->processor->set_user_observer(
          [live](const UserScoreChange& change) { live->OnUserScored(change); });
      instance->processor->set_restore_observer(
          [live](const std::string& id, const std::optional<state::UserState>& before,
                 const std::optional<state::UserState>& after) {
            live->OnRestored(id, before, after);
          });
    }
    std::vector<connectors::TopicPartition> tps;
    for (int32_t p = 0; p < kPartitions; ++p) {
      connectors::TopicPartition tp{"events", p};
      instance->start[tp] = instance->processor->StartOffset(tp).value_or(0);
      tps.push_back(tp);
    }
    EXPECT_EQ(instance->processor->callback_error(), "");
    instance->processor->OnAssigned(tps);
    return instance;
  }

  // Feeds the events of the stream from the instance's start offsets (what
  // is before them is gone, as after retention) with offsets below `end`
  // of their partition (all: INT64_MAX), in batches of 64; commits.
  static connectors::Status Feed(Instance& instance, const std::vector<connectors::Message>& all,
                                 const std::map<int32_t, int64_t>& end, bool commit = true) {
    std::vector<connectors::Message> batch;
    auto flush = [&]() -> connectors::Status {
      auto status = instance.processor->ProcessBatch(batch);
      batch.clear();
      if (!status.ok()) return status;
      return instance.processor->Seal();
    };
    for (const auto& m : all) {
      if (m.offset < instance.start.at({m.topic, m.partition})) continue;
      auto e = end.find(m.partition);
      if (e != end.end() && m.offset >= e->second) continue;
      batch.push_back(m);
      if (batch.size() == 64) {
        auto status = flush();
        if (!status.ok()) return status;
      }
    }
    if (!batch.empty()) {
      auto status = flush();
      if (!status.ok()) return status;
    }
    return commit ? instance.processor->Commit() : connectors::Status::Ok();
  }

  static Users UsersOf(state::StateStore& store) {
    Users users;
    auto status =
        store.Snapshot()->ForEachUser([&](std::string_view id, const state::UserState& s) {
          users[std::string(id)] = s;
          return true;
        });
    EXPECT_TRUE(status.ok()) << status.message;
    return users;
  }

  // (user, seq) -> score bytes; a (user, seq) sent twice must be the same.
  static void AddScores(const testing::FakeSink& sink, Scores* scores) {
    for (const auto& value : sink.Values("scores")) {
      auto json = nlohmann::json::parse(value);
      auto key = std::make_pair(json["user_id"].get<std::string>(), json["seq"].get<uint64_t>());
      auto [it, inserted] = scores->emplace(key, value);
      EXPECT_TRUE(inserted || it->second == value) << key.first << " seq " << key.second;
    }
  }

  // One uninterrupted instance over the whole stream, without changelog.
  void Reference(Users* users, Scores* scores) {
    auto reference = Open("reference", false);
    auto status = Feed(*reference, stream_, {});
    ASSERT_TRUE(status.ok()) << status.message;
    *users = UsersOf(*reference->store);
    AddScores(reference->sink, scores);
  }

  std::map<int32_t, int64_t> Full() const {
    std::map<int32_t, int64_t> counts;
    for (const auto& m : stream_) counts[m.partition] = m.offset + 1;
    return counts;
  }
  std::map<int32_t, int64_t> Half() const {
    auto counts = Full();
    for (auto& [p, n] : counts) n /= 2;
    return counts;
  }

  testing::TempDir dir_;
  std::unique_ptr<connectors::EmbeddedBroker> broker_;
  config::Config config_;
  std::unique_ptr<models::Scorer> scorer_;
  std::vector<connectors::Message> stream_;
};

TEST_F(Changelog, AMovedPartitionIsRestoredAndEndsEqualToOneUninterruptedRun) {
  Users expected_users;
  Scores expected_scores;
  Reference(&expected_users, &expected_scores);

  const auto half = Half();
  Scores scores;
  {
    auto first = Open("a", true);
    auto status = Feed(*first, stream_, half);
    ASSERT_TRUE(status.ok()) << status.message;
    AddScores(first->sink, &scores);
  }
  // Another instance, empty store; the first halves of the input are gone.
  auto second = Open("b", true);
  for (const auto& [p, n] : half) EXPECT_EQ(second->start.at({"events", p}), n) << p;
  EXPECT_GT(second->processor->counters().restored_users.load(), 0);
  auto status = Feed(*second, stream_, {});
  ASSERT_TRUE(status.ok()) << status.message;
  AddScores(second->sink, &scores);
  EXPECT_EQ(UsersOf(*second->store), expected_users);
  EXPECT_EQ(scores, expected_scores);

  // The first instance gets its partitions back: it catches up from its
  // checkpoint (the second instance's commits only), not from zero.
  const int64_t total_records = second->processor->counters().restored_records.load();
  second.reset();
  auto back = Open("a", true);
  const int64_t caught_up = back->processor->counters().restored_records.load();
  EXPECT_GT(caught_up, 0);
  int64_t log_records = 0;
  {
    auto reader = Open("count", true);
    log_records = reader->processor->counters().restored_records.load();
  }
  EXPECT_LT(caught_up, log_records);
  EXPECT_GT(total_records, 0);
  for (const auto& [p, n] : half) {
    EXPECT_EQ(back->start.at({"events", p}), Full().at(p)) << p;
  }
  EXPECT_EQ(UsersOf(*back->store), expected_users);
}

// The live views (users per stage, /top) of an instance equal what its store
// holds: every user once, at its stored stage and score.
void ExpectLiveViewsMatch(LiveViews& live, const Users& users, const std::string& when) {
  live.FlushPending();
  std::array<int64_t, LiveViews::kStages> stages{};
  for (const auto& [id, s] : users) ++stages[static_cast<size_t>(s.stage)];
  EXPECT_EQ(live.Stages(), stages) << when;
  EXPECT_EQ(live.Users(), static_cast<int64_t>(users.size())) << when;
  std::vector<std::pair<double, std::string>> truth;
  for (const auto& [id, s] : users) truth.emplace_back(s.clv, id);
  std::sort(truth.begin(), truth.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  const auto top = live.top().Top(20, TopBy::kClv);
  ASSERT_EQ(top.users.size(), std::min<size_t>(20, truth.size())) << when;
  for (size_t i = 0; i < top.users.size(); ++i) {
    EXPECT_EQ(top.users[i].user_id, truth[i].second) << when << ", rank " << i + 1;
    EXPECT_EQ(top.users[i].clv, truth[i].first) << when << ", rank " << i + 1;
    EXPECT_EQ(top.users[i].partition, users.at(top.users[i].user_id).partition) << when;
  }
}

TEST_F(Changelog, RestoredUsersReachTheLiveViewsCountedOnce) {
  const auto half = Half();
  {
    auto first = Open("a", true);
    auto status = Feed(*first, stream_, half);
    ASSERT_TRUE(status.ok()) << status.message;
  }
  {
    // An empty instance: /top and the stage counts know the moved users as
    // soon as they are restored, before any of their events is read.
    LiveViews live;
    auto second = Open("b", true, nullptr, &live);
    ASSERT_GT(second->processor->counters().restored_users.load(), 0);
    ExpectLiveViewsMatch(live, UsersOf(*second->store), "restored into an empty store");
    auto status = Feed(*second, stream_, {});
    ASSERT_TRUE(status.ok()) << status.message;
    ExpectLiveViewsMatch(live, UsersOf(*second->store), "after the rest of the stream");
  }
  // The first instance, seeded from its older local state, catches up: each
  // restored user replaces its older self (no user counted twice).
  LiveViews live;
  auto back = Open("a", true, nullptr, &live);
  ASSERT_GT(back->processor->counters().restored_users.load(), 0);
  ExpectLiveViewsMatch(live, UsersOf(*back->store), "caught up over an older local state");
}

// Passes the records to the Kafka changelog; when armed, a marker makes it
// send what came before it, wait for it, and fail (a crash between a
// commit's user records and its marker).
class CrashBeforeMarker final : public ChangelogIo {
 public:
  explicit CrashBeforeMarker(std::unique_ptr<ChangelogIo> inner) : inner_(std::move(inner)) {}
  const std::string& topic() const override { return inner_->topic(); }
  connectors::Status Send(int32_t partition, std::string_view key,
                          const std::string* value) override {
    if (armed && key == kMarkerKey) {
      bool timed_out = false;
      auto flushed = inner_->Flush(10000, nullptr, &timed_out);
      if (!flushed.ok()) return flushed;
      return connectors::Status::Error("injected crash before the changelog marker");
    }
    return inner_->Send(partition, key, value);
  }
  connectors::Status Flush(int timeout_ms, std::map<int32_t, int64_t>* last,
                           bool* timed_out) override {
    return inner_->Flush(timeout_ms, last, timed_out);
  }
  void Abandon() override { inner_->Abandon(); }
  uint64_t Purge() override { return inner_->Purge(); }
  connectors::Status Read(
      int32_t partition, int64_t from,
      const std::function<connectors::Status(const connectors::LogRecord&)>& visit, int64_t* end,
      int64_t* log_start) override {
    return inner_->Read(partition, from, visit, end, log_start);
  }
  bool armed = false;

 private:
  std::unique_ptr<ChangelogIo> inner_;
};

TEST_F(Changelog, ACrashBetweenUserRecordsAndTheMarkerFoldsNoEventTwice) {
  // No event-id dedup: only the changelog's folded positions keep the
  // replayed events of the orphan users out.
  config_.stream.dedup_window = 0;
  config_.stream.dedup_retention_days = 0;
  Users expected_users;
  Scores expected_scores;
  Reference(&expected_users, &expected_scores);

  const auto half = Half();
  Scores scores;
  {
    std::unique_ptr<ChangelogIo> kafka;
    ASSERT_TRUE(OpenKafkaChangelog(connectors::ClientOptionsFrom(config_.kafka),
                                   ChangelogTopicName(config_), &kafka)
                    .ok());
    auto crashing = std::make_unique<CrashBeforeMarker>(std::move(kafka));
    CrashBeforeMarker* io = crashing.get();
    auto first = Open("a", true, std::move(crashing));
    auto status = Feed(*first, stream_, half);
    ASSERT_TRUE(status.ok()) << status.message;
    // The next commit's user records reach the changelog; then it crashes.
    std::map<int32_t, int64_t> more = half;
    for (auto& [p, n] : more) {
      first->start[{"events", p}] = n;  // read on from where the commit left
      n += n / 2;
    }
    status = Feed(*first, stream_, more, false);
    ASSERT_TRUE(status.ok()) << status.message;
    io->armed = true;
    status = first->processor->Commit();
    ASSERT_FALSE(status.ok());
    EXPECT_NE(status.message.find("injected crash"), std::string::npos) << status.message;
    AddScores(first->sink, &scores);
  }
  // Restart on the same store: its last commit is the first half.
  auto restarted = Open("a", true);
  for (const auto& [p, n] : half) EXPECT_EQ(restarted->start.at({"events", p}), n) << p;
  auto status = Feed(*restarted, stream_, {});
  ASSERT_TRUE(status.ok()) << status.message;
  EXPECT_GT(restarted->processor->counters().restore_skipped.load(), 0);
  AddScores(restarted->sink, &scores);
  EXPECT_EQ(UsersOf(*restarted->store), expected_users);
  EXPECT_EQ(scores, expected_scores);
}

TEST_F(Changelog, AReSentEventOlderThanItsUsersRecentIdsIsADuplicateAfterItsPartitionMoved) {
  // 30 users, an event of each every 1.5 days; each user remembers only its
  // latest id: the older re-sends are caught by the dedup index alone.
  config_.stream.dedup_window = 1;
  stream_ = Stream(30, 3000);
  const auto half = Half();
  // Per partition: the first half, then a re-send (same bytes, new offsets)
  // of its last 100 events (20 days, within the 30-day retention), then the
  // second half.
  constexpr int64_t kReSent = 100;
  std::vector<connectors::Message> with_resends;
  std::map<int32_t, std::vector<connectors::Message>> resends;
  for (const auto& m : stream_) {
    if (m.offset >= half.at(m.partition) - kReSent && m.offset < half.at(m.partition)) {
      auto copy = m;
      copy.offset = half.at(m.partition) + static_cast<int64_t>(resends[m.partition].size());
      resends[m.partition].push_back(std::move(copy));
    }
  }
  for (const auto& m : stream_) {
    if (m.offset >= half.at(m.partition)) continue;
    with_resends.push_back(m);
    if (m.offset == half.at(m.partition) - 1) {
      for (const auto& r : resends[m.partition]) with_resends.push_back(r);
    }
  }
  for (const auto& m : stream_) {
    if (m.offset < half.at(m.partition)) continue;
    with_resends.push_back(m);
    with_resends.back().offset += kReSent;
  }
  stream_ = with_resends;

  Users expected_users;
  Scores expected_scores;
  Reference(&expected_users, &expected_scores);
  {
    auto first = Open("a", true);
    auto status = Feed(*first, stream_, half);
    ASSERT_TRUE(status.ok()) << status.message;
  }
  auto second = Open("b", true);
  EXPECT_GE(second->processor->counters().restored_event_ids.load(), kReSent * kPartitions);
  auto status = Feed(*second, stream_, {});
  ASSERT_TRUE(status.ok()) << status.message;
  EXPECT_EQ(second->processor->counters().duplicates.load(), kReSent * kPartitions)
      << "re-sent events counted again on the partitions' new owner";
  const Users users = UsersOf(*second->store);
  int differ = 0;
  for (const auto& [id, s] : expected_users) differ += users.count(id) == 0 || users.at(id) != s;
  EXPECT_EQ(users.size(), expected_users.size());
  EXPECT_EQ(differ, 0) << "users whose state differs from one uninterrupted run";
}

TEST_F(Changelog, EventIdRecordsOfDaysPastTheRetentionGetTombstones) {
  config_.stream.dedup_retention_days = 5;
  {
    auto instance = Open("a", true);
    auto status = Feed(*instance, stream_, {});
    ASSERT_TRUE(status.ok()) << status.message;
  }
  std::unique_ptr<ChangelogIo> io;
  ASSERT_TRUE(OpenKafkaChangelog(connectors::ClientOptionsFrom(config_.kafka),
                                 ChangelogTopicName(config_), &io)
                  .ok());
  const int32_t last_day = static_cast<int32_t>(stream_.back().timestamp_ms / kDayMs);
  for (int32_t p = 0; p < kPartitions; ++p) {
    // The latest record per event-id key (compaction keeps only that).
    std::map<std::pair<int32_t, uint32_t>, bool> live;
    std::map<int32_t, uint32_t> marker_counts;
    int64_t end = 0;
    int64_t log_start = 0;
    auto status = io->Read(
        p, 0,
        [&](const connectors::LogRecord& record) {
          int32_t day = 0;
          uint32_t sequence = 0;
          if (ParseChangelogEventIdsKey(record.key, &day, &sequence)) {
            live[{day, sequence}] = record.value.has_value();
          } else if (record.key == kMarkerKey) {
            ChangelogMarker marker;
            std::string error;
            EXPECT_TRUE(DecodeChangelogMarker(*record.value, &marker, &error)) << error;
            marker_counts = marker.event_id_records;
          }
          return connectors::Status::Ok();
        },
        &end, &log_start);
    ASSERT_TRUE(status.ok()) << status.message;
    int tombstoned = 0;
    std::map<int32_t, uint32_t> live_counts;
    for (const auto& [key, has_value] : live) {
      if (!has_value) {
        ++tombstoned;
        continue;
      }
      EXPECT_GE(key.first, last_day - 5 - 2)
          << "partition " << p << ": day " << key.first << " is past the retention, not tombstoned";
      ++live_counts[key.first];
    }
    EXPECT_GT(tombstoned, 100) << "partition " << p;
    // The last marker counts exactly the records still alive.
    EXPECT_EQ(marker_counts, live_counts) << "partition " << p;
  }
}

TEST_F(Changelog, AChangelogTopicWithAnotherPartitionCountStopsTheStart) {
  config_.state.changelog_topic = "narrow-changelog";
  ASSERT_TRUE(broker_->CreateTopic("narrow-changelog", 2).ok());
  auto status = EnsureChangelogTopic(config_);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message.find("'narrow-changelog' has 2 partition(s), expected 4"),
            std::string::npos)
      << status.message;
  config_.state.changelog_topic = "new-changelog";
  status = EnsureChangelogTopic(config_);
  ASSERT_TRUE(status.ok()) << status.message;
  int partitions = 0;
  ASSERT_TRUE(connectors::PartitionCount(connectors::ClientOptionsFrom(config_.kafka),
                                         "new-changelog", &partitions)
                  .ok());
  EXPECT_EQ(partitions, kPartitions);
}

TEST(ChangelogRecords, EncodeAndDecodeAndRefuseDamage) {
  ChangelogUser user;
  user.positions = {{"events", 41}, {"orders", 7}};
  user.state.seq = 12;
  user.state.partition = 3;
  user.state.next_timer_ms = 99;
  ChangelogUser decoded;
  std::string error;
  const std::string bytes = EncodeChangelogUser(user);
  ASSERT_TRUE(DecodeChangelogUser(bytes, &decoded, &error)) << error;
  EXPECT_EQ(decoded.positions, user.positions);
  EXPECT_EQ(decoded.state, user.state);
  EXPECT_FALSE(DecodeChangelogUser(bytes.substr(0, 9), &decoded, &error));
  ChangelogMarker marker{"w", 1234, {{"events", 10, 1000}}, {{20089, 3}, {20090, 1}}};
  ChangelogMarker read;
  const std::string marker_bytes = EncodeChangelogMarker(marker);
  ASSERT_TRUE(DecodeChangelogMarker(marker_bytes, &read, &error)) << error;
  EXPECT_EQ(read.writer, "w");
  EXPECT_EQ(read.stream_time_ms, 1234);
  ASSERT_EQ(read.inputs.size(), 1u);
  EXPECT_EQ(read.inputs[0].next_offset, 10);
  EXPECT_EQ(read.event_id_records, marker.event_id_records);
  EXPECT_FALSE(
      DecodeChangelogMarker(marker_bytes.substr(0, marker_bytes.size() - 3), &read, &error));
  EXPECT_FALSE(DecodeChangelogMarker(bytes, &read, &error));
  EXPECT_NE(error.find("not a changelog marker"), std::string::npos) << error;
  // A marker of the first version (no event-id record counts) still reads.
  ChangelogMarker older{"w", 1234, {{"events", 10, 1000}}, {}};
  std::string older_bytes = EncodeChangelogMarker(older);
  older_bytes.resize(older_bytes.size() - 4);
  ASSERT_TRUE(DecodeChangelogMarker(older_bytes, &read, &error)) << error;
  EXPECT_TRUE(read.event_id_records.empty());

  const std::vector<uint64_t> hashes = {1, 0xfedcba9876543210ULL, 42};
  std::vector<uint64_t> hashes_read;
  const std::string ids = EncodeChangelogEventIds(hashes);
  ASSERT_TRUE(DecodeChangelogEventIds(ids, &hashes_read, &error)) << error;
  EXPECT_EQ(hashes_read, hashes);
  EXPECT_FALSE(DecodeChangelogEventIds(ids.substr(0, ids.size() - 1), &hashes_read, &error));
  EXPECT_NE(error.find("do not hold the ids"), std::string::npos) << error;
  int32_t day = 0;
  uint32_t sequence = 0;
  ASSERT_TRUE(ParseChangelogEventIdsKey(ChangelogEventIdsKey(-3, 7), &day, &sequence));
  EXPECT_EQ(day, -3);
  EXPECT_EQ(sequence, 7u);
  EXPECT_FALSE(ParseChangelogEventIdsKey("u1", &day, &sequence));
  EXPECT_FALSE(ParseChangelogEventIdsKey(kMarkerKey, &day, &sequence));
}

}  // namespace
}  // namespace clv::stream
