// UserState: everything clvstream keeps about one user, and its binary codec.
//
// Contract: Encode() writes a versioned, little-endian binary record; Decode()
// reads every version ever written (kUserStateVersion and older) and rejects
// corrupt input with an error instead of crashing. Encode(Decode(x)) == x for
// the current version (a rapidcheck property in tests/state_test.cpp).
//
// The aggregates are the type models/ folds events into (common/aggregates.h):
// state/ depends on config/ and common/ only.
//
// Thread-safety: plain value type.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/aggregates.h"

namespace clv::state {

inline constexpr uint8_t kUserStateVersion = 2;

// Lifecycle stage (DESIGN.md). Stored: append only.
enum class Stage : uint8_t {
  kPotential = 0,  // events but no purchase
  kNew = 1,        // first purchase
  kActive = 2,     // repeat buyer, recent
  kAtRisk = 3,     // quiet longer than expected, or churn risk high
  kDormant = 4,    // quiet for long
  kReturning = 5,  // bought again after dormant
};
const char* StageName(Stage stage);

// The running aggregates (common/aggregates.h), shared with models::History.
using Aggregates = ::clv::Aggregates;

struct UserState {
  // Per-user update counter: +1 for every event folded in and every timer
  // re-score. (user_id, seq) names exactly one score.
  uint64_t seq = 0;
  Aggregates aggregates;
  Stage stage = Stage::kPotential;
  // Last published score.
  double clv = 0;
  double p_purchase = 0;
  double churn_risk = 0;
  int64_t score_ts_ms = 0;  // event time the score refers to
  // Stream time at which the timer re-scores this user (0 = none).
  int64_t next_timer_ms = 0;
  // Input partition the user's events come from (timers belong to it).
  int32_t partition = -1;
  // Hashes of the most recent event ids, oldest first (dedup window).
  std::vector<uint64_t> recent_event_ids;
  // Recurrent model state (LSTM h then c), stored as fp16 when
  // `fp16` is true, else as float32. Empty for stateless scorers.
  bool fp16 = true;
  std::vector<float> model_state;
  // Profile attributes (country, channel, tier, ...), sorted by key.
  std::vector<std::pair<std::string, std::string>> attrs;
  bool operator==(const UserState&) const = default;
};

// Appends the encoding of `state` to `out`.
void Encode(const UserState& state, std::string* out);
// Decodes; returns false and sets *error (never throws) on bad input.
bool Decode(std::string_view bytes, UserState* state, std::string* error);

}  // namespace clv::state
