// The one rule for user ids, shared by the stream decoder (stream/decoder.cpp:
// a message whose id breaks it goes to the dead-letter topic) and by
// GET /users/{id} (stream/http_api.cpp: 400), so every id the stream accepts
// can be read back over HTTP and no id HTTP refuses ever reaches the state.
//
// A user id is 1..kMaxUserIdBytes bytes of valid UTF-8 with
//   * no control characters: C0 (U+0000..U+001F, so no newline or tab),
//     DEL (U+007F) and C1 (U+0080..U+009F);
//   * at least one character that is not whitespace (ASCII space, U+00A0,
//     U+1680, U+2000..U+200B, U+2028, U+2029, U+202F, U+205F, U+3000, U+FEFF).
// Anything else is allowed and taken byte for byte, not trimmed or
// normalised: spaces inside, '/', '%', '?', '#', quotes and any Unicode text.
// (The decoder also takes a JSON integer user id as its decimal text, so
// 42 and "42" are one user; see docs/KAFKA.md, "Input events".)
//
// Example:
//   if (std::string why = clv::UserIdProblem(id); !why.empty()) {
//     reason = "field 'user_id': " + why;   // "must not contain control ..."
//   }
//
// Thread-safety: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/json_text.h"

namespace clv {

// Longest user id, in bytes (after percent-decoding, for HTTP).
inline constexpr size_t kMaxUserIdBytes = 256;

namespace user_id_detail {

// Code point of the valid UTF-8 sequence of `length` bytes at s[i].
inline uint32_t CodePoint(std::string_view s, size_t i, size_t length) {
  auto byte = [&](size_t k) { return static_cast<uint8_t>(s[i + k]); };
  if (length == 1) return byte(0);
  static constexpr uint8_t kLeadMask[] = {0, 0, 0x1F, 0x0F, 0x07};
  uint32_t code = byte(0) & kLeadMask[length];
  for (size_t k = 1; k < length; ++k) code = (code << 6) | (byte(k) & 0x3F);
  return code;
}

inline bool IsControl(uint32_t code) { return code < 0x20 || (code >= 0x7F && code <= 0x9F); }

inline bool IsWhitespace(uint32_t code) {
  return code == 0x20 || code == 0xA0 || code == 0x1680 || (code >= 0x2000 && code <= 0x200B) ||
         code == 0x2028 || code == 0x2029 || code == 0x202F || code == 0x205F || code == 0x3000 ||
         code == 0xFEFF;
}

inline std::string CodePointName(uint32_t code) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string name = "U+";
  for (int shift = 12; shift >= 0; shift -= 4) name += kHex[(code >> shift) & 0xF];
  return name;
}

}  // namespace user_id_detail

// Empty when `id` is a valid user id; else what is wrong, as a phrase that
// names the rule, e.g. "must not contain control characters (U+000A at byte
// 3)". Byte offsets are 0-based.
inline std::string UserIdProblem(std::string_view id) {
  using namespace user_id_detail;
  const std::string limit = "1.." + std::to_string(kMaxUserIdBytes) + " bytes";
  if (id.empty()) return "must not be empty (a user id is " + limit + ")";
  if (id.size() > kMaxUserIdBytes) {
    return "too long (" + std::to_string(id.size()) + " bytes; a user id is " + limit + ")";
  }
  bool only_whitespace = true;
  for (size_t i = 0; i < id.size();) {
    const size_t length = json_text_detail::Utf8SequenceLength(id, i);
    if (length == 0) {
      static constexpr char kHex[] = "0123456789ABCDEF";
      const auto byte = static_cast<uint8_t>(id[i]);
      return std::string("must be valid UTF-8 (byte 0x") + kHex[byte >> 4] + kHex[byte & 0xF] +
             " at " + std::to_string(i) + " is not)";
    }
    const uint32_t code = CodePoint(id, i, length);
    if (IsControl(code)) {
      return "must not contain control characters (" + CodePointName(code) + " at byte " +
             std::to_string(i) + ")";
    }
    only_whitespace = only_whitespace && IsWhitespace(code);
    i += length;
  }
  if (only_whitespace) return "must not be only whitespace";
  return "";
}

inline bool IsValidUserId(std::string_view id) { return UserIdProblem(id).empty(); }

}  // namespace clv
