// clv broker: the embedded Kafka-protocol broker on its own, for any client.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <thread>

#include <CLI/CLI.hpp>

#include "apps/commands.h"
#include "apps/common.h"

namespace clv::apps {

void AddBrokerCommand(CLI::App& root, int* exit_code) {
  auto* cmd = root.add_subcommand(
      "broker",
      "Start the embedded Kafka-protocol broker (librdkafka mock cluster) and print its address");
  struct Flags {
    int brokers = 1;
    int partitions = 8;
    std::vector<std::string> topics;
    std::string address_file;
  };
  auto flags = std::make_shared<Flags>();
  cmd->add_option("--brokers", flags->brokers, "Number of mock brokers")->check(CLI::Range(1, 16));
  cmd->add_option("--partitions", flags->partitions, "Partitions of auto-created topics")
      ->check(CLI::Range(1, 1024));
  cmd->add_option("--topic", flags->topics, "Create this topic up front (repeatable)");
  cmd->add_option("--address-file", flags->address_file,
                  "Also write the bootstrap address to this file (for scripts)");
  cmd->callback([flags, exit_code] {
    const auto& stop = InstallStopSignals();
    std::unique_ptr<connectors::EmbeddedBroker> broker;
    auto status = connectors::EmbeddedBroker::Start(flags->brokers, flags->partitions, &broker);
    if (!status.ok()) {
      std::fprintf(stderr, "clv broker: %s\n", status.message.c_str());
      *exit_code = 1;
      return;
    }
    for (const auto& topic : flags->topics) {
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
                 "clv broker: embedded Kafka broker at %s (in memory; Ctrl-C stops it)\n"
                 "  try: kcat -b %s -L\n",
                 broker->bootstrap_servers().c_str(), broker->bootstrap_servers().c_str());
    while (!stop.load()) std::this_thread::sleep_for(std::chrono::milliseconds(100));
    *exit_code = 0;
  });
}

}  // namespace clv::apps
