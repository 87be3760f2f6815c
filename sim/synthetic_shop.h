// Synthetic shop: a believable event stream with known ground truth, for
// `clv gen`, `clv demo`, `clv bench` and training/evaluation.
//
// Contract:
//  * Each user has latent parameters drawn once from the population:
//    purchase rate lambda ~ Gamma(r, alpha) per day (times mild tier/channel
//    multipliers; a share of users are browse-only with lambda = 0), dropout
//    probability p ~ Beta(a, b) applied after every purchase (BG/NBD), and a
//    mean order value from a Gamma-Gamma model (order values ~ Gamma(p_gg, nu),
//    nu ~ Gamma(q, gamma)).
//  * Events: a profile event at signup (attrs country, channel, tier), browsing
//    sessions (page_view, search, add_to_cart, remove_from_cart, wishlist,
//    ad_click) whose rate rises in the days before each purchase and fades
//    away after the user silently drops out, purchase sessions ending in a
//    purchase (order_id, items, amount, currency), occasional refunds.
//    Sessions and purchases follow a daily and weekly rhythm (hour-of-week
//    factors with mean 1: quiet nights, busier weekends).
//  * Next() returns events in global time order (ties: by user index), as JSON
//    text with our default field names (config::MappingOptions defaults,
//    ts in epoch ms), over [start_ms, start_ms + days). Users are merged with
//    a heap of per-user next events: memory is O(users), not O(events).
//  * The same ShopOptions give byte-identical output on every run and
//    platform (own PRNG and distributions, no std:: distributions).
//  * Truth: when a user's stream reaches the end of the period its ground
//    truth is fixed: the latent parameters, whether it is alive at the cutoff,
//    the expected purchases/spend over [end, end + horizon) given its latent
//    state (0 when dead), the BG/NBD posterior P(alive) knowing lambda and p,
//    and the realized purchases/spend from simulating it on past the end.
//    Spend is gross purchase value (refunds not subtracted).
//  * Posterior from the events: P(alive) and the expected spend over the
//    horizon given ONLY what the user's events show (profile attributes,
//    purchase times and amounts, session start times), by Bayes' rule under
//    the generator's own population parameters. It is what a model trained on
//    unlimited data from this shop could approach, so it tells how far any
//    model is from the best ranking the events allow (the oracle, knowing the
//    latent parameters, is out of reach of every model). Approximations: the
//    research sessions are counted as base sessions, the link between a
//    buyer's browsing and purchase rates is averaged out, and the weekly
//    rhythm is ignored for browsing (kept for purchases). Memory: O(users)
//    plus the session start times of users who have not bought yet.
//
// Thread-safety: a SyntheticShop is not thread-safe.
//
// Example:
//   sim::SyntheticShop shop({.users = 1000, .days = 90, .seed = 7});
//   sim::GeneratedEvent event;
//   while (shop.Next(&event)) producer.Send(event.user_id, event.json);
//   auto truth = shop.Truth();
#pragma once

#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

#include "common/event_kind.h"

namespace clv::sim {

struct ShopOptions {
  // Number of users (all sign up during the period, uniformly in time).
  int64_t users = 10000;
  // Start of the generated period, epoch ms (default 2025-01-01T00:00:00Z).
  int64_t start_ms = 1735689600000LL;
  // Length of the generated period, days.
  double days = 180;
  uint64_t seed = 42;
  // Horizon of the ground truth after the end of the period, days.
  double horizon_days = 365;

  // Population (per-day rates). Purchase rate lambda ~ Gamma(shape, rate).
  double purchase_rate_shape = 0.7;
  double purchase_rate_rate = 20.0;  // mean lambda = 0.035/day, one purchase in ~4 weeks
  // Share of users who never buy (lambda = 0); they browse and fade away.
  double browse_only_share = 0.35;
  // Dropout after each purchase, p ~ Beta(a, b).
  double dropout_a = 1.0;
  double dropout_b = 4.0;
  // Gamma-Gamma order values: z ~ Gamma(p, nu), nu ~ Gamma(q, gamma);
  // population mean order value = p * gamma / (q - 1) (= 64 by default).
  double order_p = 4.0;
  double order_q = 3.5;
  double order_gamma = 40.0;
  // Base browsing sessions per day of an average user.
  double session_rate = 0.25;
  // Expected extra "research" sessions before each purchase, and how many
  // days before the purchase they concentrate (exponential ramp).
  double pre_purchase_sessions = 2.0;
  double pre_purchase_days = 1.5;
  // After dropout, browsing fades with this time constant (days).
  double fade_days = 14.0;
  // Share of purchases refunded later.
  double refund_share = 0.05;
  std::string currency = "EUR";
  // A user's interest in browsing ~ Gamma(shape, rate = shape): mean 1; a
  // small shape gives a few users very long histories.
  double interest_shape = 2.0;
  // Output forms; the truth uses the same units, and the posterior stays
  // the Bayes posterior of the shop:
  //  * day_granularity: "ts" is the event's day, "YYYY-MM-DD" (UTC), as in
  //    exports that keep dates only. The posterior is still computed from the
  //    exact times, a little more than the day-level events show.
  //  * money_in_cents: amounts are integer cents (values x 100), and so are
  //    the truth's mean_order_value, spend and expected/realized spend. An
  //    order is at most 1e6 in the main unit, so at most 1e8 cents: within
  //    the default validation.max_amount (1e9), so `clv run` and `clv replay`
  //    accept every generated event with the default config.
  bool day_granularity = false;
  bool money_in_cents = false;
};

// Returns "" when the options are usable, else a message naming the option.
std::string ValidateShopOptions(const ShopOptions& options);

// Shop profiles that look like real shops unlike the default one (`clv gen
// --profile`), applied in order to `options` (later ones win on the same
// option), e.g. "wholesale,cents":
//   default         the options as they are;
//   wholesale       heavy-tailed order values (Gamma-Gamma q = 1.3: single
//                   orders up to ~1000x the median), frequent repeat buyers,
//                   few dropouts, few browse-only users;
//   one_time        dropout after a purchase ~ Beta(6, 1): most buyers buy once;
//   no_dropout      dropout ~ Beta(0.05, 50) (mean 0.001): almost nobody leaves;
//   high_dropout    dropout ~ Beta(3, 2) (mean 0.6) at a higher purchase rate;
//   long_history    heavy-tailed browsing and purchase rates: with a year or
//                   more, some users have 10k+ events;
//   day_granularity timestamps as days (see ShopOptions::day_granularity);
//   cents           money in cents (see ShopOptions::money_in_cents).
// Every profile is a change of the population parameters or of the output
// form, so the truth and the Bayes posterior stay exact for it (the
// day_granularity caveat above aside). "" on success, else the unknown name.
std::string ApplyShopProfiles(const std::string& profiles, ShopOptions* options);
// The profile names, in the order above.
const std::vector<std::string>& ShopProfileNames();

struct GeneratedEvent {
  std::string user_id;  // Kafka key
  std::string json;     // the message value, one JSON object, no newline
  int64_t ts_ms = 0;
  EventKind kind = EventKind::kPageView;
  double amount = 0;  // purchase/refund amount, else 0
  int64_t user_index = 0;
};

struct UserTruth {
  std::string user_id;
  int64_t signup_ms = 0;
  std::string country;
  std::string channel;
  std::string tier;
  // Latent parameters.
  double purchase_rate_per_day = 0;  // lambda (0 = browse-only)
  double dropout_probability = 0;    // p
  double mean_order_value = 0;       // E[order value | user] (money: cents with money_in_cents)
  // Observed in the generated period.
  int64_t purchases = 0;
  double spend = 0;
  int64_t last_purchase_ms = 0;  // 0 = none
  // At the cutoff (end of the period).
  bool alive = false;                // can still buy (lambda > 0 and not dropped out)
  double p_alive = 0;                // BG/NBD posterior knowing lambda and p (not the browsing)
  double expected_purchases = 0;     // over [end, end + horizon), given the true state
  double expected_spend = 0;         // expected_purchases * mean_order_value
  double oracle_expected_spend = 0;  // the same, weighted by p_alive instead of the true state
  // From the events alone (see the contract above).
  double posterior_alive = 0;           // P(alive | events); 0..1
  double posterior_expected_spend = 0;  // E[spend over the horizon | events]
  int64_t realized_purchases = 0;       // simulated on over [end, end + horizon)
  double realized_spend = 0;
  bool finished = false;  // false until the user's stream reached the end
};

class SyntheticShop {
 public:
  explicit SyntheticShop(ShopOptions options);
  ~SyntheticShop();
  SyntheticShop(const SyntheticShop&) = delete;
  SyntheticShop& operator=(const SyntheticShop&) = delete;

  // Next event in time order; false when the period is exhausted (then every
  // user's truth is final).
  bool Next(GeneratedEvent* event);

  // Ground truth of every user, by user index. Complete after Next() returned
  // false; before that, unfinished users have finished == false.
  std::vector<UserTruth> Truth() const;

  const ShopOptions& options() const;
  int64_t end_ms() const;
  int64_t events_generated() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Writes every remaining event as one JSON line; returns false on a write
// error. `events` (optional) receives the count.
bool WriteEventsJsonl(SyntheticShop& shop, std::ostream& out, int64_t* events = nullptr);
// One JSON object per user / a CSV with a header row; false on a write error.
bool WriteTruthJsonl(const std::vector<UserTruth>& truth, std::ostream& out);
bool WriteTruthCsv(const std::vector<UserTruth>& truth, std::ostream& out);

}  // namespace clv::sim
