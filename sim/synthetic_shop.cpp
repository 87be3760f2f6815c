// Synthetic shop (contract in sim/synthetic_shop.h).
//
// Per user, five event sources run in parallel and the earliest wins:
//   base sessions     Poisson(session rate x rhythm), thinned by the fade
//                     factor once the user has dropped out;
//   research sessions an inhomogeneous Poisson process whose intensity grows
//                     exponentially towards the next planned purchase;
//   purchases         Poisson(lambda x rhythm) while alive; each purchase
//                     opens a purchase session (views, add_to_cart, purchase)
//                     and is followed by dropout with probability p;
//   refunds           one pending at a time, days after a purchase;
//   the session in progress (one event at a time, seconds apart).
// Everything is drawn lazily from a per-user PRNG seeded from (seed, index),
// so each user's stream does not depend on the others or on heap order.
#include "sim/synthetic_shop.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <limits>
#include <ostream>
#include <vector>

#include "common/time.h"
#include "common/units.h"

namespace clv::sim {

namespace {

constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
constexpr int64_t kSessionGapMs = 31 * 60 * 1000;  // > 30 min: History starts a new session
constexpr int kProducts = 5000;
// Browse-only users stop browsing (fade) after Exponential(this mean) days.
constexpr double kBrowseOnlyFadeMeanDays = 30.0;
// Browsing activity: buyers 0.5 + 0.5 sqrt(lambda / mean lambda), browse-only users this.
constexpr double kBrowseOnlyActivity = 0.6;

// ------------------------------------------------------------------ random --

// splitmix64: tiny state, passes BigCrush, identical everywhere.
class Rng {
 public:
  explicit Rng(uint64_t seed = 0) : state_(seed) {}
  uint64_t NextU64() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in (0, 1): never 0, so log() is safe.
  double Uniform() { return (static_cast<double>(NextU64() >> 11) + 0.5) * 0x1.0p-53; }
  double Exponential(double mean) { return -mean * std::log(Uniform()); }
  double Normal() {
    // Box-Muller, one value per call (simple and deterministic).
    return std::sqrt(-2.0 * std::log(Uniform())) * std::cos(6.283185307179586 * Uniform());
  }
  // Gamma(shape, rate) by Marsaglia-Tsang; shape < 1 through the boost
  // Gamma(shape + 1) * U^(1/shape).
  double Gamma(double shape, double rate) {
    if (shape < 1.0) return Gamma(shape + 1.0, rate) * std::pow(Uniform(), 1.0 / shape);
    const double d = shape - 1.0 / 3.0;
    const double c = 1.0 / std::sqrt(9.0 * d);
    for (;;) {
      double x = Normal();
      double v = 1.0 + c * x;
      if (v <= 0) continue;
      v = v * v * v;
      double u = Uniform();
      if (std::log(u) < 0.5 * x * x + d - d * v + d * std::log(v)) return d * v / rate;
    }
  }
  double Beta(double a, double b) {
    double x = Gamma(a, 1.0);
    double y = Gamma(b, 1.0);
    return x / (x + y);
  }
  // Failures before the first success, mean `mean`.
  int Geometric(double mean) {
    if (mean <= 0) return 0;
    double q = 1.0 / (mean + 1.0);
    return static_cast<int>(std::floor(std::log(Uniform()) / std::log(1.0 - q)));
  }
  int Poisson(double mean) {
    double limit = std::exp(-mean);
    double product = Uniform();
    int count = 0;
    while (product > limit) {
      product *= Uniform();
      ++count;
    }
    return count;
  }
  // Index drawn from cumulative weights.
  template <size_t N>
  uint8_t Pick(const std::array<double, N>& weights) {
    double u = Uniform();
    double sum = 0;
    for (size_t i = 0; i < N; ++i) {
      sum += weights[i];
      if (u < sum) return static_cast<uint8_t>(i);
    }
    return static_cast<uint8_t>(N - 1);
  }

 private:
  uint64_t state_;
};

uint64_t Mix(uint64_t value) {
  Rng rng(value);
  return rng.NextU64();
}

// --------------------------------------------------------------- population --

constexpr std::array<const char*, 6> kCountries = {"DE", "FR", "GB", "US", "NL", "ES"};
constexpr std::array<double, 6> kCountryWeights = {0.30, 0.15, 0.15, 0.20, 0.10, 0.10};
constexpr std::array<const char*, 5> kChannels = {"organic", "paid_search", "social", "referral",
                                                  "email"};
constexpr std::array<double, 5> kChannelWeights = {0.35, 0.25, 0.15, 0.10, 0.15};
constexpr std::array<double, 5> kChannelRate = {1.1, 0.85, 0.7, 1.3, 1.2};
constexpr std::array<double, 5> kChannelBrowseOnly = {0.9, 1.1, 1.3, 0.8, 0.9};
constexpr std::array<const char*, 3> kTiers = {"basic", "silver", "gold"};
constexpr std::array<double, 3> kTierWeights = {0.70, 0.22, 0.08};
constexpr std::array<double, 3> kTierRate = {1.0, 1.4, 2.0};
constexpr std::array<const char*, 12> kCategories = {"books",   "electronics", "fashion", "home",
                                                     "garden",  "toys",        "sports",  "beauty",
                                                     "grocery", "music",       "games",   "health"};

// Activity by hour of day (UTC) and weekday/weekend; normalized to mean 1
// over the week in Rhythm's constructor.
constexpr std::array<double, 24> kHourShape = {0.35, 0.22, 0.15, 0.12, 0.12, 0.18, 0.35, 0.60,
                                               0.85, 1.00, 1.05, 1.10, 1.15, 1.10, 1.05, 1.05,
                                               1.10, 1.20, 1.35, 1.50, 1.60, 1.50, 1.10, 0.65};
constexpr double kWeekendFactor = 1.3;

// Piecewise-constant intensity factor per hour of the week, with its integral.
class Rhythm {
 public:
  Rhythm() {
    double sum = 0;
    for (int hour = 0; hour < 168; ++hour) {
      int day = hour / 24;  // 0 = Monday
      factor_[hour] = kHourShape[hour % 24] * (day >= 5 ? kWeekendFactor : 1.0);
      sum += factor_[hour];
    }
    max_ = 0;
    for (int hour = 0; hour < 168; ++hour) {
      factor_[hour] *= 168.0 / sum;
      max_ = std::max(max_, factor_[hour]);
    }
    prefix_days_[0] = 0;
    for (int hour = 0; hour < 168; ++hour) {
      prefix_days_[hour + 1] = prefix_days_[hour] + factor_[hour] / 24.0;
    }
  }
  double max() const { return max_; }
  double At(int64_t ms) const { return factor_[HourOfWeek(ms)]; }
  // Integral of the factor from the epoch to `ms`, in days.
  double Integral(int64_t ms) const {
    int64_t hours = FloorDiv(ms, kMsPerHour);
    double fraction = static_cast<double>(ms - hours * kMsPerHour) / kMsPerHour;
    int64_t since_monday = hours + 72;  // 1970-01-01 was a Thursday
    int64_t weeks = FloorDiv(since_monday, 168);
    auto hour = static_cast<size_t>(since_monday - weeks * 168);
    return static_cast<double>(weeks) * prefix_days_[168] + prefix_days_[hour] +
           fraction * factor_[hour] / 24.0;
  }
  static bool IsWeekend(int64_t ms) { return HourOfWeek(ms) >= 120; }

 private:
  static size_t HourOfWeek(int64_t ms) {
    int64_t since_monday = FloorDiv(ms, kMsPerHour) + 72;
    return static_cast<size_t>(since_monday - FloorDiv(since_monday, 168) * 168);
  }
  std::array<double, 168> factor_{};
  std::array<double, 169> prefix_days_{};
  double max_ = 1;
};

const Rhythm& TheRhythm() {
  static const Rhythm rhythm;
  return rhythm;
}

// ------------------------------------------------------------------- users --

enum class SessionKind : uint8_t { kNone, kBase, kResearch, kPurchase };

struct User {
  Rng rng;
  // Latent.
  double lambda = 0;        // purchases per day while alive (before rhythm)
  double dropout = 0;       // p
  double order_rate = 1;    // nu of Gamma-Gamma
  double session_rate = 0;  // base sessions per day
  int64_t signup_ms = 0;
  int64_t fade_start_ms = kNever;
  uint8_t country = 0;
  uint8_t channel = 0;
  uint8_t tier = 0;
  bool dropped = false;
  bool finished = false;
  // Sources.
  int64_t next_base_ms = kNever;
  int64_t next_research_ms = kNever;
  int64_t next_purchase_ms = kNever;
  int64_t refund_ms = kNever;
  int64_t refund_cents = 0;
  uint32_t refund_order = 0;
  // Session in progress.
  SessionKind session = SessionKind::kNone;
  int32_t session_left = 0;
  int32_t session_carts = 0;
  bool session_first = false;
  bool alive_at_end = false;
  int32_t session_items = 0;
  uint32_t sessions = 0;
  uint32_t orders = 0;
  int32_t cart = 0;
  int64_t session_next_ms = 0;
  int64_t last_session_end_ms = std::numeric_limits<int64_t>::min() / 2;
  // Pending event (the next one this user emits).
  int64_t pending_ms = 0;
  EventKind pending_kind = EventKind::kProfile;
  int32_t pending_product = 0;
  int64_t pending_cents = 0;
  uint32_t pending_order = 0;
  uint32_t events = 0;
  // What an observer of the events sees of the sessions (for the posterior):
  // the session last counted, sessions started, the sum over the sessions
  // started after the last purchase of their days after it, and while the
  // user has not bought yet the start times (days since signup).
  uint32_t observed_session = 0;
  int32_t observed_sessions = 0;
  double days_after_purchase_sum = 0;
  std::vector<float> session_days;
  // Observed truth.
  int64_t purchases = 0;
  int64_t spend_cents = 0;
  int64_t last_purchase_ms = 0;
  // Cutoff truth.
  double p_alive = 0;
  double expected_purchases = 0;
  double oracle_expected_purchases = 0;
  double posterior_alive = 0;
  double posterior_expected_spend = 0;
  int64_t realized_purchases = 0;
  int64_t realized_cents = 0;
};

struct HeapEntry {
  int64_t ts_ms;
  int64_t index;
};

bool Before(const HeapEntry& a, const HeapEntry& b) {
  return a.ts_ms < b.ts_ms || (a.ts_ms == b.ts_ms && a.index < b.index);
}

void AppendInt(std::string& out, int64_t value) {
  std::array<char, 24> buffer{};
  auto [end, ec] = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  out.append(buffer.data(), end);
}

void AppendCents(std::string& out, int64_t cents) {
  AppendInt(out, cents / 100);
  out += '.';
  int64_t rest = cents % 100;
  out += static_cast<char>('0' + rest / 10);
  out += static_cast<char>('0' + rest % 10);
}

// "YYYY-MM-DD" (UTC) of an epoch-ms time.
void AppendDate(std::string& out, int64_t ms) { out += MsToDate(ms); }

void AppendCsvNumber(std::ostream& out, double value) {
  std::array<char, 32> buffer{};
  auto [end, ec] = std::to_chars(buffer.data(), buffer.data() + buffer.size(), value);
  out.write(buffer.data(), end - buffer.data());
}

}  // namespace

std::string ValidateShopOptions(const ShopOptions& options) {
  if (options.users < 0) return "shop option 'users' must be >= 0";
  if (!(options.days > 0) || options.days > 36500)
    return "shop option 'days' must be in (0, 36500]";
  if (!(options.horizon_days >= 0) || options.horizon_days > 36500) {
    return "shop option 'horizon_days' must be in [0, 36500]";
  }
  if (options.start_ms < 0) return "shop option 'start_ms' must be >= 0";
  if (!(options.purchase_rate_shape > 0) || !(options.purchase_rate_rate > 0)) {
    return "shop options 'purchase_rate_shape' and 'purchase_rate_rate' must be > 0";
  }
  if (!(options.browse_only_share >= 0 && options.browse_only_share <= 1)) {
    return "shop option 'browse_only_share' must be in [0, 1]";
  }
  if (!(options.dropout_a > 0) || !(options.dropout_b > 0)) {
    return "shop options 'dropout_a' and 'dropout_b' must be > 0";
  }
  if (!(options.order_p > 0) || !(options.order_q > 1) || !(options.order_gamma > 0)) {
    return "shop options 'order_p' > 0, 'order_q' > 1 and 'order_gamma' > 0 are required";
  }
  if (!(options.session_rate >= 0) || !(options.pre_purchase_sessions >= 0) ||
      !(options.pre_purchase_days > 0) || !(options.fade_days > 0)) {
    return "shop options 'session_rate', 'pre_purchase_sessions' must be >= 0 and "
           "'pre_purchase_days', 'fade_days' > 0";
  }
  if (!(options.refund_share >= 0 && options.refund_share <= 1)) {
    return "shop option 'refund_share' must be in [0, 1]";
  }
  if (!(options.interest_shape > 0)) return "shop option 'interest_shape' must be > 0";
  return "";
}

const std::vector<std::string>& ShopProfileNames() {
  static const std::vector<std::string> names = {"default",         "wholesale",    "one_time",
                                                 "no_dropout",      "high_dropout", "long_history",
                                                 "day_granularity", "cents"};
  return names;
}

std::string ApplyShopProfiles(const std::string& profiles, ShopOptions* options) {
  size_t begin = 0;
  while (begin <= profiles.size()) {
    size_t end = profiles.find(',', begin);
    if (end == std::string::npos) end = profiles.size();
    const std::string name = profiles.substr(begin, end - begin);
    ShopOptions& o = *options;
    if (name == "default") {
    } else if (name == "wholesale") {
      o.purchase_rate_shape = 1.0;
      o.purchase_rate_rate = 12.5;  // mean 0.08/day
      o.browse_only_share = 0.1;
      o.dropout_a = 1.0;
      o.dropout_b = 30.0;
      o.order_p = 1.0;  // exponential orders around each buyer's mean
      o.order_q = 1.3;  // buyers' means: a power-law tail of index 1.3
      o.order_gamma = 60.0;
      o.refund_share = 0.02;
    } else if (name == "one_time") {
      o.dropout_a = 6.0;
      o.dropout_b = 1.0;
    } else if (name == "no_dropout") {
      o.dropout_a = 0.05;
      o.dropout_b = 50.0;
    } else if (name == "high_dropout") {
      o.purchase_rate_shape = 1.0;
      o.purchase_rate_rate = 14.0;  // mean 0.07/day
      o.dropout_a = 3.0;
      o.dropout_b = 2.0;
    } else if (name == "long_history") {
      o.purchase_rate_shape = 0.5;
      o.purchase_rate_rate = 5.0;  // mean 0.1/day, heavy tail
      o.dropout_a = 1.0;
      o.dropout_b = 10.0;
      o.session_rate = 1.5;
      o.interest_shape = 0.3;
    } else if (name == "day_granularity") {
      o.day_granularity = true;
    } else if (name == "cents") {
      o.money_in_cents = true;
    } else {
      std::string known;
      for (const auto& n : ShopProfileNames()) known += (known.empty() ? "" : ", ") + n;
      return "unknown shop profile '" + name + "' (known: " + known + ")";
    }
    begin = end + 1;
  }
  return "";
}

struct SyntheticShop::Impl {
  explicit Impl(ShopOptions shop_options);

  bool Next(GeneratedEvent* event);
  UserTruth TruthOf(int64_t index) const;

  ShopOptions options;
  const Rhythm& rhythm = TheRhythm();
  int64_t end_ms = 0;
  int64_t horizon_end_ms = 0;
  double mean_lambda = 1;
  std::vector<User> users;
  std::vector<HeapEntry> heap;
  int64_t generated = 0;

 private:
  int64_t DaysToMs(double days) const {
    return static_cast<int64_t>(std::llround(days * kMsPerDay));
  }
  double Fade(const User& user, int64_t ms) const {
    if (ms <= user.fade_start_ms) return 1.0;
    return std::exp(-static_cast<double>(ms - user.fade_start_ms) / kMsPerDay / options.fade_days);
  }
  int64_t NextBase(User& user, int64_t from_ms) const;
  int64_t NextPurchase(User& user, int64_t from_ms) const;
  int64_t NextResearch(User& user, int64_t from_ms) const;
  int64_t DrawOrderCents(User& user) const;
  // Purchase bookkeeping shared by the stream and the horizon simulation.
  void AfterPurchase(User& user, int64_t ms) const;
  void Advance(User& user) const;
  void Finalize(User& user) const;
  // Counts a session the moment its first event is emitted.
  void ObserveSession(User& user) const;
  // Sets posterior_alive / posterior_expected_spend from what was observed.
  void Posterior(User& user) const;
  void Format(int64_t index, const User& user, GeneratedEvent* event) const;
  void SiftDown(size_t position);
};

SyntheticShop::Impl::Impl(ShopOptions shop_options) : options(std::move(shop_options)) {
  if (!ValidateShopOptions(options).empty()) {
    // Unusable options generate nothing (callers check ValidateShopOptions).
    options.users = 0;
    options.days = std::max(options.days, 0.0);
    options.horizon_days = std::max(options.horizon_days, 0.0);
  }
  end_ms = options.start_ms + DaysToMs(options.days);
  horizon_end_ms = end_ms + DaysToMs(options.horizon_days);
  mean_lambda = options.purchase_rate_shape / options.purchase_rate_rate;
  users.resize(static_cast<size_t>(options.users));
  heap.reserve(users.size());
  const uint64_t seed = Mix(options.seed ^ 0x5EED5EED5EED5EEDULL);
  const double period_ms = static_cast<double>(end_ms - options.start_ms);
  for (size_t index = 0; index < users.size(); ++index) {
    User& user = users[index];
    user.rng = Rng(Mix(seed + index * 0x9E3779B97F4A7C15ULL));
    Rng& rng = user.rng;
    user.signup_ms = options.start_ms + static_cast<int64_t>(rng.Uniform() * period_ms);
    user.country = rng.Pick(kCountryWeights);
    user.channel = rng.Pick(kChannelWeights);
    user.tier = rng.Pick(kTierWeights);
    double browse_only =
        std::min(0.95, options.browse_only_share * kChannelBrowseOnly[user.channel]);
    bool buyer = rng.Uniform() >= browse_only;
    double gamma_lambda = rng.Gamma(options.purchase_rate_shape, options.purchase_rate_rate);
    user.lambda = buyer ? gamma_lambda * kChannelRate[user.channel] * kTierRate[user.tier] : 0.0;
    user.dropout = rng.Beta(options.dropout_a, options.dropout_b);
    user.order_rate = rng.Gamma(options.order_q, options.order_gamma);
    double interest = rng.Gamma(options.interest_shape, options.interest_shape);  // mean 1
    double activity =
        buyer ? 0.5 + 0.5 * std::sqrt(user.lambda / mean_lambda) : kBrowseOnlyActivity;
    user.session_rate = options.session_rate * interest * activity;
    if (!buyer) {
      user.dropped = true;  // never buys; browsing fades after a while
      user.fade_start_ms = user.signup_ms + DaysToMs(rng.Exponential(kBrowseOnlyFadeMeanDays));
    }
    user.pending_ms = user.signup_ms;
    user.pending_kind = EventKind::kProfile;
    user.next_base_ms = user.signup_ms + 2000;  // the signup session
    user.next_purchase_ms = NextPurchase(user, user.signup_ms);
    user.next_research_ms = NextResearch(user, user.signup_ms);
    heap.push_back({user.pending_ms, static_cast<int64_t>(index)});
  }
  std::make_heap(heap.begin(), heap.end(),
                 [](const HeapEntry& a, const HeapEntry& b) { return Before(b, a); });
}

int64_t SyntheticShop::Impl::NextBase(User& user, int64_t from_ms) const {
  const double rate = user.session_rate * rhythm.max();
  if (!(rate > 0)) return kNever;
  int64_t ms = from_ms;
  for (;;) {
    ms += DaysToMs(user.rng.Exponential(1.0 / rate));
    if (ms >= end_ms) return kNever;
    double fade = Fade(user, ms);
    if (fade < 1e-3) return kNever;
    if (user.rng.Uniform() * rhythm.max() < rhythm.At(ms) * fade) return ms;
  }
}

int64_t SyntheticShop::Impl::NextPurchase(User& user, int64_t from_ms) const {
  const double rate = user.lambda * rhythm.max();
  if (user.dropped || !(rate > 0)) return kNever;
  int64_t ms = from_ms;
  for (;;) {
    ms += std::max<int64_t>(1, DaysToMs(user.rng.Exponential(1.0 / rate)));
    if (ms >= horizon_end_ms) return kNever;
    if (user.rng.Uniform() * rhythm.max() < rhythm.At(ms)) return ms;
  }
}

// Research sessions before the purchase planned at next_purchase_ms: an
// intensity b/tau * exp(-(t_p - t)/tau) whose integral is inverted directly.
int64_t SyntheticShop::Impl::NextResearch(User& user, int64_t from_ms) const {
  if (user.next_purchase_ms == kNever || !(options.pre_purchase_sessions > 0)) return kNever;
  const double tau_ms = options.pre_purchase_days * kMsPerDay;
  const double gap_ms = static_cast<double>(user.next_purchase_ms - from_ms);
  double u = std::exp(-gap_ms / tau_ms) + user.rng.Exponential(1.0) / options.pre_purchase_sessions;
  if (u >= 1.0) return kNever;
  int64_t ms = user.next_purchase_ms + static_cast<int64_t>(tau_ms * std::log(u));
  return std::max(ms, from_ms + 1);
}

int64_t SyntheticShop::Impl::DrawOrderCents(User& user) const {
  double value = user.rng.Gamma(options.order_p, user.order_rate);
  value = std::clamp(value, 1.0, 1e6);
  return std::llround(value * 100.0);
}

void SyntheticShop::Impl::AfterPurchase(User& user, int64_t ms) const {
  if (user.rng.Uniform() < user.dropout) {
    user.dropped = true;
    user.fade_start_ms = ms;
    user.next_purchase_ms = kNever;
    user.next_research_ms = kNever;
  } else {
    user.next_purchase_ms = NextPurchase(user, ms);
    user.next_research_ms = NextResearch(user, ms);
  }
}

// Computes the user's next pending event (after the current one was emitted).
void SyntheticShop::Impl::Advance(User& user) const {
  Rng& rng = user.rng;
  for (;;) {
    if (user.session == SessionKind::kNone) {
      int64_t candidate =
          std::min({user.next_base_ms, user.next_research_ms, user.next_purchase_ms});
      if (candidate == kNever && user.refund_ms == kNever) {
        user.pending_ms = kNever;
        user.pending_kind = EventKind::kPageView;  // nothing pending
        return;
      }
      if (user.refund_ms <= candidate) {
        user.pending_ms = user.refund_ms;
        user.pending_kind = EventKind::kRefund;
        user.pending_cents = user.refund_cents;
        user.pending_order = user.refund_order;
        user.refund_ms = kNever;
        return;
      }
      int64_t start = std::max(candidate, user.last_session_end_ms + kSessionGapMs);
      if (candidate == user.next_purchase_ms) {
        user.session = SessionKind::kPurchase;
        user.next_purchase_ms = kNever;  // drawn again after the purchase
        user.next_research_ms = kNever;
        user.session_items = 1 + rng.Poisson(0.6);
        user.session_carts = std::min(user.session_items, 3);
        user.session_left = 1 + rng.Geometric(2.0) + user.session_carts + 1;
      } else if (candidate == user.next_research_ms) {
        user.session = SessionKind::kResearch;
        user.next_research_ms = NextResearch(user, candidate);
        user.session_left = 2 + rng.Geometric(5.0);
      } else {
        user.session = SessionKind::kBase;
        user.next_base_ms = NextBase(user, candidate);
        user.session_left = 1 + rng.Geometric(3.0);
      }
      ++user.sessions;
      user.session_first = true;
      user.session_next_ms = start;
      continue;
    }
    // A session is in progress: a refund may come in between its events.
    if (user.refund_ms <= user.session_next_ms) {
      user.session_next_ms = std::max(user.session_next_ms, user.refund_ms);
      user.pending_ms = user.refund_ms;
      user.pending_kind = EventKind::kRefund;
      user.pending_cents = user.refund_cents;
      user.pending_order = user.refund_order;
      user.refund_ms = kNever;
      return;
    }
    user.pending_ms = user.session_next_ms;
    double u = rng.Uniform();
    user.pending_product = static_cast<int32_t>(std::pow(rng.Uniform(), 2.5) * kProducts);
    const bool first = user.session_first;
    user.session_first = false;
    if (user.session == SessionKind::kPurchase) {
      if (user.session_left == 1) {
        user.pending_kind = EventKind::kPurchase;
        user.pending_order = ++user.orders;
        user.pending_cents = DrawOrderCents(user);
      } else if (user.session_left <= 1 + user.session_carts) {
        user.pending_kind = EventKind::kAddToCart;
      } else {
        user.pending_kind = u < 0.75 ? EventKind::kPageView : EventKind::kSearch;
      }
    } else {
      const bool research = user.session == SessionKind::kResearch;
      const double view = research ? 0.50 : 0.60;
      const double search = research ? 0.65 : 0.78;
      const double add = research ? 0.85 : 0.88;
      const double wish = research ? 0.95 : 0.94;
      if (u < view) {
        user.pending_kind = EventKind::kPageView;
      } else if (u < search) {
        user.pending_kind = EventKind::kSearch;
      } else if (u < add) {
        user.pending_kind = EventKind::kAddToCart;
      } else if (u < wish) {
        user.pending_kind = EventKind::kWishlist;
      } else {
        user.pending_kind = user.cart > 0 ? EventKind::kRemoveFromCart : EventKind::kPageView;
      }
      // Sessions that start from an ad (more often for paid channels).
      const bool paid = user.channel == 1 || user.channel == 2;
      if (first && rng.Uniform() < (paid ? 0.25 : 0.08)) {
        user.pending_kind = EventKind::kAdClick;
      }
    }
    if (user.pending_kind == EventKind::kAddToCart) ++user.cart;
    if (user.pending_kind == EventKind::kRemoveFromCart) --user.cart;
    if (user.pending_kind == EventKind::kPurchase) user.cart = 0;
    if (--user.session_left <= 0) {
      user.session = SessionKind::kNone;
      user.last_session_end_ms = user.pending_ms;
    } else {
      user.session_next_ms = user.pending_ms + 3000 + DaysToMs(rng.Exponential(45.0 / 86400.0));
    }
    return;
  }
}

void SyntheticShop::Impl::ObserveSession(User& user) const {
  if (user.pending_kind == EventKind::kProfile || user.pending_kind == EventKind::kRefund) return;
  if (user.sessions == user.observed_session) return;  // not the session's first event
  user.observed_session = user.sessions;
  ++user.observed_sessions;
  if (user.purchases == 0) {
    user.session_days.push_back(
        static_cast<float>(static_cast<double>(user.pending_ms - user.signup_ms) / kMsPerDay));
  } else {
    user.days_after_purchase_sum +=
        static_cast<double>(user.pending_ms - user.last_purchase_ms) / kMsPerDay;
  }
}

// Bayes' rule on what the events show, with the population parameters of
// `options` and the observable multipliers of the user's channel and tier.
// Purchase rate lambda = k g, g ~ Gamma(r, beta); dropout p ~ Beta(a, b);
// base sessions ~ Poisson(rho), rho ~ Gamma(kappa, kappa / (session rate x
// activity)), faded by exp(-t / fade) after the dropout (browse-only users:
// after Exponential(30 days) from signup). Hypotheses:
//   x >= 1 purchases: alive vs dropped right after the last purchase;
//   x == 0:           a buyer who has not bought yet (alive) vs browse-only.
// rho is integrated out in closed form (Gamma-Poisson), lambda and p too for
// the odds; the browse-only fade start by quadrature. The expected spend if
// alive is E[(1 - exp(-p lambda W)) / p] over the posterior (closed form in
// lambda, quadrature in p) times the Gamma-Gamma posterior mean order value.
void SyntheticShop::Impl::Posterior(User& user) const {
  const double r = options.purchase_rate_shape;
  const double beta = options.purchase_rate_rate;
  const double a = options.dropout_a;
  const double b = options.dropout_b;
  const double k = kChannelRate[user.channel] * kTierRate[user.tier];
  const double x = static_cast<double>(user.purchases);
  const double fade = options.fade_days;
  const double tenure_days = static_cast<double>(end_ms - user.signup_ms) / kMsPerDay;
  const double exposure =
      rhythm.Integral(end_ms) - rhythm.Integral(user.signup_ms);  // purchase days
  // Base sessions: each purchase brings its own purchase session and on
  // average pre_purchase_sessions research sessions, which say nothing about
  // the browsing rate; they are taken out in expectation.
  const double n = std::max(
      1.0, static_cast<double>(user.observed_sessions) -
               static_cast<double>(user.purchases) * (1.0 + options.pre_purchase_sessions));
  const double kappa = options.interest_shape;
  // E[sqrt(g / mean g)] for g ~ Gamma(r, .): buyers' mean browsing activity.
  const double sqrt_ratio = std::exp(std::lgamma(r + 0.5) - std::lgamma(r)) / std::sqrt(r);
  const double buyer_activity = 0.5 + 0.5 * std::sqrt(k) * sqrt_ratio;
  const bool browsing = options.session_rate > 0;
  // log of the marginal likelihood of n sessions with integrated intensity
  // `integral` (times rho) under the Gamma(kappa, theta) prior on rho; terms
  // equal under every hypothesis (the session times' rhythm) are left out.
  auto sessions_log = [&](double activity, double integral) {
    if (!browsing) return 0.0;
    const double theta = kappa / (options.session_rate * activity);
    return kappa * std::log(theta) - (kappa + n) * std::log(theta + integral);
  };
  double log_odds_gone = 0;  // log P(not alive | events) / P(alive | events)
  if (x >= 1) {
    const double since_purchase_days =
        static_cast<double>(end_ms - user.last_purchase_ms) / kMsPerDay;
    const double exposure_to_last =
        rhythm.Integral(user.last_purchase_ms) - rhythm.Integral(user.signup_ms);
    log_odds_gone = std::log(a / (b + x - 1.0)) + (r + x) * (std::log(beta + k * exposure) -
                                                             std::log(beta + k * exposure_to_last));
    const double integral_gone =
        (tenure_days - since_purchase_days) + fade * -std::expm1(-since_purchase_days / fade);
    log_odds_gone += -user.days_after_purchase_sum / fade +
                     sessions_log(buyer_activity, integral_gone) -
                     sessions_log(buyer_activity, tenure_days);
  } else {
    const double browse_only =
        std::min(0.95, options.browse_only_share * kChannelBrowseOnly[user.channel]);
    double log_alive = r * (std::log(beta) - std::log(beta + k * exposure)) +
                       sessions_log(buyer_activity, tenure_days);
    log_alive += browse_only < 1.0 ? std::log1p(-browse_only) : -1e300;
    // Browse-only: fade start tau ~ Exponential(mean M) after signup;
    // midpoint rule over [0, tenure) plus the mass beyond (no fade seen).
    const std::vector<float>& days = user.session_days;
    constexpr int kSteps = 512;
    const double mean = kBrowseOnlyFadeMeanDays;
    const double step = tenure_days / kSteps;
    double suffix_sum = 0;  // sum of session days after tau
    for (float day : days) suffix_sum += day;
    size_t next = 0;  // first session after tau
    std::vector<double> terms;
    terms.reserve(kSteps + 1);
    for (int i = 0; i < kSteps; ++i) {
      const double tau = (i + 0.5) * step;
      while (next < days.size() && days[next] <= tau) suffix_sum -= days[next++];
      const double after = static_cast<double>(days.size() - next);
      const double penalty = -(suffix_sum - after * tau) / fade;
      const double integral = tau + fade * -std::expm1(-(tenure_days - tau) / fade);
      terms.push_back(-tau / mean + std::log(step / mean) + penalty +
                      sessions_log(kBrowseOnlyActivity, integral));
    }
    terms.push_back(-tenure_days / mean + sessions_log(kBrowseOnlyActivity, tenure_days));
    const double top = *std::max_element(terms.begin(), terms.end());
    double sum = 0;
    for (double term : terms) sum += std::exp(term - top);
    const double log_gone =
        (browse_only > 0 ? std::log(browse_only) : -1e300) + top + std::log(sum);
    log_odds_gone = log_gone - log_alive;
  }
  user.posterior_alive = 1.0 / (1.0 + std::exp(std::min(log_odds_gone, 700.0)));

  // Expected spend if alive: posterior g ~ Gamma(r + x, beta + k exposure),
  // p ~ Beta(a, b + x): E_g[1 - exp(-p k g W)] = 1 - (beta' / (beta' + p k W))^(r')
  // in closed form; E_p by the midpoint rule in u = p^a (smooth for any a).
  const double window = rhythm.Integral(horizon_end_ms) - rhythm.Integral(end_ms);
  const double shape = r + x;
  const double rate = beta + k * exposure;
  const double b_post = b + x;
  constexpr int kPoints = 256;
  double weighted = 0, weights = 0;
  for (int i = 0; i < kPoints; ++i) {
    const double u = (i + 0.5) / kPoints;
    const double p = std::pow(u, 1.0 / a);
    const double weight = std::pow(1.0 - p, b_post - 1.0);
    const double purchases = -std::expm1(-shape * std::log1p(p * k * window / rate)) / p;
    weighted += weight * purchases;
    weights += weight;
  }
  const double expected_purchases = weights > 0 ? weighted / weights : 0.0;
  const double order_sum = static_cast<double>(user.spend_cents) / 100.0;
  const double mean_order = options.order_p * (options.order_gamma + order_sum) /
                            (options.order_q + x * options.order_p - 1.0);
  user.posterior_expected_spend = user.posterior_alive * expected_purchases * mean_order;
}

// The user's stream reached the end of the period: fix its truth.
void SyntheticShop::Impl::Finalize(User& user) const {
  Posterior(user);
  std::vector<float>().swap(user.session_days);
  user.finished = true;
  user.alive_at_end = !user.dropped;
  const double window = rhythm.Integral(horizon_end_ms) - rhythm.Integral(end_ms);
  const double lambda_horizon = user.lambda * window;
  auto expected_if_alive = [&]() {
    if (!(user.lambda > 0)) return 0.0;
    if (user.dropout <= 0) return lambda_horizon;
    const double x = user.dropout * lambda_horizon;
    // expm1 where 1 - exp(-x) loses the digits (tiny dropout: no_dropout).
    if (x < 1e-8) return -std::expm1(-x) / user.dropout;
    return (1.0 - std::exp(-x)) / user.dropout;
  };
  const double alive_purchases = expected_if_alive();
  user.expected_purchases = user.dropped ? 0.0 : alive_purchases;
  if (!(user.lambda > 0)) {
    user.p_alive = 0;
  } else if (user.purchases == 0) {
    user.p_alive = 1;
  } else {
    double quiet = user.lambda * (rhythm.Integral(end_ms) - rhythm.Integral(user.last_purchase_ms));
    double alive = (1.0 - user.dropout) * std::exp(-quiet);
    user.p_alive = alive / (alive + user.dropout);
  }
  user.oracle_expected_purchases = user.p_alive * alive_purchases;

  // Realized: simulate on past the end with the user's own generator.
  if (horizon_end_ms > end_ms) {
    if (user.session == SessionKind::kPurchase) {
      // The purchase of the session in progress happens just after the end.
      ++user.realized_purchases;
      user.realized_cents += DrawOrderCents(user);
      AfterPurchase(user, end_ms);
    } else if (user.pending_kind == EventKind::kPurchase && user.pending_ms < horizon_end_ms) {
      ++user.realized_purchases;
      user.realized_cents += user.pending_cents;
      AfterPurchase(user, user.pending_ms);
    }
  }
  int64_t next = user.next_purchase_ms;
  while (!user.dropped && next < horizon_end_ms) {
    next = std::max(next, end_ms);
    ++user.realized_purchases;
    user.realized_cents += DrawOrderCents(user);
    AfterPurchase(user, next);
    next = user.next_purchase_ms;
  }
}

void SyntheticShop::Impl::Format(int64_t index, const User& user, GeneratedEvent* event) const {
  event->user_id.assign("u");
  AppendInt(event->user_id, index);
  event->ts_ms = user.pending_ms;
  event->kind = user.pending_kind;
  event->user_index = index;
  event->amount = 0;
  std::string& json = event->json;
  json.assign(R"({"event_id":")");
  json += event->user_id;
  json += '-';
  AppendInt(json, user.events);
  json += R"(","user_id":")";
  json += event->user_id;
  json += R"(","type":")";
  json += EventKindName(user.pending_kind);
  if (options.day_granularity) {
    json += R"(","ts":")";
    AppendDate(json, user.pending_ms);
    json += '"';
  } else {
    json += R"(","ts":)";
    AppendInt(json, user.pending_ms);
  }
  auto session_id = [&]() {
    json += R"(,"session_id":")";
    json += event->user_id;
    json += "-s";
    AppendInt(json, user.sessions);
    json += '"';
  };
  auto order = [&](uint32_t order_id) {
    json += R"(,"order_id":")";
    json += event->user_id;
    json += "-o";
    AppendInt(json, order_id);
    json += R"(","amount":)";
    if (options.money_in_cents) {
      AppendInt(json, user.pending_cents);
      event->amount = static_cast<double>(user.pending_cents);
    } else {
      AppendCents(json, user.pending_cents);
      event->amount = static_cast<double>(user.pending_cents) / 100.0;
    }
    json += R"(,"currency":")";
    json += options.currency;
    json += '"';
  };
  auto product = [&]() {
    json += R"(,"product_id":"p)";
    AppendInt(json, user.pending_product);
    json += R"(","category":")";
    json += kCategories[static_cast<size_t>(user.pending_product * 7919) % kCategories.size()];
    json += '"';
  };
  switch (user.pending_kind) {
    case EventKind::kProfile:
      json += R"(,"attrs":{"channel":")";
      json += kChannels[user.channel];
      json += R"(","country":")";
      json += kCountries[user.country];
      json += R"(","tier":")";
      json += kTiers[user.tier];
      json += R"("})";
      break;
    case EventKind::kPurchase:
      session_id();
      order(user.pending_order);
      json += R"(,"items":)";
      AppendInt(json, user.session_items);
      break;
    case EventKind::kRefund: order(user.pending_order); break;
    case EventKind::kSearch:
      session_id();
      json += R"(,"category":")";
      json += kCategories[static_cast<size_t>(user.pending_product) % kCategories.size()];
      json += '"';
      break;
    default:
      session_id();
      product();
      break;
  }
  json += '}';
}

void SyntheticShop::Impl::SiftDown(size_t position) {
  const size_t size = heap.size();
  HeapEntry moving = heap[position];
  for (;;) {
    size_t child = 2 * position + 1;
    if (child >= size) break;
    if (child + 1 < size && Before(heap[child + 1], heap[child])) ++child;
    if (!Before(heap[child], moving)) break;
    heap[position] = heap[child];
    position = child;
  }
  heap[position] = moving;
}

bool SyntheticShop::Impl::Next(GeneratedEvent* event) {
  if (heap.empty()) return false;
  const int64_t index = heap.front().index;
  User& user = users[static_cast<size_t>(index)];
  Format(index, user, event);
  ++user.events;
  ++generated;
  ObserveSession(user);
  if (user.pending_kind == EventKind::kPurchase) {
    ++user.purchases;
    user.spend_cents += user.pending_cents;
    user.last_purchase_ms = user.pending_ms;
    user.days_after_purchase_sum = 0;
    std::vector<float>().swap(user.session_days);
    if (user.refund_ms == kNever && user.rng.Uniform() < options.refund_share) {
      user.refund_ms = user.pending_ms + DaysToMs(2.0 + user.rng.Exponential(5.0));
      bool full = user.rng.Uniform() < 0.7;
      user.refund_cents =
          full ? user.pending_cents
               : std::max<int64_t>(1, std::llround(static_cast<double>(user.pending_cents) *
                                                   (0.2 + 0.6 * user.rng.Uniform())));
      user.refund_order = user.pending_order;
    }
    AfterPurchase(user, user.pending_ms);
  }
  Advance(user);
  if (user.pending_ms >= end_ms) {
    Finalize(user);
    heap.front() = heap.back();
    heap.pop_back();
  } else {
    heap.front().ts_ms = user.pending_ms;
  }
  if (!heap.empty()) SiftDown(0);
  return true;
}

UserTruth SyntheticShop::Impl::TruthOf(int64_t index) const {
  const User& user = users[static_cast<size_t>(index)];
  UserTruth truth;
  truth.user_id = "u" + std::to_string(index);
  truth.signup_ms = user.signup_ms;
  truth.country = kCountries[user.country];
  truth.channel = kChannels[user.channel];
  truth.tier = kTiers[user.tier];
  truth.purchase_rate_per_day = user.lambda;
  truth.dropout_probability = user.dropout;
  const double money = options.money_in_cents ? 100.0 : 1.0;  // truth in the events' units
  truth.mean_order_value = money * options.order_p / user.order_rate;
  truth.purchases = user.purchases;
  truth.spend = money * static_cast<double>(user.spend_cents) / 100.0;
  truth.last_purchase_ms = user.last_purchase_ms;
  truth.finished = user.finished;
  if (!user.finished) return truth;
  truth.alive = user.alive_at_end;
  truth.p_alive = user.p_alive;
  truth.expected_purchases = user.expected_purchases;
  truth.expected_spend = user.expected_purchases * truth.mean_order_value;
  truth.oracle_expected_spend = user.oracle_expected_purchases * truth.mean_order_value;
  truth.posterior_alive = user.posterior_alive;
  truth.posterior_expected_spend = money * user.posterior_expected_spend;
  truth.realized_purchases = user.realized_purchases;
  truth.realized_spend = money * static_cast<double>(user.realized_cents) / 100.0;
  return truth;
}

// ------------------------------------------------------------ SyntheticShop --

SyntheticShop::SyntheticShop(ShopOptions options)
    : impl_(std::make_unique<Impl>(std::move(options))) {}
SyntheticShop::~SyntheticShop() = default;

bool SyntheticShop::Next(GeneratedEvent* event) { return impl_->Next(event); }

std::vector<UserTruth> SyntheticShop::Truth() const {
  std::vector<UserTruth> truth;
  truth.reserve(impl_->users.size());
  for (size_t index = 0; index < impl_->users.size(); ++index) {
    truth.push_back(impl_->TruthOf(static_cast<int64_t>(index)));
  }
  return truth;
}

const ShopOptions& SyntheticShop::options() const { return impl_->options; }
int64_t SyntheticShop::end_ms() const { return impl_->end_ms; }
int64_t SyntheticShop::events_generated() const { return impl_->generated; }

bool WriteEventsJsonl(SyntheticShop& shop, std::ostream& out, int64_t* events) {
  GeneratedEvent event;
  int64_t count = 0;
  while (shop.Next(&event) && out) {
    out.write(event.json.data(), static_cast<std::streamsize>(event.json.size()));
    out.put('\n');
    ++count;
  }
  if (events != nullptr) *events = count;
  out.flush();
  return static_cast<bool>(out);
}

namespace {
constexpr const char* kTruthColumns[] = {"user_id",
                                         "signup_ms",
                                         "country",
                                         "channel",
                                         "tier",
                                         "purchase_rate_per_day",
                                         "dropout_probability",
                                         "mean_order_value",
                                         "purchases",
                                         "spend",
                                         "last_purchase_ms",
                                         "alive",
                                         "p_alive",
                                         "expected_purchases",
                                         "expected_spend",
                                         "oracle_expected_spend",
                                         "posterior_alive",
                                         "posterior_expected_spend",
                                         "realized_purchases",
                                         "realized_spend"};
}  // namespace

bool WriteTruthJsonl(const std::vector<UserTruth>& truth, std::ostream& out) {
  for (const UserTruth& user : truth) {
    out << R"({"user_id":")" << user.user_id << R"(","signup_ms":)" << user.signup_ms
        << R"(,"country":")" << user.country << R"(","channel":")" << user.channel
        << R"(","tier":")" << user.tier << R"(","purchase_rate_per_day":)";
    AppendCsvNumber(out, user.purchase_rate_per_day);
    out << R"(,"dropout_probability":)";
    AppendCsvNumber(out, user.dropout_probability);
    out << R"(,"mean_order_value":)";
    AppendCsvNumber(out, user.mean_order_value);
    out << R"(,"purchases":)" << user.purchases << R"(,"spend":)";
    AppendCsvNumber(out, user.spend);
    out << R"(,"last_purchase_ms":)" << user.last_purchase_ms << R"(,"alive":)"
        << (user.alive ? "true" : "false") << R"(,"p_alive":)";
    AppendCsvNumber(out, user.p_alive);
    out << R"(,"expected_purchases":)";
    AppendCsvNumber(out, user.expected_purchases);
    out << R"(,"expected_spend":)";
    AppendCsvNumber(out, user.expected_spend);
    out << R"(,"oracle_expected_spend":)";
    AppendCsvNumber(out, user.oracle_expected_spend);
    out << R"(,"posterior_alive":)";
    AppendCsvNumber(out, user.posterior_alive);
    out << R"(,"posterior_expected_spend":)";
    AppendCsvNumber(out, user.posterior_expected_spend);
    out << R"(,"realized_purchases":)" << user.realized_purchases << R"(,"realized_spend":)";
    AppendCsvNumber(out, user.realized_spend);
    out << "}\n";
  }
  out.flush();
  return static_cast<bool>(out);
}

bool WriteTruthCsv(const std::vector<UserTruth>& truth, std::ostream& out) {
  bool first = true;
  for (const char* column : kTruthColumns) {
    if (!first) out << ',';
    out << column;
    first = false;
  }
  out << '\n';
  for (const UserTruth& user : truth) {
    out << user.user_id << ',' << user.signup_ms << ',' << user.country << ',' << user.channel
        << ',' << user.tier << ',';
    AppendCsvNumber(out, user.purchase_rate_per_day);
    out << ',';
    AppendCsvNumber(out, user.dropout_probability);
    out << ',';
    AppendCsvNumber(out, user.mean_order_value);
    out << ',' << user.purchases << ',';
    AppendCsvNumber(out, user.spend);
    out << ',' << user.last_purchase_ms << ',' << (user.alive ? 1 : 0) << ',';
    AppendCsvNumber(out, user.p_alive);
    out << ',';
    AppendCsvNumber(out, user.expected_purchases);
    out << ',';
    AppendCsvNumber(out, user.expected_spend);
    out << ',';
    AppendCsvNumber(out, user.oracle_expected_spend);
    out << ',';
    AppendCsvNumber(out, user.posterior_alive);
    out << ',';
    AppendCsvNumber(out, user.posterior_expected_spend);
    out << ',' << user.realized_purchases << ',';
    AppendCsvNumber(out, user.realized_spend);
    out << '\n';
  }
  out.flush();
  return static_cast<bool>(out);
}

}  // namespace clv::sim
