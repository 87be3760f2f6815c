// UserState codec, version 2. Layout (all little-endian):
//
//   u8      version (kUserStateVersion)
//   varint  seq
//   zigzag  first_event_ms, last_event_ms, first_purchase_ms, last_purchase_ms
//   varint  events, purchases, purchase_days, refunds, sessions, cart_adds,
//           views, recent_activity
//   f64     monetary_total, purchase_value_sum, log_value_sum,
//           log_value_sq_sum, ewma_gap_days
//   varint  sessions_since_purchase          (version >= 2)
//   f64     session_days_after_purchase, recent_sessions   (version >= 2)
//   u8      stage
//   f64     clv, p_purchase, churn_risk
//   zigzag  score_ts_ms, next_timer_ms, partition
//   varint  n, then n x u64 recent_event_ids (hashes: fixed width is smaller)
//   u8      flags (bit 0: model_state is fp16)
//   varint  n, then n x (u16 half | f32) model_state
//   varint  n, then n x (varint len, key bytes, varint len, value bytes) attrs
//
// Decode reads through a bounds-checked Reader: every read checks the bytes
// left, counts are checked against the bytes left before anything is
// allocated, and the first failure names the field and its byte offset.
#include "state/user_state.h"

#include <bit>
#include <cstdint>
#include <string>
#include <type_traits>

#include "state/half.h"

namespace clv::state {
namespace {

constexpr uint8_t kFlagFp16 = 0x01;
constexpr uint8_t kKnownFlags = kFlagFp16;
constexpr uint8_t kLastStage = static_cast<uint8_t>(Stage::kReturning);

// ---- writing ----

void PutVarint(uint64_t value, std::string* out) {
  while (value >= 0x80) {
    out->push_back(static_cast<char>((value & 0x7f) | 0x80));
    value >>= 7;
  }
  out->push_back(static_cast<char>(value));
}

uint64_t ZigZag(int64_t value) {
  return (static_cast<uint64_t>(value) << 1) ^ static_cast<uint64_t>(value >> 63);
}

int64_t UnZigZag(uint64_t value) {
  return static_cast<int64_t>(value >> 1) ^ -static_cast<int64_t>(value & 1);
}

void PutZigZag(int64_t value, std::string* out) { PutVarint(ZigZag(value), out); }

template <typename T>
void PutFixed(T value, std::string* out) {
  static_assert(std::is_unsigned_v<T>);
  for (size_t i = 0; i < sizeof(T); ++i) {
    out->push_back(static_cast<char>(static_cast<uint8_t>(value >> (8 * i))));
  }
}

void PutDouble(double value, std::string* out) { PutFixed(std::bit_cast<uint64_t>(value), out); }

void PutString(std::string_view value, std::string* out) {
  PutVarint(value.size(), out);
  out->append(value);
}

// ---- reading ----

class Reader {
 public:
  explicit Reader(std::string_view bytes) : bytes_(bytes) {}

  size_t offset() const { return offset_; }
  size_t remaining() const { return bytes_.size() - offset_; }
  const std::string& error() const { return error_; }

  bool Fail(const char* field, const char* what) {
    if (error_.empty()) {
      error_ = "user state: bad ";
      error_ += field;
      error_ += " at byte offset " + std::to_string(offset_) + " of " +
                std::to_string(bytes_.size()) + ": " + what;
    }
    return false;
  }

  bool Varint(const char* field, uint64_t* value) {
    uint64_t result = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      if (offset_ >= bytes_.size()) return Fail(field, "truncated varint");
      const uint8_t byte = static_cast<uint8_t>(bytes_[offset_]);
      if (shift == 63 && byte > 1) return Fail(field, "varint overflows 64 bits");
      ++offset_;
      result |= static_cast<uint64_t>(byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) {
        *value = result;
        return true;
      }
    }
    return Fail(field, "varint longer than 10 bytes");
  }

  bool U32(const char* field, uint32_t* value) {
    const size_t start = offset_;
    uint64_t wide = 0;
    if (!Varint(field, &wide)) return false;
    if (wide > UINT32_MAX) {
      offset_ = start;
      return Fail(field, "value does not fit 32 bits");
    }
    *value = static_cast<uint32_t>(wide);
    return true;
  }

  bool ZigZag64(const char* field, int64_t* value) {
    uint64_t raw = 0;
    if (!Varint(field, &raw)) return false;
    *value = UnZigZag(raw);
    return true;
  }

  bool ZigZag32(const char* field, int32_t* value) {
    const size_t start = offset_;
    int64_t wide = 0;
    if (!ZigZag64(field, &wide)) return false;
    if (wide < INT32_MIN || wide > INT32_MAX) {
      offset_ = start;
      return Fail(field, "value does not fit 32 bits");
    }
    *value = static_cast<int32_t>(wide);
    return true;
  }

  template <typename T>
  bool Fixed(const char* field, T* value) {
    static_assert(std::is_unsigned_v<T>);
    if (remaining() < sizeof(T)) return Fail(field, "truncated");
    T result = 0;
    for (size_t i = 0; i < sizeof(T); ++i) {
      result |=
          static_cast<T>(static_cast<T>(static_cast<uint8_t>(bytes_[offset_ + i])) << (8 * i));
    }
    offset_ += sizeof(T);
    *value = result;
    return true;
  }

  bool Double(const char* field, double* value) {
    uint64_t raw = 0;
    if (!Fixed(field, &raw)) return false;
    *value = std::bit_cast<double>(raw);
    return true;
  }

  // A count of elements of at least `min_element_bytes` each: rejected before
  // any allocation when the rest of the input cannot hold that many.
  bool Count(const char* field, size_t min_element_bytes, size_t* count) {
    const size_t start = offset_;
    uint64_t raw = 0;
    if (!Varint(field, &raw)) return false;
    if (raw > remaining() / min_element_bytes) {
      offset_ = start;
      return Fail(field, "count larger than the bytes left");
    }
    *count = static_cast<size_t>(raw);
    return true;
  }

  bool String(const char* field, std::string* value) {
    size_t length = 0;
    if (!Count(field, 1, &length)) return false;
    value->assign(bytes_.substr(offset_, length));
    offset_ += length;
    return true;
  }

 private:
  std::string_view bytes_;
  size_t offset_ = 0;
  std::string error_;
};

}  // namespace

void Encode(const UserState& state, std::string* out) {
  out->reserve(out->size() + 160 + 8 * state.recent_event_ids.size() +
               (state.fp16 ? 2 : 4) * state.model_state.size());
  out->push_back(static_cast<char>(kUserStateVersion));
  PutVarint(state.seq, out);

  const Aggregates& a = state.aggregates;
  PutZigZag(a.first_event_ms, out);
  PutZigZag(a.last_event_ms, out);
  PutZigZag(a.first_purchase_ms, out);
  PutZigZag(a.last_purchase_ms, out);
  for (uint32_t counter : {a.events, a.purchases, a.purchase_days, a.refunds, a.sessions,
                           a.cart_adds, a.views, a.recent_activity}) {
    PutVarint(counter, out);
  }
  for (double sum : {a.monetary_total, a.purchase_value_sum, a.log_value_sum, a.log_value_sq_sum,
                     a.ewma_gap_days}) {
    PutDouble(sum, out);
  }
  PutVarint(a.sessions_since_purchase, out);
  PutDouble(a.session_days_after_purchase, out);
  PutDouble(a.recent_sessions, out);

  out->push_back(static_cast<char>(state.stage));
  PutDouble(state.clv, out);
  PutDouble(state.p_purchase, out);
  PutDouble(state.churn_risk, out);
  PutZigZag(state.score_ts_ms, out);
  PutZigZag(state.next_timer_ms, out);
  PutZigZag(state.partition, out);

  PutVarint(state.recent_event_ids.size(), out);
  for (uint64_t id : state.recent_event_ids) PutFixed(id, out);

  out->push_back(static_cast<char>(state.fp16 ? kFlagFp16 : 0));
  PutVarint(state.model_state.size(), out);
  for (float value : state.model_state) {
    if (state.fp16) {
      PutFixed(FloatToHalf(value), out);
    } else {
      PutFixed(std::bit_cast<uint32_t>(value), out);
    }
  }

  PutVarint(state.attrs.size(), out);
  for (const auto& [key, value] : state.attrs) {
    PutString(key, out);
    PutString(value, out);
  }
}

bool Decode(std::string_view bytes, UserState* state, std::string* error) {
  Reader in(bytes);
  UserState result;
  auto failed = [&]() {
    if (error != nullptr) *error = in.error();
    return false;
  };

  uint8_t version = 0;
  if (!in.Fixed("version", &version)) return failed();
  if (version == 0 || version > kUserStateVersion) {
    if (error != nullptr) {
      *error = "user state: unsupported version " + std::to_string(version) +
               " at byte offset 0 (this build reads 1.." + std::to_string(kUserStateVersion) +
               (version > kUserStateVersion ? "; written by a newer clvstream?)" : ")");
    }
    return false;
  }
  if (!in.Varint("seq", &result.seq)) return failed();

  Aggregates& a = result.aggregates;
  if (!in.ZigZag64("aggregates.first_event_ms", &a.first_event_ms) ||
      !in.ZigZag64("aggregates.last_event_ms", &a.last_event_ms) ||
      !in.ZigZag64("aggregates.first_purchase_ms", &a.first_purchase_ms) ||
      !in.ZigZag64("aggregates.last_purchase_ms", &a.last_purchase_ms) ||
      !in.U32("aggregates.events", &a.events) || !in.U32("aggregates.purchases", &a.purchases) ||
      !in.U32("aggregates.purchase_days", &a.purchase_days) ||
      !in.U32("aggregates.refunds", &a.refunds) || !in.U32("aggregates.sessions", &a.sessions) ||
      !in.U32("aggregates.cart_adds", &a.cart_adds) || !in.U32("aggregates.views", &a.views) ||
      !in.U32("aggregates.recent_activity", &a.recent_activity) ||
      !in.Double("aggregates.monetary_total", &a.monetary_total) ||
      !in.Double("aggregates.purchase_value_sum", &a.purchase_value_sum) ||
      !in.Double("aggregates.log_value_sum", &a.log_value_sum) ||
      !in.Double("aggregates.log_value_sq_sum", &a.log_value_sq_sum) ||
      !in.Double("aggregates.ewma_gap_days", &a.ewma_gap_days)) {
    return failed();
  }
  if (version >= 2 &&
      (!in.U32("aggregates.sessions_since_purchase", &a.sessions_since_purchase) ||
       !in.Double("aggregates.session_days_after_purchase", &a.session_days_after_purchase) ||
       !in.Double("aggregates.recent_sessions", &a.recent_sessions))) {
    return failed();
  }

  uint8_t stage = 0;
  if (!in.Fixed("stage", &stage)) return failed();
  if (stage > kLastStage) {
    if (error != nullptr) {
      *error = "user state: bad stage at byte offset " + std::to_string(in.offset() - 1) +
               ": unknown value " + std::to_string(stage);
    }
    return false;
  }
  result.stage = static_cast<Stage>(stage);

  if (!in.Double("clv", &result.clv) || !in.Double("p_purchase", &result.p_purchase) ||
      !in.Double("churn_risk", &result.churn_risk) ||
      !in.ZigZag64("score_ts_ms", &result.score_ts_ms) ||
      !in.ZigZag64("next_timer_ms", &result.next_timer_ms) ||
      !in.ZigZag32("partition", &result.partition)) {
    return failed();
  }

  size_t count = 0;
  if (!in.Count("recent_event_ids", sizeof(uint64_t), &count)) return failed();
  result.recent_event_ids.resize(count);
  for (uint64_t& id : result.recent_event_ids) {
    if (!in.Fixed("recent_event_ids", &id)) return failed();
  }

  uint8_t flags = 0;
  if (!in.Fixed("flags", &flags)) return failed();
  if ((flags & ~kKnownFlags) != 0) {
    if (error != nullptr) {
      *error = "user state: bad flags at byte offset " + std::to_string(in.offset() - 1) +
               ": unknown bits in " + std::to_string(flags);
    }
    return false;
  }
  result.fp16 = (flags & kFlagFp16) != 0;
  if (!in.Count("model_state", result.fp16 ? 2 : 4, &count)) return failed();
  result.model_state.resize(count);
  for (float& value : result.model_state) {
    if (result.fp16) {
      uint16_t half = 0;
      if (!in.Fixed("model_state", &half)) return failed();
      value = HalfToFloat(half);
    } else {
      uint32_t raw = 0;
      if (!in.Fixed("model_state", &raw)) return failed();
      value = std::bit_cast<float>(raw);
    }
  }

  // Each attribute takes at least two length bytes.
  if (!in.Count("attrs", 2, &count)) return failed();
  result.attrs.resize(count);
  for (auto& [key, value] : result.attrs) {
    if (!in.String("attrs key", &key) || !in.String("attrs value", &value)) return failed();
  }

  if (in.remaining() != 0) {
    if (error != nullptr) {
      *error = "user state: " + std::to_string(in.remaining()) +
               " unexpected trailing bytes at byte offset " + std::to_string(in.offset());
    }
    return false;
  }
  *state = std::move(result);
  return true;
}

}  // namespace clv::state
