// clv replay FILE --topic T: sends a JSONL or CSV/whitespace file to a topic,
// one message per row (CSV rows become JSON objects keyed by column name, so
// the config's field mapping applies), keyed by the mapped user id field.
// With --format auto (the default) JSONL and tables are told apart by the
// file's content, so "events.txt" holding JSON lines replays as JSONL.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <vector>

#include <CLI/CLI.hpp>

#include "apps/commands.h"
#include "apps/common.h"
#include "connectors/file_source.h"

namespace clv::apps {
namespace {

// After the replay: true (and says so) when a partition's log now starts past
// where it ended before, i.e. the broker already dropped events just sent
// (the embedded broker keeps about 5 MiB per partition).
bool DroppedByTheBroker(const config::Config& config, const std::string& topic,
                        const std::map<int32_t, int64_t>& end_before) {
  std::vector<connectors::PartitionRange> ranges;
  bool embedded = false;
  auto status = connectors::TopicRanges(ClientOptionsFrom(config.kafka), topic, &ranges, &embedded);
  if (!status.ok()) {
    std::fprintf(stderr,
                 "clv replay: warning: could not check that the broker kept everything: %s\n",
                 status.message.c_str());
    return false;
  }
  int64_t dropped = 0;
  int partitions = 0;
  std::string first;
  for (const auto& r : ranges) {
    auto it = end_before.find(r.partition);
    const int64_t before = it == end_before.end() ? 0 : it->second;
    if (r.log_start <= before) continue;
    dropped += std::min(r.log_start, r.log_end) - before;
    if (partitions++ == 0) {
      first = "partition " + std::to_string(r.partition) + " now starts at offset " +
              std::to_string(r.log_start) + " (this replay wrote from offset " +
              std::to_string(before) + ")";
    }
  }
  if (dropped == 0) return false;
  std::fprintf(stderr,
               "clv replay: the broker already dropped %s of the events just sent to '%s' in %d "
               "partition(s); %s.\n",
               WithThousands(dropped).c_str(), topic.c_str(), partitions, first.c_str());
  if (embedded) {
    std::fprintf(stderr,
                 "  The embedded broker (librdkafka's mock cluster) keeps only about %lld MiB of "
                 "record batches per partition (not configurable) and drops older ones. Spread "
                 "the input over more partitions (`clv broker --topic %s --partitions N` creates "
                 "the topic up front), replay less at a time, or use a real Kafka "
                 "(scripts/kafka-start.sh).\n",
                 static_cast<long long>(connectors::kEmbeddedBrokerPartitionBytes >> 20),
                 topic.c_str());
  } else {
    std::fprintf(stderr, "  Check the topic's retention.ms / retention.bytes.\n");
  }
  std::fprintf(stderr,
               "  A service reading the topic from its start stops with an error naming the "
               "partition rather than miss them.\n");
  return true;
}

}  // namespace

void AddReplayCommand(CLI::App& root, int* exit_code) {
  auto* cmd = root.add_subcommand("replay", "Send a JSONL or CSV event file to a Kafka topic");
  struct Flags {
    ConfigFlags config;
    std::vector<std::string> files;
    std::string topic;
    std::string bootstrap;
    std::string format = "auto";
    std::vector<std::string> columns;
    int64_t max_events = 0;
  };
  auto flags = std::make_shared<Flags>();
  AddConfigFlags(*cmd, flags->config);
  cmd->add_option("files", flags->files,
                  "Event files: JSON lines, or CSV/TSV/whitespace tables (told by content)")
      ->required();
  cmd->add_option("--topic", flags->topic, "Target topic (default: the first kafka.input_topics)");
  cmd->add_option("--bootstrap", flags->bootstrap,
                  "Kafka bootstrap servers (default: kafka.bootstrap_servers)");
  cmd->add_option("--format", flags->format, "auto | jsonl | csv | ws (whitespace-separated table)")
      ->check(CLI::IsMember({"auto", "jsonl", "csv", "ws"}));
  cmd->add_option("--columns", flags->columns, "Column names for files without a header line")
      ->delimiter(',');
  cmd->add_option("--max", flags->max_events, "Stop after this many events (0 = all)");
  cmd->callback([flags, exit_code] {
    config::Config config;
    if (!LoadConfigOrReport(flags->config, &config)) {
      *exit_code = 2;
      return;
    }
    if (!flags->bootstrap.empty()) config.kafka.bootstrap_servers = flags->bootstrap;
    if (config.kafka.bootstrap_servers.empty()) {
      std::fprintf(
          stderr,
          "clv replay: no broker: pass --bootstrap HOST:PORT (e.g. the address `clv broker` "
          "prints) or set kafka.bootstrap_servers\n");
      *exit_code = 2;
      return;
    }
    std::string topic = flags->topic.empty() ? config.kafka.input_topics.front() : flags->topic;
    std::unique_ptr<connectors::KafkaSink> sink;
    auto status = connectors::KafkaSink::Create(ClientOptionsFrom(config.kafka), &sink);
    if (!status.ok()) {
      std::fprintf(stderr, "clv replay: %s\n", status.message.c_str());
      *exit_code = 1;
      return;
    }
    // Where each partition ended before: a log start past it afterwards means
    // the broker dropped some of what this replay sent.
    std::map<int32_t, int64_t> end_before;
    {
      std::vector<connectors::PartitionRange> ranges;
      if (connectors::TopicRanges(ClientOptionsFrom(config.kafka), topic, &ranges).ok()) {
        for (const auto& r : ranges) end_before[r.partition] = r.log_end;
      }
    }
    auto started = std::chrono::steady_clock::now();
    int64_t total = 0;
    for (const auto& file : flags->files) {
      // JSONL or a table is told by content (first non-blank '{'), not by name.
      std::string format = flags->format;
      const connectors::CsvOptions csv =
          connectors::CsvOptionsFor(config.mapping, flags->columns, &format);
      std::unique_ptr<connectors::EventFileReader> reader;
      status = connectors::EventFileReader::Open(file, format, csv, &reader);
      if (!status.ok()) {
        std::fprintf(stderr, "clv replay: %s\n", status.message.c_str());
        *exit_code = 1;
        return;
      }
      connectors::ReplayOptions options;
      options.topic = topic;
      options.key_field = config.mapping.user_id_field;
      options.row_id_field = config.mapping.event_id_field;
      options.source_path = file;
      options.max_events = flags->max_events;
      int64_t events = 0;
      status = connectors::ReplayFile(reader.get(), sink.get(), options, &events);
      total += events;
      if (!status.ok()) {
        std::fprintf(stderr, "clv replay: %s\n", status.message.c_str());
        *exit_code = 1;
        return;
      }
      double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
      std::fprintf(stderr, "clv replay: %s -> %s: %s events (%.0f/s so far)\n", file.c_str(),
                   topic.c_str(), WithThousands(events).c_str(), total / std::max(seconds, 1e-9));
    }
    *exit_code = DroppedByTheBroker(config, topic, end_before) ? 1 : 0;
  });
}

}  // namespace clv::apps
