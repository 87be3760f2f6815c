// The LSTM scorer's network as one torch module (lstm.h gives the math):
// used by the trainer (trainer.cpp) and by the scorer's torch path
// (lstm_scorer.cpp, CUDA). The CPU scorer runs the hand-written kernel
// (lstm_kernel.h), the one other implementation of the same functions; a test
// checks that the two agree to ~1e-6 (LstmNet.AgreesWithTheCpuKernel).
//
// Parameters are registered by name in the order of LstmWeights: w_ih, w_hh,
// b_ih, b_hh, head1_w, head1_b, head2_w, head2_b (PyTorch LSTMCell gate order).
// Thread-safety: a module is used from one thread at a time.
#pragma once

#include <utility>

#include <torch/torch.h>

#include "models/lstm.h"

namespace clv::models {

// Raw outputs of the heads: out0 (logit P(purchase)), out1 (mu), out2 (raw
// sigma), out3 (logit churn).
inline constexpr int kHeadOutputs = 4;

// The link functions applied to the raw head outputs [..., 4].
struct LstmHeadValues {
  torch::Tensor clv;    // p * exp(min(20, mu + sigma^2 / 2))
  torch::Tensor p;      // sigmoid(out0)
  torch::Tensor mu;     // out1
  torch::Tensor sigma;  // softplus(out2) + 0.01
  torch::Tensor churn;  // sigmoid(out3)
};
LstmHeadValues LstmHeadLinks(const torch::Tensor& raw);

struct LstmNetImpl : torch::nn::Module {
  // Parameters copied from `weights` (shapes checked by the caller:
  // LstmWeights::CheckShapes), trainable.
  explicit LstmNetImpl(const LstmWeights& weights);

  // One LSTM cell step: x [B, F], h and c [B, H] -> (h1, c1).
  std::pair<torch::Tensor, torch::Tensor> Cell(const torch::Tensor& x, const torch::Tensor& h,
                                               const torch::Tensor& c) const;
  // Raw head outputs [..., 4] on h [..., H], aggregates [..., A], prior inputs
  // and attribute indicators [..., P + K] and offsets [..., 2] (added to out0
  // and out1).
  torch::Tensor Heads(const torch::Tensor& h, const torch::Tensor& aggregates,
                      const torch::Tensor& prior, const torch::Tensor& offsets) const;
  // Copies the parameters (on any device) into `weights`' float arrays.
  void ExportTo(LstmWeights* weights) const;

  torch::Tensor w_ih, w_hh, b_ih, b_hh, head1_w, head1_b, head2_w, head2_b;
};
TORCH_MODULE(LstmNet);

}  // namespace clv::models
