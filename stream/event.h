// Events, as clvstream understands them after decoding, and the decoder.
//
// Contract: Decoder::Decode() turns the bytes of one Kafka message (or one
// JSONL line / CSV row converted to JSON) into an Event, using the field and
// type-name mapping from config. It never throws: on anything malformed it
// returns false with a one-line reason naming the field, e.g.
//   "field 'amount': must be > 0 for purchase, got -3"
// and the caller sends the original bytes to the dead-letter topic.
//
// Event ids: `event_id` when present, else a 64-bit hash of the message
// content, so an exact re-send is still recognised as a duplicate.
//
// Thread-safety: a Decoder is not thread-safe (it reuses a parser); use one
// per thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "models/scorer.h"

namespace clv::config {
struct MappingOptions;
struct ValidationOptions;
}  // namespace clv::config

namespace clv::stream {

using models::EventKind;

struct Event {
  std::string user_id;
  uint64_t event_id_hash = 0;
  EventKind kind = EventKind::kPageView;
  int64_t ts_ms = 0;
  double amount = 0;  // > 0 for purchase/refund, 0 otherwise
  std::string currency;
  std::string order_id;
  std::string product_id;
  std::string category;
  std::string session_id;
  int32_t items = 0;
  std::vector<std::pair<std::string, std::string>> attrs;  // profile events
};

class Decoder {
 public:
  Decoder(const config::MappingOptions& mapping, const config::ValidationOptions& validation);
  ~Decoder();
  Decoder(const Decoder&) = delete;
  Decoder& operator=(const Decoder&) = delete;

  // `now_ms` is the wall clock used for the "too far in the future" check.
  bool Decode(std::string_view bytes, int64_t now_ms, Event* event, std::string* reason);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// 64-bit FNV-1a, stable across platforms and versions (stored in state).
uint64_t StableHash64(std::string_view bytes);

}  // namespace clv::stream
