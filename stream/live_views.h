// What the service keeps in memory for its HTTP API and dashboard, and the
// JSON answers built from it (stream/http_api.cpp routes them).
//
//  * LiveViews: users per lifecycle stage, the CLV distribution, the top users
//    (stream/top_users.h), the last emitted score of recently scored users
//    (for /users/{id}'s top factors) and the most recent alerts. The service
//    seeds it from one scan of the stored state at start (Seed), then feeds it
//    every computed score and alert from the processing thread, so nothing
//    scans the store while serving.
//  * UserJson: the /users/{id} answer from a stored UserState.
//
// Exactness: stage counts and the distribution count every user this
// instance's store knows (committed, restored from the changelog or scored
// since start). Stage counts are kept per input partition (partitions
// 0..kPartitionSlots-1; a user of another or unknown partition is always
// counted), and so is the distribution, so the service counts only the
// partitions it owns now. Top users: see TopUsers; each entry carries its
// partition, so the service's /top answers only from the partitions it
// owns now. Last scores are an LRU of
// `last_scores_capacity` users: older users' /users answers have no
// top_factors (the state keeps none).
//
// Thread-safety: Seed/OnUserScored/OnScore/OnAlert/FlushPending on the
// processing thread (Seed before processing starts); every reader (the
// *Json methods, Stages, Users) from any thread.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "config/config.h"
#include "state/user_state.h"
#include "stream/processor.h"
#include "stream/top_users.h"

namespace clv::stream {

class LiveViews {
 public:
  static constexpr size_t kStages = 6;  // state::Stage values 0..5
  static constexpr int32_t kPartitionSlots = 1024;
  // Which input partitions to count (empty: all).
  using PartitionFilter = std::function<bool(int32_t partition)>;

  explicit LiveViews(size_t last_scores_capacity = 20000, size_t alerts_capacity = 50);
  LiveViews(const LiveViews&) = delete;
  LiveViews& operator=(const LiveViews&) = delete;

  // One stored user, while scanning the store at start.
  void Seed(std::string_view user_id, const state::UserState& state);
  // A user a restore from the state changelog wrote (stream/changelog.h):
  // its local state before (counted here already) and the restored one
  // (nullopt: deleted). Processing thread.
  void OnRestored(std::string_view user_id, const std::optional<state::UserState>& before,
                  const std::optional<state::UserState>& after);
  // Processing thread, per computed score / emitted score / alert.
  void OnUserScored(const UserScoreChange& change);
  void OnScore(const ScoreRecord& record);
  void OnAlert(const AlertRecord& alert, int64_t wall_ms);
  // Applies the top-user updates gathered since the last call (one lock).
  void FlushPending();

  int64_t Users(const PartitionFilter& include = {}) const;  // sum over stages
  std::array<int64_t, kStages> Stages(const PartitionFilter& include = {}) const;
  // {"potential":n,...}
  std::string StagesJson(const PartitionFilter& include = {}) const;
  TopUsers& top() { return top_; }
  const ClvDistribution& distribution() const { return distribution_; }
  // The last score JSON sent for this user, if still remembered.
  std::optional<std::string> LastScore(std::string_view user_id) const;
  // [{"ts_ms":..,"kind":..,"user_id":..,"message":..,"clv":..,"churn_risk":..,
  //   "detail":{...}}], newest first, at most n.
  std::string AlertsJson(size_t n) const;

 private:
  struct Alert {
    int64_t ts_ms = 0;
    std::string kind;
    std::string user_id;
    std::string detail_json;
    std::string score_json;
  };

  // Users per stage of input partition p in slot p + 1; slot 0: a partition
  // unknown (-1) or past kPartitionSlots, always counted.
  std::array<std::array<std::atomic<int64_t>, kStages>, kPartitionSlots + 1> stages_{};
  void AddStage(int32_t partition, state::Stage stage, int64_t delta);
  ClvDistribution distribution_;
  TopUsers top_;
  std::vector<TopEntry> pending_top_;  // processing thread only
  // Queues a stored user's /top entry (flushed every 4,096).
  void PushTop(std::string_view user_id, const state::UserState& state);

  const size_t last_scores_capacity_;
  mutable std::mutex last_scores_mutex_;
  std::list<std::pair<std::string, std::string>> last_scores_;  // most recent first
  std::unordered_map<std::string, std::list<std::pair<std::string, std::string>>::iterator>
      last_scores_index_;

  const size_t alerts_capacity_;
  mutable std::mutex alerts_mutex_;
  std::deque<Alert> alerts_;  // newest at the back
};

// A user's aggregates as a JSON object (the one field list of /users/{id}
// and `clv inspect`).
std::string AggregatesJson(const state::Aggregates& aggregates);

// The /users/{id} answer: user_id, seq, clv, p_purchase, churn_risk, stage,
// segment, score_ts_ms (event time of the last committed score), aggregates,
// attrs, next_timer_ms, partition, model, and top_factors + last_score when
// `last_score_json` is given (the latest score sent, possibly newer than the
// committed state: compare its seq).
std::string UserJson(std::string_view user_id, const state::UserState& state,
                     const std::optional<std::string>& last_score_json,
                     const config::LifecycleOptions& lifecycle, std::string_view model_version);

}  // namespace clv::stream
