// TopUsers and ClvDistribution (stream/top_users.h) against brute force.
#include "stream/top_users.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

namespace clv::stream {
namespace {

TopEntry Entry(std::string user, double clv, double churn, std::string stage = "active") {
  return TopEntry{std::move(user), clv, churn, std::move(stage)};
}

std::vector<std::string> Ids(const TopSnapshot& snapshot) {
  std::vector<std::string> ids;
  for (const auto& entry : snapshot.users) ids.push_back(entry.user_id);
  return ids;
}

// The true ranking from every user's latest score: best first, ties by id.
std::vector<std::pair<double, std::string>> BruteForce(
    const std::map<std::string, TopEntry>& latest, TopBy by) {
  std::vector<std::pair<double, std::string>> ranking;
  for (const auto& [id, entry] : latest)
    ranking.emplace_back(by == TopBy::kClv ? entry.clv : entry.churn_risk, id);
  std::sort(ranking.begin(), ranking.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  return ranking;
}

TEST(TopUsers, RanksByClvAndByChurnRiskWithTiesByUserId) {
  TopUsers top;
  top.Update(Entry("carol", 50, 0.9));
  top.Update(Entry("alice", 100, 0.1));
  top.Update(Entry("bob", 50, 0.5));
  top.Update(Entry("dave", 10, 0.9));
  EXPECT_EQ(Ids(top.Top(10, TopBy::kClv)),
            (std::vector<std::string>{"alice", "bob", "carol", "dave"}));
  EXPECT_EQ(Ids(top.Top(2, TopBy::kChurnRisk)), (std::vector<std::string>{"carol", "dave"}));
  EXPECT_EQ(top.Top(0, TopBy::kClv).users.size(), 0u);
  EXPECT_EQ(top.Top(10, TopBy::kClv).exact_above, -std::numeric_limits<double>::infinity());
}

TEST(TopUsers, UpdateReplacesTheUsersPreviousScore) {
  TopUsers top;
  top.Update(Entry("alice", 100, 0.1));
  top.Update(Entry("bob", 50, 0.2, "new"));
  top.Update(Entry("alice", 1, 0.95, "at_risk"));
  auto by_clv = top.Top(10, TopBy::kClv);
  ASSERT_EQ(Ids(by_clv), (std::vector<std::string>{"bob", "alice"}));
  EXPECT_EQ(by_clv.users[1].clv, 1);
  EXPECT_EQ(by_clv.users[1].stage, "at_risk");
  EXPECT_EQ(by_clv.candidates, 2u);
  EXPECT_EQ(Ids(top.Top(1, TopBy::kChurnRisk)), (std::vector<std::string>{"alice"}));
  top.Remove("alice");
  EXPECT_EQ(Ids(top.Top(10, TopBy::kChurnRisk)), (std::vector<std::string>{"bob"}));
  top.Remove("nobody");
}

TEST(TopUsers, NanScoresRankLast) {
  TopUsers top;
  top.Update(Entry("nan", std::nan(""), std::nan("")));
  top.Update(Entry("zero", 0, 0));
  top.Update(Entry("neg", -5, -1));
  EXPECT_EQ(Ids(top.Top(3, TopBy::kClv)), (std::vector<std::string>{"zero", "neg", "nan"}));
}

TEST(TopUsers, ExactWhileEveryUserFits) {
  TopUsers top(1000);
  std::map<std::string, TopEntry> latest;
  std::mt19937 random(7);
  for (int i = 0; i < 20000; ++i) {
    const std::string id = "u" + std::to_string(random() % 500);
    TopEntry entry = Entry(id, std::floor(std::exponential_distribution<>(0.01)(random)),
                           std::uniform_real_distribution<>(0, 1)(random));
    latest[id] = entry;
    top.Update(entry);
  }
  for (TopBy by : {TopBy::kClv, TopBy::kChurnRisk}) {
    const auto truth = BruteForce(latest, by);
    const auto snapshot = top.Top(100, by);
    ASSERT_EQ(snapshot.users.size(), 100u);
    for (size_t i = 0; i < 100; ++i)
      EXPECT_EQ(snapshot.users[i].user_id, truth[i].second) << "rank " << i + 1;
    EXPECT_EQ(snapshot.exact_above, -std::numeric_limits<double>::infinity());
  }
}

// The documented guarantee with a candidate set far smaller than the users:
// every listed user scoring above exact_above is exactly where brute force
// puts it, and no user above exact_above is missing.
TEST(TopUsers, EntriesAboveExactAboveMatchBruteForceWhenTheSetOverflows) {
  for (unsigned seed : {1u, 2u, 3u, 4u}) {
    TopUsers top(64);
    std::map<std::string, TopEntry> latest;
    std::mt19937 random(seed);
    for (int i = 0; i < 30000; ++i) {
      const std::string id = "u" + std::to_string(random() % 3000);
      // Mostly small updates around the user's last score (decay and growth),
      // sometimes a jump: candidates fall below forgotten users now and then.
      double clv = latest.count(id) ? latest[id].clv : 0;
      clv = (random() % 10 == 0) ? std::exponential_distribution<>(0.002)(random)
                                 : std::max(0.0, clv + std::normal_distribution<>(0, 20)(random));
      TopEntry entry = Entry(id, clv, std::uniform_real_distribution<>(0, 1)(random));
      latest[id] = entry;
      top.Update(entry);
    }
    for (TopBy by : {TopBy::kClv, TopBy::kChurnRisk}) {
      const auto truth = BruteForce(latest, by);
      const auto snapshot = top.Top(64, by);
      ASSERT_EQ(snapshot.candidates, 64u);
      ASSERT_GT(snapshot.exact_above, -std::numeric_limits<double>::infinity())
          << "set never overflowed";
      size_t guaranteed = 0;
      while (guaranteed < truth.size() && truth[guaranteed].first > snapshot.exact_above)
        ++guaranteed;
      ASSERT_LE(guaranteed, snapshot.users.size()) << "seed " << seed;
      EXPECT_GE(guaranteed, 8u) << "seed " << seed
                                << ": too few guaranteed entries to check anything";
      for (size_t i = 0; i < guaranteed; ++i) {
        EXPECT_EQ(snapshot.users[i].user_id, truth[i].second)
            << "seed " << seed << " rank " << i + 1;
      }
      if (guaranteed < snapshot.users.size()) {
        const double next = by == TopBy::kClv ? snapshot.users[guaranteed].clv
                                              : snapshot.users[guaranteed].churn_risk;
        EXPECT_LE(next, snapshot.exact_above)
            << "an entry above exact_above was not in the true ranking";
      }
    }
  }
}

TEST(TopUsers, ReadersSeeConsistentSnapshotsWhileAWriterUpdates) {
  TopUsers top(100);
  std::atomic<bool> done = false;
  std::thread reader([&] {
    while (!done) {
      const auto snapshot = top.Top(50, TopBy::kClv);
      for (size_t i = 1; i < snapshot.users.size(); ++i) {
        if (snapshot.users[i - 1].clv < snapshot.users[i].clv) {
          ADD_FAILURE() << "snapshot out of order at " << i;
          return;
        }
      }
    }
  });
  std::vector<TopEntry> batch;
  for (int i = 0; i < 20000; ++i) {
    batch.push_back(Entry("u" + std::to_string(i % 700), (i * 7919) % 1000, 0.5));
    if (batch.size() == 100) {
      top.UpdateBatch(batch);
      batch.clear();
    }
  }
  done = true;
  reader.join();
  EXPECT_EQ(top.Top(1000, TopBy::kClv).users.size(), 100u);
}

TEST(TopUsers, OnlyTheOwnedPartitionsAreAnsweredAndStayExact) {
  // An instance that owns partitions 1 and 3 of 4 answers from their users
  // only; above exact_above the answer is still the true ranking of those.
  for (unsigned seed : {5u, 6u}) {
    TopUsers top(64);
    std::map<std::string, TopEntry> latest;
    std::mt19937 random(seed);
    for (int i = 0; i < 30000; ++i) {
      const int user = static_cast<int>(random() % 3000);
      const std::string id = "u" + std::to_string(user);
      double clv = latest.count(id) ? latest[id].clv : 0;
      clv = (random() % 10 == 0) ? std::exponential_distribution<>(0.002)(random)
                                 : std::max(0.0, clv + std::normal_distribution<>(0, 20)(random));
      TopEntry entry = Entry(id, clv, 0.5);
      entry.partition = user % 4;
      latest[id] = entry;
      top.Update(entry);
    }
    std::map<std::string, TopEntry> owned_truth;
    for (const auto& [id, entry] : latest) {
      if (entry.partition == 1 || entry.partition == 3) owned_truth[id] = entry;
    }
    const auto truth = BruteForce(owned_truth, TopBy::kClv);
    const auto snapshot = top.Top(
        20, TopBy::kClv, [](int32_t partition) { return partition == 1 || partition == 3; });
    ASSERT_FALSE(snapshot.users.empty());
    for (const auto& entry : snapshot.users) {
      EXPECT_TRUE(entry.partition == 1 || entry.partition == 3) << entry.user_id;
    }
    EXPECT_LT(snapshot.candidates, 64u) << "candidates count the owned partitions only";
    size_t guaranteed = 0;
    while (guaranteed < truth.size() && guaranteed < snapshot.users.size() &&
           truth[guaranteed].first > snapshot.exact_above)
      ++guaranteed;
    EXPECT_GE(guaranteed, 4u) << "seed " << seed << ": too few guaranteed entries to check";
    for (size_t i = 0; i < guaranteed; ++i) {
      EXPECT_EQ(snapshot.users[i].user_id, truth[i].second) << "seed " << seed << " rank " << i + 1;
    }
  }
}

TEST(TopUsers, JsonNamesTheOwnedPartitionsAndWhetherTheAnswerIsPartial) {
  TopUsers top;
  top.Update(Entry("alice", 12.5, 0.25));
  auto snapshot = top.Top(10, TopBy::kClv);
  EXPECT_FALSE(nlohmann::json::parse(TopUsers::ToJson(snapshot)).contains("partitions"))
      << "before an assignment nothing is said";
  snapshot.owned_partitions = std::vector<int32_t>{0, 2};
  snapshot.partitions_total = 4;
  auto json = nlohmann::json::parse(TopUsers::ToJson(snapshot));
  EXPECT_EQ(json["partitions"]["owned"], nlohmann::json::array({0, 2}));
  EXPECT_EQ(json["partitions"]["total"], 4);
  EXPECT_EQ(json["partitions"]["partial"], true);
  snapshot.owned_partitions = std::vector<int32_t>{0, 1, 2, 3};
  EXPECT_EQ(nlohmann::json::parse(TopUsers::ToJson(snapshot))["partitions"]["partial"], false);
}

TEST(TopUsers, JsonAnswerForTheTopEndpoint) {
  TopUsers top;
  top.Update(Entry("alice", 12.5, 0.25, "active"));
  top.Update(Entry(std::string("bad\xff"
                               "utf8"),
                   3, 0.5, "new"));
  auto json = nlohmann::json::parse(TopUsers::ToJson(top.Top(10, TopBy::kClv)));
  EXPECT_EQ(json["by"], "clv");
  EXPECT_EQ(json["n"], 2);
  EXPECT_TRUE(json["exact_above"].is_null());
  ASSERT_EQ(json["users"].size(), 2u);
  EXPECT_EQ(json["users"][0]["rank"], 1);
  EXPECT_EQ(json["users"][0]["user_id"], "alice");
  EXPECT_EQ(json["users"][0]["clv"], 12.5);
  EXPECT_EQ(json["users"][0]["churn_risk"], 0.25);
  EXPECT_EQ(json["users"][0]["stage"], "active");
  EXPECT_EQ(json["users"][1]["user_id"], "bad\xEF\xBF\xBDutf8");
  EXPECT_EQ(ParseTopBy("churn_risk"), TopBy::kChurnRisk);
  EXPECT_EQ(ParseTopBy("CLV"), std::nullopt);
}

TEST(ClvDistribution, CountsUsersPerBucketAsTheyMove) {
  ClvDistribution distribution({0, 10, 100});
  distribution.Move(std::nullopt, 5);     // bucket 0
  distribution.Move(std::nullopt, 10);    // bucket 1 (edges are inclusive below)
  distribution.Move(std::nullopt, 1000);  // bucket 2 (open-ended)
  distribution.Move(std::nullopt, -3);    // below the first edge: bucket 0
  distribution.Move(5, 50);               // 0 -> 1
  distribution.Move(50, 60);              // same bucket
  distribution.Remove(1000);
  const auto snapshot = distribution.Collect();
  EXPECT_EQ(snapshot.counts, (std::vector<int64_t>{1, 2, 0}));
  auto json = nlohmann::json::parse(distribution.ToJson());
  EXPECT_EQ(json["edges"], nlohmann::json({0, 10, 100}));
  EXPECT_EQ(json["counts"], nlohmann::json({1, 2, 0}));
  const auto edges = ClvDistribution::DefaultEdges();
  EXPECT_EQ(edges.front(), 0);
  EXPECT_EQ(edges.back(), 100000);
  EXPECT_TRUE(std::is_sorted(edges.begin(), edges.end()));
}

TEST(ClvDistribution, CountsOnlyThePartitionsAsked) {
  // The dashboard's histogram of an instance holds only the partitions it
  // owns now, like its stage counts.
  ClvDistribution distribution({0, 10, 100}, 4);
  distribution.Move(std::nullopt, 5, 0);
  distribution.Move(std::nullopt, 50, 1);
  distribution.Move(std::nullopt, 500, 2);
  distribution.Move(std::nullopt, 7, -1);  // unknown partition: always counted
  distribution.Move(std::nullopt, 8, 9);   // past the slots: always counted
  distribution.Move(50, 200, 1);           // partition 1: bucket 1 -> 2
  distribution.Remove(500, 2);
  EXPECT_EQ(distribution.Collect().counts, (std::vector<int64_t>{3, 0, 1}));
  const auto only_1 = [](int32_t p) { return p == 1; };
  EXPECT_EQ(distribution.Collect(only_1).counts, (std::vector<int64_t>{2, 0, 1}));
  const auto none = [](int32_t) { return false; };
  EXPECT_EQ(distribution.Collect(none).counts, (std::vector<int64_t>{2, 0, 0}));
  EXPECT_EQ(nlohmann::json::parse(distribution.ToJson(only_1))["counts"],
            nlohmann::json({2, 0, 1}));
}

}  // namespace
}  // namespace clv::stream
