// The commit pipeline against a fake sink (acknowledgements under the test's
// control) and a real RocksDB store in a temp dir, wrapped to record the
// order of its writes: a commit is never in the store before its outputs
// (and its state changelog records) are acknowledged, and commits are
// written in the order sealed.
#include <atomic>
#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "config/config.h"
#include "stream/commit_pipeline.h"
#include "tests/fake_sink.h"
#include "tests/test_support.h"

namespace clv::stream {
namespace {

// Forwards to the real store; records the offset each Commit() wrote.
class RecordingStore : public state::StateStore {
 public:
  explicit RecordingStore(std::unique_ptr<state::StateStore> real) : real_(std::move(real)) {}
  state::Status MultiGetUsers(const std::vector<std::string>& ids,
                              std::vector<std::optional<state::UserState>>* states) override {
    return real_->MultiGetUsers(ids, states);
  }
  state::Status GetUser(std::string_view id, std::optional<state::UserState>* state) override {
    return real_->GetUser(id, state);
  }
  state::Status GetOffset(std::string_view topic, int32_t partition,
                          std::optional<int64_t>* offset) override {
    return real_->GetOffset(topic, partition, offset);
  }
  state::Status GetAllOffsets(std::vector<state::TopicPartitionOffset>* offsets) override {
    return real_->GetAllOffsets(offsets);
  }
  state::Status DueTimers(int32_t partition, int64_t up_to_ms, size_t limit,
                          std::vector<state::TimerEntry>* timers) override {
    return real_->DueTimers(partition, up_to_ms, limit, timers);
  }
  state::Status GetMeta(std::string_view key, std::optional<std::string>* value) override {
    return real_->GetMeta(key, value);
  }
  state::Status SeenEventIds(const std::vector<state::EventIdEntry>& ids,
                             std::vector<bool>* seen) override {
    return real_->SeenEventIds(ids, seen);
  }
  state::Status Commit(const state::CommitBatch& batch) override {
    if (fail_commits) return state::Status::Error("disk full (test)");
    auto status = real_->Commit(batch);
    std::lock_guard lock(mu_);
    for (const auto& o : batch.offsets) written_offsets_.push_back(o.offset);
    return status;
  }
  std::unique_ptr<state::StateSnapshot> Snapshot() override { return real_->Snapshot(); }
  uint64_t ApproximateBytes() override { return real_->ApproximateBytes(); }
  uint64_t ApproximateUsers() override { return real_->ApproximateUsers(); }

  std::vector<int64_t> written_offsets() {
    std::lock_guard lock(mu_);
    return written_offsets_;
  }
  std::optional<int64_t> StoredOffset() {
    std::optional<int64_t> offset;
    EXPECT_TRUE(real_->GetOffset("orders", 0, &offset).ok());
    return offset;
  }
  bool fail_commits = false;  // set before any commit is handed over

 private:
  std::unique_ptr<state::StateStore> real_;
  std::mutex mu_;
  std::vector<int64_t> written_offsets_;
};

class CommitPipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config::StateOptions options;
    options.dir = (dir_.path() / "state").string();
    std::unique_ptr<state::StateStore> real;
    auto status = state::OpenRocksDbStore(options, &real);
    ASSERT_TRUE(status.ok()) << status.message;
    store_ = std::make_unique<RecordingStore>(std::move(real));
    CommitPipeline::Hooks hooks;
    hooks.on_acknowledged = [this](const PendingCommit& c, int64_t acked_ms) {
      acknowledged_.push_back({c.batch.offsets.at(0).offset, acked_ms});
    };
    hooks.on_written = [this](const PendingCommit& c) {
      written_.push_back(c.batch.offsets.at(0).offset);
    };
    pipeline_ = std::make_unique<CommitPipeline>(*store_, sink_, hooks, /*flush_timeout_ms=*/50);
  }

  // A commit that moves the orders offset to `offset` and stores user `user`.
  static PendingCommit CommitTo(int64_t offset, const std::string& user, uint64_t event_id) {
    PendingCommit c;
    state::UserState s;
    s.seq = static_cast<uint64_t>(offset);
    c.batch.users.push_back({user, s});
    c.batch.offsets.push_back({"orders", 0, offset});
    c.event_ids.insert({20000, event_id});
    c.timestamps_ms = {1000, 2000};
    return c;
  }

  testing::TempDir dir_;
  testing::FakeSink sink_;
  std::unique_ptr<RecordingStore> store_;
  std::unique_ptr<CommitPipeline> pipeline_;
  std::vector<std::pair<int64_t, int64_t>> acknowledged_;  // (offset, acked_ms)
  std::vector<int64_t> written_;
};

TEST_F(CommitPipelineTest, NothingIsWrittenBeforeItsOutputsAreAcknowledged) {
  ASSERT_TRUE(sink_.Send("scores", "u1", "{}", -1).ok());
  pipeline_->Seal(CommitTo(10, "u1", 1));
  ASSERT_TRUE(sink_.Send("scores", "u2", "{}", -1).ok());
  pipeline_->Seal(CommitTo(20, "u2", 2));
  EXPECT_EQ(sink_.marks(), 2u);
  EXPECT_TRUE(pipeline_->Contains({20000, 1}));
  EXPECT_TRUE(pipeline_->Contains({20000, 2}));

  // Up to two may stay pending: nothing acknowledged, nothing written.
  ASSERT_TRUE(pipeline_->WriteAcknowledged(2).ok());
  EXPECT_EQ(pipeline_->pending(), 2u);
  EXPECT_TRUE(store_->written_offsets().empty());
  EXPECT_FALSE(store_->StoredOffset().has_value());
  std::optional<state::UserState> user;
  ASSERT_TRUE(store_->GetUser("u1", &user).ok());
  EXPECT_FALSE(user.has_value()) << "a user state is in the store before its score was acked";

  // The first commit's outputs are acknowledged: it alone is written.
  sink_.acked_wall_ms = 5000;
  sink_.Ack(1);
  ASSERT_TRUE(pipeline_->WriteAcknowledged(1).ok());
  EXPECT_EQ(pipeline_->pending(), 1u);
  EXPECT_EQ(store_->written_offsets(), std::vector<int64_t>({10}));
  EXPECT_EQ(store_->StoredOffset(), 10);
  ASSERT_TRUE(store_->GetUser("u1", &user).ok());
  ASSERT_TRUE(user.has_value());
  EXPECT_EQ(user->seq, 10u);
  EXPECT_FALSE(pipeline_->Contains({20000, 1})) << "written: the store answers for it now";
  EXPECT_TRUE(pipeline_->Contains({20000, 2}));
  ASSERT_EQ(acknowledged_.size(), 1u);
  EXPECT_EQ(acknowledged_[0], std::make_pair(int64_t{10}, int64_t{5000}));
  EXPECT_EQ(written_, std::vector<int64_t>({10}));

  sink_.Ack(2);
  ASSERT_TRUE(pipeline_->WriteAcknowledged(0).ok());
  EXPECT_EQ(pipeline_->pending(), 0u);
  EXPECT_EQ(store_->written_offsets(), std::vector<int64_t>({10, 20}));
  EXPECT_EQ(store_->StoredOffset(), 20);
  EXPECT_EQ(written_, std::vector<int64_t>({10, 20}));
}

TEST_F(CommitPipelineTest, AYoungerCommitAcknowledgedFirstWaitsForTheOlderOne) {
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(sink_.Send("scores", "u", "{}", -1).ok());
    pipeline_->Seal(CommitTo(i * 10, "u" + std::to_string(i), static_cast<uint64_t>(i)));
  }
  // Deliveries of different partitions come back out of order.
  sink_.Ack(3);
  sink_.Ack(2);
  ASSERT_TRUE(pipeline_->WriteAcknowledged(3).ok());
  EXPECT_TRUE(store_->written_offsets().empty())
      << "commit 3 would move the offset past commit 1's unacknowledged outputs";
  sink_.Ack(1);
  ASSERT_TRUE(pipeline_->WriteAcknowledged(0).ok());
  EXPECT_EQ(store_->written_offsets(), std::vector<int64_t>({10, 20, 30}));
  EXPECT_EQ(written_, std::vector<int64_t>({10, 20, 30}));
  EXPECT_EQ(store_->StoredOffset(), 30);
}

TEST_F(CommitPipelineTest, DroppingKeepsTheAcknowledgedCommitsAndWritesNothingElse) {
  // Partitions lost: what Kafka has acknowledged is written, the rest is gone.
  for (int i = 1; i <= 3; ++i) {
    ASSERT_TRUE(sink_.Send("scores", "u", "{}", -1).ok());
    pipeline_->Seal(CommitTo(i * 10, "u" + std::to_string(i), static_cast<uint64_t>(i)));
  }
  sink_.Ack(1);
  ASSERT_TRUE(pipeline_->HandOver(false).ok());  // commit 1 on its way to the store
  sink_.Ack(3);  // acknowledged, but behind the unacknowledged commit 2
  size_t dropped = 0;
  ASSERT_TRUE(pipeline_->DropUnacknowledged(&dropped).ok());
  EXPECT_EQ(dropped, 2u);
  EXPECT_EQ(sink_.Purge(), 1u);  // commit 2's outputs (the processor purges them)
  EXPECT_EQ(pipeline_->pending(), 0u);
  EXPECT_EQ(store_->written_offsets(), std::vector<int64_t>({10}));
  EXPECT_EQ(written_, std::vector<int64_t>({10}));
  EXPECT_EQ(store_->StoredOffset(), 10);
  EXPECT_FALSE(pipeline_->Contains({20000, 2})) << "a dropped commit's event id stays known";
  std::optional<state::UserState> user;
  ASSERT_TRUE(store_->GetUser("u2", &user).ok());
  EXPECT_FALSE(user.has_value());
  ASSERT_TRUE(store_->GetUser("u3", &user).ok());
  EXPECT_FALSE(user.has_value());

  // The pipeline goes on: a later commit is written as usual.
  ASSERT_TRUE(sink_.Send("scores", "u4", "{}", -1).ok());
  pipeline_->Seal(CommitTo(40, "u4", 4));
  sink_.Ack(4);
  ASSERT_TRUE(pipeline_->WriteAcknowledged(0).ok());
  EXPECT_EQ(store_->written_offsets(), std::vector<int64_t>({10, 40}));
  EXPECT_EQ(store_->StoredOffset(), 40);
}

TEST_F(CommitPipelineTest, AClosedGateHoldsAcknowledgedCommitsUntilItOpens) {
  // The group session in doubt: acknowledged outputs are not enough.
  bool open = false;
  CommitPipeline::Hooks hooks;
  hooks.may_commit = [&] { return open; };
  CommitPipeline pipeline(*store_, sink_, hooks, /*flush_timeout_ms=*/50);
  ASSERT_TRUE(sink_.Send("scores", "u1", "{}", -1).ok());
  pipeline.Seal(CommitTo(10, "u1", 1));
  sink_.Ack(1);
  ASSERT_TRUE(pipeline.WriteAcknowledged(1).ok());
  EXPECT_EQ(pipeline.pending(), 1u);
  EXPECT_TRUE(store_->written_offsets().empty()) << "written while the gate was closed";
  // Made to wait, it gives up with the reason, writing nothing.
  auto status = pipeline.WriteAcknowledged(0);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message.find("group session is in doubt"), std::string::npos) << status.message;
  EXPECT_TRUE(store_->written_offsets().empty());

  // Open: a commit goes through as usual.
  CommitPipeline reopened(*store_, sink_, hooks, /*flush_timeout_ms=*/50);
  ASSERT_TRUE(sink_.Send("scores", "u2", "{}", -1).ok());
  reopened.Seal(CommitTo(20, "u2", 2));
  sink_.Ack(2);
  ASSERT_TRUE(reopened.WriteAcknowledged(1).ok());
  EXPECT_TRUE(store_->written_offsets().empty());
  open = true;
  ASSERT_TRUE(reopened.WriteAcknowledged(0).ok());
  EXPECT_EQ(store_->written_offsets(), std::vector<int64_t>({20}));
}

TEST_F(CommitPipelineTest, OutputsNeverAcknowledgedStopThePipelineWithoutWriting) {
  pipeline_->Seal(CommitTo(10, "u1", 1));
  auto status = pipeline_->WriteAcknowledged(0);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message.find("not acknowledged within 50 ms"), std::string::npos)
      << status.message;
  EXPECT_TRUE(store_->written_offsets().empty());
  // Stopped: an acknowledgement arriving later writes nothing any more.
  sink_.Ack(1);
  status = pipeline_->WriteAcknowledged(0);
  EXPECT_FALSE(status.ok());
  EXPECT_FALSE(pipeline_->failed().empty());
  EXPECT_TRUE(store_->written_offsets().empty());
}

// A sink whose WaitAcked blocks for its whole timeout when the outputs are
// not acknowledged, as the real producer's does while the cluster is away.
class BlockingSink : public testing::FakeSink {
 public:
  connectors::Status WaitAcked(uint64_t mark, int timeout_ms, bool* done,
                               int64_t* acked_ms) override {
    auto status = FakeSink::WaitAcked(mark, 0, done, acked_ms);
    if (!status.ok() || *done || timeout_ms <= 0) return status;
    blocked_waits.fetch_add(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(timeout_ms));
    return status;
  }
  std::atomic<int> blocked_waits{0};
};

// A stop request (SIGTERM) while the pipeline waits for room: the wait ends
// with an error saying so instead of running out the flush timeout (hours
// here: the old wait ignored the stop and hung the test); nothing is
// written that was not acknowledged, and the pipeline goes on working.
TEST_F(CommitPipelineTest, AStopCutsTheWaitForAcknowledgementsShortAndLosesNothing) {
  BlockingSink sink;
  std::atomic<bool> stop{false};
  CommitPipeline pipeline(*store_, sink, {}, /*flush_timeout_ms=*/3 * 3600 * 1000);
  pipeline.set_stop(&stop);
  ASSERT_TRUE(sink.Send("scores", "u1", "{}", -1).ok());
  pipeline.Seal(CommitTo(10, "u1", 1));
  std::thread stopper([&] {
    while (sink.blocked_waits.load() == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    stop.store(true);
  });
  auto status = pipeline.WriteAcknowledged(0);  // no room: waits for the outputs
  stopper.join();
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message.find("stop requested while waiting for Kafka to acknowledge the "
                                "outputs of 1 micro-batch commit(s)"),
            std::string::npos)
      << status.message;
  EXPECT_NE(status.message.find("the next start reads those events again"), std::string::npos)
      << status.message;
  EXPECT_TRUE(pipeline.failed().empty()) << "a stop is not a failure: " << pipeline.failed();
  EXPECT_EQ(pipeline.pending(), 1u);
  EXPECT_FALSE(store_->StoredOffset().has_value()) << "committed without its acknowledgement";

  // Acknowledged during the shutdown: written, with the stop still set.
  sink.Ack(1);
  status = pipeline.WriteAcknowledged(0);
  ASSERT_TRUE(status.ok()) << status.message;
  EXPECT_EQ(pipeline.pending(), 0u);
  EXPECT_EQ(store_->StoredOffset(), 10);
}

TEST_F(CommitPipelineTest, AFailedDeliveryIsReportedAndNothingIsWritten) {
  pipeline_->Seal(CommitTo(10, "u1", 1));
  sink_.delivery_error = "scores [2]: topic authorization failed";
  auto status = pipeline_->WriteAcknowledged(0);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message.find("topic authorization failed"), std::string::npos) << status.message;
  EXPECT_FALSE(store_->StoredOffset().has_value());
  EXPECT_TRUE(written_.empty());
}

TEST_F(CommitPipelineTest, AFailedStoreWriteIsReportedAndStopsLaterWrites) {
  store_->fail_commits = true;
  pipeline_->Seal(CommitTo(10, "u1", 1));
  pipeline_->Seal(CommitTo(20, "u2", 2));
  sink_.AckAll();
  auto status = pipeline_->WriteAcknowledged(0);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message.find("committing state: disk full (test)"), std::string::npos)
      << status.message;
  EXPECT_TRUE(written_.empty()) << "on_written only for commits in the store";
  EXPECT_FALSE(pipeline_->WriteAcknowledged(0).ok());
}

// A changelog under the test's control: records "sent" per commit (by its
// offset), acknowledged when the test says so; counts the waits.
struct FakeChangelogStage {
  CommitPipeline::Hooks Hooks(std::vector<std::string>* events) {
    CommitPipeline::Hooks hooks;
    hooks.on_written = [events](const PendingCommit& c) {
      events->push_back("written " + std::to_string(c.batch.offsets.at(0).offset));
    };
    hooks.send_changelog = [this, events](PendingCommit& c, bool* sent) {
      *sent = !c.changelog.empty();
      if (*sent) {
        events->push_back("changelog sent " + std::to_string(c.batch.offsets.at(0).offset));
        ++in_flight;
      }
      return connectors::Status::Ok();
    };
    hooks.changelog_acked = [this](PendingCommit& c, int timeout_ms, bool* done) {
      if (timeout_ms > 0) blocking_waits.fetch_add(1);
      *done = acked > 0;
      if (!*done) return connectors::Status::Ok();
      --acked;
      --in_flight;
      c.batch.meta.emplace_back("changelog_next/0", std::to_string(next_offset));
      return connectors::Status::Ok();
    };
    return hooks;
  }
  int acked = 0;  // acknowledgements the test gave, not yet taken
  int in_flight = 0;
  int64_t next_offset = 0;
  std::atomic<int> blocking_waits{0};
};

PendingCommit WithChangelog(PendingCommit c) {
  c.changelog.push_back({0, "u", "state"});
  return c;
}

// The changelog stage of a commit comes after its outputs' acknowledgement
// and before its store write; while it is in flight, WriteAcknowledged with
// room only looks (the polling thread goes on: no wait), one commit's
// records at a time.
TEST_F(CommitPipelineTest, TheChangelogStageSitsBetweenOutputsAndStoreWithoutWaiting) {
  FakeChangelogStage changelog;
  std::vector<std::string> events;
  CommitPipeline pipeline(*store_, sink_, changelog.Hooks(&events),
                          /*flush_timeout_ms=*/3 * 3600 * 1000);
  for (int i = 1; i <= 2; ++i) {
    ASSERT_TRUE(sink_.Send("scores", "u", "{}", -1).ok());
    pipeline.Seal(
        WithChangelog(CommitTo(i * 10, "u" + std::to_string(i), static_cast<uint64_t>(i))));
  }
  ASSERT_TRUE(pipeline.WriteAcknowledged(2).ok());
  EXPECT_TRUE(events.empty()) << "changelog records sent before the outputs were acknowledged";

  sink_.AckAll();
  ASSERT_TRUE(pipeline.WriteAcknowledged(2).ok());
  EXPECT_EQ(events, std::vector<std::string>({"changelog sent 10"}))
      << "one commit's records in flight at a time";
  EXPECT_EQ(changelog.in_flight, 1);
  EXPECT_TRUE(store_->written_offsets().empty()) << "written before its changelog was acknowledged";
  // Looked at again and again, never waited for (the flush timeout is hours).
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(pipeline.WriteAcknowledged(2).ok());
  EXPECT_EQ(changelog.blocking_waits.load(), 0);
  EXPECT_EQ(pipeline.pending(), 2u);

  // Acknowledged: handed to the writer (waited for here, one may stay
  // pending); the next commit's records go out as soon as it moved on.
  changelog.acked = 1;
  changelog.next_offset = 7;
  ASSERT_TRUE(pipeline.WriteAcknowledged(1).ok());
  EXPECT_EQ(store_->StoredOffset(), 10);
  std::optional<std::string> checkpoint;
  ASSERT_TRUE(store_->GetMeta("changelog_next/0", &checkpoint).ok());
  EXPECT_EQ(checkpoint, "7") << "the changelog checkpoint goes with the commit's batch";
  EXPECT_EQ(events,
            std::vector<std::string>({"changelog sent 10", "changelog sent 20", "written 10"}));
  EXPECT_EQ(changelog.blocking_waits.load(), 0);

  // No room: the wait for the changelog is a wait the stop flag cuts short,
  // and the pipeline goes on afterwards.
  std::atomic<bool> stop{false};
  pipeline.set_stop(&stop);
  std::thread stopper([&] {
    while (changelog.blocking_waits.load() == 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    stop.store(true);
  });
  auto status = pipeline.WriteAcknowledged(0);
  stopper.join();
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message.find("acknowledge the state changelog records of 1 micro-batch"),
            std::string::npos)
      << status.message;
  EXPECT_TRUE(pipeline.failed().empty()) << pipeline.failed();
  EXPECT_EQ(store_->StoredOffset(), 10);
  changelog.acked = 1;
  ASSERT_TRUE(pipeline.WriteAcknowledged(0).ok());
  EXPECT_EQ(store_->StoredOffset(), 20);
  EXPECT_EQ(events.back(), "written 20");
}

TEST_F(CommitPipelineTest, AChangelogNeverAcknowledgedStopsThePipelineWithoutWriting) {
  FakeChangelogStage changelog;
  std::vector<std::string> events;
  CommitPipeline pipeline(*store_, sink_, changelog.Hooks(&events), /*flush_timeout_ms=*/50);
  pipeline.Seal(WithChangelog(CommitTo(10, "u1", 1)));
  sink_.AckAll();
  auto status = pipeline.WriteAcknowledged(0);
  ASSERT_FALSE(status.ok());
  EXPECT_NE(status.message.find("state changelog before commit: records not acknowledged within "
                                "50 ms"),
            std::string::npos)
      << status.message;
  EXPECT_FALSE(store_->StoredOffset().has_value());
  changelog.acked = 1;
  EXPECT_FALSE(pipeline.WriteAcknowledged(0).ok());
  EXPECT_FALSE(store_->StoredOffset().has_value());
}

}  // namespace
}  // namespace clv::stream
