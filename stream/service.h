// Service: one running clvstream instance, assembled from a Config.
//
// Create() opens the state store, loads the scorer, creates the Kafka sink
// and the consumer-group source (with the processor's rebalance hooks), and
// makes sure the output topics exist. Run() polls micro-batches (bounded by
// stream.batch_max_events and stream.batch_max_wait_ms), processes them and
// commits (every batch, or every stream.commit_interval_ms) until `stop` is
// set, stream.max_events were consumed or the input stayed idle for
// stream.idle_exit_ms. On the way out it commits what it processed, leaves
// the group and flushes the producer.
//
// An empty kafka.bootstrap_servers is not handled here: the caller starts an
// EmbeddedBroker and puts its address into the config (apps/ does that).
//
// Thread-safety: Run() on one thread; Snapshot()/Status() from any thread.
#pragma once

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <memory>
#include <string>

#include "config/config.h"
#include "connectors/kafka.h"
#include "stream/processor.h"

namespace clv::stream {

struct ServiceProgress {
  double seconds = 0;          // since Run() started
  int64_t consumed = 0;
  int64_t processed = 0;
  int64_t dead_lettered = 0;
  int64_t duplicates = 0;
  int64_t scores = 0;
  int64_t alerts = 0;
  int64_t timer_rescores = 0;
  int64_t users = 0;           // users created since start
  int64_t lag = 0;             // sum over assigned partitions
  int partitions = 0;
  double events_per_second = 0;  // over the last interval
};

class Service {
 public:
  static connectors::Status Create(const config::Config& config, std::unique_ptr<Service>* service);
  ~Service();
  Service(const Service&) = delete;
  Service& operator=(const Service&) = delete;

  // Called about once a second from Run()'s thread.
  void set_progress_observer(std::function<void(const ServiceProgress&)> observer) {
    progress_observer_ = std::move(observer);
  }
  void set_score_observer(std::function<void(const ScoreRecord&)> observer);

  connectors::Status Run(const std::atomic<bool>& stop);

  Processor& processor() { return *processor_; }
  state::StateStore& store() { return *store_; }
  models::Scorer& scorer() { return *scorer_; }
  const config::Config& config() const { return config_; }
  // Latest progress (thread-safe copy).
  ServiceProgress progress() const;
  bool ready() const { return ready_.load(); }

 private:
  Service() = default;

  config::Config config_;
  std::unique_ptr<state::StateStore> store_;
  std::unique_ptr<models::Scorer> scorer_;
  std::unique_ptr<connectors::KafkaSink> sink_;
  std::unique_ptr<Processor> processor_;
  std::unique_ptr<connectors::KafkaSource> source_;
  std::function<void(const ServiceProgress&)> progress_observer_;
  mutable std::mutex progress_mutex_;
  ServiceProgress progress_;
  std::atomic<bool> ready_{false};
};

}  // namespace clv::stream
