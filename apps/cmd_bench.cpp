// clv bench: the whole pipeline on the embedded broker, end to end.
// Prints the machine and every parameter first (like db_bench), then:
//   1. produce: the synthetic shop's events into one topic;
//   2. ceiling: a consume-only pass over the same topic (same consumer code);
//   3. pipeline: the service over the same topic: events/s, as a ratio of the ceiling;
//   4. latency: a second topic fed at a fixed rate while the service runs:
//      event-to-score latency seen by an external consumer of the scores
//      (producer send -> score received), and the service's own view
//      (message timestamp -> score acknowledged);
//   5. state bytes per user.
// --latency-only skips 1-3 and 5 (needs --latency-rate).
// Throughput excludes the consumer-group join (the mock broker waits ~3 s).
#include <pthread.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>
#include <unordered_map>

#include <CLI/CLI.hpp>
#include <librdkafka/rdkafka.h>

#include "apps/commands.h"
#include "apps/common.h"
#include "apps/shop_flags.h"
#include "stream/service.h"
#include "stream/work_pool.h"

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
  int partitions = 16;  // the default shop (1.2M events) fits the embedded broker
  int brokers = 1;
  std::string bootstrap;    // an existing cluster instead of the embedded broker
  double latency_rate = 0;  // events/s in the latency phase; 0 = half the measured throughput
  double latency_seconds = 10;
  bool latency_only = false;  // skip produce, ceiling, pipeline and state
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
  int64_t duplicates = 0, dead_lettered = 0;
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
  // Run returns early on an error (or an idle exit): the phase ends with it.
  std::atomic<bool> service_done{false};
  std::thread runner([&] {
    pthread_setname_np(pthread_self(), "clv-service");  // for perf/top -H
    run_status = service->Run(stop);
    result.service_cpu_s = ThreadCpuSeconds();
    service_done.store(true);
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
    running = !stop.load() && consumed < events && !service_done.load();
    if (!producer_done && consumed >= events) running = false;
    if (!running && !producer_done) break;
  }
  stop.store(true);
  runner.join();
  auto end = Clock::now();
  result.process_cpu_s = ProcessCpuSeconds() - cpu_before;
  std::fprintf(stderr, "\r");
  if (!run_status.ok()) {
    result.error = run_status.message;
  } else if (!producer_done && counters.consumed.load() < events) {
    result.error = "the service stopped after " + WithThousands(counters.consumed.load()) + " of " +
                   WithThousands(events) + " events without an error";
  }
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
  result.duplicates = counters.duplicates.load();
  result.dead_lettered = counters.dead_lettered.load();
  return result;
}

// Event-to-score latency as a consumer of the scores topic sees it. The
// paced producer records each event just before it is sent (the moment
// librdkafka stamps the message); a reader of the scores topic, a consumer
// of its own group, matches each score to its event and records the time
// it received it. A score names its event by (user_id, event_ts) and its
// trigger (timer rescores are not events and are skipped); one user's scores
// arrive in the order of its events (one partition, keyed by user), so each
// score is matched to the oldest pending event of that user with its event
// time. Events passed over that way got no score (refused by the service as
// late, duplicate or invalid) and are counted as such.
// With stream.emit=per_batch a user's score of a batch covers all its events
// before it: a score (a timer's too) at event time T is the arrival of every
// pending event of that user at or before T.
class ExternalLatency {
 public:
  ExternalLatency(int64_t warmup_events, bool per_batch)
      : warmup_events_(warmup_events), per_batch_(per_batch) {}

  // Producer thread, just before the event is sent.
  void Sent(const std::string& user_id, int64_t event_ts, int64_t index) {
    std::lock_guard lock(mutex_);
    pending_[user_id].push_back({event_ts, index, Clock::now()});
  }

  // Reader thread: a score message received at `received`.
  void Received(std::string_view json, Clock::time_point received) {
    const bool timer = json.find(R"("trigger":"timer")") != std::string_view::npos;
    if (timer && !per_batch_) return;
    std::string user_id;
    int64_t event_ts = 0;
    if (!Field(json, R"("user_id":")", &user_id) || !IntField(json, R"("event_ts":)", &event_ts)) {
      ++unparsed_;
      return;
    }
    std::lock_guard lock(mutex_);
    auto it = pending_.find(user_id);
    if (it == pending_.end()) {
      ++unmatched_;
      return;
    }
    auto& queue = it->second;
    if (per_batch_) {
      while (!queue.empty() && queue.front().event_ts <= event_ts) {
        Record(queue.front(), received);
        queue.pop_front();
      }
      return;
    }
    while (!queue.empty() && queue.front().event_ts != event_ts) {
      Unscored(queue.front());
      queue.pop_front();
    }
    if (queue.empty()) {
      ++unmatched_;
      return;
    }
    Record(queue.front(), received);
    queue.pop_front();
  }

  // Events sent after the warm-up still waiting for a score.
  int64_t Outstanding() {
    std::lock_guard lock(mutex_);
    int64_t n = 0;
    for (const auto& [user, queue] : pending_) {
      for (const auto& p : queue) n += p.index >= warmup_events_ ? 1 : 0;
    }
    return n;
  }

  struct Summary {
    int64_t counted = 0;   // events after the warm-up with a score
    int64_t unscored = 0;  // events after the warm-up that got none
    int64_t unmatched = 0, unparsed = 0;
    double p50 = NAN, p90 = NAN, p99 = NAN, max = NAN;
  };
  Summary Summarize() {
    std::lock_guard lock(mutex_);
    Summary out;
    for (const auto& [user, queue] : pending_) {
      for (const auto& p : queue) Unscored(p);
      (void)user;
    }
    pending_.clear();
    out.unscored = unscored_;
    out.unmatched = unmatched_;
    out.unparsed = unparsed_;
    std::sort(latencies_ms_.begin(), latencies_ms_.end());
    out.counted = static_cast<int64_t>(latencies_ms_.size());
    if (!latencies_ms_.empty()) {
      auto at = [&](double q) {
        auto i = static_cast<size_t>(std::ceil(q * static_cast<double>(latencies_ms_.size())));
        return latencies_ms_[std::min(latencies_ms_.size() - 1, i == 0 ? 0 : i - 1)];
      };
      out.p50 = at(0.50);
      out.p90 = at(0.90);
      out.p99 = at(0.99);
      out.max = latencies_ms_.back();
    }
    return out;
  }

 private:
  struct Pending {
    int64_t event_ts;
    int64_t index;
    Clock::time_point sent;
  };
  void Record(const Pending& p, Clock::time_point received) {
    if (p.index < warmup_events_) return;
    latencies_ms_.push_back(std::chrono::duration<double, std::milli>(received - p.sent).count());
  }
  void Unscored(const Pending& p) { unscored_ += p.index >= warmup_events_ ? 1 : 0; }
  static bool Field(std::string_view json, std::string_view key, std::string* out) {
    auto at = json.find(key);
    if (at == std::string_view::npos) return false;
    at += key.size();
    auto end = json.find('"', at);
    if (end == std::string_view::npos) return false;
    out->assign(json.substr(at, end - at));
    return true;
  }
  static bool IntField(std::string_view json, std::string_view key, int64_t* out) {
    auto at = json.find(key);
    if (at == std::string_view::npos) return false;
    at += key.size();
    auto end = json.find_first_of(",}", at);
    if (end == std::string_view::npos) return false;
    char* parsed_end = nullptr;
    const std::string digits(json.substr(at, end - at));
    *out = std::strtoll(digits.c_str(), &parsed_end, 10);
    return parsed_end != digits.c_str() && *parsed_end == '\0';
  }

  const int64_t warmup_events_;
  const bool per_batch_;
  std::mutex mutex_;
  std::unordered_map<std::string, std::deque<Pending>> pending_;
  std::vector<double> latencies_ms_;
  int64_t unscored_ = 0, unmatched_ = 0, unparsed_ = 0;
};

}  // namespace

void AddBenchCommand(CLI::App& root, int* exit_code) {
  auto* cmd =
      root.add_subcommand("bench", "End-to-end throughput and latency on the embedded broker");
  auto flags = std::make_shared<BenchFlags>();
  flags->shop.options.users = 20000;
  flags->shop.options.days = 120;
  AddConfigFlags(*cmd, flags->config);
  AddShopFlags(*cmd, flags->shop);
  cmd->add_option("--partitions", flags->partitions, "Partitions of the bench topics (default 16)")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--brokers", flags->brokers, "Mock brokers")->check(CLI::Range(1, 8));
  cmd->add_option(
      "--bootstrap", flags->bootstrap,
      "Run against this Kafka cluster instead of the embedded broker (e.g. the real broker "
      "of scripts/kafka-start.sh); creates topics bench.events.PID and bench.paced.PID");
  cmd->add_option("--latency-rate", flags->latency_rate,
                  "Events/s fed in the latency phase (0 = half the measured throughput)");
  cmd->add_option("--latency-seconds", flags->latency_seconds, "Length of the latency phase");
  cmd->add_flag("--latency-only", flags->latency_only,
                "Only the latency phase, fed at --latency-rate (no produce, ceiling, pipeline)");
  cmd->callback([flags, exit_code] {
    config::Config config;
    if (!LoadConfigOrReport(flags->config, &config) ||
        !ResolveShopFlags(flags->shop, "clv bench")) {
      *exit_code = 2;
      return;
    }
    if (flags->latency_only && flags->latency_rate <= 0) {
      std::fprintf(stderr, "clv bench: --latency-only needs --latency-rate N (events/s)\n");
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
    const int threads = stream::WorkPool::ThreadsFor(config.stream.threads);
    std::printf(
        "  stream:      batch_max_events %d, batch_max_wait_ms %d, commit_interval_ms %d, emit "
        "%s, threads %d%s\n",
        config.stream.batch_max_events, config.stream.batch_max_wait_ms,
        config.stream.commit_interval_ms, config.stream.emit.c_str(), threads,
        config.stream.threads > 0 ? "" : " (the core count)");
    std::fflush(stdout);

    std::unique_ptr<connectors::EmbeddedBroker> broker;
    std::string topic = "bench.events", paced_topic = "bench.paced";
    // The latency phase writes its scores to a topic of its own, which the
    // external reader consumes from the start.
    std::string paced_scores_topic = config.kafka.scores_topic + ".paced";
    connectors::Status status = connectors::Status::Ok();
    if (flags->bootstrap.empty()) {
      status = connectors::EmbeddedBroker::Start(flags->brokers, flags->partitions, &broker);
      if (status.ok()) {
        config.kafka.bootstrap_servers = broker->bootstrap_servers();
        for (const auto& t : {topic, paced_topic, paced_scores_topic}) {
          status = broker->CreateTopic(t, flags->partitions);
          if (!status.ok()) break;
        }
      }
    } else {
      // Fresh topics per run on a shared cluster; output topics get a suffix too.
      const std::string suffix = "." + std::to_string(::getpid());
      topic += suffix;
      paced_topic += suffix;
      paced_scores_topic = config.kafka.scores_topic + suffix + ".paced";
      config.kafka.bootstrap_servers = flags->bootstrap;
      config.kafka.scores_topic += suffix;
      config.kafka.alerts_topic += suffix;
      config.kafka.dead_letter_topic += suffix;
      status =
          connectors::EnsureTopics(ClientOptionsFrom(config.kafka),
                                   {topic, paced_topic, paced_scores_topic}, flags->partitions, 1);
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
    double pipeline_rate = 0;
    if (!flags->latency_only) {
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
          std::fprintf(
              stderr,
              "\nclv bench: the embedded broker kept %s of the %s events produced (it keeps "
              "about %lld MiB per partition and drops older data): run with --partitions "
              "%lld or more, or fewer --users / --days\n",
              WithThousands(kept).c_str(), WithThousands(events).c_str(),
              static_cast<long long>(connectors::kEmbeddedBrokerPartitionBytes >> 20), needed);
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
          "ceiling        %12s events in %6.2fs  %12s events/s (consume only, same topic; join "
          "%.1fs "
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
      pipeline_rate = pipeline.events / std::max(pipeline.seconds, 1e-9);
      const bool lstm = config.model.scorer == "lstm";
      const double target_rate =
          lstm ? flags->target_lstm_events_per_second : flags->target_events_per_second;
      const double target_ratio = lstm ? 0.0 : flags->target_ceiling_ratio;
      std::string target =
          "target >= " + WithThousands(static_cast<int64_t>(target_rate)) + " events/s";
      if (target_ratio > 0)
        target += " and >= " + std::to_string(static_cast<int>(100 * target_ratio)) + "%";
      target += std::string(" with the ") + config.model.scorer + " scorer: " +
                (pipeline_rate >= target_rate && pipeline_rate >= target_ratio * ceiling_rate
                     ? "met"
                     : "NOT met");
      std::printf(
          "pipeline       %12s events in %6.2fs  %12s events/s = %.0f%% of the ceiling  (%s)\n",
          WithThousands(pipeline.events).c_str(), pipeline.seconds,
          WithThousands(static_cast<int64_t>(pipeline_rate)).c_str(),
          100 * pipeline_rate / ceiling_rate, target.c_str());
      std::printf(
          "  where the time goes: waiting for input %.2fs, processing %.2fs (scorer %.2fs), "
          "waiting for score acks %.2fs, RocksDB commit %.2fs; %s batches, %s commits\n",
          pipeline.poll_s, pipeline.process_s, pipeline.scorer_s, pipeline.flush_s,
          pipeline.store_s, WithThousands(pipeline.batches).c_str(),
          WithThousands(pipeline.commits).c_str());
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
              "state          %12s users, %6.0f bytes/user encoded (key + value), %s bytes on "
              "disk\n",
              WithThousands(users).c_str(), users ? static_cast<double>(bytes) / users : 0.0,
              WithThousands(static_cast<int64_t>(store->ApproximateBytes())).c_str());
        }
      }
    }  // !latency_only

    // 4. latency at a fixed rate
    double rate =
        flags->latency_rate > 0 ? flags->latency_rate : std::min(pipeline_rate / 2, 200000.0);
    constexpr double kWarmupSeconds = 2;
    const auto warmup_events = static_cast<int64_t>(kWarmupSeconds * rate);
    auto paced_events = static_cast<int64_t>(rate * (kWarmupSeconds + flags->latency_seconds));
    std::atomic<int64_t> produced{0};
    std::atomic<bool> producer_done{false};
    std::atomic<bool> service_ready{false};
    std::atomic<bool> warmed_up{false};
    // The external reader: a consumer of its own group on the paced scores.
    ExternalLatency external(warmup_events, config.stream.emit == "per_batch");
    std::atomic<bool> reader_ready{false};
    std::atomic<bool> reader_stop{false};
    connectors::Status reader_status = connectors::Status::Ok();
    std::unique_ptr<connectors::KafkaSource> reader;
    {
      auto reader_client = ClientOptionsFrom(config.kafka);
      reader_client.group_id = "bench-scores-reader-" + std::to_string(::getpid());
      reader_client.client_id = "clv-bench-reader";
      connectors::SourceCallbacks callbacks;
      callbacks.start_offset = [](const connectors::TopicPartition&) {
        return std::optional<int64_t>();  // from the start
      };
      status =
          connectors::KafkaSource::Create(reader_client, {paced_scores_topic}, callbacks, &reader);
      if (!status.ok()) {
        std::fprintf(stderr, "clv bench: scores reader: %s\n", status.message.c_str());
        *exit_code = 1;
        return;
      }
    }
    std::thread reader_thread([&] {
      pthread_setname_np(pthread_self(), "clv-bench-read");
      std::vector<connectors::Message> got;
      while (!reader_stop.load()) {
        got.clear();
        auto s = reader->Poll(10000, 20, &got);
        const auto received = Clock::now();
        if (!s.ok()) {
          reader_status = s;
          break;
        }
        if (!reader_ready.load() && !reader->Assignment().empty()) reader_ready.store(true);
        for (const auto& m : got) external.Received(m.value, received);
      }
      (void)reader->Close();
    });
    std::thread paced([&] {
      sim::SyntheticShop shop(flags->shop.options);
      sim::GeneratedEvent event;
      // Steady state only: start once the service holds its partitions and
      // the reader its own (the group joins are not part of the latency).
      const auto give_up = Clock::now() + std::chrono::seconds(60);
      while (!(service_ready.load() && reader_ready.load()) && Clock::now() < give_up) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
      }
      auto t0 = Clock::now();
      while (produced.load() < paced_events && shop.Next(&event)) {
        external.Sent(event.user_id, event.ts_ms, produced.load());
        if (!producer->Send(paced_topic, event.user_id, event.json).ok()) break;
        int64_t n = produced.fetch_add(1) + 1;
        if (n == warmup_events) warmed_up.store(true);
        if (n % 8 == 0) std::this_thread::sleep_until(t0 + std::chrono::duration<double>(n / rate));
      }
      (void)producer->Flush(60000);
      producer_done.store(true);
    });
    auto paced_config = config;
    paced_config.kafka.scores_topic = paced_scores_topic;
    auto latency =
        RunPipeline(paced_config, paced_topic, paced_events, (dir / "state-paced").string(),
                    &produced, &producer_done, &service_ready, &warmed_up);
    paced.join();
    // The service has stopped and flushed its scores: the reader drains
    // them, until every event has its score or none came for 3 s.
    {
      int64_t outstanding = external.Outstanding();
      auto last_change = Clock::now();
      while (outstanding > 0 && Clock::now() - last_change < std::chrono::seconds(3) &&
             reader_status.ok()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        const int64_t now_outstanding = external.Outstanding();
        if (now_outstanding != outstanding) last_change = Clock::now();
        outstanding = now_outstanding;
      }
    }
    reader_stop.store(true);
    reader_thread.join();
    if (!latency.error.empty()) {
      std::fprintf(stderr, "clv bench: latency phase: %s\n", latency.error.c_str());
      *exit_code = 1;
      return;
    }
    if (!reader_status.ok()) {
      std::fprintf(stderr, "clv bench: scores reader: %s\n", reader_status.message.c_str());
      *exit_code = 1;
      return;
    }
    const auto seen = external.Summarize();
    const bool ceiling_met = seen.counted > 0 && seen.p50 <= 10 && seen.p99 <= 50;
    std::printf(
        "latency        %12s events at %s events/s (%s sent; the first %.0f s, %s events, are "
        "warm-up, not counted)\n",
        WithThousands(paced_events - warmup_events).c_str(),
        WithThousands(static_cast<int64_t>(rate)).c_str(), WithThousands(produced.load()).c_str(),
        kWarmupSeconds, WithThousands(warmup_events).c_str());
    std::printf(
        "  external consumer of the scores (producer send -> score received): p50 %.1f ms, p90 "
        "%.1f ms, p99 %.1f ms, max %.1f ms over %s events  (ceiling p50 <= 10 ms and p99 <= 50 "
        "ms: %s)\n",
        seen.p50, seen.p90, seen.p99, seen.max, WithThousands(seen.counted).c_str(),
        ceiling_met ? "met" : "NOT met");
    std::printf(
        "  events without a score: %s (refused as late, duplicate or invalid; the service "
        "counted %s duplicates, %s dead-lettered); scores matching no event: %s\n",
        WithThousands(seen.unscored).c_str(), WithThousands(latency.duplicates).c_str(),
        WithThousands(latency.dead_lettered).c_str(),
        WithThousands(seen.unmatched + seen.unparsed).c_str());
    std::printf(
        "  the service's own view (producer timestamp -> score acknowledged, recorded at the "
        "commit): p50 %.1f ms, p99 %.1f ms\n",
        latency.p50_ms, latency.p99_ms);
    std::printf(
        "  where the time goes: waiting for input %.2fs, processing %.2fs (scorer %.2fs), "
        "waiting for score acks %.2fs, RocksDB commit %.2fs; %s batches (%.0f events each), %s "
        "commits; CPU %.1f us/event\n",
        latency.poll_s, latency.process_s, latency.scorer_s, latency.flush_s, latency.store_s,
        WithThousands(latency.batches).c_str(),
        static_cast<double>(latency.events) /
            static_cast<double>(std::max<int64_t>(1, latency.batches)),
        WithThousands(latency.commits).c_str(),
        1e6 * latency.process_cpu_s / static_cast<double>(std::max<int64_t>(1, latency.events)));
    std::error_code ignored;
    std::filesystem::remove_all(dir, ignored);
    *exit_code = 0;
  });
}

}  // namespace clv::apps
