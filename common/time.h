// Time and dates: the one strict parser of date/time text, proleptic
// Gregorian <-> epoch conversions (UTC, milliseconds), UTC day numbers and the
// clocks. Header-level; every layer may use it.
//
// Contract:
//  * Dates are checked against the calendar: 2026-02-31 and 2025-02-29 are
//    refused, 2024-02-29 is accepted. Parsers return false with *why saying
//    what was wrong; callers add the value and where it came from.
//  * ParseRfc3339 accepts "YYYY-MM-DD", "YYYY-MM-DD[T| ]HH:MM[:SS[.fff]][offset]"
//    with offset Z, +HH:MM, +HHMM or +HH (none = UTC); extra fraction digits
//    are truncated to milliseconds; a leap second (:60) is accepted.
//  * UtcDay() floors, so times before 1970 land on the right day.
//
// Example:
//   int64_t ms = 0;
//   std::string why;
//   if (!clv::ParseRfc3339("2026-02-31", &ms, &why)) { ... why: "day out of range" ... }
//   clv::MsToDate(clv::DateToMs(2024, 2, 29));  // "2024-02-29"
//
// Thread-safety: pure functions, except that the clocks read the system clocks.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

#include "common/units.h"

namespace clv {

constexpr bool IsLeapYear(int64_t year) {
  return (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
}

// Days of `month` (1..12) in `year`.
constexpr int DaysInMonth(int64_t year, int month) {
  constexpr std::array<int, 12> kDays = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  return month == 2 && IsLeapYear(year) ? 29 : kDays[static_cast<size_t>(month - 1)];
}

// Days since 1970-01-01 of a proleptic Gregorian date (month 1..12; the day
// is not checked, see ValidDate).
constexpr int64_t DaysFromCivil(int64_t year, int month, int day) {
  // Count years from March so the leap day is the last day of a "year".
  year -= month <= 2 ? 1 : 0;
  const int64_t era = (year >= 0 ? year : year - 399) / 400;
  const int64_t year_of_era = year - era * 400;                         // [0, 399]
  const int64_t shifted_month = month > 2 ? month - 3 : month + 9;      // March = 0
  const int64_t day_of_year = (153 * shifted_month + 2) / 5 + day - 1;  // [0, 365]
  const int64_t day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
  return era * 146097 + day_of_era - 719468;
}

struct CivilDate {
  int64_t year = 1970;
  int month = 1;
  int day = 1;
};

// The date of day number `days` since 1970-01-01 (inverse of DaysFromCivil).
constexpr CivilDate CivilFromDays(int64_t days) {
  const int64_t z = days + 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const int64_t day_of_era = z - era * 146097;
  const int64_t year_of_era =
      (day_of_era - day_of_era / 1460 + day_of_era / 36524 - day_of_era / 146096) / 365;
  const int64_t day_of_year =
      day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
  const int64_t shifted_month = (5 * day_of_year + 2) / 153;
  CivilDate date;
  date.day = static_cast<int>(day_of_year - (153 * shifted_month + 2) / 5 + 1);
  date.month = static_cast<int>(shifted_month < 10 ? shifted_month + 3 : shifted_month - 9);
  date.year = year_of_era + era * 400 + (date.month <= 2 ? 1 : 0);
  return date;
}

constexpr bool ValidDate(int64_t year, int month, int day) {
  return month >= 1 && month <= 12 && day >= 1 && day <= DaysInMonth(year, month);
}

// UTC day number of `ts_ms` (days since 1970-01-01, floored).
constexpr int64_t UtcDay(int64_t ts_ms) { return FloorDiv(ts_ms, kMsPerDay); }

// The UTC day of an event time as stored in keys (state's event_ids family).
constexpr int32_t EventDay(int64_t ts_ms) { return static_cast<int32_t>(UtcDay(ts_ms)); }

// Epoch ms of 00:00 UTC on a proleptic Gregorian date (not checked).
constexpr int64_t DateToMs(int64_t year, int month, int day) {
  return DaysFromCivil(year, month, day) * kMsPerDay;
}

// "YYYY-MM-DD" of the UTC day holding `ts_ms`.
inline std::string MsToDate(int64_t ts_ms) {
  const CivilDate date = CivilFromDays(UtcDay(ts_ms));
  char buffer[32];
  std::snprintf(buffer, sizeof(buffer), "%04lld-%02d-%02d", static_cast<long long>(date.year),
                date.month, date.day);
  return buffer;
}

// A local date and time of day with its offset from UTC.
struct CivilTime {
  int64_t year = 1970;
  int month = 1;
  int day = 1;
  int hour = 0;
  int minute = 0;
  int second = 0;
  int64_t millis = 0;
  int64_t offset_seconds = 0;  // local time = UTC + offset
};

// Epoch ms of `time`; false with *why when a field is out of range.
inline bool CivilToMs(const CivilTime& time, int64_t* ms, std::string* why) {
  if (time.month < 1 || time.month > 12) {
    *why = "month out of range";
    return false;
  }
  if (time.day < 1 || time.day > DaysInMonth(time.year, time.month)) {
    *why = "day out of range";
    return false;
  }
  if (time.hour > 23 || time.minute > 59 || time.second > 60) {
    *why = "time of day out of range";
    return false;
  }
  const int64_t days = DaysFromCivil(time.year, time.month, time.day);
  const int64_t seconds =
      days * 86400 + time.hour * 3600 + time.minute * 60 + time.second - time.offset_seconds;
  *ms = seconds * 1000 + time.millis;
  return true;
}

// Pieces of time text, for parsers of other layouts (stream/decoder.cpp's
// ts_format patterns). Each reads at text[*pos] and advances *pos.
namespace time_text {

constexpr bool IsDigit(char c) { return c >= '0' && c <= '9'; }

// min_digits..max_digits decimal digits.
inline bool ReadDigits(std::string_view text, size_t* pos, size_t min_digits, size_t max_digits,
                       int64_t* value) {
  const size_t start = *pos;
  int64_t result = 0;
  while (*pos < text.size() && *pos - start < max_digits && IsDigit(text[*pos])) {
    result = result * 10 + (text[*pos] - '0');
    ++*pos;
  }
  if (*pos - start < min_digits) return false;
  *value = result;
  return true;
}

// An optional ".123456" or ",5" -> milliseconds (extra digits truncated).
inline bool ReadFraction(std::string_view text, size_t* pos, int64_t* millis) {
  if (*pos >= text.size() || (text[*pos] != '.' && text[*pos] != ',')) return true;
  ++*pos;
  const size_t start = *pos;
  int64_t result = 0;
  while (*pos < text.size() && IsDigit(text[*pos])) {
    if (*pos - start < 3) result = result * 10 + (text[*pos] - '0');
    ++*pos;
  }
  if (*pos == start) return false;
  for (size_t digits = *pos - start; digits < 3; ++digits) result *= 10;
  *millis = result;
  return true;
}

// "Z", "z", "+02:00", "+0200", "-05".
inline bool ReadOffset(std::string_view text, size_t* pos, int64_t* offset_seconds) {
  if (*pos >= text.size()) return false;
  const char sign = text[*pos];
  if (sign == 'Z' || sign == 'z') {
    ++*pos;
    *offset_seconds = 0;
    return true;
  }
  if (sign != '+' && sign != '-') return false;
  ++*pos;
  int64_t hours = 0;
  int64_t minutes = 0;
  if (!ReadDigits(text, pos, 2, 2, &hours)) return false;
  if (*pos < text.size() && text[*pos] == ':') ++*pos;
  if (*pos < text.size() && IsDigit(text[*pos])) {
    if (!ReadDigits(text, pos, 2, 2, &minutes)) return false;
  }
  if (hours > 23 || minutes > 59) return false;
  *offset_seconds = (sign == '-' ? -1 : 1) * (hours * 3600 + minutes * 60);
  return true;
}

}  // namespace time_text

// RFC 3339 and the common ISO 8601 forms (see the contract above).
inline bool ParseRfc3339(std::string_view text, int64_t* ms, std::string* why) {
  using time_text::ReadDigits;
  CivilTime time;
  size_t pos = 0;
  int64_t value = 0;
  *why = "expected an RFC 3339 time like 2026-01-02T03:04:05Z";
  if (!ReadDigits(text, &pos, 4, 4, &time.year)) return false;
  if (pos >= text.size() || text[pos] != '-') return false;
  ++pos;
  if (!ReadDigits(text, &pos, 2, 2, &value)) return false;
  time.month = static_cast<int>(value);
  if (pos >= text.size() || text[pos] != '-') return false;
  ++pos;
  if (!ReadDigits(text, &pos, 2, 2, &value)) return false;
  time.day = static_cast<int>(value);
  if (pos < text.size()) {
    if (text[pos] != 'T' && text[pos] != 't' && text[pos] != ' ') return false;
    ++pos;
    if (!ReadDigits(text, &pos, 2, 2, &value)) return false;
    time.hour = static_cast<int>(value);
    if (pos >= text.size() || text[pos] != ':') return false;
    ++pos;
    if (!ReadDigits(text, &pos, 2, 2, &value)) return false;
    time.minute = static_cast<int>(value);
    if (pos < text.size() && text[pos] == ':') {
      ++pos;
      if (!ReadDigits(text, &pos, 2, 2, &value)) return false;
      time.second = static_cast<int>(value);
      if (!time_text::ReadFraction(text, &pos, &time.millis)) return false;
    }
    if (pos < text.size() && !time_text::ReadOffset(text, &pos, &time.offset_seconds)) {
      return false;
    }
  }
  if (pos != text.size()) return false;
  return CivilToMs(time, ms, why);
}

// "YYYYMMDD" -> epoch ms of 00:00 UTC that day; false when not a valid date.
inline bool ParseCompactDate(std::string_view text, int64_t* ts_ms) {
  if (text.size() != 8) return false;
  for (char c : text) {
    if (!time_text::IsDigit(c)) return false;
  }
  auto number = [&](size_t begin, size_t length) {
    int value = 0;
    for (size_t i = begin; i < begin + length; ++i) value = value * 10 + (text[i] - '0');
    return value;
  };
  const int year = number(0, 4), month = number(4, 2), day = number(6, 2);
  if (!ValidDate(year, month, day)) return false;
  *ts_ms = DateToMs(year, month, day);
  return true;
}

// Wall clock, epoch ms (for timestamps people read; never for durations).
inline int64_t WallClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// Monotonic clock, ms since an arbitrary start (for durations and deadlines).
inline int64_t SteadyClockMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

}  // namespace clv
