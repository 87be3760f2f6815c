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
#include <cstdlib>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <gtest/gtest.h>

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
                                 const std::filesystem::path& state_dir, bool changelog) {
  return {ClvBinary().string(),
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

}  // namespace
}  // namespace clv
