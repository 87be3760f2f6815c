// The service through a broker outage, in process against the embedded
// broker, whose brokers the test takes down and brings back with their data
// (EmbeddedBroker::SetAllBrokersDown):
//   * stream.idle_exit_ms does not count the outage: the job keeps running
//     while the cluster is unreachable and, once it is back, reads every
//     event before it exits idle;
//   * /readyz (ReadyDetail) says not ready while the cluster is unreachable,
//     with the reason, and ready again afterwards;
//   * a stop during an outage with unacknowledged outputs returns within
//     stream.shutdown_timeout_ms with an error saying what was not
//     acknowledged (and commits nothing of it).
// The same outage against real Kafka: tests/e2e_outage_test.cpp.
#include <chrono>
#include <future>
#include <optional>
#include <string>
#include <thread>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "config/config.h"
#include "connectors/kafka.h"
#include "stream/service.h"
#include "tests/test_support.h"

namespace clv {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using testing::WaitUntil;

class ServiceOutage : public ::testing::Test {
 protected:
  void SetUp() override {
    auto status = connectors::EmbeddedBroker::Start(1, 2, &broker_);
    ASSERT_TRUE(status.ok()) << status.message;
    for (const char* topic : {"events", "scores", "alerts", "dead-letter"}) {
      ASSERT_TRUE(broker_->CreateTopic(topic, 2).ok());
    }
    config_.kafka.bootstrap_servers = broker_->bootstrap_servers();
    config_.kafka.input_topics = {"events"};
    config_.kafka.scores_topic = "scores";
    config_.kafka.alerts_topic = "alerts";
    config_.kafka.dead_letter_topic = "dead-letter";
    config_.kafka.group_id = "outage-test";
    config_.state.dir = (dir_.path() / "state").string();
    config_.http.port = 0;
    // Pinned off as long as it is off by default (docs/KAFKA.md "State
    // changelog"): its wait no longer blocks the polling thread, but with it
    // on this test failed 2 of 9 runs (once idle exit 2 s after the outage,
    // before the group's rebalance let the last 200 events in) and the real
    // Kafka outage test (tests/e2e_outage_test.cpp) 2 of 2 (/readyz ready
    // 12 s into the outage), not yet explained.
    config_.state.changelog = false;
  }

  // Sends events first..first+count-1 (one user each, so each is scored).
  void Produce(int first, int count) {
    connectors::ClientOptions options;
    options.bootstrap_servers = broker_->bootstrap_servers();
    std::unique_ptr<connectors::KafkaSink> sink;
    ASSERT_TRUE(connectors::KafkaSink::Create(options, &sink).ok());
    for (int i = first; i < first + count; ++i) {
      Json event = {{"event_id", "e" + std::to_string(i)},
                    {"user_id", "u" + std::to_string(i % 50)},
                    {"type", "page_view"},
                    {"ts", 1700000000000LL + i * 1000LL}};
      ASSERT_TRUE(sink->Send("events", "u" + std::to_string(i % 50), event.dump()).ok());
    }
    auto flushed = sink->Flush(20000);
    ASSERT_TRUE(flushed.ok()) << flushed.message;
  }

  int64_t Consumed() { return service_->processor().counters().consumed.load(); }

  testing::TempDir dir_;
  std::unique_ptr<connectors::EmbeddedBroker> broker_;
  config::Config config_;
  std::unique_ptr<stream::Service> service_;
  std::atomic<bool> stop_{false};
};

TEST_F(ServiceOutage, AnOutageIsNotIdleTimeAndMakesReadyzSayWhy) {
  config_.stream.idle_exit_ms = 2000;
  Produce(0, 300);
  auto status = stream::Service::Create(config_, &service_);
  ASSERT_TRUE(status.ok()) << status.message;
  auto run = std::async(std::launch::async, [&] { return service_->Run(stop_); });
  ASSERT_TRUE(WaitUntil([&] { return Consumed() >= 300 && service_->ready(); }, 30000))
      << "consumed " << Consumed() << ", " << service_->ReadyDetail();

  ASSERT_TRUE(broker_->SetAllBrokersDown(true).ok());
  // Three idle_exit_ms of outage: the job must still be running, and not ready.
  std::this_thread::sleep_for(std::chrono::milliseconds(6000));
  const bool exited_during_outage =
      run.wait_for(std::chrono::milliseconds(0)) == std::future_status::ready;
  const Json detail = Json::parse(service_->ReadyDetail());
  ASSERT_TRUE(broker_->SetAllBrokersDown(false).ok());
  EXPECT_FALSE(exited_during_outage) << "stream.idle_exit_ms counted the outage as idle time";
  EXPECT_FALSE(detail.at("ready").get<bool>()) << detail.dump();
  EXPECT_NE(detail.at("reason").get<std::string>().find("unreachable"), std::string::npos)
      << detail.dump();
  EXPECT_NE(detail.at("reason").get<std::string>().find(broker_->bootstrap_servers()),
            std::string::npos)
      << detail.dump();
  EXPECT_FALSE(detail.at("kafka").at("reachable").get<bool>()) << detail.dump();

  // Back: more events come, every one is read, and the job then ends idle.
  Produce(300, 200);
  if (exited_during_outage) {
    auto result = run.get();
    FAIL() << "Run() returned during the outage (" << result.message << ") after " << Consumed()
           << " of 500 events";
  }
  EXPECT_TRUE(WaitUntil([&] { return service_->ready(); }, 30000)) << service_->ReadyDetail();
  ASSERT_EQ(run.wait_for(std::chrono::seconds(60)), std::future_status::ready);
  auto result = run.get();
  EXPECT_TRUE(result.ok()) << result.message;
  EXPECT_EQ(Consumed(), 500);
}

TEST_F(ServiceOutage, StopDuringAnOutageIsHonouredWithinTheShutdownTimeout) {
  config_.stream.shutdown_timeout_ms = 1500;
  config_.stream.batch_max_events = 1000;  // one micro-batch, one pending commit
  // Should a slow machine split the 100 events into a few batches, none of
  // them waits for room behind an unacknowledged commit.
  config_.stream.commits_in_flight = 8;
  Produce(0, 100);
  auto status = stream::Service::Create(config_, &service_);
  ASSERT_TRUE(status.ok()) << status.message;
  // The outputs of the batch stay unacknowledged: the broker answers every
  // Produce with a retriable error (19, not enough replicas), then goes down.
  ASSERT_TRUE(broker_->FailNextProduceRequests(100000, 19).ok());
  auto run = std::async(std::launch::async, [&] { return service_->Run(stop_); });
  ASSERT_TRUE(WaitUntil([&] { return Consumed() >= 100; }, 30000)) << "consumed " << Consumed();
  ASSERT_TRUE(broker_->SetAllBrokersDown(true).ok());
  ASSERT_TRUE(WaitUntil([&] { return !service_->ready(); }, 10000)) << service_->ReadyDetail();

  stop_.store(true);
  // Before this was bounded, the way out waited 60 s for the commit, then for
  // the consumer close and a 30 s flush.
  const bool returned = run.wait_for(std::chrono::seconds(20)) == std::future_status::ready;
  ASSERT_TRUE(broker_->SetAllBrokersDown(false).ok());
  ASSERT_TRUE(returned) << "Run() did not return within 20 s of the stop";
  auto result = run.get();
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.message.find("stream.shutdown_timeout_ms=1500"), std::string::npos)
      << result.message;
  EXPECT_NE(result.message.find("nothing is lost"), std::string::npos) << result.message;
  // Not committed: the next start reads those events again.
  std::optional<int64_t> offset0;
  std::optional<int64_t> offset1;
  ASSERT_TRUE(service_->store().GetOffset("events", 0, &offset0).ok());
  ASSERT_TRUE(service_->store().GetOffset("events", 1, &offset1).ok());
  EXPECT_FALSE(offset0.has_value() || offset1.has_value());
}

// The same stop with the cluster up but every Produce refused, and no room
// for a pending commit (commits_in_flight=0: each commit waits for its
// outputs before more input is read): the loop is inside that wait when
// the stop comes. Before, the wait ran out its 60 s flush timeout and the
// error blamed it; now the stop cuts it short and the way out is bounded
// by stream.shutdown_timeout_ms like any other.
TEST_F(ServiceOutage, StopWhileACommitWaitsForRoomIsHonouredWithinTheShutdownTimeout) {
  config_.stream.shutdown_timeout_ms = 1500;
  config_.stream.commits_in_flight = 0;
  config_.stream.commit_interval_ms = 0;  // a commit after every micro-batch
  Produce(0, 100);
  auto status = stream::Service::Create(config_, &service_);
  ASSERT_TRUE(status.ok()) << status.message;
  ASSERT_TRUE(broker_->FailNextProduceRequests(100000, 19).ok());
  auto run = std::async(std::launch::async, [&] { return service_->Run(stop_); });
  ASSERT_TRUE(WaitUntil([&] { return Consumed() >= 1; }, 30000)) << "consumed " << Consumed();

  stop_.store(true);
  auto result = run.get();
  ASSERT_FALSE(result.ok());
  EXPECT_NE(result.message.find("within stream.shutdown_timeout_ms=1500"), std::string::npos)
      << result.message;
  EXPECT_NE(result.message.find(" reachable)"), std::string::npos) << result.message;
  EXPECT_NE(result.message.find("nothing is lost"), std::string::npos) << result.message;
  std::optional<int64_t> offset0;
  std::optional<int64_t> offset1;
  ASSERT_TRUE(service_->store().GetOffset("events", 0, &offset0).ok());
  ASSERT_TRUE(service_->store().GetOffset("events", 1, &offset1).ok());
  EXPECT_FALSE(offset0.has_value() || offset1.has_value());
}

}  // namespace
}  // namespace clv
