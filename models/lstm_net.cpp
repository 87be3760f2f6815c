// LstmNet: the network of lstm.h in torch. See lstm_net.h.
#include "models/lstm_net.h"

#include <algorithm>
#include <vector>

#include "models/lstm_kernel.h"

namespace clv::models {

namespace {

torch::Tensor Parameter(const std::vector<float>& values, std::vector<int64_t> shape) {
  return torch::from_blob(const_cast<float*>(values.data()), shape, torch::kFloat32).clone();
}

std::vector<float> ToVector(const torch::Tensor& t) {
  torch::Tensor c = t.detach().contiguous().to(torch::kCPU);
  return std::vector<float>(c.data_ptr<float>(), c.data_ptr<float>() + c.numel());
}

}  // namespace

LstmHeadValues LstmHeadLinks(const torch::Tensor& raw) {
  LstmHeadValues v;
  v.p = torch::sigmoid(raw.select(-1, 0));
  v.mu = raw.select(-1, 1);
  v.sigma = torch::softplus(raw.select(-1, 2)) + 0.01;
  v.clv = v.p * torch::exp(torch::clamp_max(v.mu + 0.5 * v.sigma * v.sigma, 20.0));
  v.churn = torch::sigmoid(raw.select(-1, 3));
  return v;
}

LstmNetImpl::LstmNetImpl(const LstmWeights& w) {
  const int64_t gates = 4 * int64_t(w.hidden_size);
  w_ih = register_parameter("w_ih", Parameter(w.w_ih, {gates, w.input_size}));
  w_hh = register_parameter("w_hh", Parameter(w.w_hh, {gates, w.hidden_size}));
  b_ih = register_parameter("b_ih", Parameter(w.b_ih, {gates}));
  b_hh = register_parameter("b_hh", Parameter(w.b_hh, {gates}));
  head1_w =
      register_parameter("head1_w", Parameter(w.head1_w, {w.head_hidden, w.head_input_size()}));
  head1_b = register_parameter("head1_b", Parameter(w.head1_b, {w.head_hidden}));
  head2_w = register_parameter("head2_w", Parameter(w.head2_w, {kHeadOutputs, w.head_hidden}));
  head2_b = register_parameter("head2_b", Parameter(w.head2_b, {kHeadOutputs}));
}

std::pair<torch::Tensor, torch::Tensor> LstmNetImpl::Cell(const torch::Tensor& x,
                                                          const torch::Tensor& h,
                                                          const torch::Tensor& c) const {
  auto [h1, c1] = torch::lstm_cell(x, {h, c}, w_ih, w_hh, b_ih, b_hh);
  return {h1, c1};
}

torch::Tensor LstmNetImpl::Heads(const torch::Tensor& h, const torch::Tensor& aggregates,
                                 const torch::Tensor& prior, const torch::Tensor& offsets) const {
  torch::Tensor z = torch::cat({h, aggregates, prior}, -1);
  torch::Tensor hidden = torch::relu(torch::matmul(z, head1_w.t()) + head1_b);
  return torch::matmul(hidden, head2_w.t()) + head2_b +
         torch::constant_pad_nd(offsets, {0, kHeadOutputs - kPriorOffsetCount});
}

void LstmNetImpl::ExportTo(LstmWeights* w) const {
  w->w_ih = ToVector(w_ih);
  w->w_hh = ToVector(w_hh);
  w->b_ih = ToVector(b_ih);
  w->b_hh = ToVector(b_hh);
  w->head1_w = ToVector(head1_w);
  w->head1_b = ToVector(head1_b);
  w->head2_w = ToVector(head2_w);
  w->head2_b = ToVector(head2_b);
}

void LstmNetStepOnCpu(const LstmWeights& weights, int rows, const float* x, const float* prior,
                      const float* offsets, float* state, float* heads) {
  torch::NoGradGuard no_grad;
  LstmNet net(weights);
  const int64_t n = rows, hidden = weights.hidden_size, pw = kPriorCount + weights.attr_count;
  auto view = [n](const float* data, int64_t width) {
    return torch::from_blob(const_cast<float*>(data), {n, width}, torch::kFloat32);
  };
  torch::Tensor x_t = view(x, kFeatureCount);
  torch::Tensor s = view(state, 2 * hidden);
  auto [h1, c1] = net->Cell(x_t, s.narrow(1, 0, hidden), s.narrow(1, hidden, hidden));
  torch::Tensor raw = net->Heads(h1, x_t.narrow(1, kAggregateBegin, kAggregateCount),
                                 view(prior, pw), view(offsets, kPriorOffsetCount));
  LstmHeadValues v = LstmHeadLinks(raw);
  torch::Tensor new_state = torch::cat({h1, c1}, 1).contiguous();
  torch::Tensor values = torch::stack({v.p, v.mu, v.sigma, v.churn}, 1).contiguous();
  std::copy_n(new_state.data_ptr<float>(), n * 2 * hidden, state);
  std::copy_n(values.data_ptr<float>(), n * kHeadOutputs, heads);
}

}  // namespace clv::models
