// State that follows its partitions (issue 11) on real Kafka, with the real
// `clv` binary: instance A reads the first third of a generated stream and
// stops; retention then deletes every input record it read (DeleteRecords);
// instance B alone reads the second third (every partition moved to it);
// then A and B in one group read the last third. Every user's
// state (which holds the latest score: clv, churn risk, seq) ends equal to a
// single uninterrupted instance over the whole stream; without the changelog
// the second instance has none of the moved users and the deleted records
// cannot be read again. Then a wiped state directory restores from the
// changelog and ends equal too.
//
// Scale and kill (ScaleRealKafka): three instances on 32 partitions join one
// by one while a 20,000-user stream arrives, one is killed with SIGKILL at a
// random moment and restarted, then the group scales down to one; the last
// instance's states and the set of (user_id, seq) -> score bytes equal one
// uninterrupted instance over the same stream.
#include <signal.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

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
using testing::TempDir;
using Users = std::map<std::string, state::UserState>;

constexpr int kPartitions = 8;

struct Names {
  std::string input, scores, alerts, dead_letter, group;
};

Names MakeNames(const std::string& name) {
  auto suffix = name + "-" + testing::UniqueSuffix();
  return {"events-" + suffix, "scores-" + suffix, "alerts-" + suffix, "dlq-" + suffix,
          "group-" + suffix};
}

std::vector<std::string> RunArgs(const std::string& bootstrap, const Names& names,
                                 const std::filesystem::path& state_dir, bool changelog,
                                 const std::vector<std::string>& extra = {}) {
  std::vector<std::string> args = {ClvBinary().string(),
                                   "run",
                                   "--quiet",
                                   "--set",
                                   "kafka.bootstrap_servers=" + bootstrap,
                                   "--set",
                                   "kafka.input_topics=" + names.input,
                                   "--set",
                                   "kafka.scores_topic=" + names.scores,
                                   "--set",
                                   "kafka.alerts_topic=" + names.alerts,
                                   "--set",
                                   "kafka.dead_letter_topic=" + names.dead_letter,
                                   "--set",
                                   "kafka.group_id=" + names.group,
                                   "--set",
                                   "state.dir=" + state_dir.string(),
                                   "--set",
                                   "state.changelog=" + std::string(changelog ? "true" : "false"),
                                   "--set",
                                   "stream.idle_exit_ms=6000",
                                   "--set",
                                   "kafka.properties.session.timeout.ms=6000",
                                   "--set",
                                   "kafka.properties.heartbeat.interval.ms=500"};
  for (const auto& setting : extra) {
    args.push_back("--set");
    args.push_back(setting);
  }
  return args;
}

int Replay(const std::string& bootstrap, const std::string& topic,
           const std::filesystem::path& file, const std::filesystem::path& log_prefix) {
  std::string output;
  int status = testing::RunCommand(
      {ClvBinary().string(), "replay", file.string(), "--topic", topic, "--bootstrap", bootstrap},
      log_prefix, 120000, &output);
  EXPECT_EQ(status, 0) << output;
  return status;
}

struct Store {
  Users users;
  std::map<int32_t, int64_t> offsets;  // of the input topic
};

Store ReadStore(const std::filesystem::path& dir, const std::string& topic) {
  Store out;
  config::StateOptions options;
  options.dir = dir.string();
  std::unique_ptr<state::StateStore> store;
  auto status = state::OpenRocksDbStoreReadOnly(options, &store);
  EXPECT_TRUE(status.ok()) << status.message;
  if (!status.ok()) return out;
  status = store->Snapshot()->ForEachUser([&](std::string_view id, const state::UserState& s) {
    out.users[std::string(id)] = s;
    return true;
  });
  EXPECT_TRUE(status.ok()) << status.message;
  std::vector<state::TopicPartitionOffset> offsets;
  EXPECT_TRUE(store->GetAllOffsets(&offsets).ok());
  for (const auto& o : offsets) {
    if (o.topic == topic) out.offsets[o.partition] = o.offset;
  }
  return out;
}

// Each user as the instance that read its partition furthest has it.
Users Merge(const std::vector<Store>& stores) {
  Users merged;
  for (int32_t p = 0; p < kPartitions; ++p) {
    const Store* owner = nullptr;
    for (const auto& store : stores) {
      auto it = store.offsets.find(p);
      if (it == store.offsets.end()) continue;
      if (owner == nullptr || it->second > owner->offsets.at(p)) owner = &store;
    }
    if (owner == nullptr) continue;
    for (const auto& [id, s] : owner->users) {
      if (s.partition == p) merged[id] = s;
    }
  }
  return merged;
}

// Users whose states differ (or that one side lacks), for the message.
std::string Differences(const Users& expected, const Users& actual) {
  int differ = 0;
  std::string first;
  for (const auto& [id, s] : expected) {
    auto it = actual.find(id);
    if (it == actual.end() || !(it->second == s)) {
      if (differ++ == 0) first = id;
    }
  }
  if (differ == 0 && expected.size() == actual.size()) return "";
  return std::to_string(differ) + " of " + std::to_string(expected.size()) +
         " users differ or are missing (first: " + first + "); " + std::to_string(actual.size()) +
         " users found";
}

// The first few differing users as each store has them, for a failure message.
std::string DescribeDifferences(const Users& expected, const std::vector<Store>& stores,
                                size_t at_most = 8) {
  auto describe = [](const state::UserState& s) {
    return "seq " + std::to_string(s.seq) + " events " + std::to_string(s.aggregates.events) +
           " purchases " + std::to_string(s.aggregates.purchases) + " last_event_ms " +
           std::to_string(s.aggregates.last_event_ms) + " next_timer_ms " +
           std::to_string(s.next_timer_ms);
  };
  const Users merged = Merge(stores);
  std::string out;
  size_t shown = 0;
  for (const auto& [id, s] : expected) {
    auto it = merged.find(id);
    if (it != merged.end() && it->second == s) continue;
    if (shown++ == at_most) break;
    out += "\n" + id + " (partition " + std::to_string(s.partition) + ") expected: " + describe(s);
    for (size_t i = 0; i < stores.size(); ++i) {
      auto u = stores[i].users.find(id);
      auto o = stores[i].offsets.find(s.partition);
      out += std::string("\n  ") + static_cast<char>('A' + i) + " (offset " +
             (o == stores[i].offsets.end() ? std::string("-") : std::to_string(o->second)) +
             "): " + (u == stores[i].users.end() ? std::string("absent") : describe(u->second));
    }
  }
  return out;
}

class ChangelogRealKafka : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* address = std::getenv("CLV_REAL_KAFKA");
    if (address == nullptr || *address == '\0') {
      if (testing::InCi()) FAIL() << "CLV_REAL_KAFKA unset under CI";
      GTEST_SKIP() << "CLV_REAL_KAFKA unset (scripts/kafka-start.sh)";
    }
    bootstrap_ = address;
    client_ = testing::ReaderClient(bootstrap_);
    // A generated stream, split in two parts (time order).
    std::string output;
    const auto file = dir_.path() / "all.jsonl";
    ASSERT_EQ(testing::RunCommand({ClvBinary().string(), "gen", "--users", "2000", "--days", "120",
                                   "--seed", "11", "--out", file.string()},
                                  dir_.path() / "gen", 120000, &output),
              0)
        << output;
    std::ifstream in(file);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) lines.push_back(line);
    }
    ASSERT_GT(lines.size(), 2000u);
    std::ofstream first(first_), second(second_), third(third_);
    for (size_t i = 0; i < lines.size(); ++i) {
      (i < lines.size() / 3       ? first
       : i < 2 * lines.size() / 3 ? second
                                  : third)
          << lines[i] << "\n";
    }
  }

  void CreateTopics(const Names& names) {
    auto status = connectors::EnsureTopics(client_, {names.input}, kPartitions, 1);
    ASSERT_TRUE(status.ok()) << status.message;
    status =
        connectors::EnsureTopics(client_, {names.scores, names.alerts, names.dead_letter}, 1, 1);
    ASSERT_TRUE(status.ok()) << status.message;
  }

  // One uninterrupted instance over the whole stream.
  Users Reference() {
    const Names names = MakeNames("reference");
    CreateTopics(names);
    Replay(bootstrap_, names.input, first_, dir_.path() / "replay-ref-1");
    Replay(bootstrap_, names.input, second_, dir_.path() / "replay-ref-2");
    Replay(bootstrap_, names.input, third_, dir_.path() / "replay-ref-3");
    std::string log;
    testing::Subprocess run(RunArgs(bootstrap_, names, dir_.path() / "ref", false),
                            dir_.path() / "run-ref");
    EXPECT_EQ(run.Wait(120000), 0) << run.Stderr();
    return ReadStore(dir_.path() / "ref", names.input).users;
  }

  // The retention case; returns the merged users of both instances.
  Users MovedAfterRetention(bool changelog, const Names& names) {
    CreateTopics(names);
    Replay(bootstrap_, names.input, first_, dir_.path() / ("replay-1-" + names.group));
    const auto a = dir_.path() / ("a-" + names.group);
    const auto b = dir_.path() / ("b-" + names.group);
    {
      testing::Subprocess run(RunArgs(bootstrap_, names, a, changelog),
                              dir_.path() / ("run-a1-" + names.group));
      EXPECT_EQ(run.Wait(120000), 0) << run.Stderr();
    }
    // Retention deletes everything the first instance read.
    for (const auto& [p, offset] : ReadStore(a, names.input).offsets) {
      auto status = connectors::DeleteRecordsBefore(client_, names.input, p, offset);
      EXPECT_TRUE(status.ok()) << status.message;
    }
    Replay(bootstrap_, names.input, second_, dir_.path() / ("replay-2-" + names.group));
    {
      testing::Subprocess run(RunArgs(bootstrap_, names, b, changelog),
                              dir_.path() / ("run-b1-" + names.group));
      b_status_ = run.Wait(120000);
      b_log_ = run.Stderr();
      if (changelog) {
        EXPECT_EQ(b_status_, 0) << b_log_;
      }
    }
    Replay(bootstrap_, names.input, third_, dir_.path() / ("replay-3-" + names.group));
    testing::Subprocess run_a(RunArgs(bootstrap_, names, a, changelog),
                              dir_.path() / ("run-a2-" + names.group));
    testing::Subprocess run_b(RunArgs(bootstrap_, names, b, changelog),
                              dir_.path() / ("run-b2-" + names.group));
    const int status_a = run_a.Wait(120000);
    const int status_b = run_b.Wait(120000);
    if (changelog) {
      EXPECT_EQ(status_a, 0) << run_a.Stderr();
      EXPECT_EQ(status_b, 0) << run_b.Stderr();
    }
    return Merge({ReadStore(a, names.input), ReadStore(b, names.input)});
  }

  TempDir dir_;
  std::string bootstrap_;
  connectors::ClientOptions client_;
  std::filesystem::path first_ = dir_.path() / "first.jsonl";
  std::filesystem::path second_ = dir_.path() / "second.jsonl";
  std::filesystem::path third_ = dir_.path() / "third.jsonl";
  int b_status_ = 0;  // B's run alone
  std::string b_log_;
};

TEST_F(ChangelogRealKafka, PartitionsMovedAfterRetentionEndEqualToOneInstance) {
  const Users expected = Reference();
  ASSERT_GT(expected.size(), 1000u);
  const Names names = MakeNames("moved");
  const Users merged = MovedAfterRetention(true, names);
  EXPECT_EQ(Differences(expected, merged), "");

  // A wiped state directory restores from the changelog.
  const auto wiped = dir_.path() / "wiped";
  testing::Subprocess run(RunArgs(bootstrap_, names, wiped, true), dir_.path() / "run-wiped");
  EXPECT_EQ(run.Wait(120000), 0) << run.Stderr();
  const Store restored = ReadStore(wiped, names.input);
  EXPECT_EQ(Differences(expected, restored.users), "");
  EXPECT_NE(run.Stderr().find("partition restored from the state changelog"), std::string::npos);
}

TEST_F(ChangelogRealKafka, WithoutTheChangelogTheMovedUsersAreLost) {
  const Users expected = Reference();
  const Users merged = MovedAfterRetention(false, MakeNames("nochangelog"));
  // B cannot read what retention deleted and has none of its users: it
  // stops with an error, or (told to reset) ends with other states.
  EXPECT_TRUE(b_status_ != 0 || !Differences(expected, merged).empty()) << b_log_;
}

// ---------------------------------------------------------------------------
// Scale and kill.

constexpr int kScalePartitions = 32;

// (user_id, seq) -> every distinct score text published for it.
using ScoreTexts = std::map<std::pair<std::string, uint64_t>, std::set<std::string>>;

ScoreTexts ReadScores(const std::string& bootstrap, const std::string& topic, size_t at_least,
                      size_t* messages) {
  ScoreTexts scores;
  const auto read = testing::ReadTopic(bootstrap, topic, at_least);
  *messages = read.size();
  for (const auto& message : read) {
    const auto json = nlohmann::json::parse(message.value);
    scores[{json.at("user_id").get<std::string>(), json.at("seq").get<uint64_t>()}].insert(
        message.value);
  }
  return scores;
}

class ScaleRealKafka : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* address = std::getenv("CLV_REAL_KAFKA");
    if (address == nullptr || *address == '\0') {
      if (testing::InCi()) FAIL() << "CLV_REAL_KAFKA unset under CI";
      GTEST_SKIP() << "CLV_REAL_KAFKA unset (scripts/kafka-start.sh)";
    }
    bootstrap_ = address;
    client_ = testing::ReaderClient(bootstrap_);
    std::string output;
    ASSERT_EQ(testing::RunCommand({ClvBinary().string(), "gen", "--users", "20000", "--days", "20",
                                   "--seed", "12", "--out", all_.string()},
                                  dir_.path() / "gen", 120000, &output),
              0)
        << output;
    std::ifstream in(all_);
    std::vector<std::string> lines;
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) lines.push_back(line);
    }
    ASSERT_GE(lines.size(), 300000u);
    events_ = static_cast<int64_t>(lines.size());
    // Six parts in time order, sent one by one while the group changes; the
    // fourth, during which an instance is killed, is the largest.
    static constexpr double kPartEnds[kParts] = {0.1, 0.2, 0.3, 0.7, 0.85, 1.0};
    for (size_t part = 0; part < kParts; ++part) {
      parts_.push_back(dir_.path() / ("part-" + std::to_string(part) + ".jsonl"));
      std::ofstream out(parts_.back());
      const size_t begin = part == 0 ? 0 : static_cast<size_t>(lines.size() * kPartEnds[part - 1]);
      const size_t end = static_cast<size_t>(lines.size() * kPartEnds[part]);
      for (size_t i = begin; i < end; ++i) out << lines[i] << "\n";
      part_end_.push_back(static_cast<int64_t>(end));
    }
  }

  void CreateTopics(const Names& names) {
    auto status = connectors::EnsureTopics(client_, {names.input}, kScalePartitions, 1);
    ASSERT_TRUE(status.ok()) << status.message;
    status =
        connectors::EnsureTopics(client_, {names.scores, names.alerts, names.dead_letter}, 1, 1);
    ASSERT_TRUE(status.ok()) << status.message;
  }

  // Input offsets the group has committed to Kafka, summed over partitions.
  int64_t Committed(const Names& names) {
    int64_t sum = 0;
    for (const auto& [p, offset] :
         testing::CommittedOffsets(bootstrap_, names.group, names.input, kScalePartitions)) {
      sum += offset;
    }
    return sum;
  }

  // Waits until the group has committed the first `events` input events.
  bool WaitCommitted(const Names& names, int64_t events, int timeout_ms) {
    return testing::WaitUntil([&] { return Committed(names) >= events; }, timeout_ms, 500);
  }

  std::vector<std::string> Args(const Names& names, const std::filesystem::path& state_dir,
                                int idle_exit_ms) {
    // CLVTEST_SCALE_CHANGELOG=false shows what the changelog is for: the test fails.
    const char* changelog = std::getenv("CLVTEST_SCALE_CHANGELOG");
    return RunArgs(
        bootstrap_, names, state_dir, changelog == nullptr || std::string(changelog) != "false",
        {"stream.emit=per_event", "stream.idle_exit_ms=" + std::to_string(idle_exit_ms)});
  }

  static constexpr size_t kParts = 6;
  TempDir dir_;
  std::string bootstrap_;
  connectors::ClientOptions client_;
  std::filesystem::path all_ = dir_.path() / "all.jsonl";
  std::vector<std::filesystem::path> parts_;
  std::vector<int64_t> part_end_;  // events up to the end of each part
  int64_t events_ = 0;
};

TEST_F(ScaleRealKafka, ThreeInstancesScaledUpKilledAndDownEqualOneInstance) {
  // The reference: one uninterrupted instance over the whole stream.
  const Names reference = MakeNames("scale-reference");
  CreateTopics(reference);
  Replay(bootstrap_, reference.input, all_, dir_.path() / "replay-ref");
  {
    testing::Subprocess run(Args(reference, dir_.path() / "ref", 6000), dir_.path() / "run-ref");
    ASSERT_EQ(run.Wait(300000), 0) << run.Stderr();
  }
  const Users expected = ReadStore(dir_.path() / "ref", reference.input).users;
  ASSERT_EQ(expected.size(), 20000u);
  size_t reference_messages = 0;
  const ScoreTexts expected_scores =
      ReadScores(bootstrap_, reference.scores, static_cast<size_t>(events_), &reference_messages);

  // The seed of the kill's moment and victim, printed so a failure can be rerun.
  const char* seed_env = std::getenv("CLVTEST_SCALE_SEED");
  const unsigned seed = seed_env != nullptr
                            ? static_cast<unsigned>(std::strtoul(seed_env, nullptr, 10))
                            : std::random_device{}();
  std::mt19937 random(seed);
  const int kill_delay_ms = std::uniform_int_distribution<int>(0, 500)(random);
  const int victim = std::uniform_int_distribution<int>(0, 2)(random);
  std::printf("scale test: CLVTEST_SCALE_SEED=%u (kill instance %c after %d ms)\n", seed,
              "ABC"[victim], kill_delay_ms);
  RecordProperty("seed", std::to_string(seed));

  const Names names = MakeNames("scale");
  CreateTopics(names);
  const std::vector<std::filesystem::path> state = {dir_.path() / "a", dir_.path() / "b",
                                                    dir_.path() / "c"};
  std::vector<std::unique_ptr<testing::Subprocess>> instances(3);
  std::vector<std::string> logs;  // of the instances stopped so far
  auto start = [&](int i) {
    const std::string name = std::string(1, "abc"[i]) + "-" + std::to_string(logs.size());
    instances[i] = std::make_unique<testing::Subprocess>(Args(names, state[i], 0),
                                                         dir_.path() / ("run-" + name));
  };
  auto stop = [&](int i, int signal_number) {
    instances[i]->Signal(signal_number);
    const int status = instances[i]->Wait(120000);
    if (signal_number == SIGKILL) {
      EXPECT_EQ(status, 128 + SIGKILL);
    } else {
      EXPECT_EQ(status, 0) << instances[i]->Stderr();
    }
    logs.push_back(instances[i]->Stderr());
    instances[i].reset();
  };
  const int timeout_ms = 120000;
  // The end of every running instance's log, for a failure message.
  auto running_logs = [&] {
    std::string out;
    for (int i = 0; i < 3; ++i) {
      if (instances[i] == nullptr) continue;
      const std::string log = instances[i]->Stderr();
      out += std::string("\n--- instance ") + "ABC"[i] + " (last 6000 bytes of its log):\n" +
             log.substr(log.size() > 6000 ? log.size() - 6000 : 0);
    }
    std::vector<connectors::PartitionRange> ranges;
    EXPECT_TRUE(connectors::TopicRanges(client_, names.input, &ranges).ok());
    const auto committed =
        testing::CommittedOffsets(bootstrap_, names.group, names.input, kScalePartitions);
    out += "\n--- partitions behind their log end (committed / end):";
    for (const auto& range : ranges) {
      auto it = committed.find(range.partition);
      const int64_t at = it == committed.end() ? -1 : it->second;
      if (at < range.log_end) {
        out += " " + std::to_string(range.partition) + ": " + std::to_string(at) + " / " +
               std::to_string(range.log_end) + " (stored:";
        for (int i = 0; i < 3; ++i) {
          const auto stored = ReadStore(state[i], names.input).offsets;
          auto o = stored.find(range.partition);
          out += std::string(" ") + "ABC"[i] + " " +
                 (o == stored.end() ? std::string("-") : std::to_string(o->second));
        }
        out += ")";
      }
    }
    return out;
  };

  // Up to three, one by one, each while a part of the stream is read.
  Replay(bootstrap_, names.input, parts_[0], dir_.path() / "replay-0");
  start(0);
  ASSERT_TRUE(WaitCommitted(names, part_end_[0], timeout_ms)) << running_logs();
  Replay(bootstrap_, names.input, parts_[1], dir_.path() / "replay-1");
  start(1);
  ASSERT_TRUE(WaitCommitted(names, part_end_[1], timeout_ms)) << running_logs();
  Replay(bootstrap_, names.input, parts_[2], dir_.path() / "replay-2");
  start(2);
  ASSERT_TRUE(WaitCommitted(names, part_end_[2], timeout_ms)) << running_logs();
  // Retention deletes what the group has read: from here on a partition that
  // moves can only get its state from the changelog.
  for (const auto& [p, offset] :
       testing::CommittedOffsets(bootstrap_, names.group, names.input, kScalePartitions)) {
    auto status = connectors::DeleteRecordsBefore(client_, names.input, p, offset);
    EXPECT_TRUE(status.ok()) << status.message;
  }
  {
    std::vector<connectors::PartitionRange> ranges;
    ASSERT_TRUE(connectors::TopicRanges(client_, names.input, &ranges).ok());
    int64_t deleted = 0;
    for (const auto& range : ranges) deleted += range.log_start;
    EXPECT_EQ(deleted, part_end_[2]);
    std::printf("scale test: retention deleted %lld events\n", static_cast<long long>(deleted));
  }
  // One is killed while the next part arrives and the three read it, and
  // comes back.
  std::thread replay([&] { Replay(bootstrap_, names.input, parts_[3], dir_.path() / "replay-3"); });
  // Once some of it is committed, at a random moment after that.
  EXPECT_TRUE(WaitCommitted(names, part_end_[2] + 1, timeout_ms));
  std::this_thread::sleep_for(std::chrono::milliseconds(kill_delay_ms));
  const int64_t committed_at_kill = Committed(names);
  stop(victim, SIGKILL);
  replay.join();
  start(victim);
  ASSERT_TRUE(WaitCommitted(names, part_end_[3], timeout_ms)) << running_logs();
  // Down to one (the victim) while the rest arrives.
  Replay(bootstrap_, names.input, parts_[4], dir_.path() / "replay-4");
  for (int i = 0; i < 3; ++i) {
    if (i != victim) stop(i, SIGTERM);
  }
  Replay(bootstrap_, names.input, parts_[5], dir_.path() / "replay-5");
  ASSERT_TRUE(WaitCommitted(names, events_, timeout_ms)) << running_logs();
  stop(victim, SIGTERM);

  // Every instance owned partitions at some point, and the last one restored
  // the partitions it took over from the changelog.
  int assigned = 0;
  for (const auto& log : logs) assigned += log.find("partitions assigned") != std::string::npos;
  EXPECT_EQ(assigned, static_cast<int>(logs.size()));
  EXPECT_NE(logs.back().find("partition restored from the state changelog"), std::string::npos);

  // The last instance owns every partition: its states are the reference's.
  const Store last = ReadStore(state[victim], names.input);
  EXPECT_EQ(Differences(expected, last.users), "");
  // Every (user_id, seq) scored once or re-sent with the same bytes.
  size_t messages = 0;
  const ScoreTexts scores = ReadScores(bootstrap_, names.scores, reference_messages, &messages);
  size_t differing = 0, missing = 0, extra = 0;
  for (const auto& [key, texts] : expected_scores) {
    auto it = scores.find(key);
    if (it == scores.end()) {
      ++missing;
    } else if (it->second != texts) {
      ++differing;
    }
  }
  for (const auto& [key, texts] : scores) extra += expected_scores.count(key) == 0;
  EXPECT_EQ(differing, 0u);
  EXPECT_EQ(missing, 0u);
  EXPECT_EQ(extra, 0u);
  EXPECT_EQ(expected_scores.size(), reference_messages);  // the reference sent each once
  std::printf(
      "scale test: %lld events, %zu scores in the reference, %zu published (%zu re-sent); "
      "%lld of %lld events of the killed part committed at the kill\n",
      static_cast<long long>(events_), reference_messages, messages, messages - scores.size(),
      static_cast<long long>(committed_at_kill - part_end_[2]),
      static_cast<long long>(part_end_[3] - part_end_[2]));
}

// Broker restart mid-stream: three instances read a stream on a broker of the
// test's own (OwnKafka), which is stopped for 20 s while they are in the
// middle of it and started again on its data. Every instance waits it out and
// resumes; the states of the partitions' owners and the set of
// (user_id, seq) -> score bytes equal one uninterrupted instance.
// The sessions expire during the outage (6 s): it found that an instance
// whose partitions were lost still committed them after their next owner had
// restored them (1 run in 4-5: up to 124 of 4,000 users wrong), fixed by
// Processor::OnLost and KafkaSource's rejoin after an outage longer than the
// session (docs/KAFKA.md). CLVTEST_KEEP_FAILED=1 keeps a failed run's logs.
TEST(BrokerRestartRealKafka, ThreeInstancesResumeAndEndEqualToOneInstance) {
  // CLV_REAL_KAFKA says the Kafka jars are there (scripts/kafka-fetch.sh).
  if (std::getenv("CLV_REAL_KAFKA") == nullptr) {
    if (testing::InCi()) FAIL() << "CLV_REAL_KAFKA unset under CI (scripts/kafka-start.sh)";
    GTEST_SKIP() << "CLV_REAL_KAFKA unset (scripts/kafka-start.sh)";
  }
  TempDir dir;
  testing::OwnKafka kafka(dir.path());
  ASSERT_NE(kafka.port(), 0) << "no free port pair for the test's broker";
  ASSERT_EQ(kafka.Start(false, "kafka-start"), 0) << "scripts/kafka-start.sh " << kafka.port();
  const std::string bootstrap = kafka.bootstrap();
  const connectors::ClientOptions client = testing::ReaderClient(bootstrap);

  const auto all = dir.path() / "all.jsonl";
  std::string output;
  ASSERT_EQ(testing::RunCommand({ClvBinary().string(), "gen", "--users", "4000", "--days", "20",
                                 "--seed", "13", "--out", all.string()},
                                dir.path() / "gen", 120000, &output),
            0)
      << output;
  std::vector<std::string> lines;
  {
    std::ifstream in(all);
    for (std::string line; std::getline(in, line);) {
      if (!line.empty()) lines.push_back(line);
    }
  }
  ASSERT_GE(lines.size(), 50000u);
  const auto events = static_cast<int64_t>(lines.size());
  // Three parts: before, during (the broker stops while it is read) and after.
  std::vector<std::filesystem::path> parts;
  std::vector<int64_t> part_end;
  for (double end_fraction : {0.2, 0.9, 1.0}) {
    const size_t begin = part_end.empty() ? 0 : static_cast<size_t>(part_end.back());
    const auto end = static_cast<size_t>(static_cast<double>(lines.size()) * end_fraction);
    parts.push_back(dir.path() / ("part-" + std::to_string(parts.size()) + ".jsonl"));
    std::ofstream out(parts.back());
    for (size_t i = begin; i < end; ++i) out << lines[i] << "\n";
    part_end.push_back(static_cast<int64_t>(end));
  }
  auto create_topics = [&](const Names& names) {
    auto status = connectors::EnsureTopics(client, {names.input}, kPartitions, 1);
    ASSERT_TRUE(status.ok()) << status.message;
    status =
        connectors::EnsureTopics(client, {names.scores, names.alerts, names.dead_letter}, 1, 1);
    ASSERT_TRUE(status.ok()) << status.message;
  };
  // Small batches, each waiting for its acknowledgements, so that the
  // instances are still in the middle of the second part when the broker
  // stops (at full speed they read it in a fraction of a second).
  auto args = [&](const Names& names, const std::filesystem::path& state_dir, int idle_exit_ms) {
    return RunArgs(bootstrap, names, state_dir, true,
                   {"stream.emit=per_event", "stream.idle_exit_ms=" + std::to_string(idle_exit_ms),
                    "stream.batch_max_events=100", "stream.commits_in_flight=0"});
  };

  // The reference: one uninterrupted instance over the whole stream.
  const Names reference = MakeNames("restart-reference");
  create_topics(reference);
  Replay(bootstrap, reference.input, all, dir.path() / "replay-ref");
  {
    testing::Subprocess run(args(reference, dir.path() / "ref", 6000), dir.path() / "run-ref");
    ASSERT_EQ(run.Wait(300000), 0) << run.Stderr();
  }
  const Users expected = ReadStore(dir.path() / "ref", reference.input).users;
  ASSERT_EQ(expected.size(), 4000u);
  size_t reference_messages = 0;
  const ScoreTexts expected_scores =
      ReadScores(bootstrap, reference.scores, static_cast<size_t>(events), &reference_messages);

  const Names names = MakeNames("restart");
  create_topics(names);
  auto committed = [&] {
    int64_t sum = 0;
    for (const auto& [p, offset] :
         testing::CommittedOffsets(bootstrap, names.group, names.input, kPartitions)) {
      sum += offset;
    }
    return sum;
  };
  auto wait_committed = [&](int64_t at_least, int timeout_ms) {
    return testing::WaitUntil([&] { return committed() >= at_least; }, timeout_ms, 500);
  };
  std::vector<std::filesystem::path> state;
  std::vector<std::unique_ptr<testing::Subprocess>> instances;
  for (int i = 0; i < 3; ++i) {
    state.push_back(dir.path() / std::string(1, "abc"[i]));
    instances.push_back(std::make_unique<testing::Subprocess>(
        args(names, state.back(), 0), dir.path() / ("run-" + std::string(1, "abc"[i]))));
  }
  auto logs = [&] {
    std::string out;
    for (int i = 0; i < 3; ++i) {
      const std::string log = instances[i]->Stderr();
      out += std::string("\n--- instance ") + "ABC"[i] + " (last 4000 bytes of its log):\n" +
             log.substr(log.size() > 4000 ? log.size() - 4000 : 0);
    }
    return out;
  };
  // All three in the group, the first part read.
  Replay(bootstrap, names.input, parts[0], dir.path() / "replay-0");
  ASSERT_TRUE(testing::WaitUntil(
      [&] {
        for (auto& instance : instances) {
          if (instance->Stderr().find("partitions assigned") == std::string::npos) return false;
        }
        return committed() >= part_end[0];
      },
      120000, 500))
      << logs();

  // The broker stops while the second part is being read.
  Replay(bootstrap, names.input, parts[1], dir.path() / "replay-1");
  ASSERT_TRUE(wait_committed(part_end[0] + 1, 60000)) << logs();
  const int64_t committed_at_stop = committed();
  ASSERT_EQ(kafka.Stop(true, "kafka-stop"), 0);
  std::this_thread::sleep_for(std::chrono::seconds(20));
  std::vector<bool> running_during_outage;
  for (auto& instance : instances) running_during_outage.push_back(instance->running());
  ASSERT_EQ(kafka.Start(true, "kafka-restart"), 0);
  for (int i = 0; i < 3; ++i) {
    EXPECT_TRUE(running_during_outage[i]) << "instance "
                                          << "ABC"[i] << " exited:" << logs();
  }
  ASSERT_TRUE(wait_committed(part_end[1], 180000)) << logs();
  Replay(bootstrap, names.input, parts[2], dir.path() / "replay-2");
  ASSERT_TRUE(wait_committed(events, 180000)) << logs();
  std::vector<Store> stores;
  for (int i = 0; i < 3; ++i) {
    instances[i]->Signal(SIGTERM);
    EXPECT_EQ(instances[i]->Wait(120000), 0) << instances[i]->Stderr();
    stores.push_back(ReadStore(state[i], names.input));
    // What the outage did to it (informational: the log lines depend on
    // what librdkafka saw).
    const std::string log = instances[i]->Stderr();
    auto count = [&](const std::string& text) {
      size_t n = 0;
      for (size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
      return n;
    };
    std::printf(
        "broker restart test: instance %c: %zu rejoin(s) after the outage, %zu loss(es) "
        "of partitions, %zu restore(s)\n",
        "ABC"[i], count("joining the group again"), count("partitions lost:"),
        count("partition restored from the state changelog"));
  }

  // The owners' states are the reference's.
  EXPECT_EQ(Differences(expected, Merge(stores)), "") << DescribeDifferences(expected, stores);
  size_t messages = 0;
  const ScoreTexts scores = ReadScores(bootstrap, names.scores, reference_messages, &messages);
  size_t differing = 0, missing = 0, extra = 0;
  std::string examples;
  for (const auto& [key, texts] : expected_scores) {
    auto it = scores.find(key);
    if (it == scores.end()) {
      if (missing++ < 5)
        examples += "\nmissing: " + key.first + " seq " + std::to_string(key.second);
    } else if (it->second != texts) {
      if (differing++ < 5) {
        examples += "\ndiffering: " + *texts.begin() + "\n       got: " + *it->second.begin();
      }
    }
  }
  for (const auto& [key, texts] : scores) {
    if (expected_scores.count(key) == 0 && extra++ < 5) examples += "\nextra: " + *texts.begin();
  }
  EXPECT_EQ(differing, 0u) << examples;
  EXPECT_EQ(missing, 0u) << examples;
  EXPECT_EQ(extra, 0u) << examples;
  std::printf(
      "broker restart test: %lld events, %zu scores in the reference, %zu published (%zu "
      "re-sent); the broker stopped after %lld of the %lld events of the second part\n",
      static_cast<long long>(events), reference_messages, messages, messages - scores.size(),
      static_cast<long long>(committed_at_stop - part_end[0]),
      static_cast<long long>(part_end[1] - part_end[0]));
}

}  // namespace
}  // namespace clv
