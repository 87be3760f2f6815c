// TrainLstm (torch). See trainer.h for the method; the network is LstmNet
// (lstm_net.h), the same module the scorer runs on CUDA; the CPU scorer's
// kernel (lstm_kernel.cpp) evaluates the same functions in another order
// (equal to ~1e-6, not bit for bit; test LstmNet.AgreesWithTheCpuKernel).
#include "models/trainer.h"

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>
#include <map>
#include <memory>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include "common/log.h"
#include "models/baseline_scorer.h"
#include "models/lstm_net.h"
#include "models/metrics.h"

namespace clv::models {

namespace {

// Step examples of one user weigh this much in all at most (BuildUserExamples).
constexpr float kStepWeightPerUser = 8;

// One user's examples, raw features (standardized later).
struct UserExamples {
  size_t user = 0;
  std::vector<float> step_x;     // [n, F]
  std::vector<float> rescore_x;  // [n, A]
  // Prior inputs then attribute indicators [n, P + K] and offsets [n, O] of
  // each labelled example, at its own (sampled) horizon.
  std::vector<float> step_prior, step_offsets, rescore_prior, rescore_offsets;
  std::vector<float> step_y, step_mask, step_churn;
  std::vector<float> rescore_y, rescore_mask, rescore_churn;
  // Backtest example (every user with an event before the cutoff,
  // calibrate_total): the state after event backtest_k (-1 = none),
  // aggregates [A], prior inputs [P + K] and offsets [O] at the backtest
  // cutoff, and the spend in the window after it.
  int64_t backtest_k = -1;
  std::vector<float> backtest_r, backtest_prior, backtest_offsets;
  float backtest_y = 0;
  size_t length() const { return step_y.size(); }
};

// The question asked in the field, asked inside the training data at the
// latest position that has labels: everyone at `cutoff_ms` = data end -
// horizon_days (only events before it seen), spend over the next
// horizon_days, which end at the data's end.
struct BacktestWindow {
  int64_t cutoff_ms = 0;
  double horizon_days = 0;
};

// Horizons: each labelled example draws its own horizon log-uniformly from
// [min_horizon_ms, min(max_horizon_ms, end - t)]; an example is labelled when
// at least min_horizon_ms of data follow it.
struct HorizonRange {
  int64_t min_ms = 0;
  int64_t max_ms = 0;
  // The horizon for an example at t, or 0 when none fits.
  int64_t Draw(int64_t t, int64_t end_ms, std::mt19937_64& random) const {
    const int64_t available = end_ms - t;
    if (available < min_ms) return 0;
    const int64_t longest = std::min(max_ms, available);
    if (longest <= min_ms) return min_ms;
    std::uniform_real_distribution<double> uniform(0.0, 1.0);
    double log_h = std::log(double(min_ms)) +
                   uniform(random) * (std::log(double(longest)) - std::log(double(min_ms)));
    return std::clamp<int64_t>(static_cast<int64_t>(std::exp(log_h)), min_ms, longest);
  }
};

// The browsing model of the prior (lstm.h, inputs 8 and 9), fitted on the
// users at the data's end:
//  * rate: sessions per day beyond those that come with purchases;
//    theta = kBrowseKappa / rate. No browsing (rate < 0.005 a day, e.g.
//    purchase records only): theta 0.
//  * sessions_per_purchase: sessions started in the kPurchaseWindowDays up
//    to each purchase (its own session included) minus what the user's
//    overall session rate puts in such a window, averaged over purchases.
//  * fade_days by maximum likelihood over a grid: buyers' sessions as a
//    mixture of "still active" and "dropped out at the last purchase", mixed
//    by the purchase odds (BrowsePurchaseLogOddsGone).
void FitBrowse(const Dataset& data, const BgNbdParams& bgnbd, LstmPrior* prior) {
  constexpr double kMinRatePerDay = 0.005;
  constexpr double kPurchaseWindowDays = 3.0;
  struct Buyer {
    History history;
    double log_odds_gone = 0;  // from the purchases alone
  };
  const double day = static_cast<double>(kMsPerDay);
  std::vector<Buyer> buyers;
  double sessions_total = 0, days_total = 0, purchases_total = 0, excess_total = 0;
  std::vector<int64_t> session_starts;
  for (const UserSequence& user : data.users) {
    History h;
    session_starts.clear();
    double in_windows = 0;  // sessions started in the window up to each purchase
    for (const StepEvent& event : user.events) {
      const uint32_t sessions_before = h.sessions;
      UpdateHistory(h, event);
      if (h.sessions != sessions_before) session_starts.push_back(event.ts_ms);
      if (event.kind == EventKind::kPurchase) {
        const int64_t from = event.ts_ms - static_cast<int64_t>(kPurchaseWindowDays * day);
        in_windows += static_cast<double>(
            session_starts.end() -
            std::lower_bound(session_starts.begin(), session_starts.end(), from));
      }
    }
    if (h.events == 0) continue;
    const double tenure = std::max(1.0 / 24, double(data.end_ms - h.first_event_ms) / day);
    // What the user's own overall rate puts into the purchase windows.
    excess_total += in_windows - h.purchases * kPurchaseWindowDays * h.sessions / tenure;
    purchases_total += h.purchases;
    sessions_total += h.sessions;
    days_total += tenure;
    if (h.purchases > 0) {
      const double log_odds = BrowsePurchaseLogOddsGone(bgnbd, SummaryFromHistory(h, data.end_ms));
      buyers.push_back({h, std::clamp(log_odds, -50.0, 50.0)});
    }
  }
  prior->browse_theta = 0;
  if (!(days_total > 0)) return;
  const double per_purchase =
      purchases_total > 0 ? std::clamp(excess_total / purchases_total, 0.0, 10.0) : 0.0;
  const double rate = (sessions_total - per_purchase * purchases_total) / days_total;
  if (!(rate >= kMinRatePerDay)) return;
  prior->browse_theta = kBrowseKappa / rate;
  prior->browse_sessions_per_purchase = per_purchase;
  std::vector<BrowseSessions> sessions;
  sessions.reserve(buyers.size());
  for (const Buyer& buyer : buyers) {
    sessions.push_back(BrowseSessionsOf(*prior, buyer.history, data.end_ms));
  }
  double best = -std::numeric_limits<double>::infinity();
  for (double fade : {1.0, 2.0, 3.0, 5.0, 7.0, 10.0, 14.0, 20.0, 30.0, 45.0, 60.0, 90.0}) {
    double log_likelihood = 0;
    for (size_t i = 0; i < buyers.size(); ++i) {
      const BrowseLogLikelihood l = BrowseLogLikelihoods(prior->browse_theta, fade, sessions[i]);
      // log(P_active L_active + P_gone L_gone), P_gone = sigmoid(log odds).
      const double log_odds = buyers[i].log_odds_gone;
      const double a = -std::log1p(std::exp(log_odds)) + l.active;
      const double g = -std::log1p(std::exp(-log_odds)) + l.gone;
      const double top = std::max(a, g);
      log_likelihood += top + std::log(std::exp(a - top) + std::exp(g - top));
    }
    if (log_likelihood > best) {
      best = log_likelihood;
      prior->browse_fade_days = fade;
    }
  }
}

void BuildUserExamples(const UserSequence& user, int64_t end_ms, const HorizonRange& horizons,
                       const LstmPrior& prior, const std::vector<AttrVocabEntry>& vocab,
                       int snapshots, std::mt19937_64& random, UserExamples* out) {
  const size_t pw = kPriorCount + vocab.size();
  const auto& events = user.events;
  const size_t n = events.size();
  std::vector<double> spend_prefix(n + 1, 0.0);
  for (size_t i = 0; i < n; ++i) {
    double delta = events[i].kind == EventKind::kPurchase ? events[i].amount
                   : events[i].kind == EventKind::kRefund ? -events[i].amount
                                                          : 0.0;
    spend_prefix[i + 1] = spend_prefix[i] + delta;
  }
  // Spend and churn of the events after index k with ts < until_ms.
  auto label = [&](size_t k, int64_t until_ms, float* spend, float* churn) {
    auto first_at_or_after =
        std::lower_bound(events.begin() + k + 1, events.end(), until_ms,
                         [](const StepEvent& e, int64_t t) { return e.ts_ms < t; });
    size_t stop = static_cast<size_t>(first_at_or_after - events.begin());
    *spend = static_cast<float>(std::max(0.0, spend_prefix[stop] - spend_prefix[k + 1]));
    *churn = stop > k + 1 ? 0.0f : 1.0f;
  };
  out->step_x.resize(n * kFeatureCount);
  out->rescore_x.resize(n * kAggregateCount);
  out->step_prior.assign(n * pw, 0.0f);
  out->rescore_prior.assign(n * pw, 0.0f);
  out->step_offsets.assign(n * kPriorOffsetCount, 0.0f);
  out->rescore_offsets.assign(n * kPriorOffsetCount, 0.0f);
  for (auto* v : {&out->step_y, &out->step_mask, &out->step_churn, &out->rescore_y,
                  &out->rescore_mask, &out->rescore_churn}) {
    v->assign(n, 0.0f);
  }
  History before, after;
  std::vector<History> afters(n);
  for (size_t k = 0; k < n; ++k) {
    const StepEvent& event = events[k];
    before = after;
    UpdateHistory(after, event);
    afters[k] = after;
    RawStepFeatures(event, before, after, &out->step_x[k * kFeatureCount], prior.money_unit);
    if (int64_t horizon_ms = horizons.Draw(event.ts_ms, end_ms, random); horizon_ms > 0) {
      out->step_mask[k] = 1;
      label(k, event.ts_ms + horizon_ms, &out->step_y[k], &out->step_churn[k]);
      RawPriorInputs(prior, after, event.ts_ms, double(horizon_ms) / kMsPerDay,
                     &out->step_prior[k * pw], &out->step_offsets[k * kPriorOffsetCount]);
      AttrIndicators(vocab, after, &out->step_prior[k * pw + kPriorCount]);
    }
  }
  // Step examples of one user weigh kStepWeightPerUser in all at most, so
  // heavy browsers do not drown everyone else.
  float labelled_steps = 0;
  for (float m : out->step_mask) labelled_steps += m;
  if (labelled_steps > kStepWeightPerUser) {
    float weight = kStepWeightPerUser / labelled_steps;
    for (float& m : out->step_mask) m *= weight;
  }
  // Snapshot (rescore) examples: times drawn uniformly over the user's
  // labelled life [first event, end - horizon]; each is attached to the last
  // event at or before it (its (h, c) is what the service would hold), with
  // aggregates recomputed at that time. Two draws in one gap share a slot
  // (weight 2).
  if (n == 0) return;
  const int64_t first = events.front().ts_ms, last_time = end_ms - horizons.min_ms;
  if (last_time < first) return;
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  for (int s = 0; s < snapshots; ++s) {
    int64_t at = first + static_cast<int64_t>(uniform(random) * double(last_time - first));
    auto after_it = std::upper_bound(events.begin(), events.end(), at,
                                     [](int64_t t, const StepEvent& e) { return t < e.ts_ms; });
    size_t k = static_cast<size_t>(after_it - events.begin()) - 1;
    if (out->rescore_mask[k] > 0) {
      out->rescore_mask[k] += 1;
      continue;
    }
    RawAggregateFeatures(afters[k], at, &out->rescore_x[k * kAggregateCount], prior.money_unit);
    out->rescore_mask[k] = 1;
    const int64_t horizon_ms = horizons.Draw(at, end_ms, random);
    label(k, at + horizon_ms, &out->rescore_y[k], &out->rescore_churn[k]);
    RawPriorInputs(prior, afters[k], at, double(horizon_ms) / kMsPerDay,
                   &out->rescore_prior[k * pw], &out->rescore_offsets[k * kPriorOffsetCount]);
    AttrIndicators(vocab, afters[k], &out->rescore_prior[k * pw + kPriorCount]);
  }
}

// Fills out's backtest example: the user's history up to the cutoff and the
// spend (purchases minus refunds, floored at 0) from the cutoff on. Nothing
// for a user without an event before the cutoff.
void BuildBacktest(const UserSequence& user, const BacktestWindow& window, const LstmPrior& prior,
                   const std::vector<AttrVocabEntry>& vocab, UserExamples* out) {
  History history;
  int64_t last = -1;
  double spend = 0;
  for (size_t i = 0; i < user.events.size(); ++i) {
    const StepEvent& event = user.events[i];
    if (event.ts_ms < window.cutoff_ms) {
      UpdateHistory(history, event);
      last = static_cast<int64_t>(i);
    } else if (event.kind == EventKind::kPurchase) {
      spend += event.amount;
    } else if (event.kind == EventKind::kRefund) {
      spend -= event.amount;
    }
  }
  if (last < 0) return;
  out->backtest_k = last;
  out->backtest_y = static_cast<float>(std::max(0.0, spend));
  out->backtest_r.assign(kAggregateCount, 0.0f);
  out->backtest_prior.assign(kPriorCount + vocab.size(), 0.0f);
  out->backtest_offsets.assign(kPriorOffsetCount, 0.0f);
  RawAggregateFeatures(history, window.cutoff_ms, out->backtest_r.data(), prior.money_unit);
  RawPriorInputs(prior, history, window.cutoff_ms, window.horizon_days, out->backtest_prior.data(),
                 out->backtest_offsets.data());
  AttrIndicators(vocab, history, out->backtest_prior.data() + kPriorCount);
}

// Padded tensors of one mini-batch, time-major.
struct Batch {
  int64_t length = 0;
  torch::Tensor x;                              // [L, B, F]
  torch::Tensor r;                              // [L, B, A]
  torch::Tensor step_prior, rescore_prior;      // [L, B, P]
  torch::Tensor step_offsets, rescore_offsets;  // [L, B, O]
  torch::Tensor step_y, step_mask, step_churn;
  torch::Tensor rescore_y, rescore_mask, rescore_churn;  // [L, B]
  // Backtest rows, by event index: (event index, user column), and their
  // aggregates [N, A], prior inputs [N, P], offsets [N, O] and spend [N].
  std::vector<std::pair<int64_t, int64_t>> backtest;
  torch::Tensor backtest_r, backtest_prior, backtest_offsets, backtest_y;
};

Batch MakeBatch(const std::vector<const UserExamples*>& users, int64_t pw) {
  Batch batch;
  const int64_t b = static_cast<int64_t>(users.size());
  int64_t length = 0;
  for (auto* u : users) length = std::max<int64_t>(length, u->length());
  batch.length = length;
  batch.x = torch::zeros({length, b, kFeatureCount});
  batch.r = torch::zeros({length, b, kAggregateCount});
  batch.step_prior = torch::zeros({length, b, pw});
  batch.rescore_prior = torch::zeros({length, b, pw});
  batch.step_offsets = torch::zeros({length, b, kPriorOffsetCount});
  batch.rescore_offsets = torch::zeros({length, b, kPriorOffsetCount});
  for (auto* t : {&batch.step_y, &batch.step_mask, &batch.step_churn, &batch.rescore_y,
                  &batch.rescore_mask, &batch.rescore_churn}) {
    *t = torch::zeros({length, b});
  }
  float* x = batch.x.data_ptr<float>();
  float* r = batch.r.data_ptr<float>();
  for (int64_t j = 0; j < b; ++j) {
    const UserExamples& u = *users[j];
    for (size_t k = 0; k < u.length(); ++k) {
      std::copy_n(&u.step_x[k * kFeatureCount], kFeatureCount, x + (k * b + j) * kFeatureCount);
      std::copy_n(&u.rescore_x[k * kAggregateCount], kAggregateCount,
                  r + (k * b + j) * kAggregateCount);
      const size_t at = k * b + j;
      std::copy_n(&u.step_prior[k * pw], pw, batch.step_prior.data_ptr<float>() + at * pw);
      std::copy_n(&u.rescore_prior[k * pw], pw, batch.rescore_prior.data_ptr<float>() + at * pw);
      std::copy_n(&u.step_offsets[k * kPriorOffsetCount], kPriorOffsetCount,
                  batch.step_offsets.data_ptr<float>() + at * kPriorOffsetCount);
      std::copy_n(&u.rescore_offsets[k * kPriorOffsetCount], kPriorOffsetCount,
                  batch.rescore_offsets.data_ptr<float>() + at * kPriorOffsetCount);
      auto set = [&](torch::Tensor& t, float v) { t.data_ptr<float>()[k * b + j] = v; };
      set(batch.step_y, u.step_y[k]);
      set(batch.step_mask, u.step_mask[k]);
      set(batch.step_churn, u.step_churn[k]);
      set(batch.rescore_y, u.rescore_y[k]);
      set(batch.rescore_mask, u.rescore_mask[k]);
      set(batch.rescore_churn, u.rescore_churn[k]);
    }
  }
  for (int64_t j = 0; j < b; ++j) {
    if (users[j]->backtest_k >= 0) batch.backtest.emplace_back(users[j]->backtest_k, j);
  }
  std::stable_sort(batch.backtest.begin(), batch.backtest.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  const int64_t rows = static_cast<int64_t>(batch.backtest.size());
  batch.backtest_r = torch::zeros({rows, kAggregateCount});
  batch.backtest_prior = torch::zeros({rows, pw});
  batch.backtest_offsets = torch::zeros({rows, kPriorOffsetCount});
  batch.backtest_y = torch::zeros({rows});
  for (int64_t i = 0; i < rows; ++i) {
    const UserExamples& u = *users[batch.backtest[i].second];
    std::copy_n(u.backtest_r.data(), kAggregateCount,
                batch.backtest_r.data_ptr<float>() + i * kAggregateCount);
    std::copy_n(u.backtest_prior.data(), pw, batch.backtest_prior.data_ptr<float>() + i * pw);
    std::copy_n(u.backtest_offsets.data(), kPriorOffsetCount,
                batch.backtest_offsets.data_ptr<float>() + i * kPriorOffsetCount);
    batch.backtest_y.data_ptr<float>()[i] = u.backtest_y;
  }
  return batch;
}

// Sum of per-example losses over mask, and the mask's sum.
std::pair<torch::Tensor, torch::Tensor> ZilnLoss(const torch::Tensor& out, const torch::Tensor& y,
                                                 const torch::Tensor& churn,
                                                 const torch::Tensor& mask) {
  torch::Tensor logit = out.select(-1, 0);
  torch::Tensor mu = out.select(-1, 1);
  torch::Tensor sigma = torch::softplus(out.select(-1, 2)) + 0.01;
  torch::Tensor churn_logit = out.select(-1, 3);
  torch::Tensor positive = (y > 0).to(torch::kFloat32);
  torch::Tensor bce = torch::softplus(logit) - positive * logit;
  torch::Tensor log_y = torch::log(torch::clamp_min(y, 1e-6));
  torch::Tensor z = (log_y - mu) / sigma;
  torch::Tensor nll = torch::log(sigma) + 0.5 * z * z;
  torch::Tensor churn_bce = torch::softplus(churn_logit) - churn * churn_logit;
  torch::Tensor per_example = bce + positive * nll + churn_bce;
  return {(per_example * mask).sum(), mask.sum()};
}

struct PassResult {
  double loss_sum = 0;
  double count = 0;
  // Mini-batches skipped because their loss or gradient was not finite.
  size_t non_finite = 0;
  std::vector<double> predicted, actual;  // labelled rescore examples
};

// One pass over `batches`; trains when `optimizer` is set.
PassResult RunPass(LstmNet& net, std::vector<Batch>& batches, const std::vector<size_t>& order,
                   int hidden, int bptt, torch::optim::Adam* optimizer, double clip) {
  PassResult result;
  for (size_t index : order) {
    Batch& batch = batches[index];
    const int64_t b = batch.x.size(1);
    torch::Tensor h = torch::zeros({b, hidden});
    torch::Tensor c = torch::zeros({b, hidden});
    for (int64_t start = 0; start < batch.length; start += bptt) {
      int64_t steps = std::min<int64_t>(bptt, batch.length - start);
      std::vector<torch::Tensor> hs;
      hs.reserve(steps);
      for (int64_t t = start; t < start + steps; ++t) {
        auto [h1, c1] = net->Cell(batch.x[t], h, c);
        h = h1;
        c = c1;
        hs.push_back(h1);
      }
      torch::Tensor hseq = torch::stack(hs, 0);  // [T, B, H]
      auto x = batch.x.narrow(0, start, steps);
      auto slice = [&](torch::Tensor& t) { return t.narrow(0, start, steps); };
      torch::Tensor step_out = net->Heads(hseq, x.narrow(2, kAggregateBegin, kAggregateCount),
                                          slice(batch.step_prior), slice(batch.step_offsets));
      torch::Tensor rescore_out =
          net->Heads(hseq, batch.r.narrow(0, start, steps), slice(batch.rescore_prior),
                     slice(batch.rescore_offsets));
      auto [step_loss, step_count] =
          ZilnLoss(step_out, slice(batch.step_y), slice(batch.step_churn), slice(batch.step_mask));
      auto [rescore_loss, rescore_count] =
          ZilnLoss(rescore_out, slice(batch.rescore_y), slice(batch.rescore_churn),
                   slice(batch.rescore_mask));
      double count = step_count.item<double>() + rescore_count.item<double>();
      torch::Tensor loss_sum = step_loss + rescore_loss;
      const double loss_value = count > 0 ? loss_sum.item<double>() : 0.0;
      if (!std::isfinite(loss_value)) {
        ++result.non_finite;  // skipped: no step, not in the loss
      } else if (count > 0) {
        result.loss_sum += loss_value;
        result.count += count;
        if (optimizer != nullptr) {
          optimizer->zero_grad();
          (loss_sum / count).backward();
          const double norm = torch::nn::utils::clip_grad_norm_(net->parameters(), clip);
          if (std::isfinite(norm)) {
            optimizer->step();
          } else {
            ++result.non_finite;
          }
        } else {
          torch::Tensor mask = slice(batch.rescore_mask).reshape({-1});
          torch::Tensor clv = LstmHeadLinks(rescore_out).clv.reshape({-1});
          torch::Tensor y = slice(batch.rescore_y).reshape({-1});
          torch::Tensor keep = mask > 0;
          torch::Tensor kept_clv = clv.masked_select(keep).contiguous();
          torch::Tensor kept_y = y.masked_select(keep).contiguous();
          for (int64_t i = 0; i < kept_clv.numel(); ++i) {
            result.predicted.push_back(kept_clv.data_ptr<float>()[i]);
            result.actual.push_back(kept_y.data_ptr<float>()[i]);
          }
        }
      }
      h = h.detach();
      c = c.detach();
    }
  }
  return result;
}

// Predicted and actual spend of every backtest row of `batches`.
std::pair<std::vector<double>, std::vector<double>> BacktestSpend(LstmNet& net,
                                                                  const std::vector<Batch>& batches,
                                                                  int hidden) {
  torch::NoGradGuard no_grad;
  std::vector<double> predicted, actual;
  for (const Batch& batch : batches) {
    if (batch.backtest.empty()) continue;
    const int64_t b = batch.x.size(1);
    torch::Tensor h = torch::zeros({b, hidden});
    torch::Tensor c = torch::zeros({b, hidden});
    std::vector<torch::Tensor> rows(batch.backtest.size());
    size_t next = 0;
    for (int64_t t = 0; t < batch.length && next < rows.size(); ++t) {
      auto [h1, c1] = net->Cell(batch.x[t], h, c);
      h = h1;
      c = c1;
      for (; next < rows.size() && batch.backtest[next].first == t; ++next) {
        rows[next] = h[batch.backtest[next].second];
      }
    }
    torch::Tensor clv = LstmHeadLinks(net->Heads(torch::stack(rows, 0), batch.backtest_r,
                                                 batch.backtest_prior, batch.backtest_offsets))
                            .clv;
    for (int64_t i = 0; i < clv.numel(); ++i) {
      predicted.push_back(clv[i].item<double>());
      actual.push_back(batch.backtest_y[i].item<double>());
    }
  }
  return {predicted, actual};
}

bool AllFinite(LstmNet& net) {
  for (const auto& parameter : net->parameters()) {
    if (!torch::isfinite(parameter).all().item<bool>()) return false;
  }
  return true;
}

// The `size` most frequent profile (key=value) pairs, by users holding them at
// any time; pairs held by fewer than 0.5% of the users (at least 2) are left
// out. Deterministic: ties broken by hash.
std::vector<AttrVocabEntry> BuildAttrVocab(const Dataset& data, int size) {
  std::vector<AttrVocabEntry> vocab;
  if (size <= 0) return vocab;
  std::map<uint64_t, size_t> users_with;
  for (const UserSequence& user : data.users) {
    std::vector<uint64_t> pairs;
    for (const StepEvent& event : user.events) {
      if (event.kind != EventKind::kProfile) continue;
      for (const AttrEntry& entry : event.attrs) {
        if (entry.key_hash != 0) pairs.push_back(entry.pair_hash);
      }
    }
    std::sort(pairs.begin(), pairs.end());
    pairs.erase(std::unique(pairs.begin(), pairs.end()), pairs.end());
    for (uint64_t pair : pairs) ++users_with[pair];
  }
  const size_t min_users = std::max<size_t>(2, data.users.size() / 200);
  std::vector<std::pair<size_t, uint64_t>> ranked;
  for (auto [pair, count] : users_with) {
    if (count >= min_users) ranked.emplace_back(count, pair);
  }
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : a.second < b.second;
  });
  const size_t keep = std::min<size_t>(ranked.size(), std::min(size, kMaxAttrVocab));
  for (size_t i = 0; i < keep; ++i) {
    AttrVocabEntry entry;
    entry.pair_hash = ranked[i].second;
    auto text = data.attr_texts.find(entry.pair_hash);
    entry.text = text != data.attr_texts.end() ? text->second : "?";
    vocab.push_back(std::move(entry));
  }
  return vocab;
}

void PrintEpoch(const EpochReport& r) {
  Log(LogLevel::kInfo, "epoch",
      {{"epoch", r.epoch},
       {"train_loss", r.train_loss},
       {"validation_loss", r.validation_loss},
       {"validation_gini", r.validation_gini},
       {"learning_rate", r.learning_rate},
       {"seconds", r.seconds},
       {"best", r.improved}});
}

}  // namespace

TotalCalibration CalibrateTotal(const std::vector<double>& predicted,
                                const std::vector<double>& actual) {
  TotalCalibration c;
  c.users = std::min(predicted.size(), actual.size());
  double squares = 0;
  for (size_t i = 0; i < c.users; ++i) {
    c.predicted += predicted[i];
    c.actual += actual[i];
    squares += actual[i] * actual[i];
  }
  if (!(c.predicted > 0 && c.actual > 0 && std::isfinite(c.predicted) && std::isfinite(c.actual) &&
        std::isfinite(squares))) {
    return c;  // not measurable: scale 1, weight 0
  }
  const double ratio = c.actual / c.predicted;
  double residual2 = 0;
  for (size_t i = 0; i < c.users; ++i) {
    const double r = actual[i] - ratio * predicted[i];
    residual2 += r * r;
  }
  c.log_ratio = std::log(ratio);
  c.standard_error = std::sqrt(residual2) / c.actual;
  c.effective_buyers = c.actual * c.actual / squares;
  c.weight = c.effective_buyers / (c.effective_buyers + kTotalCalibrationPrior);
  const double bound = std::log(kMaxTotalScale);
  c.scale = std::exp(std::clamp(c.weight * c.log_ratio, -bound, bound));
  return c;
}

TrainResult TrainLstm(const Dataset& data, const TrainOptions& options,
                      const EpochCallback& on_epoch) {
  TrainResult result;
  const int64_t horizon_ms = static_cast<int64_t>(options.horizon_days * 24 * 3600 * 1000.0);
  const double min_horizon_days =
      options.min_horizon_days > 0 ? options.min_horizon_days : options.horizon_days;
  HorizonRange horizons{static_cast<int64_t>(min_horizon_days * 24 * 3600 * 1000.0), horizon_ms};
  if (data.users.empty()) {
    result.error = "TrainLstm: the dataset has no users";
    return result;
  }
  if (horizon_ms <= 0 || options.hidden_size <= 0 || options.batch_users <= 0 ||
      options.bptt_steps <= 0 || options.epochs <= 0) {
    result.error =
        "TrainLstm: horizon_days, hidden_size, batch_users, bptt_steps and epochs "
        "must all be > 0";
    return result;
  }
  if (horizons.min_ms <= 0 || horizons.min_ms > horizons.max_ms) {
    result.error = "TrainLstm: min_horizon_days " + std::to_string(min_horizon_days) +
                   " must be in (0, horizon_days = " + std::to_string(options.horizon_days) + "]";
    return result;
  }
  // The heads' prior: BG/NBD + Gamma-Gamma fitted on the training period.
  LstmPrior prior;
  BaselineModel baseline;
  {
    std::string fit_error;
    if (!FitBaseline(data, data.end_ms, &baseline, &fit_error)) {
      result.error = "TrainLstm: fitting the BG/NBD + Gamma-Gamma prior: " + fit_error;
      return result;
    }
    prior.bgnbd = baseline.bgnbd;
    prior.gamma_gamma = baseline.gamma_gamma;
    FitBrowse(data, prior.bgnbd, &prior);
    if (options.portable || options.relative_money) {
      prior.money_unit = TypicalOrderValue(prior.gamma_gamma);
      prior.from_baseline = options.portable;
    }
    char browse[160] = "browsing: none in the data (browsing inputs off)";
    if (prior.browse_theta > 0) {
      std::snprintf(browse, sizeof(browse),
                    "browsing: %.3g base sessions a day, %.3g more per purchase, fade %.3g days "
                    "after a dropout",
                    kBrowseKappa / prior.browse_theta, prior.browse_sessions_per_purchase,
                    prior.browse_fade_days);
    }
    Log(LogLevel::kInfo, "prior fitted",
        {{"bgnbd_r", prior.bgnbd.r},
         {"bgnbd_alpha", prior.bgnbd.alpha},
         {"bgnbd_a", prior.bgnbd.a},
         {"bgnbd_b", prior.bgnbd.b},
         {"gamma_gamma_p", prior.gamma_gamma.p},
         {"gamma_gamma_q", prior.gamma_gamma.q},
         {"gamma_gamma_gamma", prior.gamma_gamma.gamma},
         {"customers", baseline.fit.customers},
         {"browsing", browse}});
  }
  // Portable training over several shops: each user's examples use the
  // prior of the user's shop (TrainOptions::shop_separator).
  std::vector<LstmPrior> shop_priors;
  std::vector<size_t> shop_of(data.users.size(), 0);
  if (options.portable && options.shop_separator != '\0') {
    std::map<std::string, std::vector<size_t>> shops;
    for (size_t i = 0; i < data.users.size(); ++i) {
      const std::string& id = data.users[i].user_id;
      // Ids without the separator are one shop (""), not one shop each.
      const size_t cut = id.find(options.shop_separator);
      shops[cut == std::string::npos ? std::string() : id.substr(0, cut)].push_back(i);
    }
    for (const auto& [name, members] : shops) {
      Dataset shop;
      shop.start_ms = data.start_ms;
      shop.end_ms = data.end_ms;
      shop.has_order_values = data.has_order_values;
      for (size_t i : members) {
        shop.users.push_back(data.users[i]);
        shop_of[i] = shop_priors.size();
      }
      BaselineModel fit;
      std::string fit_error;
      if (!FitBaseline(shop, shop.end_ms, &fit, &fit_error)) {
        result.error = "TrainLstm: fitting the prior of shop '" + name + "': " + fit_error;
        return result;
      }
      LstmPrior shop_prior = prior;
      shop_prior.bgnbd = fit.bgnbd;
      shop_prior.gamma_gamma = fit.gamma_gamma;
      FitBrowse(shop, shop_prior.bgnbd, &shop_prior);
      shop_prior.money_unit = TypicalOrderValue(shop_prior.gamma_gamma);
      Log(LogLevel::kInfo, "shop prior fitted",
          {{"shop", name},
           {"users", members.size()},
           {"bgnbd_r", fit.bgnbd.r},
           {"bgnbd_alpha", fit.bgnbd.alpha},
           {"bgnbd_a", fit.bgnbd.a},
           {"bgnbd_b", fit.bgnbd.b},
           {"money_unit", shop_prior.money_unit},
           {"browse_theta", shop_prior.browse_theta}});
      shop_priors.push_back(shop_prior);
    }
  } else {
    shop_priors.push_back(prior);
  }
  const std::vector<AttrVocabEntry> vocab = BuildAttrVocab(data, options.attr_vocab_size);
  const size_t pw = kPriorCount + vocab.size();
  if (!vocab.empty()) {
    std::string names;
    for (const auto& entry : vocab) names += (names.empty() ? "" : " ") + entry.text;
    Log(LogLevel::kInfo, "profile attribute inputs", {{"count", vocab.size()}, {"names", names}});
  }
  torch::manual_seed(options.seed);
  if (options.threads > 0) at::set_num_threads(options.threads);
  std::mt19937_64 random(options.seed);

  // Examples per user; user-disjoint split by a seeded coin per user.
  std::vector<UserExamples> examples(data.users.size());
  std::vector<const UserExamples*> train_users, validation_users;
  std::bernoulli_distribution holdout(options.validation_fraction);
  FeatureStatsAccumulator stats;
  size_t labelled = 0, events = 0;
  double churned = 0, labelled_train = 0;
  double prior_count = 0;
  std::array<double, kPriorCount> prior_mean{}, prior_m2{};
  std::vector<double> residual_log;
  // Backtest: every user at data end - min(horizon, span / 2).
  BacktestWindow backtest;
  backtest.horizon_days =
      std::min(options.horizon_days, double(data.end_ms - data.start_ms) / kMsPerDay / 2);
  backtest.cutoff_ms = data.end_ms - static_cast<int64_t>(backtest.horizon_days * kMsPerDay);
  const bool calibrate = options.calibrate_total && backtest.horizon_days >= 1;
  for (size_t i = 0; i < data.users.size(); ++i) {
    examples[i].user = i;
    const LstmPrior& user_prior = shop_priors[shop_of[i]];
    BuildUserExamples(data.users[i], data.end_ms, horizons, user_prior, vocab,
                      options.snapshots_per_user, random, &examples[i]);
    bool is_validation = holdout(random);
    if (calibrate) BuildBacktest(data.users[i], backtest, user_prior, vocab, &examples[i]);
    const UserExamples& u = examples[i];
    events += u.length();
    for (size_t k = 0; k < u.length(); ++k) {
      labelled += size_t(u.step_mask[k] > 0) + size_t(u.rescore_mask[k] > 0);
      if (is_validation) continue;
      stats.Add(&u.step_x[k * kFeatureCount]);
      for (auto [y, m, ch, pr, off] :
           {std::tuple{u.step_y[k], u.step_mask[k], u.step_churn[k], &u.step_prior[k * pw],
                       &u.step_offsets[k * kPriorOffsetCount]},
            std::tuple{u.rescore_y[k], u.rescore_mask[k], u.rescore_churn[k],
                       &u.rescore_prior[k * pw], &u.rescore_offsets[k * kPriorOffsetCount]}}) {
        if (m == 0) continue;
        prior_count += 1;
        for (int j = 0; j < kPriorCount; ++j) {
          double delta = pr[j] - prior_mean[j];
          prior_mean[j] += delta / prior_count;
          prior_m2[j] += delta * (pr[j] - prior_mean[j]);
        }
        if (y > 0) {
          // log spend relative to the prior's expected spend given a purchase
          residual_log.push_back(std::log(y) - off[1]);
        }
        labelled_train += 1;
        churned += ch;
      }
    }
    if (u.length() == 0) continue;
    (is_validation ? validation_users : train_users).push_back(&examples[i]);
  }
  if (labelled_train == 0 || validation_users.empty()) {
    result.error = "TrainLstm: no labelled training examples (horizon " +
                   std::to_string(options.horizon_days) + " days, data " + MsToDate(data.start_ms) +
                   " .. " + MsToDate(data.end_ms) +
                   "): a step is labelled only when its horizon ends before the data does; "
                   "use a shorter horizon or more data (and at least a few users for validation)";
    return result;
  }
  FeatureNorm norm = stats.Finish();
  for (int j = 0; j < kPriorCount; ++j) {
    prior.mean[j] = static_cast<float>(prior_mean[j]);
    double sd = prior_count > 1 ? std::sqrt(prior_m2[j] / (prior_count - 1)) : 1.0;
    prior.scale[j] = static_cast<float>(sd > 1e-6 ? sd : 1.0);
  }
  for (auto& u : examples) {
    for (size_t k = 0; k < u.length(); ++k) {
      norm.Apply(&u.step_x[k * kFeatureCount], kFeatureCount);
      norm.Apply(&u.rescore_x[k * kAggregateCount], kAggregateCount, kAggregateBegin);
      StandardizePrior(prior, &u.step_prior[k * pw]);
      StandardizePrior(prior, &u.rescore_prior[k * pw]);
    }
    if (u.backtest_k >= 0) {
      norm.Apply(u.backtest_r.data(), kAggregateCount, kAggregateBegin);
      StandardizePrior(prior, u.backtest_prior.data());
    }
  }

  // Batches of users of similar length.
  auto make_batches = [&](std::vector<const UserExamples*> users) {
    std::stable_sort(users.begin(), users.end(),
                     [](auto* a, auto* b) { return a->length() > b->length(); });
    std::vector<Batch> batches;
    for (size_t i = 0; i < users.size(); i += options.batch_users) {
      size_t end = std::min(users.size(), i + size_t(options.batch_users));
      batches.push_back(MakeBatch({users.begin() + i, users.begin() + end}, int64_t(pw)));
    }
    return batches;
  };
  std::vector<Batch> train_batches = make_batches(train_users);
  std::vector<Batch> validation_batches = make_batches(validation_users);
  std::vector<size_t> validation_order(validation_batches.size());
  std::iota(validation_order.begin(), validation_order.end(), size_t{0});

  // Initial weights: PyTorch-style uniform init, head biases at the label
  // base rates so training starts from a sensible ZILN.
  LstmModel model = RandomLstmModel(options.hidden_size, options.seed, options.head_hidden, vocab);
  auto logit = [](double p) {
    p = std::clamp(p, 1e-4, 1 - 1e-4);
    return std::log(p / (1 - p));
  };
  // The offsets carry BG/NBD's logit P(any purchase) and log E[spend | any]:
  // start from the prior (head2 weights small, o0 bias 0; the lognormal's
  // location and spread are the mean and sd of log(spend) - log(prior's
  // E[spend | any purchase]) over the labelled training examples).
  double mean_log = 0, var_log = 0;
  for (double v : residual_log) mean_log += v;
  if (!residual_log.empty()) mean_log /= double(residual_log.size());
  for (double v : residual_log) var_log += (v - mean_log) * (v - mean_log);
  if (residual_log.size() > 1) var_log /= double(residual_log.size() - 1);
  double sd_log = std::clamp(std::sqrt(var_log), 0.1, 3.0);
  if (options.init_weights) {
    // Fine-tuning: the given weights as they are (their heads already hold
    // a correction of the prior, which is refitted on this data).
    const LstmWeights& init = *options.init_weights;
    if (init.hidden_size != options.hidden_size || init.head_hidden != options.head_hidden ||
        init.attr_count != int(vocab.size()) || init.input_size != kFeatureCount ||
        !init.CheckShapes().empty()) {
      result.error = "TrainLstm: the initial weights (hidden " + std::to_string(init.hidden_size) +
                     ", head hidden " + std::to_string(init.head_hidden) + ", " +
                     std::to_string(init.attr_count) +
                     " attribute inputs) do not fit this "
                     "training (hidden " +
                     std::to_string(options.hidden_size) + ", head hidden " +
                     std::to_string(options.head_hidden) + ", " + std::to_string(vocab.size()) +
                     " attribute inputs)" +
                     (init.CheckShapes().empty() ? "" : ": " + init.CheckShapes());
      return result;
    }
    model.weights = init;
  } else {
    for (float& w : model.weights.head2_w) w *= 0.1f;
    model.weights.head2_b = {
        0.0f, static_cast<float>(mean_log),
        static_cast<float>(std::log(std::expm1(std::max(0.02, sd_log - 0.01)))),
        static_cast<float>(logit(churned / labelled_train))};
  }
  LstmNet net(model.weights);
  auto optimizer = std::make_unique<torch::optim::Adam>(
      net->parameters(), torch::optim::AdamOptions(options.learning_rate));

  double best_loss = std::numeric_limits<double>::infinity();
  double best_gini = -std::numeric_limits<double>::infinity();
  LstmWeights best_weights = model.weights;
  int since_best = 0;
  double learning_rate = options.learning_rate;
  auto finish_model = [&](const LstmWeights& weights, const EpochReport* best) {
    LstmModel out;
    out.horizon_days = options.horizon_days;
    out.min_horizon_days = min_horizon_days;
    out.prior = prior;
    out.attr_vocab = vocab;
    out.norm = norm;
    out.weights = weights;
    nlohmann::json training = {
        {"users", data.users.size()},
        {"shops", shop_priors.size()},
        {"train_users", train_users.size()},
        {"validation_users", validation_users.size()},
        {"events", events},
        {"labelled_examples", labelled},
        {"start", MsToDate(data.start_ms)},
        {"end", MsToDate(data.end_ms)},
        {"horizon_days", options.horizon_days},
        {"min_horizon_days", min_horizon_days},
        {"horizons",
         "each labelled example draws its horizon log-uniformly from [min_horizon_days, "
         "min(horizon_days, data end - t)]"},
        {"prior_fit",
         {{"customers", baseline.fit.customers},
          {"log_likelihood", baseline.fit.log_likelihood},
          {"gamma_gamma_customers", baseline.fit.gamma_gamma_customers}}},
        {"censoring", "examples whose horizon ends after the data's end are not labelled"},
        {"hidden_size", options.hidden_size},
        {"head_hidden", options.head_hidden},
        {"epochs_max", options.epochs},
        {"epochs_run", result.epochs.size()},
        {"batch_users", options.batch_users},
        {"bptt_steps", options.bptt_steps},
        {"snapshots_per_user", options.snapshots_per_user},
        {"attr_vocab_size", options.attr_vocab_size},
        {"learning_rate", options.learning_rate},
        {"lr_decay", options.lr_decay},
        {"patience", options.patience},
        {"select_by", options.select_by_gini ? "validation gini" : "validation loss"},
        {"fine_tuned", options.init_weights.has_value()},
        {"recoveries", result.recoveries},
        {"total_calibration",
         {{"rule",
           calibrate ? "every user with an event before data end - h (h = min(horizon, span / 2)) "
                       "scored from those events vs the actual spend to the data's end; scale = "
                       "exp(w log(actual / predicted)), w = n / (n + k), n = effective buyers "
                       "(sum a)^2 / sum a^2, bounded to [1/max, max]"
                     : "off (--no-calibrate-total)"},
          {"k", kTotalCalibrationPrior},
          {"max", kMaxTotalScale},
          {"backtest_cutoff", result.calibration.cutoff},
          {"backtest_horizon_days", result.calibration.horizon_days},
          {"users", result.calibration.users},
          {"predicted", result.calibration.predicted},
          {"actual", result.calibration.actual},
          {"validation_users", result.calibration.validation_users},
          {"validation_predicted", result.calibration.validation_predicted},
          {"validation_actual", result.calibration.validation_actual},
          {"effective_buyers", result.calibration.effective_buyers},
          {"log_ratio", result.calibration.log_ratio},
          {"standard_error", result.calibration.standard_error},
          {"weight", result.calibration.weight},
          {"scale", result.total_scale}}},
        {"validation_fraction", options.validation_fraction},
        {"seed", options.seed},
        {"threads", options.threads},
        {"command", options.command},
        {"data", options.data_description}};
    out.training_json = training.dump();
    if (best != nullptr) {
      nlohmann::json validation = {{"epoch", best->epoch},
                                   {"loss", best->validation_loss},
                                   {"normalized_gini_rescore", best->validation_gini}};
      out.validation_json = validation.dump();
    }
    out.version = LstmModelVersion(out);
    return out;
  };

  EpochReport best_report;
  for (int epoch = 1; epoch <= options.epochs; ++epoch) {
    auto started = std::chrono::steady_clock::now();
    std::vector<size_t> order(train_batches.size());
    std::iota(order.begin(), order.end(), size_t{0});
    std::shuffle(order.begin(), order.end(), random);
    for (auto& group : optimizer->param_groups()) {
      static_cast<torch::optim::AdamOptions&>(group.options()).lr(learning_rate);
    }
    PassResult train = RunPass(net, train_batches, order, options.hidden_size, options.bptt_steps,
                               optimizer.get(), options.clip_grad_norm);
    PassResult validation;
    {
      torch::NoGradGuard no_grad;
      validation = RunPass(net, validation_batches, validation_order, options.hidden_size,
                           options.bptt_steps, nullptr, options.clip_grad_norm);
    }
    EpochReport report;
    report.epoch = epoch;
    report.train_loss = train.count > 0 ? train.loss_sum / train.count : 0;
    report.validation_loss = validation.count > 0 ? validation.loss_sum / validation.count : 0;
    report.validation_gini = NormalizedGini(validation.predicted, validation.actual);
    report.learning_rate = learning_rate;
    report.seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const bool diverged = train.non_finite > 0 || validation.non_finite > 0 ||
                          !std::isfinite(report.train_loss) ||
                          !std::isfinite(report.validation_loss) || !AllFinite(net);
    if (diverged) {
      // Undo the epoch: the last good weights, a fresh optimizer, a lower rate.
      if (result.recoveries >= options.max_recoveries) {
        result.error = "TrainLstm: training diverged (loss or weights not finite) at epoch " +
                       std::to_string(epoch) + " after " + std::to_string(result.recoveries) +
                       " recoveries; lower --lr";
        return result;
      }
      ++result.recoveries;
      learning_rate *= 0.25;
      net = LstmNet(best_weights);
      optimizer = std::make_unique<torch::optim::Adam>(net->parameters(),
                                                       torch::optim::AdamOptions(learning_rate));
      std::fprintf(stderr,
                   "clv train: epoch %d diverged (%zu of %zu mini-batches with a non-finite loss "
                   "or gradient); restored the weights of epoch %d (0: the initial ones), learning "
                   "rate lowered to %.2e\n",
                   epoch, train.non_finite + validation.non_finite,
                   train_batches.size() + validation_batches.size(), result.best_epoch,
                   learning_rate);
      report.improved = false;
      result.epochs.push_back(report);
      if (on_epoch) {
        on_epoch(report);
      } else {
        PrintEpoch(report);
      }
      continue;
    }
    report.improved = options.select_by_gini ? report.validation_gini > best_gini
                                             : report.validation_loss < best_loss;
    if (report.improved) {
      best_loss = report.validation_loss;
      best_gini = report.validation_gini;
      net->ExportTo(&best_weights);
      result.best_epoch = epoch;
      best_report = report;
      since_best = 0;
    } else {
      ++since_best;
    }
    result.epochs.push_back(report);
    if (on_epoch) {
      on_epoch(report);
    } else {
      PrintEpoch(report);
    }
    if (report.improved && !options.checkpoint_path.empty()) {
      std::string error;
      if (!SaveLstmModel(finish_model(best_weights, &best_report), options.checkpoint_path,
                         &error)) {
        result.error = "TrainLstm: checkpoint: " + error;
        return result;
      }
    }
    if (since_best >= options.patience) break;
    learning_rate *= options.lr_decay;
  }
  if (result.best_epoch == 0) {
    result.error = "TrainLstm: training diverged: no epoch ended with finite weights; lower --lr";
    return result;
  }
  if (calibrate) {
    LstmNet best_net(best_weights);
    auto [predicted, actual] = BacktestSpend(best_net, train_batches, options.hidden_size);
    auto [validation_predicted, validation_actual] =
        BacktestSpend(best_net, validation_batches, options.hidden_size);
    predicted.insert(predicted.end(), validation_predicted.begin(), validation_predicted.end());
    actual.insert(actual.end(), validation_actual.begin(), validation_actual.end());
    TotalCalibration& c = result.calibration;
    c = CalibrateTotal(predicted, actual);
    c.cutoff = MsToDate(backtest.cutoff_ms);
    c.horizon_days = backtest.horizon_days;
    c.validation_users = validation_predicted.size();
    c.validation_predicted =
        std::accumulate(validation_predicted.begin(), validation_predicted.end(), 0.0);
    c.validation_actual = std::accumulate(validation_actual.begin(), validation_actual.end(), 0.0);
    result.total_scale = c.scale;
    best_weights.head2_b[1] += static_cast<float>(std::log(c.scale));
    std::fprintf(stderr,
                 "total calibration: %zu users at %s, next %.0f days (to the data's end): "
                 "predicted %.4g, actual %.4g (log ratio %.3f, standard error %.3f; validation "
                 "users %zu: %.4g vs %.4g); %.1f effective buyers, weight %.2f = n / (n + %.0f); "
                 "expected spend scaled by %.3f\n",
                 c.users, c.cutoff.c_str(), c.horizon_days, c.predicted, c.actual, c.log_ratio,
                 c.standard_error, c.validation_users, c.validation_predicted, c.validation_actual,
                 c.effective_buyers, c.weight, kTotalCalibrationPrior, c.scale);
  }
  result.model = finish_model(best_weights, &best_report);
  if (!options.checkpoint_path.empty()) {
    std::string error;
    if (!SaveLstmModel(result.model, options.checkpoint_path, &error)) {
      result.error = "TrainLstm: checkpoint: " + error;
      return result;
    }
  }
  result.train_users = train_users.size();
  result.validation_users = validation_users.size();
  result.labelled_examples = labelled;
  return result;
}

}  // namespace clv::models
