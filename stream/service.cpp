#include "stream/service.h"

#include <httplib.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstdint>
#include <future>
#include <limits>
#include <optional>
#include <set>
#include <stdexcept>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/log.h"
#include "common/time.h"
#include "connectors/http_server.h"
#include "stream/changelog.h"
#include "stream/commit_pipeline.h"
#include "stream/http_api.h"
#include "stream/live_views.h"
#include "stream/metrics.h"
#include "stream/owner_directory.h"
#include "stream/top_users.h"

namespace clv::stream {

using connectors::Status;

namespace {

using Clock = std::chrono::steady_clock;

double SecondsSince(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Milliseconds left until `deadline`, at least `floor_ms`.
int RemainingMs(Clock::time_point deadline, int floor_ms) {
  const auto left =
      std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return static_cast<int>(std::clamp<int64_t>(left, floor_ms, INT32_MAX));
}

}  // namespace

Service::Service()
    : metrics_(std::make_unique<ServiceMetrics>()),
      live_(std::make_unique<LiveViews>()),
      events_rate_(std::make_unique<RateMeter>()),
      scores_rate_(std::make_unique<RateMeter>()) {}

Service::~Service() {
  if (http_server_) http_server_->Stop();
}

Status Service::Create(const config::Config& config, std::unique_ptr<Service>* out,
                       const std::atomic<bool>* stop) {
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
  service->scorer_name_ = config.model.scorer;
  service->model_version_ = service->scorer_->version();
  service->metrics_->SetModelInfo(service->scorer_name_, service->model_version_);
  Log(LogLevel::kInfo, "model loaded",
      {{"scorer", service->scorer_name_},
       {"version", service->model_version_},
       {"device", config.model.device}});
  auto restore_status = service->RestoreLiveViews();
  if (!restore_status.ok()) return restore_status;
  // HTTP first: liveness and the reason for not being ready answer while
  // the cluster is still being reached.
  service->SetKafkaIssue("connecting to Kafka at " + config.kafka.bootstrap_servers);
  auto http_status = service->StartHttp();
  if (!http_status.ok()) return http_status;

  auto client = connectors::ClientOptionsFrom(config.kafka);
  {
    Service* waiting = service.get();
    auto last_log = Clock::now() - std::chrono::seconds(10);
    auto reached = connectors::WaitForCluster(
        client, config.kafka.startup_timeout_ms, stop,
        [waiting, &config, &last_log](const std::string& error) {
          waiting->SetKafkaIssue("waiting for a Kafka broker at " + config.kafka.bootstrap_servers +
                                 ": " + error);
          if (SecondsSince(last_log) >= 5) {
            last_log = Clock::now();
            Log(LogLevel::kWarn, "waiting for a Kafka broker to answer",
                {{"bootstrap", config.kafka.bootstrap_servers},
                 {"error", error},
                 {"startup_timeout_ms", config.kafka.startup_timeout_ms}});
          }
        });
    if (!reached.ok()) return reached;
  }
  service->SetKafkaIssue("setting up topics, producer and consumer");
  // Create only the output topics that are missing: an out-of-process
  // embedded broker (`clv broker`) has no controller to answer CreateTopics,
  // and a real cluster may not allow it; existing topics need neither.
  std::vector<std::string> missing_topics;
  for (const auto& topic :
       {config.kafka.scores_topic, config.kafka.alerts_topic, config.kafka.dead_letter_topic}) {
    int partitions = 0;
    if (!connectors::PartitionCount(client, topic, &partitions).ok() || partitions <= 0) {
      missing_topics.push_back(topic);
    }
  }
  auto status =
      connectors::EnsureTopics(client, missing_topics, config.kafka.embedded_partitions, 1);
  if (!status.ok()) return status;
  for (const auto& topic : config.kafka.input_topics) {
    int partitions = 0;
    if (connectors::PartitionCount(client, topic, &partitions).ok()) {
      service->input_partitions_.store(std::max(service->input_partitions_.load(), partitions));
    }
  }
  connectors::ClientOptions producer_client = client;
  producer_client.properties["message.max.bytes"] =
      std::to_string(config.kafka.producer_message_max_bytes);
  status = connectors::KafkaSink::Create(producer_client, &service->sink_);
  if (!status.ok()) return status;
  status = service->sink_->Prepare(
      {config.kafka.scores_topic, config.kafka.alerts_topic, config.kafka.dead_letter_topic},
      10000);
  if (!status.ok()) return status;
  service->processor_ =
      std::make_unique<Processor>(config, *service->store_, *service->scorer_, *service->sink_);
  Processor* processor = service->processor_.get();
  if (config.state.changelog) {
    service->SetKafkaIssue("setting up the state changelog topic " + ChangelogTopicName(config));
    status = EnsureChangelogTopic(config);
    bool embedded = false;
    if (!status.ok()) {
      std::vector<connectors::PartitionRange> ranges;
      (void)connectors::TopicRanges(client, config.kafka.input_topics.front(), &ranges, &embedded);
    }
    // Listed, not named: a metadata request naming it would make the
    // embedded broker create it (with 4 partitions, maybe not the right count).
    std::map<std::string, int> topics;
    if (!status.ok() && embedded &&
        !(connectors::ListTopics(client, &topics, 10000).ok() &&
          topics.count(ChangelogTopicName(config)))) {
      // `clv broker` in another process cannot create topics (no controller).
      Log(LogLevel::kWarn,
          "state changelog off: the embedded broker in another process cannot create its topic "
          "(start `clv broker --topic NAME` with it, or set state.changelog=false)",
          {{"topic", ChangelogTopicName(config)}, {"error", status.message}});
    } else if (!status.ok()) {
      return status;
    } else {
      status = OpenKafkaChangelog(client, ChangelogTopicName(config), &service->changelog_);
      if (!status.ok()) return status;
      processor->set_changelog(service->changelog_.get());
    }
  }
  if (!config.http.advertised_url.empty()) {
    char host[256] = {};
    (void)::gethostname(host, sizeof(host) - 1);
    const std::string topic = config.kafka.group_id + "-instances";
    // group/host/pid/n: one process may run several services (tests, demo).
    static std::atomic<int> services_in_process{0};
    const std::string self = config.kafka.group_id + "/" + host + "/" + std::to_string(::getpid()) +
                             "/" + std::to_string(services_in_process.fetch_add(1));
    status =
        OwnerDirectory::Open(client, topic, self, config.http.advertised_url, &service->owners_);
    if (!status.ok()) {
      // The instance still serves its own users; a 421 then names no owner.
      Log(LogLevel::kWarn, "owner addresses off: the instance directory topic is not usable",
          {{"topic", topic}, {"error", status.message}});
    }
  }
  Service* self = service.get();
  processor->set_metrics(self->metrics_.get());
  LiveViews* live = self->live_.get();
  processor->set_user_observer(
      [live](const UserScoreChange& change) { live->OnUserScored(change); });
  processor->set_alert_observer(
      [live](const AlertRecord& alert) { live->OnAlert(alert, WallClockMs()); });
  processor->set_restore_observer([live](const std::string& user_id,
                                         const std::optional<state::UserState>& before,
                                         const std::optional<state::UserState>& after) {
    live->OnRestored(user_id, before, after);
  });
  processor->set_score_observer([self](const ScoreRecord& record) {
    self->live_->OnScore(record);
    if (self->external_score_observer_) self->external_score_observer_(record);
  });
  // The group's offsets in Kafka follow the store, for lag tools
  // (kafka-consumer-groups.sh --describe): advisory, never read back.
  processor->set_commit_observer(
      [self](const std::map<connectors::TopicPartition, int64_t>& offsets) {
        if (!self->source_) return;
        for (const auto& [tp, offset] : offsets) self->group_offsets_[tp] = offset;
        auto committed = self->source_->CommitAsync(offsets);
        if (!committed.ok()) {
          Log(LogLevel::kWarn, "offsets not committed to the Kafka group (advisory)",
              {{"error", committed.message}});
        }
      });
  connectors::SourceCallbacks callbacks;
  callbacks.start_offset = [processor, self](const connectors::TopicPartition& tp) {
    auto offset = processor->StartOffset(tp);
    // E.g. restored from the changelog: the group hears of it at the next resync.
    if (offset) self->group_offsets_[tp] = *offset;
    return offset;
  };
  callbacks.reset_offsets =
      config.kafka.reset_offsets == "earliest" ? connectors::OffsetReset::kEarliest
      : config.kafka.reset_offsets == "latest" ? connectors::OffsetReset::kLatest
                                               : connectors::OffsetReset::kNone;
  callbacks.on_offset_reset = [self](const connectors::OffsetResetEvent& event) {
    return self->StoreResetOffset(event);
  };
  callbacks.on_assigned = [processor, self](const std::vector<connectors::TopicPartition>& tps) {
    processor->OnAssigned(tps);
    // The users restored from the changelog (start_offset, just before) are
    // in /top before any event of theirs comes.
    self->live_->FlushPending();
    self->last_assigned_ = Clock::now();
    self->last_rebalance_ = self->last_assigned_;
    size_t assigned = 0;
    {
      std::lock_guard lock(self->partitions_mutex_);
      self->assigned_.insert(tps.begin(), tps.end());
      self->ever_assigned_ = true;
      assigned = self->assigned_.size();
    }
    self->metrics_->partitions_assigned.Inc(tps.size());
    self->owners_changed_.store(true);
    Log(LogLevel::kInfo, "partitions assigned", {{"added", tps.size()}, {"assigned", assigned}});
  };
  // Revoked: committed first. Lost: another instance may own them already,
  // so what is not in Kafka yet is dropped (Processor::OnLost).
  auto let_go = [processor, self](const std::vector<connectors::TopicPartition>& tps, bool lost) {
    if (lost) {
      processor->OnLost(tps);
    } else if (!self->closing_) {
      // Closing: everything that could be committed was (CommitBeforeExit).
      processor->OnRevoked(tps);
    }
    self->last_rebalance_ = Clock::now();
    size_t assigned = 0;
    {
      std::lock_guard lock(self->partitions_mutex_);
      for (const auto& tp : tps) {
        self->assigned_.erase(tp);
        self->group_offsets_.erase(tp);
        if (self->lag_.erase(tp)) {
          self->metrics_->consumer_lag.Remove({tp.topic, std::to_string(tp.partition)});
        }
      }
      assigned = self->assigned_.size();
    }
    self->metrics_->partitions_revoked.Inc(tps.size());
    self->owners_changed_.store(true);
    Log(LogLevel::kInfo, lost ? "partitions lost" : "partitions revoked",
        {{"removed", tps.size()}, {"assigned", assigned}});
  };
  callbacks.on_revoked = [let_go](const std::vector<connectors::TopicPartition>& tps) {
    let_go(tps, false);
  };
  callbacks.on_lost = [let_go](const std::vector<connectors::TopicPartition>& tps) {
    let_go(tps, true);
  };
  status = connectors::KafkaSource::Create(client, config.kafka.input_topics, std::move(callbacks),
                                           &service->source_);
  if (!status.ok()) return status;
  // Nothing reaches the changelog while the partitions may be another's.
  processor->set_commit_gate([self] { return !self->source_->SessionInDoubt(); });
  service->SetKafkaIssue("");
  service->started_.store(true);
  *out = std::move(service);
  return Status::Ok();
}

Status Service::StoreResetOffset(const connectors::OffsetResetEvent& event) {
  // The partition was just assigned: nothing of it is pending in the
  // processor, so its offset alone is written now (a restart before any new
  // event must not meet the old offset again).
  state::CommitBatch batch;
  batch.offsets.push_back({event.partition.topic, event.partition.partition, event.new_offset});
  auto status = store_->Commit(batch);
  if (!status.ok()) return Status::Error("storing the reset offset: " + status.message);
  const std::string unread =
      std::to_string(std::max<int64_t>(0, event.new_offset - event.log_start)) + " event(s) " +
      "of the log (" + std::to_string(event.log_start) + ".." + std::to_string(event.new_offset) +
      ") are not read";
  Log(LogLevel::kWarn,
      "input offset reset (kafka.reset_offsets): events already counted stay in "
      "the state, the stored offset is replaced",
      {{"topic", event.partition.topic},
       {"partition", event.partition.partition},
       {"stored_offset", event.stored_offset ? std::to_string(*event.stored_offset) : "none"},
       {"log_start", event.log_start},
       {"log_end", event.log_end},
       {"new_offset", event.new_offset},
       {"discarded", event.new_offset > event.log_start ? unread : "nothing of the current log"},
       {"cause", event.cause},
       {"policy", config_.kafka.reset_offsets}});
  return Status::Ok();
}

Status Service::RestoreLiveViews() {
  const auto started = Clock::now();
  auto snapshot = store_->Snapshot();
  int64_t users = 0;
  auto status = snapshot->ForEachUser([&](std::string_view user_id, const state::UserState& s) {
    live_->Seed(user_id, s);
    ++users;
    return true;
  });
  if (!status.ok()) return Status::Error("scanning the stored users: " + status.message);
  live_->FlushPending();
  restored_.store(true);
  Log(LogLevel::kInfo, "state restored",
      {{"dir", config_.state.dir}, {"users", users}, {"seconds", SecondsSince(started)}});
  return Status::Ok();
}

Status Service::StartHttp() {
  auto options = connectors::FromConfig(config_.http);
  if (!options) return Status::Ok();
  ApiHandlers handlers;
  handlers.user_json = [this](std::string_view user_id) { return UserJson(user_id); };
  handlers.top_json = [this](int n, std::string_view by, bool group) {
    return group ? GroupTopJson(n, by) : TopJson(n, by);
  };
  handlers.metrics_text = [this] { return MetricsText(); };
  handlers.ready = [this] { return ready(); };
  handlers.ready_detail = [this] { return ReadyDetail(); };
  handlers.summary_json = [this] { return SummaryJson(); };
  auto status =
      connectors::HttpServer::Start(*options, ApiRoutes(std::move(handlers)), &http_server_);
  if (!status.ok()) return Status::Error("starting the HTTP server: " + status.message);
  Log(LogLevel::kInfo, "http listening",
      {{"url", "http://" + options->bind + ":" + std::to_string(http_server_->port()) + "/"},
       {"token", options->token.empty() ? "none" : "required"}});
  return Status::Ok();
}

int Service::http_port() const { return http_server_ ? http_server_->port() : 0; }

void Service::set_score_observer(std::function<void(const ScoreRecord&)> observer) {
  external_score_observer_ = std::move(observer);
}

void Service::SetKafkaIssue(std::string issue) {
  std::lock_guard lock(health_mutex_);
  kafka_issue_ = std::move(issue);
}

bool Service::ready() const { return NotReadyReason().empty(); }

std::string Service::NotReadyReason() const {
  if (stopped_.load()) return "stopped";
  if (!restored_.load()) return "restoring the state from " + config_.state.dir;
  if (scorer_ == nullptr) return "no model loaded";
  connectors::ClusterHealth health;
  {
    std::lock_guard lock(health_mutex_);
    if (!started_.load()) return kafka_issue_.empty() ? "starting" : kafka_issue_;
    health = health_;
  }
  // started_ is set after processor_: reading it is safe from here on.
  if (processor_ != nullptr && processor_->counters().restoring.load() > 0) {
    return "restoring " + std::to_string(processor_->counters().restoring.load()) +
           " partition(s) from the state changelog " + ChangelogTopicName(config_);
  }
  if (!health.reachable) {
    return "Kafka cluster unreachable at " + config_.kafka.bootstrap_servers + " for " +
           std::to_string(health.unreachable_ms / 1000) + " s" +
           (health.error.empty() ? "" : ": " + health.error);
  }
  std::lock_guard lock(partitions_mutex_);
  if (assigned_.empty()) {
    if (health.partitions_lost > 0) {
      return std::to_string(health.partitions_lost) +
             " partition(s) lost (the group session expired); waiting for a new assignment "
             "in group '" +
             config_.kafka.group_id + "'";
    }
    return "no partitions assigned yet (joining group '" + config_.kafka.group_id + "')";
  }
  return "";
}

std::string Service::ReadyDetail() const {
  size_t assigned = 0;
  {
    std::lock_guard lock(partitions_mutex_);
    assigned = assigned_.size();
  }
  connectors::ClusterHealth health;
  {
    std::lock_guard lock(health_mutex_);
    health = health_;
  }
  const std::string reason = NotReadyReason();
  nlohmann::json kafka = {
      {"bootstrap", config_.kafka.bootstrap_servers},
      {"reachable", started_.load() && health.reachable},
      {"error", health.error},
      {"unreachable_seconds", static_cast<double>(health.unreachable_ms) / 1000.0},
  };
  nlohmann::json json = {
      {"ready", reason.empty()},
      {"reason", reason},
      {"partitions_assigned", assigned},
      {"partitions_lost", health.partitions_lost},
      {"state_restored", restored_.load()},
      {"model_loaded", scorer_ != nullptr},
      {"stopped", stopped_.load()},
      {"kafka", std::move(kafka)},
      {"model", {{"scorer", scorer_name_}, {"version", model_version_}}},
  };
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<std::vector<int32_t>> Service::OwnedPartitions() const {
  std::lock_guard lock(partitions_mutex_);
  if (!ever_assigned_) return std::nullopt;
  std::set<int32_t> numbers;
  for (const auto& tp : assigned_) numbers.insert(tp.partition);
  return std::vector<int32_t>(numbers.begin(), numbers.end());
}

UserAnswer Service::UserJson(std::string_view user_id) const {
  auto snapshot = store_->Snapshot();
  std::optional<state::UserState> state;
  auto status = snapshot->GetUser(user_id, &state);
  // The HTTP server turns an exception into a 500 JSON error.
  if (!status.ok()) throw std::runtime_error("reading user state: " + status.message);
  if (!state) return {};
  const auto owned = OwnedPartitions();
  if (owned && state->partition >= 0 &&
      !std::binary_search(owned->begin(), owned->end(), state->partition)) {
    // The stored state stopped at the revocation (or is older still): the
    // owner has the current one.
    std::string list;
    for (int32_t p : *owned) list += (list.empty() ? "" : ", ") + std::to_string(p);
    std::string message =
        "user '" + std::string(user_id) + "' is on input partition " +
        std::to_string(state->partition) +
        ", which this instance does not own now (it owns: " + (list.empty() ? "none" : list) + ")";
    const std::optional<std::string> owner_url =
        owners_ ? owners_->OwnerUrl(state->partition) : std::nullopt;
    if (owner_url) {
      message += "; its owner answers at " + *owner_url;
    } else {
      message += "; ask the instance of group '" + config_.kafka.group_id +
                 "' that owns it (kafka-consumer-groups.sh --describe --group " +
                 config_.kafka.group_id + ")";
    }
    nlohmann::json body = {{"error", message},
                           {"user_id", std::string(user_id)},
                           {"partition", state->partition},
                           {"owned_partitions", *owned}};
    if (owner_url) body["owner_url"] = *owner_url;
    return {UserAnswer::kOtherOwner,
            body.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)};
  }
  return {UserAnswer::kFound, stream::UserJson(user_id, *state, live_->LastScore(user_id),
                                               config_.lifecycle, model_version_)};
}

TopSnapshot Service::OwnedTop(size_t n, TopBy by) const {
  const auto owned = OwnedPartitions();
  if (!owned) return live_->top().Top(n, by);
  TopSnapshot snapshot = live_->top().Top(n, by, [&](int32_t partition) {
    return partition < 0 || std::binary_search(owned->begin(), owned->end(), partition);
  });
  snapshot.owned_partitions = *owned;
  snapshot.partitions_total = input_partitions_;
  return snapshot;
}

std::string Service::TopJson(int n, std::string_view by) const {
  auto ranking = ParseTopBy(by).value_or(TopBy::kClv);
  return TopUsers::ToJson(OwnedTop(static_cast<size_t>(std::max(0, n)), ranking));
}

std::string Service::GroupTopJson(int n, std::string_view by) const {
  const TopBy ranking = ParseTopBy(by).value_or(TopBy::kClv);
  const size_t count = static_cast<size_t>(std::max(0, n));
  TopSnapshot merged = OwnedTop(count, ranking);
  std::set<int32_t> covered;
  if (merged.owned_partitions) {
    covered.insert(merged.owned_partitions->begin(), merged.owned_partitions->end());
  }
  nlohmann::json instances = nlohmann::json::array();
  const auto peers = owners_ ? owners_->Peers() : std::vector<OwnerDirectory::Peer>{};
  // Every peer at once, 2 s each at most.
  std::vector<std::future<std::pair<int, std::string>>> answers;
  answers.reserve(peers.size());
  const std::string target = "/top?n=" + std::to_string(count) + "&by=" + TopByName(ranking);
  for (const auto& peer : peers) {
    answers.push_back(
        std::async(std::launch::async, [url = peer.url, target, token = config_.http.token] {
          httplib::Client client(url);
          client.set_connection_timeout(1, 0);
          client.set_read_timeout(2, 0);
          httplib::Headers headers;
          if (!token.empty()) headers.emplace("Authorization", "Bearer " + token);
          auto answer = client.Get(target, headers);
          if (!answer) return std::pair<int, std::string>(0, httplib::to_string(answer.error()));
          return std::pair<int, std::string>(answer->status, answer->body);
        }));
  }
  for (size_t i = 0; i < peers.size(); ++i) {
    const auto [status, body] = answers[i].get();
    nlohmann::json instance = {{"url", peers[i].url}, {"partitions", peers[i].partitions}};
    const auto json = nlohmann::json::parse(body, nullptr, false);
    if (status != 200 || json.is_discarded() || !json.contains("users")) {
      instance["error"] = status == 0 ? "no answer: " + body
                                      : "HTTP " + std::to_string(status) + ": " +
                                            body.substr(0, std::min<size_t>(body.size(), 200));
      instances.push_back(std::move(instance));
      continue;
    }
    // The partitions it owns by its own answer that nobody before claimed.
    std::set<int32_t> taken;
    if (json.contains("partitions") && json["partitions"].contains("owned")) {
      for (int32_t p : json["partitions"]["owned"].get<std::vector<int32_t>>()) {
        if (!covered.count(p)) taken.insert(p);
      }
    }
    for (const auto& user : json["users"]) {
      TopEntry entry;
      entry.partition = user.value("partition", -1);
      if (!taken.count(entry.partition)) continue;
      entry.user_id = user.value("user_id", "");
      entry.clv = user.value("clv", 0.0);
      entry.churn_risk = user.value("churn_risk", 0.0);
      entry.stage = user.value("stage", "");
      merged.users.push_back(std::move(entry));
    }
    merged.candidates += json.value("candidates", size_t{0});
    if (json.contains("exact_above") && json["exact_above"].is_number()) {
      merged.exact_above = std::max(merged.exact_above, json["exact_above"].get<double>());
    }
    covered.insert(taken.begin(), taken.end());
    instance["partitions"] = std::vector<int32_t>(taken.begin(), taken.end());
    instances.push_back(std::move(instance));
  }
  // Best first, ties by user id; NaN lowest (as TopUsers ranks them).
  auto score = [ranking](const TopEntry& e) {
    const double v = ranking == TopBy::kClv ? e.clv : e.churn_risk;
    return std::isnan(v) ? -std::numeric_limits<double>::infinity() : v;
  };
  std::stable_sort(merged.users.begin(), merged.users.end(),
                   [&](const TopEntry& x, const TopEntry& y) {
                     const double a = score(x), b = score(y);
                     return a != b ? a > b : x.user_id < y.user_id;
                   });
  if (merged.users.size() > count) merged.users.resize(count);
  if (merged.owned_partitions) merged.owned_partitions.emplace(covered.begin(), covered.end());
  auto out = nlohmann::json::parse(TopUsers::ToJson(merged));
  out["scope"] = "group";
  out["instances"] = std::move(instances);
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

void Service::RefreshLag() {
  auto lag = source_->Lag();
  std::lock_guard lock(partitions_mutex_);
  for (auto it = lag_.begin(); it != lag_.end();) {
    if (lag.count(it->first)) {
      ++it;
    } else {
      metrics_->consumer_lag.Remove({it->first.topic, std::to_string(it->first.partition)});
      it = lag_.erase(it);
    }
  }
  for (const auto& [tp, value] : lag) {
    if (!assigned_.count(tp)) continue;
    lag_[tp] = std::max<int64_t>(0, value);
    metrics_->consumer_lag.WithLabels({tp.topic, std::to_string(tp.partition)})
        .Set(static_cast<double>(std::max<int64_t>(0, value)));
  }
}

std::string Service::MetricsText() {
  // Refreshed at scrape time; the rest is kept up to date by the processor.
  metrics_->users_in_state.Set(static_cast<double>(live_->Users()));
  metrics_->state_disk_bytes.Set(static_cast<double>(store_->ApproximateBytes()));
  metrics_->ready.Set(ready() ? 1 : 0);
  return metrics_->registry.Render();
}

std::string Service::SummaryJson() {
  static const ProcessorCounters kNothingYet;
  // Before Create() finished there is no processor yet (HTTP starts first).
  const auto& c = started_.load() ? processor_->counters() : kNothingYet;
  const int64_t now = SteadyClockMs();
  nlohmann::json lag_partitions = nlohmann::json::array();
  int64_t lag_total = 0;
  {
    std::lock_guard lock(partitions_mutex_);
    for (const auto& [tp, value] : lag_) {
      lag_partitions.push_back({{"topic", tp.topic}, {"partition", tp.partition}, {"lag", value}});
      lag_total += value;
    }
  }
  nlohmann::json top = nlohmann::json::array();
  // Users and stages of the partitions owned now (all before an assignment).
  LiveViews::PartitionFilter owned_only;
  if (auto owned = OwnedPartitions()) {
    owned_only = [owned = std::move(*owned)](int32_t partition) {
      return std::binary_search(owned.begin(), owned.end(), partition);
    };
  }
  for (const auto& entry : OwnedTop(10, TopBy::kClv).users) {
    top.push_back({{"user_id", entry.user_id},
                   {"clv", entry.clv},
                   {"churn_risk", entry.churn_risk},
                   {"stage", entry.stage}});
  }
  nlohmann::json json = {
      {"ts_ms", WallClockMs()},
      {"ready", ready()},
      {"model", {{"scorer", scorer_name_}, {"version", model_version_}}},
      {"events_per_second", events_rate_->Update(now, static_cast<double>(c.consumed.load()))},
      {"scores_per_second",
       scores_rate_->Update(now, static_cast<double>(c.scores_emitted.load()))},
      {"totals",
       {{"events_consumed", c.consumed.load()},
        {"events_processed", c.processed.load()},
        {"dead_lettered", c.dead_lettered.load()},
        {"deduplicated", c.duplicates.load()},
        {"scores_emitted", c.scores_emitted.load()},
        {"alerts_emitted", c.alerts_emitted.load()},
        {"timer_rescores", c.timer_rescores.load()},
        {"commits", c.commits.load()}}},
      {"lag", {{"total", lag_total}, {"partitions", std::move(lag_partitions)}}},
      {"users", live_->Users(owned_only)},
      {"clv_histogram", nlohmann::json::parse(live_->distribution().ToJson(owned_only))},
      {"stages", nlohmann::json::parse(live_->StagesJson(owned_only))},
      {"top", std::move(top)},
      {"alerts", nlohmann::json::parse(live_->AlertsJson(20))},
  };
  return json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

Status Service::CommitBeforeExit(Clock::time_point deadline) {
  auto status = processor_->Seal();
  if (!status.ok()) return status;
  auto last_log = Clock::now();
  while (processor_->sealed_count() > 0) {
    // Hands over what Kafka acknowledged meanwhile, without waiting.
    status = processor_->WriteAcknowledged(static_cast<int>(processor_->sealed_count()));
    // A wait the processor asked for (a full cache waits for every commit)
    // is cut short by the stop flag: the deadline below decides.
    if (!status.ok() && processor_->failed()) return status;
    const size_t pending = processor_->sealed_count();
    if (pending == 0) break;
    const auto health = source_->Health();
    const std::string cluster =
        health.reachable
            ? "reachable"
            : "unreachable: " + (health.error.empty() ? "all brokers down" : health.error);
    if (Clock::now() >= deadline) {
      abandoned_ = true;
      return Status::Error(
          "shutdown: Kafka did not acknowledge the outputs of " + std::to_string(pending) +
          " micro-batch commit(s) within stream.shutdown_timeout_ms=" +
          std::to_string(config_.stream.shutdown_timeout_ms) + " (cluster at " +
          config_.kafka.bootstrap_servers + " " + cluster +
          "); they are not committed: the next start reads those events again (nothing is lost)");
    }
    if (SecondsSince(last_log) >= 2) {
      last_log = Clock::now();
      Log(LogLevel::kInfo, "shutdown: waiting for Kafka to acknowledge the last outputs",
          {{"commits", pending},
           {"cluster", cluster},
           {"gives_up_in_ms", RemainingMs(deadline, 0)}});
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  return Status::Ok();
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
  // Last seen with the cluster unreachable (an outage is not idle time).
  Clock::time_point last_unreachable{};
  // Since when more than stream.commits_in_flight commits wait for Kafka
  // (the epoch: not now).
  Clock::time_point full_since{};
  // Last seen with commits waiting for acknowledgements (not idle either).
  Clock::time_point last_waiting{};
  int64_t consumed_at_last_progress = 0;
  std::vector<connectors::Message> batch;
  Status result = Status::Ok();
  const auto& counters = processor_->counters();
  // A stop request cuts the loop's waits for acknowledgements short (the
  // way out below waits for them, within stream.shutdown_timeout_ms).
  processor_->set_stop_flag(&stop);

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
    // Lag asks the partition leaders when nothing is cached: not while the
    // cluster is unreachable (the last values stay).
    if (source_->Health().reachable) RefreshLag();
    {
      std::lock_guard lock(partitions_mutex_);
      p.partitions = static_cast<int>(lag_.size());
      for (const auto& [tp, value] : lag_) p.lag += value;
    }
    p.events_per_second = since > 0 ? (p.consumed - consumed_at_last_progress) / since : 0;
    consumed_at_last_progress = p.consumed;
    last_progress = Clock::now();
    {
      std::lock_guard lock(progress_mutex_);
      progress_ = p;
    }
    if (progress_observer_) progress_observer_(p);
  };

  // After a Poll: the cluster's health for /readyz, and the outage clock
  // (an outage is not idle time). Returns whether the cluster is reachable.
  bool was_reachable = true;
  Clock::time_point outage_started{};
  auto observe_cluster = [&] {
    auto health = source_->Health();
    const bool reachable = health.reachable;
    if (!reachable) last_unreachable = Clock::now();
    // A refused connection since the last message: maybe the start of an
    // outage librdkafka has not called one yet (all brokers down), so the
    // idle clock restarts from it.
    if (health.connect_failed_ms >= 0) {
      last_unreachable = std::max(
          last_unreachable, Clock::now() - std::chrono::milliseconds(health.connect_failed_ms));
    }
    // An outage and its end, once each, in the log.
    if (!reachable && was_reachable) {
      outage_started = Clock::now();
      Log(LogLevel::kWarn, "Kafka cluster unreachable: waiting for it",
          {{"bootstrap", config_.kafka.bootstrap_servers},
           {"error", health.error.empty() ? std::string("all brokers down") : health.error}});
    } else if (reachable && !was_reachable) {
      Log(LogLevel::kInfo, "Kafka cluster reachable again",
          {{"bootstrap", config_.kafka.bootstrap_servers},
           {"seconds", SecondsSince(outage_started)}});
    }
    was_reachable = reachable;
    std::lock_guard lock(health_mutex_);
    health_ = std::move(health);
    return reachable;
  };

  while (!stop.load()) {
    batch.clear();
    // A micro-batch: up to batch_max_events, closed batch_max_wait_ms after
    // its first message.
    // Commits whose outputs the broker has acknowledged meanwhile go to the
    // store first; while some are pending, input is polled in short waits.
    if (processor_->sealed_count() > 0) {
      // Hands over what Kafka acknowledged meanwhile without waiting: the
      // polling thread never blocks on acknowledgements (the outputs' or the
      // state changelog's), so it keeps seeing the cluster (an outage,
      // /readyz) and the stop flag.
      auto written = processor_->WriteAcknowledged(static_cast<int>(processor_->sealed_count()));
      if (!written.ok()) {
        // A wait cut short by a stop: CommitBeforeExit waits on, bounded.
        if (!stop.load() || processor_->failed()) result = written;
        break;
      }
      const size_t pending = processor_->sealed_count();
      // Commits waiting for Kafka are work in progress, not idle time.
      if (pending > 0) last_waiting = Clock::now();
      if (static_cast<int>(pending) > options.commits_in_flight) {
        // No room for another commit: no input until Kafka acknowledges.
        if (full_since == Clock::time_point{}) full_since = Clock::now();
        batch.clear();
        auto probed = source_->Poll(0, 0, &batch);  // reads nothing: only sees the cluster
        if (!probed.ok()) {
          result = probed;
          break;
        }
        const bool reachable = observe_cluster();
        // An outage is not a timeout; a reachable cluster that acknowledges
        // nothing for the flush timeout stops the service.
        const auto waiting_since = std::max(full_since, last_unreachable);
        if (reachable &&
            SecondsSince(waiting_since) * 1000 >= CommitPipeline::kDefaultFlushTimeoutMs) {
          result = Status::Error(
              "Kafka at " + config_.kafka.bootstrap_servers +
              " (reachable) did not acknowledge the outputs or state changelog records of " +
              std::to_string(pending) + " micro-batch commit(s) within " +
              std::to_string(CommitPipeline::kDefaultFlushTimeoutMs) +
              " ms: they are not committed; the next start reads those events again");
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(reachable ? 1 : 50));
        continue;
      }
    }
    full_since = Clock::time_point{};
    std::optional<StageTimer> poll_timer(std::in_place, processor_->mutable_poll_nanos());
    auto status =
        source_->Poll(options.batch_max_events, processor_->sealed_count() > 0 ? 5 : 100, &batch);
    if (!status.ok()) {
      result = status;
      break;
    }
    if (!batch.empty()) {
      auto batch_deadline = Clock::now() + std::chrono::milliseconds(options.batch_max_wait_ms);
      while (static_cast<int>(batch.size()) < options.batch_max_events && !stop.load()) {
        auto left =
            std::chrono::duration_cast<std::chrono::milliseconds>(batch_deadline - Clock::now())
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
    poll_timer.reset();
    observe_cluster();
    if (!processor_->callback_error().empty()) {
      result = Status::Error(processor_->callback_error());
      break;
    }
    const auto batch_started = Clock::now();
    if (!batch.empty()) {
      last_event = Clock::now();
      const int64_t steps_before = counters.scorer_steps.load();
      const int64_t nanos_before = counters.scorer_nanos.load();
      status = processor_->ProcessBatch(batch);
      live_->FlushPending();
      if (!status.ok()) {
        result = status;
        break;
      }
      metrics_->batch_events.Observe(static_cast<double>(batch.size()));
      const int64_t steps = counters.scorer_steps.load() - steps_before;
      const int64_t nanos = counters.scorer_nanos.load() - nanos_before;
      if (steps > 0 && nanos > 0) {
        metrics_->scorer_user_steps_per_second.Set(static_cast<double>(steps) * 1e9 /
                                                   static_cast<double>(nanos));
      }
    }
    bool commit_due = options.commit_interval_ms <= 0 ||
                      SecondsSince(last_commit) * 1000 >= options.commit_interval_ms;
    if (commit_due && processor_->HasUncommitted()) {
      const auto commit_started = Clock::now();
      status = processor_->Seal();
      // Without waiting: the top of the loop waits for room, polling.
      if (status.ok()) {
        status = processor_->WriteAcknowledged(static_cast<int>(processor_->sealed_count()));
      }
      if (!status.ok()) {
        // A wait cut short by a stop: CommitBeforeExit waits on, bounded.
        if (!stop.load() || processor_->failed()) result = status;
        break;
      }
      last_commit = Clock::now();
      metrics_->commit_duration_seconds.Observe(SecondsSince(commit_started));
    }
    if (!batch.empty()) metrics_->batch_duration_seconds.Observe(SecondsSince(batch_started));
    publish_progress(false);
    // Only what the broker has not acknowledged, and only while the group is
    // settled: a commit that meets a rebalance in progress is refused with an
    // invalid generation, and librdkafka then drops the whole assignment.
    if (!group_offsets_.empty() &&
        SecondsSince(group_offsets_synced_) * 1000 >= kGroupOffsetsResyncMs &&
        SecondsSince(last_rebalance_) * 1000 >= kGroupOffsetsResyncMs) {
      group_offsets_synced_ = Clock::now();
      const auto acknowledged = source_->GroupCommitted();
      std::map<connectors::TopicPartition, int64_t> behind;
      for (const auto& [tp, offset] : group_offsets_) {
        auto it = acknowledged.find(tp);
        if (it == acknowledged.end() || it->second != offset) behind.emplace(tp, offset);
      }
      auto committed = source_->CommitAsync(behind);
      if (!committed.ok()) {
        Log(LogLevel::kWarn, "offsets not committed to the Kafka group (advisory)",
            {{"error", committed.message}});
      }
    }
    // The owned list is built only when an announcement is due.
    if (owners_ && (owners_changed_.exchange(false) || owners_->AnnounceDue())) {
      auto announced = owners_->Announce(OwnedPartitions().value_or(std::vector<int32_t>{}));
      if (!announced.ok()) {
        Log(LogLevel::kWarn, "instance directory: announcing the owned partitions failed",
            {{"topic", owners_->topic()}, {"error", announced.message}});
      }
    }
    if (options.max_events > 0 && counters.consumed.load() >= options.max_events) break;
    if (options.idle_exit_ms > 0) {
      // Idle means no input while partitions are assigned, no commit waits
      // for Kafka and the cluster is reachable: an outage does not count,
      // nor does a commit's wait for acknowledgements, nor joining the group
      // (seconds, more when a static member's session must expire first),
      // unless no assignment comes for a minute or more.
      bool assigned = false;
      {
        std::lock_guard lock(partitions_mutex_);
        assigned = !assigned_.empty();
      }
      const auto idle_since =
          std::max({last_event, last_assigned_, last_unreachable, last_waiting});
      if (assigned ? SecondsSince(idle_since) * 1000 >= options.idle_exit_ms
                   : SecondsSince(idle_since) * 1000 >= std::max(options.idle_exit_ms, 60000)) {
        break;
      }
    }
  }
  // The way out is bounded: commit, leave the group and flush within
  // stream.shutdown_timeout_ms (plus up to a second each to leave the group
  // and flush when the commit used it all).
  const auto shutdown_deadline =
      Clock::now() + std::chrono::milliseconds(options.shutdown_timeout_ms);
  if (stop.load()) {
    Log(LogLevel::kInfo, "stop requested: finishing the micro-batch",
        {{"shutdown_timeout_ms", options.shutdown_timeout_ms}});
  }
  if (result.ok()) result = CommitBeforeExit(shutdown_deadline);
  live_->FlushPending();
  // An error exit leaves the group too, so that the next start (or another
  // instance) is assigned at once instead of after the session timeout.
  closing_ = true;
  auto close_status = source_->CloseWithin(RemainingMs(shutdown_deadline, 1000));
  if (owners_) owners_->Close(static_cast<int>(RemainingMs(shutdown_deadline, 1000)));
  if (!close_status.ok()) {
    if (result.ok()) {
      result = close_status;
    } else {
      Log(LogLevel::kWarn, "closing the consumer", {{"error", close_status.message}});
    }
  }
  if (abandoned_) {
    sink_->Abandon();
  } else {
    auto flush_status = sink_->Flush(RemainingMs(shutdown_deadline, 1000));
    if (!flush_status.ok()) {
      sink_->Abandon();
      if (result.ok()) result = flush_status;
    }
  }
  // Changelog records still in flight belong to commits not in the store:
  // dropping them loses nothing (their events are read again).
  if (changelog_ && (abandoned_ || !result.ok())) changelog_->Abandon();
  processor_->set_stop_flag(nullptr);  // `stop` is the caller's
  stopped_.store(true);
  publish_progress(true);
  if (result.ok()) {
    Log(LogLevel::kInfo, "stopped: committed, left the group, flushed the producer",
        {{"consumed", counters.consumed.load()}, {"commits", counters.commits.load()}});
  } else {
    Log(LogLevel::kError, "stopped on error", {{"error", result.message}});
  }
  return result;
}

}  // namespace clv::stream
