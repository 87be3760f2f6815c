#include "stream/service.h"

#include <chrono>

namespace clv::stream {

using connectors::Status;

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

connectors::ClientOptions ClientOptionsFrom(const config::Config& config) {
  connectors::ClientOptions options;
  options.bootstrap_servers = config.kafka.bootstrap_servers;
  options.group_id = config.kafka.group_id;
  options.properties = config.kafka.properties;
  return options;
}

}  // namespace

Service::~Service() = default;

Status Service::Create(const config::Config& config, std::unique_ptr<Service>* out) {
  if (config.kafka.bootstrap_servers.empty()) {
    return Status::Error("kafka.bootstrap_servers is empty (start the embedded broker first)");
  }
  std::unique_ptr<Service> service(new Service());
  service->config_ = config;
  auto state_status = state::OpenRocksDbStore(config.state, &service->store_);
  if (!state_status.ok()) return Status::Error(state_status.message);
  std::string error;
  service->scorer_ = models::LoadScorer(config.model, &error);
  if (!service->scorer_) return Status::Error("loading the model: " + error);

  auto client = ClientOptionsFrom(config);
  auto status = connectors::EnsureTopics(
      client,
      {config.kafka.scores_topic, config.kafka.alerts_topic, config.kafka.dead_letter_topic},
      config.kafka.embedded_partitions, 1);
  if (!status.ok()) return status;
  status = connectors::KafkaSink::Create(client, &service->sink_);
  if (!status.ok()) return status;
  service->processor_ = std::make_unique<Processor>(config, *service->store_, *service->scorer_,
                                                    *service->sink_);
  Processor* processor = service->processor_.get();
  Service* self = service.get();
  connectors::SourceCallbacks callbacks;
  callbacks.start_offset = [processor](const connectors::TopicPartition& tp) {
    return processor->StartOffset(tp);
  };
  callbacks.on_assigned = [processor, self](const std::vector<connectors::TopicPartition>& tps) {
    processor->OnAssigned(tps);
    self->ready_.store(true);
  };
  callbacks.on_revoked = [processor](const std::vector<connectors::TopicPartition>& tps) {
    processor->OnRevoked(tps);
  };
  status = connectors::KafkaSource::Create(client, config.kafka.input_topics, std::move(callbacks),
                                           &service->source_);
  if (!status.ok()) return status;
  *out = std::move(service);
  return Status::Ok();
}

void Service::set_score_observer(std::function<void(const ScoreRecord&)> observer) {
  processor_->set_score_observer(std::move(observer));
}

ServiceProgress Service::progress() const {
  std::lock_guard lock(progress_mutex_);
  return progress_;
}

Status Service::Run(const std::atomic<bool>& stop) {
  const auto& options = config_.stream;
  const auto started = Clock::now();
  auto last_commit = Clock::now();
  auto last_progress = Clock::now();
  auto last_event = Clock::now();
  int64_t consumed_at_last_progress = 0;
  std::vector<connectors::Message> batch;
  Status result = Status::Ok();
  const auto& counters = processor_->counters();

  auto publish_progress = [&](bool force) {
    double since = SecondsSince(last_progress);
    if (!force && since < 1.0) return;
    ServiceProgress p;
    p.seconds = SecondsSince(started);
    p.consumed = counters.consumed.load();
    p.processed = counters.processed.load();
    p.dead_lettered = counters.dead_lettered.load();
    p.duplicates = counters.duplicates.load();
    p.scores = counters.scores_emitted.load();
    p.alerts = counters.alerts_emitted.load();
    p.timer_rescores = counters.timer_rescores.load();
    p.users = counters.users_seen.load();
    auto lag = source_->Lag();
    p.partitions = static_cast<int>(lag.size());
    for (const auto& [tp, value] : lag) p.lag += std::max<int64_t>(0, value);
    p.events_per_second = since > 0 ? (p.consumed - consumed_at_last_progress) / since : 0;
    consumed_at_last_progress = p.consumed;
    last_progress = Clock::now();
    {
      std::lock_guard lock(progress_mutex_);
      progress_ = p;
    }
    if (progress_observer_) progress_observer_(p);
  };

  while (!stop.load()) {
    batch.clear();
    // A micro-batch: up to batch_max_events, closed batch_max_wait_ms after
    // its first message.
    auto status = source_->Poll(options.batch_max_events, 100, &batch);
    if (!status.ok()) {
      result = status;
      break;
    }
    if (!batch.empty()) {
      auto batch_deadline = Clock::now() + std::chrono::milliseconds(options.batch_max_wait_ms);
      while (static_cast<int>(batch.size()) < options.batch_max_events && !stop.load()) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(batch_deadline -
                                                                          Clock::now())
                        .count();
        if (left <= 0) break;
        size_t before = batch.size();
        status = source_->Poll(options.batch_max_events - static_cast<int>(batch.size()),
                               static_cast<int>(left), &batch);
        if (!status.ok() || batch.size() == before) break;
      }
      if (!status.ok()) {
        result = status;
        break;
      }
    }
    if (!processor_->callback_error().empty()) {
      result = Status::Error(processor_->callback_error());
      break;
    }
    if (!batch.empty()) {
      last_event = Clock::now();
      status = processor_->ProcessBatch(batch);
      if (!status.ok()) {
        result = status;
        break;
      }
    }
    bool commit_due = options.commit_interval_ms <= 0 ||
                      SecondsSince(last_commit) * 1000 >= options.commit_interval_ms;
    if (commit_due && processor_->HasUncommitted()) {
      status = processor_->Commit();
      if (!status.ok()) {
        result = status;
        break;
      }
      last_commit = Clock::now();
    }
    publish_progress(false);
    if (options.max_events > 0 && counters.consumed.load() >= options.max_events) break;
    if (options.idle_exit_ms > 0 && SecondsSince(last_event) * 1000 >= options.idle_exit_ms) {
      break;
    }
  }
  if (result.ok()) {
    auto status = processor_->Commit();
    if (!status.ok()) result = status;
  }
  auto close_status = source_->Close();
  if (result.ok() && !close_status.ok()) result = close_status;
  auto flush_status = sink_->Flush(30000);
  if (result.ok() && !flush_status.ok()) result = flush_status;
  publish_progress(true);
  return result;
}

}  // namespace clv::stream
