// Time units in milliseconds, the unit of every timestamp in clvstream
// (event times, stream time, timers). Integers: use them in integer
// arithmetic as they are, and as doubles where a fraction is wanted
// (double(ms) / kMsPerDay).
#pragma once

#include <cstdint>

namespace clv {

inline constexpr int64_t kMsPerSecond = 1000;
inline constexpr int64_t kMsPerMinute = 60 * kMsPerSecond;
inline constexpr int64_t kMsPerHour = 60 * kMsPerMinute;
inline constexpr int64_t kMsPerDay = 24 * kMsPerHour;
inline constexpr int64_t kMsPerWeek = 7 * kMsPerDay;

// a / b rounded towards minus infinity (b > 0), so times before 1970 land in
// the right hour, day or week.
constexpr int64_t FloorDiv(int64_t a, int64_t b) {
  const int64_t q = a / b;
  return (a % b != 0 && a < 0) ? q - 1 : q;
}

}  // namespace clv
