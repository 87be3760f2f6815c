#include "stream/live_views.h"

#include <cstdio>

#include <nlohmann/json.hpp>

namespace clv::stream {

namespace {

using Json = nlohmann::json;

std::string Dump(const Json& json) {
  // Replace (never throw on) invalid UTF-8: ids and attrs are arbitrary bytes.
  return json.dump(-1, ' ', false, Json::error_handler_t::replace);
}

size_t StageIndex(state::Stage stage) {
  auto index = static_cast<size_t>(stage);
  return index < LiveViews::kStages ? index : 0;
}

// One line for the dashboard's alert list.
std::string AlertMessage(const std::string& kind, const Json& detail) {
  char text[200];
  if (kind == "stage_change") {
    std::snprintf(text, sizeof text, "stage %s \u2192 %s", detail.value("from", "?").c_str(),
                  detail.value("to", "?").c_str());
  } else if (kind == "churn_risk") {
    std::snprintf(text, sizeof text, "churn risk %.2f crossed %.2f", detail.value("to", 0.0),
                  detail.value("threshold", 0.0));
  } else if (kind == "spend_anomaly") {
    std::snprintf(text, sizeof text, "purchase %.2f, typical %.2f", detail.value("amount", 0.0),
                  detail.value("typical_amount", 0.0));
  } else {
    std::snprintf(text, sizeof text, "%s", kind.c_str());
  }
  return text;
}

}  // namespace

LiveViews::LiveViews(size_t last_scores_capacity, size_t alerts_capacity)
    : distribution_(ClvDistribution::DefaultEdges(), kPartitionSlots),
      last_scores_capacity_(std::max<size_t>(1, last_scores_capacity)),
      alerts_capacity_(std::max<size_t>(1, alerts_capacity)) {}

void LiveViews::PushTop(std::string_view user_id, const state::UserState& state) {
  pending_top_.push_back(TopEntry{std::string(user_id), state.clv, state.churn_risk,
                                  state::StageName(state.stage), state.partition});
  if (pending_top_.size() >= 4096) FlushPending();
}

void LiveViews::Seed(std::string_view user_id, const state::UserState& state) {
  AddStage(state.partition, state.stage, 1);
  distribution_.Move(std::nullopt, state.clv, state.partition);
  PushTop(user_id, state);
}

void LiveViews::OnRestored(std::string_view user_id, const std::optional<state::UserState>& before,
                           const std::optional<state::UserState>& after) {
  if (before) {
    AddStage(before->partition, before->stage, -1);
    // A restore that moves a user's CLV is a removal and an addition: the
    // partition may differ too.
    distribution_.Remove(before->clv, before->partition);
  }
  if (!after) {
    FlushPending();  // a pending update of this user must not bring it back
    top_.Remove(user_id);
    return;
  }
  AddStage(after->partition, after->stage, 1);
  distribution_.Move(std::nullopt, after->clv, after->partition);
  PushTop(user_id, *after);
}

void LiveViews::OnUserScored(const UserScoreChange& change) {
  if (change.new_user) {
    AddStage(change.partition, change.stage, 1);
    distribution_.Move(std::nullopt, change.clv, change.partition);
  } else {
    if (change.previous_stage != change.stage) {
      AddStage(change.partition, change.previous_stage, -1);
      AddStage(change.partition, change.stage, 1);
    }
    distribution_.Move(change.previous_clv, change.clv, change.partition);
  }
  pending_top_.push_back(TopEntry{std::string(change.user_id), change.clv, change.churn_risk,
                                  state::StageName(change.stage), change.partition});
}

void LiveViews::FlushPending() {
  if (pending_top_.empty()) return;
  top_.UpdateBatch(pending_top_);
  pending_top_.clear();
}

void LiveViews::OnScore(const ScoreRecord& record) {
  std::lock_guard lock(last_scores_mutex_);
  auto it = last_scores_index_.find(record.user_id);
  if (it != last_scores_index_.end()) {
    it->second->second = record.json;
    last_scores_.splice(last_scores_.begin(), last_scores_, it->second);
    return;
  }
  last_scores_.emplace_front(record.user_id, record.json);
  last_scores_index_.emplace(record.user_id, last_scores_.begin());
  if (last_scores_.size() > last_scores_capacity_) {
    last_scores_index_.erase(last_scores_.back().first);
    last_scores_.pop_back();
  }
}

void LiveViews::OnAlert(const AlertRecord& alert, int64_t wall_ms) {
  std::lock_guard lock(alerts_mutex_);
  alerts_.push_back(Alert{wall_ms, std::string(alert.kind), std::string(alert.user_id),
                          std::string(alert.detail_json), std::string(alert.score_json)});
  if (alerts_.size() > alerts_capacity_) alerts_.pop_front();
}

void LiveViews::AddStage(int32_t partition, state::Stage stage, int64_t delta) {
  const size_t slot =
      partition >= 0 && partition < kPartitionSlots ? static_cast<size_t>(partition) + 1 : 0;
  stages_[slot][StageIndex(stage)].fetch_add(delta, std::memory_order_relaxed);
}

int64_t LiveViews::Users(const PartitionFilter& include) const {
  int64_t total = 0;
  for (int64_t n : Stages(include)) total += n;
  return total;
}

std::array<int64_t, LiveViews::kStages> LiveViews::Stages(const PartitionFilter& include) const {
  std::array<int64_t, kStages> out{};
  for (size_t slot = 0; slot < stages_.size(); ++slot) {
    if (slot > 0 && include && !include(static_cast<int32_t>(slot - 1))) continue;
    for (size_t i = 0; i < kStages; ++i) {
      out[i] += stages_[slot][i].load(std::memory_order_relaxed);
    }
  }
  return out;
}

std::string LiveViews::StagesJson(const PartitionFilter& include) const {
  Json json = Json::object();
  auto counts = Stages(include);
  for (size_t i = 0; i < kStages; ++i) {
    json[state::StageName(static_cast<state::Stage>(i))] = counts[i];
  }
  return Dump(json);
}

std::optional<std::string> LiveViews::LastScore(std::string_view user_id) const {
  std::lock_guard lock(last_scores_mutex_);
  auto it = last_scores_index_.find(std::string(user_id));
  if (it == last_scores_index_.end()) return std::nullopt;
  return it->second->second;
}

std::string LiveViews::AlertsJson(size_t n) const {
  std::vector<Alert> latest;
  {
    std::lock_guard lock(alerts_mutex_);
    for (auto it = alerts_.rbegin(); it != alerts_.rend() && latest.size() < n; ++it) {
      latest.push_back(*it);
    }
  }
  Json out = Json::array();
  for (const auto& alert : latest) {
    Json detail = Json::parse(alert.detail_json, nullptr, false);
    Json score = Json::parse(alert.score_json, nullptr, false);
    if (detail.is_discarded()) detail = nullptr;
    Json item = {
        {"ts_ms", alert.ts_ms},
        {"kind", alert.kind},
        {"user_id", alert.user_id},
        {"message", AlertMessage(alert.kind, detail.is_object() ? detail : Json::object())},
        {"detail", detail}};
    if (score.is_object()) {
      item["clv"] = score.value("clv", 0.0);
      item["churn_risk"] = score.value("churn_risk", 0.0);
      item["stage"] = score.value("stage", "");
    }
    out.push_back(std::move(item));
  }
  return Dump(out);
}

std::string AggregatesJson(const state::Aggregates& a) {
  Json aggregates = {
      {"first_event_ms", a.first_event_ms},
      {"last_event_ms", a.last_event_ms},
      {"first_purchase_ms", a.first_purchase_ms},
      {"last_purchase_ms", a.last_purchase_ms},
      {"events", a.events},
      {"purchases", a.purchases},
      {"purchase_days", a.purchase_days},
      {"refunds", a.refunds},
      {"sessions", a.sessions},
      {"cart_adds", a.cart_adds},
      {"views", a.views},
      {"recent_activity", a.recent_activity},
      {"monetary_total", a.monetary_total},
      {"purchase_value_sum", a.purchase_value_sum},
      {"ewma_gap_days", a.ewma_gap_days},
      {"sessions_since_purchase", a.sessions_since_purchase},
      {"session_days_after_purchase", a.session_days_after_purchase},
      {"recent_sessions", a.recent_sessions},
  };
  return Dump(aggregates);
}

std::string UserJson(std::string_view user_id, const state::UserState& s,
                     const std::optional<std::string>& last_score_json,
                     const config::LifecycleOptions& lifecycle, std::string_view model_version) {
  models::Score score;
  score.clv = s.clv;
  score.p_purchase = s.p_purchase;
  score.churn_risk = s.churn_risk;
  Json aggregates = Json::parse(AggregatesJson(s.aggregates));

  Json attrs = Json::object();
  for (const auto& [key, value] : s.attrs) attrs[key] = value;
  Json json = {
      {"user_id", std::string(user_id)},
      {"seq", s.seq},
      {"clv", s.clv},
      {"p_purchase", s.p_purchase},
      {"churn_risk", s.churn_risk},
      {"stage", state::StageName(s.stage)},
      {"segment", Segment(s.aggregates, score, lifecycle)},
      {"score_ts_ms", s.score_ts_ms},
      {"aggregates", std::move(aggregates)},
      {"attrs", std::move(attrs)},
      {"next_timer_ms", s.next_timer_ms},
      {"partition", s.partition},
      {"model", std::string(model_version)},
  };
  Json last = last_score_json ? Json::parse(*last_score_json, nullptr, false) : Json();
  if (last.is_object()) {
    json["top_factors"] = last.value("top_factors", Json::array());
    json["last_score"] = std::move(last);
  } else {
    json["top_factors"] = nullptr;  // not remembered (see LiveViews)
  }
  return Dump(json);
}

}  // namespace clv::stream
