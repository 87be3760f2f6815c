// RealKafkaTest: the fixture of the tests against a real Apache Kafka broker
// whose address is in CLV_REAL_KAFKA (start one with scripts/kafka-start.sh).
// Skips with a message when it is unset; fails under CI=true, where the
// broker is always started. Real brokers keep data between runs: names are
// unique per test (Topic(), suffix_), and options_ has a group id of its own.
//
// Example:
//   using clv::testing::RealKafkaTest;
//   TEST_F(RealKafkaTest, Something) {
//     const auto topic = Topic("something");
//     ASSERT_TRUE(connectors::EnsureTopics(options_, {topic}, 1, 1).ok());
//     Produce(topic, 10);
//   }
//
// Not thread-safe; one test at a time.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>

#include <gtest/gtest.h>

#include "connectors/kafka.h"
#include "tests/test_support.h"

namespace clv::testing {

class RealKafkaTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* bootstrap = std::getenv("CLV_REAL_KAFKA");
    if (bootstrap == nullptr || *bootstrap == '\0') {
      if (InCi()) FAIL() << "CLV_REAL_KAFKA unset under CI (scripts/kafka-start.sh)";
      GTEST_SKIP() << "CLV_REAL_KAFKA unset: start a broker with "
                      "`export CLV_REAL_KAFKA=$(scripts/kafka-start.sh)` to run these tests";
    }
    options_.bootstrap_servers = bootstrap;
    suffix_ = std::to_string(getpid()) + "-" +
              std::to_string(std::chrono::system_clock::now().time_since_epoch().count());
    options_.group_id = "clv-real-test-" + suffix_;
  }

  std::string Topic(const std::string& name) const { return "clv-test-" + name + "-" + suffix_; }

  // Sends values m0..m<count-1> with keys user-<i % 7> (to `partition`, or by
  // key when it is -1) and waits until every one is acknowledged.
  void Produce(const std::string& topic, int count, int32_t partition = -1) {
    std::unique_ptr<connectors::KafkaSink> sink;
    auto s = connectors::KafkaSink::Create(options_, &sink);
    ASSERT_TRUE(s.ok()) << s.message;
    for (int i = 0; i < count; ++i) {
      s = sink->Send(topic, "user-" + std::to_string(i % 7), "m" + std::to_string(i), partition);
      ASSERT_TRUE(s.ok()) << s.message;
    }
    s = sink->Flush(30000);
    ASSERT_TRUE(s.ok()) << s.message;
    ASSERT_EQ(sink->delivered(), static_cast<uint64_t>(count));
  }

  connectors::ClientOptions options_;
  std::string suffix_;
};

}  // namespace clv::testing
