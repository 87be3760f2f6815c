// Helpers shared by the end-to-end suites (tests/e2e_*_test.cpp), which run
// the clv binary against a broker in its own process: the broker, reading a
// topic back, unique names, waiting for a condition.
// Not thread-safe; one test at a time.
#pragma once
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "connectors/kafka.h"
#include "tests/test_support.h"

namespace clv::testing {

// A random decimal suffix for topic and group names of one test.
std::string UniqueSuffix();

// The embedded broker as `clv broker` in its own process (4 partitions per
// topic, `topics` created up front), stopped with the object. bootstrap() is
// empty if it did not start within 10 s.
class BrokerProcess {
 public:
  explicit BrokerProcess(const TempDir& dir, const std::vector<std::string>& topics = {});
  const std::string& bootstrap() const { return bootstrap_; }

 private:
  std::unique_ptr<Subprocess> process_;
  std::string bootstrap_;
};

// A free TCP port on 127.0.0.1 (bound and released; the caller binds it next).
int FreePort();

struct HttpAnswer {
  int status = 0;  // 0: no answer
  std::string body;
};
// GET http://127.0.0.1:port/path (2 s to connect, 10 s to read).
HttpAnswer Get(int port, const std::string& path);

// A real Kafka broker of a test's own (scripts/kafka-start.sh on a free port
// pair; the shared CLV_REAL_KAFKA broker serves other tests meanwhile), so
// that the test can stop and start it; stopped and removed with the object.
// Needs the jars of scripts/kafka-fetch.sh.
class OwnKafka {
 public:
  explicit OwnKafka(const std::filesystem::path& dir);
  ~OwnKafka();
  OwnKafka(const OwnKafka&) = delete;
  OwnKafka& operator=(const OwnKafka&) = delete;
  int port() const { return port_; }  // 0: no free port pair found
  std::string bootstrap() const { return "127.0.0.1:" + std::to_string(port_); }
  // scripts/kafka-start.sh / kafka-stop.sh; keep_data: KAFKA_KEEP_DATA=1 (a
  // stop keeps the data, a start restarts on it). The script's exit status;
  // its output goes to dir/name.
  int Start(bool keep_data, const std::string& name);
  int Stop(bool keep_data, const std::string& name);

 private:
  std::filesystem::path dir_;
  int port_ = 0;
};

// Client options for a reader with a group id of its own.
connectors::ClientOptions ReaderClient(const std::string& bootstrap);

// Every message of `topic`, from the beginning, read until `idle_ms` pass
// without a new one after at least `min_messages` (at most 120 s). Every
// value clvstream produced (scores, alerts: all but dead letters, which carry
// the original bytes and a clv.dlq.reason header) must be one JSON object by
// a strict parser (no NaN, no Infinity): the test fails otherwise.
std::vector<connectors::Message> ReadTopic(const std::string& bootstrap, const std::string& topic,
                                           size_t min_messages, int idle_ms = 3000);

// The next offsets consumer group `group` committed to Kafka for partitions
// 0..partitions-1 of `topic` (those without a commit are left out), as
// `kafka-consumer-groups.sh --describe` shows them.
std::map<int32_t, int64_t> CommittedOffsets(const std::string& bootstrap, const std::string& group,
                                            const std::string& topic, int partitions);

}  // namespace clv::testing
