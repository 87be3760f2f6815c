// Outages and the broker command, on the real `clv` binary:
//   * an unreachable bootstrap: HTTP answers at once (/healthz 200, /readyz
//     503 saying what it waits for) and the final error names the bootstrap
//     servers, not a "controller";
//   * `clv broker --port`: a restarted broker keeps its address; a taken
//     port is an error naming it;
//   * `clv broker --partitions` applies to the default topic names it
//     creates, and a topic a client auto-creates with another count is named
//     in a warning;
//   * real Kafka stopped mid-stream for longer than stream.idle_exit_ms and
//     started again on its data: `clv run` does not exit during the outage,
//     /readyz says why it is not ready, and the job ends with every event
//     read. It runs a broker of its own on a free port (scripts/kafka-start.sh,
//     restarted with kafka-stop.sh/kafka-start.sh and KAFKA_KEEP_DATA=1), so
//     the shared CLV_REAL_KAFKA broker of the other tests stays up; it needs
//     CLV_REAL_KAFKA set (the jars are there): skipped without, failed under
//     CI=true.
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <sstream>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "connectors/kafka.h"
#include "tests/e2e_support.h"
#include "tests/test_support.h"

namespace clv {
namespace {

using Json = nlohmann::json;
using testing::ClvBinary;
using testing::FreePort;
using testing::Get;
using testing::Subprocess;
using testing::TempDir;
using testing::UniqueSuffix;
using testing::WaitUntil;

std::string Trimmed(std::string text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  return text;
}

TEST(OutageEndToEnd, UnreachableBootstrapServesHttpAtOnceAndTheErrorNamesIt) {
  TempDir dir;
  const int kafka_port = FreePort();  // nothing listens there
  const int http_port = FreePort();
  const std::string bootstrap = "127.0.0.1:" + std::to_string(kafka_port);
  Subprocess run(
      {ClvBinary().string(), "run", "--quiet", "--set", "kafka.bootstrap_servers=" + bootstrap,
       "--set", "state.dir=" + (dir.path() / "state").string(), "--set",
       "http.port=" + std::to_string(http_port), "--set", "kafka.startup_timeout_ms=6000"},
      dir.path() / "run");
  ASSERT_TRUE(
      WaitUntil([&] { return Get(http_port, "/healthz").status == 200 || !run.running(); }, 5000));
  ASSERT_TRUE(run.running()) << "exited before HTTP answered:\n" << run.Stderr();
  // Not ready, saying what it waits for (the connection error after the
  // first attempt).
  testing::HttpAnswer ready;
  EXPECT_TRUE(WaitUntil(
      [&] {
        ready = Get(http_port, "/readyz");
        auto detail = Json::parse(ready.body, nullptr, false);
        return ready.status == 503 && detail.is_object() &&
               detail.value("reason", "").find("waiting for a Kafka broker at " + bootstrap) !=
                   std::string::npos;
      },
      5000))
      << ready.status << " " << ready.body;

  EXPECT_EQ(run.Wait(60000), 1) << run.Stderr();
  const std::string log = run.Stderr();
  EXPECT_NE(log.find("no Kafka broker answered at " + bootstrap), std::string::npos) << log;
  EXPECT_EQ(log.find("controller"), std::string::npos) << log;
}

TEST(BrokerCommand, PortKeepsTheAddressAcrossARestartAndATakenPortIsNamed) {
  TempDir dir;
  const int port = FreePort();
  const std::string address = "127.0.0.1:" + std::to_string(port);
  auto start = [&](const std::string& name) {
    return std::make_unique<Subprocess>(
        std::vector<std::string>{ClvBinary().string(), "broker", "--port", std::to_string(port),
                                 "--topic", "kept"},
        dir.path() / name);
  };
  auto first = start("first");
  ASSERT_TRUE(WaitUntil([&] { return !Trimmed(first->Stdout()).empty(); }, 10000))
      << first->Stderr();
  EXPECT_EQ(Trimmed(first->Stdout()), address);

  // A second broker on the same port: an error naming it.
  auto taken = start("taken");
  EXPECT_EQ(taken->Wait(10000), 1);
  EXPECT_NE(taken->Stderr().find(address), std::string::npos) << taken->Stderr();

  first->Signal(SIGTERM);
  EXPECT_EQ(first->Wait(10000), 0) << first->Stderr();
  auto second = start("second");
  ASSERT_TRUE(WaitUntil([&] { return !Trimmed(second->Stdout()).empty(); }, 10000))
      << second->Stderr();
  EXPECT_EQ(Trimmed(second->Stdout()), address);
  // A client of the old address reaches the new broker.
  connectors::ClientOptions client;
  client.bootstrap_servers = address;
  int partitions = 0;
  auto status = connectors::PartitionCount(client, "kept", &partitions);
  EXPECT_TRUE(status.ok()) << status.message;
  second->Signal(SIGTERM);
  EXPECT_EQ(second->Wait(10000), 0);
}

TEST(BrokerCommand, PartitionsApplyToTheDefaultTopicsAndAutoCreatedOnesAreNamed) {
  TempDir dir;
  auto address_file = dir.path() / "address";
  Subprocess broker({ClvBinary().string(), "broker", "--partitions", "3", "--address-file",
                     address_file.string()},
                    dir.path() / "broker");
  ASSERT_TRUE(WaitUntil([&] { return std::filesystem::exists(address_file); }, 10000))
      << broker.Stderr();
  connectors::ClientOptions client;
  client.bootstrap_servers = Trimmed(testing::ReadFile(address_file));
  for (const char* topic : {"clickstream", "orders", "profiles", "clv.scores"}) {
    int partitions = 0;
    auto status = connectors::PartitionCount(client, topic, &partitions);
    EXPECT_TRUE(status.ok()) << topic << ": " << status.message;
    EXPECT_EQ(partitions, 3) << topic;
  }
  // A producer auto-creates an unknown topic with the mock's fixed count.
  const std::string custom = "custom-" + UniqueSuffix();
  std::unique_ptr<connectors::KafkaSink> sink;
  ASSERT_TRUE(connectors::KafkaSink::Create(client, &sink).ok());
  ASSERT_TRUE(sink->Send(custom, "k", "v").ok());
  auto flushed = sink->Flush(10000);
  EXPECT_TRUE(flushed.ok()) << flushed.message;
  EXPECT_TRUE(WaitUntil(
      [&] {
        const auto log = broker.Stderr();
        return log.find("topic '" + custom + "' was auto-created") != std::string::npos &&
               log.find("--topic " + custom) != std::string::npos;
      },
      10000))
      << broker.Stderr();
  broker.Signal(SIGTERM);
  EXPECT_EQ(broker.Wait(10000), 0);
}

// ------------------------------------------------------------- real Kafka

int64_t StoppedCleanlyConsumed(const std::string& log) {
  auto line = log.find("stopped cleanly");
  if (line == std::string::npos) return -1;
  auto at = log.find(" consumed=", line);
  if (at == std::string::npos) return -1;
  return std::stoll(log.substr(at + 10));
}

std::optional<double> ConsumedMetric(int port) {
  std::istringstream lines(Get(port, "/metrics").body);
  std::string line;
  std::optional<double> sum;
  while (std::getline(lines, line)) {
    if (line.rfind("clv_events_consumed_total{", 0) != 0) continue;
    sum = sum.value_or(0) + std::stod(line.substr(line.rfind(' ') + 1));
  }
  return sum;
}

TEST(OutageRealKafka, IdleExitWaitsOutABrokerRestartAndEveryEventIsRead) {
  // CLV_REAL_KAFKA says the Kafka jars are there (scripts/kafka-fetch.sh);
  // this test runs a broker of its own, which it stops and starts again.
  if (std::getenv("CLV_REAL_KAFKA") == nullptr) {
    if (testing::InCi()) FAIL() << "CLV_REAL_KAFKA unset under CI (scripts/kafka-start.sh)";
    GTEST_SKIP() << "CLV_REAL_KAFKA unset: start a broker with "
                    "`export CLV_REAL_KAFKA=$(scripts/kafka-start.sh PORT)` to run this test";
  }
  TempDir dir;
  testing::OwnKafka kafka(dir.path());
  ASSERT_NE(kafka.port(), 0) << "no free port pair for the test's broker";
  ASSERT_EQ(kafka.Start(false, "kafka-start"), 0) << "scripts/kafka-start.sh " << kafka.port();
  const std::string bootstrap = kafka.bootstrap();
  const std::string suffix = UniqueSuffix();
  const std::string input = "outage-in-" + suffix;
  connectors::ClientOptions client;
  client.bootstrap_servers = bootstrap;
  const std::vector<std::string> outputs = {"outage-scores-" + suffix, "outage-alerts-" + suffix,
                                            "outage-dlq-" + suffix};
  std::vector<std::string> topics = outputs;
  topics.push_back(input);
  auto status = connectors::EnsureTopics(client, topics, 2, 1);
  ASSERT_TRUE(status.ok()) << status.message;
  auto produce = [&](int first, int count) {
    std::unique_ptr<connectors::KafkaSink> sink;
    ASSERT_TRUE(connectors::KafkaSink::Create(client, &sink).ok());
    for (int i = first; i < first + count; ++i) {
      Json event = {{"event_id", "e" + std::to_string(i)},
                    {"user_id", "u" + std::to_string(i % 40)},
                    {"type", "page_view"},
                    {"ts", 1700000000000LL + i * 1000LL}};
      ASSERT_TRUE(sink->Send(input, "u" + std::to_string(i % 40), event.dump()).ok());
    }
    auto flushed = sink->Flush(60000);
    ASSERT_TRUE(flushed.ok()) << flushed.message;
  };
  produce(0, 300);

  const int http_port = FreePort();
  Subprocess run({ClvBinary().string(),
                  "run",
                  "--quiet",
                  "--set",
                  "kafka.bootstrap_servers=" + bootstrap,
                  "--set",
                  "kafka.input_topics=" + input,
                  "--set",
                  "kafka.scores_topic=" + outputs[0],
                  "--set",
                  "kafka.alerts_topic=" + outputs[1],
                  "--set",
                  "kafka.dead_letter_topic=" + outputs[2],
                  "--set",
                  "kafka.group_id=outage-" + suffix,
                  "--set",
                  "state.dir=" + (dir.path() / "state").string(),
                  "--set",
                  "http.port=" + std::to_string(http_port),
                  "--set",
                  "stream.idle_exit_ms=10000"},
                 dir.path() / "run");
  ASSERT_TRUE(WaitUntil(
      [&] {
        auto consumed = ConsumedMetric(http_port);
        return (consumed && *consumed >= 300) || !run.running();
      },
      120000))
      << run.Stderr();
  ASSERT_TRUE(run.running()) << run.Stderr();

  ASSERT_EQ(kafka.Stop(true, "kafka-stop"), 0);
  // Longer than idle_exit_ms without a broker (stopping took some of the
  // idle time already): still running, and not ready.
  std::this_thread::sleep_for(std::chrono::seconds(12));
  const bool running_during_outage = run.running();
  auto ready = Get(http_port, "/readyz");
  ASSERT_EQ(kafka.Start(true, "kafka-restart"), 0);
  EXPECT_TRUE(running_during_outage) << "exited during the outage:\n" << run.Stderr();
  EXPECT_EQ(ready.status, 503) << ready.body;
  EXPECT_NE(ready.body.find("unreachable"), std::string::npos) << ready.body;

  produce(300, 200);
  EXPECT_EQ(run.Wait(180000), 0) << run.Stderr();
  EXPECT_EQ(StoppedCleanlyConsumed(run.Stderr()), 500) << run.Stderr();
}

}  // namespace
}  // namespace clv
