// clv broker: the embedded Kafka-protocol broker on its own, for any client.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include <CLI/CLI.hpp>

#include "apps/commands.h"
#include "apps/common.h"
#include "config/config.h"

namespace clv::apps {

namespace {

// The topic names of the default configuration: created up front so that
// `clv replay` and `clv run` with defaults find them with --partitions.
std::vector<std::string> DefaultTopics() {
  const config::KafkaOptions defaults;
  std::vector<std::string> topics = defaults.input_topics;
  topics.insert(topics.end(),
                {defaults.scores_topic, defaults.alerts_topic, defaults.dead_letter_topic,
                 // state.changelog's default topic (stream/changelog.h).
                 defaults.group_id + "-state-changelog"});
  return topics;
}

}  // namespace

void AddBrokerCommand(CLI::App& root, int* exit_code) {
  auto* cmd = root.add_subcommand(
      "broker",
      "Start the embedded Kafka-protocol broker (librdkafka mock cluster) and print its address");
  struct Flags {
    int brokers = 1;
    int partitions = 8;
    int port = 0;
    std::vector<std::string> topics;
    bool no_default_topics = false;
    std::string address_file;
  };
  auto flags = std::make_shared<Flags>();
  cmd->add_option("--brokers", flags->brokers, "Number of mock brokers")->check(CLI::Range(1, 16));
  cmd->add_option("--port", flags->port,
                  "Listen on 127.0.0.1:PORT (broker i on PORT+i-1), so a restarted broker keeps "
                  "its address and clients reconnect; 0 = a free port")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--partitions", flags->partitions,
                  "Partitions of the topics it creates: --topic and the default topic names "
                  "(clickstream, orders, profiles, clv.scores, clv.alerts, clv.dead-letter). "
                  "A topic a client auto-creates gets 4 (fixed in librdkafka 2.0.2's mock; "
                  "a warning names it)")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--topic", flags->topics, "Create this topic up front (repeatable)");
  cmd->add_flag("--no-default-topics", flags->no_default_topics,
                "Do not create the default topic names");
  cmd->add_option("--address-file", flags->address_file,
                  "Also write the bootstrap address to this file (for scripts)");
  cmd->callback([flags, exit_code] {
    const auto& stop = InstallStopSignals();
    std::unique_ptr<connectors::EmbeddedBroker> broker;
    auto status =
        connectors::EmbeddedBroker::Start(flags->brokers, flags->partitions, &broker, flags->port);
    if (!status.ok()) {
      std::fprintf(stderr, "clv broker: %s\n", status.message.c_str());
      *exit_code = 1;
      return;
    }
    std::set<std::string> created;
    std::vector<std::string> topics = flags->topics;
    if (!flags->no_default_topics) {
      for (const auto& topic : DefaultTopics()) topics.push_back(topic);
    }
    for (const auto& topic : topics) {
      if (!created.insert(topic).second) continue;
      status = broker->CreateTopic(topic, flags->partitions);
      if (!status.ok()) {
        std::fprintf(stderr, "clv broker: %s\n", status.message.c_str());
        *exit_code = 1;
        return;
      }
    }
    if (!flags->address_file.empty()) {
      std::string tmp = flags->address_file + ".tmp";
      std::ofstream(tmp) << broker->bootstrap_servers() << "\n";
      std::rename(tmp.c_str(), flags->address_file.c_str());
    }
    std::printf("%s\n", broker->bootstrap_servers().c_str());
    std::fflush(stdout);
    std::fprintf(stderr,
                 "clv broker: embedded Kafka broker at %s (in memory; Ctrl-C stops it), "
                 "%zu topic(s) with %d partitions\n"
                 "  try: kcat -b %s -L\n",
                 broker->bootstrap_servers().c_str(), created.size(), flags->partitions,
                 broker->bootstrap_servers().c_str());
    // Topics auto-created by clients get the mock's fixed partition count:
    // say so, once per topic, with the way to get --partitions.
    connectors::ClientOptions self;
    self.bootstrap_servers = broker->bootstrap_servers();
    self.client_id = "clv-broker-watch";
    auto next_check = std::chrono::steady_clock::now();
    while (!stop.load()) {
      if (std::chrono::steady_clock::now() >= next_check) {
        next_check = std::chrono::steady_clock::now() + std::chrono::seconds(1);
        std::map<std::string, int> now;
        if (connectors::ListTopics(self, &now, 2000).ok()) {
          for (const auto& [topic, count] : now) {
            if (!created.insert(topic).second || count == flags->partitions) continue;
            std::fprintf(stderr,
                         "clv broker: warning: topic '%s' was auto-created by a client with %d "
                         "partitions, not --partitions %d (librdkafka 2.0.2's mock has a fixed "
                         "default); to get %d, restart the broker with --topic %s\n",
                         topic.c_str(), count, flags->partitions, flags->partitions, topic.c_str());
            std::fflush(stderr);
          }
        }
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    *exit_code = 0;
  });
}

}  // namespace clv::apps
