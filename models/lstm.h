// Incremental LSTM scorer and its model file.
//
// Network (DESIGN.md "Model"): per event, x = StepFeatures(event, before,
// after) (features.h, standardized with the model's FeatureNorm) advances the
// user's LSTM cell one step from the stored (h, c); heads read
// z = [h, aggregates, prior, attrs] (aggregates = the tail of x; prior = the
// BG/NBD + Gamma-Gamma quantities of the user at that time for the asked
// horizon, see LstmPrior; attrs = 0/1 indicators of the model's
// profile-attribute vocabulary, none when the model has no vocabulary):
//   hidden = relu(head1_w z + head1_b); out = head2_w hidden + head2_b (4 values)
//   out0 += logit P(any purchase) (BG/NBD), out1 += log(E[spend] / P(any))
//   p_purchase = sigmoid(out0), mu = out1, sigma = softplus(out2) + 0.01,
//   clv = p * exp(mu + sigma^2 / 2)   (zero-inflated lognormal, ZILN)
//   churn_risk = sigmoid(out3)
// Rescore() runs the heads only, on aggregates recomputed at now_ms; (h, c) do
// not change. The recurrent state is 2*hidden floats: h then c. With all head
// weights at 0 the score is BG/NBD + Gamma-Gamma's (up to sigma); the network
// learns the correction, and the horizon is an input (no linear scaling).
//
// Model file: ONE JSON file (version-proof across libtorch 1.13 and 2.x; no
// torch::save): {"format":"clvstream-lstm","format_version":2,"version":...,
// "horizon_days":..., "min_horizon_days":..., "hidden_size":...,
// "head_hidden":..., "features":[{name, mean, scale}], "prior":{"bgnbd":{r,
// alpha, a, b}, "gamma_gamma":{p, q, gamma}, "inputs":[{name, mean, scale}]},
// "attr_vocab":[{"pair":"key=value","hash":"<16 hex>"}] (optional, empty when
// absent), "training":{...}, "validation":{...}, "weights":{"w_ih":[...], ...}}. Floats
// are written with enough digits to read back bit-exactly. format_version 1
// files (no prior) are refused with a message naming the file.
//
// Determinism: on CPU the scorer runs a hand-written kernel (lstm_kernel.h),
// not torch: a user's new (h, c), score and top_factors depend only on that
// user's inputs, bit for bit, whatever the batch size and the user's position
// in it (tests: ScoresAndStatesDoNotDependOnTheBatchAroundAUser), so a replay
// in other micro-batches reproduces the same bytes. CUDA runs torch (agrees
// with the CPU to 1e-4; not bit-exact). top_factors = gradient x input of clv
// w.r.t. the standardized features of this step (hand-written backward on
// CPU, autograd on CUDA).
// Thread-safety: a scorer is used from one thread at a time (Scorer contract).
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/bgnbd.h"
#include "models/features.h"
#include "models/scorer.h"

namespace clv::config {
struct ModelOptions;
}

namespace clv::models {

// Head inputs from the BG/NBD + Gamma-Gamma model of the user at a time
// `now` for a horizon (RfmSummary as BaselineScorer builds it, weeks):
//   0 P(alive), 1 logit P(alive), 2 log1p E[purchases in horizon],
//   3 log1p E[purchases | alive], 4 log E[order value] (GG),
//   5 log1p E[spend in horizon], 6 logit P(any purchase in horizon),
//   (4 and 5 in units of LstmPrior::money_unit),
//   7 log(horizon days),
//   8, 9 browsing since the last purchase: the log likelihood ratio of the
//        user's sessions under "dropped out at the last purchase, browsing
//        fades with a time constant of browse_fade_days (input 9: 4 x that)"
//        against "still active, browsing at the same rate": base sessions
//        (sessions minus browse_sessions_per_purchase per purchase) ~
//        Poisson(rho x time), rho ~ Gamma(kBrowseKappa, browse_theta)
//        integrated out; uses History's sessions, sessions_since_purchase
//        sums and times. > 0 says "gone". 0 before the first purchase and for
//        models whose training data had no browsing (browse_theta 0, e.g.
//        CDNOW). The three browse_ parameters are fitted by clv train.
// Offsets added to the raw head outputs: logit P(any) to out0 and
// log(E[spend] / P(any)) to out1. O(1) per user (a hypergeometric series).
inline constexpr int kPriorCount = 10;
inline constexpr double kBrowseKappa = 2.0;
// Input 9's fade time, in multiples of browse_fade_days.
inline constexpr double kBrowseSlowFade = 4.0;
inline constexpr int kPriorOffsetCount = 2;
const char* PriorName(int index);

struct LstmPrior {
  BgNbdParams bgnbd;
  GammaGammaParams gamma_gamma;
  // Rate of the Gamma prior on a user's base sessions per day: kBrowseKappa /
  // the training users' mean base session rate; 0 = no browsing inputs.
  double browse_theta = 0;
  // Time constant of the fade after a dropout (days), and the sessions each
  // purchase brings beyond the base rate (its own session, research before).
  double browse_fade_days = 14;
  double browse_sessions_per_purchase = 1;
  // Standardization of the raw prior inputs (scale 0 = 1), clipped to +-8.
  std::array<float, kPriorCount> mean{};
  std::array<float, kPriorCount> scale{};
  // Money inputs (features and prior inputs 4, 5) are divided by this: 1 =
  // the training data's currency (every model before portable ones), else
  // TypicalOrderValue(gamma_gamma), so the network sees money relative to the
  // shop's typical order and the offsets alone carry the currency.
  double money_unit = 1;
  // Portable model (`clv train --portable`, the shipped one): the scorer
  // replaces bgnbd, gamma_gamma and money_unit with the scored shop's
  // baseline model (model.baseline_path) at load: UseBaselinePrior().
  bool from_baseline = false;
};

// The order value of a typical customer under Gamma-Gamma: p * gamma / q
// (p / E[nu]); finite for every fitted q > 0, unlike the mean, which needs
// q > 1 and runs away as q -> 1 on heavy tails. 1 when not positive/finite.
double TypicalOrderValue(const GammaGammaParams& gg);

// Raw prior inputs (kPriorCount) and offsets (kPriorOffsetCount) of `history`
// at now_ms for horizon_days. Deterministic; pure.
void RawPriorInputs(const LstmPrior& prior, const History& history, int64_t now_ms,
                    double horizon_days, float* raw, float* offsets);
// log of the odds that a customer with RFM summary `c` dropped out right
// after the last purchase, from the purchases alone, MBG/NBD style (BG/NBD's
// parameters; unlike BG/NBD a dropout may follow the first purchase too).
double BrowsePurchaseLogOddsGone(const BgNbdParams& p, const RfmSummary& c);
// What the browsing likelihoods see of a user at `now` (days; base sessions
// = sessions minus browse_sessions_per_purchase per purchase, at least 1).
struct BrowseSessions {
  double base_sessions = 1;
  double tenure = 0;       // first event -> now
  double to_purchase = 0;  // first event -> last purchase
  double after_sum = 0;    // History::session_days_after_purchase
};
BrowseSessions BrowseSessionsOf(const LstmPrior& prior, const History& history, int64_t now_ms);
// log likelihoods of those sessions, up to a factor common to both, under
// "still active" and "dropped out at the last purchase, browsing fades over
// `fade` days" (Gamma(kBrowseKappa, theta) session rate integrated out).
struct BrowseLogLikelihood {
  double active = 0;
  double gone = 0;
};
BrowseLogLikelihood BrowseLogLikelihoods(double theta, double fade, const BrowseSessions& s);
// Prior inputs 8 and 9 alone (see above); out[2].
void BrowseGoneLogLikelihoodRatios(const LstmPrior& prior, const History& history, int64_t now_ms,
                                   float* out);
// Standardizes kPriorCount raw values in place.
void StandardizePrior(const LstmPrior& prior, float* values);

// Profile-attribute vocabulary: the heads get one 0/1 input per entry (1 when
// the user's History::attrs holds that pair), appended after the prior
// inputs. A model without a vocabulary (the default) ignores attributes.
inline constexpr int kMaxAttrVocab = 16;
struct AttrVocabEntry {
  uint64_t pair_hash = 0;  // AttrHash("key=value")
  std::string text;        // "key=value", for people reading the model file
};
// out[i] = 1 when history.attrs holds vocab[i], else 0. Pure, O(K * kMaxAttrs).
void AttrIndicators(const std::vector<AttrVocabEntry>& vocab, const History& history, float* out);

// Weights, row-major, PyTorch LSTMCell gate order (input, forget, cell, output).
struct LstmWeights {
  int input_size = kFeatureCount;
  int hidden_size = 64;
  int attr_count = 0;  // profile-attribute indicator inputs of the heads (LstmModel::attr_vocab)
  int head_input_size() const { return hidden_size + kAggregateCount + kPriorCount + attr_count; }
  int head_hidden = 32;
  std::vector<float> w_ih;     // [4*hidden, input_size]
  std::vector<float> w_hh;     // [4*hidden, hidden]
  std::vector<float> b_ih;     // [4*hidden]
  std::vector<float> b_hh;     // [4*hidden]
  std::vector<float> head1_w;  // [head_hidden, head_input_size()]
  std::vector<float> head1_b;  // [head_hidden]
  std::vector<float> head2_w;  // [4, head_hidden]
  std::vector<float> head2_b;  // [4]
  // Empty string when all shapes match the sizes above.
  std::string CheckShapes() const;
};

struct LstmModel {
  // "lstm/<12 hex digits of a hash of the weights>"; set by SaveLstmModel.
  std::string version;
  // Default horizon (asked when the scorer's horizon is 0) and the longest
  // horizon trained; min_horizon_days is the shortest (= horizon_days when
  // trained on one horizon).
  double horizon_days = 365;
  double min_horizon_days = 365;
  LstmPrior prior;
  FeatureNorm norm = FeatureNorm::Identity();
  LstmWeights weights;
  // weights.attr_count entries (empty = attributes ignored).
  std::vector<AttrVocabEntry> attr_vocab;
  // Free-form JSON objects (serialized), kept verbatim in the model file.
  std::string training_json = "{}";
  std::string validation_json = "{}";
};

// Deterministic random weights (for tests and benchmarks); with a vocabulary
// the heads get one attribute input per entry.
LstmModel RandomLstmModel(int hidden_size, uint64_t seed, int head_hidden = 32,
                          const std::vector<AttrVocabEntry>& attr_vocab = {});

// "lstm/" + hash of shapes, weights and normalization.
std::string LstmModelVersion(const LstmModel& model);

// Writes `model` (version recomputed) to `path` as JSON. False + *error on failure.
bool SaveLstmModel(LstmModel model, const std::string& path, std::string* error);
bool LoadLstmModel(const std::string& path, LstmModel* model, std::string* error);

// The shipped default model (models/default/lstm.json).
std::string DefaultLstmModelPath();

// A portable model (prior.from_baseline) takes its BG/NBD + Gamma-Gamma
// prior from the baseline of the shop it scores: sets model->prior's
// bgnbd, gamma_gamma and money_unit = TypicalOrderValue(gamma_gamma) and
// recomputes the version (the id then names this model on this baseline).
// No-op for other models. The network's weights do not change.
void UseBaselinePrior(LstmModel* model, const BgNbdParams& bgnbd,
                      const GammaGammaParams& gamma_gamma);

struct LstmScorerOptions {
  // "cpu", "cuda", or "auto" (cuda when torch sees a GPU).
  std::string device = "cpu";
  // Intra-op threads for torch (process-wide; the CPU kernel is single-threaded
  // and deterministic whatever this is). 1 = one scoring thread per instance.
  int threads = 1;
  // Compute top_factors (gradient x input, about 1.6x the cost of a step on CPU).
  bool top_factors = true;
  // Horizon the caller asks for (a head input; 0 = the model's horizon_days).
  double horizon_days = 0;
};

// Builds a scorer from an in-memory model. Null + *error on failure (bad
// shapes, device "cuda" without a GPU).
std::unique_ptr<Scorer> MakeLstmScorer(const LstmModel& model, const LstmScorerOptions& options,
                                       std::string* error);

// For LoadScorer(): reads options.path (or the default model), device and
// horizon from config.
std::unique_ptr<Scorer> LoadLstmScorer(const config::ModelOptions& options, std::string* error);

// Whether this build's torch sees a CUDA device.
bool CudaAvailable();

}  // namespace clv::models
