// Scorers: turn a user's history into a live CLV score, one event at a time.
//
// Contract:
//  * `History` is everything a scorer may know about a user besides its own
//    recurrent state: running aggregates maintained by UpdateHistory(), the
//    single implementation used by training, evaluation and the service.
//  * A Scorer is stateless between calls; per-user recurrent state (the LSTM's
//    h and c) is passed in and out by the caller, who stores it (RocksDB).
//  * Step() advances every user of the batch by exactly one event. The caller
//    stacks users so one call serves thousands; a user with k events in a
//    micro-batch takes part in k successive calls, in event order.
//  * Rescore() re-evaluates users at a later time without an event (the
//    stream-time timer for quiet users): the recurrent state does not change.
//  * Outputs are a deterministic function of the inputs on CPU: the same input
//    gives byte-identical scores.
//  * top_factors cost more than the score itself (the baseline re-evaluates
//    its series once per factor, the LSTM runs a backward pass), so they are
//    computed only for inputs with want_factors set; the others get empty
//    top_factors and the same bits in every other output. A caller that
//    learns later that it needs the factors of an unexplained step calls
//    Step() again on a copy of the state as it was before that step (and
//    Rescore() again with the same input): the same input, so the same bits.
//
// Thread-safety: Step/Rescore may be called from one thread at a time.
//
// Example:
//   auto scorer = models::LoadScorer(config.model, &error);
//   models::History history;                       // from UserState
//   models::UpdateHistory(history, event);         // fold the event in
//   std::vector<float> state(scorer->state_size()); // from UserState
//   models::StepInput in{&history_before, &history, event, state.data()};
//   models::Score out;
//   scorer->Step({&in, 1}, {&out, 1});
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/aggregates.h"
#include "common/event_kind.h"

namespace clv::config {
struct ModelOptions;
}

namespace clv::models {

// The event vocabulary lives in common/event_kind.h (sim/ and stream/ use it too).
using clv::EventKind;
using clv::EventKindName;
using clv::kEventKindCount;
using clv::ParseEventKind;

// Profile attributes as a scorer sees them: up to kMaxAttrs (key, value)
// pairs as hashes (AttrHash of "key" and of "key=value"), sorted by key_hash,
// empty slots (key_hash 0) at the end. Fixed size, plain data, O(1) to copy.
inline constexpr int kMaxAttrs = 8;
struct AttrEntry {
  uint64_t key_hash = 0;  // 0 = empty slot
  uint64_t pair_hash = 0;
};
using AttrEntries = std::array<AttrEntry, kMaxAttrs>;
// 64-bit FNV-1a of `text`, never 0 (stable across builds and machines).
uint64_t AttrHash(std::string_view text);
// Entries of (key, value) pairs (any order; a repeated key keeps the last
// value; beyond kMaxAttrs distinct keys the largest key hashes are dropped).
AttrEntries MakeAttrEntries(const std::vector<std::pair<std::string, std::string>>& attrs);
// Merges `update` into `into` (replace by key_hash), keeps the sort order.
void MergeAttrEntries(AttrEntries& into, const AttrEntries& update);
// Whether `entries` holds the pair with hash `pair_hash`.
bool HasAttrPair(const AttrEntries& entries, uint64_t pair_hash);

// What a scorer sees of one event.
struct StepEvent {
  EventKind kind = EventKind::kPageView;
  int64_t ts_ms = 0;
  double amount = 0;    // > 0 for purchase and refund, else 0
  AttrEntries attrs{};  // profile events only: the attributes they set
};

// Time constant of History::recent_sessions (days).
inline constexpr double kRecentSessionsDays = 14.0;

// Running per-user aggregates (common/aggregates.h, the type UserState
// stores) and the user's current profile attributes.
struct History : Aggregates {
  AttrEntries attrs{};
};

// Folds one event into the aggregates (a profile event's attrs are merged
// into history.attrs). The single implementation used for training,
// evaluation and serving.
void UpdateHistory(History& history, const StepEvent& event);

// One input that moved the score, with its signed contribution (same unit as clv).
struct Factor {
  std::array<char, 24> name{};  // NUL-terminated feature name
  float contribution = 0;
};

struct Score {
  double clv = 0;                 // expected spend over the horizon
  double p_purchase = 0;          // probability of any purchase in the horizon
  double churn_risk = 0;          // probability the user is no longer active
  double expected_purchases = 0;  // expected purchases in the horizon
  double expected_order_value = 0;
  std::array<Factor, 3> top_factors{};
};

struct StepInput {
  const History* before = nullptr;  // aggregates before the event
  const History* after = nullptr;   // aggregates after UpdateHistory(event)
  StepEvent event;
  float* state = nullptr;    // state_size() floats, in/out (may be null if 0)
  bool want_factors = true;  // false: top_factors left empty (cheaper)
};

struct RescoreInput {
  const History* history = nullptr;
  int64_t now_ms = 0;            // the time the user is scored at
  const float* state = nullptr;  // state_size() floats (read only)
  bool want_factors = true;      // false: top_factors left empty (cheaper)
};

class Scorer {
 public:
  virtual ~Scorer() = default;
  // Model name and version id, e.g. "bgnbd-gg/2f3a9c".
  virtual std::string version() const = 0;
  // Floats of recurrent state per user (0 for stateless scorers).
  virtual int state_size() const = 0;
  // Initial recurrent state for a new user, written to `state`.
  virtual void InitState(float* state) const;
  virtual void Step(std::span<const StepInput> inputs, std::span<Score> outputs) = 0;
  virtual void Rescore(std::span<const RescoreInput> inputs, std::span<Score> outputs) = 0;
  // Another scorer of the same model, for another thread: Step() and Rescore()
  // of the two may run at the same time, and give the same bits for the same
  // input. Null where the scorer cannot be copied that way (the caller then
  // runs this one on one thread).
  virtual std::unique_ptr<Scorer> Clone() const { return nullptr; }
};

// Loads the scorer named by options.scorer from options.path (or the shipped
// default). Returns null and sets *error on failure.
std::unique_ptr<Scorer> LoadScorer(const config::ModelOptions& options, std::string* error);

}  // namespace clv::models
