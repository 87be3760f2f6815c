// Incremental LSTM scorer and its model file.
//
// Network (DESIGN.md "Model"): per event, x = StepFeatures(event, before,
// after) (features.h, standardized with the model's FeatureNorm) advances the
// user's LSTM cell one step from the stored (h, c); heads read
// z = [h, aggregates] (aggregates = the tail of x):
//   hidden = relu(head1_w z + head1_b); out = head2_w hidden + head2_b (4 values)
//   p_purchase = sigmoid(out0), mu = out1, sigma = softplus(out2) + 0.01,
//   clv = p * exp(mu + sigma^2 / 2)   (zero-inflated lognormal, ZILN)
//   churn_risk = sigmoid(out3)
// Rescore() runs the heads only, on aggregates recomputed at now_ms; (h, c) do
// not change. The recurrent state is 2*hidden floats: h then c.
//
// Model file: ONE JSON file (version-proof across libtorch 1.13 and 2.x; no
// torch::save): {"format":"clvstream-lstm","format_version":1,"version":...,
// "horizon_days":..., "hidden_size":..., "head_hidden":..., "features":[{name,
// mean, scale}], "training":{...}, "validation":{...}, "weights":{"w_ih":[...],
// ...}}. Floats are written with enough digits to read back bit-exactly.
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

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/features.h"
#include "models/scorer.h"

namespace clv::config {
struct ModelOptions;
}

namespace clv::models {

// Weights, row-major, PyTorch LSTMCell gate order (input, forget, cell, output).
struct LstmWeights {
  int input_size = kFeatureCount;
  int hidden_size = 64;
  int head_input_size() const { return hidden_size + kAggregateCount; }
  int head_hidden = 32;
  std::vector<float> w_ih;     // [4*hidden, input_size]
  std::vector<float> w_hh;     // [4*hidden, hidden]
  std::vector<float> b_ih;     // [4*hidden]
  std::vector<float> b_hh;     // [4*hidden]
  std::vector<float> head1_w;  // [head_hidden, hidden + kAggregateCount]
  std::vector<float> head1_b;  // [head_hidden]
  std::vector<float> head2_w;  // [4, head_hidden]
  std::vector<float> head2_b;  // [4]
  // Empty string when all shapes match the sizes above.
  std::string CheckShapes() const;
};

struct LstmModel {
  // "lstm/<12 hex digits of a hash of the weights>"; set by SaveLstmModel.
  std::string version;
  double horizon_days = 365;
  FeatureNorm norm = FeatureNorm::Identity();
  LstmWeights weights;
  // Free-form JSON objects (serialized), kept verbatim in the model file.
  std::string training_json = "{}";
  std::string validation_json = "{}";
};

// Deterministic random weights (for tests and benchmarks).
LstmModel RandomLstmModel(int hidden_size, uint64_t seed, int head_hidden = 32);

// "lstm/" + hash of shapes, weights and normalization.
std::string LstmModelVersion(const LstmModel& model);

// Writes `model` (version recomputed) to `path` as JSON. False + *error on failure.
bool SaveLstmModel(LstmModel model, const std::string& path, std::string* error);
bool LoadLstmModel(const std::string& path, LstmModel* model, std::string* error);

// The shipped default model (models/default/lstm.json).
std::string DefaultLstmModelPath();

struct LstmScorerOptions {
  // "cpu", "cuda", or "auto" (cuda when torch sees a GPU).
  std::string device = "cpu";
  // Intra-op threads for torch (process-wide; the CPU kernel is single-threaded
  // and deterministic whatever this is). 1 = one scoring thread per instance.
  int threads = 1;
  // Compute top_factors (gradient x input, about 1.6x the cost of a step on CPU).
  bool top_factors = true;
  // Horizon the caller asks for; clv and expected_purchases are scaled
  // linearly by horizon_days / model.horizon_days (0 = the model's horizon).
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
