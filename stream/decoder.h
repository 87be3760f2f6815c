// Decoder: message bytes -> Event (stream/event.h), through the mapping.
//
// Contract: Decoder::Decode() turns the bytes of one Kafka message (or one
// JSONL line / CSV row converted to JSON) into an Event, using the field and
// type-name mapping from config. It never throws: on anything malformed it
// returns false with a one-line reason naming the field, e.g.
//   "field 'amount': must be >= 0 for purchase, got -3 (negative: ...)"
// and the caller sends the original bytes to the dead-letter topic.
//
// Without a value column (mapping.amount_field "") a purchase is worth 1
// (scores then count purchases) and a refund is rejected.
//
// Event ids: `event_id` when present, else a 64-bit hash of the message
// content, so an exact re-send is still recognised as a duplicate
// (Event::event_id_given tells which; file loaders then use the row's id).
//
// Thread-safety: a Decoder is not thread-safe (it reuses a parser); use one
// per thread.
#pragma once

#include <memory>
#include <string>
#include <string_view>

#include "stream/event.h"

namespace clv::config {
struct MappingOptions;
struct ValidationOptions;
}  // namespace clv::config

namespace clv::stream {

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

}  // namespace clv::stream
