// The core connector behaviours against a real Apache Kafka broker whose
// address is in CLV_REAL_KAFKA (start one with scripts/kafka-start.sh).
// Skips with a message when unset; fails under CI=true.
#include <chrono>
#include <set>

#include <gtest/gtest.h>

#include "connectors/kafka.h"
#include "tests/real_kafka.h"

namespace clv::connectors {
namespace {

using Clock = std::chrono::steady_clock;

// The fixture (tests/real_kafka.h) and polling until `count` messages came.
class RealKafkaTest : public clv::testing::RealKafkaTest {
 protected:
  static std::vector<Message> PollN(KafkaSource* source, size_t count) {
    std::vector<Message> out;
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (out.size() < count && Clock::now() < deadline) {
      auto s = source->Poll(static_cast<int>(count - out.size()), 100, &out);
      EXPECT_TRUE(s.ok()) << s.message;
      if (!s.ok()) break;
    }
    return out;
  }
};

TEST_F(RealKafkaTest, EnsureTopicsIsIdempotent) {
  const auto topic = Topic("admin");
  auto s = EnsureTopics(options_, {topic}, 3, 1);
  ASSERT_TRUE(s.ok()) << s.message;
  s = EnsureTopics(options_, {topic}, 3, 1);
  ASSERT_TRUE(s.ok()) << s.message;
  int partitions = 0;
  s = PartitionCount(options_, topic, &partitions);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(partitions, 3);
}

TEST_F(RealKafkaTest, RoundTripKeepsKeysAndValues) {
  const auto topic = Topic("roundtrip");
  ASSERT_TRUE(EnsureTopics(options_, {topic}, 4, 1).ok());
  Produce(topic, 200);
  std::unique_ptr<KafkaSource> source;
  auto s = KafkaSource::Create(options_, {topic}, {}, &source);
  ASSERT_TRUE(s.ok()) << s.message;
  auto messages = PollN(source.get(), 200);
  ASSERT_EQ(messages.size(), 200u);
  std::set<std::string> values;
  std::map<std::string, int32_t> partition_of_key;
  for (const auto& m : messages) {
    values.insert(m.value);
    EXPECT_EQ(m.key, "user-" + std::to_string(std::stoi(m.value.substr(1)) % 7));
    auto [it, inserted] = partition_of_key.emplace(m.key, m.partition);
    EXPECT_EQ(it->second, m.partition);
  }
  EXPECT_EQ(values.size(), 200u);
  EXPECT_TRUE(source->Close().ok());
}

TEST_F(RealKafkaTest, AssignmentStartsAtStoredOffsetRevokesOnCloseAndReportsLag) {
  const auto topic = Topic("offsets");
  ASSERT_TRUE(EnsureTopics(options_, {topic}, 1, 1).ok());
  Produce(topic, 10);
  std::vector<TopicPartition> revoked;
  SourceCallbacks callbacks;
  callbacks.start_offset = [](const TopicPartition&) { return std::optional<int64_t>(5); };
  callbacks.on_revoked = [&](const std::vector<TopicPartition>& tps) {
    revoked.insert(revoked.end(), tps.begin(), tps.end());
  };
  std::unique_ptr<KafkaSource> source;
  ASSERT_TRUE(KafkaSource::Create(options_, {topic}, callbacks, &source).ok());
  auto messages = PollN(source.get(), 2);
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0].offset, 5);
  EXPECT_EQ(messages[0].value, "m5");
  EXPECT_EQ(source->Lag()[(TopicPartition{topic, 0})], 3);
  ASSERT_TRUE(source->Close().ok());
  ASSERT_EQ(revoked.size(), 1u);
  EXPECT_EQ(revoked[0], (TopicPartition{topic, 0}));
}

}  // namespace
}  // namespace clv::connectors
