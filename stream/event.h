// Events, as clvstream understands them after decoding (stream/decoder.h
// turns message bytes into them).
//
// Event ids: `event_id` when present, else a 64-bit hash of the message
// content, so an exact re-send is still recognised as a duplicate.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/hash.h"
#include "models/scorer.h"

namespace clv::stream {

using models::EventKind;

struct Event {
  std::string user_id;
  uint64_t event_id_hash = 0;
  // True when the message carried an event id; false when event_id_hash is
  // the hash of the message bytes (file loaders then use the file's row id).
  bool event_id_given = false;
  EventKind kind = EventKind::kPageView;
  int64_t ts_ms = 0;
  double amount = 0;  // >= 0 for purchase, > 0 for refund, 0 otherwise
  std::string currency;
  std::string order_id;
  std::string product_id;
  std::string category;
  std::string session_id;
  int32_t items = 0;
  std::vector<std::pair<std::string, std::string>> attrs;  // profile events
};

// 64-bit FNV-1a, stable across platforms and versions (stored in state).
inline uint64_t StableHash64(std::string_view bytes) { return Fnv1a(bytes); }

}  // namespace clv::stream
