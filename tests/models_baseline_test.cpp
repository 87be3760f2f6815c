// Baseline scorer: BG/NBD + Gamma-Gamma against the published CDNOW numbers,
// the running aggregates (UpdateHistory), the model file and the scorer.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "config/config.h"
#include "models/baseline_scorer.h"
#include "models/bgnbd.h"
#include "models/dataset.h"
#include "models/scorer.h"
#include "tests/test_support.h"

namespace clv::models {
namespace {

[[maybe_unused]] constexpr int64_t kHour = 3600LL * 1000;

[[maybe_unused]] StepEvent Purchase(int64_t ts_ms, double amount) { return {EventKind::kPurchase, ts_ms, amount}; }

// The 39-week calibration period of the BG/NBD paper: 1997-01-01 .. 1997-09-30.
int64_t CalibrationEnd() { return DateToMs(1997, 10, 1); }

const Dataset& CdnowSample() {
  static const Dataset data = [] {
    Dataset loaded;
    std::string error;
    const auto path = testing::SharedDataPath("cdnow/CDNOW_sample.txt");
    if (std::filesystem::exists(path) && !LoadCdnow(path.string(), &loaded, &error)) {
      ADD_FAILURE() << error;
    }
    return loaded;
  }();
  return data;
}

void ExpectWithinPercent(double actual, double expected, double percent, const char* what) {
  EXPECT_NEAR(actual, expected, std::abs(expected) * percent / 100.0)
      << what << ": got " << actual << ", published " << expected;
}

// --- CDNOW against the papers ------------------------------------------

TEST(CdnowLoad, SampleHasThePaperCohort) {
  CLV_REQUIRE_SHARED_DATA(testing::SharedDataPath("cdnow/CDNOW_sample.txt"));
  const Dataset& data = CdnowSample();
  EXPECT_EQ(data.users.size(), 2357u);  // the paper's 1/10 sample
  EXPECT_EQ(data.EventCount(), 6919u);
  EXPECT_EQ(MsToDate(data.start_ms), "1997-01-01");
  EXPECT_EQ(MsToDate(data.end_ms), "1998-07-01");
  // 00004 bought on 1997-01-01, 01-18, 08-02 and 12-12.
  ASSERT_EQ(data.users[0].user_id, "00004");
  ASSERT_EQ(data.users[0].events.size(), 4u);
  EXPECT_EQ(data.users[0].events[2].ts_ms, DateToMs(1997, 8, 2));
  EXPECT_DOUBLE_EQ(data.users[0].events[2].amount, 14.96);
}

TEST(CdnowFit, BgNbdReproducesFaderHardieLee2005) {
  CLV_REQUIRE_SHARED_DATA(testing::SharedDataPath("cdnow/CDNOW_sample.txt"));
  // Fader, Hardie & Lee (2005), "'Counting your customers' the easy way: an
  // alternative to the Pareto/NBD model", Marketing Science 24(2), 275-284,
  // section 4: on the 2,357 CDNOW sample customers over the 39-week
  // calibration period, r = 0.243, alpha = 4.414, a = 0.793, b = 2.426 and
  // LL = -9582.4.
  const auto customers = CalibrationSummaries(CdnowSample(), CalibrationEnd());
  ASSERT_EQ(customers.size(), 2357u);
  // Customer 00004: x = 2 repeat days, t_x = 30.43, T = 38.86 weeks.
  EXPECT_DOUBLE_EQ(customers[0].x, 2);
  EXPECT_NEAR(customers[0].t_x, 30.43, 0.005);
  EXPECT_NEAR(customers[0].T, 38.86, 0.005);

  const BgNbdFit fit = FitBgNbd(customers);
  EXPECT_TRUE(fit.converged);
  ExpectWithinPercent(fit.params.r, 0.243, 1, "r");
  ExpectWithinPercent(fit.params.alpha, 4.414, 1, "alpha");
  ExpectWithinPercent(fit.params.a, 0.793, 1, "a");
  ExpectWithinPercent(fit.params.b, 2.426, 1, "b");
  EXPECT_NEAR(fit.log_likelihood, -9582.4, 0.1);
}

TEST(CdnowFit, GammaGammaReproducesFaderHardie2013) {
  CLV_REQUIRE_SHARED_DATA(testing::SharedDataPath("cdnow/CDNOW_sample.txt"));
  // Fader & Hardie (2013), "The Gamma-Gamma Model of Monetary Value": on the
  // 946 CDNOW sample customers with at least one repeat purchase in the
  // calibration period, m_x = mean spend of their repeat transactions:
  // p = 6.25, q = 3.74, gamma = 15.44.
  const auto customers = CalibrationSummaries(CdnowSample(), CalibrationEnd());
  const GammaGammaFit fit = FitGammaGamma(customers);
  EXPECT_TRUE(fit.converged);
  EXPECT_EQ(fit.customers, 946);
  ExpectWithinPercent(fit.params.p, 6.25, 1, "p");
  ExpectWithinPercent(fit.params.q, 3.74, 1, "q");
  ExpectWithinPercent(fit.params.gamma, 15.44, 1, "gamma");
  std::printf("GG LL %.4f\n", fit.log_likelihood);
}

}  // namespace
}  // namespace clv::models
