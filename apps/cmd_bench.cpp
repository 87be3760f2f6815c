// clv bench: the whole pipeline on the embedded broker, end to end.
// Prints the machine and every parameter first (like db_bench), then:
//   1. produce: the synthetic shop's events into one topic;
//   2. ceiling: a consume-only pass over the same topic (same consumer code);
//   3. pipeline: the service over the same topic: events/s, as a ratio of the ceiling;
//   4. latency: a second topic fed at a fixed rate while the service runs:
//      event-to-score latency p50/p99 (message timestamp -> score acknowledged);
//   5. state bytes per user.
// Throughput excludes the consumer-group join (the mock broker waits ~3 s).
#include <pthread.h>
#include <time.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <librdkafka/rdkafka.h>

#include "apps/commands.h"
#include "apps/common.h"
#include "apps/shop_flags.h"
#include "stream/service.h"

namespace clv::apps {

namespace {

using Clock = std::chrono::steady_clock;

std::string CpuModel() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  }
  return "unknown";
}

double ProcessCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

double ThreadCpuSeconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + ts.tv_nsec * 1e-9;
}

struct BenchFlags {
  ConfigFlags config;
  ShopFlags shop;
  int partitions = 8;
  int brokers = 1;
  std::string bootstrap;    // an existing cluster instead of the embedded broker
  double latency_rate = 0;  // events/s in the latency phase; 0 = half the measured throughput
  double latency_seconds = 10;
  // The project's targets on a 2-core machine: the baseline scorer at least
  // 100k events/s and 40% of the consume-only ceiling; the LSTM 60k events/s.
  double target_events_per_second = 100000;
  double target_ceiling_ratio = 0.40;
  double target_lstm_events_per_second = 60000;
};

struct PhaseResult {
  int64_t events = 0;
  double seconds = 0;  // first event consumed -> end
  double p50_ms = 0, p99_ms = 0;
  // Seconds of the service loop spent in each stage.
  double poll_s = 0, process_s = 0, scorer_s = 0, flush_s = 0, store_s = 0;
  int64_t batches = 0, commits = 0;
  // CPU seconds of the whole process (service, Kafka clients and the
  // embedded broker) and of the service's own thread while it ran.
  double process_cpu_s = 0, service_cpu_s = 0;
  std::string error;
};

// Runs the service over `topic` until `events` were consumed.
PhaseResult RunPipeline(config::Config config, const std::string& topic, int64_t events,
                        const std::string& state_dir, std::atomic<int64_t>* produced = nullptr,
                        std::atomic<bool>* producer_done = nullptr,
                        std::atomic<bool>* service_ready = nullptr,
                        std::atomic<bool>* warmed_up = nullptr) {
  PhaseResult result;
  config.kafka.input_topics = {topic};
  config.kafka.group_id = "bench-" + topic;
  config.state.dir = state_dir;
  config.stream.max_events = producer_done ? 0 : events;
  std::unique_ptr<stream::Service> service;
  auto status = stream::Service::Create(config, &service);
  if (!status.ok()) {
    result.error = status.message;
    return result;
  }
  std::atomic<bool> stop{false};
  connectors::Status run_status = connectors::Status::Ok();
  const double cpu_before = ProcessCpuSeconds();
  std::thread runner([&] {
    pthread_setname_np(pthread_self(), "clv-service");  // for perf/top -H
    run_status = service->Run(stop);
    result.service_cpu_s = ThreadCpuSeconds();
  });
  const auto& counters = service->processor().counters();
  Clock::time_point first{};
  auto last_print = Clock::now();
  bool running = true;
  while (running) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    int64_t consumed = counters.consumed.load();
    if (consumed > 0 && first == Clock::time_point{}) first = Clock::now();
    if (service_ready != nullptr && !service_ready->load() && service->ready())
      service_ready->store(true);
    if (warmed_up != nullptr && warmed_up->exchange(false))
      service->processor().RequestLatencyReset();
    if (producer_done) {
      if (producer_done->load() && consumed >= produced->load()) stop.store(true);
    }
    if (Clock::now() - last_print > std::chrono::seconds(1)) {
      last_print = Clock::now();
      std::fprintf(stderr, "\r  ... %s events consumed", WithThousands(consumed).c_str());
    }
    running = !stop.load() && consumed < events;
    if (!producer_done && consumed >= events) running = false;
    if (!running && !producer_done) break;
  }
  stop.store(true);
  runner.join();
  auto end = Clock::now();
  result.process_cpu_s = ProcessCpuSeconds() - cpu_before;
  std::fprintf(stderr, "\r");
  if (!run_status.ok()) result.error = run_status.message;
  result.events = counters.consumed.load();
  result.seconds = std::chrono::duration<double>(end - first).count();
  result.p50_ms = service->processor().latency().Quantile(0.5);
  result.p99_ms = service->processor().latency().Quantile(0.99);
  result.poll_s = counters.poll_nanos.load() * 1e-9;
  result.process_s = counters.process_nanos.load() * 1e-9;
  result.scorer_s = counters.scorer_nanos.load() * 1e-9;
  result.flush_s = counters.flush_nanos.load() * 1e-9;
  result.store_s = counters.store_nanos.load() * 1e-9;
  result.batches = counters.batches.load();
  result.commits = counters.commits.load();
  return result;
}

}  // namespace

void AddBenchCommand(CLI::App& root, int* exit_code) {
  auto* cmd =
      root.add_subcommand("bench", "End-to-end throughput and latency on the embedded broker");
  auto flags = std::make_shared<BenchFlags>();
  flags->shop.options.users = 20000;
  flags->shop.options.days = 120;
  AddConfigFlags(*cmd, flags->config);
  AddShopFlags(*cmd, flags->shop);
  cmd->add_option("--partitions", flags->partitions, "Partitions of the bench topics")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--brokers", flags->brokers, "Mock brokers")->check(CLI::Range(1, 8));
  cmd->add_option(
      "--bootstrap", flags->bootstrap,
      "Run against this Kafka cluster instead of the embedded broker (e.g. the real broker "
      "of scripts/kafka-start.sh); creates topics bench.events.PID and bench.paced.PID");
  cmd->add_option("--latency-rate", flags->latency_rate,
                  "Events/s fed in the latency phase (0 = half the measured throughput)");
  cmd->add_option("--latency-seconds", flags->latency_seconds, "Length of the latency phase");
  cmd->callback([flags, exit_code] {
    config::Config config;
    if (!LoadConfigOrReport(flags->config, &config) ||
        !ResolveShopFlags(flags->shop, "clv bench")) {
      *exit_code = 2;
      return;
    }
    auto dir = std::filesystem::temp_directory_path() / ("clv-bench-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir);
    std::printf("clvstream bench\n");
    std::printf("  date:        %s",
                [] {
                  std::time_t t = std::time(nullptr);
                  return std::string(std::asctime(std::gmtime(&t)));
                }()
                    .c_str());
    std::printf("  cpu:         %s, %u cores\n", CpuModel().c_str(),
                std::thread::hardware_concurrency());
#ifdef NDEBUG
    std::printf("  build:       optimized, assertions off\n");
#else
    std::printf("  build:       WARNING: assertions on (not an optimized build)\n");
#endif
    if (flags->bootstrap.empty()) {
      std::printf("  librdkafka:  %s (embedded mock broker, %d broker(s), %d partitions)\n",
                  rd_kafka_version_str(), flags->brokers, flags->partitions);
    } else {
      std::printf("  librdkafka:  %s (cluster at %s, %d partitions)\n", rd_kafka_version_str(),
                  flags->bootstrap.c_str(), flags->partitions);
    }
    std::printf("  scorer:      %s  (model.path '%s')\n", config.model.scorer.c_str(),
                config.model.path.c_str());
    std::printf("  shop:        %s users, %.0f days, seed %llu\n",
                WithThousands(flags->shop.options.users).c_str(), flags->shop.options.days,
                static_cast<unsigned long long>(flags->shop.options.seed));
    std::printf(
        "  stream:      batch_max_events %d, batch_max_wait_ms %d, commit_interval_ms %d, emit "
        "%s\n",
        config.stream.batch_max_events, config.stream.batch_max_wait_ms,
        config.stream.commit_interval_ms, config.stream.emit.c_str());
    std::fflush(stdout);

    std::unique_ptr<connectors::EmbeddedBroker> broker;
    std::string topic = "bench.events", paced_topic = "bench.paced";
    connectors::Status status = connectors::Status::Ok();
    if (flags->bootstrap.empty()) {
      status = connectors::EmbeddedBroker::Start(flags->brokers, flags->partitions, &broker);
      if (status.ok()) {
        config.kafka.bootstrap_servers = broker->bootstrap_servers();
        for (const auto& t : {topic, paced_topic}) {
          status = broker->CreateTopic(t, flags->partitions);
          if (!status.ok()) break;
        }
      }
    } else {
      // Fresh topics per run on a shared cluster; output topics get a suffix too.
      const std::string suffix = "." + std::to_string(::getpid());
      topic += suffix;
      paced_topic += suffix;
      config.kafka.bootstrap_servers = flags->bootstrap;
      config.kafka.scores_topic += suffix;
      config.kafka.alerts_topic += suffix;
      config.kafka.dead_letter_topic += suffix;
      status = connectors::EnsureTopics(ClientOptionsFrom(config.kafka), {topic, paced_topic},
                                        flags->partitions, 1);
    }
    if (!status.ok()) {
      std::fprintf(stderr, "clv bench: %s\n", status.message.c_str());
      *exit_code = 1;
      return;
    }
    // 1. produce
    std::unique_ptr<connectors::KafkaSink> producer;
    status = connectors::KafkaSink::Create(ClientOptionsFrom(config.kafka), &producer);
    if (!status.ok()) {
      std::fprintf(stderr, "clv bench: %s\n", status.message.c_str());
      *exit_code = 1;
      return;
    }
    auto started = Clock::now();
    int64_t events = 0;
    {
      sim::SyntheticShop shop(flags->shop.options);
      sim::GeneratedEvent event;
      while (shop.Next(&event)) {
        status = producer->Send(topic, event.user_id, event.json);
        if (!status.ok()) break;
        if ((++events & 0x3FFFF) == 0)
          std::fprintf(stderr, "\r  producing: %s events", WithThousands(events).c_str());
      }
    }
    if (status.ok()) status = producer->Flush(120000);
    if (!status.ok()) {
      std::fprintf(stderr, "clv bench: producing: %s\n", status.message.c_str());
      *exit_code = 1;
      return;
    }
    double produce_seconds = std::chrono::duration<double>(Clock::now() - started).count();
    if (flags->bootstrap.empty()) {
      // The embedded broker keeps about 5 MiB per partition and drops older
      // data: every number below would be measured on a fraction.
      std::vector<connectors::PartitionRange> ranges;
      status = connectors::TopicRanges(ClientOptionsFrom(config.kafka), topic, &ranges);
      int64_t kept = 0;
      for (const auto& r : ranges) kept += r.log_end - r.log_start;
      if (status.ok() && kept < events) {
        // The partitions that would hold every event, with a quarter to spare.
        const long long needed = (static_cast<long long>(flags->partitions) * events + kept - 1) /
                                     std::max<int64_t>(kept, 1) * 5 / 4 +
                                 1;
        std::fprintf(stderr,
                     "\nclv bench: the embedded broker kept %s of the %s events produced (it keeps "
                     "about %lld MiB per partition and drops older data): run with --partitions "
                     "%lld or more, or fewer --users / --days\n",
                     WithThousands(kept).c_str(), WithThousands(events).c_str(),
                     static_cast<long long>(connectors::kEmbeddedBrokerPartitionBytes >> 20),
                     needed);
        *exit_code = 1;
        return;
      }
      if (!status.ok()) {
        std::fprintf(stderr, "clv bench: checking what the broker kept: %s\n",
                     status.message.c_str());
      }
    }
    std::printf(
        "\nproduce        %12s events in %6.2fs  %12s events/s (synthetic shop + producer)\n",
        WithThousands(events).c_str(), produce_seconds,
        WithThousands(static_cast<int64_t>(events / produce_seconds)).c_str());
    std::fflush(stdout);

    // 2. ceiling
    connectors::ConsumeStats ceiling;
    auto client = ClientOptionsFrom(config.kafka);
    client.group_id = "bench-ceiling";
    status = connectors::ConsumeOnlyPass(client, {topic}, events, 300000, &ceiling);
    if (!status.ok()) {
      std::fprintf(stderr, "clv bench: consume-only pass: %s\n", status.message.c_str());
      *exit_code = 1;
      return;
    }
    double ceiling_rate = ceiling.messages / std::max(ceiling.seconds, 1e-9);
    std::printf(
        "ceiling        %12s events in %6.2fs  %12s events/s (consume only, same topic; join %.1fs "
        "excluded)\n",
        WithThousands(ceiling.messages).c_str(), ceiling.seconds,
        WithThousands(static_cast<int64_t>(ceiling_rate)).c_str(), ceiling.join_seconds);
    std::fflush(stdout);

    // 3. pipeline
    auto pipeline = RunPipeline(config, topic, events, (dir / "state").string());
    if (!pipeline.error.empty()) {
      std::fprintf(stderr, "clv bench: pipeline: %s\n", pipeline.error.c_str());
      *exit_code = 1;
      return;
    }
    double pipeline_rate = pipeline.events / std::max(pipeline.seconds, 1e-9);
    const bool lstm = config.model.scorer == "lstm";
    const double target_rate =
        lstm ? flags->target_lstm_events_per_second : flags->target_events_per_second;
    const double target_ratio = lstm ? 0.0 : flags->target_ceiling_ratio;
    std::string target =
        "target >= " + WithThousands(static_cast<int64_t>(target_rate)) + " events/s";
    if (target_ratio > 0)
      target += " and >= " + std::to_string(static_cast<int>(100 * target_ratio)) + "%";
    target +=
        std::string(" with the ") + config.model.scorer + " scorer: " +
        (pipeline_rate >= target_rate && pipeline_rate >= target_ratio * ceiling_rate ? "met"
                                                                                      : "NOT met");
    std::printf(
        "pipeline       %12s events in %6.2fs  %12s events/s = %.0f%% of the ceiling  (%s)\n",
        WithThousands(pipeline.events).c_str(), pipeline.seconds,
        WithThousands(static_cast<int64_t>(pipeline_rate)).c_str(),
        100 * pipeline_rate / ceiling_rate, target.c_str());
    std::printf(
        "  where the time goes: waiting for input %.2fs, processing %.2fs (scorer %.2fs), "
        "waiting for score acks %.2fs, RocksDB commit %.2fs; %s batches, %s commits\n",
        pipeline.poll_s, pipeline.process_s, pipeline.scorer_s, pipeline.flush_s, pipeline.store_s,
        WithThousands(pipeline.batches).c_str(), WithThousands(pipeline.commits).c_str());
    std::printf(
        "  CPU: %.2fs in all threads (%.1f us/event; service thread %.2fs, the rest is Kafka "
        "clients and the embedded broker)\n",
        pipeline.process_cpu_s,
        1e6 * pipeline.process_cpu_s / std::max<int64_t>(1, pipeline.events),
        pipeline.service_cpu_s);
    std::fflush(stdout);

    // 5. state bytes per user (before the latency phase adds a second store)
    {
      std::unique_ptr<state::StateStore> store;
      config::StateOptions state_options = config.state;
      state_options.dir = (dir / "state").string();
      auto open_status = state::OpenRocksDbStoreReadOnly(state_options, &store);
      if (open_status.ok()) {
        int64_t users = 0, bytes = 0;
        auto snapshot = store->Snapshot();
        (void)snapshot->ForEachUser([&](std::string_view id, const state::UserState& s) {
          std::string encoded;
          state::Encode(s, &encoded);
          bytes += static_cast<int64_t>(encoded.size() + id.size());
          ++users;
          return true;
        });
        std::printf(
            "state          %12s users, %6.0f bytes/user encoded (key + value), %s bytes on disk\n",
            WithThousands(users).c_str(), users ? static_cast<double>(bytes) / users : 0.0,
            WithThousands(static_cast<int64_t>(store->ApproximateBytes())).c_str());
      }
    }

    // 4. latency at a fixed rate
    double rate =
        flags->latency_rate > 0 ? flags->latency_rate : std::min(pipeline_rate / 2, 200000.0);
    constexpr double kWarmupSeconds = 2;
    auto paced_events = static_cast<int64_t>(rate * (kWarmupSeconds + flags->latency_seconds));
    std::atomic<int64_t> produced{0};
    std::atomic<bool> producer_done{false};
    std::atomic<bool> service_ready{false};
    std::atomic<bool> warmed_up{false};
    std::thread paced([&] {
      sim::SyntheticShop shop(flags->shop.options);
      sim::GeneratedEvent event;
      // Steady state only: start once the service has its partitions (the
      // group join is not part of event-to-score latency).
      const auto give_up = Clock::now() + std::chrono::seconds(60);
      while (!service_ready.load() && Clock::now() < give_up) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      auto t0 = Clock::now();
      while (produced.load() < paced_events && shop.Next(&event)) {
        if (!producer->Send(paced_topic, event.user_id, event.json).ok()) break;
        int64_t n = produced.fetch_add(1) + 1;
        if (n == static_cast<int64_t>(kWarmupSeconds * rate)) warmed_up.store(true);
        if (n % 64 == 0)
          std::this_thread::sleep_until(t0 + std::chrono::duration<double>(n / rate));
      }
      (void)producer->Flush(60000);
      producer_done.store(true);
    });
    auto latency = RunPipeline(config, paced_topic, paced_events, (dir / "state-paced").string(),
                               &produced, &producer_done, &service_ready, &warmed_up);
    paced.join();
    if (!latency.error.empty()) {
      std::fprintf(stderr, "clv bench: latency phase: %s\n", latency.error.c_str());
      *exit_code = 1;
      return;
    }
    std::printf(
        "latency        %12s events at %s events/s: event-to-score p50 %.1f ms, p99 %.1f ms "
        "(producer timestamp -> score acknowledged by the broker; the first %.0f s are warm-up, "
        "not counted)\n",
        WithThousands(latency.events).c_str(), WithThousands(static_cast<int64_t>(rate)).c_str(),
        latency.p50_ms, latency.p99_ms, kWarmupSeconds);
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
    *exit_code = 0;
  });
}

}  // namespace clv::apps
