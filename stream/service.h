// Service: one running clvstream instance, assembled from a Config.
//
// Create() opens the state store, loads the scorer, creates the Kafka sink
// and the consumer-group source (with the processor's rebalance hooks), and
// makes sure the output topics exist. Run() polls micro-batches (bounded by
// stream.batch_max_events and stream.batch_max_wait_ms), processes them and
// commits (every batch, or every stream.commit_interval_ms) until `stop` is
// set, stream.max_events were consumed or the input stayed idle for
// stream.idle_exit_ms (time with the cluster unreachable is not idle). On the
// way out it commits what it processed, leaves the group and flushes the
// producer, all within about stream.shutdown_timeout_ms: past it (the
// cluster is unreachable) Run() returns an error saying what was not
// acknowledged; those events are not committed and are read again next time.
//
// Create() starts the HTTP server before it contacts Kafka, so /healthz
// answers at once and /readyz says what the service waits for; it waits up
// to kafka.startup_timeout_ms (or until *stop) for a broker to answer.
//
// An empty kafka.bootstrap_servers is not handled here: the caller starts an
// EmbeddedBroker and puts its address into the config (apps/ does that).
//
// Operations (docs/OPERATIONS.md): Create() scans the stored users once to
// seed the live views (users per stage, CLV distribution, top users), keeps
// the Prometheus metrics (metrics()), and, when config.http.port != 0,
// starts the read-only HTTP server (/users/{id}, /top, /metrics, /healthz,
// /readyz, /api/summary, the dashboard) on its own threads; it stops when
// the Service is destroyed, so it keeps answering after Run() returns.
// Logs go through clv::Log (common/log.h; apps/ routes them to spdlog).
//
// Thread-safety: Run() on one thread; progress(), ready(), metrics() and the
// HTTP handlers from any thread. Set observers before Run().
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "config/config.h"
#include "connectors/kafka.h"
#include "stream/http_api.h"
#include "stream/processor.h"
#include "stream/top_users.h"

namespace clv::connectors {
class HttpServer;
}

namespace clv::stream {

class ChangelogIo;
class OwnerDirectory;

struct ServiceMetrics;
class LiveViews;
class RateMeter;

struct ServiceProgress {
  double seconds = 0;  // since Run() started
  int64_t consumed = 0;
  int64_t processed = 0;
  int64_t dead_lettered = 0;
  int64_t duplicates = 0;
  int64_t scores = 0;
  int64_t alerts = 0;
  int64_t timer_rescores = 0;
  int64_t users = 0;  // users created since start
  int64_t lag = 0;    // sum over assigned partitions
  int partitions = 0;
  double events_per_second = 0;  // over the last interval
};

class Service {
 public:
  static connectors::Status Create(const config::Config& config, std::unique_ptr<Service>* service,
                                   const std::atomic<bool>* stop = nullptr);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Called about once a second from Run()'s thread.
  void set_progress_observer(std::function<void(const ServiceProgress&)> observer) {
    progress_observer_ = std::move(observer);
  }
  // Called with each emitted score, after the service's own views.
  void set_score_observer(std::function<void(const ScoreRecord&)> observer);

  connectors::Status Run(const std::atomic<bool>& stop);

  Processor& processor() { return *processor_; }
  state::StateStore& store() { return *store_; }
  models::Scorer& scorer() { return *scorer_; }
  const config::Config& config() const { return config_; }
  // Latest progress (thread-safe copy).
  ServiceProgress progress() const;
  // Started, Kafka reachable, partitions assigned, state restored, model
  // loaded, not stopped.
  bool ready() const;
  // Why not ready, in words ("" when ready).
  std::string NotReadyReason() const;
  // JSON for /readyz: {"ready":..,"reason":..,"partitions_assigned":..,
  // "partitions_lost":..,"state_restored":..,"model_loaded":..,"stopped":..,
  // "kafka":{"bootstrap":..,"reachable":..,"error":..,"unreachable_seconds":..},
  // "model":{"scorer":..,"version":..}}.
  std::string ReadyDetail() const;
  ServiceMetrics& metrics() { return *metrics_; }
  LiveViews& live() { return *live_; }
  // The HTTP server's port; 0 when it is disabled.
  int http_port() const;
  // Bodies of the HTTP endpoints (thread-safe; see docs/OPERATIONS.md).
  // A user of a partition this instance no longer owns (or not yet: another
  // instance of the group has it) is not answered as current: 421 with the
  // partition and the owned ones. Before the first assignment every stored
  // user is answered.
  UserAnswer UserJson(std::string_view user_id) const;
  // Only users of the partitions owned now (once there is an assignment).
  std::string TopJson(int n, std::string_view by) const;
  // /top?scope=group: this instance's top users merged with the other
  // instances' (each asked for its own /top at its http.advertised_url, 2 s
  // at most, all at once), each partition's users from the one instance that
  // claims it, with "instances" saying who answered and "partitions" which
  // partitions the answer covers ("partial" when not all). Without
  // http.advertised_url (no directory of instances) it is TopJson plus
  // "instances":[].
  std::string GroupTopJson(int n, std::string_view by) const;
  std::string MetricsText();
  std::string SummaryJson();

 private:
  Service();
  connectors::Status RestoreLiveViews();
  // kafka.reset_offsets moved a partition: store its new offset, log it.
  connectors::Status StoreResetOffset(const connectors::OffsetResetEvent& event);
  connectors::Status StartHttp();
  void RefreshLag();
  // The input partition numbers assigned now; nullopt before the first
  // assignment (thread-safe).
  std::optional<std::vector<int32_t>> OwnedPartitions() const;
  TopSnapshot OwnedTop(size_t n, TopBy by) const;
  void SetKafkaIssue(std::string issue);
  // Seals and writes what was processed, waiting for Kafka's
  // acknowledgements until `deadline` (the bounded shutdown).
  connectors::Status CommitBeforeExit(std::chrono::steady_clock::time_point deadline);

  config::Config config_;
  std::unique_ptr<state::StateStore> store_;
  std::unique_ptr<models::Scorer> scorer_;
  std::unique_ptr<connectors::KafkaSink> sink_;
  std::unique_ptr<ChangelogIo> changelog_;  // state.changelog; borrowed by processor_
  // http.advertised_url: where the owners of the other partitions answer.
  std::unique_ptr<OwnerDirectory> owners_;
  std::atomic<bool> owners_changed_{false};  // the assignment changed since the last announce
  std::unique_ptr<Processor> processor_;
  std::unique_ptr<connectors::KafkaSource> source_;
  std::function<void(const ServiceProgress&)> progress_observer_;
  mutable std::mutex progress_mutex_;
  ServiceProgress progress_;
  std::unique_ptr<ServiceMetrics> metrics_;
  std::unique_ptr<LiveViews> live_;
  std::function<void(const ScoreRecord&)> external_score_observer_;
  std::string scorer_name_;
  std::string model_version_;
  // When partitions were last assigned (polling thread only; idle exit).
  std::chrono::steady_clock::time_point last_assigned_{};
  // The group's offsets in Kafka (advisory, for lag tools): the next offset
  // the store holds for each owned partition, committed after each state
  // commit and again, where the broker has not acknowledged them, every
  // kGroupOffsetsResyncMs once the group is settled, so that a commit refused
  // during a rebalance, or a position restored from the changelog, reaches
  // the group even when no event follows (polling thread only).
  static constexpr int kGroupOffsetsResyncMs = 5000;
  std::map<connectors::TopicPartition, int64_t> group_offsets_;
  std::chrono::steady_clock::time_point group_offsets_synced_{};
  // When partitions were last assigned or revoked (polling thread only).
  std::chrono::steady_clock::time_point last_rebalance_{};
  std::atomic<bool> restored_{false};
  std::atomic<bool> stopped_{false};
  // Create() finished (Kafka clients and processor exist).
  std::atomic<bool> started_{false};
  // Kafka as the source last saw it (written on the polling thread, or by
  // Create() while it waits for the cluster; read by HTTP threads).
  mutable std::mutex health_mutex_;
  connectors::ClusterHealth health_;
  std::string kafka_issue_;  // before started_: what Create() waits for
  // The service is closing its consumer: revocations commit nothing more
  // (polling thread only).
  bool closing_ = false;
  // The shutdown gave up on unacknowledged outputs (polling thread only).
  bool abandoned_ = false;
  // Assignment and lag, written on the polling thread, read by HTTP threads.
  mutable std::mutex partitions_mutex_;
  std::set<connectors::TopicPartition> assigned_;
  bool ever_assigned_ = false;
  // The input topics' partition count at start (the largest; 0: unknown).
  std::atomic<int> input_partitions_{0};
  std::map<connectors::TopicPartition, int64_t> lag_;
  std::unique_ptr<RateMeter> events_rate_;
  std::unique_ptr<RateMeter> scores_rate_;
  // Last: destroyed first, so no handler runs on a half-destroyed Service.
  std::unique_ptr<connectors::HttpServer> http_server_;
};

}  // namespace clv::stream
