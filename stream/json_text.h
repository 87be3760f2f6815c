// JSON text for the stream's outputs: the helpers of common/json_text.h under
// stream/ names, and JsonObjectWriter for byte-stable objects (alerts).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "common/json_text.h"

namespace clv::stream {

using clv::AppendJsonString;
using clv::IsValidUtf8;

// Appends one JSON object to `out`, fields in the order written:
//   JsonObjectWriter(out).String("kind", kind).Fixed("amount", 12.5, 2).Close();
// gives {"kind":"...","amount":12.50}. Numbers are printf-formatted, so the
// bytes are stable; a non-finite number is written as null (never NaN).
class JsonObjectWriter {
 public:
  explicit JsonObjectWriter(std::string& out);
  JsonObjectWriter& String(std::string_view key, std::string_view value);
  // `value` with exactly `decimals` digits after the point (printf %.Nf).
  JsonObjectWriter& Fixed(std::string_view key, double value, int decimals);
  JsonObjectWriter& Int(std::string_view key, int64_t value);
  JsonObjectWriter& UInt(std::string_view key, uint64_t value);
  // `json` must already be JSON text (an object, a number, null, ...).
  JsonObjectWriter& Raw(std::string_view key, std::string_view json);
  void Close();

 private:
  void Key(std::string_view key);
  std::string& out_;
  bool first_ = true;
};

}  // namespace clv::stream
