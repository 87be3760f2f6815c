// Decoder: what a producer sees when its messages are accepted or sent to the
// dead-letter topic. Table-driven good and bad inputs, mapping options, every
// timestamp format, dedup ids, and a property: random bytes never crash.
#include "stream/decoder.h"

#include <rapidcheck.h>

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>

#include "config/config.h"
#include "stream/event.h"

namespace clv::stream {
namespace {

using models::EventKind;

constexpr int64_t kNowMs = 1767225600000;  // 2026-01-01T00:00:00Z

const std::string kPurchase =
    R"({"event_id":"e1","user_id":"u1","type":"purchase","ts":1767225600000,"amount":12.5,)"
    R"("currency":"EUR","order_id":"o1","items":2,"product_id":"p1","category":"books",)"
    R"("session_id":"s1"})";

struct Result {
  bool ok = false;
  Event event;
  std::string reason;
};

Result DecodeWith(const config::MappingOptions& mapping, const config::ValidationOptions& limits,
                  std::string_view bytes) {
  Decoder decoder(mapping, limits);
  Result result;
  result.ok = decoder.Decode(bytes, kNowMs, &result.event, &result.reason);
  return result;
}

Result DecodeDefault(std::string_view bytes) { return DecodeWith({}, {}, bytes); }

TEST(DecoderTest, DecodesAFullPurchase) {
  auto result = DecodeDefault(kPurchase);
  ASSERT_TRUE(result.ok) << result.reason;
  const Event& event = result.event;
  EXPECT_EQ(event.user_id, "u1");
  EXPECT_EQ(event.kind, EventKind::kPurchase);
  EXPECT_EQ(event.ts_ms, kNowMs);
  EXPECT_DOUBLE_EQ(event.amount, 12.5);
  EXPECT_EQ(event.currency, "EUR");
  EXPECT_EQ(event.order_id, "o1");
  EXPECT_EQ(event.items, 2);
  EXPECT_EQ(event.product_id, "p1");
  EXPECT_EQ(event.category, "books");
  EXPECT_EQ(event.session_id, "s1");
  EXPECT_EQ(event.event_id_hash, StableHash64("e1"));
  EXPECT_TRUE(result.reason.empty());
}

TEST(DecoderTest, DecodesEveryCanonicalType) {
  const std::vector<std::pair<std::string, EventKind>> types = {
      {"page_view", EventKind::kPageView},    {"search", EventKind::kSearch},
      {"add_to_cart", EventKind::kAddToCart}, {"remove_from_cart", EventKind::kRemoveFromCart},
      {"wishlist", EventKind::kWishlist},     {"ad_click", EventKind::kAdClick},
      {"purchase", EventKind::kPurchase},     {"refund", EventKind::kRefund},
      {"profile", EventKind::kProfile}};
  for (const auto& [name, kind] : types) {
    auto result =
        DecodeDefault(R"({"user_id":"u","type":")" + name + R"(","ts":1767225600,"amount":3})");
    ASSERT_TRUE(result.ok) << name << ": " << result.reason;
    EXPECT_EQ(result.event.kind, kind) << name;
    bool money = kind == EventKind::kPurchase || kind == EventKind::kRefund;
    EXPECT_DOUBLE_EQ(result.event.amount, money ? 3.0 : 0.0) << name;
  }
}

TEST(DecoderTest, ProfileAttrsAreStringsSortedByKey) {
  auto result = DecodeDefault(
      R"({"user_id":"u","type":"profile","ts":1767225600000,)"
      R"("attrs":{"tier":"gold","country":"DE","age":31,"vip":true,"score":1.5,"gone":null}})");
  ASSERT_TRUE(result.ok) << result.reason;
  const std::vector<std::pair<std::string, std::string>> expected = {
      {"age", "31"}, {"country", "DE"}, {"score", "1.5"}, {"tier", "gold"}, {"vip", "true"}};
  EXPECT_EQ(result.event.attrs, expected);
}

TEST(DecoderTest, UnknownFieldsAndNullsAreIgnored) {
  auto result = DecodeDefault(
      R"({"user_id":"u","type":"page_view","ts":1767225600000,"extra":{"deep":[1,2,{"x":null}]},)"
      R"("currency":null,"items":null})");
  ASSERT_TRUE(result.ok) << result.reason;
  EXPECT_EQ(result.event.currency, "");
  EXPECT_EQ(result.event.items, 0);
}

TEST(DecoderTest, NumericUserAndEventIdsBecomeDecimalStrings) {
  auto numeric =
      DecodeDefault(R"({"event_id":77,"user_id":12345,"type":"page_view","ts":1767225600})");
  ASSERT_TRUE(numeric.ok) << numeric.reason;
  EXPECT_EQ(numeric.event.user_id, "12345");
  EXPECT_EQ(numeric.event.event_id_hash, StableHash64("77"));
  auto text =
      DecodeDefault(R"({"event_id":"77","user_id":"12345","type":"page_view","ts":1767225600})");
  ASSERT_TRUE(text.ok) << text.reason;
  EXPECT_EQ(text.event.user_id, numeric.event.user_id);
  EXPECT_EQ(text.event.event_id_hash, numeric.event.event_id_hash);
  auto big = DecodeDefault(R"({"user_id":18446744073709551615,"type":"search","ts":1767225600})");
  ASSERT_TRUE(big.ok) << big.reason;
  EXPECT_EQ(big.event.user_id, "18446744073709551615");
}

TEST(DecoderTest, NumericStringsAreAcceptedForAmountAndItems) {
  auto result = DecodeDefault(
      R"({"user_id":"u","type":"refund","ts":"1767225600","amount":"19.99","items":"3"})");
  ASSERT_TRUE(result.ok) << result.reason;
  EXPECT_DOUBLE_EQ(result.event.amount, 19.99);
  EXPECT_EQ(result.event.items, 3);
  EXPECT_EQ(result.event.ts_ms, kNowMs);
}

// ------------------------------------------------------------ timestamps --

struct TsCase {
  std::string format;   // mapping.ts_format
  std::string ts_json;  // the ts value as JSON
  int64_t expected_ms;
};

TEST(DecoderTest, AcceptsEveryTimestampFormat) {
  const std::vector<TsCase> cases = {
      {"auto", "1767225600", kNowMs},           // epoch seconds
      {"auto", "1767225600.25", kNowMs + 250},  // fractional seconds
      {"auto", "1767225600000", kNowMs},        // epoch ms
      {"auto", "1767225600000.0", kNowMs},
      {"auto", "\"1767225600\"", kNowMs},  // numeric strings
      {"auto", "\"1767225600000\"", kNowMs},
      {"auto", "\"2026-01-01T00:00:00Z\"", kNowMs},
      {"auto", "\"2026-01-01t00:00:00z\"", kNowMs},
      {"auto", "\"2026-01-01 00:00:00Z\"", kNowMs},
      {"auto", "\"2026-01-01T00:00:00.123Z\"", kNowMs + 123},
      {"auto", "\"2026-01-01T00:00:00.123456789Z\"", kNowMs + 123},
      {"auto", "\"2026-01-01T02:00:00+02:00\"", kNowMs},
      {"auto", "\"2025-12-31T19:00:00-0500\"", kNowMs},
      {"auto", "\"2026-01-01T00:00:00\"", kNowMs},  // no offset = UTC
      {"auto", "\"2026-01-01T00:00\"", kNowMs},
      {"auto", "\"2026-01-01\"", kNowMs},
      {"auto", "\"2024-02-29T12:00:00Z\"", 1709208000000},  // leap day
      {"epoch_s", "1767225600", kNowMs},
      {"epoch_s", "\"1767225600\"", kNowMs},
      {"epoch_s", "1000000000000", 1000000000000000},  // forced unit (then rejected as future)
      {"epoch_ms", "1767225600000", kNowMs},
      {"epoch_ms", "\"1767225600000\"", kNowMs},
      {"rfc3339", "\"2026-01-01T00:00:00Z\"", kNowMs},
      {"%Y%m%d", "20260101", kNowMs},  // compact date as a number
      {"%Y%m%d", "\"20260101\"", kNowMs},
      {"%Y-%m-%d %H:%M:%S", "\"2025-12-31 23:59:59\"", kNowMs - 1000},
      {"%Y-%m-%d %H:%M:%S", "\"2025-12-31 23:59:59.5\"", kNowMs - 500},
      {"%d/%m/%Y %H:%M", "\"1/1/2026 00:00\"", kNowMs},
      {"%Y-%m-%dT%H:%M:%S%z", "\"2026-01-01T01:00:00+0100\"", kNowMs},
      {"%F %T", "\"2026-01-01 00:00:00\"", kNowMs},
      {"%s", "\"1767225600\"", kNowMs},
      {"%y%m%d", "\"260101\"", kNowMs},
  };
  for (const auto& c : cases) {
    config::MappingOptions mapping;
    mapping.ts_format = c.format;
    config::ValidationOptions limits;
    limits.max_future_ms = int64_t{1} << 60;  // only parsing is under test here
    auto result =
        DecodeWith(mapping, limits, R"({"user_id":"u","type":"page_view","ts":)" + c.ts_json + "}");
    ASSERT_TRUE(result.ok) << c.format << " " << c.ts_json << ": " << result.reason;
    EXPECT_EQ(result.event.ts_ms, c.expected_ms) << c.format << " " << c.ts_json;
  }
}

TEST(DecoderTest, RejectsBadTimestamps) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"auto", "\"yesterday\""},
      {"auto", "\"2026-13-01T00:00:00Z\""},
      {"auto", "\"2026-02-30T00:00:00Z\""},
      {"auto", "\"2025-02-29\""},  // not a leap year
      {"auto", "\"2026-01-01T25:00:00Z\""},
      {"auto", "\"2026-01-01T00:00:00+99:00\""},
      {"auto", "\"2026-01-01T00:00:00Zjunk\""},
      {"auto", "\"\""},
      {"auto", "true"},
      {"auto", "[1767225600]"},
      {"auto", "{}"},
      {"auto", "\"nan\""},
      {"auto", "\"inf\""},
      {"auto", "1e300"},
      {"rfc3339", "1767225600"},
      {"epoch_ms", "\"2026-01-01\""},
      {"%Y%m%d", "\"2026-01-01\""},
      {"%Y%m%d", "\"20260101x\""},
      {"%Y%m%d", "1.5"},
      {"%Q", "\"2026\""},                                       // unsupported directive
      {"%Y-%m-%dT%H:%M:%S%z", "\"2025-12-31T46:59:59+0100\""},  // found by the fuzzer
  };
  for (const auto& [format, ts_json] : cases) {
    config::MappingOptions mapping;
    mapping.ts_format = format;
    auto result =
        DecodeWith(mapping, {}, R"({"user_id":"u","type":"page_view","ts":)" + ts_json + "}");
    EXPECT_FALSE(result.ok) << format << " " << ts_json;
    EXPECT_NE(result.reason.find("'ts'"), std::string::npos) << result.reason;
  }
}

TEST(DecoderTest, PatternRangeErrorsSayWhatIsOutOfRange) {
  // Regression: the fuzzer found a use-after-free building this very reason.
  config::MappingOptions mapping;
  mapping.ts_format = "%Y-%m-%dT%H:%M:%S%z";
  auto result = DecodeWith(mapping, {},
                           R"({"user_id":"u","type":"page_view","ts":"2025-12-31T46:59:59+0100"})");
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.reason.find("time of day out of range"), std::string::npos) << result.reason;
  mapping.ts_format = "%Y%m%d";
  auto day = DecodeWith(mapping, {}, R"({"user_id":"u","type":"page_view","ts":"20250230"})");
  EXPECT_FALSE(day.ok);
  EXPECT_NE(day.reason.find("day out of range"), std::string::npos) << day.reason;
}

TEST(DecoderTest, RejectsTimestampsOutsideTheAcceptedWindow) {
  // Two days ahead of "now": over the default 24 h limit; the reason has the value.
  auto future = DecodeDefault(R"({"user_id":"u","type":"page_view","ts":1767398400000})");
  EXPECT_FALSE(future.ok);
  EXPECT_NE(future.reason.find("1767398400000"), std::string::npos) << future.reason;
  EXPECT_NE(future.reason.find("max_future_ms"), std::string::npos) << future.reason;
  // An hour ahead is fine (clock skew).
  EXPECT_TRUE(DecodeDefault(R"({"user_id":"u","type":"page_view","ts":1767229200000})").ok);
  // 1989 is before the default min_ts_ms (1990-01-01).
  auto past = DecodeDefault(R"({"user_id":"u","type":"page_view","ts":"1989-12-31T23:59:59Z"})");
  EXPECT_FALSE(past.ok);
  EXPECT_NE(past.reason.find("min_ts_ms"), std::string::npos) << past.reason;
  EXPECT_FALSE(DecodeDefault(R"({"user_id":"u","type":"page_view","ts":-5})").ok);
  EXPECT_FALSE(DecodeDefault(R"({"user_id":"u","type":"page_view","ts":0})").ok);
}

// ------------------------------------------------------------- bad input --

struct BadCase {
  std::string name;
  std::string json;
  std::string reason_contains;
};

TEST(DecoderTest, RejectsMalformedEventsWithAReasonNamingTheField) {
  const std::string head = R"("user_id":"u","ts":1767225600000)";
  const std::vector<BadCase> cases = {
      {"empty", "", "empty"},
      {"not json", "hello", "not valid JSON"},
      {"array", "[1,2]", "JSON object"},
      {"string", "\"x\"", "JSON object"},
      {"number", "42", "JSON object"},
      {"trailing garbage", R"({"user_id":"u","type":"search","ts":1767225600} x)",
       "not valid JSON"},
      {"two objects", R"({"user_id":"u","type":"search","ts":1767225600}{})", "not valid JSON"},
      {"NaN token", "{" + head + R"(,"type":"purchase","amount":NaN})", "not valid JSON"},
      {"Infinity token", "{" + head + R"(,"type":"purchase","amount":Infinity})", "not valid JSON"},
      {"-Infinity token", "{" + head + R"(,"type":"purchase","amount":-Infinity})",
       "not valid JSON"},
      {"bad literal in unknown field", "{" + head + R"(,"type":"search","x":tru})",
       "not valid JSON"},
      {"missing user_id", R"({"type":"search","ts":1767225600})", "'user_id': missing"},
      {"null user_id", R"({"user_id":null,"type":"search","ts":1767225600})", "'user_id': missing"},
      {"empty user_id", R"({"user_id":"","type":"search","ts":1767225600})", "'user_id'"},
      {"bool user_id", R"({"user_id":true,"type":"search","ts":1767225600})", "'user_id'"},
      {"float user_id", R"({"user_id":1.5,"type":"search","ts":1767225600})", "'user_id'"},
      {"object user_id", R"({"user_id":{},"type":"search","ts":1767225600})", "'user_id'"},
      {"long user_id",
       R"({"user_id":")" + std::string(257, 'a') + R"(","type":"search","ts":1767225600})",
       "'user_id': too long"},
      {"duplicate user_id", R"({"user_id":"a","user_id":"b","type":"search","ts":1767225600})",
       "'user_id': appears twice"},
      {"missing type", "{" + head + "}", "'type': missing"},
      {"number type", "{" + head + R"(,"type":3})", "'type'"},
      {"unknown type", "{" + head + R"(,"type":"checkout"})", "unknown type 'checkout'"},
      {"case matters", "{" + head + R"(,"type":"Purchase"})", "unknown type"},
      {"missing ts", R"({"user_id":"u","type":"search"})", "'ts': missing"},
      {"purchase without amount", "{" + head + R"(,"type":"purchase"})", "'amount': missing"},
      {"refund without amount", "{" + head + R"(,"type":"refund"})", "'amount': missing"},
      {"zero refund", "{" + head + R"(,"type":"refund","amount":0})", "must be > 0 for refund"},
      {"negative amount", "{" + head + R"(,"type":"purchase","amount":-3})",
       "must be >= 0 for purchase, got -3 (negative: set mapping.negative_amount_is_refund"},
      {"negative refund", "{" + head + R"(,"type":"refund","amount":-3})", "must be > 0"},
      {"huge negative amount", "{" + head + R"(,"type":"purchase","amount":-1e300})",
       "must be >= 0"},
      {"huge amount", "{" + head + R"(,"type":"purchase","amount":1e10})", "max_amount"},
      {"epoch seconds as amount", "{" + head + R"(,"type":"purchase","amount":1767225600})",
       "larger than validation.max_amount=1e+09"},
      {"overflowing amount", "{" + head + R"(,"type":"purchase","amount":1e400})",
       "not valid JSON"},
      {"string amount", "{" + head + R"(,"type":"purchase","amount":"ten"})", "'amount'"},
      {"nan string amount", "{" + head + R"(,"type":"purchase","amount":"NaN"})", "'amount'"},
      {"inf string amount", "{" + head + R"(,"type":"purchase","amount":"Infinity"})", "'amount'"},
      {"bool amount", "{" + head + R"(,"type":"purchase","amount":true})", "'amount'"},
      {"bad amount on page_view", "{" + head + R"(,"type":"page_view","amount":[1]})", "'amount'"},
      {"number currency", "{" + head + R"(,"type":"purchase","amount":1,"currency":978})",
       "'currency'"},
      {"array order_id", "{" + head + R"(,"type":"purchase","amount":1,"order_id":[1]})",
       "'order_id'"},
      {"negative items", "{" + head + R"(,"type":"purchase","amount":1,"items":-1})", "'items'"},
      {"fractional items", "{" + head + R"(,"type":"purchase","amount":1,"items":1.5})", "'items'"},
      {"string items", "{" + head + R"(,"type":"purchase","amount":1,"items":"two"})", "'items'"},
      {"huge items", "{" + head + R"(,"type":"purchase","amount":1,"items":1e12})", "'items'"},
      {"bool product_id", "{" + head + R"(,"type":"page_view","product_id":false})",
       "'product_id'"},
      {"object category", "{" + head + R"(,"type":"page_view","category":{}})", "'category'"},
      {"float session_id", "{" + head + R"(,"type":"page_view","session_id":2.5})", "'session_id'"},
      {"array event_id", "{" + head + R"(,"type":"page_view","event_id":[]})", "'event_id'"},
      {"empty event_id", "{" + head + R"(,"type":"page_view","event_id":""})", "'event_id'"},
      {"attrs not object", "{" + head + R"(,"type":"profile","attrs":"gold"})", "'attrs'"},
      {"nested attrs", "{" + head + R"(,"type":"profile","attrs":{"tags":["a"]}})",
       "'attrs': entry 'tags'"},
      {"duplicate attrs", "{" + head + R"(,"type":"profile","attrs":{"a":1,"a":2}})",
       "appears twice"},
  };
  for (const auto& c : cases) {
    auto result = DecodeDefault(c.json);
    EXPECT_FALSE(result.ok) << c.name;
    EXPECT_NE(result.reason.find(c.reason_contains), std::string::npos)
        << c.name << ": reason was: " << result.reason;
    EXPECT_EQ(result.reason.find('\n'), std::string::npos) << c.name;
  }
}

// A free (fully discounted) order is a purchase worth 0; a negative amount is
// a refund only where the mapping says so, and stays within max_amount.
TEST(DecoderTest, ZeroPurchaseCountsAndNegativeAmountsFollowTheMapping) {
  const std::string head = R"({"user_id":"u","ts":1767225600000,"type":)";
  auto zero = DecodeDefault(head + R"("purchase","amount":0})");
  ASSERT_TRUE(zero.ok) << zero.reason;
  EXPECT_EQ(zero.event.kind, EventKind::kPurchase);
  EXPECT_EQ(zero.event.amount, 0.0);

  config::MappingOptions mapping;
  mapping.negative_amount_is_refund = true;
  const config::ValidationOptions limits;
  for (const std::string type : {"purchase", "refund"}) {
    auto negative = DecodeWith(mapping, limits, head + "\"" + type + R"(","amount":-3.5})");
    ASSERT_TRUE(negative.ok) << type << ": " << negative.reason;
    EXPECT_EQ(negative.event.kind, EventKind::kRefund) << type;
    EXPECT_EQ(negative.event.amount, 3.5) << type;
  }
  auto positive = DecodeWith(mapping, limits, head + R"("purchase","amount":3.5})");
  ASSERT_TRUE(positive.ok);
  EXPECT_EQ(positive.event.kind, EventKind::kPurchase);
  auto free = DecodeWith(mapping, limits, head + R"("purchase","amount":0})");
  ASSERT_TRUE(free.ok);
  EXPECT_EQ(free.event.kind, EventKind::kPurchase);
  auto zero_refund = DecodeWith(mapping, limits, head + R"("refund","amount":0})");
  EXPECT_FALSE(zero_refund.ok);
  auto absurd = DecodeWith(mapping, limits, head + R"("purchase","amount":-1e300})");
  EXPECT_FALSE(absurd.ok);
  EXPECT_NE(absurd.reason.find("max_amount"), std::string::npos) << absurd.reason;
  auto on_page_view = DecodeWith(mapping, limits, head + R"("page_view","amount":-3})");
  ASSERT_TRUE(on_page_view.ok);
  EXPECT_EQ(on_page_view.event.kind, EventKind::kPageView);
}

// Data without a value column (mapping.amount_field ""): a purchase is worth
// 1, a refund is rejected; with a value column a missing amount is still a
// per-row error that names the way out.
TEST(DecoderTest, WithoutAValueColumnAPurchaseIsWorthOne) {
  const std::string head = R"({"user_id":"u","ts":1767225600000,"type":)";
  config::MappingOptions counts;
  counts.amount_field = "";
  const config::ValidationOptions limits;
  auto purchase = DecodeWith(counts, limits, head + R"("purchase"})");
  ASSERT_TRUE(purchase.ok) << purchase.reason;
  EXPECT_EQ(purchase.event.kind, EventKind::kPurchase);
  EXPECT_EQ(purchase.event.amount, 1.0);
  // A field of that name, or an empty key, is not an amount then.
  auto with_field = DecodeWith(counts, limits, head + R"("purchase","amount":70,"":5})");
  ASSERT_TRUE(with_field.ok) << with_field.reason;
  EXPECT_EQ(with_field.event.amount, 1.0);
  auto view = DecodeWith(counts, limits, head + R"("page_view"})");
  ASSERT_TRUE(view.ok) << view.reason;
  EXPECT_EQ(view.event.amount, 0.0);
  auto refund = DecodeWith(counts, limits, head + R"("refund"})");
  EXPECT_FALSE(refund.ok);
  EXPECT_NE(refund.reason.find("mapping.amount_field is empty"), std::string::npos)
      << refund.reason;

  auto missing = DecodeDefault(head + R"("purchase"})");
  EXPECT_FALSE(missing.ok);
  EXPECT_NE(missing.reason.find("set mapping.amount_field to \"\""), std::string::npos)
      << missing.reason;
}

TEST(DecoderTest, EventIdGivenTellsAContentHashFromAnId) {
  auto with_id = DecodeDefault(kPurchase);
  ASSERT_TRUE(with_id.ok);
  EXPECT_TRUE(with_id.event.event_id_given);
  auto without = DecodeDefault(R"({"user_id":"u","type":"search","ts":1767225600})");
  ASSERT_TRUE(without.ok);
  EXPECT_FALSE(without.event.event_id_given);
}

TEST(DecoderTest, EveryTruncationOfAValidMessageIsRejected) {
  for (size_t length = 0; length < kPurchase.size(); ++length) {
    auto result = DecodeDefault(std::string_view(kPurchase).substr(0, length));
    EXPECT_FALSE(result.ok) << "prefix of " << length << " bytes was accepted";
    EXPECT_FALSE(result.reason.empty()) << length;
  }
  EXPECT_TRUE(DecodeDefault(kPurchase).ok);
}

TEST(DecoderTest, RejectsInvalidUtf8) {
  const std::vector<std::string> bad_bytes = {
      "\xff", "\xc3\x28", "\xe2\x82", "\xed\xa0\x80", "\xf8\x88\x80\x80\x80", "\xc0\xaf"};
  for (const auto& bytes : bad_bytes) {
    auto in_value =
        DecodeDefault(R"({"user_id":"u)" + bytes + R"(","type":"search","ts":1767225600})");
    EXPECT_FALSE(in_value.ok);
    EXPECT_NE(in_value.reason.find("UTF-8"), std::string::npos) << in_value.reason;
    auto in_unknown_key =
        DecodeDefault(R"({"user_id":"u","type":"search","ts":1767225600,")" + bytes + R"(":1})");
    EXPECT_FALSE(in_unknown_key.ok);
  }
  // Valid multi-byte UTF-8 is fine.
  auto ok = DecodeDefault(R"({"user_id":"jürgen-東京-😀","type":"search","ts":1767225600})");
  ASSERT_TRUE(ok.ok) << ok.reason;
  EXPECT_EQ(ok.event.user_id, "jürgen-東京-😀");
}

TEST(DecoderTest, RejectsMessagesOverTheSizeLimitWithTheirSize) {
  std::string big = R"({"user_id":"u","type":"search","ts":1767225600,"pad":")";
  big += std::string(1 << 20, 'x');
  big += "\"}";
  auto result = DecodeDefault(big);
  EXPECT_FALSE(result.ok);
  EXPECT_NE(result.reason.find(std::to_string(big.size())), std::string::npos) << result.reason;
  EXPECT_NE(result.reason.find("max_message_bytes"), std::string::npos) << result.reason;
  // The same message passes when the limit allows it.
  config::ValidationOptions limits;
  limits.max_message_bytes = 2 << 20;
  EXPECT_TRUE(DecodeWith({}, limits, big).ok);
}

TEST(DecoderTest, ReasonsQuoteAtMostAShortSnippetOfTheInput) {
  std::string long_type(5000, 'z');
  auto result = DecodeDefault(R"({"user_id":"u","ts":1767225600,"type":")" + long_type + "\"}");
  EXPECT_FALSE(result.ok);
  EXPECT_LT(result.reason.size(), 140u) << result.reason;
  auto control = DecodeDefault(R"({"user_id":"u","ts":1767225600,"type":"a\nb"})");
  EXPECT_FALSE(control.ok);
  EXPECT_EQ(control.reason.find('\n'), std::string::npos) << control.reason;
}

// --------------------------------------------------------------- mapping --

TEST(DecoderTest, MappingRenamesFieldsAndAliasesTypes) {
  config::MappingOptions mapping;
  mapping.user_id_field = "customer";
  mapping.type_field = "action";
  mapping.ts_field = "when";
  mapping.amount_field = "value";
  mapping.event_id_field = "id";
  mapping.type_aliases = {{"order", "purchase"}, {"view", "page_view"}, {"broken", "nonsense"}};
  auto order = DecodeWith(
      mapping, {}, R"({"id":"x1","customer":7,"action":"order","when":"2026-01-01","value":9.5})");
  ASSERT_TRUE(order.ok) << order.reason;
  EXPECT_EQ(order.event.user_id, "7");
  EXPECT_EQ(order.event.kind, EventKind::kPurchase);
  EXPECT_DOUBLE_EQ(order.event.amount, 9.5);
  EXPECT_EQ(order.event.event_id_hash, StableHash64("x1"));
  // Canonical names still work; the default field names are now unknown fields.
  auto canonical = DecodeWith(
      mapping, {}, R"({"customer":"c","action":"page_view","when":1767225600,"user_id":5})");
  ASSERT_TRUE(canonical.ok) << canonical.reason;
  EXPECT_EQ(canonical.event.user_id, "c");
  auto missing = DecodeWith(mapping, {}, R"({"user_id":"u","type":"view","ts":1767225600})");
  EXPECT_FALSE(missing.ok);
  EXPECT_NE(missing.reason.find("'customer'"), std::string::npos) << missing.reason;
  auto bad_alias =
      DecodeWith(mapping, {}, R"({"customer":"c","action":"broken","when":1767225600})");
  EXPECT_FALSE(bad_alias.ok);
  EXPECT_NE(bad_alias.reason.find("nonsense"), std::string::npos) << bad_alias.reason;
}

TEST(DecoderTest, DefaultTypeAppliesWhenTheTypeFieldIsAbsent) {
  config::MappingOptions mapping;
  mapping.default_type = "purchase";
  mapping.ts_format = "%Y%m%d";
  auto result =
      DecodeWith(mapping, {}, R"({"user_id":"00004","ts":19970101,"amount":29.33,"items":2})");
  ASSERT_TRUE(result.ok) << result.reason;
  EXPECT_EQ(result.event.kind, EventKind::kPurchase);
  EXPECT_EQ(result.event.ts_ms, 852076800000);
  EXPECT_EQ(result.event.user_id, "00004");
  // An explicit type still wins.
  auto view = DecodeWith(mapping, {}, R"({"user_id":"a","ts":"19970101","type":"page_view"})");
  ASSERT_TRUE(view.ok) << view.reason;
  EXPECT_EQ(view.event.kind, EventKind::kPageView);
}

// ----------------------------------------------------------------- dedup --

TEST(DecoderTest, EventIdHashIsStable) {
  const std::string no_id = R"({"user_id":"u","type":"search","ts":1767225600})";
  Decoder decoder({}, {});
  Event first;
  Event second;
  std::string reason;
  ASSERT_TRUE(decoder.Decode(no_id, kNowMs, &first, &reason)) << reason;
  ASSERT_TRUE(decoder.Decode(no_id, kNowMs, &second, &reason)) << reason;
  EXPECT_EQ(first.event_id_hash, second.event_id_hash);  // same bytes, same id
  EXPECT_EQ(first.event_id_hash, StableHash64(no_id));   // content hash
  Event spaced;
  ASSERT_TRUE(decoder.Decode(R"({"user_id":"u", "type":"search","ts":1767225600})", kNowMs, &spaced,
                             &reason));
  EXPECT_NE(spaced.event_id_hash, first.event_id_hash);  // other bytes, other id
  // event_id wins over the content: two different messages with one id collide.
  Event a;
  Event b;
  ASSERT_TRUE(decoder.Decode(R"({"event_id":"same","user_id":"u","type":"search","ts":1767225600})",
                             kNowMs, &a, &reason));
  ASSERT_TRUE(
      decoder.Decode(R"({"user_id":"v","event_id":"same","type":"page_view","ts":1767225601})",
                     kNowMs, &b, &reason));
  EXPECT_EQ(a.event_id_hash, b.event_id_hash);
  EXPECT_EQ(a.event_id_hash, StableHash64("same"));
  // Known FNV-1a 64 values: the hash is stored in state and must never change.
  EXPECT_EQ(StableHash64(""), 14695981039346656037ULL);
  EXPECT_EQ(StableHash64("a"), 0xaf63dc4c8601ec8cULL);
}

TEST(DecoderTest, ReusedEventCarriesNothingOverFromThePreviousMessage) {
  Decoder decoder({}, {});
  Event event;
  std::string reason;
  ASSERT_TRUE(decoder.Decode(kPurchase, kNowMs, &event, &reason));
  ASSERT_TRUE(
      decoder.Decode(R"({"user_id":"w","type":"profile","ts":1767225600,"attrs":{"a":"b"}})",
                     kNowMs, &event, &reason));
  EXPECT_EQ(event.currency, "");
  EXPECT_EQ(event.order_id, "");
  EXPECT_EQ(event.items, 0);
  EXPECT_EQ(event.amount, 0);
  EXPECT_EQ(event.attrs.size(), 1u);
  EXPECT_FALSE(decoder.Decode("{", kNowMs, &event, &reason));
  EXPECT_TRUE(decoder.Decode(kPurchase, kNowMs, &event, &reason)) << reason;
  EXPECT_EQ(event.attrs.size(), 0u);
  EXPECT_TRUE(reason.empty());
}

// ---------------------------------------------------------- user-id rule --

std::string WithUserId(std::string_view id_json) {
  return R"({"user_id":)" + std::string(id_json) + R"(,"type":"search","ts":1767225600})";
}

// One rule (common/user_id.h), the same one GET /users/{id} applies.
TEST(DecoderTest, UserIdsFollowTheOneUserIdRule) {
  const std::vector<BadCase> bad = {
      {"newline", WithUserId(R"("a\nb")"),
       "must not contain control characters (U+000A at byte 1)"},
      {"tab", WithUserId(R"("\tab")"), "control characters (U+0009 at byte 0)"},
      {"NUL", WithUserId(R"("a\u0000")"), "control characters (U+0000"},
      {"DEL", WithUserId("\"a\x7f\""), "control characters (U+007F"},
      {"C1 control", WithUserId(R"("a\u0085")"), "control characters (U+0085"},
      {"only spaces", WithUserId(R"("   ")"), "must not be only whitespace"},
      {"only ideographic space", WithUserId(R"("\u3000\u00a0 ")"), "only whitespace"},
      {"empty", WithUserId(R"("")"), "must not be empty (a user id is 1..256 bytes)"},
      {"too long", WithUserId("\"" + std::string(257, 'a') + "\""), "too long (257 bytes"},
      {"invalid UTF-8", WithUserId("\"a\xff\""), "not valid JSON"},
  };
  for (const auto& c : bad) {
    auto result = DecodeDefault(c.json);
    EXPECT_FALSE(result.ok) << c.name;
    EXPECT_NE(result.reason.find(c.reason_contains), std::string::npos)
        << c.name << ": reason was: " << result.reason;
    if (c.name != "invalid UTF-8") {
      EXPECT_EQ(result.reason.rfind("field 'user_id': ", 0), 0u) << result.reason;
    }
  }
  // Allowed, byte for byte: spaces inside (and around), Unicode, URL
  // metacharacters; 256 bytes is the longest.
  const std::vector<std::pair<std::string, std::string>> good = {
      {R"("jane doe")", "jane doe"},
      {R"(" padded ")", " padded "},
      {R"("caf\u00e9/\u5317\u4eac")", "caf\xc3\xa9/\xe5\x8c\x97\xe4\xba\xac"},
      {R"("a/b%20c?d#e")", "a/b%20c?d#e"},
      {"\"" + std::string(256, 'z') + "\"", std::string(256, 'z')},
      {"-7", "-7"},
  };
  for (const auto& [json, id] : good) {
    auto result = DecodeDefault(WithUserId(json));
    ASSERT_TRUE(result.ok) << json << ": " << result.reason;
    EXPECT_EQ(result.event.user_id, id);
  }
}

// Numeric ids become their decimal text and numeric-string amounts their
// number (the documented rule); what is not an integer / strict decimal is
// refused with a reason.
TEST(DecoderTest, NumericIdsAndNumericStringAmountsAreNormalised) {
  const std::string head = R"("type":"purchase","ts":1767225600)";
  auto number = DecodeDefault(R"({"user_id":42,"amount":12.5,)" + head + "}");
  auto text = DecodeDefault(R"({"user_id":"42","amount":" 12.5 ",)" + head + "}");
  ASSERT_TRUE(number.ok) << number.reason;
  ASSERT_TRUE(text.ok) << text.reason;
  EXPECT_EQ(number.event.user_id, text.event.user_id);
  EXPECT_DOUBLE_EQ(number.event.amount, text.event.amount);
  for (const char* bad_amount : {R"("12,5")", R"("+12.5")", R"("0x10")", R"("1 2")", R"("")"}) {
    auto result =
        DecodeDefault(std::string(R"({"user_id":"u","amount":)") + bad_amount + "," + head + "}");
    EXPECT_FALSE(result.ok) << bad_amount;
    EXPECT_NE(result.reason.find("'amount': must be a number or a numeric string"),
              std::string::npos)
        << result.reason;
  }
  for (const char* bad_id : {"42.0", "1e3"}) {
    auto result =
        DecodeDefault(std::string(R"({"user_id":)") + bad_id + R"(,"amount":1,)" + head + "}");
    EXPECT_FALSE(result.ok) << bad_id;
    EXPECT_NE(result.reason.find("'user_id': must be a string or an integer"), std::string::npos)
        << result.reason;
  }
}

// NaN / Infinity are not JSON; the reason says so and where, rather than
// the parser's generic error.
TEST(DecoderTest, NonFiniteNumbersAreNamedWithTheirOffset) {
  for (std::string token : {"NaN", "Infinity", "-Infinity", "nan", "-inf"}) {
    const std::string bytes =
        R"({"user_id":"u","type":"purchase","ts":1767225600,"amount":)" + token + "}";
    auto result = DecodeDefault(bytes);
    EXPECT_FALSE(result.ok) << token;
    const std::string want = "not valid JSON: non-finite number '" + token + "' at byte " +
                             std::to_string(bytes.find(token));
    EXPECT_NE(result.reason.find(want), std::string::npos) << result.reason;
  }
  // Inside strings they are text: a product named NaN is fine, and other
  // syntax errors keep the parser's message.
  EXPECT_TRUE(
      DecodeDefault(R"({"user_id":"NaN","type":"search","ts":1767225600,"category":"Infinity"})")
          .ok);
  auto other = DecodeDefault(R"({"user_id":"NaN","type":"search","ts":1767225600,"x":tru})");
  EXPECT_FALSE(other.ok);
  EXPECT_EQ(other.reason.find("non-finite"), std::string::npos) << other.reason;
}

// -------------------------------------------------------------- property --

RC_GTEST_PROP(DecoderProperty, RandomBytesNeverCrashAndAlwaysExplainRejection,
              (const std::vector<uint8_t>& raw)) {
  static Decoder decoder({}, {});
  std::string bytes(raw.begin(), raw.end());
  Event event;
  std::string reason;
  bool ok = decoder.Decode(bytes, kNowMs, &event, &reason);
  if (ok) {
    RC_ASSERT(!event.user_id.empty());
  } else {
    RC_ASSERT(!reason.empty());
    RC_ASSERT(reason.find('\n') == std::string::npos);
  }
}

RC_GTEST_PROP(DecoderProperty, MutatedValidMessagesNeverCrash, (size_t position, uint8_t byte)) {
  static Decoder decoder({}, {});
  std::string bytes = kPurchase;
  bytes[position % bytes.size()] = static_cast<char>(byte);
  Event event;
  std::string reason;
  bool ok = decoder.Decode(bytes, kNowMs, &event, &reason);
  RC_ASSERT(ok || !reason.empty());
  if (ok) RC_ASSERT(event.kind == models::EventKind::kPurchase || !event.user_id.empty());
}

}  // namespace
}  // namespace clv::stream
