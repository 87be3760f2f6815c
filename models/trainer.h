// Trainer for the incremental LSTM scorer (lstm.h).
//
// TrainLstm() replays every user's events in time order through the same
// vectorizer the service uses (features.h + UpdateHistory) and builds two
// kinds of examples:
//   * step examples: the state right after each event k, aggregates at t_k;
//     one user's step examples weigh 8 in all at most (heavy browsers do not
//     drown everyone else);
//   * snapshot (rescore) examples: snapshots_per_user times per user drawn
//     uniformly over [first event, data end - min horizon]; each takes the (h, c) after the last
//     event before it and aggregates recomputed at that time -- exactly what
//     Rescore() computes for quiet users and what `clv eval` asks at its
//     cutoff, so the heads learn how value decays while a user is quiet.
// Labels: spend (purchases minus refunds, floored at 0) in (t, t + horizon)
// after the example's time, and churn = no event at all in that window. Each
// labelled example draws its own horizon log-uniformly from [min_horizon_days,
// min(horizon_days, data end - t)] and the heads see it (prior inputs, lstm.h).
// Censoring: an example with less than min_horizon_days of data after it is
// NOT labelled (masked out of the loss; it still advances the recurrent
// state), so no label is ever biased low by a window cut short. With a horizon
// as long as the data, nothing is labelled: TrainLstm() refuses, naming the
// numbers.
// Prior: BG/NBD + Gamma-Gamma are fitted (FitBaseline) on the training events
// and stored in the model; the heads start from their score (output weights
// scaled down, biases centred) and learn the correction.
//
// Loss: ZILN (BCE on "any spend" + lognormal NLL on positive spend) + churn
// BCE, averaged over labelled examples. Truncated BPTT over chunks of
// `bptt_steps` events (state carried across chunks, detached), Adam,
// exponential learning-rate decay per epoch, gradient-norm clipping, early
// stopping on the loss of a user-disjoint validation split (best epoch's
// weights are kept), checkpoint of the best model after every improving
// epoch. Deterministic for a given seed and thread count.
// Divergence: a mini-batch whose loss is not finite is skipped; an epoch that
// ends with non-finite weights or loss, or skipped batches, is undone (the
// last good weights restored, a fresh optimizer at a quarter of the learning
// rate, a line on stderr), at most max_recoveries times.
// Total calibration (calibrate_total): the heads' ZILN mean is fitted on
// examples at every tenure and horizon, but the question asked in the field
// is "everyone, now, for the next H days". The trainer asks it inside the
// data at the latest position that has labels: at cutoff = data end - h,
// h = min(horizon, span / 2), every user with an event before the cutoff
// (training and validation users: the miss is a property of the heads, seen
// in both; the validation users' share is reported beside it) is scored from
// the events before the cutoff, and the predicted total is compared with the
// actual spend in (cutoff, data end]. The measured log ratio
// log(actual / predicted) is shrunk toward 0 by the support it has,
// weight = n / (n + kTotalCalibrationPrior) with n the effective number of
// buyers in the window, (sum a)^2 / sum a^2 (the number of buyers when they
// spend alike, ~1 when one buyer's spend is the whole total): a normal prior
// of sd 1 / sqrt(k) on the log scale against a measurement of variance ~1 / n.
// The scale exp(weight * log ratio) is bounded to [1 / kMaxTotalScale,
// kMaxTotalScale] and applied through the mu bias, which leaves every ranking
// as it is. See CalibrateTotal.
// Fine-tuning (init_weights): training starts from an existing model's
// weights (same hidden sizes and attribute count) instead of random ones; the
// prior, the feature normalization and the browsing model are fitted on the
// new data as usual, so the inputs the weights see are standardized on the
// new shop's own scale of money and time.
//
// Thread-safety: one training at a time per process (sets torch's global
// thread count and seed).
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "models/dataset.h"
#include "models/lstm.h"

namespace clv::models {

struct TrainOptions {
  // Longest horizon trained and the model's default horizon (days).
  double horizon_days = 365;
  // Shortest horizon trained (0 = horizon_days: one horizon). Each labelled
  // example draws its horizon log-uniformly from [min_horizon_days,
  // min(horizon_days, data end - t)]; the horizon is a head input, so the
  // model answers for any horizon in the range without linear scaling.
  double min_horizon_days = 0;
  int hidden_size = 64;
  int head_hidden = 32;
  // Upper bound on passes over the training users.
  int epochs = 30;
  // Users per mini-batch (sequences padded to the longest; users are grouped
  // by length to keep padding low).
  int batch_users = 256;
  // Truncated BPTT chunk length, events.
  int bptt_steps = 32;
  // Snapshot (rescore) examples per user (two in one gap between events
  // share a slot with weight 2).
  int snapshots_per_user = 8;
  // Profile-attribute indicator inputs of the heads: the most frequent
  // key=value pairs of the data, at most this many (<= kMaxAttrVocab; 0 = the
  // model ignores profile attributes). Off by default: no held-out gain on the
  // synthetic shop (docs/MODELS.md, run p4), and 0 keeps older recipes' bytes.
  int attr_vocab_size = 0;
  double learning_rate = 3e-3;
  // Learning rate multiplier applied after every epoch.
  double lr_decay = 0.92;
  // Stop after this many epochs without a better validation loss.
  int patience = 4;
  // Keep the epoch with the best validation Gini of the rescore examples
  // (ranking) instead of the best validation loss (patience counts the same).
  bool select_by_gini = false;
  // Share of users (by a seeded hash) held out for validation.
  double validation_fraction = 0.2;
  double clip_grad_norm = 1.0;
  // Scale the expected spend so that the backtest total matches the actual
  // one, shrunk by its support (see above).
  bool calibrate_total = true;
  // A portable model (`clv train --portable`, the shipped one): money inputs
  // in units of the fitted Gamma-Gamma's typical order value, and the file
  // says prior.source = "baseline", so the scorer swaps in the scored shop's
  // baseline (BG/NBD + Gamma-Gamma) as the prior and money unit at load.
  bool portable = false;
  // Money inputs relative to the fitted typical order value, the prior kept
  // from training (not portable): what fine-tuning a portable model on one
  // shop gives (`clv train --init-from` a portable model sets it).
  bool relative_money = false;
  // With portable: user ids up to the first of this character name a shop
  // ("shopA:u1"), and each shop's users are trained on that shop's own prior
  // (BG/NBD + Gamma-Gamma, browsing model, money unit fitted on its users),
  // as the scorer later uses the scored shop's baseline; the heads so learn
  // corrections relative to a shop's own fit, across shops. '\0' = one shop.
  char shop_separator = '\0';
  // Diverged epochs undone before the run gives up with an error.
  int max_recoveries = 3;
  // Start from these weights (fine-tuning) instead of random ones.
  std::optional<LstmWeights> init_weights;
  uint64_t seed = 1;
  // torch intra-op threads while training.
  int threads = 2;
  // Best model so far is written here after every improving epoch ("" = off).
  std::string checkpoint_path = "";
  // Recorded in the model file (how to reproduce it), e.g. the command line.
  std::string command = "";
  // Free-form description of the data (file names), recorded in the model.
  std::string data_description = "";
};

struct EpochReport {
  int epoch = 0;  // 1-based
  double train_loss = 0;
  double validation_loss = 0;
  double validation_gini = 0;  // normalized Gini of clv on labelled snapshot examples
  double learning_rate = 0;
  double seconds = 0;
  bool improved = false;
};

// Total calibration (see above): the backtest's measurement and the scale.
// k = 25: prior sd 0.2 on the log scale (a miss of 20% is a typical one).
constexpr double kTotalCalibrationPrior = 25;
constexpr double kMaxTotalScale = 2;
struct TotalCalibration {
  std::string cutoff;  // YYYY-MM-DD ("" when off)
  double horizon_days = 0;
  size_t users = 0;                  // with an event before the cutoff
  double predicted = 0, actual = 0;  // totals before scaling
  size_t validation_users = 0;       // their share of the above
  double validation_predicted = 0, validation_actual = 0;
  double effective_buyers = 0;  // (sum a)^2 / sum a^2
  double log_ratio = 0;         // log(actual / predicted); 0 when not measurable
  double standard_error = 0;    // of log_ratio (delta method, information only)
  double weight = 0;            // effective_buyers / (effective_buyers + k)
  double scale = 1;             // exp(weight * log_ratio), bounded
};

struct TrainResult {
  std::string error;  // empty on success
  bool ok() const { return error.empty(); }
  LstmModel model;  // best epoch's weights, norm, metadata
  std::vector<EpochReport> epochs;
  int best_epoch = 0;
  // Diverged epochs undone (see above).
  int recoveries = 0;
  // The total calibration's backtest and the factor applied (scale 1 when
  // off or not measurable).
  TotalCalibration calibration;
  double total_scale = 1;  // = calibration.scale
  size_t train_users = 0;
  size_t validation_users = 0;
  size_t labelled_examples = 0;
};

// The rule above applied to the backtest users' predicted and actual spend
// (same length). Not measurable (no spend predicted or none actual, or a
// non-finite total): scale 1, weight 0.
TotalCalibration CalibrateTotal(const std::vector<double>& predicted,
                                const std::vector<double>& actual);

// Called after every epoch (progress bars, logs). Default (empty): one line
// per epoch on stderr.
using EpochCallback = std::function<void(const EpochReport&)>;

TrainResult TrainLstm(const Dataset& data, const TrainOptions& options,
                      const EpochCallback& on_epoch = {});

}  // namespace clv::models
