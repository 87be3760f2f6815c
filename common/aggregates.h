// Aggregates: the running per-user aggregates, one type for every layer.
//
// Contract: plain data. models::UpdateHistory() is the single implementation
// that folds an event in (models::History adds the profile attributes);
// state::UserState stores it and its codec writes every field (append new
// fields at the end, with a new state version). Layers pass it around as is:
// nothing copies it field by field.
//
// Thread-safety: plain value type.
#pragma once

#include <cstdint>

namespace clv {

struct Aggregates {
  int64_t first_event_ms = 0;  // 0 = no event yet
  int64_t last_event_ms = 0;
  int64_t first_purchase_ms = 0;  // 0 = never purchased
  int64_t last_purchase_ms = 0;
  uint32_t events = 0;
  uint32_t purchases = 0;      // purchase events (BG/NBD frequency = purchase days - 1)
  uint32_t purchase_days = 0;  // distinct days with a purchase (BG/NBD counts days)
  uint32_t refunds = 0;
  uint32_t sessions = 0;  // gaps > 30 min start a new session
  uint32_t cart_adds = 0;
  uint32_t views = 0;             // page views + searches
  uint32_t recent_activity = 0;   // events in the current session
  double monetary_total = 0;      // purchases minus refunds
  double purchase_value_sum = 0;  // sum of purchase amounts (gross)
  double log_value_sum = 0;       // sum of log(amount) over purchases
  double log_value_sq_sum = 0;    // sum of log(amount)^2 over purchases
  double ewma_gap_days = 0;       // exponentially weighted mean gap between purchase days
  // Browsing since the last purchase: sessions started after it and the sum
  // of their start times' days after it (is the buyer still browsing?).
  // State version 2 (version 1 records decode with 0: the features start
  // counting from the next session, and a decayed count of 0 only under-states).
  uint32_t sessions_since_purchase = 0;
  double session_days_after_purchase = 0;
  // Recent browsing intensity: at each session start the count decays by
  // exp(-days since the previous event / models::kRecentSessionsDays) and adds
  // 1; features decay it on from last_event_ms to `now` (so it fades when a
  // user stops; the minutes inside a session are not decayed).
  double recent_sessions = 0;
  bool operator==(const Aggregates&) const = default;
};

}  // namespace clv
