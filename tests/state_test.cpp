// Tests of state/: the UserState codec (rapidcheck properties), fp16 rounding,
// and the RocksDB StateStore against real RocksDB in a temporary directory.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <unistd.h>

#include <bit>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <random>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <rapidcheck/gtest.h>
#include <sys/wait.h>

#include "config/config.h"
#include "state/half.h"
#include "state/rocksdb_store.h"
#include "state/state_store.h"
#include "state/user_state.h"
#include "tests/test_support.h"

extern char** environ;

namespace clv::state {
namespace {

// ---------------------------------------------------------------------------
// Generators

// Any double but NaN (NaN != NaN would make equality meaningless), drawn from
// bit patterns so infinities, subnormals and -0 show up.
rc::Gen<double> AnyDouble() {
  return rc::gen::map(rc::gen::arbitrary<uint64_t>(), [](uint64_t bits) {
    const double value = std::bit_cast<double>(bits);
    return std::isnan(value) ? 0.5 : value;
  });
}

rc::Gen<float> AnyFloat() {
  return rc::gen::map(rc::gen::arbitrary<uint32_t>(), [](uint32_t bits) {
    const float value = std::bit_cast<float>(bits);
    return std::isnan(value) ? -0.25f : value;
  });
}

// Floats that fp16 represents exactly.
rc::Gen<float> AnyHalfValue() {
  return rc::gen::map(rc::gen::arbitrary<uint16_t>(), [](uint16_t bits) {
    const float value = HalfToFloat(bits);
    return std::isnan(value) ? 1.0f : value;
  });
}

rc::Gen<UserState> AnyUserState(bool model_state_exact) {
  return rc::gen::exec([model_state_exact] {
    UserState s;
    s.seq = *rc::gen::arbitrary<uint64_t>();
    Aggregates& a = s.aggregates;
    a.first_event_ms = *rc::gen::arbitrary<int64_t>();
    a.last_event_ms = *rc::gen::arbitrary<int64_t>();
    a.first_purchase_ms = *rc::gen::arbitrary<int64_t>();
    a.last_purchase_ms = *rc::gen::arbitrary<int64_t>();
    a.events = *rc::gen::arbitrary<uint32_t>();
    a.purchases = *rc::gen::arbitrary<uint32_t>();
    a.purchase_days = *rc::gen::arbitrary<uint32_t>();
    a.refunds = *rc::gen::arbitrary<uint32_t>();
    a.sessions = *rc::gen::arbitrary<uint32_t>();
    a.cart_adds = *rc::gen::arbitrary<uint32_t>();
    a.views = *rc::gen::arbitrary<uint32_t>();
    a.recent_activity = *rc::gen::arbitrary<uint32_t>();
    a.monetary_total = *AnyDouble();
    a.purchase_value_sum = *AnyDouble();
    a.log_value_sum = *AnyDouble();
    a.log_value_sq_sum = *AnyDouble();
    a.ewma_gap_days = *AnyDouble();
    a.sessions_since_purchase = *rc::gen::arbitrary<uint32_t>();
    a.session_days_after_purchase = *AnyDouble();
    a.recent_sessions = *AnyDouble();
    s.stage = static_cast<Stage>(*rc::gen::inRange(0, 6));
    s.clv = *AnyDouble();
    s.p_purchase = *AnyDouble();
    s.churn_risk = *AnyDouble();
    s.score_ts_ms = *rc::gen::arbitrary<int64_t>();
    s.next_timer_ms = *rc::gen::arbitrary<int64_t>();
    s.partition = *rc::gen::arbitrary<int32_t>();
    s.recent_event_ids = *rc::gen::container<std::vector<uint64_t>>(rc::gen::arbitrary<uint64_t>());
    s.fp16 = *rc::gen::arbitrary<bool>();
    if (s.fp16) {
      s.model_state =
          *rc::gen::container<std::vector<float>>(model_state_exact ? AnyHalfValue() : AnyFloat());
    } else {
      s.model_state = *rc::gen::container<std::vector<float>>(AnyFloat());
    }
    // Arbitrary bytes, '\0' and invalid UTF-8 included.
    s.attrs = *rc::gen::container<std::vector<std::pair<std::string, std::string>>>(
        rc::gen::pair(rc::gen::arbitrary<std::string>(), rc::gen::arbitrary<std::string>()));
    return s;
  });
}

std::string Encoded(const UserState& state) {
  std::string bytes;
  Encode(state, &bytes);
  return bytes;
}

// A realistic state: 64 dedup hashes, some attributes, optional LSTM (h, c).
UserState TypicalState(uint64_t seed, size_t model_floats) {
  UserState s;
  s.seq = 40 + seed % 100;
  s.aggregates.first_event_ms = 1'700'000'000'000 + static_cast<int64_t>(seed);
  s.aggregates.last_event_ms = s.aggregates.first_event_ms + 86'400'000;
  s.aggregates.events = 40;
  s.aggregates.purchases = 3;
  s.aggregates.monetary_total = 123.45 + static_cast<double>(seed);
  s.stage = Stage::kActive;
  s.clv = 321.0;
  s.partition = static_cast<int32_t>(seed % 8);
  for (uint64_t i = 0; i < 64; ++i)
    s.recent_event_ids.push_back((seed + 1) * 0x9e3779b97f4a7c15ull * (i + 1));
  for (size_t i = 0; i < model_floats; ++i) {
    s.model_state.push_back(RoundToFp16(std::sin(static_cast<float>(seed + i))));
  }
  s.attrs = {{"country", "DE"}, {"tier", "gold"}};
  return s;
}

// ---------------------------------------------------------------------------
// Codec properties

RC_GTEST_PROP(UserStateCodec, RoundTripsExactly, ()) {
  const UserState state = *AnyUserState(/*model_state_exact=*/true);
  const std::string bytes = Encoded(state);
  RC_ASSERT(static_cast<uint8_t>(bytes[0]) == kUserStateVersion);
  UserState decoded;
  std::string error;
  RC_ASSERT(Decode(bytes, &decoded, &error));
  RC_ASSERT(error.empty());
  RC_ASSERT(decoded == state);
  RC_ASSERT(Encoded(decoded) == bytes);
}

RC_GTEST_PROP(UserStateCodec, Fp16StoresTheRoundedValue, ()) {
  UserState state = *AnyUserState(/*model_state_exact=*/false);
  state.fp16 = true;
  UserState decoded;
  std::string error;
  RC_ASSERT(Decode(Encoded(state), &decoded, &error));
  RC_ASSERT(decoded.model_state.size() == state.model_state.size());
  for (size_t i = 0; i < state.model_state.size(); ++i) {
    RC_ASSERT(std::bit_cast<uint32_t>(decoded.model_state[i]) ==
              std::bit_cast<uint32_t>(RoundToFp16(state.model_state[i])));
  }
}

RC_GTEST_PROP(UserStateCodec, EveryTruncationIsRejected, ()) {
  const std::string bytes = Encoded(*AnyUserState(true));
  for (size_t length = 0; length < bytes.size(); ++length) {
    UserState decoded;
    std::string error;
    RC_ASSERT(!Decode(std::string_view(bytes).substr(0, length), &decoded, &error));
    RC_ASSERT(error.find("offset") != std::string::npos);
  }
}

RC_GTEST_PROP(UserStateCodec, TrailingBytesAreRejected, ()) {
  const std::string bytes = Encoded(*AnyUserState(true)) + *rc::gen::nonEmpty<std::string>();
  UserState decoded;
  std::string error;
  RC_ASSERT(!Decode(bytes, &decoded, &error));
  RC_ASSERT(error.find("trailing") != std::string::npos);
}

// Garbage and corrupted encodings never crash (the sanitizer build checks the
// reads), and a failed Decode leaves the output untouched.
RC_GTEST_PROP(UserStateCodec, GarbageNeverCrashes, ()) {
  std::string bytes = Encoded(*AnyUserState(true));
  const auto flips = *rc::gen::container<std::vector<std::pair<size_t, uint8_t>>>(
      rc::gen::pair(rc::gen::arbitrary<size_t>(), rc::gen::arbitrary<uint8_t>()));
  for (const auto& [position, value] : flips)
    bytes[position % bytes.size()] = static_cast<char>(value);
  UserState sentinel;
  sentinel.seq = 777;
  UserState decoded = sentinel;
  std::string error;
  if (!Decode(bytes, &decoded, &error)) {
    RC_ASSERT(!error.empty());
    RC_ASSERT(decoded == sentinel);
  }
  const std::string garbage = *rc::gen::arbitrary<std::string>();
  (void)Decode(garbage, &decoded, &error);
}

TEST(UserStateCodec, ErrorsNameFieldAndOffset) {
  UserState state = TypicalState(1, 4);
  std::string bytes = Encoded(state);
  UserState decoded;
  std::string error;

  std::string newer = bytes;
  newer[0] = static_cast<char>(kUserStateVersion + 1);
  EXPECT_FALSE(Decode(newer, &decoded, &error));
  EXPECT_NE(error.find("unsupported version"), std::string::npos) << error;

  // A count far larger than the input: rejected before allocating. In the
  // default state every varint is one byte: version, 13 varints, 5 doubles,
  // 1 varint and 2 doubles (version 2), stage, 3 doubles, 3 varints, then the
  // recent_event_ids count.
  const size_t count_offset = 1 + 13 + 5 * 8 + 1 + 2 * 8 + 1 + 3 * 8 + 3;
  std::string huge = Encoded(UserState{});
  ASSERT_EQ(huge[count_offset], '\0');
  huge.replace(count_offset, 1, "\xff\xff\xff\xff\x0f");  // ~4e9 ids
  EXPECT_FALSE(Decode(huge, &decoded, &error));
  EXPECT_EQ(error, "user state: bad recent_event_ids at byte offset " +
                       std::to_string(count_offset) + " of " + std::to_string(huge.size()) +
                       ": count larger than the bytes left");

  // Unknown stage value.
  UserState probe;
  std::string probe_bytes = Encoded(probe);
  // Default state: version, 13 one-byte varints, 5 doubles, 1 varint and 2
  // doubles, then the stage.
  const size_t stage_offset = 1 + 13 + 5 * 8 + 1 + 2 * 8;
  ASSERT_EQ(probe_bytes[stage_offset], '\0');
  probe_bytes[stage_offset] = 9;
  EXPECT_FALSE(Decode(probe_bytes, &decoded, &error));
  EXPECT_EQ(error, "user state: bad stage at byte offset " + std::to_string(stage_offset) +
                       ": unknown value 9");
}

// Stores written before the browsing aggregates (version 1) still open: the
// record decodes with those aggregates at 0 and everything else intact.
TEST(UserStateCodec, Version1RecordsDecodeWithoutTheBrowsingAggregates) {
  // Small counters and times keep every varint before the version 2 block at
  // one byte: version, 13 varints, 5 doubles, then the block (a one-byte
  // varint and two doubles).
  UserState state = TypicalState(3, 128);
  state.seq = 9;
  Aggregates& a = state.aggregates;
  a.first_event_ms = 1;
  a.last_event_ms = 2;
  a.first_purchase_ms = 3;
  a.last_purchase_ms = 4;
  a.events = 5;
  a.purchases = 2;
  a.purchase_days = 2;
  a.refunds = 0;
  a.sessions = 3;
  a.cart_adds = 1;
  a.views = 2;
  a.recent_activity = 1;
  a.sessions_since_purchase = 0;
  a.session_days_after_purchase = 0;
  a.recent_sessions = 0;
  const std::string bytes = Encoded(state);
  const size_t block = 1 + 13 + 5 * 8;
  std::string v1 = bytes;
  v1[0] = 1;
  v1.erase(block, 1 + 2 * 8);
  UserState decoded;
  std::string error;
  ASSERT_TRUE(Decode(v1, &decoded, &error)) << error;
  EXPECT_EQ(decoded, state);
  // Written again, it is a version 2 record with the block in place.
  EXPECT_EQ(Encoded(decoded), bytes);
  // The same cut under version 2 is caught, not misread.
  std::string cut = bytes;
  cut.erase(block, 1 + 2 * 8);
  EXPECT_FALSE(Decode(cut, &decoded, &error));
}

TEST(UserStateCodec, CompactForTypicalStates) {
  // Baseline: the dedup window dominates (64 x 8 bytes).
  const size_t baseline = Encoded(TypicalState(7, 0)).size();
  EXPECT_LT(baseline, 700u);
  // LSTM hidden 64: h and c, 128 floats, 2 bytes each in fp16.
  UserState lstm = TypicalState(7, 128);
  EXPECT_EQ(Encoded(lstm).size(), baseline + 128 * 2 + 1);  // +1: the count varint grows
  lstm.fp16 = false;
  EXPECT_EQ(Encoded(lstm).size(), baseline + 128 * 4 + 1);
}

// ---------------------------------------------------------------------------
// fp16

TEST(Half, KnownValues) {
  struct Case {
    float input;
    uint16_t half;
  };
  const float inf = std::numeric_limits<float>::infinity();
  const Case cases[] = {
      {0.0f, 0x0000},
      {-0.0f, 0x8000},
      {1.0f, 0x3c00},
      {-2.0f, 0xc000},
      {0.5f, 0x3800},
      {0.1f, 0x2e66},         // 0.0999755859375
      {1.0f / 3.0f, 0x3555},  // 0.333251953125
      {65504.0f, 0x7bff},     // largest finite
      {65519.0f, 0x7bff},     // just below the halfway to 65536
      {65520.0f, 0x7c00},     // halfway: ties to even = overflow to inf
      {1e9f, 0x7c00},
      {-1e9f, 0xfc00},
      {inf, 0x7c00},
      {-inf, 0xfc00},
      {std::ldexp(1.0f, -14), 0x0400},         // smallest normal
      {std::ldexp(1.0f, -24), 0x0001},         // smallest subnormal
      {std::ldexp(1023.0f, -24), 0x03ff},      // largest subnormal
      {std::ldexp(1.0f, -25), 0x0000},         // halfway to the smallest: ties to even = 0
      {std::ldexp(1.5f, -25), 0x0001},         // above halfway rounds up
      {std::ldexp(3.0f, -25), 0x0002},         // 1.5 x smallest: tie, to even (2)
      {std::ldexp(5.0f, -25), 0x0002},         // 2.5 x smallest: tie, to even (2)
      {std::ldexp(1.0f, -30), 0x0000},         // underflow
      {1.0f + std::ldexp(1.0f, -11), 0x3c00},  // tie between 0x3c00 and 0x3c01: even
      {1.0f + std::ldexp(3.0f, -11), 0x3c02},  // tie between 0x3c01 and 0x3c02: even
      {1.0f + std::ldexp(1.0f, -11) + std::ldexp(1.0f, -20), 0x3c01},  // just above a tie
      {2047.0f / 1024.0f + std::ldexp(1.0f, -11), 0x4000},             // carry into exponent
  };
  for (const Case& c : cases) {
    EXPECT_EQ(FloatToHalf(c.input), c.half) << "input " << c.input;
  }
  EXPECT_EQ(HalfToFloat(0x3c00), 1.0f);
  EXPECT_EQ(HalfToFloat(0x7bff), 65504.0f);
  EXPECT_EQ(HalfToFloat(0x0001), std::ldexp(1.0f, -24));
  EXPECT_EQ(HalfToFloat(0x03ff), std::ldexp(1023.0f, -24));
  EXPECT_EQ(HalfToFloat(0xfc00), -inf);
  EXPECT_TRUE(std::isnan(HalfToFloat(0x7e00)));
  EXPECT_TRUE(std::isnan(RoundToFp16(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(RoundToFp16(0.1f), 0.0999755859375f);
}

// Every half converts to a float and back to itself; the float midway between
// two neighbouring halves rounds to the even one, and one float ulp either
// side of it rounds to the nearer one.
TEST(Half, AllHalvesAndAllTies) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const uint16_t half = static_cast<uint16_t>(bits);
    const float value = HalfToFloat(half);
    if (std::isnan(value)) continue;
    ASSERT_EQ(FloatToHalf(value), half) << "half 0x" << std::hex << bits;
    const uint16_t next = static_cast<uint16_t>(half + 1);
    if ((half & 0x7fff) >= 0x7c00) continue;  // inf has no next
    // Past the largest finite half, rounding treats inf as the next step (65536).
    const float next_value =
        (next & 0x7fff) == 0x7c00 ? std::copysign(65536.0f, value) : HalfToFloat(next);
    const float midpoint = (value + next_value) / 2;  // exact: needs 12 mantissa bits
    const uint16_t even = (half & 1) == 0 ? half : next;
    ASSERT_EQ(FloatToHalf(midpoint), even) << "tie after half 0x" << std::hex << bits;
    const float toward_half = std::nextafter(midpoint, value);
    const float toward_next = std::nextafter(midpoint, next_value);
    ASSERT_EQ(FloatToHalf(toward_half), half) << "below tie after 0x" << std::hex << bits;
    ASSERT_EQ(FloatToHalf(toward_next), next) << "above tie after 0x" << std::hex << bits;
  }
}

// The bulk rounding (F16C where the CPU has it) gives the scalar code's bits
// for every sign and exponent (NaN and inf included), every value of the 13
// mantissa bits a rounding looks at, and several upper mantissa bits; also at
// lengths that leave a tail for the scalar code.
TEST(Half, BulkRoundingHasTheScalarBits) {
  std::vector<float> values;
  std::vector<uint32_t> expected;
  values.reserve(1u << 24);
  for (uint32_t sign = 0; sign < 2; ++sign) {
    for (uint32_t exponent = 0; exponent < 256; ++exponent) {
      for (uint32_t upper : {0u, 1u, 0x155u, 0x3feu, 0x3ffu}) {
        for (uint32_t low = 0; low < 0x2000; ++low) {
          const uint32_t bits = (sign << 31) | (exponent << 23) | (upper << 13) | low;
          const float value = std::bit_cast<float>(bits);
          values.push_back(value);
          expected.push_back(std::bit_cast<uint32_t>(RoundToFp16(value)));
        }
      }
    }
  }
  for (size_t n : {values.size(), size_t{13}, size_t{7}}) {
    std::vector<float> bulk(values.begin(), values.begin() + static_cast<std::ptrdiff_t>(n));
    RoundToFp16(bulk.data(), bulk.size());
    for (size_t i = 0; i < n; ++i) {
      ASSERT_EQ(std::bit_cast<uint32_t>(bulk[i]), expected[i])
          << "float bits 0x" << std::hex << std::bit_cast<uint32_t>(values[i])
          << (Fp16UsesF16c() ? " (F16C)" : " (scalar)");
    }
  }
  std::printf("bulk fp16 rounding: %s\n", Fp16UsesF16c() ? "F16C" : "scalar");
}

#if defined(__FLT16_MANT_DIG__)
// The compiler's own conversion (round to nearest even) over a spread of
// float bit patterns, every exponent included.
TEST(Half, MatchesCompilerConversion) {
  for (uint64_t bits = 0; bits <= 0xffffffffull; bits += 4093) {
    const float value = std::bit_cast<float>(static_cast<uint32_t>(bits));
    if (std::isnan(value)) continue;
    const _Float16 reference = static_cast<_Float16>(value);
    ASSERT_EQ(FloatToHalf(value), std::bit_cast<uint16_t>(reference))
        << "float bits 0x" << std::hex << bits;
  }
}
#endif

// ---------------------------------------------------------------------------
// RocksDB store

config::StateOptions OptionsFor(const testing::TempDir& dir) {
  config::StateOptions options;
  options.dir = (dir.path() / "state").string();
  options.block_cache_bytes = 8 << 20;
  return options;
}

std::unique_ptr<StateStore> OpenOrDie(const config::StateOptions& options) {
  std::unique_ptr<StateStore> store;
  const Status status = OpenRocksDbStore(options, &store);
  EXPECT_TRUE(status.ok()) << status.message;
  return store;
}

UserState StateWithSeq(uint64_t seq) {
  UserState state = TypicalState(seq, 8);
  state.seq = seq;
  return state;
}

TEST(RocksDbStore, CommitThenReopenShowsEverything) {
  testing::TempDir dir;
  const auto options = OptionsFor(dir);
  {
    auto store = OpenOrDie(options);
    ASSERT_TRUE(store);
    CommitBatch batch;
    batch.users.push_back({"alice", StateWithSeq(3)});
    batch.users.push_back({std::string("bob\0zero", 8), StateWithSeq(5)});
    batch.timers_added.push_back({2, 1'700'000'000'000, "alice"});
    batch.offsets.push_back({"orders", 0, 1234});
    batch.offsets.push_back({"orders", 7, 99});
    batch.offsets.push_back({"clickstream", 1, 5});
    batch.meta.push_back({std::string(kMetaModelVersionKey), "lstm-3"});
    ASSERT_TRUE(store->Commit(batch).ok());
  }
  auto store = OpenOrDie(options);
  ASSERT_TRUE(store);
  std::optional<UserState> alice;
  ASSERT_TRUE(store->GetUser("alice", &alice).ok());
  ASSERT_TRUE(alice.has_value());
  EXPECT_EQ(*alice, StateWithSeq(3));
  std::optional<UserState> bob;
  ASSERT_TRUE(store->GetUser(std::string("bob\0zero", 8), &bob).ok());
  ASSERT_TRUE(bob.has_value());
  EXPECT_EQ(bob->seq, 5u);

  std::optional<int64_t> offset;
  ASSERT_TRUE(store->GetOffset("orders", 0, &offset).ok());
  EXPECT_EQ(offset, 1234);
  ASSERT_TRUE(store->GetOffset("orders", 3, &offset).ok());
  EXPECT_FALSE(offset.has_value());
  std::vector<TopicPartitionOffset> all;
  ASSERT_TRUE(store->GetAllOffsets(&all).ok());
  ASSERT_EQ(all.size(), 3u);
  EXPECT_EQ(all[0].topic, "clickstream");
  EXPECT_EQ(all[1].topic, "orders");
  EXPECT_EQ(all[1].partition, 0);
  EXPECT_EQ(all[1].offset, 1234);
  EXPECT_EQ(all[2].partition, 7);
  EXPECT_EQ(all[2].offset, 99);

  std::vector<TimerEntry> timers;
  ASSERT_TRUE(store->DueTimers(2, 1'800'000'000'000, 10, &timers).ok());
  ASSERT_EQ(timers.size(), 1u);
  EXPECT_EQ(timers[0], (TimerEntry{2, 1'700'000'000'000, "alice"}));

  std::optional<std::string> model;
  ASSERT_TRUE(store->GetMeta(kMetaModelVersionKey, &model).ok());
  EXPECT_EQ(model, "lstm-3");
  std::optional<std::string> schema;
  ASSERT_TRUE(store->GetMeta(kMetaSchemaVersionKey, &schema).ok());
  EXPECT_EQ(schema, std::to_string(kStateSchemaVersion));
}

TEST(RocksDbStore, NothingVisibleBeforeCommitAndDeletesApply) {
  testing::TempDir dir;
  auto store = OpenOrDie(OptionsFor(dir));
  ASSERT_TRUE(store);
  std::optional<UserState> state;
  ASSERT_TRUE(store->GetUser("carol", &state).ok());
  EXPECT_FALSE(state.has_value());
  CommitBatch put;
  put.users.push_back({"carol", StateWithSeq(1)});
  ASSERT_TRUE(store->Commit(put).ok());
  ASSERT_TRUE(store->GetUser("carol", &state).ok());
  EXPECT_TRUE(state.has_value());
  CommitBatch remove;
  remove.deleted_users.push_back("carol");
  ASSERT_TRUE(store->Commit(remove).ok());
  ASSERT_TRUE(store->GetUser("carol", &state).ok());
  EXPECT_FALSE(state.has_value());
  ASSERT_TRUE(store->Commit(CommitBatch{}).ok());  // empty commit is fine
}

TEST(RocksDbStore, MultiGetWithMissingUsers) {
  testing::TempDir dir;
  auto store = OpenOrDie(OptionsFor(dir));
  ASSERT_TRUE(store);
  CommitBatch batch;
  for (uint64_t i = 0; i < 50; i += 2)
    batch.users.push_back({"u" + std::to_string(i), StateWithSeq(i)});
  ASSERT_TRUE(store->Commit(batch).ok());
  std::vector<std::string> ids;
  for (int i = 49; i >= 0; --i) ids.push_back("u" + std::to_string(i));  // unsorted on purpose
  ids.push_back("u0");                                                   // duplicates are allowed
  std::vector<std::optional<UserState>> states;
  ASSERT_TRUE(store->MultiGetUsers(ids, &states).ok());
  ASSERT_EQ(states.size(), ids.size());
  for (size_t k = 0; k < ids.size(); ++k) {
    const uint64_t i = std::stoull(ids[k].substr(1));
    if (i % 2 == 0) {
      ASSERT_TRUE(states[k].has_value()) << ids[k];
      EXPECT_EQ(*states[k], StateWithSeq(i)) << ids[k];
    } else {
      EXPECT_FALSE(states[k].has_value()) << ids[k];
    }
  }
  ASSERT_TRUE(store->MultiGetUsers({}, &states).ok());
  EXPECT_TRUE(states.empty());
}

TEST(RocksDbStore, EventIdsAreSeenOnlyOnceCommittedAndSurviveReopenAndExpiry) {
  testing::TempDir dir;
  const auto options = OptionsFor(dir);
  std::vector<EventIdEntry> committed, fresh;
  for (uint64_t i = 0; i < 2000; ++i) {
    // Same hashes on other days are other ids.
    committed.push_back({static_cast<int32_t>(20000 + i % 3), i * 0x9E3779B97F4A7C15ULL});
    fresh.push_back({static_cast<int32_t>(20003 + i % 3), i * 0x9E3779B97F4A7C15ULL});
  }
  std::vector<EventIdEntry> both = committed;
  both.insert(both.end(), fresh.begin(), fresh.end());
  auto expect_seen = [&](StateStore& store, const std::string& when) {
    std::vector<bool> seen;
    ASSERT_TRUE(store.SeenEventIds(both, &seen).ok()) << when;
    ASSERT_EQ(seen.size(), both.size()) << when;
    for (size_t i = 0; i < both.size(); ++i) {
      ASSERT_EQ(seen[i], i < committed.size())
          << when << ": id " << i << " day " << both[i].day << " hash " << both[i].hash;
    }
  };
  {
    auto store = OpenOrDie(options);
    ASSERT_TRUE(store);
    std::vector<bool> seen;
    ASSERT_TRUE(store->SeenEventIds(committed, &seen).ok());
    EXPECT_EQ(std::count(seen.begin(), seen.end(), true), 0) << "nothing committed yet";
    CommitBatch batch;
    batch.event_ids_added = committed;
    ASSERT_TRUE(store->Commit(batch).ok());
    expect_seen(*store, "after the commit");
    // Expiring days before 20000 (none of ours) changes no answer, also for
    // the memtable that now holds a range tombstone.
    CommitBatch expire;
    expire.event_ids_expire_before_day = 20000;
    ASSERT_TRUE(store->Commit(expire).ok());
    expect_seen(*store, "after expiring older days");
  }
  auto store = OpenOrDie(options);
  ASSERT_TRUE(store);
  expect_seen(*store, "after reopening");
}

TEST(RocksDbStore, DueTimersOrderLimitPartitionsAndRemoval) {
  testing::TempDir dir;
  auto store = OpenOrDie(OptionsFor(dir));
  ASSERT_TRUE(store);
  CommitBatch batch;
  batch.timers_added = {
      {1, 300, "c"}, {1, 100, "b"}, {1, 100, "a"},  {1, 200, "d"},     {1, 400, "e"},
      {0, 50, "p0"}, {2, 10, "p2"}, {-1, 5, "neg"}, {1, -20, "early"},
  };
  ASSERT_TRUE(store->Commit(batch).ok());

  std::vector<TimerEntry> due;
  ASSERT_TRUE(store->DueTimers(1, 300, 100, &due).ok());
  const std::vector<TimerEntry> expected = {
      {1, -20, "early"}, {1, 100, "a"}, {1, 100, "b"}, {1, 200, "d"}, {1, 300, "c"}};
  EXPECT_EQ(due, expected);  // (due_ms, user) order, inclusive bound, partition 1 only

  ASSERT_TRUE(store->DueTimers(1, 1000, 2, &due).ok());
  EXPECT_EQ(due, (std::vector<TimerEntry>{{1, -20, "early"}, {1, 100, "a"}}));
  ASSERT_TRUE(store->DueTimers(1, 99, 100, &due).ok());
  EXPECT_EQ(due, (std::vector<TimerEntry>{{1, -20, "early"}}));
  ASSERT_TRUE(store->DueTimers(3, 1000, 100, &due).ok());
  EXPECT_TRUE(due.empty());
  ASSERT_TRUE(store->DueTimers(-1, 1000, 100, &due).ok());
  EXPECT_EQ(due, (std::vector<TimerEntry>{{-1, 5, "neg"}}));
  ASSERT_TRUE(store->DueTimers(1, std::numeric_limits<int64_t>::max(), 100, &due).ok());
  EXPECT_EQ(due.size(), 6u);

  // Re-arm "a" later and drop "early", in one commit.
  CommitBatch rearm;
  rearm.timers_removed = {{1, 100, "a"}, {1, -20, "early"}, {1, 200, "d"}};
  rearm.timers_added = {{1, 500, "a"}, {1, 200, "d"}};  // removed and re-added: stays
  ASSERT_TRUE(store->Commit(rearm).ok());
  ASSERT_TRUE(store->DueTimers(1, 1000, 100, &due).ok());
  EXPECT_EQ(due, (std::vector<TimerEntry>{
                     {1, 100, "b"}, {1, 200, "d"}, {1, 300, "c"}, {1, 400, "e"}, {1, 500, "a"}}));
}

TEST(RocksDbStore, SnapshotDoesNotSeeLaterCommits) {
  testing::TempDir dir;
  auto store = OpenOrDie(OptionsFor(dir));
  ASSERT_TRUE(store);
  CommitBatch first;
  first.users = {{"a", StateWithSeq(1)}, {"b", StateWithSeq(1)}};
  ASSERT_TRUE(store->Commit(first).ok());

  auto snapshot = store->Snapshot();
  ASSERT_TRUE(snapshot);
  CommitBatch second;
  second.users = {{"a", StateWithSeq(2)}, {"c", StateWithSeq(2)}};
  second.deleted_users = {"b"};
  ASSERT_TRUE(store->Commit(second).ok());

  // Read from another thread, as the HTTP server does.
  std::vector<std::pair<std::string, uint64_t>> seen;
  std::optional<UserState> a_in_snapshot;
  Status scan_status;
  Status get_status;
  std::thread reader([&] {
    get_status = snapshot->GetUser("a", &a_in_snapshot);
    scan_status = snapshot->ForEachUser([&](std::string_view id, const UserState& state) {
      seen.emplace_back(std::string(id), state.seq);
      return true;
    });
  });
  reader.join();
  ASSERT_TRUE(get_status.ok()) << get_status.message;
  ASSERT_TRUE(scan_status.ok()) << scan_status.message;
  ASSERT_TRUE(a_in_snapshot.has_value());
  EXPECT_EQ(a_in_snapshot->seq, 1u);
  EXPECT_EQ(seen, (std::vector<std::pair<std::string, uint64_t>>{{"a", 1}, {"b", 1}}));

  std::optional<UserState> a_now;
  ASSERT_TRUE(store->GetUser("a", &a_now).ok());
  EXPECT_EQ(a_now->seq, 2u);
  // ForEachUser stops when asked.
  int visited = 0;
  ASSERT_TRUE(store->Snapshot()
                  ->ForEachUser([&](std::string_view, const UserState&) {
                    ++visited;
                    return false;
                  })
                  .ok());
  EXPECT_EQ(visited, 1);
}

TEST(RocksDbStore, ReadOnlyOpenWhileNoWriter) {
  testing::TempDir dir;
  const auto options = OptionsFor(dir);
  std::unique_ptr<StateStore> store;
  Status status = OpenRocksDbStoreReadOnly(options, &store);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message.find(options.dir), std::string::npos) << status.message;
  EXPECT_NE(status.message.find("read-only"), std::string::npos) << status.message;
  {
    auto writer = OpenOrDie(options);
    ASSERT_TRUE(writer);
    CommitBatch batch;
    batch.users = {{"dave", StateWithSeq(9)}};
    batch.offsets = {{"orders", 2, 77}};
    ASSERT_TRUE(writer->Commit(batch).ok());
  }  // closed without a flush: the data lives in the WAL only
  status = OpenRocksDbStoreReadOnly(options, &store);
  ASSERT_TRUE(status.ok()) << status.message;
  std::optional<UserState> dave;
  ASSERT_TRUE(store->GetUser("dave", &dave).ok());
  ASSERT_TRUE(dave.has_value());
  EXPECT_EQ(dave->seq, 9u);
  std::optional<int64_t> offset;
  ASSERT_TRUE(store->GetOffset("orders", 2, &offset).ok());
  EXPECT_EQ(offset, 77);
  int users = 0;
  ASSERT_TRUE(store->Snapshot()
                  ->ForEachUser([&](std::string_view, const UserState&) {
                    ++users;
                    return true;
                  })
                  .ok());
  EXPECT_EQ(users, 1);
  CommitBatch write;
  write.users = {{"eve", StateWithSeq(1)}};
  status = store->Commit(write);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message.find("read-only"), std::string::npos) << status.message;
}

TEST(RocksDbStore, ANewStateDirectoryOpensWithoutAnErrorInTheLog) {
  // Opening a directory that does not exist yet is the normal first start:
  // the log must not show an error line for it (RocksDB's own "dir
  // NotFound"), nor for a read-only open that is refused.
  testing::TempDir dir;
  auto options = OptionsFor(dir);
  options.dir = (dir.path() / "a" / "new" / "state").string();
  ::testing::internal::CaptureStderr();
  std::unique_ptr<StateStore> refused;
  const Status read_only = OpenRocksDbStoreReadOnly(options, &refused);
  std::unique_ptr<StateStore> store = OpenOrDie(options);
  const std::string log = ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(read_only.ok());
  EXPECT_NE(read_only.message.find("no clvstream state here"), std::string::npos)
      << read_only.message;
  ASSERT_TRUE(store);
  EXPECT_EQ(log.find("level=error"), std::string::npos) << log;
  EXPECT_EQ(log.find("NotFound"), std::string::npos) << log;
}

TEST(RocksDbStore, SecondWriterIsRefusedWithTheDirectoryNamed) {
  testing::TempDir dir;
  const auto options = OptionsFor(dir);
  auto first = OpenOrDie(options);
  ASSERT_TRUE(first);
  std::unique_ptr<StateStore> second;
  const Status status = OpenRocksDbStore(options, &second);
  EXPECT_FALSE(status.ok());
  EXPECT_NE(status.message.find(options.dir), std::string::npos) << status.message;
  EXPECT_NE(status.message.find("another clvstream process"), std::string::npos) << status.message;
}

TEST(RocksDbStore, NewerSchemaVersionIsRefused) {
  testing::TempDir dir;
  const auto options = OptionsFor(dir);
  {
    auto store = OpenOrDie(options);
    ASSERT_TRUE(store);
    CommitBatch batch;
    batch.meta = {{std::string(kMetaSchemaVersionKey), std::to_string(kStateSchemaVersion + 1)}};
    ASSERT_TRUE(store->Commit(batch).ok());
  }
  for (bool read_only : {false, true}) {
    std::unique_ptr<StateStore> store;
    const Status status =
        read_only ? OpenRocksDbStoreReadOnly(options, &store) : OpenRocksDbStore(options, &store);
    EXPECT_FALSE(status.ok());
    EXPECT_FALSE(store);
    EXPECT_NE(status.message.find(options.dir), std::string::npos) << status.message;
    EXPECT_NE(status.message.find("schema version " + std::to_string(kStateSchemaVersion + 1) +
                                  " is newer than this build supports (" +
                                  std::to_string(kStateSchemaVersion) + ")"),
              std::string::npos)
        << status.message;
  }
}

TEST(RocksDbStore, ApproximateSizes) {
  testing::TempDir dir;
  auto store = OpenOrDie(OptionsFor(dir));
  ASSERT_TRUE(store);
  CommitBatch batch;
  for (uint64_t i = 0; i < 1000; ++i)
    batch.users.push_back({"user-" + std::to_string(i), StateWithSeq(i)});
  ASSERT_TRUE(store->Commit(batch).ok());
  EXPECT_GT(store->ApproximateUsers(), 500u);
  EXPECT_LT(store->ApproximateUsers(), 2000u);
  EXPECT_GT(store->ApproximateBytes(), 1000u * 500u);  // ~700-byte states, in the WAL
}

// ---------------------------------------------------------------------------
// Crash atomicity: a child process commits (user states + offset) in a loop
// and is killed with SIGKILL mid-stream; after reopening, every user's seq
// equals the stored offset, i.e. no commit was half applied.

constexpr const char* kCrashWriterEnv = "CLV_STATE_TEST_CRASH_WRITER_DIR";
// Few small users per commit, so most of the writer's time is inside Commit().
constexpr int kCrashWriterUsers = 3;
// File descriptor the child writes its "under way" byte to (gtest owns stdout).
constexpr const char* kCrashWriterFdEnv = "CLV_STATE_TEST_CRASH_WRITER_FD";

void RunCrashWriter(const char* dir, int ready_fd) {
  config::StateOptions options;
  options.dir = dir;
  options.block_cache_bytes = 8 << 20;
  std::unique_ptr<StateStore> store;
  if (!OpenRocksDbStore(options, &store).ok()) _exit(3);
  for (int64_t i = 1; i <= 200'000; ++i) {
    CommitBatch batch;
    for (int user = 0; user < kCrashWriterUsers; ++user) {
      UserState state = TypicalState(static_cast<uint64_t>(user), 0);
      state.seq = static_cast<uint64_t>(i);
      batch.users.push_back({"user-" + std::to_string(user), std::move(state)});
    }
    batch.offsets.push_back({"orders", 0, i});
    if (!store->Commit(batch).ok()) _exit(4);
    if (i == 50) {  // tell the parent we are well under way
      const char ready = 'r';
      if (write(ready_fd, &ready, 1) != 1) _exit(5);
    }
  }
  _exit(0);
}

// In the child (this test binary re-executed with kCrashWriterEnv set) the
// writer runs from the global test environment, i.e. after main() started and
// every static initializer ran, and never returns.
class CrashWriterEnvironment : public ::testing::Environment {
 public:
  void SetUp() override {
    const char* dir = std::getenv(kCrashWriterEnv);
    const char* fd = std::getenv(kCrashWriterFdEnv);
    if (dir != nullptr && fd != nullptr) RunCrashWriter(dir, std::atoi(fd));
  }
};
// gtest takes ownership of the environment.
[[maybe_unused]] ::testing::Environment* const kCrashWriterEnvironment =
    ::testing::AddGlobalTestEnvironment(std::make_unique<CrashWriterEnvironment>().release());

TEST(RocksDbStore, CommitIsAtomicAcrossProcessKill) {
  testing::TempDir dir;
  const auto options = OptionsFor(dir);
  std::minstd_rand random(std::random_device{}());
  for (int round = 0; round < 8; ++round) {
    int pipe_fds[2];
    ASSERT_EQ(pipe(pipe_fds), 0);
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_addclose(&actions, pipe_fds[0]);
    posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
    std::vector<std::string> env_strings;
    for (char** e = environ; *e != nullptr; ++e) env_strings.emplace_back(*e);
    env_strings.push_back(std::string(kCrashWriterEnv) + "=" + options.dir);
    env_strings.push_back(std::string(kCrashWriterFdEnv) + "=" + std::to_string(pipe_fds[1]));
    std::vector<char*> env;
    for (std::string& s : env_strings) env.push_back(s.data());
    env.push_back(nullptr);
    std::string self = "/proc/self/exe";
    std::string filter = "--gtest_filter=RocksDbStore.CommitIsAtomicAcrossProcessKill";
    char* argv[] = {self.data(), filter.data(), nullptr};
    pid_t child = 0;
    ASSERT_EQ(posix_spawn(&child, "/proc/self/exe", &actions, nullptr, argv, env.data()), 0);
    posix_spawn_file_actions_destroy(&actions);
    close(pipe_fds[1]);
    char ready = 0;
    const ssize_t got = read(pipe_fds[0], &ready, 1);
    close(pipe_fds[0]);
    // Kill at a different point of the commit stream each round.
    std::this_thread::sleep_for(std::chrono::microseconds(random() % 3000));
    kill(child, SIGKILL);
    int wait_status = 0;
    ASSERT_EQ(waitpid(child, &wait_status, 0), child);
    ASSERT_EQ(got, 1) << "crash writer did not start (exit status " << wait_status << ")";

    auto store = OpenOrDie(options);
    ASSERT_TRUE(store);
    std::optional<int64_t> offset;
    ASSERT_TRUE(store->GetOffset("orders", 0, &offset).ok());
    ASSERT_TRUE(offset.has_value());
    EXPECT_GE(*offset, 50);
    std::vector<std::string> ids;
    for (int user = 0; user < kCrashWriterUsers; ++user)
      ids.push_back("user-" + std::to_string(user));
    std::vector<std::optional<UserState>> states;
    ASSERT_TRUE(store->MultiGetUsers(ids, &states).ok());
    for (size_t i = 0; i < ids.size(); ++i) {
      ASSERT_TRUE(states[i].has_value()) << ids[i];
      EXPECT_EQ(states[i]->seq, static_cast<uint64_t>(*offset)) << ids[i] << " round " << round;
    }
  }
}

}  // namespace
}  // namespace clv::state
