// Small, allocation-light helpers for writing JSON text by hand on the hot
// path (scores, alerts, dead letters), where output must be byte-stable.
#pragma once

#include <string>
#include <string_view>

namespace clv::stream {

// Appends `value` as a JSON string literal (quotes, escapes, \u00XX for
// control characters). Bytes that are not valid UTF-8 are replaced by U+FFFD.
void AppendJsonString(std::string& out, std::string_view value);

bool IsValidUtf8(std::string_view bytes);

}  // namespace clv::stream
