// The ground floor (common/): dates and times, hashing, units, event kinds.
#include <cstdint>
#include <string>

#include <gtest/gtest.h>

#include "common/event_kind.h"
#include "common/hash.h"
#include "common/status.h"
#include "common/time.h"
#include "common/units.h"

namespace clv {
namespace {

int64_t ParseOrDie(const std::string& text) {
  int64_t ms = -1;
  std::string why;
  EXPECT_TRUE(ParseRfc3339(text, &ms, &why)) << text << ": " << why;
  return ms;
}

std::string Refusal(const std::string& text) {
  int64_t ms = 0;
  std::string why;
  EXPECT_FALSE(ParseRfc3339(text, &ms, &why)) << text << " was accepted as " << ms;
  return why;
}

TEST(CommonTime, DatesAreCheckedAgainstTheCalendar) {
  EXPECT_EQ(Refusal("2026-02-31"), "day out of range");
  EXPECT_EQ(Refusal("2025-02-29"), "day out of range");
  EXPECT_EQ(Refusal("1900-02-29"), "day out of range");
  EXPECT_EQ(Refusal("2026-13-01"), "month out of range");
  EXPECT_EQ(Refusal("2026-04-31"), "day out of range");
  EXPECT_EQ(Refusal("2026-01-01T24:00:00Z"), "time of day out of range");
  EXPECT_EQ(ParseOrDie("2024-02-29"), 1709164800000LL);
  EXPECT_EQ(ParseOrDie("2000-02-29"), DateToMs(2000, 2, 29));
  int64_t ms = 0;
  EXPECT_FALSE(ParseCompactDate("20260231", &ms));
  ASSERT_TRUE(ParseCompactDate("20240229", &ms));
  EXPECT_EQ(ms, 1709164800000LL);
}

TEST(CommonTime, Rfc3339FormsAndOffsets) {
  EXPECT_EQ(ParseOrDie("1970-01-01"), 0);
  EXPECT_EQ(ParseOrDie("1970-01-01T00:00:01Z"), 1000);
  EXPECT_EQ(ParseOrDie("1970-01-01 00:00:01.2345"), 1234);
  EXPECT_EQ(ParseOrDie("1970-01-01T02:00:00+02:00"), 0);
  EXPECT_EQ(ParseOrDie("1970-01-01T00:00-0130"), 90 * kMsPerMinute);
  EXPECT_EQ(ParseOrDie("1969-12-31T23:59:59.5Z"), -500);
  for (const char* bad : {"2026-1-05", "2026-01-05T", "2026-01-05X", "26-01-05", "2026-01-05T1:00",
                          "2026-01-05T10:00:00+2", ""}) {
    EXPECT_EQ(Refusal(bad), "expected an RFC 3339 time like 2026-01-02T03:04:05Z") << bad;
  }
}

TEST(CommonTime, CivilDaysRoundTripAndFloorBefore1970) {
  for (int64_t day = -800000; day <= 800000; day += 997) {
    const CivilDate date = CivilFromDays(day);
    ASSERT_TRUE(ValidDate(date.year, date.month, date.day)) << day;
    ASSERT_EQ(DaysFromCivil(date.year, date.month, date.day), day);
  }
  EXPECT_EQ(MsToDate(DateToMs(2024, 2, 29)), "2024-02-29");
  EXPECT_EQ(MsToDate(-1), "1969-12-31");
  EXPECT_EQ(UtcDay(-1), -1);
  EXPECT_EQ(UtcDay(kMsPerDay), 1);
  EXPECT_EQ(EventDay(-kMsPerDay), -1);
  EXPECT_EQ(FloorDiv(-7, 2), -4);
  EXPECT_EQ(FloorDiv(7, 2), 3);
}

// The values are stored (state, model version ids): they must never change.
TEST(CommonHash, Fnv1aValuesAreTheStoredOnes) {
  EXPECT_EQ(Fnv1a(""), 14695981039346656037ULL);
  EXPECT_EQ(Fnv1a("a"), 0xaf63dc4c8601ec8cULL);
  EXPECT_EQ(Fnv1a("foobar"), 0x85944171f73967e8ULL);
  EXPECT_EQ(Fnv1a("order-17"), 0x7d2ee886a064d0eeULL);
  // The baseline model's version id starts from another seed.
  EXPECT_EQ(Fnv1a("x", 1469598103934665603ULL), 0x44bda3d473cdc381ULL);
  // Folding pieces equals hashing the whole.
  const uint64_t folded = Fnv1a(Fnv1a(kFnv1aOffset, "foo", 3), "bar", 3);
  EXPECT_EQ(folded, Fnv1a("foobar"));
  const int64_t value = 42;  // little-endian bytes, as the LSTM version id hashes them
  EXPECT_EQ(Fnv1a(kFnv1aOffset, &value, sizeof(value)), 0xff3add6b3789daefULL);
}

TEST(CommonUnits, MillisecondConstants) {
  EXPECT_EQ(kMsPerDay, 86400000);
  EXPECT_EQ(kMsPerWeek, 7 * 86400000LL);
  EXPECT_EQ(kMsPerHour * 24, kMsPerDay);
}

TEST(CommonEventKind, NamesRoundTripAndUnknownIsRefused) {
  for (int i = 0; i < kEventKindCount; ++i) {
    EventKind kind{};
    const auto want = static_cast<EventKind>(i);
    ASSERT_TRUE(ParseEventKind(EventKindName(want), &kind));
    EXPECT_EQ(kind, want);
  }
  EventKind kind = EventKind::kSearch;
  EXPECT_FALSE(ParseEventKind("checkout", &kind));
  EXPECT_EQ(kind, EventKind::kSearch);
  EXPECT_STREQ(EventKindName(EventKind::kPurchase), "purchase");
  EXPECT_STREQ(EventKindName(static_cast<EventKind>(200)), "unknown");
}

TEST(CommonStatus, ErrorKeepsItsMessage) {
  const Status ok = Status::Ok();
  EXPECT_TRUE(ok.ok());
  const Status error = Status::Error("state.path: empty");
  EXPECT_FALSE(error.ok());
  EXPECT_EQ(error.message, "state.path: empty");
}

}  // namespace
}  // namespace clv
