// Live population views for GET /top and the dashboard, kept incrementally
// from the scores the processor emits (never by scanning the state store).
//
//  * TopUsers: the highest users by CLV and by churn risk. Update() is
//    O(log capacity) per scored user; Top() copies out at most n entries.
//  * ClvDistribution: how many users fall in each CLV bucket.
//
// Exactness of TopUsers: each ranking keeps a bounded candidate set of
// `capacity` users (an ordered set of (score, user) plus a map user -> entry).
// A user whose score does not beat the worst candidate when the set is full,
// or who is pushed out by a better one, is forgotten; the highest score ever
// forgotten is kept as exact_above. Every user outside the set last scored at
// or below exact_above, so the entries of Top() scoring above it are exactly
// the true leaders; entries at or below it may miss a forgotten user whose
// score was since overtaken by candidates falling (scores of idle users decay).
// With capacity >> n (default 10,000 for n <= 1,000) that takes many
// candidates dropping below a forgotten user. Scores are as of the last
// Update: state restored at start is not reflected until a user is re-scored
// (call Update while restoring to seed it).
//
// Thread-safety: all methods are thread-safe (a shared mutex: updates from the
// processing thread, reads from HTTP threads; UpdateBatch takes it once).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <set>
#include <shared_mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace clv::stream {

enum class TopBy { kClv, kChurnRisk };

// "clv" / "churn_risk" (the /top `by` parameter); nullopt otherwise.
std::optional<TopBy> ParseTopBy(std::string_view text);
const char* TopByName(TopBy by);

struct TopEntry {
  std::string user_id;
  double clv = 0;
  double churn_risk = 0;
  std::string stage;       // lifecycle stage name, e.g. "active"
  int32_t partition = -1;  // input partition number of the user's events (-1: unknown)
};

struct TopSnapshot {
  TopBy by = TopBy::kClv;
  std::vector<TopEntry> users;  // best first; ties by user id ascending
  // Users scoring above this are exact (see the header comment); -inf when
  // nobody was ever forgotten, i.e. the whole list is exact.
  double exact_above = -std::numeric_limits<double>::infinity();
  size_t candidates = 0;  // users currently tracked for this ranking
  // Set by the service once it has an assignment: the input partition numbers
  // it owns now (the users above are of these only) and how many the input
  // topics have (0: unknown).
  std::optional<std::vector<int32_t>> owned_partitions;
  int partitions_total = 0;
};

class TopUsers {
 public:
  // Candidates kept per ranking; at least 1.
  explicit TopUsers(size_t capacity = 10000);
  ~TopUsers();
  TopUsers(const TopUsers&) = delete;
  TopUsers& operator=(const TopUsers&) = delete;

  // The user's latest score (replaces the previous one). NaN counts as the
  // lowest possible score.
  void Update(const TopEntry& entry);
  void UpdateBatch(std::span<const TopEntry> entries);
  // Forgets a user (deleted user); does not touch exact_above.
  void Remove(std::string_view user_id);

  // The best min(n, candidates) users; with `include`, only those whose
  // partition it accepts (the partitions this instance owns now), and
  // `candidates` counts only those.
  TopSnapshot Top(size_t n, TopBy by,
                  const std::function<bool(int32_t partition)>& include = {}) const;

  // /top answer: {"by":"clv","n":3,"exact_above":null|x,"candidates":..,
  // "users":[{"rank":1,"user_id":..,"clv":..,"churn_risk":..,"stage":..,
  // "partition":..}, ...]},
  // plus "partitions":{"owned":[..],"total":N|null,"partial":bool} when
  // owned_partitions is set (partial: this instance does not own them all).
  static std::string ToJson(const TopSnapshot& snapshot);

 private:
  struct Ranking;
  void UpdateLocked(const TopEntry& entry);

  const size_t capacity_;
  mutable std::shared_mutex mutex_;
  std::unique_ptr<Ranking> by_clv_;
  std::unique_ptr<Ranking> by_churn_;
};

// Users per CLV bucket, for the dashboard histogram. Bucket i counts users
// with edges[i] <= clv < edges[i+1]; the last bucket is open-ended and values
// below edges[0] (or NaN) count in bucket 0.
// Thread-safety: lock-free atomics; Snapshot() may see a move half done.
class ClvDistribution {
 public:
  // 0, 1, 2, 5, 10, 20, 50, ... 100,000 (a 1-2-5 series).
  static std::vector<double> DefaultEdges();
  // Counts are kept per input partition 0..partition_slots-1 (a user of
  // another or unknown partition, -1, is always counted), so that Collect
  // can count only some partitions (the owned ones).
  explicit ClvDistribution(std::vector<double> edges = DefaultEdges(), int32_t partition_slots = 0);

  // A user's CLV changed from `previous` (nullopt: a user not counted yet)
  // to `current`, the user being of input partition `partition`.
  void Move(std::optional<double> previous, double current, int32_t partition = -1);
  // A user of `partition` counted at `clv` is gone.
  void Remove(double clv, int32_t partition = -1);

  struct Snapshot {
    std::vector<double> edges;
    std::vector<int64_t> counts;  // same length as edges
  };
  // The users of the partitions `include` accepts (empty: all).
  Snapshot Collect(const std::function<bool(int32_t partition)>& include = {}) const;
  // {"edges":[...],"counts":[...]} (the clv_histogram of /api/summary).
  std::string ToJson(const std::function<bool(int32_t partition)>& include = {}) const;

 private:
  size_t Bucket(double clv) const;
  // Slot 0: partitions unknown or past the slots; p + 1 for partition p.
  size_t Slot(int32_t partition) const;

  const std::vector<double> edges_;
  const int32_t partition_slots_;
  std::unique_ptr<std::atomic<int64_t>[]> counts_;  // slot * edges + bucket
};

}  // namespace clv::stream
