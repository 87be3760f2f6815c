#include "tests/e2e_support.h"

#include <httplib.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <optional>
#include <random>
#include <thread>

#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <librdkafka/rdkafka.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>

namespace clv::testing {

using Clock = std::chrono::steady_clock;

std::string UniqueSuffix() {
  static std::mt19937_64 random(std::random_device{}());
  return std::to_string(random() % 1000000000);
}

BrokerProcess::BrokerProcess(const TempDir& dir, const std::vector<std::string>& topics) {
  auto address_file = dir.path() / "broker.address";
  std::vector<std::string> argv = {
      ClvBinary().string(), "broker", "--partitions", "4", "--address-file", address_file.string()};
  for (const auto& topic : topics) argv.insert(argv.end(), {"--topic", topic});
  process_ = std::make_unique<Subprocess>(argv, dir.path() / "broker");
  if (!WaitUntil([&] { return std::filesystem::exists(address_file); }, 10000, 20)) return;
  auto text = ReadFile(address_file);
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  bootstrap_ = text;
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  socklen_t length = sizeof address;
  int port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 &&
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length) == 0) {
    port = ntohs(address.sin_port);
  }
  ::close(fd);
  return port;
}

HttpAnswer Get(int port, const std::string& path) {
  httplib::Client client("127.0.0.1", port);
  client.set_connection_timeout(2, 0);
  client.set_read_timeout(10, 0);
  auto result = client.Get(path);
  if (!result) return {};
  return {result->status, result->body};
}

connectors::ClientOptions ReaderClient(const std::string& bootstrap) {
  connectors::ClientOptions options;
  options.bootstrap_servers = bootstrap;
  options.group_id = "e2e-reader-" + UniqueSuffix();
  return options;
}

std::vector<connectors::Message> ReadTopic(const std::string& bootstrap, const std::string& topic,
                                           size_t min_messages, int idle_ms) {
  std::unique_ptr<connectors::KafkaSource> source;
  connectors::SourceCallbacks callbacks;
  callbacks.start_offset = [](const connectors::TopicPartition&) {
    return std::optional<int64_t>();
  };
  auto status =
      connectors::KafkaSource::Create(ReaderClient(bootstrap), {topic}, callbacks, &source);
  EXPECT_TRUE(status.ok()) << status.message;
  std::vector<connectors::Message> messages;
  if (!status.ok()) return messages;
  auto last_new = Clock::now();
  auto deadline = Clock::now() + std::chrono::seconds(120);
  while (Clock::now() < deadline) {
    size_t before = messages.size();
    status = source->Poll(10000, 200, &messages);
    EXPECT_TRUE(status.ok()) << status.message;
    if (messages.size() != before) last_new = Clock::now();
    if (messages.size() >= min_messages &&
        Clock::now() - last_new > std::chrono::milliseconds(idle_ms)) {
      break;
    }
  }
  (void)source->Close();
  for (const auto& m : messages) {
    bool dead_letter = false;
    for (const auto& [key, value] : m.headers) dead_letter = dead_letter || key == "clv.dlq.reason";
    if (dead_letter) continue;
    try {
      auto json = nlohmann::json::parse(m.value);
      EXPECT_TRUE(json.is_object()) << topic << " [" << m.partition << "] @" << m.offset
                                    << ": not a JSON object: " << m.value;
    } catch (const nlohmann::json::parse_error& e) {
      ADD_FAILURE() << topic << " [" << m.partition << "] @" << m.offset << ": not strict JSON ("
                    << e.what() << "): " << m.value;
    }
  }
  return messages;
}

std::map<int32_t, int64_t> CommittedOffsets(const std::string& bootstrap, const std::string& group,
                                            const std::string& topic, int partitions) {
  std::map<int32_t, int64_t> committed;
  char error[512];
  rd_kafka_conf_t* conf = rd_kafka_conf_new();
  if (rd_kafka_conf_set(conf, "bootstrap.servers", bootstrap.c_str(), error, sizeof error) !=
          RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "group.id", group.c_str(), error, sizeof error) != RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    ADD_FAILURE() << "CommittedOffsets: " << error;
    return committed;
  }
  // rd_kafka_new owns conf from here on.
  rd_kafka_t* rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, error, sizeof error);
  if (rk == nullptr) {
    rd_kafka_conf_destroy(conf);
    ADD_FAILURE() << "CommittedOffsets: " << error;
    return committed;
  }
  rd_kafka_topic_partition_list_t* list = rd_kafka_topic_partition_list_new(partitions);
  for (int p = 0; p < partitions; ++p) rd_kafka_topic_partition_list_add(list, topic.c_str(), p);
  // Right after a broker restart the group coordinator may still be moving
  // or loading: asked again for up to 20 s.
  rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
  for (int attempt = 0; attempt < 40; ++attempt) {
    err = rd_kafka_committed(rk, list, 10000);
    if (err != RD_KAFKA_RESP_ERR_NOT_COORDINATOR &&
        err != RD_KAFKA_RESP_ERR_COORDINATOR_LOAD_IN_PROGRESS &&
        err != RD_KAFKA_RESP_ERR_COORDINATOR_NOT_AVAILABLE) {
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
  EXPECT_EQ(err, RD_KAFKA_RESP_ERR_NO_ERROR)
      << "OffsetFetch of group " << group << ": " << rd_kafka_err2str(err);
  for (int i = 0; i < list->cnt && !err; ++i) {
    const auto& elem = list->elems[i];
    if (elem.err == RD_KAFKA_RESP_ERR_NO_ERROR && elem.offset >= 0) {
      committed[elem.partition] = elem.offset;
    }
  }
  rd_kafka_topic_partition_list_destroy(list);
  rd_kafka_destroy(rk);
  return committed;
}

namespace {

int KafkaScript(const std::string& script, int port, bool keep_data,
                const std::filesystem::path& log) {
  if (keep_data) setenv("KAFKA_KEEP_DATA", "1", 1);
  int rc =
      RunCommand({"/bin/bash", (SourceDir() / "scripts" / script).string(), std::to_string(port)},
                 log, 180000);
  unsetenv("KAFKA_KEEP_DATA");
  return rc;
}

// Whether 127.0.0.1:port can be bound now.
bool PortFree(int port) {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = htons(static_cast<uint16_t>(port));
  const bool free = ::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) == 0;
  ::close(fd);
  return free;
}

}  // namespace

OwnKafka::OwnKafka(const std::filesystem::path& dir) : dir_(dir) {
  // The controller listens on port + 1: both must be free.
  for (int attempt = 0; attempt < 20 && port_ == 0; ++attempt) {
    int candidate = FreePort();
    if (candidate > 0 && candidate < 65535 && PortFree(candidate + 1)) port_ = candidate;
  }
}

OwnKafka::~OwnKafka() {
  if (port_ != 0) (void)KafkaScript("kafka-stop.sh", port_, false, dir_ / "kafka-final-stop");
}

int OwnKafka::Start(bool keep_data, const std::string& name) {
  return KafkaScript("kafka-start.sh", port_, keep_data, dir_ / name);
}

int OwnKafka::Stop(bool keep_data, const std::string& name) {
  return KafkaScript("kafka-stop.sh", port_, keep_data, dir_ / name);
}

}  // namespace clv::testing
