// Loading event files for clv train / eval / fit-baseline: which rows count.
// Rows without an event id get "<file basename>:<line>", so identical rows are
// separate orders while the same file loaded twice is all duplicates; a free
// order is a purchase worth 0; a negative amount is a refund only where the
// mapping says so.
#include <filesystem>
#include <fstream>

#include <gtest/gtest.h>

#include "config/config.h"
#include "stream/dataset_loader.h"
#include "tests/test_support.h"

namespace clv::stream {
namespace {

std::string Write(const clv::testing::TempDir& dir, const std::string& relative,
                  const std::string& text) {
  auto path = dir.path() / relative;
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path) << text;
  return path.string();
}

config::Config OrdersConfig() {
  config::Config config;
  config.mapping.default_type = "purchase";
  return config;
}

struct Loaded {
  bool ok = false;
  models::Dataset data;
  LoadStats stats;
  std::string error;
};

Loaded Load(const std::vector<std::string>& paths, const config::Config& config) {
  Loaded result;
  result.ok = LoadDataset(paths, config, "auto", {}, &result.data, &result.stats, &result.error);
  return result;
}

// Two identical rows (one customer, one day, same value) are two orders.
const std::string kOrders =
    "user_id,ts,amount\n"
    "u1,2026-01-02,10\n"
    "u1,2026-01-02,10\n"
    "u2,2026-01-03,0\n"
    "u2,2026-01-05,4\n";

TEST(DatasetLoaderTest, IdenticalRowsAreSeparateOrders) {
  clv::testing::TempDir dir;
  auto loaded = Load({Write(dir, "orders.csv", kOrders)}, OrdersConfig());
  ASSERT_TRUE(loaded.ok) << loaded.error;
  EXPECT_EQ(loaded.stats.rows, 4);
  EXPECT_EQ(loaded.stats.events, 4);
  EXPECT_EQ(loaded.stats.duplicates, 0);
  ASSERT_EQ(loaded.data.users.size(), 2u);
  EXPECT_EQ(loaded.data.users[0].events.size(), 2u);
}

// A log without amounts (customer, day) loads with mapping.amount_field "":
// every purchase worth 1, and the dataset says it has no order values.
TEST(DatasetLoaderTest, ALogWithoutAmountsLoadsAsPurchasesWorthOne) {
  clv::testing::TempDir dir;
  const std::string path = Write(dir, "counts.csv",
                                 "cust,date\n"
                                 "1,2006-01-01\n"
                                 "1,2006-02-11\n"
                                 "2,2006-01-03\n");
  config::Config config = OrdersConfig();
  config.mapping.user_id_field = "cust";
  config.mapping.ts_field = "date";
  auto with_amounts = Load({path}, config);
  EXPECT_FALSE(with_amounts.ok) << "a mapping with a value column needs amounts";
  EXPECT_EQ(with_amounts.stats.rejected, 3);
  config.mapping.amount_field = "";
  auto loaded = Load({path}, config);
  ASSERT_TRUE(loaded.ok) << loaded.error;
  EXPECT_EQ(loaded.stats.events, 3);
  EXPECT_FALSE(loaded.data.has_order_values);
  EXPECT_FALSE(loaded.data.SliceBefore(models::DateToMs(2006, 2, 1)).has_order_values);
  ASSERT_EQ(loaded.data.users.size(), 2u);
  for (const auto& user : loaded.data.users) {
    for (const auto& event : user.events) EXPECT_EQ(event.amount, 1.0);
  }
  EXPECT_TRUE(Load({Write(dir, "orders.csv", kOrders)}, OrdersConfig()).data.has_order_values);
}

TEST(DatasetLoaderTest, TheSameFileTwiceIsAllDuplicatesTheSecondTime) {
  clv::testing::TempDir dir;
  auto first = Write(dir, "a/orders.csv", kOrders);
  auto copy = Write(dir, "b/orders.csv", kOrders);  // same name, other directory
  auto loaded = Load({first, first, copy}, OrdersConfig());
  ASSERT_TRUE(loaded.ok) << loaded.error;
  EXPECT_EQ(loaded.stats.rows, 12);
  EXPECT_EQ(loaded.stats.events, 4);
  EXPECT_EQ(loaded.stats.duplicates, 8);
  // A row with its own event id keeps it: the id, not the line, decides.
  auto with_ids = Load({Write(dir, "ids.csv",
                              "event_id,user_id,ts,amount\n"
                              "e1,u1,2026-01-02,10\ne1,u1,2026-01-02,10\n"
                              ",u1,2026-01-02,10\n")},
                       OrdersConfig());
  ASSERT_TRUE(with_ids.ok) << with_ids.error;
  EXPECT_EQ(with_ids.stats.events, 2);  // e1 once, the id-less row by its line
  EXPECT_EQ(with_ids.stats.duplicates, 1);
}

TEST(DatasetLoaderTest, JsonlLinesWithoutIdsCountByLine) {
  clv::testing::TempDir dir;
  const std::string line = R"({"user_id":"u1","type":"purchase","ts":1767225600,"amount":5})";
  auto path = Write(dir, "events.jsonl", line + "\n" + line + "\n");
  auto loaded = Load({path, path}, config::Config{});
  ASSERT_TRUE(loaded.ok) << loaded.error;
  EXPECT_EQ(loaded.stats.events, 2);
  EXPECT_EQ(loaded.stats.duplicates, 2);
}

TEST(DatasetLoaderTest, AFreeOrderIsAPurchaseWorthZero) {
  clv::testing::TempDir dir;
  auto loaded = Load({Write(dir, "orders.csv", kOrders)}, OrdersConfig());
  ASSERT_TRUE(loaded.ok) << loaded.error;
  EXPECT_EQ(loaded.stats.rejected, 0);
  const auto& u2 = loaded.data.users[1];
  ASSERT_EQ(u2.user_id, "u2");
  ASSERT_EQ(u2.events.size(), 2u);  // both count in the frequency
  EXPECT_EQ(u2.events[0].kind, models::EventKind::kPurchase);
  EXPECT_EQ(u2.events[0].amount, 0.0);
}

TEST(DatasetLoaderTest, NegativeAmountsAreRefundsOnlyWhereTheMappingSaysSo) {
  clv::testing::TempDir dir;
  auto path = Write(dir, "orders.csv", "user_id,ts,amount\nu1,2026-01-02,10\nu1,2026-01-03,-4\n");
  auto strict = Load({path}, OrdersConfig());
  ASSERT_TRUE(strict.ok) << strict.error;
  EXPECT_EQ(strict.stats.rejected, 1);
  ASSERT_EQ(strict.stats.first_errors.size(), 1u);
  EXPECT_NE(strict.stats.first_errors[0].find("orders.csv:3"), std::string::npos);
  EXPECT_NE(strict.stats.first_errors[0].find("negative_amount_is_refund"), std::string::npos)
      << strict.stats.first_errors[0];

  auto config = OrdersConfig();
  config.mapping.negative_amount_is_refund = true;
  auto refunds = Load({path}, config);
  ASSERT_TRUE(refunds.ok) << refunds.error;
  EXPECT_EQ(refunds.stats.rejected, 0);
  ASSERT_EQ(refunds.data.users[0].events.size(), 2u);
  EXPECT_EQ(refunds.data.users[0].events[1].kind, models::EventKind::kRefund);
  EXPECT_EQ(refunds.data.users[0].events[1].amount, 4.0);
}

// CDNOW's sample: every row is an order, the free ones too (21 identical rows
// and 8 customers whose orders were all free used to vanish).
TEST(DatasetLoaderTest, CdnowSampleKeepsEveryRow) {
  auto sample = clv::testing::SharedDataPath("cdnow/CDNOW_sample.txt");
  CLV_REQUIRE_SHARED_DATA(sample);
  auto loaded_config =
      config::Load((clv::testing::SourceDir() / "config/samples/cdnow.json").string(), {}, {});
  ASSERT_TRUE(loaded_config.ok()) << loaded_config.error;
  const config::Config& config = *loaded_config.config;
  models::Dataset data;
  LoadStats stats;
  std::string error;
  ASSERT_TRUE(LoadDataset({sample.string()}, config, "auto",
                          {"customer_id", "cohort_id", "date", "number_of_cds", "dollar_value"},
                          &data, &stats, &error))
      << error;
  EXPECT_EQ(stats.rows, 6919);
  EXPECT_EQ(stats.events, 6919);
  EXPECT_EQ(stats.duplicates, 0);
  EXPECT_EQ(stats.rejected, 0);
  EXPECT_EQ(data.users.size(), 2357u);
}

}  // namespace
}  // namespace clv::stream
