// UserState: everything clvstream keeps about one user, and its binary codec.
//
// Contract: Encode() writes a versioned, little-endian binary record; Decode()
// reads every version ever written (kUserStateVersion and older) and rejects
// corrupt input with an error instead of crashing. Encode(Decode(x)) == x for
// the current version (a rapidcheck property in tests/state_test.cpp).
//
// state/ may depend on config/ only, so the aggregates are a plain copy of the
// fields of models::History (stream/ copies between the two).
//
// Thread-safety: plain value type.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

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

// Same fields, same meaning as models::History.
struct Aggregates {
  int64_t first_event_ms = 0;
  int64_t last_event_ms = 0;
  int64_t first_purchase_ms = 0;
  int64_t last_purchase_ms = 0;
  uint32_t events = 0;
  uint32_t purchases = 0;
  uint32_t purchase_days = 0;
  uint32_t refunds = 0;
  uint32_t sessions = 0;
  uint32_t cart_adds = 0;
  uint32_t views = 0;
  uint32_t recent_activity = 0;
  double monetary_total = 0;
  double purchase_value_sum = 0;
  double log_value_sum = 0;
  double log_value_sq_sum = 0;
  double ewma_gap_days = 0;
  // Version 2 (version 1 records decode with 0: the features start counting
  // from the next session, and a decayed count of 0 only under-states).
  uint32_t sessions_since_purchase = 0;
  double session_days_after_purchase = 0;
  double recent_sessions = 0;
  bool operator==(const Aggregates&) const = default;
};

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
