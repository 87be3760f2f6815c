// Synthetic shop: reproducible, decodable, believable, with consistent truth.
#include <algorithm>
#include <cmath>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <unordered_set>
#include <vector>

#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "common/units.h"
#include "config/config.h"
#include "models/metrics.h"
#include "sim/synthetic_shop.h"
#include "stream/decoder.h"
#include "stream/event.h"

namespace clv::sim {
namespace {

using stream::Decoder;
using stream::Event;

using models::EventKind;

std::string Generate(const ShopOptions& options, std::string* truth_csv = nullptr) {
  SyntheticShop shop(options);
  std::ostringstream out;
  EXPECT_TRUE(WriteEventsJsonl(shop, out));
  if (truth_csv != nullptr) {
    std::ostringstream csv;
    EXPECT_TRUE(WriteTruthCsv(shop.Truth(), csv));
    *truth_csv = csv.str();
  }
  return out.str();
}

TEST(SyntheticShopTest, SameSeedGivesIdenticalBytes) {
  ShopOptions options{.users = 300, .days = 60, .seed = 7};
  std::string truth_a;
  std::string truth_b;
  std::string a = Generate(options, &truth_a);
  std::string b = Generate(options, &truth_b);
  ASSERT_GT(a.size(), 10000u);
  EXPECT_TRUE(a == b) << "two runs with seed 7 differ";
  EXPECT_TRUE(truth_a == truth_b);
  options.seed = 8;
  std::string c = Generate(options);
  EXPECT_FALSE(a == c) << "seed 8 produced the same stream as seed 7";
}

TEST(SyntheticShopTest, InvalidOptionsAreNamed) {
  EXPECT_EQ(ValidateShopOptions({}), "");
  EXPECT_NE(ValidateShopOptions({.users = -1}).find("users"), std::string::npos);
  EXPECT_NE(ValidateShopOptions({.days = 0}).find("days"), std::string::npos);
  ShopOptions bad_order;
  bad_order.order_q = 1.0;
  EXPECT_NE(ValidateShopOptions(bad_order).find("order_q"), std::string::npos);
  SyntheticShop empty({.users = 0});
  GeneratedEvent event;
  EXPECT_FALSE(empty.Next(&event));
}

// One generated population shared by the statistics tests (generated once).
struct Population {
  ShopOptions options{.users = 3000, .days = 180, .seed = 2024, .horizon_days = 365};
  int64_t end_ms = 0;
  std::vector<GeneratedEvent> events;
  std::vector<UserTruth> truth;
};

const Population& ThePopulation() {
  static const Population population = [] {
    Population result;
    SyntheticShop shop(result.options);
    GeneratedEvent event;
    while (shop.Next(&event)) result.events.push_back(event);
    result.truth = shop.Truth();
    result.end_ms = shop.end_ms();
    return result;
  }();
  return population;
}

TEST(SyntheticShopTest, EveryEventDecodesInTimeOrderWithUniqueIds) {
  const Population& population = ThePopulation();
  ASSERT_GT(population.events.size(), 50000u);
  Decoder decoder({}, {});
  Event decoded;
  std::string reason;
  std::unordered_set<uint64_t> ids;
  int64_t previous_ms = 0;
  const int64_t start_ms = population.options.start_ms;
  for (const GeneratedEvent& event : population.events) {
    ASSERT_TRUE(decoder.Decode(event.json, population.end_ms, &decoded, &reason))
        << reason << " in " << event.json;
    EXPECT_EQ(decoded.user_id, event.user_id);
    EXPECT_EQ(decoded.kind, event.kind);
    EXPECT_EQ(decoded.ts_ms, event.ts_ms);
    EXPECT_DOUBLE_EQ(decoded.amount, event.amount);
    ASSERT_GE(event.ts_ms, previous_ms) << "out of order: " << event.json;
    ASSERT_GE(event.ts_ms, start_ms);
    ASSERT_LT(event.ts_ms, population.end_ms);
    previous_ms = event.ts_ms;
    EXPECT_TRUE(ids.insert(decoded.event_id_hash).second) << "duplicate id: " << event.json;
    EXPECT_EQ(event.json.find('\n'), std::string::npos);
  }
}

TEST(SyntheticShopTest, EveryUserStartsWithOneProfileEvent) {
  const Population& population = ThePopulation();
  std::vector<int> profiles(population.truth.size(), 0);
  std::vector<bool> seen(population.truth.size(), false);
  std::set<std::string> tiers;
  for (const GeneratedEvent& event : population.events) {
    auto index = static_cast<size_t>(event.user_index);
    if (!seen[index]) {
      EXPECT_EQ(event.kind, EventKind::kProfile) << event.json;
      EXPECT_EQ(event.ts_ms, population.truth[index].signup_ms);
      seen[index] = true;
    }
    if (event.kind == EventKind::kProfile) {
      ++profiles[index];
      EXPECT_NE(event.json.find("\"tier\":\"" + population.truth[index].tier + "\""),
                std::string::npos);
      tiers.insert(population.truth[index].tier);
    }
  }
  for (size_t index = 0; index < profiles.size(); ++index) EXPECT_EQ(profiles[index], 1) << index;
  EXPECT_EQ(tiers.size(), 3u);
}

TEST(SyntheticShopTest, PurchaseBehaviourIsBelievable) {
  const Population& population = ThePopulation();
  int64_t buyers = 0;
  int64_t repeat_buyers = 0;
  int64_t dead_buyers = 0;
  std::map<EventKind, int64_t> kinds;
  for (const GeneratedEvent& event : population.events) ++kinds[event.kind];
  for (const UserTruth& user : population.truth) {
    if (user.purchases > 0) ++buyers;
    if (user.purchases > 1) ++repeat_buyers;
    if (user.purchases > 0 && !user.alive) ++dead_buyers;
  }
  const double users = static_cast<double>(population.truth.size());
  // Most visitors never buy; a good share of buyers come back; many drop out.
  EXPECT_GT(buyers / users, 0.15);
  EXPECT_LT(buyers / users, 0.75);
  EXPECT_GT(static_cast<double>(repeat_buyers) / buyers, 0.2);
  EXPECT_LT(static_cast<double>(repeat_buyers) / buyers, 0.9);
  EXPECT_GT(static_cast<double>(dead_buyers) / buyers, 0.1);
  EXPECT_LT(static_cast<double>(dead_buyers) / buyers, 0.9);
  // Every event type appears; browsing dominates; refunds are occasional.
  for (int kind = 0; kind < models::kEventKindCount; ++kind) {
    EXPECT_GT(kinds[static_cast<EventKind>(kind)], 0)
        << models::EventKindName(static_cast<EventKind>(kind));
  }
  EXPECT_GT(kinds[EventKind::kPageView], 5 * kinds[EventKind::kPurchase]);
  EXPECT_LT(kinds[EventKind::kRefund], kinds[EventKind::kPurchase] / 5);
}

TEST(SyntheticShopTest, DailyAndWeeklyRhythm) {
  const Population& population = ThePopulation();
  std::array<int64_t, 7> by_weekday{};  // 0 = Monday
  std::array<int64_t, 24> by_hour{};
  for (const GeneratedEvent& event : population.events) {
    int64_t day = event.ts_ms / kMsPerDay;
    ++by_weekday[static_cast<size_t>((day + 3) % 7)];
    ++by_hour[static_cast<size_t>((event.ts_ms / kMsPerHour) % 24)];
  }
  double weekday = 0;
  for (size_t day = 0; day < 5; ++day) weekday += static_cast<double>(by_weekday[day]) / 5;
  double weekend = static_cast<double>(by_weekday[5] + by_weekday[6]) / 2;
  EXPECT_GT(weekend / weekday, 1.1) << "weekend days are not busier";
  EXPECT_LT(by_hour[3] * 3, by_hour[20]) << "nights are not quieter";
}

TEST(SyntheticShopTest, BrowsingRisesBeforePurchases) {
  const Population& population = ThePopulation();
  std::vector<std::vector<int64_t>> views(population.truth.size());
  std::vector<std::pair<size_t, int64_t>> purchases;
  for (const GeneratedEvent& event : population.events) {
    auto index = static_cast<size_t>(event.user_index);
    if (event.kind == EventKind::kPageView) views[index].push_back(event.ts_ms);
    if (event.kind == EventKind::kPurchase) purchases.emplace_back(index, event.ts_ms);
  }
  // Page views in [t - 24 h, t - 1 h) before each purchase (the purchase
  // session itself excluded) ...
  double before = 0;
  for (const auto& [index, ts] : purchases) {
    const auto& times = views[index];
    auto low = std::lower_bound(times.begin(), times.end(), ts - 24 * kMsPerHour);
    auto high = std::lower_bound(times.begin(), times.end(), ts - kMsPerHour);
    before += static_cast<double>(high - low);
  }
  before /= static_cast<double>(purchases.size());
  // ... against the same buyers' average page views per 23 hours.
  double buyer_views = 0;
  double buyer_days = 0;
  for (size_t index = 0; index < views.size(); ++index) {
    if (population.truth[index].purchases == 0) continue;
    buyer_views += static_cast<double>(views[index].size());
    buyer_days +=
        static_cast<double>(population.end_ms - population.truth[index].signup_ms) / kMsPerDay;
  }
  double average = buyer_views / buyer_days * 23.0 / 24.0;
  EXPECT_GT(before, 1.5 * average) << "before=" << before << " average=" << average;
}

TEST(SyntheticShopTest, DroppedOutUsersFadeAway) {
  const Population& population = ThePopulation();
  // Dead buyers whose last purchase is > 60 days before the end browse much
  // less in the last 30 days than alive buyers.
  std::vector<int64_t> last_month(population.truth.size(), 0);
  for (const GeneratedEvent& event : population.events) {
    if (event.ts_ms >= population.end_ms - 30 * kMsPerDay)
      ++last_month[static_cast<size_t>(event.user_index)];
  }
  double dead_events = 0;
  double dead_users = 0;
  double alive_events = 0;
  double alive_users = 0;
  for (size_t index = 0; index < population.truth.size(); ++index) {
    const UserTruth& user = population.truth[index];
    if (user.purchases == 0 || user.last_purchase_ms > population.end_ms - 60 * kMsPerDay) continue;
    if (user.alive) {
      alive_events += static_cast<double>(last_month[index]);
      ++alive_users;
    } else {
      dead_events += static_cast<double>(last_month[index]);
      ++dead_users;
    }
  }
  ASSERT_GT(dead_users, 20);
  ASSERT_GT(alive_users, 20);
  EXPECT_LT(dead_events / dead_users, 0.5 * alive_events / alive_users);
}

TEST(SyntheticShopTest, TruthIsConsistentWithEventsAndItself) {
  const Population& population = ThePopulation();
  std::vector<int64_t> purchases(population.truth.size(), 0);
  std::vector<double> spend(population.truth.size(), 0);
  for (const GeneratedEvent& event : population.events) {
    if (event.kind != EventKind::kPurchase) continue;
    ++purchases[static_cast<size_t>(event.user_index)];
    spend[static_cast<size_t>(event.user_index)] += event.amount;
  }
  double expected_total = 0;
  double realized_total = 0;
  double p_alive_sum = 0;
  double alive_buyers = 0;
  double buyers = 0;
  for (size_t index = 0; index < population.truth.size(); ++index) {
    const UserTruth& user = population.truth[index];
    ASSERT_TRUE(user.finished);
    EXPECT_EQ(user.user_id, "u" + std::to_string(index));
    EXPECT_EQ(user.purchases, purchases[index]);
    EXPECT_NEAR(user.spend, spend[index], 1e-6);
    EXPECT_GE(user.p_alive, 0.0);
    EXPECT_LE(user.p_alive, 1.0);
    if (!user.alive) {
      EXPECT_EQ(user.expected_spend, 0.0) << user.user_id;
      EXPECT_EQ(user.expected_purchases, 0.0) << user.user_id;
      EXPECT_EQ(user.realized_purchases, 0) << user.user_id;
    } else {
      EXPECT_GT(user.expected_spend, 0.0) << user.user_id;
    }
    if (user.purchase_rate_per_day == 0) {
      EXPECT_FALSE(user.alive);
      EXPECT_EQ(user.purchases, 0);
    }
    expected_total += user.expected_spend;
    realized_total += user.realized_spend;
    if (user.purchases > 0) {
      ++buyers;
      p_alive_sum += user.p_alive;
      if (user.alive) ++alive_buyers;
    }
  }
  // The analytic expectation matches the simulation on average ...
  EXPECT_NEAR(realized_total / expected_total, 1.0, 0.15)
      << "realized " << realized_total << " expected " << expected_total;
  // ... and the BG/NBD posterior is calibrated (it ignores browsing, so it is
  // only right on average).
  EXPECT_NEAR(p_alive_sum / buyers, alive_buyers / buyers, 0.05);
}

// The posterior from the events is what a model can at best approach: it
// must be calibrated, use the browsing (far better than a constant), and
// rank between what the purchase record alone gives and what knowing the
// latent state gives.
TEST(SyntheticShopTest, PosteriorFromTheEventsIsCalibratedAndRanksBetweenRecordAndTruth) {
  const Population& population = ThePopulation();
  const size_t users = population.truth.size();
  double alive_share = 0, posterior_sum = 0, brier = 0;
  std::vector<double> realized, posterior, expected, past_spend;
  for (const UserTruth& user : population.truth) {
    ASSERT_GE(user.posterior_alive, 0.0) << user.user_id;
    ASSERT_LE(user.posterior_alive, 1.0) << user.user_id;
    ASSERT_GE(user.posterior_expected_spend, 0.0) << user.user_id;
    const double alive = user.alive ? 1.0 : 0.0;
    alive_share += alive / static_cast<double>(users);
    posterior_sum += user.posterior_alive / static_cast<double>(users);
    brier += (user.posterior_alive - alive) * (user.posterior_alive - alive) /
             static_cast<double>(users);
    realized.push_back(user.realized_spend);
    posterior.push_back(user.posterior_expected_spend);
    expected.push_back(user.expected_spend);
    past_spend.push_back(user.spend);
  }
  EXPECT_NEAR(posterior_sum, alive_share, 0.03);
  // A constant guess of the alive share scores alive_share * (1 - alive_share).
  EXPECT_LT(brier, 0.6 * alive_share * (1 - alive_share)) << "Brier " << brier;
  const double by_posterior = models::NormalizedGini(posterior, realized);
  const double by_past_spend = models::NormalizedGini(past_spend, realized);
  const double by_truth = models::NormalizedGini(expected, realized);
  EXPECT_GT(by_posterior, by_past_spend + 0.05)
      << "posterior " << by_posterior << " past spend " << by_past_spend;
  EXPECT_LT(by_posterior, by_truth) << "posterior " << by_posterior << " truth " << by_truth;
}

// ----------------------------------------------------------------- profiles --

TEST(SyntheticShopTest, ProfilesAreNamedAndComposable) {
  ShopOptions options;
  EXPECT_EQ(ApplyShopProfiles("wholesale,cents", &options), "");
  EXPECT_EQ(options.order_q, 1.3);
  EXPECT_TRUE(options.money_in_cents);
  EXPECT_FALSE(options.day_granularity);
  auto error = ApplyShopProfiles("wholesale,retail", &options);
  EXPECT_NE(error.find("unknown shop profile 'retail'"), std::string::npos) << error;
  EXPECT_NE(error.find("long_history"), std::string::npos) << "lists the known ones: " << error;
  ShopOptions plain{.users = 40, .days = 30, .seed = 5};
  const std::string before = Generate(plain);
  EXPECT_EQ(ApplyShopProfiles("default", &plain), "");
  EXPECT_TRUE(Generate(plain) == before) << "the default profile changes nothing";
}

struct ProfileStats {
  std::vector<UserTruth> truth;
  std::vector<double> amounts;
  std::map<std::string, int64_t> events_per_user;
  std::vector<std::string> lines;
};

ProfileStats RunProfile(const std::string& profile, ShopOptions options, bool keep_lines = false) {
  EXPECT_EQ(ApplyShopProfiles(profile, &options), "") << profile;
  SyntheticShop shop(options);
  ProfileStats stats;
  GeneratedEvent event;
  while (shop.Next(&event)) {
    ++stats.events_per_user[event.user_id];
    if (event.kind == EventKind::kPurchase) stats.amounts.push_back(event.amount);
    if (keep_lines) stats.lines.push_back(event.json);
  }
  stats.truth = shop.Truth();
  return stats;
}

// What makes each profile what it is, and the Bayes posterior still
// calibrated on it: the mean P(alive | events) is the alive share, and the
// posterior expected spend adds up to the expected spend given the latent
// state.
TEST(SyntheticShopTest, EachProfileLooksLikeItsShopAndKeepsAnExactPosterior) {
  const ShopOptions base{.users = 2000, .days = 240, .seed = 11, .horizon_days = 120};
  for (const std::string profile :
       {"wholesale", "one_time", "no_dropout", "high_dropout", "long_history"}) {
    // Histories grow with the period: a year for 10k+ events.
    ShopOptions options = base;
    if (profile == "long_history") {
      options.users = 1000;
      options.days = 365;
    }
    auto stats = RunProfile(profile, options);
    int64_t buyers = 0, once = 0, gone = 0;
    double alive = 0, posterior = 0, expected = 0, posterior_spend = 0;
    for (const auto& user : stats.truth) {
      ASSERT_TRUE(user.finished);
      ASSERT_TRUE(std::isfinite(user.posterior_alive) &&
                  std::isfinite(user.posterior_expected_spend))
          << profile << " " << user.user_id;
      alive += user.alive ? 1 : 0;
      posterior += user.posterior_alive;
      expected += user.expected_spend;
      posterior_spend += user.posterior_expected_spend;
      if (user.purchases > 0) {
        ++buyers;
        once += user.purchases == 1;
        gone += !user.alive;
      }
    }
    const double n = static_cast<double>(stats.truth.size());
    // long_history: heavy browsing strains the posterior's approximations
    // (research sessions counted as base ones), a little less exact there.
    EXPECT_NEAR(posterior / n, alive / n, profile == "long_history" ? 0.05 : 0.03) << profile;
    EXPECT_NEAR(posterior_spend / expected, 1.0, profile == "wholesale" ? 0.35 : 0.12) << profile;
    ASSERT_GT(buyers, 100) << profile;
    const double once_share = static_cast<double>(once) / static_cast<double>(buyers);
    const double gone_share = static_cast<double>(gone) / static_cast<double>(buyers);
    if (profile == "wholesale") {
      std::vector<double> amounts = stats.amounts;
      std::sort(amounts.begin(), amounts.end());
      const double median = amounts[amounts.size() / 2];
      EXPECT_GT(amounts.back() / median, 300.0) << "largest order / median order";
      EXPECT_LT(gone_share, 0.3) << profile;
    } else if (profile == "one_time") {
      EXPECT_GT(once_share, 0.7) << profile;
    } else if (profile == "no_dropout") {
      EXPECT_LT(gone_share, 0.02) << profile;
    } else if (profile == "high_dropout") {
      EXPECT_GT(gone_share, 0.6) << profile;
    } else if (profile == "long_history") {
      int64_t longest = 0;
      for (const auto& [user, count] : stats.events_per_user) longest = std::max(longest, count);
      EXPECT_GT(longest, 10000) << profile;
    }
  }
}

// The output forms change the units, not the shop: same users, same events.
TEST(SyntheticShopTest, DayGranularityAndCentsChangeOnlyTheUnits) {
  const ShopOptions base{.users = 200, .days = 60, .seed = 4, .horizon_days = 30};
  auto plain = RunProfile("default", base, true);
  auto days = RunProfile("day_granularity", base, true);
  auto cents = RunProfile("cents", base, true);
  ASSERT_EQ(plain.lines.size(), days.lines.size());
  ASSERT_EQ(plain.lines.size(), cents.lines.size());
  config::MappingOptions mapping;
  config::ValidationOptions limits;
  Decoder decoder(mapping, limits);
  const int64_t now = base.start_ms + 400 * kMsPerDay;
  for (size_t i = 0; i < plain.lines.size(); ++i) {
    Event a, b, c;
    std::string reason;
    ASSERT_TRUE(decoder.Decode(plain.lines[i], now, &a, &reason)) << reason;
    ASSERT_TRUE(decoder.Decode(days.lines[i], now, &b, &reason)) << reason << days.lines[i];
    ASSERT_TRUE(decoder.Decode(cents.lines[i], now, &c, &reason)) << reason;
    ASSERT_EQ(b.ts_ms, a.ts_ms - a.ts_ms % kMsPerDay) << days.lines[i];
    ASSERT_NE(days.lines[i].find(R"("ts":"20)"), std::string::npos) << days.lines[i];
    ASSERT_EQ(c.ts_ms, a.ts_ms);
    ASSERT_EQ(c.kind, a.kind);
    ASSERT_NEAR(c.amount, 100 * a.amount, 1e-6) << cents.lines[i];
  }
  for (size_t i = 0; i < plain.truth.size(); ++i) {
    EXPECT_NEAR(cents.truth[i].spend, 100 * plain.truth[i].spend, 1e-6);
    EXPECT_NEAR(cents.truth[i].realized_spend, 100 * plain.truth[i].realized_spend, 1e-6);
    EXPECT_NEAR(cents.truth[i].posterior_expected_spend,
                100 * plain.truth[i].posterior_expected_spend,
                1e-9 * plain.truth[i].posterior_expected_spend * 100 + 1e-9);
    EXPECT_EQ(days.truth[i].posterior_alive, plain.truth[i].posterior_alive);
  }
}

// Wholesale orders in cents reach past 1e7 (the old validation.max_amount):
// under the default validation every generated event decodes, so `clv run`
// and `clv replay` dead-letter none of them (config validation.max_amount).
TEST(SyntheticShopTest, WholesaleInCentsDecodesUnderTheDefaultValidation) {
  // Seed 19: nine orders of this shop are above 1e7 cents.
  const ShopOptions base{.users = 2000, .days = 240, .seed = 19, .horizon_days = 30};
  auto stats = RunProfile("wholesale,cents", base, true);
  const double largest = *std::max_element(stats.amounts.begin(), stats.amounts.end());
  EXPECT_GT(largest, 1e7) << "the test needs orders above the old default";
  const config::ValidationOptions defaults;
  EXPECT_LE(largest, defaults.max_amount);
  Decoder decoder({}, defaults);
  const int64_t now = base.start_ms + 400 * kMsPerDay;
  int64_t rejected = 0;
  std::string first;
  for (const auto& line : stats.lines) {
    Event event;
    std::string reason;
    if (!decoder.Decode(line, now, &event, &reason)) {
      if (rejected++ == 0) first = reason + " in " + line;
    }
  }
  EXPECT_EQ(rejected, 0) << first;
}

TEST(SyntheticShopTest, TruthFilesHaveOneRowPerUser) {
  SyntheticShop shop({.users = 50, .days = 30, .seed = 3});
  std::ostringstream events;
  int64_t count = 0;
  ASSERT_TRUE(WriteEventsJsonl(shop, events, &count));
  EXPECT_EQ(count, shop.events_generated());
  auto truth = shop.Truth();
  std::ostringstream csv;
  std::ostringstream jsonl;
  ASSERT_TRUE(WriteTruthCsv(truth, csv));
  ASSERT_TRUE(WriteTruthJsonl(truth, jsonl));
  std::istringstream csv_in(csv.str());
  std::string line;
  std::getline(csv_in, line);
  EXPECT_EQ(line.rfind("user_id,signup_ms,", 0), 0u) << line;
  int rows = 0;
  while (std::getline(csv_in, line)) ++rows;
  EXPECT_EQ(rows, 50);
  std::istringstream json_in(jsonl.str());
  rows = 0;
  while (std::getline(json_in, line)) {
    auto parsed = nlohmann::json::parse(line);
    EXPECT_EQ(parsed["user_id"], truth[static_cast<size_t>(rows)].user_id);
    EXPECT_TRUE(parsed.contains("realized_spend"));
    EXPECT_TRUE(parsed.contains("expected_spend"));
    ++rows;
  }
  EXPECT_EQ(rows, 50);
}

}  // namespace
}  // namespace clv::sim
