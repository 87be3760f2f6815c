// JsonObjectWriter (stream/json_text.h).
#include "stream/json_text.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>

namespace clv::stream {

JsonObjectWriter::JsonObjectWriter(std::string& out) : out_(out) { out_ += '{'; }

void JsonObjectWriter::Key(std::string_view key) {
  if (!first_) out_ += ',';
  first_ = false;
  AppendJsonString(out_, key);
  out_ += ':';
}

JsonObjectWriter& JsonObjectWriter::String(std::string_view key, std::string_view value) {
  Key(key);
  AppendJsonString(out_, value);
  return *this;
}

JsonObjectWriter& JsonObjectWriter::Fixed(std::string_view key, double value, int decimals) {
  Key(key);
  if (!std::isfinite(value)) {
    out_ += "null";
    return *this;
  }
  // The largest double has 309 digits before the point.
  char buffer[400];
  const int n = std::snprintf(buffer, sizeof buffer, "%.*f", std::clamp(decimals, 0, 17), value);
  out_.append(buffer, static_cast<size_t>(std::clamp(n, 0, static_cast<int>(sizeof buffer) - 1)));
  return *this;
}

JsonObjectWriter& JsonObjectWriter::Int(std::string_view key, int64_t value) {
  Key(key);
  out_ += std::to_string(value);
  return *this;
}

JsonObjectWriter& JsonObjectWriter::UInt(std::string_view key, uint64_t value) {
  Key(key);
  out_ += std::to_string(value);
  return *this;
}

JsonObjectWriter& JsonObjectWriter::Raw(std::string_view key, std::string_view json) {
  Key(key);
  out_ += json;
  return *this;
}

void JsonObjectWriter::Close() { out_ += '}'; }

}  // namespace clv::stream
