// The processor on real components (RocksDB in a temp dir, the embedded
// broker in this process, the shipped baseline scorer), fed micro-batches
// directly: what a user of several input topics would notice.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "config/config.h"
#include "connectors/kafka.h"
#include "models/scorer.h"
#include "state/state_store.h"
#include "stream/processor.h"
#include "tests/test_support.h"

namespace clv::stream {
namespace {

constexpr int64_t kDayMs = 86400000;
constexpr int64_t kStartMs = 1735689600000;  // 2025-01-01

connectors::Message Event(const std::string& topic, int64_t offset, const std::string& user,
                          int64_t day, const std::string& type) {
  connectors::Message m;
  m.topic = topic;
  m.partition = 0;
  m.offset = offset;
  m.key = user;
  const int64_t ts = kStartMs + day * kDayMs;
  m.value = R"({"event_id":")" + topic + "-" + std::to_string(offset) + R"(","user_id":")" + user +
            R"(","type":")" + type + R"(","ts":)" + std::to_string(ts) +
            (type == "purchase" ? R"(,"amount":25.0})" : "}");
  m.timestamp_ms = ts;
  return m;
}

TEST(Processor, ATopicReadFarAheadOfAnotherMakesNoEventOfTheOtherLate) {
  testing::TempDir dir;
  config::Config config;
  config.state.dir = (dir.path() / "state").string();
  config.kafka.input_topics = {"clicks", "orders"};
  ASSERT_EQ(config.stream.dedup_retention_days, 30);
  std::unique_ptr<connectors::EmbeddedBroker> broker;
  ASSERT_TRUE(connectors::EmbeddedBroker::Start(1, 1, &broker).ok());
  connectors::ClientOptions client;
  client.bootstrap_servers = broker->bootstrap_servers();
  std::unique_ptr<connectors::KafkaSink> sink;
  ASSERT_TRUE(connectors::KafkaSink::Create(client, &sink).ok());
  std::unique_ptr<state::StateStore> store;
  auto opened = state::OpenRocksDbStore(config.state, &store);
  ASSERT_TRUE(opened.ok()) << opened.message;
  std::string error;
  auto scorer = models::LoadScorer(config.model, &error);
  ASSERT_TRUE(scorer) << error;

  Processor processor(config, *store, *scorer, *sink);
  processor.OnAssigned({{"clicks", 0}, {"orders", 0}});
  // A backlog: 90 days of clicks arrive before any order (as when a consumer
  // catches up and one topic's fetches run ahead).
  std::vector<connectors::Message> clicks;
  for (int64_t day = 0; day < 90; ++day) clicks.push_back(Event("clicks", day, "u1", day, "page_view"));
  ASSERT_TRUE(processor.ProcessBatch(clicks).ok());
  std::vector<connectors::Message> orders;
  for (int64_t day = 0; day < 90; day += 10) orders.push_back(Event("orders", day / 10, "u2", day, "purchase"));
  ASSERT_TRUE(processor.ProcessBatch(orders).ok());
  ASSERT_TRUE(processor.Commit().ok());
  EXPECT_EQ(processor.counters().dead_lettered.load(), 0)
      << "orders 60+ days behind the clicks topic are on time in their own topic";
  EXPECT_EQ(processor.counters().processed.load(), 90 + 9);

  // Within one topic-partition the retention still holds, also after a
  // restart (the topic-partition's latest event time is committed with the
  // offsets): an order 40 days behind the orders topic's latest event is
  // refused (and dead-lettered), one 25 days behind it is not (it would be
  // against the clicks topic's time).
  Processor restarted(config, *store, *scorer, *sink);
  restarted.OnAssigned({{"clicks", 0}, {"orders", 0}});
  ASSERT_TRUE(restarted
                  .ProcessBatch({Event("orders", 9, "u3", 40, "purchase"),
                                 Event("orders", 10, "u4", 55, "purchase")})
                  .ok());
  ASSERT_TRUE(restarted.Commit().ok());
  EXPECT_EQ(restarted.counters().dead_lettered.load(), 1);
  EXPECT_EQ(restarted.counters().processed.load(), 1);
}

}  // namespace
}  // namespace clv::stream
