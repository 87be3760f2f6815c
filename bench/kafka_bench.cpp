// Consume-only throughput on the embedded broker (librdkafka mock cluster),
// and optionally on a real broker (CLV_REAL_KAFKA=host:port).
//
// For each scenario: produce N messages (one producer, given batching), then
// a fresh consumer group reads them all (ConsumeOnlyPass). Prints machine,
// librdkafka version and every parameter before the numbers, like db_bench.
//
// Usage: kafka_bench [messages=50000] [value_bytes=200]
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <librdkafka/rdkafka.h>
#include <sys/utsname.h>

#include "connectors/kafka.h"

namespace {

using clv::connectors::ClientOptions;
using clv::connectors::ConsumeStats;

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

struct Scenario {
  const char* name;
  int brokers;
  int partitions;
  std::map<std::string, std::string> producer;  // extra producer properties
  std::map<std::string, std::string> consumer;  // extra consumer properties
};

bool Fill(const ClientOptions& base, const Scenario& sc, const std::string& topic, int64_t n,
          const std::string& value, double* produce_s) {
  ClientOptions options = base;
  options.properties = sc.producer;
  std::unique_ptr<clv::connectors::KafkaSink> sink;
  auto s = clv::connectors::KafkaSink::Create(options, &sink);
  if (!s.ok()) {
    std::fprintf(stderr, "%s\n", s.message.c_str());
    return false;
  }
  auto start = std::chrono::steady_clock::now();
  for (int64_t i = 0; i < n; ++i) {
    s = sink->Send(topic, "user-" + std::to_string(i % 10007), value);
    if (!s.ok()) break;
  }
  if (s.ok()) s = sink->Flush(120000);
  *produce_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!s.ok()) std::fprintf(stderr, "%s\n", s.message.c_str());
  return s.ok();
}

void Run(const Scenario& sc, const std::string& real_bootstrap, int64_t n,
         const std::string& value) {
  std::unique_ptr<clv::connectors::EmbeddedBroker> broker;
  ClientOptions options;
  static int run = 0;
  const std::string topic = "bench-" + std::to_string(getpid()) + "-" + std::to_string(++run);
  if (real_bootstrap.empty()) {
    auto s = clv::connectors::EmbeddedBroker::Start(sc.brokers, sc.partitions, &broker);
    if (!s.ok()) return (void)std::fprintf(stderr, "%s\n", s.message.c_str());
    options.bootstrap_servers = broker->bootstrap_servers();
  } else {
    options.bootstrap_servers = real_bootstrap;
  }
  if (auto s = clv::connectors::EnsureTopics(options, {topic}, sc.partitions, 1); !s.ok()) {
    return (void)std::fprintf(stderr, "%s\n", s.message.c_str());
  }
  double produce_s = 0;
  if (!Fill(options, sc, topic, n, value, &produce_s)) return;
  options.properties = sc.consumer;
  ConsumeStats stats;
  auto s = clv::connectors::ConsumeOnlyPass(options, {topic}, n, 120000, &stats);
  std::printf("%-34s %-5s %2d %3d %9.0f %11.0f %8.2f %8.1f%s\n", sc.name,
              real_bootstrap.empty() ? "mock" : "real", sc.brokers, sc.partitions, n / produce_s,
              stats.seconds > 0 ? stats.messages / stats.seconds : 0.0, stats.join_seconds,
              stats.bytes / 1e6, s.ok() ? "" : "  (INCOMPLETE)");
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  const int64_t n = argc > 1 ? std::atoll(argv[1]) : 50000;
  const int value_bytes = argc > 2 ? std::atoi(argv[2]) : 200;
  const std::string value(value_bytes, 'v');
  const char* real = std::getenv("CLV_REAL_KAFKA");

  utsname u{};
  uname(&u);
  std::printf("kafka_bench: consume-only ceiling\n");
  std::printf("date:        %ld (unix)\n", static_cast<long>(std::time(nullptr)));
  std::printf("machine:     %s, %ld cores, %s %s\n", CpuModel().c_str(),
              sysconf(_SC_NPROCESSORS_ONLN), u.sysname, u.release);
  std::printf("librdkafka:  %s\n", rd_kafka_version_str());
  std::printf(
      "messages:    %lld x %d-byte value (+ ~10-byte key), one producer, then one consumer\n",
      static_cast<long long>(n), value_bytes);
  std::printf(
      "producer:    KafkaSink defaults (idempotent, acks=all, lz4, linger.ms=5, "
      "batch.num.messages=10000) + scenario overrides\n");
  std::printf(
      "consumer:    KafkaSource defaults + scenario overrides; msg/s = first to last "
      "message, join = create to first message\n");
  std::printf("real broker: %s\n\n", real != nullptr ? real : "(CLV_REAL_KAFKA unset: mock only)");
  std::printf("%-34s %-5s %2s %3s %9s %11s %8s %8s\n", "scenario", "where", "br", "par", "prod/s",
              "consume/s", "join_s", "MB");

  const std::map<std::string, std::string> one_per_batch = {{"linger.ms", "0"},
                                                            {"batch.num.messages", "1"}};
  const auto fast = clv::connectors::MockFriendlyConsumerProperties();
  std::vector<Scenario> scenarios = {
      {"1 msg/batch, default consumer", 1, 2, one_per_batch, {}},
      {"1 msg/batch, default consumer", 3, 8, one_per_batch, {}},
      {"1 msg/batch, mock-friendly", 1, 2, one_per_batch, fast},
      {"batched producer, default consumer", 1, 2, {}, {}},
      {"batched producer, default consumer", 3, 8, {}, {}},
      {"batched producer, mock-friendly", 1, 2, {}, fast},
      {"batched producer, mock-friendly", 3, 8, {}, fast},
  };
  for (const auto& sc : scenarios) Run(sc, "", n, value);
  if (real != nullptr) {
    for (const auto& sc : scenarios) {
      if (sc.brokers == 1) Run(sc, real, n, value);
    }
  }
  return 0;
}
