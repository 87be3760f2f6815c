// Start positions that are not in the log (docs/KAFKA.md): KafkaSource checks
// each assigned partition's position against its log and stops Poll() with an
// error naming the partition, the offsets and the cause, unless reset_offsets
// moves it (and says so). On the embedded broker, and (OffsetsRealKafkaTest)
// on a real Kafka whose topic is deleted and recreated.
#include <chrono>
#include <random>
#include <thread>

#include <gtest/gtest.h>

#include "connectors/kafka.h"
#include "tests/real_kafka.h"
#include "tests/test_support.h"

namespace clv::connectors {
namespace {

using Clock = std::chrono::steady_clock;

::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << "expected to contain:\n  " << part << "\nactual:\n  " << text;
}

// Polls until `count` messages arrived, Poll() failed (its status in
// *error) or timeout_ms passed.
std::vector<Message> PollUntil(KafkaSource* source, size_t count, int timeout_ms,
                               Status* error = nullptr) {
  std::vector<Message> out;
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (out.size() < count && Clock::now() < deadline) {
    auto s = source->Poll(static_cast<int>(count - out.size()), 100, &out);
    if (!s.ok()) {
      if (error != nullptr) *error = s;
      break;
    }
  }
  return out;
}

// A source on `topic` whose stored offset for every partition is `stored`.
struct StoredSource {
  std::unique_ptr<KafkaSource> source;
  std::vector<OffsetResetEvent> resets;
};

void MakeSource(const ClientOptions& options, const std::string& topic,
                std::optional<int64_t> stored, OffsetReset reset, StoredSource* out) {
  SourceCallbacks callbacks;
  callbacks.start_offset = [stored](const TopicPartition&) { return stored; };
  callbacks.reset_offsets = reset;
  callbacks.on_offset_reset = [out](const OffsetResetEvent& event) {
    out->resets.push_back(event);
    return Status::Ok();
  };
  auto s = KafkaSource::Create(options, {topic}, callbacks, &out->source);
  ASSERT_TRUE(s.ok()) << s.message;
}

class OffsetsEmbeddedTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = EmbeddedBroker::Start(1, 1, &broker_);
    ASSERT_TRUE(s.ok()) << s.message;
    options_.bootstrap_servers = broker_->bootstrap_servers();
    options_.group_id = "offsets-test-" + std::to_string(group_++);
  }

  void Produce(const std::string& topic, int count, size_t value_bytes = 8) {
    ClientOptions producer = options_;
    producer.group_id.clear();
    std::unique_ptr<KafkaSink> sink;
    auto s = KafkaSink::Create(producer, &sink);
    ASSERT_TRUE(s.ok()) << s.message;
    std::mt19937_64 random(count);
    for (int i = 0; i < count; ++i) {
      std::string value(value_bytes, '\0');
      for (auto& c : value) c = static_cast<char>(random());  // incompressible
      s = sink->Send(topic, "k", value, 0);
      ASSERT_TRUE(s.ok()) << s.message;
    }
    s = sink->Flush(30000);
    ASSERT_TRUE(s.ok()) << s.message;
  }

  std::unique_ptr<EmbeddedBroker> broker_;
  ClientOptions options_;
  static inline int group_ = 0;
};

// A recreated topic (or cluster): the log is shorter than the stored offset.
TEST_F(OffsetsEmbeddedTest, StoredOffsetPastTheLogEndStopsPollNamingPartitionAndOffsets) {
  ASSERT_TRUE(broker_->CreateTopic("recreated", 1).ok());
  Produce("recreated", 10);
  StoredSource s;
  MakeSource(options_, "recreated", 25, OffsetReset::kNone, &s);
  Status error = Status::Ok();
  auto messages = PollUntil(s.source.get(), 1, 20000, &error);
  EXPECT_TRUE(messages.empty());
  ASSERT_FALSE(error.ok()) << "Poll never failed";
  EXPECT_TRUE(Contains(error.message,
                       "topic 'recreated' [0]: the stored offset 25 is past the "
                       "log end (log start 0, log end 10)"));
  EXPECT_TRUE(Contains(error.message, "recreated"));
  EXPECT_TRUE(Contains(error.message, "--reset-offsets earliest"));
  EXPECT_TRUE(s.resets.empty());
}

TEST_F(OffsetsEmbeddedTest, ResetEarliestReadsTheNewLogFromItsStartAndReportsTheMove) {
  ASSERT_TRUE(broker_->CreateTopic("recreated", 1).ok());
  Produce("recreated", 10);
  StoredSource s;
  MakeSource(options_, "recreated", 25, OffsetReset::kEarliest, &s);
  Status error = Status::Ok();
  auto messages = PollUntil(s.source.get(), 10, 20000, &error);
  ASSERT_TRUE(error.ok()) << error.message;
  ASSERT_EQ(messages.size(), 10u);
  EXPECT_EQ(messages.front().offset, 0);
  ASSERT_EQ(s.resets.size(), 1u);
  EXPECT_EQ(s.resets[0].partition, (TopicPartition{"recreated", 0}));
  EXPECT_EQ(s.resets[0].stored_offset, std::optional<int64_t>(25));
  EXPECT_EQ(s.resets[0].log_start, 0);
  EXPECT_EQ(s.resets[0].log_end, 10);
  EXPECT_EQ(s.resets[0].new_offset, 0);
  EXPECT_TRUE(Contains(s.resets[0].cause, "past the log end"));
}

TEST_F(OffsetsEmbeddedTest, ResetLatestSkipsToTheLogEndAndReadsWhatComesAfter) {
  ASSERT_TRUE(broker_->CreateTopic("recreated", 1).ok());
  Produce("recreated", 10);
  StoredSource s;
  MakeSource(options_, "recreated", 25, OffsetReset::kLatest, &s);
  Status error = Status::Ok();
  // Wait for the assignment, then send three more.
  PollUntil(s.source.get(), 1, 6000, &error);
  ASSERT_TRUE(error.ok()) << error.message;
  ASSERT_EQ(s.resets.size(), 1u);
  EXPECT_EQ(s.resets[0].new_offset, 10);
  Produce("recreated", 3);
  auto messages = PollUntil(s.source.get(), 3, 20000, &error);
  ASSERT_TRUE(error.ok()) << error.message;
  ASSERT_EQ(messages.size(), 3u);
  EXPECT_EQ(messages.front().offset, 10);
}

// A stored offset inside the log is used as it is, with nothing reported.
TEST_F(OffsetsEmbeddedTest, StoredOffsetInsideTheLogIsUsedUnchanged) {
  ASSERT_TRUE(broker_->CreateTopic("kept", 1).ok());
  Produce("kept", 10);
  StoredSource s;
  MakeSource(options_, "kept", 10, OffsetReset::kEarliest, &s);
  Status error = Status::Ok();
  PollUntil(s.source.get(), 1, 5000, &error);
  ASSERT_TRUE(error.ok()) << error.message;
  Produce("kept", 2);
  auto messages = PollUntil(s.source.get(), 2, 20000, &error);
  ASSERT_TRUE(error.ok()) << error.message;
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages.front().offset, 10);
  EXPECT_TRUE(s.resets.empty());
}

// The mock keeps about 5 MiB per partition: 8 MiB of incompressible values
// into one partition lose the oldest, and a start from the beginning says so
// instead of reading the rest as if it were everything.
TEST_F(OffsetsEmbeddedTest, EmbeddedBrokerLimitDropsOldDataAndAFreshStartStopsNamingTheGap) {
  ASSERT_TRUE(broker_->CreateTopic("big", 1).ok());
  Produce("big", 8 * 1024, 1024);
  std::vector<PartitionRange> ranges;
  bool embedded = false;
  auto status = TopicRanges(options_, "big", &ranges, &embedded);
  ASSERT_TRUE(status.ok()) << status.message;
  EXPECT_TRUE(embedded);
  ASSERT_EQ(ranges.size(), 1u);
  EXPECT_GT(ranges[0].log_start, 0) << "the mock kept all 8 MiB: its limit changed?";
  EXPECT_EQ(ranges[0].log_end, 8 * 1024);
  EXPECT_LE((ranges[0].log_end - ranges[0].log_start) * 1024, kEmbeddedBrokerPartitionBytes);

  StoredSource fresh;
  MakeSource(options_, "big", std::nullopt, OffsetReset::kNone, &fresh);
  Status error = Status::Ok();
  auto messages = PollUntil(fresh.source.get(), 1, 20000, &error);
  EXPECT_TRUE(messages.empty());
  ASSERT_FALSE(error.ok()) << "a fresh start read from offset " << messages.front().offset;
  const std::string start = std::to_string(ranges[0].log_start);
  EXPECT_TRUE(Contains(error.message,
                       "topic 'big' [0]: this state has never read the "
                       "partition, so it starts at offset 0, but the log starts "
                       "later (log start " +
                           start));
  EXPECT_TRUE(Contains(error.message, "offsets 0.." + std::to_string(ranges[0].log_start - 1) +
                                          " are gone (the embedded broker"));
  EXPECT_TRUE(Contains(error.message, "5 MiB"));

  // A stored offset the limit has overtaken.
  StoredSource behind;
  options_.group_id += "-behind";
  MakeSource(options_, "big", 3, OffsetReset::kNone, &behind);
  error = Status::Ok();
  PollUntil(behind.source.get(), 1, 20000, &error);
  ASSERT_FALSE(error.ok());
  EXPECT_TRUE(Contains(error.message, "the stored offset 3 is before the log start"));

  // Accepting the loss reads what is left, from the log start.
  StoredSource accepted;
  options_.group_id += "-accepted";
  MakeSource(options_, "big", std::nullopt, OffsetReset::kEarliest, &accepted);
  error = Status::Ok();
  messages = PollUntil(accepted.source.get(), 1, 20000, &error);
  ASSERT_TRUE(error.ok()) << error.message;
  ASSERT_FALSE(messages.empty());
  EXPECT_EQ(messages.front().offset, ranges[0].log_start);
  ASSERT_EQ(accepted.resets.size(), 1u);
  EXPECT_FALSE(accepted.resets[0].stored_offset.has_value());
}

// The fixture (tests/real_kafka.h) and a topic deleted and created again.
class OffsetsRealKafkaTest : public clv::testing::RealKafkaTest {
 protected:
  // Deletes `topic` and creates it again, empty, with one partition.
  void Recreate(const std::string& topic) {
    auto s = DeleteTopics(options_, {topic});
    ASSERT_TRUE(s.ok()) << s.message;
    const auto deadline = Clock::now() + std::chrono::seconds(60);
    for (;;) {
      int partitions = 0;
      if (!PartitionCount(options_, topic, &partitions).ok()) break;  // gone
      ASSERT_LT(Clock::now(), deadline) << "topic " << topic << " still there after deletion";
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
    for (;;) {
      s = EnsureTopics(options_, {topic}, 1, 1);
      std::vector<PartitionRange> ranges;
      if (s.ok() && TopicRanges(options_, topic, &ranges).ok() && ranges.size() == 1 &&
          ranges[0].log_end == 0) {
        return;
      }
      ASSERT_LT(Clock::now(), deadline) << "topic " << topic << " not recreated: " << s.message;
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  }
};

TEST_F(OffsetsRealKafkaTest, DeletedAndRecreatedTopicStopsTheStartUntilOffsetsAreReset) {
  const std::string topic = "clv-test-recreate-" + suffix_;
  ASSERT_TRUE(EnsureTopics(options_, {topic}, 1, 1).ok());
  Produce(topic, 20, 0);
  Recreate(topic);
  Produce(topic, 5, 0);

  // The service stored 20 (it had read the old log to its end).
  ClientOptions consumer = options_;
  consumer.group_id = "clv-real-test-recreate-" + suffix_;
  StoredSource stopped;
  MakeSource(consumer, topic, 20, OffsetReset::kNone, &stopped);
  Status error = Status::Ok();
  auto messages = PollUntil(stopped.source.get(), 1, 30000, &error);
  EXPECT_TRUE(messages.empty()) << "read offset " << messages.front().offset << " of the new log";
  ASSERT_FALSE(error.ok()) << "Poll never failed";
  EXPECT_TRUE(Contains(error.message, "topic '" + topic +
                                          "' [0]: the stored offset 20 is past the log end (log "
                                          "start 0, log end 5): the topic or the cluster was "
                                          "recreated"));
  EXPECT_TRUE(Contains(error.message, "--reset-offsets"));
  ASSERT_TRUE(stopped.source->Close().ok());

  StoredSource reset;
  MakeSource(consumer, topic, 20, OffsetReset::kEarliest, &reset);
  error = Status::Ok();
  messages = PollUntil(reset.source.get(), 5, 30000, &error);
  ASSERT_TRUE(error.ok()) << error.message;
  ASSERT_EQ(messages.size(), 5u);
  EXPECT_EQ(messages.front().offset, 0);
  EXPECT_EQ(messages.front().value, "m0");
  ASSERT_EQ(reset.resets.size(), 1u);
  EXPECT_EQ(reset.resets[0].log_end, 5);
  EXPECT_EQ(reset.resets[0].new_offset, 0);
  ASSERT_TRUE(reset.source->Close().ok());
  (void)DeleteTopics(options_, {topic});
}

// Retention overtaking a partition while it is read: records the consumer
// has not fetched yet are deleted (DeleteRecords, as retention.ms would).
// Poll() stops with an error naming the partition, the position it expected
// and where the log now starts, instead of going on from the log start.
TEST_F(OffsetsRealKafkaTest, RecordsDeletedWhileAPartitionIsReadStopPollNamingTheGap) {
  const std::string topic = "clv-test-overtaken-" + suffix_;
  ASSERT_TRUE(EnsureTopics(options_, {topic}, 1, 1).ok());
  // One record batch per message, so that a fetch brings one message ...
  std::unique_ptr<KafkaSink> sink;
  ASSERT_TRUE(KafkaSink::Create(options_, &sink).ok());
  for (int i = 0; i < 40; ++i) {
    ASSERT_TRUE(sink->Send(topic, "k", "m" + std::to_string(i), 0).ok());
    auto flushed = sink->Flush(30000);
    ASSERT_TRUE(flushed.ok()) << flushed.message;
  }
  // ... and the consumer fetches ahead only while its queue is empty: it is
  // behind the log end while the test reads slowly.
  ClientOptions consumer = options_;
  consumer.group_id = "clv-real-test-overtaken-" + suffix_;
  consumer.properties["fetch.message.max.bytes"] = "1";
  consumer.properties["queued.min.messages"] = "1";
  consumer.properties["queued.max.messages.kbytes"] = "1";
  StoredSource reading;
  MakeSource(consumer, topic, std::nullopt, OffsetReset::kNone, &reading);
  Status error = Status::Ok();
  auto messages = PollUntil(reading.source.get(), 5, 30000, &error);
  ASSERT_TRUE(error.ok()) << error.message;
  ASSERT_EQ(messages.size(), 5u);

  auto deleted = DeleteRecordsBefore(options_, topic, 0, 30);
  ASSERT_TRUE(deleted.ok()) << deleted.message;
  auto rest = PollUntil(reading.source.get(), 35, 30000, &error);
  messages.insert(messages.end(), rest.begin(), rest.end());
  ASSERT_FALSE(error.ok()) << "read on after the gap: " << messages.size() << " messages, last "
                           << messages.back().offset;
  // What was read is the log without a hole, and nothing after the gap.
  for (size_t i = 0; i < messages.size(); ++i) {
    EXPECT_EQ(messages[i].offset, static_cast<int64_t>(i)) << "a message skipped silently";
  }
  ASSERT_LT(messages.size(), 30u);
  const std::string expected = std::to_string(messages.size());
  EXPECT_TRUE(Contains(error.message, "topic '" + topic + "' [0]: the position " + expected +
                                          " is not in the log (log start 30, log end 40): "
                                          "offsets " +
                                          expected + "..29 are gone (deleted by retention"));
  EXPECT_TRUE(Contains(error.message, "retention.ms"));
  EXPECT_TRUE(Contains(error.message, "--reset-offsets"));
  (void)reading.source->Close();
  (void)DeleteTopics(options_, {topic});
}

}  // namespace
}  // namespace clv::connectors
