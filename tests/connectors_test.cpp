// Connectors against the embedded broker (librdkafka mock cluster on
// 127.0.0.1) and event files on disk.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <set>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "config/config.h"
#include "connectors/file_source.h"
#include "connectors/kafka.h"
#include "tests/test_support.h"

namespace clv::connectors {
namespace {

using Clock = std::chrono::steady_clock;

// The partitions a source's rebalance callbacks were called with, in order.
struct Rebalances {
  std::vector<TopicPartition> assigned, revoked, lost;
  // Callbacks that record into this (which must outlive the source).
  SourceCallbacks Callbacks(bool with_on_lost) {
    SourceCallbacks callbacks;
    auto into = [](std::vector<TopicPartition>* list) {
      return [list](const std::vector<TopicPartition>& tps) {
        list->insert(list->end(), tps.begin(), tps.end());
      };
    };
    callbacks.on_assigned = into(&assigned);
    callbacks.on_revoked = into(&revoked);
    if (with_on_lost) callbacks.on_lost = into(&lost);
    return callbacks;
  }
};

class EmbeddedBrokerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = EmbeddedBroker::Start(1, 4, &broker_);
    ASSERT_TRUE(s.ok()) << s.message;
    options_.bootstrap_servers = broker_->bootstrap_servers();
    options_.group_id = "connectors-test";
    options_.properties = MockFriendlyConsumerProperties();
  }

  std::unique_ptr<KafkaSink> MakeSink() {
    ClientOptions producer = options_;
    producer.properties.clear();
    std::unique_ptr<KafkaSink> sink;
    auto s = KafkaSink::Create(producer, &sink);
    EXPECT_TRUE(s.ok()) << s.message;
    return sink;
  }

  void Produce(const std::string& topic, int count, int32_t partition = -1) {
    auto sink = MakeSink();
    for (int i = 0; i < count; ++i) {
      auto s =
          sink->Send(topic, "user-" + std::to_string(i % 7), "m" + std::to_string(i), partition);
      ASSERT_TRUE(s.ok()) << s.message;
    }
    auto s = sink->Flush(10000);
    ASSERT_TRUE(s.ok()) << s.message;
    ASSERT_EQ(sink->delivered(), static_cast<uint64_t>(count));
  }

  // Polls until `count` messages arrived (or 20 s passed).
  static std::vector<Message> PollN(KafkaSource* source, size_t count) {
    std::vector<Message> out;
    const auto deadline = Clock::now() + std::chrono::seconds(20);
    while (out.size() < count && Clock::now() < deadline) {
      auto s = source->Poll(static_cast<int>(count - out.size()), 100, &out);
      EXPECT_TRUE(s.ok()) << s.message;
      if (!s.ok()) break;
    }
    return out;
  }

  std::unique_ptr<EmbeddedBroker> broker_;
  ClientOptions options_;
};

TEST_F(EmbeddedBrokerTest, RoundTripKeepsKeysValuesAndPerKeyPartition) {
  ASSERT_TRUE(broker_->CreateTopic("events", 4).ok());
  Produce("events", 200);

  std::unique_ptr<KafkaSource> source;
  auto s = KafkaSource::Create(options_, {"events"}, {}, &source);
  ASSERT_TRUE(s.ok()) << s.message;
  auto messages = PollN(source.get(), 200);
  ASSERT_EQ(messages.size(), 200u);

  std::set<std::string> values;
  std::map<std::string, int32_t> partition_of_key;
  std::map<int32_t, int64_t> last_offset;
  for (const auto& m : messages) {
    EXPECT_EQ(m.topic, "events");
    values.insert(m.value);
    int index = std::stoi(m.value.substr(1));
    EXPECT_EQ(m.key, "user-" + std::to_string(index % 7));
    auto [it, inserted] = partition_of_key.emplace(m.key, m.partition);
    EXPECT_EQ(it->second, m.partition) << "key " << m.key << " spread over partitions";
    if (last_offset.contains(m.partition)) {
      EXPECT_GT(m.offset, last_offset[m.partition]);
    }
    last_offset[m.partition] = m.offset;
    EXPECT_GT(m.timestamp_ms, 0);
  }
  EXPECT_EQ(values.size(), 200u);
  EXPECT_TRUE(source->Close().ok());
}

TEST_F(EmbeddedBrokerTest, AssignmentStartsAtStoredOffsetAndRevokesOnClose) {
  ASSERT_TRUE(broker_->CreateTopic("orders", 1).ok());
  Produce("orders", 10);

  Rebalances rebalances;
  auto& assigned = rebalances.assigned;
  auto& revoked = rebalances.revoked;
  SourceCallbacks callbacks = rebalances.Callbacks(false);
  callbacks.start_offset = [](const TopicPartition& tp) -> std::optional<int64_t> {
    return tp.topic == "orders" && tp.partition == 0 ? std::optional<int64_t>(5) : std::nullopt;
  };
  std::unique_ptr<KafkaSource> source;
  auto s = KafkaSource::Create(options_, {"orders"}, callbacks, &source);
  ASSERT_TRUE(s.ok()) << s.message;

  auto messages = PollN(source.get(), 5);
  ASSERT_EQ(messages.size(), 5u);
  EXPECT_EQ(messages.front().offset, 5);
  EXPECT_EQ(messages.front().value, "m5");
  EXPECT_EQ(messages.back().offset, 9);
  ASSERT_EQ(assigned.size(), 1u);
  EXPECT_EQ(assigned[0], (TopicPartition{"orders", 0}));
  EXPECT_EQ(source->Assignment(), assigned);
  EXPECT_TRUE(revoked.empty());

  ASSERT_TRUE(source->Close().ok());
  ASSERT_EQ(revoked.size(), 1u);
  EXPECT_EQ(revoked[0], (TopicPartition{"orders", 0}));
}

TEST_F(EmbeddedBrokerTest, AnOutageLongerThanTheSessionDropsThePartitionsAndJoinsAgain) {
  ASSERT_TRUE(broker_->CreateTopic("orders", 1).ok());
  Produce("orders", 3);
  options_.properties["session.timeout.ms"] = "3000";
  options_.properties["heartbeat.interval.ms"] = "300";
  Rebalances rebalances;
  const auto& assigned = rebalances.assigned;
  const auto& revoked = rebalances.revoked;
  const auto& lost = rebalances.lost;
  std::unique_ptr<KafkaSource> source;
  auto s = KafkaSource::Create(options_, {"orders"}, rebalances.Callbacks(true), &source);
  ASSERT_TRUE(s.ok()) << s.message;
  ASSERT_EQ(PollN(source.get(), 3).size(), 3u);
  ASSERT_EQ(assigned.size(), 1u);
  EXPECT_FALSE(source->SessionInDoubt());

  // Nothing heard for more than half the session: in doubt.
  ASSERT_TRUE(broker_->SetAllBrokersDown(true).ok());
  std::vector<Message> none;
  const auto down_at = Clock::now();
  while (!source->SessionInDoubt() && Clock::now() - down_at < std::chrono::seconds(10)) {
    ASSERT_TRUE(source->Poll(10, 100, &none).ok());
  }
  EXPECT_TRUE(source->SessionInDoubt()) << "connections failing for 10 s";
  EXPECT_GE(Clock::now() - down_at, std::chrono::milliseconds(1500));
  // Down for longer than the session, then back: whatever librdkafka says,
  // the partition is dropped (lost, not revoked: nothing more is committed)
  // and assigned afresh to a new member, from the start position again.
  while (Clock::now() - down_at < std::chrono::milliseconds(4000)) {
    ASSERT_TRUE(source->Poll(10, 100, &none).ok());
  }
  ASSERT_TRUE(broker_->SetAllBrokersDown(false).ok());
  const auto up_at = Clock::now();
  std::vector<Message> again;
  while ((assigned.size() < 2 || again.size() < 3) &&
         Clock::now() - up_at < std::chrono::seconds(30)) {
    ASSERT_TRUE(source->Poll(10, 100, &again).ok());
  }
  EXPECT_EQ(lost, (std::vector<TopicPartition>{{"orders", 0}}));
  EXPECT_TRUE(revoked.empty()) << "a lost partition is not revoked (that would commit it)";
  ASSERT_EQ(assigned.size(), 2u);
  EXPECT_EQ(assigned[1], (TopicPartition{"orders", 0}));
  ASSERT_GE(again.size(), 3u) << "read again from its start position";
  EXPECT_EQ(again.front().offset, 0);
  EXPECT_FALSE(source->SessionInDoubt());
}

TEST_F(EmbeddedBrokerTest, LagIsHighWatermarkMinusPosition) {
  ASSERT_TRUE(broker_->CreateTopic("clicks", 1).ok());
  Produce("clicks", 20);
  std::unique_ptr<KafkaSource> source;
  ASSERT_TRUE(KafkaSource::Create(options_, {"clicks"}, {}, &source).ok());
  auto messages = PollN(source.get(), 8);
  ASSERT_EQ(messages.size(), 8u);
  auto lag = source->Lag();
  ASSERT_EQ(lag.size(), 1u);
  EXPECT_EQ(lag[(TopicPartition{"clicks", 0})], 12);
  messages = PollN(source.get(), 12);
  ASSERT_EQ(messages.size(), 12u);
  EXPECT_EQ(source->Lag()[(TopicPartition{"clicks", 0})], 0);
}

TEST_F(EmbeddedBrokerTest, FlushReportsDeliveryFailureWithTopic) {
  ASSERT_TRUE(broker_->CreateTopic("scores", 1).ok());
  auto sink = MakeSink();
  // Warm up: the producer knows the topic and its leader.
  ASSERT_TRUE(sink->Send("scores", "u1", "ok").ok());
  ASSERT_TRUE(sink->Flush(10000).ok());

  // Topic authorization failed (29) is not retriable: the message fails.
  ASSERT_TRUE(broker_->FailNextProduceRequests(5, 29).ok());
  ASSERT_TRUE(sink->Send("scores", "u2", "lost").ok());
  auto s = sink->Flush(10000);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message.find("scores"), std::string::npos) << s.message;
  EXPECT_NE(s.message.find("uthoriz"), std::string::npos) << s.message;
  EXPECT_EQ(sink->delivered(), 1u);
}

TEST_F(EmbeddedBrokerTest, PurgeDropsWhatIsInFlightWithoutAFailureAndSendingGoesOn) {
  ASSERT_TRUE(broker_->CreateTopic("scores", 1).ok());
  ASSERT_TRUE(broker_->CreateTopic("changelog", 1).ok());
  auto sink = MakeSink();
  std::unique_ptr<PartitionLogWriter> log;
  ASSERT_TRUE(PartitionLogWriter::Create(options_, "changelog", &log).ok());
  ASSERT_TRUE(sink->Send("scores", "u1", "delivered").ok());
  ASSERT_TRUE(sink->Flush(10000).ok());
  const std::string record = "delivered";
  ASSERT_TRUE(log->Send(0, "u1", &record).ok());
  bool timed_out = false;
  ASSERT_TRUE(log->Flush(10000, nullptr, &timed_out).ok());

  // The cluster goes away: what is sent now waits in the producers.
  ASSERT_TRUE(broker_->SetAllBrokersDown(true).ok());
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(sink->Send("scores", "u2", "dropped").ok());
  const uint64_t mark = sink->Mark();
  const std::string dropped = "dropped";
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(log->Send(0, "u2", &dropped).ok());
  bool done = true;
  ASSERT_TRUE(sink->WaitAcked(mark, 200, &done).ok());
  EXPECT_FALSE(done);

  EXPECT_EQ(sink->Purge(), 5u);
  EXPECT_EQ(log->Purge(), 3u);
  ASSERT_TRUE(sink->WaitAcked(mark, 0, &done).ok()) << "a dropped message is no failure";
  EXPECT_TRUE(done);
  EXPECT_TRUE(sink->Flush(1000).ok());
  auto flushed = log->Flush(1000, nullptr, &timed_out);
  EXPECT_TRUE(flushed.ok()) << flushed.message;

  // Back: the producers go on, and only what was not dropped is in the topics.
  ASSERT_TRUE(broker_->SetAllBrokersDown(false).ok());
  ASSERT_TRUE(sink->Send("scores", "u3", "after").ok());
  auto status = sink->Flush(20000);
  ASSERT_TRUE(status.ok()) << status.message;
  const std::string after = "after";
  ASSERT_TRUE(log->Send(0, "u3", &after).ok());
  std::map<int32_t, int64_t> last;
  status = log->Flush(20000, &last, &timed_out);
  ASSERT_TRUE(status.ok()) << status.message;
  EXPECT_EQ(last[0], 1) << "the dropped records took no offset";
  EXPECT_EQ(sink->delivered(), 2u);
  std::vector<std::string> values;
  std::vector<std::string> records;
  int64_t end = 0, start = 0;
  ASSERT_TRUE(ReadPartitionToEnd(
                  options_, "scores", 0, 0,
                  [&](const LogRecord& r) {
                    values.emplace_back(r.value.value_or(""));
                    return Status::Ok();
                  },
                  &end, &start, 10000)
                  .ok());
  ASSERT_TRUE(ReadPartitionToEnd(
                  options_, "changelog", 0, 0,
                  [&](const LogRecord& r) {
                    records.emplace_back(r.value.value_or(""));
                    return Status::Ok();
                  },
                  &end, &start, 10000)
                  .ok());
  EXPECT_EQ(values, (std::vector<std::string>{"delivered", "after"}));
  EXPECT_EQ(records, (std::vector<std::string>{"delivered", "after"}));
}

TEST_F(EmbeddedBrokerTest, SendOfTooLargeMessageNamesTopic) {
  auto sink = MakeSink();
  auto s = sink->Send("big", "k", std::string(2'000'000, 'x'));
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message.find("'big'"), std::string::npos) << s.message;
}

TEST_F(EmbeddedBrokerTest, EnsureTopicsIsIdempotentAndPartitionCountReadsMetadata) {
  auto s = EnsureTopics(options_, {"a", "b"}, 3, 1);
  ASSERT_TRUE(s.ok()) << s.message;
  s = EnsureTopics(options_, {"a", "b", "c"}, 3, 1);
  ASSERT_TRUE(s.ok()) << s.message;
  for (const char* topic : {"a", "b", "c"}) {
    int partitions = 0;
    s = PartitionCount(options_, topic, &partitions);
    ASSERT_TRUE(s.ok()) << s.message;
    EXPECT_EQ(partitions, 3) << topic;
  }
}

TEST_F(EmbeddedBrokerTest, ConsumeOnlyPassCountsEveryMessage) {
  ASSERT_TRUE(broker_->CreateTopic("bench", 4).ok());
  Produce("bench", 1000);
  ConsumeStats stats;
  ClientOptions options = options_;
  options.group_id.clear();
  auto s = ConsumeOnlyPass(options, {"bench"}, 1000, 20000, &stats);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(stats.messages, 1000);
  EXPECT_GT(stats.bytes, 1000 * 2);
  // Asking for more than exists fails and names the topic.
  s = ConsumeOnlyPass(options, {"bench"}, 1001, 2000, &stats);
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.message.find("bench"), std::string::npos) << s.message;
}

// Any Kafka client can use the embedded broker: kcat reads what we wrote.
TEST_F(EmbeddedBrokerTest, ExternalClientKcatReadsOurMessages) {
  if (std::system("command -v kcat >/dev/null 2>&1") != 0) {
    if (clv::testing::InCi()) FAIL() << "kcat missing under CI";
    GTEST_SKIP() << "kcat not installed (apt-get install kcat)";
  }
  ASSERT_TRUE(broker_->CreateTopic("ext", 1).ok());
  Produce("ext", 3);
  std::string command =
      "kcat -b " + options_.bootstrap_servers + " -C -t ext -o beginning -e -q -f '%k=%s\\n' 2>&1";
  FILE* pipe = popen(command.c_str(), "r");
  ASSERT_NE(pipe, nullptr);
  std::string output;
  char buffer[256];
  while (fgets(buffer, sizeof(buffer), pipe) != nullptr) output += buffer;
  ASSERT_EQ(pclose(pipe), 0) << output;
  EXPECT_EQ(output, "user-0=m0\nuser-1=m1\nuser-2=m2\n");
}

// ------------------------------------------------------------ event files

std::string WriteFile(const clv::testing::TempDir& dir, const std::string& name,
                      const std::string& text) {
  std::string path = (dir.path() / name).string();
  std::ofstream(path) << text;
  return path;
}

TEST(EventFileReaderTest, JsonlReturnsRawLinesWithLineNumbers) {
  clv::testing::TempDir dir;
  auto path =
      WriteFile(dir, "events.jsonl", "{\"user_id\":\"a\"}\n\n{\"user_id\":\"b\"}\r\nnot json\n");
  std::unique_ptr<EventFileReader> reader;
  ASSERT_TRUE(EventFileReader::Open(path, "auto", {}, &reader).ok());
  std::vector<std::pair<std::string, int64_t>> rows;
  std::string json;
  int64_t line = 0;
  while (reader->Next(&json, &line)) rows.emplace_back(json, line);
  EXPECT_TRUE(reader->status().ok()) << reader->status().message;
  ASSERT_EQ(rows.size(), 3u);
  EXPECT_EQ(rows[0], (std::pair<std::string, int64_t>{"{\"user_id\":\"a\"}", 1}));
  EXPECT_EQ(rows[1], (std::pair<std::string, int64_t>{"{\"user_id\":\"b\"}", 3}));
  EXPECT_EQ(rows[2], (std::pair<std::string, int64_t>{"not json", 4}));  // the decoder's job
}

TEST(EventFileReaderTest, CsvRowsBecomeObjectsKeyedByHeader) {
  clv::testing::TempDir dir;
  auto path = WriteFile(dir, "orders.csv",
                        "user_id,ts,amount,note,zip\n"
                        "00042,1700000000,12.50,\"hello, \"\"world\"\"\",\n"
                        "7,1700000001,-3,plain,0\n");
  std::unique_ptr<EventFileReader> reader;
  auto s = EventFileReader::Open(path, "auto", {}, &reader);
  ASSERT_TRUE(s.ok()) << s.message;
  std::string json;
  int64_t line = 0;
  ASSERT_TRUE(reader->Next(&json, &line));
  EXPECT_EQ(line, 2);
  auto row = nlohmann::json::parse(json);
  EXPECT_EQ(row["user_id"], "00042");  // leading zeros: an id, kept as text
  EXPECT_EQ(row["ts"], 1700000000);
  EXPECT_DOUBLE_EQ(row["amount"].get<double>(), 12.5);
  EXPECT_EQ(row["note"], "hello, \"world\"");
  EXPECT_FALSE(row.contains("zip"));  // empty field left out
  ASSERT_TRUE(reader->Next(&json, &line));
  row = nlohmann::json::parse(json);
  EXPECT_EQ(row["user_id"], 7);
  EXPECT_EQ(row["amount"], -3);
  EXPECT_EQ(row["zip"], 0);
  EXPECT_FALSE(reader->Next(&json, &line));
  EXPECT_TRUE(reader->status().ok());
}

TEST(EventFileReaderTest, CsvErrorsNameFileAndLine) {
  clv::testing::TempDir dir;
  auto path = WriteFile(dir, "bad.csv", "a,b\n1,2\n1,2,3\n");
  std::unique_ptr<EventFileReader> reader;
  ASSERT_TRUE(EventFileReader::Open(path, "csv", {}, &reader).ok());
  std::string json;
  int64_t line = 0;
  ASSERT_TRUE(reader->Next(&json, &line));
  ASSERT_FALSE(reader->Next(&json, &line));
  ASSERT_FALSE(reader->status().ok());
  EXPECT_NE(reader->status().message.find("bad.csv:3"), std::string::npos)
      << reader->status().message;
  EXPECT_NE(reader->status().message.find("expected 2 fields, found 3"), std::string::npos);

  path = WriteFile(dir, "quote.csv", "a,b\n\"open,2\n");
  ASSERT_TRUE(EventFileReader::Open(path, "csv", {}, &reader).ok());
  ASSERT_FALSE(reader->Next(&json, &line));
  EXPECT_NE(reader->status().message.find("quote.csv:2: unterminated"), std::string::npos)
      << reader->status().message;

  EXPECT_FALSE(
      EventFileReader::Open((dir.path() / "missing.csv").string(), "csv", {}, &reader).ok());
  auto s = EventFileReader::Open(path, "parquet", {}, &reader);
  EXPECT_NE(s.message.find("parquet"), std::string::npos);
}

TEST(EventFileReaderTest, CdnowWhitespaceTableWithGivenColumns) {
  auto path = clv::testing::SharedDataPath("cdnow/CDNOW_sample.txt");
  CLV_REQUIRE_SHARED_DATA(path);
  CsvOptions csv;
  csv.delimiter = ' ';
  csv.header = false;
  csv.columns = {"user_id", "cohort_id", "date", "cds", "amount"};
  csv.string_columns = {"date"};
  std::unique_ptr<EventFileReader> reader;
  auto s = EventFileReader::Open(path.string(), "csv", csv, &reader);
  ASSERT_TRUE(s.ok()) << s.message;
  std::string json;
  int64_t line = 0;
  int64_t rows = 0;
  nlohmann::json first;
  while (reader->Next(&json, &line)) {
    if (rows++ == 0) first = nlohmann::json::parse(json);
  }
  ASSERT_TRUE(reader->status().ok()) << reader->status().message;
  EXPECT_EQ(rows, 6919);
  EXPECT_EQ(first["user_id"], "00004");
  EXPECT_EQ(first["date"], "19970101");
  EXPECT_EQ(first["cds"], 2);
  EXPECT_DOUBLE_EQ(first["amount"].get<double>(), 29.33);
}

std::vector<std::string> ReadAll(const std::string& path, const std::string& format,
                                 const CsvOptions& csv) {
  std::unique_ptr<EventFileReader> reader;
  auto s = EventFileReader::Open(path, format, csv, &reader);
  EXPECT_TRUE(s.ok()) << s.message;
  std::vector<std::string> rows;
  if (!s.ok()) return rows;
  std::string json;
  int64_t line = 0;
  while (reader->Next(&json, &line)) rows.push_back(json);
  EXPECT_TRUE(reader->status().ok()) << reader->status().message;
  return rows;
}

// "auto" tells JSONL from a table by the content (first non-blank '{'); the
// name only hints at a table's delimiter.
TEST(EventFileReaderTest, FormatComesFromTheContentNotTheName) {
  clv::testing::TempDir dir;
  const std::string jsonl = "{\"user_id\":\"a\",\"amount\":1}\n{\"user_id\":\"b\"}\n";
  for (const char* name : {"events.txt", "events.csv", "events", "events.log"}) {
    auto rows = ReadAll(WriteFile(dir, name, "\n  \n" + jsonl), "auto", {});
    EXPECT_EQ(rows,
              (std::vector<std::string>{R"({"user_id":"a","amount":1})", R"({"user_id":"b"})"}))
        << name;
  }
  // A UTF-8 byte-order mark does not hide the '{' (and is not passed on).
  EXPECT_EQ(ReadAll(WriteFile(dir, "bom.txt", "\xEF\xBB\xBF" + jsonl), "auto", {}).size(), 2u);
  EXPECT_EQ(ReadAll(WriteFile(dir, "bom.txt", "\xEF\xBB\xBF" + jsonl), "auto", {}).front(),
            R"({"user_id":"a","amount":1})");
  // Tables stay tables, whatever the name: comma-separated when the header
  // has a comma, else whitespace.
  const std::string expected = R"({"user_id":"u1","amount":10})";
  EXPECT_EQ(ReadAll(WriteFile(dir, "orders.jsonl", "user_id,amount\nu1,10\n"), "auto", {}),
            std::vector<std::string>{expected});
  EXPECT_EQ(ReadAll(WriteFile(dir, "orders.txt", "user_id  amount\n u1   10\n"), "auto", {}),
            std::vector<std::string>{expected});
  // A delimiter set in the config applies to tables only: JSONL stays JSONL.
  config::MappingOptions mapping;
  mapping.csv_delimiter = ",";
  std::string format = "auto";
  const CsvOptions csv = CsvOptionsFor(mapping, {}, &format);
  EXPECT_EQ(ReadAll(WriteFile(dir, "events.txt", jsonl), format, csv).size(), 2u);
  EXPECT_EQ(ReadAll(WriteFile(dir, "commas.txt", "user_id,amount\nu1,10\n"), format, csv),
            std::vector<std::string>{expected});
}

TEST(FileRowIdTest, BasenameAndLineAddedOnlyWhereTheRowHasNoId) {
  EXPECT_EQ(FileRowId("/data/2026/orders.csv", 12), "orders.csv:12");
  EXPECT_EQ(FileRowId("orders.csv", 12), FileRowId("/elsewhere/orders.csv", 12));
  std::string json = R"({"user_id":"u1"})";
  EXPECT_TRUE(AddRowId(&json, "event_id", "o.csv:2"));
  EXPECT_EQ(json, R"({"event_id":"o.csv:2","user_id":"u1"})");
  json = " { } ";
  EXPECT_TRUE(AddRowId(&json, "event_id", "x\"y"));
  EXPECT_EQ(nlohmann::json::parse(json)["event_id"], "x\"y");
  json = R"({"event_id":null,"user_id":"u1"})";
  EXPECT_TRUE(AddRowId(&json, "event_id", "o.csv:3"));
  EXPECT_EQ(json, R"({"event_id":"o.csv:3","event_id":null,"user_id":"u1"})");
  for (std::string kept : std::vector<std::string>{R"({"event_id":"e7"})", "not json", "[1]"}) {
    const std::string before = kept;
    EXPECT_FALSE(AddRowId(&kept, "event_id", "o.csv:4"));
    EXPECT_EQ(kept, before);
  }
}

// Identical rows get distinct ids (their lines); a second replay of the same
// file repeats the ids, so the service sees duplicates, not new orders.
TEST_F(EmbeddedBrokerTest, ReplayGivesIdlessRowsTheirFileRowId) {
  ASSERT_TRUE(broker_->CreateTopic("replay-ids", 1).ok());
  clv::testing::TempDir dir;
  auto path = WriteFile(dir, "orders.csv", "user_id,amount\nu1,10\nu1,10\n");
  auto sink = MakeSink();
  ReplayOptions replay;
  replay.topic = "replay-ids";
  replay.key_field = "user_id";
  replay.row_id_field = "event_id";
  replay.source_path = path;
  for (int pass = 0; pass < 2; ++pass) {
    std::unique_ptr<EventFileReader> reader;
    ASSERT_TRUE(EventFileReader::Open(path, "auto", {}, &reader).ok());
    int64_t events = 0;
    auto s = ReplayFile(reader.get(), sink.get(), replay, &events);
    ASSERT_TRUE(s.ok()) << s.message;
  }
  std::unique_ptr<KafkaSource> source;
  ASSERT_TRUE(KafkaSource::Create(options_, {"replay-ids"}, {}, &source).ok());
  auto messages = PollN(source.get(), 4);
  ASSERT_EQ(messages.size(), 4u);
  std::vector<std::string> got;
  for (const auto& m : messages) got.push_back(m.value);
  const std::string second = R"({"event_id":"orders.csv:2","user_id":"u1","amount":10})";
  const std::string third = R"({"event_id":"orders.csv:3","user_id":"u1","amount":10})";
  EXPECT_EQ(got, (std::vector<std::string>{second, third, second, third}));
}

// The issue's case: a JSONL export without the .jsonl name replays as JSONL
// (before, every line became a dead letter as a one-column table).
TEST_F(EmbeddedBrokerTest, ReplayOfJsonlNamedTxtSendsTheJsonLines) {
  ASSERT_TRUE(broker_->CreateTopic("replay-txt", 1).ok());
  clv::testing::TempDir dir;
  auto path = WriteFile(dir, "events.txt",
                        "{\"event_id\":\"e1\",\"user_id\":\"u1\",\"type\":\"search\",\"ts\":1}\n"
                        "{\"user_id\":\"u2\",\"type\":\"search\",\"ts\":2}\n");
  config::MappingOptions mapping;
  std::string format = "auto";
  const CsvOptions csv = CsvOptionsFor(mapping, {}, &format);
  std::unique_ptr<EventFileReader> reader;
  ASSERT_TRUE(EventFileReader::Open(path, format, csv, &reader).ok());
  auto sink = MakeSink();
  ReplayOptions replay;
  replay.topic = "replay-txt";
  replay.key_field = "user_id";
  replay.row_id_field = "event_id";
  replay.source_path = path;
  int64_t events = 0;
  auto s = ReplayFile(reader.get(), sink.get(), replay, &events);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(events, 2);
  std::unique_ptr<KafkaSource> source;
  ASSERT_TRUE(KafkaSource::Create(options_, {"replay-txt"}, {}, &source).ok());
  auto messages = PollN(source.get(), 2);
  ASSERT_EQ(messages.size(), 2u);
  EXPECT_EQ(messages[0].value, R"({"event_id":"e1","user_id":"u1","type":"search","ts":1})");
  EXPECT_EQ(messages[0].key, "u1");
  EXPECT_EQ(messages[1].value,
            R"({"event_id":"events.txt:2","user_id":"u2","type":"search","ts":2})");
  EXPECT_EQ(messages[1].key, "u2");
}

TEST_F(EmbeddedBrokerTest, ReplayFileProducesEveryRowKeyedByField) {
  ASSERT_TRUE(broker_->CreateTopic("replay", 2).ok());
  clv::testing::TempDir dir;
  auto path = WriteFile(dir, "orders.csv", "user_id,amount\nu1,10\nu2,20\nu1,30\n");
  std::unique_ptr<EventFileReader> reader;
  ASSERT_TRUE(EventFileReader::Open(path, "auto", {}, &reader).ok());
  auto sink = MakeSink();
  ReplayOptions replay;
  replay.topic = "replay";
  replay.key_field = "user_id";
  int64_t events = 0;
  auto s = ReplayFile(reader.get(), sink.get(), replay, &events);
  ASSERT_TRUE(s.ok()) << s.message;
  EXPECT_EQ(events, 3);

  std::unique_ptr<KafkaSource> source;
  ASSERT_TRUE(KafkaSource::Create(options_, {"replay"}, {}, &source).ok());
  auto messages = PollN(source.get(), 3);
  ASSERT_EQ(messages.size(), 3u);
  std::multiset<std::pair<std::string, std::string>> got;
  for (const auto& m : messages) got.emplace(m.key, m.value);
  std::multiset<std::pair<std::string, std::string>> want = {
      {"u1", "{\"user_id\":\"u1\",\"amount\":10}"},
      {"u2", "{\"user_id\":\"u2\",\"amount\":20}"},
      {"u1", "{\"user_id\":\"u1\",\"amount\":30}"}};
  EXPECT_EQ(got, want);
}

}  // namespace
}  // namespace clv::connectors
