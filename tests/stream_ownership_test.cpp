// Queries follow ownership (issue 11): two services of one group in process
// against the embedded broker, with the state changelog. Once the second
// instance joins and takes partitions over:
//   * the first answers /users/{id} only for users of the partitions it still
//     owns; for the others it says which partition they are on and that
//     another instance owns it (421 over HTTP), instead of serving the state
//     it stopped updating;
//   * /top of each instance holds only users of the partitions it owns now,
//     and says which those are and that the answer is partial;
//   * the second instance answers the moved users at once, from the state it
//     restored from the changelog, before any new event of theirs arrives.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <future>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>

#include "config/config.h"
#include "connectors/kafka.h"
#include "stream/changelog.h"
#include "stream/metrics.h"
#include "stream/service.h"
#include "tests/test_support.h"

namespace clv {
namespace {

using Json = nlohmann::json;
using testing::WaitUntil;

constexpr int kPartitions = 4;
constexpr int kUsers = 40;

class Ownership : public ::testing::Test {
 protected:
  void SetUp() override {
    auto status = connectors::EmbeddedBroker::Start(1, kPartitions, &broker_);
    ASSERT_TRUE(status.ok()) << status.message;
    config_.kafka.bootstrap_servers = broker_->bootstrap_servers();
    config_.kafka.input_topics = {"events"};
    config_.kafka.scores_topic = "scores";
    config_.kafka.alerts_topic = "alerts";
    config_.kafka.dead_letter_topic = "dead-letter";
    config_.kafka.group_id = "ownership-test";
    config_.http.port = 0;
    config_.state.changelog = true;
    // A rebalance waits for the members of the group to rejoin, bounded by
    // the session timeout (librdkafka's default 45 s).
    config_.kafka.properties["session.timeout.ms"] = "6000";
    config_.kafka.properties["heartbeat.interval.ms"] = "500";
    for (const std::string& topic :
         {std::string("events"), std::string("scores"), std::string("alerts"),
          std::string("dead-letter"), stream::ChangelogTopicName(config_)}) {
      ASSERT_TRUE(broker_->CreateTopic(topic, kPartitions).ok()) << topic;
    }
  }

  void TearDown() override {
    stop_.store(true);
    for (auto& run : runs_) {
      if (run.valid()) run.wait_for(std::chrono::seconds(30));
    }
  }

  // Ten purchases per user, keyed by user (the producer spreads users over
  // the partitions).
  void Produce() {
    connectors::ClientOptions options;
    options.bootstrap_servers = broker_->bootstrap_servers();
    std::unique_ptr<connectors::KafkaSink> sink;
    ASSERT_TRUE(connectors::KafkaSink::Create(options, &sink).ok());
    for (int i = 0; i < kUsers * 10; ++i) {
      const std::string user = "u" + std::to_string(i % kUsers);
      Json event = {{"event_id", "e" + std::to_string(i)},
                    {"user_id", user},
                    {"type", "purchase"},
                    {"amount", 5.0 + (i % kUsers)},
                    {"ts", 1700000000000LL + i * 60000LL}};
      ASSERT_TRUE(sink->Send("events", user, event.dump()).ok());
    }
    auto flushed = sink->Flush(20000);
    ASSERT_TRUE(flushed.ok()) << flushed.message;
  }

  // http_port 0: no HTTP server, advertised as Url(name) (not reachable);
  // else served on 127.0.0.1:http_port and advertised so.
  stream::Service* Start(const std::string& name, int http_port = 0) {
    config::Config config = config_;
    config.state.dir = (dir_.path() / name).string();
    config.http.advertised_url = Url(name);
    if (http_port != 0) {
      config.http.port = http_port;
      config.http.bind = "127.0.0.1";
      config.http.advertised_url = "http://127.0.0.1:" + std::to_string(http_port);
    }
    std::unique_ptr<stream::Service> service;
    auto status = stream::Service::Create(config, &service);
    EXPECT_TRUE(status.ok()) << status.message;
    if (!status.ok()) return nullptr;
    services_.push_back(std::move(service));
    stream::Service* raw = services_.back().get();
    runs_.push_back(std::async(std::launch::async, [this, raw] { return raw->Run(stop_); }));
    return raw;
  }

  static std::string Url(const std::string& name) { return "http://" + name + ".test:8080"; }

  // A free TCP port on 127.0.0.1 (bound and released).
  static int FreePort() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int port = 0;
    if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0) {
      socklen_t length = sizeof address;
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
      port = ntohs(address.sin_port);
    }
    ::close(fd);
    return port;
  }

  static std::vector<int32_t> Owned(stream::Service& service) {
    const Json top = Json::parse(service.TopJson(100, "clv"));
    if (!top.contains("partitions")) return {};
    return top["partitions"]["owned"].get<std::vector<int32_t>>();
  }

  testing::TempDir dir_;
  std::unique_ptr<connectors::EmbeddedBroker> broker_;
  config::Config config_;
  std::atomic<bool> stop_{false};
  std::vector<std::unique_ptr<stream::Service>> services_;
  std::vector<std::future<connectors::Status>> runs_;
};

TEST_F(Ownership, AnInstanceAnswersOnlyForThePartitionsItOwnsNow) {
  Produce();
  stream::Service* a = Start("a");
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(WaitUntil(
      [&] {
        return a->processor().counters().consumed.load() >= kUsers * 10 && a->ready() &&
               Owned(*a).size() == kPartitions;
      },
      60000))
      << a->ReadyDetail();
  // Alone, it owns everything: every user is answered once committed, /top
  // is complete.
  auto all_committed = [&] {
    for (int u = 0; u < kUsers; ++u) {
      auto answer = a->UserJson("u" + std::to_string(u));
      if (answer.status != stream::UserAnswer::kFound) return false;
      if (Json::parse(answer.json)["aggregates"]["purchases"] != 10) return false;
    }
    return true;
  };
  ASSERT_TRUE(WaitUntil(all_committed, 30000)) << a->UserJson("u0").json;
  std::map<std::string, Json> before;  // user -> its answer from the only instance
  for (int u = 0; u < kUsers; ++u) {
    const std::string id = "u" + std::to_string(u);
    before[id] = Json::parse(a->UserJson(id).json);
  }
  Json top = Json::parse(a->TopJson(100, "clv"));
  EXPECT_EQ(top["users"].size(), static_cast<size_t>(kUsers)) << top.dump();
  EXPECT_EQ(top["partitions"]["partial"], false) << top.dump();
  EXPECT_EQ(top["partitions"]["total"], kPartitions) << top.dump();

  // A second instance joins; the group splits the partitions.
  stream::Service* b = Start("b");
  ASSERT_NE(b, nullptr);
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto owned_a = Owned(*a);
        auto owned_b = Owned(*b);
        return !owned_a.empty() && !owned_b.empty() &&
               owned_a.size() + owned_b.size() == kPartitions && a->ready() && b->ready();
      },
      90000))
      << "a: " << a->TopJson(1, "clv") << "\nb: " << b->TopJson(1, "clv") << "\n"
      << b->ReadyDetail();
  const auto owned_a = Owned(*a);
  const auto owned_b = Owned(*b);
  std::set<int32_t> a_set(owned_a.begin(), owned_a.end());
  // Cooperative rebalancing (the default): the first instance gave up only
  // the partitions that moved and kept processing the others throughout.
  EXPECT_EQ(a->metrics().partitions_revoked.value(), owned_b.size());
  EXPECT_EQ(a->metrics().partitions_assigned.value(), static_cast<uint64_t>(kPartitions));

  // The old owner names the new one's address (http.advertised_url) once it
  // has read the new owner's announcement.
  std::string a_moved_user;
  for (const auto& [id, answer] : before) {
    if (!a_set.count(answer["partition"].get<int32_t>())) a_moved_user = id;
  }
  ASSERT_FALSE(a_moved_user.empty());
  ASSERT_TRUE(WaitUntil(
      [&] {
        const Json answer = Json::parse(a->UserJson(a_moved_user).json);
        return answer.value("owner_url", "") == Url("b");
      },
      15000))
      << a->UserJson(a_moved_user).json;

  int moved = 0;
  for (const auto& [id, answer] : before) {
    const int32_t partition = answer["partition"].get<int32_t>();
    auto from_a = a->UserJson(id);
    auto from_b = b->UserJson(id);
    if (a_set.count(partition)) {
      EXPECT_EQ(from_a.status, stream::UserAnswer::kFound) << id << ": " << from_a.json;
      EXPECT_EQ(from_b.status, stream::UserAnswer::kUnknown) << id << ": " << from_b.json;
      continue;
    }
    ++moved;
    // The old owner does not serve the state it stopped updating...
    ASSERT_EQ(from_a.status, stream::UserAnswer::kOtherOwner) << id << ": " << from_a.json;
    const Json error = Json::parse(from_a.json);
    EXPECT_EQ(error["partition"], partition) << error.dump();
    EXPECT_EQ(error["owned_partitions"].get<std::vector<int32_t>>(), owned_a) << error.dump();
    EXPECT_NE(error["error"].get<std::string>().find("does not own"), std::string::npos)
        << error.dump();
    EXPECT_EQ(error.value("owner_url", ""), Url("b")) << error.dump();
    EXPECT_NE(error["error"].get<std::string>().find("its owner answers at " + Url("b")),
              std::string::npos)
        << error.dump();
    // ...and the new owner answers it from the restored state at once.
    ASSERT_EQ(from_b.status, stream::UserAnswer::kFound) << id << ": " << from_b.json;
    const Json restored = Json::parse(from_b.json);
    EXPECT_EQ(restored["seq"], answer["seq"]) << id;
    EXPECT_EQ(restored["clv"], answer["clv"]) << id;
    EXPECT_EQ(restored["aggregates"], answer["aggregates"]) << id;
  }
  EXPECT_GT(moved, 0) << "no user moved: the test checks nothing";

  // /top: each instance its own partitions' users, and says it is partial.
  size_t listed = 0;
  for (const auto& [service, owned] : {std::pair{a, owned_a}, std::pair{b, owned_b}}) {
    const Json answer = Json::parse(service->TopJson(100, "clv"));
    EXPECT_EQ(answer["partitions"]["owned"].get<std::vector<int32_t>>(), owned);
    EXPECT_EQ(answer["partitions"]["partial"], true) << answer.dump();
    size_t expected = 0;
    for (const auto& [id, user] : before) {
      if (std::count(owned.begin(), owned.end(), user["partition"].get<int32_t>())) ++expected;
    }
    EXPECT_EQ(answer["users"].size(), expected) << answer.dump();
    for (const auto& user : answer["users"]) {
      const int32_t partition = before.at(user["user_id"].get<std::string>())["partition"];
      EXPECT_TRUE(std::count(owned.begin(), owned.end(), partition))
          << user.dump() << " is on partition " << partition;
    }
    listed += answer["users"].size();
  }
  EXPECT_EQ(listed, static_cast<size_t>(kUsers)) << "together the two answers hold every user";

  // /top?scope=group when the other instance does not answer (its advertised
  // address resolves nowhere): this instance's users, partial, and who failed.
  {
    const Json group = Json::parse(a->GroupTopJson(100, "clv"));
    EXPECT_EQ(group["scope"], "group");
    EXPECT_EQ(group["partitions"]["partial"], true) << group.dump();
    EXPECT_EQ(group["partitions"]["owned"].get<std::vector<int32_t>>(), owned_a) << group.dump();
    ASSERT_EQ(group["instances"].size(), 1u) << group.dump();
    EXPECT_EQ(group["instances"][0]["url"], Url("b")) << group.dump();
    EXPECT_TRUE(group["instances"][0].contains("error")) << group.dump();
    EXPECT_EQ(group["users"].size(), Json::parse(a->TopJson(100, "clv"))["users"].size());
  }

  // The dashboard's user and stage counts and CLV histogram: the owned
  // partitions' users only (the old owner no longer counts the users that
  // moved away).
  int64_t counted = 0;
  for (const auto& [service, owned] : {std::pair{a, owned_a}, std::pair{b, owned_b}}) {
    const Json summary = Json::parse(service->SummaryJson());
    int64_t expected = 0;
    for (const auto& [id, user] : before) {
      if (std::count(owned.begin(), owned.end(), user["partition"].get<int32_t>())) ++expected;
    }
    EXPECT_EQ(summary["users"].get<int64_t>(), expected) << summary["stages"].dump();
    int64_t staged = 0;
    for (const auto& [stage, n] : summary["stages"].items()) staged += n.get<int64_t>();
    EXPECT_EQ(staged, expected) << summary["stages"].dump();
    int64_t histogram = 0;
    for (const auto& n : summary["clv_histogram"]["counts"]) histogram += n.get<int64_t>();
    EXPECT_EQ(histogram, expected) << summary["clv_histogram"].dump();
    counted += summary["users"].get<int64_t>();
  }
  EXPECT_EQ(counted, kUsers) << "together the two dashboards count every user once";
}

TEST_F(Ownership, GroupTopMergesTheInstancesAndEqualsOneInstancesTop) {
  Produce();
  stream::Service* a = Start("a", FreePort());
  ASSERT_NE(a, nullptr);
  ASSERT_TRUE(WaitUntil(
      [&] {
        if (!a->ready() || Owned(*a).size() != kPartitions) return false;
        return Json::parse(a->TopJson(100, "clv"))["users"].size() == kUsers;
      },
      60000))
      << a->ReadyDetail();
  // Every user committed: the one instance's ranking is the reference.
  ASSERT_TRUE(WaitUntil(
      [&] {
        const Json top = Json::parse(a->TopJson(100, "clv"));
        for (const auto& user : top["users"]) {
          auto answer = a->UserJson(user["user_id"].get<std::string>());
          if (answer.status != stream::UserAnswer::kFound) return false;
          if (Json::parse(answer.json)["aggregates"]["purchases"] != 10) return false;
        }
        return true;
      },
      30000));
  const Json alone = Json::parse(a->TopJson(100, "clv"));
  auto ids = [](const Json& top) {
    std::vector<std::string> out;
    for (const auto& user : top["users"]) out.push_back(user["user_id"].get<std::string>());
    return out;
  };

  stream::Service* b = Start("b", FreePort());
  ASSERT_NE(b, nullptr);
  // Split, and each has read the other's announcement.
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto owned_a = Owned(*a);
        auto owned_b = Owned(*b);
        if (owned_a.empty() || owned_b.empty() || owned_a.size() + owned_b.size() != kPartitions ||
            !a->ready() || !b->ready()) {
          return false;
        }
        for (auto* service : {a, b}) {
          const Json group = Json::parse(service->GroupTopJson(100, "clv"));
          if (group["partitions"]["partial"] != false) return false;
        }
        return true;
      },
      90000))
      << "a: " << a->GroupTopJson(5, "clv") << "\nb: " << b->GroupTopJson(5, "clv");
  for (auto* service : {a, b}) {
    const Json group = Json::parse(service->GroupTopJson(100, "clv"));
    // Each instance's merged answer is the single instance's ranking.
    EXPECT_EQ(ids(group), ids(alone)) << group.dump();
    EXPECT_EQ(group["partitions"]["owned"].size(), static_cast<size_t>(kPartitions));
    ASSERT_EQ(group["instances"].size(), 1u) << group.dump();
    EXPECT_FALSE(group["instances"][0].contains("error")) << group.dump();
    // Alone, each is partial.
    EXPECT_EQ(Json::parse(service->TopJson(100, "clv"))["partitions"]["partial"], true);
  }
  // n applies to the merged list.
  const Json top3 = Json::parse(b->GroupTopJson(3, "clv"));
  const auto reference = ids(alone);
  ASSERT_GE(reference.size(), 3u);
  EXPECT_EQ(ids(top3), std::vector<std::string>(reference.begin(), reference.begin() + 3));
}

}  // namespace
}  // namespace clv
