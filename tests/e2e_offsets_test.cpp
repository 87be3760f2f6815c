// Nothing skipped silently at start (issue 12, cases 2 and 3), on the real
// `clv` binary:
//   * the embedded broker (`clv broker`) keeps about 5 MiB per partition: a
//     replay of more into one partition exits non-zero saying what the broker
//     dropped, and `clv run` on it stops with an error naming the partition,
//     the expected and the found offset and the limit, rather than exit 0
//     having read a fraction;
//   * a recreated cluster or topic (stored offsets past the new log end) stops
//     the start naming partition, stored offset and log start/end;
//     `clv run --reset-offsets earliest` then reads the new log from its start
//     and says what it replaced, and the next start needs no flag.
//     Parameterized: "embedded" (a new `clv broker`) and "real" (the input
//     topic of $CLV_REAL_KAFKA deleted and created again).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "connectors/kafka.h"
#include "tests/e2e_support.h"
#include "tests/test_support.h"

namespace clv {
namespace {

using testing::ClvBinary;
using testing::TempDir;
using testing::UniqueSuffix;
using Clock = std::chrono::steady_clock;

::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected to contain:\n  " << part << "\nactual:\n  " << text;
}

int64_t ConsumedOfCleanStop(const std::string& log) {
  auto line = log.find("stopped cleanly");
  if (line == std::string::npos) return -1;
  auto at = log.find(" consumed=", line);
  return at == std::string::npos ? -1 : std::stoll(log.substr(at + 10));
}

struct Names {
  std::string input, scores, alerts, dead_letter, group;
  std::vector<std::string> all() const { return {input, scores, alerts, dead_letter}; }
};

Names MakeNames(const std::string& name) {
  auto suffix = name + "-" + UniqueSuffix();
  return {"events-" + suffix, "scores-" + suffix, "alerts-" + suffix, "dlq-" + suffix,
          "group-" + suffix};
}

std::vector<std::string> RunArgs(const std::string& bootstrap, const Names& names,
                                 const std::filesystem::path& state_dir,
                                 const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = {
      ClvBinary().string(), "run", "--quiet", "--set", "kafka.bootstrap_servers=" + bootstrap,
      "--set", "kafka.input_topics=" + names.input, "--set", "kafka.scores_topic=" + names.scores,
      "--set", "kafka.alerts_topic=" + names.alerts, "--set",
      "kafka.dead_letter_topic=" + names.dead_letter, "--set", "kafka.group_id=" + names.group,
      "--set", "state.dir=" + state_dir.string(), "--set", "stream.idle_exit_ms=3000",
      // A member that stopped on an error is dropped soon.
      "--set", "kafka.properties.session.timeout.ms=6000"};
  args.insert(args.end(), extra.begin(), extra.end());
  return args;
}

// Runs `clv run` to its end; exit status, stderr in *log.
int RunClv(const std::vector<std::string>& args, const std::filesystem::path& log_prefix,
           std::string* log) {
  testing::Subprocess run(args, log_prefix);
  int status = run.Wait(240000);
  *log = run.Stderr();
  return status;
}

int Replay(const std::string& bootstrap, const std::string& topic,
           const std::filesystem::path& file, const std::filesystem::path& log_prefix,
           std::string* output) {
  return testing::RunCommand(
      {ClvBinary().string(), "replay", file.string(), "--topic", topic, "--bootstrap", bootstrap},
      log_prefix, 120000, output);
}

int64_t Generate(const std::filesystem::path& file, int users, int days, int seed,
                 const std::filesystem::path& log_prefix) {
  std::string output;
  EXPECT_EQ(testing::RunCommand(
                {ClvBinary().string(), "gen", "--users", std::to_string(users), "--days",
                 std::to_string(days), "--seed", std::to_string(seed), "--out", file.string()},
                log_prefix, 120000, &output),
            0)
      << output;
  std::ifstream in(file);
  std::string line;
  int64_t lines = 0;
  while (std::getline(in, line)) lines += !line.empty();
  return lines;
}

TEST(OffsetsEmbeddedEndToEnd, ReplayPastTheBrokerLimitIsReportedAndRunStopsNamingTheGap) {
  TempDir dir;
  const Names names = MakeNames("limit");
  testing::BrokerProcess broker(dir, names.all());
  ASSERT_FALSE(broker.bootstrap().empty()) << "broker did not start";

  // About 9 MB of one user's events (one partition), with an incompressible
  // note so the producer's lz4 cannot shrink them under the limit.
  const auto file = dir.path() / "one-user.jsonl";
  constexpr int kEvents = 9000;
  {
    std::ofstream out(file);
    std::mt19937_64 random(7);
    const char* hex = "0123456789abcdef";
    for (int i = 0; i < kEvents; ++i) {
      std::string note(1000, '0');
      for (auto& c : note) c = hex[random() % 16];
      out << R"({"event_id":"e)" << i << R"(","user_id":"u1","type":"page_view","ts":)"
          << 1700000000 + i << R"(,"note":")" << note << "\"}\n";
    }
  }
  std::string output;
  EXPECT_NE(Replay(broker.bootstrap(), names.input, file, dir.path() / "replay", &output), 0)
      << output;
  EXPECT_TRUE(Contains(output, "the broker already dropped"));
  EXPECT_TRUE(Contains(output, "5 MiB"));

  std::string log;
  int status =
      RunClv(RunArgs(broker.bootstrap(), names, dir.path() / "state"), dir.path() / "run", &log);
  EXPECT_NE(status, 0) << log;
  EXPECT_EQ(ConsumedOfCleanStop(log), -1) << "exited as if all was read:\n" << log;
  EXPECT_TRUE(Contains(log,
                       "this state has never read the partition, so it starts at offset 0, "
                       "but the log starts later (log start "));
  EXPECT_TRUE(Contains(log, "topic '" + names.input + "' ["));
  EXPECT_TRUE(Contains(log, "the embedded broker"));
  EXPECT_TRUE(Contains(log, "5 MiB"));
}

class OffsetsRecreatedEndToEnd : public ::testing::TestWithParam<std::string> {
 protected:
  bool real() const { return GetParam() == "real"; }

  // A broker with the topics: a new `clv broker`, or the real one.
  void StartBroker(const Names& names) {
    if (real()) {
      const char* address = std::getenv("CLV_REAL_KAFKA");
      if (address == nullptr || *address == '\0') {
        if (testing::InCi()) FAIL() << "CLV_REAL_KAFKA unset under CI";
        GTEST_SKIP() << "CLV_REAL_KAFKA unset (scripts/kafka-start.sh)";
      }
      bootstrap_ = address;
      auto s = connectors::EnsureTopics(testing::ReaderClient(bootstrap_), names.all(), 4, 1);
      ASSERT_TRUE(s.ok()) << s.message;
      return;
    }
    broker_dirs_.push_back(std::make_unique<TempDir>());
    broker_.reset();
    broker_ = std::make_unique<testing::BrokerProcess>(*broker_dirs_.back(), names.all());
    bootstrap_ = broker_->bootstrap();
    ASSERT_FALSE(bootstrap_.empty()) << "broker did not start";
  }

  // The cluster (embedded) or the input topic (real) made again, empty.
  void Recreate(const Names& names) {
    if (!real()) {
      StartBroker(names);
      return;
    }
    auto client = testing::ReaderClient(bootstrap_);
    auto s = connectors::DeleteTopics(client, {names.input});
    ASSERT_TRUE(s.ok()) << s.message;
    // Deletion is asynchronous, and the broker auto-creates a topic some
    // client asks for (scripts/kafka-start.sh: auto.create.topics.enable,
    // num.partitions=8), so a copy with the wrong shape can appear in
    // between: it is deleted again until the topic is ours, empty, with 4
    // partitions.
    const auto deadline = Clock::now() + std::chrono::seconds(120);
    int partitions = 0;
    while (connectors::PartitionCount(client, names.input, &partitions).ok()) {
      ASSERT_LT(Clock::now(), deadline) << "input topic still there after deletion";
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    std::string last;
    for (;;) {
      if (!connectors::PartitionCount(client, names.input, &partitions).ok()) {
        s = connectors::EnsureTopics(client, {names.input}, 4, 1);
        last = s.ok() ? "created" : s.message;
      } else if (partitions != 4) {
        last = "a copy with " + std::to_string(partitions) + " partitions appeared; deleted";
        (void)connectors::DeleteTopics(client, {names.input});
      } else {
        std::vector<connectors::PartitionRange> ranges;
        s = connectors::TopicRanges(client, names.input, &ranges);
        const bool empty =
            std::all_of(ranges.begin(), ranges.end(), [](const auto& r) { return r.log_end == 0; });
        if (s.ok() && ranges.size() == 4 && empty) break;
        if (s.ok() && !empty) {
          last = "the topic holds records again; deleted";
          (void)connectors::DeleteTopics(client, {names.input});
        } else {
          last = s.ok() ? "ranges of " + std::to_string(ranges.size()) + " partitions" : s.message;
        }
      }
      ASSERT_LT(Clock::now(), deadline) << "input topic not recreated: " << last;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }

  TempDir dir_;
  std::vector<std::unique_ptr<TempDir>> broker_dirs_;
  std::unique_ptr<testing::BrokerProcess> broker_;
  std::string bootstrap_;
};

TEST_P(OffsetsRecreatedEndToEnd, StoredOffsetsPastTheNewLogStopTheStartUntilReset) {
  const Names names = MakeNames("recreated-" + GetParam());
  StartBroker(names);
  if (IsSkipped() || HasFatalFailure()) return;
  const auto state = dir_.path() / "state";
  const auto before = dir_.path() / "before.jsonl";
  const auto after = dir_.path() / "after.jsonl";
  const int64_t before_events = Generate(before, 200, 60, 11, dir_.path() / "gen-before");
  const int64_t after_events = Generate(after, 10, 60, 12, dir_.path() / "gen-after");
  ASSERT_GT(before_events, 8 * after_events) << "each partition's new log must be shorter";

  std::string output;
  ASSERT_EQ(Replay(bootstrap_, names.input, before, dir_.path() / "replay-before", &output), 0)
      << output;
  std::string log;
  ASSERT_EQ(RunClv(RunArgs(bootstrap_, names, state), dir_.path() / "run-1", &log), 0) << log;
  ASSERT_EQ(ConsumedOfCleanStop(log), before_events) << log;

  Recreate(names);
  if (HasFatalFailure()) return;
  ASSERT_EQ(Replay(bootstrap_, names.input, after, dir_.path() / "replay-after", &output), 0)
      << output;

  // 1. The start stops, naming what it found.
  EXPECT_NE(RunClv(RunArgs(bootstrap_, names, state), dir_.path() / "run-2", &log), 0) << log;
  EXPECT_EQ(ConsumedOfCleanStop(log), -1) << log;
  EXPECT_TRUE(Contains(log, "topic '" + names.input + "' ["));
  EXPECT_TRUE(Contains(log, "is past the log end (log start 0, log end "));
  EXPECT_TRUE(Contains(log, "the topic or the cluster was recreated"));
  EXPECT_TRUE(Contains(log, "--reset-offsets earliest"));

  // 2. The documented way on: the new log from its start, the move logged.
  ASSERT_EQ(RunClv(RunArgs(bootstrap_, names, state, {"--reset-offsets", "earliest"}),
                   dir_.path() / "run-3", &log),
            0)
      << log;
  EXPECT_EQ(ConsumedOfCleanStop(log), after_events) << log;
  EXPECT_TRUE(Contains(log,
                       "input offset reset (kafka.reset_offsets): events already counted "
                       "stay in the state, the stored offset is replaced"));
  EXPECT_TRUE(Contains(log, "stored_offset="));

  // 3. The stored offsets belong to the new log now: no flag needed.
  ASSERT_EQ(RunClv(RunArgs(bootstrap_, names, state), dir_.path() / "run-4", &log), 0) << log;
  EXPECT_EQ(ConsumedOfCleanStop(log), 0) << log;
  EXPECT_EQ(log.find("input offset reset"), std::string::npos) << log;
  if (real()) (void)connectors::DeleteTopics(testing::ReaderClient(bootstrap_), names.all());
}

INSTANTIATE_TEST_SUITE_P(Broker, OffsetsRecreatedEndToEnd, ::testing::Values("embedded", "real"),
                         [](const ::testing::TestParamInfo<std::string>& info) {
                           return info.param;
                         });

// Retention overtaking a stopped service, and an error exit (issue 12, cases
// 3 and 6) on real Kafka: records the service has not read yet are deleted
// while it is stopped (DeleteRecords, as retention.ms would). The next start
// stops with an error naming the partition, the stored offset, the log start
// and the setting, rather than go on from the log start; and, having joined
// the group, that error exit leaves it: the group is empty right away, not
// after the member's session timeout (45 s here).
TEST(OffsetsRealKafkaEndToEnd,
     RecordsDeletedWhileStoppedStopTheStartAndTheErrorExitLeavesTheGroup) {
  const char* address = std::getenv("CLV_REAL_KAFKA");
  if (address == nullptr || *address == '\0') {
    if (testing::InCi()) FAIL() << "CLV_REAL_KAFKA unset under CI";
    GTEST_SKIP() << "CLV_REAL_KAFKA unset (scripts/kafka-start.sh)";
  }
  const std::string bootstrap = address;
  const auto client = testing::ReaderClient(bootstrap);
  TempDir dir;
  const Names names = MakeNames("overtaken");
  auto s = connectors::EnsureTopics(client, names.all(), 1, 1);
  ASSERT_TRUE(s.ok()) << s.message;
  // Events first..first+19 of one partition (offsets first..first+19).
  const auto replay_events = [&](int first) {
    const auto file = dir.path() / ("events-" + std::to_string(first) + ".jsonl");
    {
      std::ofstream out(file);
      for (int i = first; i < first + 20; ++i) {
        out << R"({"event_id":"e)" << i << R"(","user_id":"u)" << i % 7
            << R"(","type":"page_view","ts":)" << 1700000000 + i << "}\n";
      }
    }
    std::string output;
    EXPECT_EQ(Replay(bootstrap, names.input, file, dir.path() / "replay", &output), 0) << output;
  };
  replay_events(0);
  const auto state = dir.path() / "state";
  std::string log;
  ASSERT_EQ(RunClv(RunArgs(bootstrap, names, state), dir.path() / "run-1", &log), 0) << log;
  ASSERT_EQ(ConsumedOfCleanStop(log), 20) << log;

  replay_events(20);
  s = connectors::DeleteRecordsBefore(client, names.input, 0, 30);
  ASSERT_TRUE(s.ok()) << s.message;
  // A member that did not leave would stay in the group for 45 s.
  const auto args =
      RunArgs(bootstrap, names, state, {"--set", "kafka.properties.session.timeout.ms=45000"});
  EXPECT_NE(RunClv(args, dir.path() / "run-2", &log), 0) << log;
  EXPECT_EQ(ConsumedOfCleanStop(log), -1) << log;
  EXPECT_TRUE(Contains(log, "topic '" + names.input +
                                "' [0]: the stored offset 20 is before the log start (log start "
                                "30, log end 40): offsets 20..29 are gone (deleted by retention"));
  EXPECT_TRUE(Contains(log, "retention.ms"));
  EXPECT_TRUE(Contains(log, "--reset-offsets earliest"));

  connectors::GroupDescription group;
  // The leave is asynchronous to the exit by a moment: a few tries.
  const bool empty = testing::WaitUntil(
      [&] {
        s = connectors::DescribeGroup(client, names.group, &group);
        return s.ok() && group.members == 0;
      },
      10000, 200);
  EXPECT_TRUE(s.ok()) << s.message;
  EXPECT_TRUE(empty) << "group " << names.group << " is " << group.state << " with "
                     << group.members << " member(s) after clv run exited on an error";
  EXPECT_EQ(group.state, "Empty");
  (void)connectors::DeleteTopics(client, names.all());
}

}  // namespace
}  // namespace clv
