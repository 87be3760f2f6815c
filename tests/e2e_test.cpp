// End-to-end guarantees of the streaming core, on the real binary, a real
// broker in its own process, and real RocksDB:
//   * crash safety: the service is SIGKILLed at random moments and restarted
//     until it has consumed everything; the RocksDB state and the set of
//     (user_id, seq, score) messages equal those of an uninterrupted run;
//   * bad input lands in the dead-letter topic with a reason and the original
//     bytes, and the service keeps going;
//   * duplicates change nothing but a counter; the same input and config give
//     a byte-identical score stream.
// Each runs against the embedded broker (`clv broker` in its own process) and
// against real Apache Kafka when CLV_REAL_KAFKA=host:port is set (scripts/test.sh
// starts one; under CI=true it must be set).
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <map>
#include <random>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "config/config.h"
#include "connectors/kafka.h"
#include "state/state_store.h"
#include "tests/e2e_support.h"
#include "tests/test_support.h"

namespace clv {
namespace {

using testing::ClvBinary;
using testing::ReaderClient;
using testing::ReadTopic;
using testing::Subprocess;
using testing::TempDir;
using testing::UniqueSuffix;

// A broker for one test: `clv broker` in its own process, or real Kafka.
class Broker {
 public:
  Broker(const std::string& kind, const TempDir& dir) {
    if (kind == "real") {
      const char* address = std::getenv("CLV_REAL_KAFKA");
      if (address) bootstrap_ = address;
      return;
    }
    process_ = std::make_unique<testing::BrokerProcess>(dir);
    bootstrap_ = process_->bootstrap();
  }
  const std::string& bootstrap() const { return bootstrap_; }

 private:
  std::unique_ptr<testing::BrokerProcess> process_;
  std::string bootstrap_;
};

struct Topics {
  std::string input, scores, alerts, dead_letter, group;
};

bool RealBroker() {
  return ::testing::UnitTest::GetInstance()->current_test_info()->value_param() ==
         std::string("\"real\"");
}

// Real Kafka: create the topics with 4 partitions. The embedded broker runs in
// another process (`clv broker`), whose mock cluster has no controller for the
// admin API; it auto-creates topics with the partitions it was started with (4).
void CreateTopics(const std::string& bootstrap, const std::vector<std::string>& topics) {
  if (!RealBroker()) return;
  auto status = connectors::EnsureTopics(ReaderClient(bootstrap), topics, 4, 1);
  EXPECT_TRUE(status.ok()) << status.message;
}

Topics MakeTopics(const std::string& bootstrap, const std::string& name) {
  auto suffix = name + "-" + UniqueSuffix();
  Topics t{"events-" + suffix, "scores-" + suffix, "alerts-" + suffix, "dlq-" + suffix,
           "group-" + suffix};
  CreateTopics(bootstrap, {t.input, t.scores, t.alerts, t.dead_letter});
  return t;
}

std::vector<std::string> RunArgs(const std::string& bootstrap, const Topics& topics,
                                 const std::filesystem::path& state_dir,
                                 std::vector<std::string> extra = {}) {
  std::vector<std::string> args = {
      ClvBinary().string(),
      "run",
      "--quiet",
      "--set",
      "kafka.bootstrap_servers=" + bootstrap,
      "--set",
      "kafka.input_topics=" + topics.input,
      "--set",
      "kafka.scores_topic=" + topics.scores,
      "--set",
      "kafka.alerts_topic=" + topics.alerts,
      "--set",
      "kafka.dead_letter_topic=" + topics.dead_letter,
      "--set",
      "kafka.group_id=" + topics.group,
      // A killed member is dropped from the group after this long.
      "--set",
      "kafka.properties.session.timeout.ms=6000",
      "--set",
      "state.dir=" + state_dir.string(),
      "--set",
      "stream.emit=per_event",
      "--set",
      "stream.batch_max_events=300",
      "--set",
      "stream.idle_exit_ms=4000",
  };
  if (RealBroker()) {
    // Static membership: a restarted instance takes over its partitions at once.
    args.push_back("--set");
    args.push_back("kafka.properties.group.instance.id=" + topics.group + "-instance");
  }
  for (auto& e : extra) args.push_back(std::move(e));
  return args;
}

// Generates events and replays them into topics.input. Returns the events file.
std::filesystem::path GenerateAndReplay(const std::string& bootstrap, const Topics& topics,
                                        const TempDir& dir, int users, int days, int copies = 1) {
  auto events = dir.path() / "events.jsonl";
  std::string output;
  int status =
      testing::RunCommand({ClvBinary().string(), "gen", "--users", std::to_string(users), "--days",
                           std::to_string(days), "--seed", "20261123", "--out", events.string()},
                          dir.path() / "gen", 120000, &output);
  EXPECT_EQ(status, 0) << output;
  for (int copy = 0; copy < copies; ++copy) {
    status = testing::RunCommand({ClvBinary().string(), "replay", events.string(), "--topic",
                                  topics.input, "--bootstrap", bootstrap},
                                 dir.path() / "replay", 120000, &output);
    EXPECT_EQ(status, 0) << output;
  }
  return events;
}

// (user_id, seq) -> score JSON; fails the test if one key has two contents.
std::map<std::pair<std::string, uint64_t>, std::string> ScoresByKey(
    const std::vector<connectors::Message>& messages) {
  std::map<std::pair<std::string, uint64_t>, std::string> scores;
  for (const auto& m : messages) {
    auto json = nlohmann::json::parse(m.value);
    std::pair<std::string, uint64_t> key{json.at("user_id").get<std::string>(),
                                         json.at("seq").get<uint64_t>()};
    auto [it, inserted] = scores.emplace(key, m.value);
    if (!inserted) {
      EXPECT_EQ(it->second, m.value)
          << "two different scores for user " << key.first << " seq " << key.second;
    }
  }
  return scores;
}

// Per user, the score messages in the order they were published.
std::map<std::string, std::vector<std::string>> StreamsByUser(
    const std::vector<connectors::Message>& messages) {
  std::map<std::string, std::vector<std::string>> streams;
  for (const auto& m : messages) streams[m.key].push_back(m.value);
  return streams;
}

std::map<std::string, std::string> AllStates(const std::filesystem::path& dir) {
  config::StateOptions options;
  options.dir = dir.string();
  std::unique_ptr<state::StateStore> store;
  auto status = state::OpenRocksDbStoreReadOnly(options, &store);
  EXPECT_TRUE(status.ok()) << status.message;
  std::map<std::string, std::string> states;
  if (!status.ok()) return states;
  auto snapshot = store->Snapshot();
  status = snapshot->ForEachUser([&](std::string_view id, const state::UserState& s) {
    std::string bytes;
    state::Encode(s, &bytes);
    states.emplace(std::string(id), std::move(bytes));
    return true;
  });
  EXPECT_TRUE(status.ok()) << status.message;
  return states;
}

class EndToEnd : public ::testing::TestWithParam<std::string> {
 protected:
  void SetUp() override {
    if (GetParam() == "real" && std::getenv("CLV_REAL_KAFKA") == nullptr) {
      if (testing::InCi())
        FAIL() << "CLV_REAL_KAFKA must be set under CI (scripts/test.sh sets it)";
      GTEST_SKIP() << "CLV_REAL_KAFKA not set: start one with scripts/kafka-start.sh";
    }
    broker_ = std::make_unique<Broker>(GetParam(), dir_);
    ASSERT_FALSE(broker_->bootstrap().empty()) << "broker did not start";
  }
  TempDir dir_;
  std::unique_ptr<Broker> broker_;
};

TEST_P(EndToEnd, CrashAtRandomMomentsLosesNothingAndCountsNothingTwice) {
  const auto& bootstrap = broker_->bootstrap();
  auto reference = MakeTopics(bootstrap, "ref");
  GenerateAndReplay(bootstrap, reference, dir_, 400, 120);
  auto ref_state = dir_.path() / "state-ref";
  Subprocess ref_run(RunArgs(bootstrap, reference, ref_state), dir_.path() / "ref-run");
  ASSERT_EQ(ref_run.Wait(300000), 0) << ref_run.Stderr();

  // Same input (the same topic), another group, state dir and scores topic.
  Topics crash = reference;
  auto suffix = UniqueSuffix();
  crash.scores = "scores-crash-" + suffix;
  crash.alerts = "alerts-crash-" + suffix;
  crash.dead_letter = "dlq-crash-" + suffix;
  crash.group = "group-crash-" + suffix;
  CreateTopics(bootstrap, {crash.scores, crash.alerts, crash.dead_letter});
  auto crash_state = dir_.path() / "state-crash";
  std::mt19937 random(42);
  std::uniform_int_distribution<int> pause_ms(200, 1500);
  int kills = 0;
  bool finished = false;
  for (int attempt = 0; attempt < 60 && !finished; ++attempt) {
    Subprocess run(RunArgs(bootstrap, crash, crash_state),
                   dir_.path() / ("crash-run-" + std::to_string(attempt)));
    int status = run.Wait(kills < 6 ? pause_ms(random) : 300000);
    if (status == -1) {
      run.Signal(SIGKILL);
      ASSERT_EQ(run.Wait(10000), 128 + SIGKILL);
      ++kills;
      continue;
    }
    ASSERT_EQ(status, 0) << run.Stderr();
    finished = true;
  }
  ASSERT_TRUE(finished);
  EXPECT_GE(kills, 3) << "the run finished before it could be killed often enough";

  auto ref_scores = ScoresByKey(ReadTopic(bootstrap, reference.scores, 1));
  auto crash_scores = ScoresByKey(ReadTopic(bootstrap, crash.scores, ref_scores.size()));
  ASSERT_GT(ref_scores.size(), 1000u);
  EXPECT_EQ(crash_scores.size(), ref_scores.size());
  EXPECT_TRUE(crash_scores == ref_scores) << "score sets differ after crashes";

  auto ref_states = AllStates(ref_state);
  auto crash_states = AllStates(crash_state);
  EXPECT_EQ(ref_states.size(), 400u);
  EXPECT_EQ(crash_states.size(), ref_states.size());
  EXPECT_TRUE(crash_states == ref_states) << "RocksDB states differ after crashes";
}

TEST_P(EndToEnd, BadInputGoesToDeadLetterWithReasonAndOriginalBytes) {
  const auto& bootstrap = broker_->bootstrap();
  auto topics = MakeTopics(bootstrap, "bad");
  std::unique_ptr<connectors::KafkaSink> sink;
  ASSERT_TRUE(connectors::KafkaSink::Create(ReaderClient(bootstrap), &sink).ok());
  const std::string huge(900000, 'x');
  std::vector<std::string> bad = {
      R"({"user_id":"u1","type":"purchase","ts":1700000000000,"amount":)",  // truncated
      R"({"user_id":"u1","type":"purchase","ts":1700000000000,"amount":"ten"})",
      R"({"type":"page_view","ts":1700000000000})",
      R"({"user_id":"u1","type":"purchase","ts":1700000000000,"amount":NaN})",
      R"({"user_id":"u1","type":"purchase","ts":1700000000000,"amount":1e300})",
      R"({"user_id":"u1","type":"purchase","ts":1700000000000,"amount":-5})",
      R"({"user_id":"u1","type":"teleport","ts":1700000000000})",
      "{\"user_id\":\"u\xff\xfe\",\"type\":\"page_view\",\"ts\":1700000000000}",
      R"({"user_id":"u1","type":"page_view","ts":99999999999999})",
      "not json at all",
      R"({"user_id":"u1","type":"page_view","ts":1700000000000,"pad":")" + huge + "\"}",
      // Under the input limit, but its dead letter (value + headers) would
      // not fit the producer's 1,000,000-byte limit: truncated to fit.
      "{" + std::string(999898, 'y') + "!",
  };
  std::vector<std::string> good;
  for (int i = 0; i < 20; ++i) {
    good.push_back(R"({"event_id":"g)" + std::to_string(i) + R"(","user_id":"good)" +
                   std::to_string(i % 5) + R"(","type":"purchase","ts":)" +
                   std::to_string(1700000000000LL + i * 60000) + R"(,"amount":12.5})");
  }
  std::set<std::string> bad_set(bad.begin(), bad.end());
  for (size_t i = 0; i < std::max(bad.size(), good.size()); ++i) {
    if (i < bad.size()) {
      ASSERT_TRUE(sink->Send(topics.input, "u1", bad[i]).ok());
    }
    if (i < good.size()) {
      ASSERT_TRUE(sink->Send(topics.input, "u1", good[i]).ok());
    }
  }
  ASSERT_TRUE(sink->Flush(30000).ok());

  // The 900 kB message is over this limit (and under the broker's).
  Subprocess run(RunArgs(bootstrap, topics, dir_.path() / "state",
                         {"--set", "validation.max_message_bytes=500000"}),
                 dir_.path() / "run");
  ASSERT_EQ(run.Wait(120000), 0) << run.Stderr();

  auto dead = ReadTopic(bootstrap, topics.dead_letter, bad.size());
  ASSERT_EQ(dead.size(), bad.size());
  std::set<std::string> originals;
  auto header = [](const connectors::Message& m, const std::string& name) {
    for (const auto& [key, value] : m.headers) {
      if (key == name) return value;
    }
    return std::string();
  };
  for (const auto& m : dead) {
    // The record is the original message; the context is in its headers.
    if (header(m, "clv.dlq.truncated") == "true") {
      // Too large to carry whole: the start of it, and what it was.
      const std::string& original = bad.back();
      EXPECT_EQ(header(m, "clv.dlq.original_value_bytes"), std::to_string(original.size()));
      EXPECT_EQ(header(m, "clv.dlq.original_value_fnv1a64").size(), 16u);
      EXPECT_GT(m.value.size(), 990000u);
      EXPECT_LT(m.value.size(), original.size());
      EXPECT_EQ(original.compare(0, m.value.size(), m.value), 0) << "not a prefix";
      originals.insert(original);
    } else {
      originals.insert(m.value);
    }
    EXPECT_FALSE(header(m, "clv.dlq.reason").empty());
    EXPECT_EQ(header(m, "clv.dlq.topic"), topics.input);
    EXPECT_FALSE(header(m, "clv.dlq.partition").empty());
    EXPECT_GE(std::stoll(header(m, "clv.dlq.offset")), 0);
  }
  EXPECT_EQ(originals, bad_set);
  auto scores = ReadTopic(bootstrap, topics.scores, good.size());
  EXPECT_EQ(scores.size(), good.size()) << "every good event still scored (per_event)";
}

TEST_P(EndToEnd, DuplicatesChangeNothingAndReplaysAreByteIdentical) {
  const auto& bootstrap = broker_->bootstrap();
  auto once = MakeTopics(bootstrap, "once");
  auto events = GenerateAndReplay(bootstrap, once, dir_, 150, 60);
  auto twice = MakeTopics(bootstrap, "twice");
  // Every event sent twice: the second copies are exact re-sends.
  for (int copy = 0; copy < 2; ++copy) {
    std::string output;
    ASSERT_EQ(testing::RunCommand({ClvBinary().string(), "replay", events.string(), "--topic",
                                   twice.input, "--bootstrap", bootstrap},
                                  dir_.path() / "replay-twice", 120000, &output),
              0)
        << output;
  }
  // Event ids are kept for longer than the generated period, so the copies
  // sent after the whole stream are still recognised.
  const std::vector<std::string> keep_ids = {"--set", "stream.dedup_retention_days=365"};
  Subprocess run_once(RunArgs(bootstrap, once, dir_.path() / "state-once", keep_ids),
                      dir_.path() / "run-once");
  ASSERT_EQ(run_once.Wait(300000), 0) << run_once.Stderr();
  Subprocess run_twice(RunArgs(bootstrap, twice, dir_.path() / "state-twice", keep_ids),
                       dir_.path() / "run-twice");
  ASSERT_EQ(run_twice.Wait(300000), 0) << run_twice.Stderr();
  // Same input again, fresh state: a replay.
  auto again = once;
  again.scores = "scores-again-" + UniqueSuffix();
  again.group = "group-again-" + UniqueSuffix();
  CreateTopics(bootstrap, {again.scores});
  Subprocess run_again(RunArgs(bootstrap, again, dir_.path() / "state-again", keep_ids),
                       dir_.path() / "run-again");
  ASSERT_EQ(run_again.Wait(300000), 0) << run_again.Stderr();

  auto scores_once = ReadTopic(bootstrap, once.scores, 1);
  ASSERT_GT(scores_once.size(), 500u);
  auto streams_once = StreamsByUser(scores_once);
  auto streams_twice = StreamsByUser(ReadTopic(bootstrap, twice.scores, scores_once.size()));
  auto streams_again = StreamsByUser(ReadTopic(bootstrap, again.scores, scores_once.size()));
  EXPECT_TRUE(streams_twice == streams_once) << "duplicates changed the score stream";
  EXPECT_TRUE(streams_again == streams_once) << "a replay of the same input is not byte-identical";
  EXPECT_TRUE(AllStates(dir_.path() / "state-twice") == AllStates(dir_.path() / "state-once"));
  auto lines = testing::ReadFile(events);
  auto event_count = std::count(lines.begin(), lines.end(), '\n');
  EXPECT_NE(run_twice.Stderr().find(" duplicates=" + std::to_string(event_count) + " "),
            std::string::npos)
      << "the duplicate counter should count every re-sent event: " << run_twice.Stderr();
}

INSTANTIATE_TEST_SUITE_P(Brokers, EndToEnd, ::testing::Values("embedded", "real"),
                         [](const auto& info) { return info.param; });

}  // namespace
}  // namespace clv
