#include "stream/top_users.h"

#include <algorithm>
#include <cmath>
#include <mutex>
#include <stdexcept>
#include <string_view>

#include <nlohmann/json.hpp>

namespace clv::stream {
namespace {

constexpr double kLowest = -std::numeric_limits<double>::infinity();

double Normalized(double score) { return std::isnan(score) ? kLowest : score; }

using Key = std::pair<double, std::string>;  // (score, user id)
// A lookup key that does not copy the user id.
using KeyView = std::pair<double, std::string_view>;

// Best first: higher score, then smaller user id (deterministic ties).
struct Better {
  using is_transparent = void;
  template <typename A, typename B>
  bool operator()(const A& a, const B& b) const {
    if (a.first != b.first) return a.first > b.first;
    return std::string_view(a.second) < std::string_view(b.second);
  }
};

}  // namespace

std::optional<TopBy> ParseTopBy(std::string_view text) {
  if (text == "clv") return TopBy::kClv;
  if (text == "churn_risk") return TopBy::kChurnRisk;
  return std::nullopt;
}

const char* TopByName(TopBy by) { return by == TopBy::kClv ? "clv" : "churn_risk"; }

struct TopUsers::Ranking {
  explicit Ranking(TopBy by) : by(by) {}

  double ScoreOf(const TopEntry& entry) const {
    return Normalized(by == TopBy::kClv ? entry.clv : entry.churn_risk);
  }

  void Forget(double score) { exact_above = std::max(exact_above, score); }

  void Update(const TopEntry& entry, size_t capacity) {
    const double score = ScoreOf(entry);
    auto found = entries.find(entry.user_id);
    if (found != entries.end()) {
      // A candidate: move it to its new place (it stays a candidate), the
      // set's node re-used.
      const double old_score = ScoreOf(found->second);
      found->second = entry;
      if (old_score == score) return;
      auto node = order.extract(order.find(KeyView(old_score, entry.user_id)));
      node.value().first = score;
      order.insert(std::move(node));
      return;
    }
    if (order.size() < capacity) {
      order.emplace(score, entry.user_id);
      entries.emplace(entry.user_id, entry);
      return;
    }
    const auto worst = std::prev(order.end());
    if (!Better()(Key(score, entry.user_id), *worst)) {
      Forget(score);  // does not make the cut
      return;
    }
    Forget(worst->first);
    entries.erase(worst->second);
    order.erase(worst);
    order.emplace(score, entry.user_id);
    entries.emplace(entry.user_id, entry);
  }

  void Remove(const std::string& user_id) {
    auto found = entries.find(user_id);
    if (found == entries.end()) return;
    order.erase(order.find(KeyView(ScoreOf(found->second), user_id)));
    entries.erase(found);
  }

  const TopBy by;
  std::set<Key, Better> order;
  std::unordered_map<std::string, TopEntry> entries;
  double exact_above = kLowest;
};

TopUsers::TopUsers(size_t capacity)
    : capacity_(std::max<size_t>(capacity, 1)),
      by_clv_(std::make_unique<Ranking>(TopBy::kClv)),
      by_churn_(std::make_unique<Ranking>(TopBy::kChurnRisk)) {}

TopUsers::~TopUsers() = default;

void TopUsers::UpdateLocked(const TopEntry& entry) {
  by_clv_->Update(entry, capacity_);
  by_churn_->Update(entry, capacity_);
}

void TopUsers::Update(const TopEntry& entry) {
  std::unique_lock lock(mutex_);
  UpdateLocked(entry);
}

void TopUsers::UpdateBatch(std::span<const TopEntry> entries) {
  std::unique_lock lock(mutex_);
  for (const TopEntry& entry : entries) UpdateLocked(entry);
}

void TopUsers::Remove(std::string_view user_id) {
  const std::string id(user_id);
  std::unique_lock lock(mutex_);
  by_clv_->Remove(id);
  by_churn_->Remove(id);
}

TopSnapshot TopUsers::Top(size_t n, TopBy by,
                          const std::function<bool(int32_t partition)>& include) const {
  std::shared_lock lock(mutex_);
  const Ranking& ranking = by == TopBy::kClv ? *by_clv_ : *by_churn_;
  TopSnapshot snapshot;
  snapshot.by = by;
  snapshot.exact_above = ranking.exact_above;
  if (!include) {
    snapshot.candidates = ranking.order.size();
    snapshot.users.reserve(std::min(n, ranking.order.size()));
    for (auto it = ranking.order.begin(); it != ranking.order.end() && snapshot.users.size() < n;
         ++it) {
      snapshot.users.push_back(ranking.entries.at(it->second));
    }
    return snapshot;
  }
  // Users of other partitions are skipped. Exactness is unchanged: a
  // forgotten user of an included partition still scored at or below
  // exact_above.
  for (const auto& [score, user_id] : ranking.order) {
    const TopEntry& entry = ranking.entries.at(user_id);
    if (!include(entry.partition)) continue;
    ++snapshot.candidates;
    if (snapshot.users.size() < n) snapshot.users.push_back(entry);
  }
  return snapshot;
}

std::string TopUsers::ToJson(const TopSnapshot& snapshot) {
  nlohmann::json users = nlohmann::json::array();
  int rank = 0;
  for (const TopEntry& entry : snapshot.users) {
    users.push_back({{"rank", ++rank},
                     {"user_id", entry.user_id},
                     {"clv", entry.clv},
                     {"churn_risk", entry.churn_risk},
                     {"stage", entry.stage},
                     {"partition", entry.partition}});
  }
  nlohmann::json out = {{"by", TopByName(snapshot.by)},
                        {"n", snapshot.users.size()},
                        {"exact_above", nullptr},
                        {"candidates", snapshot.candidates},
                        {"users", std::move(users)}};
  if (std::isfinite(snapshot.exact_above)) out["exact_above"] = snapshot.exact_above;
  if (snapshot.owned_partitions) {
    const auto owned = static_cast<int>(snapshot.owned_partitions->size());
    out["partitions"] = {
        {"owned", *snapshot.owned_partitions},
        {"total", snapshot.partitions_total > 0 ? nlohmann::json(snapshot.partitions_total)
                                                : nlohmann::json(nullptr)},
        {"partial", snapshot.partitions_total <= 0 || owned < snapshot.partitions_total}};
  }
  // User ids are arbitrary bytes: invalid UTF-8 becomes U+FFFD, never a throw.
  return out.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

// --- ClvDistribution ---------------------------------------------------------

std::vector<double> ClvDistribution::DefaultEdges() {
  std::vector<double> edges = {0};
  for (double decade = 1; decade <= 100000; decade *= 10) {
    for (double step : {1.0, 2.0, 5.0}) {
      if (decade * step <= 100000) edges.push_back(decade * step);
    }
  }
  return edges;
}

ClvDistribution::ClvDistribution(std::vector<double> edges, int32_t partition_slots)
    : edges_(std::move(edges)),
      partition_slots_(std::max<int32_t>(0, partition_slots)),
      counts_(std::make_unique<std::atomic<int64_t>[]>(
          edges_.size() * (static_cast<size_t>(partition_slots_) + 1))) {
  if (edges_.empty()) throw std::invalid_argument("ClvDistribution: needs at least one edge");
  for (size_t i = 1; i < edges_.size(); ++i) {
    if (!(edges_[i] > edges_[i - 1]))
      throw std::invalid_argument("ClvDistribution: edges must increase");
  }
}

size_t ClvDistribution::Bucket(double clv) const {
  if (std::isnan(clv)) return 0;
  const auto after = std::upper_bound(edges_.begin(), edges_.end(), clv);
  return after == edges_.begin() ? 0 : static_cast<size_t>(after - edges_.begin()) - 1;
}

size_t ClvDistribution::Slot(int32_t partition) const {
  return partition >= 0 && partition < partition_slots_ ? static_cast<size_t>(partition) + 1 : 0;
}

void ClvDistribution::Move(std::optional<double> previous, double current, int32_t partition) {
  std::atomic<int64_t>* counts = &counts_[Slot(partition) * edges_.size()];
  const size_t to = Bucket(current);
  if (previous) {
    const size_t from = Bucket(*previous);
    if (from == to) return;
    counts[from].fetch_sub(1, std::memory_order_relaxed);
  }
  counts[to].fetch_add(1, std::memory_order_relaxed);
}

void ClvDistribution::Remove(double clv, int32_t partition) {
  counts_[Slot(partition) * edges_.size() + Bucket(clv)].fetch_sub(1, std::memory_order_relaxed);
}

ClvDistribution::Snapshot ClvDistribution::Collect(
    const std::function<bool(int32_t partition)>& include) const {
  Snapshot snapshot;
  snapshot.edges = edges_;
  snapshot.counts.assign(edges_.size(), 0);
  for (int32_t slot = 0; slot <= partition_slots_; ++slot) {
    // Slot 0 (unknown partitions) is always counted.
    if (slot > 0 && include && !include(slot - 1)) continue;
    const std::atomic<int64_t>* counts = &counts_[static_cast<size_t>(slot) * edges_.size()];
    for (size_t i = 0; i < edges_.size(); ++i) {
      snapshot.counts[i] += counts[i].load(std::memory_order_relaxed);
    }
  }
  // A bucket is never negative (a count read while a user moves may be).
  for (auto& count : snapshot.counts) count = std::max<int64_t>(0, count);
  return snapshot;
}

std::string ClvDistribution::ToJson(const std::function<bool(int32_t partition)>& include) const {
  const Snapshot snapshot = Collect(include);
  return nlohmann::json{{"edges", snapshot.edges}, {"counts", snapshot.counts}}.dump();
}

}  // namespace clv::stream
