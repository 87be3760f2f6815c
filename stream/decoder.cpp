// Decoder: one JSON message -> Event, validated (contract in stream/decoder.h).
//
// Parsing uses simdjson's DOM parser rather than On-Demand: the DOM parser
// validates the whole document (structure, every scalar, UTF-8, trailing
// bytes) before we look at a field, so a truncated or malformed message can
// never be half-accepted because the broken part sat in a field we skipped.
// For our ~200-byte messages it still decodes millions of events per second
// on one core (bench/decoder_bench.cpp).
//
// Decisions a user may notice (also in the header of tests/decoder_test.cpp):
//  * user_id may be a JSON integer (real exports such as CDNOW use numeric
//    customer ids); it becomes its decimal string, so 42 and "42" are the same
//    user. A non-integral number (1.5, 1e3) is rejected. String or number,
//    the id must then pass the one user-id rule (common/user_id.h): 1..256
//    bytes, no control characters, not only whitespace; HTTP /users/{id}
//    applies the same rule.
//  * amount may be a JSON number or a numeric string ("12.5", as CSV exports
//    and some shop APIs write it): a strict decimal (optional '-', digits,
//    fraction, exponent; surrounding spaces ignored), no "NaN", "Infinity",
//    hex, '+' or thousands separators.
//  * NaN, Infinity and -Infinity tokens are not JSON: the reason says so and
//    gives the byte offset, instead of simdjson's generic parse error.
//  * event_id may be a string or an integer (same decimal rule); the id hash
//    is StableHash64 of that text. Without an event_id the hash covers the
//    whole message bytes, so only a byte-identical re-send is a duplicate.
//  * null counts as absent for every field.
//  * A known field that appears twice in one object is rejected (ambiguous).
//  * mapping.amount_field "" means the data has no value column (purchase
//    counts only, e.g. ../shared/data/grocery): every purchase is worth 1
//    (one unit, so scores and spend count purchases) and a refund, which
//    has no meaning without a value, is rejected. With a value column a
//    purchase without an amount is rejected as before, and the reason names
//    the way out.
//  * amount is only kept for purchase and refund; on other types it is
//    checked for type and then ignored. A purchase of 0 is a purchase worth
//    0; a refund must be > 0. A negative amount is rejected, unless
//    mapping.negative_amount_is_refund: then it is a refund of |amount|.
//  * ts "auto": numbers and numeric strings are epoch seconds below 1e11 and
//    epoch milliseconds from 1e11 on; other strings are RFC 3339 / ISO 8601
//    ("2026-01-02", "2026-01-02T03:04:05Z", fraction, "+02:00"/"+0200";
//    no offset = UTC). A compact date like 20260102 needs ts_format "%Y%m%d".
//  * ts_format patterns support %Y %m %d %e %H %M %S %z %y %F %T %s %% and
//    literals; whitespace in the pattern matches any run of whitespace; a
//    fraction directly after %S is accepted. No locale is involved.
//  * attrs: object of scalars. Strings stay as they are, numbers are written
//    as in the input, booleans as "true"/"false", null entries are dropped;
//    at most 64 entries, keys up to 128 bytes, values up to 1024 bytes.
#include "stream/decoder.h"

#include <simdjson.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <map>
#include <string>

#include "common/time.h"
#include "common/user_id.h"
#include "config/config.h"
#include "stream/event.h"

namespace clv::stream {

namespace {

using simdjson::dom::element;
using simdjson::dom::element_type;

constexpr size_t kMaxIdBytes = 256;  // event_id, order_id, product_id, session_id
constexpr size_t kMaxCategoryBytes = 256;
constexpr size_t kMaxCurrencyBytes = 16;
constexpr size_t kMaxAttrs = 64;
constexpr size_t kMaxAttrKeyBytes = 128;
constexpr size_t kMaxAttrValueBytes = 1024;
constexpr size_t kSnippetBytes = 40;  // input bytes quoted in a reason, at most
constexpr double kAutoSecondsBelow = 1e11;
constexpr double kMaxAbsTsMs = 1e16;  // far outside any accepted range, fits int64

enum class Field : uint8_t {
  kEventId,
  kUserId,
  kType,
  kTs,
  kAmount,
  kCurrency,
  kOrderId,
  kItems,
  kProductId,
  kCategory,
  kSessionId,
  kAttrs,
};
constexpr size_t kFieldCount = 12;

enum class TsMode : uint8_t { kAuto, kEpochS, kEpochMs, kRfc3339, kPattern };

// ---------------------------------------------------------------- reasons --

// Appends at most kSnippetBytes of `text`, cut on a UTF-8 boundary, with
// control characters, quotes and backslashes escaped, so a reason stays one
// short line whatever the input holds.
void AppendSnippet(std::string& out, std::string_view text) {
  size_t cut = text.size();
  bool truncated = false;
  if (cut > kSnippetBytes) {
    cut = kSnippetBytes;
    while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
    truncated = true;
  }
  out += '\'';
  for (size_t i = 0; i < cut; ++i) {
    auto byte = static_cast<unsigned char>(text[i]);
    if (byte == '\'' || byte == '\\') {
      out += '\\';
      out += static_cast<char>(byte);
    } else if (byte < 0x20 || byte == 0x7F) {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[byte >> 4];
      out += kHex[byte & 0xF];
    } else {
      out += static_cast<char>(byte);
    }
  }
  out += '\'';
  if (truncated) out += "...";
}

void AppendNumber(std::string& out, double value) {
  std::array<char, 32> buffer{};
  auto [end, ec] = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  if (ec == std::errc()) out.append(buffer.data(), end);
}

template <typename Int>
void AppendInt(std::string& out, Int value) {
  std::array<char, 24> buffer{};
  auto [end, ec] = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  if (ec == std::errc()) out.append(buffer.data(), end);
}

// "a string 'abc'", "the number 1.5", "an array", ...
void AppendDescription(std::string& out, element value) {
  switch (value.type()) {
    case element_type::STRING: {
      std::string_view text;
      if (!value.get_string().get(text)) {
        out += "a string ";
        AppendSnippet(out, text);
      } else {
        out += "a string";
      }
      return;
    }
    case element_type::INT64: {
      int64_t number = 0;
      if (!value.get_int64().get(number)) {
        out += "the number ";
        AppendInt(out, number);
      }
      return;
    }
    case element_type::UINT64: {
      uint64_t number = 0;
      if (!value.get_uint64().get(number)) {
        out += "the number ";
        AppendInt(out, number);
      }
      return;
    }
    case element_type::DOUBLE: {
      double number = 0;
      if (!value.get_double().get(number)) {
        out += "the number ";
        AppendNumber(out, number);
      }
      return;
    }
    case element_type::BOOL: {
      bool flag = false;
      out += (!value.get_bool().get(flag) && flag) ? "true" : "false";
      return;
    }
    case element_type::NULL_VALUE: out += "null"; return;
    case element_type::ARRAY: out += "an array"; return;
    case element_type::OBJECT: out += "an object"; return;
  }
}

bool IsNumber(element value) {
  auto type = value.type();
  return type == element_type::INT64 || type == element_type::UINT64 ||
         type == element_type::DOUBLE;
}

// ---------------------------------------------------------------- numbers --

// Strict decimal number: optional '-', digits, optional fraction and
// exponent, surrounding ASCII spaces allowed. No "nan", "inf", hex, '+'.
bool ParseNumericString(std::string_view text, double* value) {
  while (!text.empty() && text.front() == ' ') text.remove_prefix(1);
  while (!text.empty() && text.back() == ' ') text.remove_suffix(1);
  if (text.empty()) return false;
  size_t i = text.front() == '-' ? 1 : 0;
  if (i >= text.size() || !((text[i] >= '0' && text[i] <= '9') || text[i] == '.')) return false;
  double parsed = 0;
  auto [end, ec] =
      std::from_chars(text.data(), text.data() + text.size(), parsed, std::chars_format::general);
  if (ec != std::errc() || end != text.data() + text.size() || !std::isfinite(parsed)) {
    return false;
  }
  *value = parsed;
  return true;
}

// A NaN or Infinity token (any case, "inf" too, with an optional sign) outside
// JSON strings: what Python's json.dumps and printf("%f") write for
// non-finite floats. Sets the token as written and its 0-based byte offset.
bool FindNonFiniteToken(std::string_view bytes, std::string_view* token, size_t* offset) {
  auto is_letter = [](char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); };
  bool in_string = false;
  for (size_t i = 0; i < bytes.size(); ++i) {
    const char c = bytes[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
      continue;
    }
    if (c == '"') {
      in_string = true;
      continue;
    }
    const bool signed_word =
        (c == '-' || c == '+') && i + 1 < bytes.size() && is_letter(bytes[i + 1]);
    if (!is_letter(c) && !signed_word) continue;
    size_t end = signed_word ? i + 1 : i;
    while (end < bytes.size() && is_letter(bytes[end])) ++end;
    const std::string_view word = bytes.substr(i, end - i);
    std::string lower;
    for (char w : word.substr(signed_word ? 1 : 0)) {
      lower += static_cast<char>(w >= 'A' && w <= 'Z' ? w + 32 : w);
    }
    if (lower == "nan" || lower == "inf" || lower == "infinity") {
      *token = word;
      *offset = i;
      return true;
    }
    i = end - 1;
  }
  return false;
}

// ------------------------------------------------------------------- time --

using time_text::ReadDigits;
using time_text::ReadFraction;
using time_text::ReadOffset;

// strftime-style pattern, see the file comment for the directives.
bool ParsePattern(std::string_view pattern, std::string_view text, int64_t* ms, std::string* why) {
  CivilTime time;
  size_t pos = 0;
  bool have_epoch = false;
  int64_t epoch_seconds = 0;
  int64_t value = 0;
  auto fail = [&](std::string_view what) {
    why->assign("does not match ts_format ");
    AppendSnippet(*why, pattern);
    why->append(": ");
    why->append(what);
    return false;
  };
  auto read_field = [&](size_t min_digits, size_t max_digits, int64_t* out) {
    return ReadDigits(text, &pos, min_digits, max_digits, out);
  };
  for (size_t p = 0; p < pattern.size(); ++p) {
    char c = pattern[p];
    if (c == ' ' || c == '\t') {
      while (pos < text.size() && (text[pos] == ' ' || text[pos] == '\t')) ++pos;
      continue;
    }
    if (c != '%') {
      if (pos >= text.size() || text[pos] != c) return fail("literal mismatch");
      ++pos;
      continue;
    }
    if (++p >= pattern.size()) return fail("pattern ends with '%'");
    switch (pattern[p]) {
      case 'Y':
        if (!read_field(4, 4, &time.year)) return fail("bad %Y");
        break;
      case 'y':
        if (!read_field(2, 2, &value)) return fail("bad %y");
        time.year = value < 69 ? 2000 + value : 1900 + value;
        break;
      case 'm':
        if (!read_field(1, 2, &value)) return fail("bad %m");
        time.month = static_cast<int>(value);
        break;
      case 'd':
      case 'e':
        if (pattern[p] == 'e' && pos < text.size() && text[pos] == ' ') ++pos;
        if (!read_field(1, 2, &value)) return fail("bad %d");
        time.day = static_cast<int>(value);
        break;
      case 'H':
        if (!read_field(1, 2, &value)) return fail("bad %H");
        time.hour = static_cast<int>(value);
        break;
      case 'M':
        if (!read_field(1, 2, &value)) return fail("bad %M");
        time.minute = static_cast<int>(value);
        break;
      case 'S':
        if (!read_field(1, 2, &value)) return fail("bad %S");
        time.second = static_cast<int>(value);
        if (p + 1 >= pattern.size() || (pattern[p + 1] != '.' && pattern[p + 1] != ',')) {
          if (!ReadFraction(text, &pos, &time.millis)) return fail("bad fraction");
        }
        break;
      case 'z':
        if (!ReadOffset(text, &pos, &time.offset_seconds)) return fail("bad %z");
        break;
      case 'F':
        if (!read_field(4, 4, &time.year) || pos >= text.size() || text[pos++] != '-' ||
            !read_field(1, 2, &value)) {
          return fail("bad %F");
        }
        time.month = static_cast<int>(value);
        if (pos >= text.size() || text[pos++] != '-' || !read_field(1, 2, &value)) {
          return fail("bad %F");
        }
        time.day = static_cast<int>(value);
        break;
      case 'T':
        if (!read_field(1, 2, &value)) return fail("bad %T");
        time.hour = static_cast<int>(value);
        if (pos >= text.size() || text[pos++] != ':' || !read_field(1, 2, &value)) {
          return fail("bad %T");
        }
        time.minute = static_cast<int>(value);
        if (pos >= text.size() || text[pos++] != ':' || !read_field(1, 2, &value)) {
          return fail("bad %T");
        }
        time.second = static_cast<int>(value);
        break;
      case 's': {
        bool negative = pos < text.size() && text[pos] == '-';
        if (negative) ++pos;
        if (!read_field(1, 15, &epoch_seconds)) return fail("bad %s");
        if (negative) epoch_seconds = -epoch_seconds;
        have_epoch = true;
        break;
      }
      case '%':
        if (pos >= text.size() || text[pos] != '%') return fail("literal mismatch");
        ++pos;
        break;
      default: {
        std::string what = "unsupported directive %";
        what += pattern[p];
        return fail(what);
      }
    }
  }
  if (pos != text.size()) return fail("unexpected trailing characters");
  if (have_epoch) {
    *ms = epoch_seconds * 1000;
    return true;
  }
  std::string range_error;
  if (!CivilToMs(time, ms, &range_error)) return fail(range_error);
  return true;
}

bool SecondsOrMsToMs(double value, bool seconds, int64_t* ms) {
  double scaled = seconds ? value * 1000.0 : value;
  if (!std::isfinite(scaled) || std::fabs(scaled) >= kMaxAbsTsMs) return false;
  *ms = std::llround(scaled);
  return true;
}

}  // namespace

// ------------------------------------------------------------------ Impl --

struct Decoder::Impl {
  Impl(const config::MappingOptions& mapping, const config::ValidationOptions& validation);

  bool Decode(std::string_view bytes, int64_t now_ms, Event* event, std::string* reason);

  // Field names in the order of enum Field.
  std::array<std::string, kFieldCount> names;
  std::map<std::string, EventKind, std::less<>> kinds;          // canonical names and aliases
  std::map<std::string, std::string, std::less<>> bad_aliases;  // alias -> unknown target
  bool has_default_kind = false;
  bool negative_is_refund = false;  // mapping.negative_amount_is_refund
  bool has_amounts = true;          // mapping.amount_field is not empty
  EventKind default_kind = EventKind::kPageView;
  std::string default_type_error;
  TsMode ts_mode = TsMode::kAuto;
  std::string ts_pattern;
  config::ValidationOptions limits;

  simdjson::dom::parser parser;
  std::unique_ptr<char[]> padded;  // message copy with SIMDJSON_PADDING spare bytes
  size_t padded_capacity = 0;
  std::array<element, kFieldCount> values;
  std::array<bool, kFieldCount> present{};
  std::string text_buffer;

 private:
  bool Fail(std::string* reason, Field field, std::string_view what);
  bool FailType(std::string* reason, Field field, std::string_view expected, element got);
  bool ReadIdText(Field field, size_t max_bytes, std::string* out, std::string* reason);
  bool ReadTs(element value, int64_t* ms, std::string* reason);
  bool ReadNumber(Field field, double* value, std::string* reason);
  bool ReadAttrs(element value, Event* event, std::string* reason);
};

Decoder::Impl::Impl(const config::MappingOptions& mapping,
                    const config::ValidationOptions& validation)
    : negative_is_refund(mapping.negative_amount_is_refund),
      has_amounts(!mapping.amount_field.empty()),
      limits(validation) {
  names[static_cast<size_t>(Field::kEventId)] = mapping.event_id_field;
  names[static_cast<size_t>(Field::kUserId)] = mapping.user_id_field;
  names[static_cast<size_t>(Field::kType)] = mapping.type_field;
  names[static_cast<size_t>(Field::kTs)] = mapping.ts_field;
  names[static_cast<size_t>(Field::kAmount)] = mapping.amount_field;
  names[static_cast<size_t>(Field::kCurrency)] = mapping.currency_field;
  names[static_cast<size_t>(Field::kOrderId)] = mapping.order_id_field;
  names[static_cast<size_t>(Field::kItems)] = mapping.items_field;
  names[static_cast<size_t>(Field::kProductId)] = mapping.product_id_field;
  names[static_cast<size_t>(Field::kCategory)] = mapping.category_field;
  names[static_cast<size_t>(Field::kSessionId)] = mapping.session_id_field;
  names[static_cast<size_t>(Field::kAttrs)] = mapping.attrs_field;

  for (int i = 0; i < models::kEventKindCount; ++i) {
    auto kind = static_cast<EventKind>(i);
    kinds.emplace(models::EventKindName(kind), kind);
  }
  for (const auto& [alias, target] : mapping.type_aliases) {
    EventKind kind;
    if (models::ParseEventKind(target, &kind)) {
      kinds.insert_or_assign(alias, kind);
    } else {
      bad_aliases.insert_or_assign(alias, target);
    }
  }
  if (!mapping.default_type.empty()) {
    has_default_kind = models::ParseEventKind(mapping.default_type, &default_kind);
    if (!has_default_kind) {
      default_type_error =
          "mapping.default_type '" + mapping.default_type + "' is not a canonical event type";
    }
  }
  const std::string& format = mapping.ts_format;
  if (format.empty() || format == "auto") {
    ts_mode = TsMode::kAuto;
  } else if (format == "epoch_s") {
    ts_mode = TsMode::kEpochS;
  } else if (format == "epoch_ms") {
    ts_mode = TsMode::kEpochMs;
  } else if (format == "rfc3339") {
    ts_mode = TsMode::kRfc3339;
  } else {
    ts_mode = TsMode::kPattern;
    ts_pattern = format;
  }
}

bool Decoder::Impl::Fail(std::string* reason, Field field, std::string_view what) {
  reason->assign("field '");
  reason->append(names[static_cast<size_t>(field)]);
  reason->append("': ");
  reason->append(what);
  return false;
}

bool Decoder::Impl::FailType(std::string* reason, Field field, std::string_view expected,
                             element got) {
  Fail(reason, field, "must be ");
  reason->append(expected);
  reason->append(", got ");
  AppendDescription(*reason, got);
  return false;
}

// A string, or an integer written as its decimal string. Empty = absent.
bool Decoder::Impl::ReadIdText(Field field, size_t max_bytes, std::string* out,
                               std::string* reason) {
  out->clear();
  if (!present[static_cast<size_t>(field)]) return true;
  element value = values[static_cast<size_t>(field)];
  switch (value.type()) {
    case element_type::STRING: {
      std::string_view text;
      if (value.get_string().get(text)) return FailType(reason, field, "a string", value);
      if (text.size() > max_bytes) {
        std::string what = "too long (";
        AppendInt(what, text.size());
        what += " bytes, at most ";
        AppendInt(what, max_bytes);
        what += ")";
        return Fail(reason, field, what);
      }
      out->assign(text);
      return true;
    }
    case element_type::INT64: {
      int64_t number = 0;
      if (value.get_int64().get(number)) break;
      AppendInt(*out, number);
      return true;
    }
    case element_type::UINT64: {
      uint64_t number = 0;
      if (value.get_uint64().get(number)) break;
      AppendInt(*out, number);
      return true;
    }
    default: break;
  }
  return FailType(reason, field, "a string or an integer", value);
}

bool Decoder::Impl::ReadNumber(Field field, double* result, std::string* reason) {
  element value = values[static_cast<size_t>(field)];
  if (IsNumber(value)) {
    double number = 0;
    if (!value.get_double().get(number) && std::isfinite(number)) {
      *result = number;
      return true;
    }
    return FailType(reason, field, "a finite number", value);
  }
  if (value.type() == element_type::STRING) {
    std::string_view text;
    if (!value.get_string().get(text) && ParseNumericString(text, result)) return true;
  }
  return FailType(reason, field, "a number or a numeric string", value);
}

bool Decoder::Impl::ReadTs(element value, int64_t* ms, std::string* reason) {
  std::string why;
  if (IsNumber(value)) {
    if (ts_mode == TsMode::kRfc3339) {
      return FailType(reason, Field::kTs, "an RFC 3339 string (mapping.ts_format=rfc3339)", value);
    }
    if (ts_mode == TsMode::kPattern) {
      // A compact date such as 19970101 may arrive as a JSON number.
      text_buffer.clear();
      int64_t integer = 0;
      uint64_t unsigned_integer = 0;
      if (!value.get_int64().get(integer)) {
        AppendInt(text_buffer, integer);
      } else if (!value.get_uint64().get(unsigned_integer)) {
        AppendInt(text_buffer, unsigned_integer);
      } else {
        return FailType(reason, Field::kTs, "a string or an integer matching mapping.ts_format",
                        value);
      }
      if (!ParsePattern(ts_pattern, text_buffer, ms, &why)) return Fail(reason, Field::kTs, why);
      return true;
    }
    int64_t integer = 0;
    bool seconds = false;
    if (value.type() == element_type::INT64 && !value.get_int64().get(integer)) {
      seconds = ts_mode == TsMode::kEpochS ||
                (ts_mode == TsMode::kAuto && std::llabs(integer) < static_cast<int64_t>(1e11));
      if (!seconds) {
        *ms = integer;
        return true;
      }
      if (std::llabs(integer) < static_cast<int64_t>(kMaxAbsTsMs / 1000)) {
        *ms = integer * 1000;
        return true;
      }
      return FailType(reason, Field::kTs, "a time within the representable range", value);
    }
    double number = 0;
    if (value.get_double().get(number)) {
      return FailType(reason, Field::kTs, "epoch seconds or milliseconds", value);
    }
    seconds = ts_mode == TsMode::kEpochS ||
              (ts_mode == TsMode::kAuto && std::fabs(number) < kAutoSecondsBelow);
    if (!SecondsOrMsToMs(number, seconds, ms)) {
      return FailType(reason, Field::kTs, "a time within the representable range", value);
    }
    return true;
  }
  if (value.type() != element_type::STRING) {
    return FailType(reason, Field::kTs, "a number or a string", value);
  }
  std::string_view text;
  if (value.get_string().get(text)) return FailType(reason, Field::kTs, "a string", value);
  auto fail_with_input = [&](std::string_view what) {
    std::string message(what);
    message += ", got ";
    AppendSnippet(message, text);
    return Fail(reason, Field::kTs, message);
  };
  double number = 0;
  switch (ts_mode) {
    case TsMode::kAuto:
      if (ParseNumericString(text, &number)) {
        if (!SecondsOrMsToMs(number, std::fabs(number) < kAutoSecondsBelow, ms)) {
          return fail_with_input("out of the representable range");
        }
        return true;
      }
      if (!ParseRfc3339(text, ms, &why)) {
        return fail_with_input("expected epoch seconds/milliseconds or an RFC 3339 time");
      }
      return true;
    case TsMode::kEpochS:
    case TsMode::kEpochMs:
      if (!ParseNumericString(text, &number) ||
          !SecondsOrMsToMs(number, ts_mode == TsMode::kEpochS, ms)) {
        return fail_with_input(ts_mode == TsMode::kEpochS ? "expected epoch seconds"
                                                          : "expected epoch milliseconds");
      }
      return true;
    case TsMode::kRfc3339:
      if (!ParseRfc3339(text, ms, &why)) return fail_with_input(why);
      return true;
    case TsMode::kPattern:
      if (!ParsePattern(ts_pattern, text, ms, &why)) return fail_with_input(why);
      return true;
  }
  return fail_with_input("unsupported mapping.ts_format");
}

bool Decoder::Impl::ReadAttrs(element value, Event* event, std::string* reason) {
  simdjson::dom::object object;
  if (value.get_object().get(object)) return FailType(reason, Field::kAttrs, "an object", value);
  if (object.size() > kMaxAttrs) {
    std::string what = "at most ";
    AppendInt(what, kMaxAttrs);
    what += " entries, got ";
    AppendInt(what, object.size());
    return Fail(reason, Field::kAttrs, what);
  }
  for (auto field : object) {
    // Named copies, not a structured binding: lambdas may capture these.
    std::string_view key = field.key;
    element entry = field.value;
    auto fail_key = [&](std::string_view what) {
      std::string message = "entry ";
      AppendSnippet(message, key);
      message += ": ";
      message += what;
      return Fail(reason, Field::kAttrs, message);
    };
    if (key.size() > kMaxAttrKeyBytes) return fail_key("key too long");
    std::string text;
    switch (entry.type()) {
      case element_type::STRING: {
        std::string_view view;
        if (entry.get_string().get(view)) return fail_key("unreadable string");
        text.assign(view);
        break;
      }
      case element_type::INT64: {
        int64_t number = 0;
        if (entry.get_int64().get(number)) return fail_key("unreadable number");
        AppendInt(text, number);
        break;
      }
      case element_type::UINT64: {
        uint64_t number = 0;
        if (entry.get_uint64().get(number)) return fail_key("unreadable number");
        AppendInt(text, number);
        break;
      }
      case element_type::DOUBLE: {
        double number = 0;
        if (entry.get_double().get(number)) return fail_key("unreadable number");
        AppendNumber(text, number);
        break;
      }
      case element_type::BOOL: {
        bool flag = false;
        if (entry.get_bool().get(flag)) return fail_key("unreadable boolean");
        text = flag ? "true" : "false";
        break;
      }
      case element_type::NULL_VALUE: continue;
      case element_type::ARRAY:
      case element_type::OBJECT:
        return fail_key("must be a string, number or boolean, got a nested value");
    }
    if (text.size() > kMaxAttrValueBytes) return fail_key("value too long");
    event->attrs.emplace_back(std::string(key), std::move(text));
  }
  std::sort(event->attrs.begin(), event->attrs.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (size_t i = 1; i < event->attrs.size(); ++i) {
    if (event->attrs[i].first == event->attrs[i - 1].first) {
      std::string message = "entry ";
      AppendSnippet(message, event->attrs[i].first);
      message += " appears twice";
      return Fail(reason, Field::kAttrs, message);
    }
  }
  return true;
}

bool Decoder::Impl::Decode(std::string_view bytes, int64_t now_ms, Event* event,
                           std::string* reason) {
  reason->clear();
  event->user_id.clear();
  event->event_id_hash = 0;
  event->event_id_given = false;
  event->kind = EventKind::kPageView;
  event->ts_ms = 0;
  event->amount = 0;
  event->currency.clear();
  event->order_id.clear();
  event->product_id.clear();
  event->category.clear();
  event->session_id.clear();
  event->items = 0;
  event->attrs.clear();

  if (static_cast<int64_t>(bytes.size()) > limits.max_message_bytes) {
    reason->assign("message is ");
    AppendInt(*reason, bytes.size());
    reason->append(" bytes, larger than validation.max_message_bytes=");
    AppendInt(*reason, limits.max_message_bytes);
    return false;
  }
  if (bytes.empty()) {
    reason->assign("empty message, expected a JSON object");
    return false;
  }
  // simdjson reads up to SIMDJSON_PADDING bytes past the end: parse a copy.
  if (padded_capacity < bytes.size() + simdjson::SIMDJSON_PADDING) {
    padded_capacity = std::max(bytes.size() + simdjson::SIMDJSON_PADDING, size_t{4096});
    padded = std::make_unique<char[]>(padded_capacity);
  }
  std::memcpy(padded.get(), bytes.data(), bytes.size());
  std::memset(padded.get() + bytes.size(), 0, simdjson::SIMDJSON_PADDING);

  element root;
  if (auto error = parser.parse(padded.get(), bytes.size(), false).get(root); error) {
    reason->assign("not valid JSON: ");
    std::string_view token;
    size_t offset = 0;
    if (FindNonFiniteToken(bytes, &token, &offset)) {
      reason->append("non-finite number ");
      AppendSnippet(*reason, token);
      reason->append(" at byte ");
      AppendInt(*reason, offset);
      reason->append(" (JSON has no NaN or Infinity: send null or leave the field out)");
    } else {
      reason->append(simdjson::error_message(error));
    }
    return false;
  }
  simdjson::dom::object object;
  if (root.get_object().get(object)) {
    reason->assign("message must be a JSON object, got ");
    AppendDescription(*reason, root);
    return false;
  }

  present.fill(false);
  for (auto [key, value] : object) {
    for (size_t i = 0; i < kFieldCount; ++i) {
      if (names[i].empty() || key.size() != names[i].size() || key != names[i]) continue;
      if (value.type() == element_type::NULL_VALUE) break;  // null = absent
      if (present[i]) return Fail(reason, static_cast<Field>(i), "appears twice");
      present[i] = true;
      values[i] = value;
      break;
    }
  }
  auto has = [&](Field field) { return present[static_cast<size_t>(field)]; };
  auto get = [&](Field field) { return values[static_cast<size_t>(field)]; };

  // user_id
  if (!has(Field::kUserId)) return Fail(reason, Field::kUserId, "missing (required)");
  // The length limit is part of the user-id rule (common/user_id.h), checked there.
  if (!ReadIdText(Field::kUserId, std::numeric_limits<size_t>::max(), &event->user_id, reason)) {
    return false;
  }
  if (std::string why = UserIdProblem(event->user_id); !why.empty()) {
    return Fail(reason, Field::kUserId, why);
  }

  // type
  if (has(Field::kType)) {
    std::string_view name;
    element value = get(Field::kType);
    if (value.get_string().get(name)) return FailType(reason, Field::kType, "a string", value);
    auto found = kinds.find(name);
    if (found == kinds.end()) {
      std::string what;
      auto bad = bad_aliases.find(name);
      if (bad != bad_aliases.end()) {
        what = "mapping.type_aliases maps ";
        AppendSnippet(what, name);
        what += " to unknown type ";
        AppendSnippet(what, bad->second);
      } else {
        what = "unknown type ";
        AppendSnippet(what, name);
      }
      return Fail(reason, Field::kType, what);
    }
    event->kind = found->second;
  } else if (has_default_kind) {
    event->kind = default_kind;
  } else if (!default_type_error.empty()) {
    return Fail(reason, Field::kType, "missing, and " + default_type_error);
  } else {
    return Fail(reason, Field::kType, "missing (required)");
  }

  // ts
  if (!has(Field::kTs)) return Fail(reason, Field::kTs, "missing (required)");
  if (!ReadTs(get(Field::kTs), &event->ts_ms, reason)) return false;
  if (event->ts_ms < limits.min_ts_ms) {
    std::string what;
    AppendInt(what, event->ts_ms);
    what += " ms is before validation.min_ts_ms=";
    AppendInt(what, limits.min_ts_ms);
    return Fail(reason, Field::kTs, what);
  }
  if (event->ts_ms - now_ms > limits.max_future_ms) {
    std::string what;
    AppendInt(what, event->ts_ms);
    what += " ms is more than validation.max_future_ms=";
    AppendInt(what, limits.max_future_ms);
    what += " after now (";
    AppendInt(what, now_ms);
    what += " ms)";
    return Fail(reason, Field::kTs, what);
  }

  // amount
  const bool money = event->kind == EventKind::kPurchase || event->kind == EventKind::kRefund;
  if (!has_amounts) {
    if (event->kind == EventKind::kRefund) {
      reason->assign(
          "field 'type': a refund needs an amount, and mapping.amount_field is empty (the data "
          "has no value column)");
      return false;
    }
    if (money) event->amount = 1;  // one unit: spend counts purchases
  } else if (has(Field::kAmount)) {
    double amount = 0;
    if (!ReadNumber(Field::kAmount, &amount, reason)) return false;
    if (money) {
      // A purchase of 0 (free, fully discounted) counts as a purchase worth 0.
      // A negative amount is a refund of |amount| only with
      // mapping.negative_amount_is_refund; a refund itself must be > 0.
      std::string what;
      if (amount < 0 && negative_is_refund) {
        event->kind = EventKind::kRefund;
        amount = -amount;
      }
      const bool refund = event->kind == EventKind::kRefund;
      if (std::isnan(amount) || amount < 0 || (refund && amount == 0)) {
        what = refund ? "must be > 0 for " : "must be >= 0 for ";
        what += models::EventKindName(event->kind);
        what += ", got ";
        AppendNumber(what, amount);
        if (amount < 0) what += " (negative: set mapping.negative_amount_is_refund if a refund)";
        return Fail(reason, Field::kAmount, what);
      }
      amount += 0.0;  // -0 is 0
      if (amount > limits.max_amount) {
        what = "got ";
        AppendNumber(what, amount);
        what += ", larger than validation.max_amount=";
        AppendNumber(what, limits.max_amount);
        return Fail(reason, Field::kAmount, what);
      }
      event->amount = amount;
    }
  } else if (money) {
    std::string what = "missing (required for ";
    what += models::EventKindName(event->kind);
    what += "; if the data has no order values, set mapping.amount_field to \"\")";
    return Fail(reason, Field::kAmount, what);
  }

  // optional text fields
  if (has(Field::kCurrency)) {
    std::string_view text;
    element value = get(Field::kCurrency);
    if (value.get_string().get(text)) return FailType(reason, Field::kCurrency, "a string", value);
    if (text.size() > kMaxCurrencyBytes) return Fail(reason, Field::kCurrency, "too long");
    event->currency.assign(text);
  }
  if (!ReadIdText(Field::kOrderId, kMaxIdBytes, &event->order_id, reason)) return false;
  if (!ReadIdText(Field::kProductId, kMaxIdBytes, &event->product_id, reason)) return false;
  if (!ReadIdText(Field::kCategory, kMaxCategoryBytes, &event->category, reason)) return false;
  if (!ReadIdText(Field::kSessionId, kMaxIdBytes, &event->session_id, reason)) return false;

  // items: a non-negative integer (integral numbers and integer strings too)
  if (has(Field::kItems)) {
    element value = get(Field::kItems);
    double number = -1;
    bool numeric = false;
    if (IsNumber(value)) {
      numeric = !value.get_double().get(number);
    } else if (value.type() == element_type::STRING) {
      std::string_view text;
      numeric = !value.get_string().get(text) && ParseNumericString(text, &number);
    }
    if (!numeric || !(number >= 0) || number != std::floor(number) ||
        number > std::numeric_limits<int32_t>::max()) {
      return FailType(reason, Field::kItems, "a non-negative integer", value);
    }
    event->items = static_cast<int32_t>(number);
  }

  if (has(Field::kAttrs) && !ReadAttrs(get(Field::kAttrs), event, reason)) return false;

  // event id last: it only matters for a valid event
  if (has(Field::kEventId)) {
    if (!ReadIdText(Field::kEventId, kMaxIdBytes, &text_buffer, reason)) return false;
    if (text_buffer.empty()) return Fail(reason, Field::kEventId, "must not be empty");
    event->event_id_hash = StableHash64(text_buffer);
    event->event_id_given = true;
  } else {
    event->event_id_hash = StableHash64(bytes);
  }
  return true;
}

// --------------------------------------------------------------- Decoder --

Decoder::Decoder(const config::MappingOptions& mapping, const config::ValidationOptions& validation)
    : impl_(std::make_unique<Impl>(mapping, validation)) {}

Decoder::~Decoder() = default;

bool Decoder::Decode(std::string_view bytes, int64_t now_ms, Event* event, std::string* reason) {
  // Nothing below throws by design (simdjson error codes, no exceptions);
  // the catch is a last line of defence for std::bad_alloc on a huge input.
  try {
    return impl_->Decode(bytes, now_ms, event, reason);
  } catch (const std::exception& error) {
    reason->assign("decoder failure: ");
    reason->append(error.what());
    return false;
  }
}

}  // namespace clv::stream
