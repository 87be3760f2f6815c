// Failover time on real Kafka (issue 11): how long after an instance dies the
// partitions it owned are scored again by the one that takes them over.
//
// Two `clv run` instances (changelog on, one score per event) share one group
// on an 8-partition input topic while this program produces a steady stream
// (--rate events/s over --users users, each user on a fixed partition). Once
// both own partitions and are ready, the second one is stopped, with SIGKILL
// (the group notices only after session.timeout.ms) or with SIGTERM (it
// leaves the group at once), and a reader of the scores topic waits for the
// first score of each moved partition. Printed per case: the time from the
// signal to the survivor owning every partition, to the first score of a moved
// partition and to the last moved partition's first score, next to the
// session timeout that bounds a SIGKILL failover from below and the 3 s
// target that needs standby replicas (not built yet).
//
// Usage: failover_bench --bootstrap HOST:PORT [--clv PATH] [--rate 2000]
//                       [--users 2000] [--session-timeouts 6000,45000]
// (clv defaults to ../apps/clv beside this binary; 45000 is librdkafka's
// default session.timeout.ms, 6000 the broker's default minimum;
// heartbeat.interval.ms is a sixth of it, at most librdkafka's 3000.)
#include <fcntl.h>
#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <nlohmann/json.hpp>
#include <sys/socket.h>
#include <sys/wait.h>

#include "connectors/kafka.h"

namespace {

namespace connectors = clv::connectors;
using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kPartitions = 8;

int64_t WallMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

int FreePort() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  address.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    ::close(fd);
    return 0;
  }
  socklen_t length = sizeof address;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&address), &length);
  ::close(fd);
  return ntohs(address.sin_port);
}

// One `clv run`, its output in files; killed with SIGKILL if still running
// when destroyed.
class Instance {
 public:
  Instance(const std::vector<std::string>& argv, const std::filesystem::path& log, int http_port)
      : http_port_(http_port), log_(log) {
    std::vector<char*> args;
    for (const auto& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
    args.push_back(nullptr);
    pid_ = fork();
    if (pid_ == 0) {
      int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
      dup2(fd, 1);
      dup2(fd, 2);
      execv(args[0], args.data());
      _exit(127);
    }
  }
  ~Instance() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      Reap();
    }
  }
  Instance(const Instance&) = delete;
  Instance& operator=(const Instance&) = delete;

  void Signal(int signal_number) const { kill(pid_, signal_number); }
  void Reap() {
    if (pid_ <= 0) return;
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  bool running() {
    if (pid_ <= 0) return false;
    int status = 0;
    return waitpid(pid_, &status, WNOHANG) == 0;
  }
  const std::filesystem::path& log() const { return log_; }

  // The partitions it owns now (GET /top), nullopt when it does not answer.
  std::optional<std::set<int32_t>> Owned() const {
    httplib::Client http("127.0.0.1", http_port_);
    http.set_connection_timeout(1, 0);
    http.set_read_timeout(2, 0);
    auto answer = http.Get("/top?n=1");
    if (!answer || answer->status != 200) return std::nullopt;
    const Json top = Json::parse(answer->body, nullptr, false);
    if (top.is_discarded() || !top.contains("partitions")) return std::set<int32_t>{};
    const auto owned = top["partitions"]["owned"].get<std::vector<int32_t>>();
    return std::set<int32_t>(owned.begin(), owned.end());
  }
  bool Ready() const {
    httplib::Client http("127.0.0.1", http_port_);
    http.set_connection_timeout(1, 0);
    auto answer = http.Get("/readyz");
    return answer && answer->status == 200;
  }

 private:
  pid_t pid_ = -1;
  int http_port_;
  std::filesystem::path log_;
};

// Reads the scores topic from its end and remembers, per input partition,
// when (score timestamp, wall ms) it was first scored after `since_ms`.
class ScoreWatch {
 public:
  ScoreWatch(const connectors::ClientOptions& client, std::string topic,
             std::map<std::string, int32_t> partition_of)
      : client_(client), topic_(std::move(topic)), partition_of_(std::move(partition_of)) {}
  ~ScoreWatch() { Stop(); }
  ScoreWatch(const ScoreWatch&) = delete;
  ScoreWatch& operator=(const ScoreWatch&) = delete;

  connectors::Status Start() {
    connectors::ClientOptions options = client_;
    options.group_id =
        "failover-bench-reader-" + std::to_string(::getpid()) + "-" + std::to_string(WallMs());
    connectors::SourceCallbacks callbacks;
    // From the start: the topic is new, and scores before the signal are
    // not looked at.
    callbacks.start_offset = [](const connectors::TopicPartition&) {
      return std::optional<int64_t>();
    };
    auto status =
        connectors::KafkaSource::Create(options, {topic_}, std::move(callbacks), &source_);
    if (!status.ok()) return status;
    thread_ = std::thread([this] { Loop(); });
    return connectors::Status::Ok();
  }
  void Stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    if (source_) (void)source_->Close();
  }
  // From now on, first scores are recorded for `partitions`.
  void Watch(const std::set<int32_t>& partitions, int64_t since_ms) {
    std::lock_guard lock(mutex_);
    watched_ = partitions;
    since_ms_ = since_ms;
    first_.clear();
  }
  std::map<int32_t, int64_t> First() const {
    std::lock_guard lock(mutex_);
    return first_;
  }
  bool Reading() const { return reading_.load(); }

 private:
  void Loop() {
    std::vector<connectors::Message> messages;
    while (!stop_.load()) {
      messages.clear();
      auto status = source_->Poll(1000, 100, &messages);
      if (!status.ok()) {
        std::fprintf(stderr, "failover_bench: reading scores: %s\n", status.message.c_str());
        return;
      }
      if (!messages.empty()) reading_.store(true);
      std::lock_guard lock(mutex_);
      for (const auto& message : messages) {
        if (message.timestamp_ms <= since_ms_) continue;
        auto it = partition_of_.find(message.key);
        if (it == partition_of_.end() || !watched_.count(it->second)) continue;
        first_.emplace(it->second, message.timestamp_ms);
      }
    }
  }

  connectors::ClientOptions client_;
  std::string topic_;
  std::map<std::string, int32_t> partition_of_;
  std::unique_ptr<connectors::KafkaSource> source_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> reading_{false};
  mutable std::mutex mutex_;
  std::set<int32_t> watched_;
  int64_t since_ms_ = 0;
  std::map<int32_t, int64_t> first_;
};

bool WaitFor(const std::function<bool()>& done, int timeout_ms) {
  const auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (Clock::now() < deadline) {
    if (done()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return done();
}

std::string Tail(const std::filesystem::path& path) {
  FILE* file = std::fopen(path.c_str(), "r");
  if (file == nullptr) return "";
  std::string text;
  char buffer[4096];
  size_t n = 0;
  while ((n = std::fread(buffer, 1, sizeof buffer, file)) > 0) text.append(buffer, n);
  std::fclose(file);
  return text.substr(text.size() > 3000 ? text.size() - 3000 : 0);
}

// heartbeat.interval.ms for a session timeout: a sixth of it, at most
// librdkafka's default (3000). The survivor hears of a rebalance at its next
// heartbeat, so this bounds a graceful failover.
int HeartbeatMs(int session_timeout_ms) { return std::clamp(session_timeout_ms / 6, 100, 3000); }

struct Options {
  std::string bootstrap;
  std::string clv;
  int rate = 2000;
  int users = 2000;
  std::vector<int> session_timeouts = {6000, 45000};
};

struct Result {
  double owned_s = -1;  // signal -> the survivor owns every partition
  double first_s = -1;  // signal -> first score of a moved partition
  double all_s = -1;    // signal -> every moved partition scored again
  size_t moved = 0;
};

// One case: start A and B, stop B with `signal_number`, measure.
std::optional<Result> RunCase(const Options& options, const std::filesystem::path& dir,
                              int session_timeout_ms, int signal_number) {
  const std::string name = "failover-bench-" + std::to_string(::getpid()) + "-" +
                           std::to_string(session_timeout_ms) + "-" + std::to_string(signal_number);
  const std::string input = name + "-events", scores = name + "-scores";
  connectors::ClientOptions client;
  client.bootstrap_servers = options.bootstrap;
  auto status = connectors::EnsureTopics(client, {input}, kPartitions, 1);
  if (status.ok()) {
    status = connectors::EnsureTopics(client, {scores, name + "-alerts", name + "-dlq"}, 1, 1);
  }
  if (!status.ok()) {
    std::fprintf(stderr, "failover_bench: creating topics: %s\n", status.message.c_str());
    return std::nullopt;
  }
  std::map<std::string, int32_t> partition_of;
  for (int u = 0; u < options.users; ++u) partition_of["u" + std::to_string(u)] = u % kPartitions;

  // The steady stream.
  std::unique_ptr<connectors::KafkaSink> sink;
  status = connectors::KafkaSink::Create(client, &sink);
  if (!status.ok()) {
    std::fprintf(stderr, "failover_bench: producer: %s\n", status.message.c_str());
    return std::nullopt;
  }
  std::atomic<bool> producing{true};
  std::atomic<int64_t> sent{0};
  std::thread producer([&] {
    const auto started = Clock::now();
    int64_t i = 0;
    const int64_t ts0 = 1700000000000LL;
    while (producing.load()) {
      const double elapsed = std::chrono::duration<double>(Clock::now() - started).count();
      const auto due = static_cast<int64_t>(elapsed * options.rate);
      for (; i < due; ++i) {
        const int u = static_cast<int>(i % options.users);
        const std::string user = "u" + std::to_string(u);
        Json event = {{"event_id", name + "-" + std::to_string(i)},
                      {"user_id", user},
                      {"type", i % 10 == 0 ? "purchase" : "page_view"},
                      {"ts", ts0 + i * 100}};
        if (i % 10 == 0) event["amount"] = 10.0 + static_cast<double>(i % 7);
        if (!sink->Send(input, user, event.dump(), u % kPartitions).ok()) return;
      }
      sent.store(i);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });

  ScoreWatch watch(client, scores, partition_of);
  status = watch.Start();
  if (!status.ok()) {
    producing.store(false);
    producer.join();
    std::fprintf(stderr, "failover_bench: score reader: %s\n", status.message.c_str());
    return std::nullopt;
  }
  auto args = [&](const std::string& who, int http_port) {
    std::vector<std::string> a = {options.clv, "run", "--quiet"};
    for (const std::string& setting : std::vector<std::string>{
             "kafka.bootstrap_servers=" + options.bootstrap, "kafka.input_topics=" + input,
             "kafka.scores_topic=" + scores, "kafka.alerts_topic=" + name + "-alerts",
             "kafka.dead_letter_topic=" + name + "-dlq", "kafka.group_id=" + name,
             "state.dir=" + (dir / (name + "-" + who)).string(), "stream.emit=per_event",
             "stream.idle_exit_ms=0", "http.port=" + std::to_string(http_port),
             "kafka.properties.session.timeout.ms=" + std::to_string(session_timeout_ms),
             "kafka.properties.heartbeat.interval.ms=" +
                 std::to_string(HeartbeatMs(session_timeout_ms))}) {
      a.push_back("--set");
      a.push_back(setting);
    }
    return a;
  };
  std::optional<Result> result;
  {
    const int port_a = FreePort(), port_b = FreePort();
    Instance a(args("a", port_a), dir / (name + "-a.log"), port_a);
    auto owns_all = [&](Instance& i) {
      auto owned = i.Owned();
      return owned && owned->size() == static_cast<size_t>(kPartitions) && i.Ready();
    };
    if (!WaitFor([&] { return owns_all(a); }, 120000)) {
      std::fprintf(stderr, "failover_bench: the first instance did not own every partition:\n%s\n",
                   Tail(a.log()).c_str());
    } else {
      Instance b(args("b", port_b), dir / (name + "-b.log"), port_b);
      std::set<int32_t> moved;
      const bool split = WaitFor(
          [&] {
            auto owned_a = a.Owned();
            auto owned_b = b.Owned();
            if (!owned_a || !owned_b || owned_b->empty()) return false;
            if (owned_a->size() + owned_b->size() != static_cast<size_t>(kPartitions)) return false;
            moved = *owned_b;
            return a.Ready() && b.Ready();
          },
          120000);
      // Steady state: both score, the reader keeps up.
      std::this_thread::sleep_for(std::chrono::seconds(3));
      if (!split || !watch.Reading()) {
        std::fprintf(stderr, "failover_bench: the group did not split (reader %s):\n%s\n",
                     watch.Reading() ? "reading" : "idle", Tail(b.log()).c_str());
      } else {
        const auto signalled = Clock::now();
        const int64_t signalled_ms = WallMs();
        watch.Watch(moved, signalled_ms);
        b.Signal(signal_number);
        Result r;
        r.moved = moved.size();
        if (WaitFor([&] { return owns_all(a); }, 180000)) {
          r.owned_s = std::chrono::duration<double>(Clock::now() - signalled).count();
        }
        WaitFor([&] { return watch.First().size() == moved.size(); }, 60000);
        const auto first = watch.First();
        if (!first.empty()) {
          int64_t earliest = INT64_MAX, latest = 0;
          for (const auto& [p, ms] : first) {
            earliest = std::min(earliest, ms);
            latest = std::max(latest, ms);
          }
          r.first_s = static_cast<double>(earliest - signalled_ms) / 1000.0;
          if (first.size() == moved.size()) {
            r.all_s = static_cast<double>(latest - signalled_ms) / 1000.0;
          }
        }
        if (r.all_s < 0) {
          std::fprintf(stderr, "failover_bench: %zu of %zu moved partitions scored again:\n%s\n",
                       first.size(), moved.size(), Tail(a.log()).c_str());
        }
        result = r;
        b.Reap();
      }
    }
  }
  producing.store(false);
  producer.join();
  (void)sink->Flush(10000);
  watch.Stop();
  return result;
}

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> out;
  std::stringstream in(text);
  for (std::string item; std::getline(in, item, ',');) {
    if (!item.empty()) out.push_back(std::atoi(item.c_str()));
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  options.clv = (std::filesystem::path(argv[0]).parent_path() / ".." / "apps" / "clv").string();
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--bootstrap" && has_value) {
      options.bootstrap = argv[++i];
    } else if (arg == "--clv" && has_value) {
      options.clv = argv[++i];
    } else if (arg == "--rate" && has_value) {
      options.rate = std::atoi(argv[++i]);
    } else if (arg == "--users" && has_value) {
      options.users = std::atoi(argv[++i]);
    } else if (arg == "--session-timeouts" && has_value) {
      options.session_timeouts = ParseList(argv[++i]);
    } else {
      std::fprintf(stderr,
                   "usage: failover_bench --bootstrap HOST:PORT [--clv PATH] [--rate N] "
                   "[--users N] [--session-timeouts MS,MS]\n(unknown or incomplete: %s)\n",
                   arg.c_str());
      return 2;
    }
  }
  if (options.bootstrap.empty()) {
    std::fprintf(stderr,
                 "failover_bench: --bootstrap HOST:PORT of a real Kafka is required "
                 "(scripts/kafka-start.sh)\n");
    return 2;
  }
  if (!std::filesystem::exists(options.clv)) {
    std::fprintf(stderr, "failover_bench: no clv binary at %s (--clv PATH)\n", options.clv.c_str());
    return 2;
  }
  if (options.rate <= 0 || options.users <= 0 || options.session_timeouts.empty()) {
    std::fprintf(stderr, "failover_bench: --rate, --users and --session-timeouts must be > 0\n");
    return 2;
  }
  const auto dir =
      std::filesystem::temp_directory_path() / ("failover-bench-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  std::printf(
      "failover_bench: 2 instances, %d partitions, %d users, %d events/s, changelog on, "
      "one score per event\n",
      kPartitions, options.users, options.rate);
  std::printf("%-8s %-18s %-14s %5s %14s %16s %16s   %s\n", "signal", "session.timeout",
              "heartbeat", "moved", "owns all (s)", "first score (s)", "all scored (s)", "ceiling");
  int failures = 0;
  for (int session_timeout_ms : options.session_timeouts) {
    for (int signal_number : {SIGKILL, SIGTERM}) {
      std::fprintf(stderr, "failover_bench: %s with session.timeout.ms=%d ...\n",
                   signal_number == SIGKILL ? "SIGKILL" : "SIGTERM", session_timeout_ms);
      const auto r = RunCase(options, dir, session_timeout_ms, signal_number);
      if (!r || r->all_s < 0) ++failures;
      if (!r) continue;
      const std::string ceiling =
          signal_number == SIGKILL
              ? "3 s with a standby (not built); without: >= session.timeout.ms"
              : "3 s (the instance leaves the group)";
      std::printf("%-8s %15d ms %11d ms %5zu %14.2f %16.2f %16.2f   %s\n",
                  signal_number == SIGKILL ? "SIGKILL" : "SIGTERM", session_timeout_ms,
                  HeartbeatMs(session_timeout_ms), r->moved, r->owned_s, r->first_s, r->all_s,
                  ceiling.c_str());
      std::fflush(stdout);
    }
  }
  std::error_code ignored;
  if (failures == 0) std::filesystem::remove_all(dir, ignored);
  if (failures > 0)
    std::printf("failover_bench: %d case(s) failed; logs in %s\n", failures, dir.c_str());
  return failures == 0 ? 0 : 1;
}
