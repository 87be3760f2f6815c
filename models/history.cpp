// UpdateHistory(): the single fold of one event into a user's aggregates
// (models/scorer.h). Used by training, evaluation and the service alike, so it
// must stay deterministic and cheap (a handful of integer and float ops).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>

#include "common/hash.h"
#include "common/units.h"
#include "models/scorer.h"

namespace clv::models {

namespace {

// A gap between two events longer than this starts a new session.
constexpr int64_t kSessionGapMs = 30LL * 60 * 1000;
// Weight of the newest gap in ewma_gap_days (the older mean keeps 1 - this).
constexpr double kGapEwmaWeight = 0.3;

// UTC day number (floor division, so times before 1970 also land right).
int64_t DayOf(int64_t ts_ms) { return FloorDiv(ts_ms, kMsPerDay); }

void FoldPurchaseDay(History& history, int64_t ts_ms) {
  if (history.purchases == 1) {  // this is the first purchase
    history.first_purchase_ms = ts_ms;
    history.last_purchase_ms = ts_ms;
    history.purchase_days = 1;
    return;
  }
  const int64_t day = DayOf(ts_ms);
  const int64_t last_day = DayOf(history.last_purchase_ms);
  const int64_t first_day = DayOf(history.first_purchase_ms);
  if (day > last_day) {
    // A new purchase day after the last one: the usual, in-order case.
    const double gap_days = static_cast<double>(day - last_day);
    history.ewma_gap_days =
        history.purchase_days == 1
            ? gap_days
            : kGapEwmaWeight * gap_days + (1 - kGapEwmaWeight) * history.ewma_gap_days;
    ++history.purchase_days;
    history.last_purchase_ms = ts_ms;
  } else if (day != last_day && day != first_day) {
    // A late event on an earlier day. Without the full list of days we count
    // it as a new day unless it hits the first or last one; the gap mean is
    // left alone (it describes the in-order rhythm).
    ++history.purchase_days;
    history.first_purchase_ms = std::min(history.first_purchase_ms, ts_ms);
  } else {
    // Same day as an existing purchase day: one more order on that day.
    history.first_purchase_ms = std::min(history.first_purchase_ms, ts_ms);
    history.last_purchase_ms = std::max(history.last_purchase_ms, ts_ms);
  }
}

}  // namespace

uint64_t AttrHash(std::string_view text) {
  const uint64_t hash = Fnv1a(text);
  return hash == 0 ? 1 : hash;
}

void MergeAttrEntries(AttrEntries& into, const AttrEntries& update) {
  for (const AttrEntry& entry : update) {
    if (entry.key_hash == 0) continue;
    auto it = std::find_if(into.begin(), into.end(), [&](const AttrEntry& e) {
      return e.key_hash == entry.key_hash || e.key_hash == 0;
    });
    if (it != into.end()) {
      *it = entry;
    } else if (entry.key_hash < into.back().key_hash) {
      into.back() = entry;  // full: keep the kMaxAttrs smallest key hashes
    } else {
      continue;
    }
    std::sort(into.begin(), into.end(), [](const AttrEntry& a, const AttrEntry& b) {
      // Empty slots (0) last.
      if ((a.key_hash == 0) != (b.key_hash == 0)) return b.key_hash == 0;
      return a.key_hash < b.key_hash;
    });
  }
}

AttrEntries MakeAttrEntries(const std::vector<std::pair<std::string, std::string>>& attrs) {
  AttrEntries entries{};
  for (const auto& [key, value] : attrs) {
    AttrEntries one{};
    one[0] = AttrEntry{AttrHash(key), AttrHash(key + "=" + value)};
    MergeAttrEntries(entries, one);
  }
  return entries;
}

bool HasAttrPair(const AttrEntries& entries, uint64_t pair_hash) {
  for (const AttrEntry& e : entries) {
    if (e.key_hash != 0 && e.pair_hash == pair_hash) return true;
  }
  return false;
}

void UpdateHistory(History& history, const StepEvent& event) {
  const int64_t ts = event.ts_ms;
  if (history.events == 0) {
    history.first_event_ms = ts;
    history.last_event_ms = ts;
    history.sessions = 1;
    history.recent_activity = 1;
    history.recent_sessions = 1;
  } else {
    if (ts - history.last_event_ms > kSessionGapMs) {
      ++history.sessions;
      history.recent_activity = 1;
      // Decay to this session's start, then count it.
      history.recent_sessions =
          history.recent_sessions * std::exp(-static_cast<double>(ts - history.last_event_ms) /
                                             (kRecentSessionsDays * kMsPerDay)) +
          1.0;
      if (history.purchases > 0 && ts > history.last_purchase_ms) {
        ++history.sessions_since_purchase;
        history.session_days_after_purchase +=
            static_cast<double>(ts - history.last_purchase_ms) / kMsPerDay;
      }
    } else {
      ++history.recent_activity;  // same session (late events included)
    }
    history.first_event_ms = std::min(history.first_event_ms, ts);
    history.last_event_ms = std::max(history.last_event_ms, ts);
  }
  ++history.events;

  switch (event.kind) {
    case EventKind::kPageView:
    case EventKind::kSearch: ++history.views; break;
    case EventKind::kAddToCart: ++history.cart_adds; break;
    case EventKind::kPurchase: {
      ++history.purchases;
      history.monetary_total += event.amount;
      history.purchase_value_sum += event.amount;
      if (event.amount > 0) {  // log sums skip zero-value orders (log 0)
        const double log_amount = std::log(event.amount);
        history.log_value_sum += log_amount;
        history.log_value_sq_sum += log_amount * log_amount;
      }
      // The newest purchase: browsing after it starts from zero (a late,
      // older purchase leaves the count alone).
      const bool newest = history.purchases == 1 || ts >= history.last_purchase_ms;
      FoldPurchaseDay(history, ts);
      if (newest) {
        history.sessions_since_purchase = 0;
        history.session_days_after_purchase = 0;
      }
      break;
    }
    case EventKind::kRefund:
      ++history.refunds;
      history.monetary_total -= event.amount;
      break;
    case EventKind::kRemoveFromCart:
    case EventKind::kWishlist:
    case EventKind::kAdClick: break;
    case EventKind::kProfile: MergeAttrEntries(history.attrs, event.attrs); break;
  }
}

}  // namespace clv::models
