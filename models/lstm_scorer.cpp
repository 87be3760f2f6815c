// LstmScorer (torch) and the LSTM model file (JSON). See lstm.h.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <random>
#include <sstream>

#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "common/hash.h"
#include "config/config.h"
#include "models/baseline_scorer.h"
#include "models/lstm.h"
#include "models/lstm_kernel.h"
#include "models/lstm_net.h"

namespace clv::models {

namespace {

constexpr int kFormatVersion = 2;

uint64_t HashFloats(uint64_t hash, const std::vector<float>& values) {
  return Fnv1a(hash, values.data(), values.size() * sizeof(float));
}

std::string ShapeError(const char* name, size_t got, size_t want) {
  return std::string("weights.") + name + ": expected " + std::to_string(want) + " floats, got " +
         std::to_string(got);
}

// Resolves "cpu" / "cuda" / "auto"; false for unknown names or missing GPU.
bool ResolveDevice(const std::string& name, torch::Device* device, std::string* error) {
  if (name == "cpu") {
    *device = torch::Device(torch::kCPU);
  } else if (name == "cuda") {
    if (!torch::cuda::is_available()) {
      *error = "model.device=cuda: no CUDA device visible to torch (this build: " +
               std::string(torch::cuda::is_available() ? "cuda" : "cpu-only or no GPU") + ")";
      return false;
    }
    *device = torch::Device(torch::kCUDA, 0);
  } else if (name == "auto") {
    *device =
        torch::cuda::is_available() ? torch::Device(torch::kCUDA, 0) : torch::Device(torch::kCPU);
  } else {
    *error = "model.device: unknown device '" + name + "' (expected cpu, cuda or auto)";
    return false;
  }
  return true;
}

class LstmScorer final : public Scorer {
 public:
  LstmScorer(const LstmModel& model, const LstmScorerOptions& options, torch::Device device)
      : model_(model), options_(options), device_(device) {
    const auto& w = model.weights;
    hidden_ = w.hidden_size;
    pw_ = kPriorCount + w.attr_count;
    tile_prior_.assign(size_t(LstmCpuKernel::kTileRows) * pw_, 0.0f);
    horizon_days_ = options.horizon_days > 0 ? options.horizon_days : model.horizon_days;
    cuda_ = device_.is_cuda();
    if (cuda_) {
      net_ = LstmNet(w);
      net_->to(device_);
      for (auto& parameter : net_->parameters()) parameter.set_requires_grad(false);
    } else {
      kernel_ = std::make_unique<LstmCpuKernel>(w);
    }
  }

  std::string version() const override { return model_.version; }
  int state_size() const override { return 2 * hidden_; }
  // CPU only: the kernel and the tile buffers are the clone's own. The CUDA
  // path keeps one scorer (one stream of batches to the device).
  std::unique_ptr<Scorer> Clone() const override {
    if (cuda_) return nullptr;
    return std::make_unique<LstmScorer>(model_, options_, device_);
  }

  void Step(std::span<const StepInput> inputs, std::span<Score> outputs) override {
    if (!cuda_) {
      StepCpu(inputs, outputs);
      return;
    }
    const int64_t batch = static_cast<int64_t>(inputs.size());
    if (batch == 0) return;
    // Host staging: [x | prior | offsets | h | c] per user, one buffer, one
    // copy to the device.
    const int64_t kPrior = pw_ + kPriorOffsetCount;
    const int64_t width = kFeatureCount + kPrior + 2 * hidden_;
    torch::Tensor host = HostBuffer(&step_host_, batch, width);
    float* base = host.data_ptr<float>();
    for (int64_t i = 0; i < batch; ++i) {
      const StepInput& in = inputs[i];
      float* row = base + i * width;
      StepFeatures(model_.norm, model_.prior.money_unit, in.event, *in.before, *in.after, row);
      PriorRow(*in.after, in.event.ts_ms, row + kFeatureCount, row + kFeatureCount + pw_);
      if (in.state != nullptr) {
        std::memcpy(row + kFeatureCount + kPrior, in.state, sizeof(float) * 2 * hidden_);
      } else {
        std::fill(row + kFeatureCount + kPrior, row + width, 0.0f);
      }
    }
    torch::Tensor staged = cuda_ ? host.to(device_, /*non_blocking=*/true) : host;
    torch::Tensor x = staged.narrow(1, 0, kFeatureCount);
    torch::Tensor prior = staged.narrow(1, kFeatureCount, pw_);
    torch::Tensor offsets = staged.narrow(1, kFeatureCount + pw_, kPriorOffsetCount);
    torch::Tensor h = staged.narrow(1, kFeatureCount + kPrior, hidden_);
    torch::Tensor c = staged.narrow(1, kFeatureCount + kPrior + hidden_, hidden_);

    // The backward pass only when some input wants its factors (CUDA results
    // are not bit-exact anyway, lstm.h).
    bool any_factors = false;
    for (const StepInput& in : inputs) any_factors = any_factors || in.want_factors;
    const bool factors = options_.top_factors && any_factors;
    torch::Tensor result;  // [B, 2H + 4 (+F grads)]
    if (factors) {
      torch::AutoGradMode grad(true);
      torch::Tensor xg = x.detach().clone().requires_grad_(true);
      auto [h1, c1] = Cell(xg, h, c);
      auto [clv, heads] = Heads(h1, xg.narrow(1, kAggregateBegin, kAggregateCount), prior, offsets);
      clv.sum().backward();
      torch::Tensor contribution = xg.grad() * xg.detach();
      result = torch::cat({h1.detach(), c1.detach(), heads.detach(), contribution}, 1);
    } else {
      torch::NoGradGuard no_grad;
      auto [h1, c1] = Cell(x, h, c);
      auto [clv, heads] = Heads(h1, x.narrow(1, kAggregateBegin, kAggregateCount), prior, offsets);
      result = torch::cat({h1, c1, heads}, 1);
    }
    if (cuda_) result = result.to(torch::kCPU);
    result = result.contiguous();
    const float* out = result.data_ptr<float>();
    const int64_t out_width = result.size(1);
    for (int64_t i = 0; i < batch; ++i) {
      const float* row = out + i * out_width;
      if (inputs[i].state != nullptr) {
        std::memcpy(inputs[i].state, row, sizeof(float) * 2 * hidden_);
      }
      FillScore(row + 2 * hidden_, *inputs[i].after, &outputs[i]);
      outputs[i].top_factors = {};
      if (factors && inputs[i].want_factors) {
        FillFactors(row + 2 * hidden_ + kHeadOutputs, &outputs[i]);
      }
    }
  }

  void Rescore(std::span<const RescoreInput> inputs, std::span<Score> outputs) override {
    if (!cuda_) {
      RescoreCpu(inputs, outputs);
      return;
    }
    const int64_t batch = static_cast<int64_t>(inputs.size());
    if (batch == 0) return;
    const int64_t width = hidden_ + kAggregateCount + pw_ + kPriorOffsetCount;
    torch::Tensor host = HostBuffer(&rescore_host_, batch, width);
    float* base = host.data_ptr<float>();
    for (int64_t i = 0; i < batch; ++i) {
      float* row = base + i * width;
      if (inputs[i].state != nullptr) {
        std::memcpy(row, inputs[i].state, sizeof(float) * hidden_);
      } else {
        std::fill(row, row + hidden_, 0.0f);
      }
      AggregateFeatures(model_.norm, model_.prior.money_unit, *inputs[i].history, inputs[i].now_ms,
                        row + hidden_);
      float* prior = row + hidden_ + kAggregateCount;
      PriorRow(*inputs[i].history, inputs[i].now_ms, prior, prior + pw_);
    }
    torch::NoGradGuard no_grad;
    torch::Tensor staged = cuda_ ? host.to(device_, /*non_blocking=*/true) : host;
    const int64_t prior_at = hidden_ + kAggregateCount;
    auto [clv, heads] =
        Heads(staged.narrow(1, 0, hidden_), staged.narrow(1, hidden_, kAggregateCount),
              staged.narrow(1, prior_at, pw_), staged.narrow(1, prior_at + pw_, kPriorOffsetCount));
    if (cuda_) heads = heads.to(torch::kCPU);
    heads = heads.contiguous();
    const float* out = heads.data_ptr<float>();
    for (int64_t i = 0; i < batch; ++i) {
      FillScore(out + i * kHeadOutputs, *inputs[i].history, &outputs[i]);
      outputs[i].top_factors = {};
    }
  }

 private:
  // CPU: the deterministic kernel, tile by tile (lstm_kernel.h): a row's
  // results do not depend on the batch around it, so the rows that want
  // top_factors are gathered into tiles of their own (run with the backward
  // pass) and the others into tiles without it; each row gets the same bits
  // as in any other grouping.
  void StepCpu(std::span<const StepInput> inputs, std::span<Score> outputs) {
    constexpr int kTile = LstmCpuKernel::kTileRows;
    tile_state_.resize(size_t(kTile) * 2 * hidden_);
    std::array<size_t, kTile> explained{}, plain{};
    int explained_rows = 0, plain_rows = 0;
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (options_.top_factors && inputs[i].want_factors) {
        explained[explained_rows++] = i;
        if (explained_rows == kTile) {
          StepTile(inputs, outputs, explained.data(), explained_rows, true);
          explained_rows = 0;
        }
      } else {
        plain[plain_rows++] = i;
        if (plain_rows == kTile) {
          StepTile(inputs, outputs, plain.data(), plain_rows, false);
          plain_rows = 0;
        }
      }
    }
    if (explained_rows > 0) StepTile(inputs, outputs, explained.data(), explained_rows, true);
    if (plain_rows > 0) StepTile(inputs, outputs, plain.data(), plain_rows, false);
  }

  // One kernel tile of the inputs at rows[0..count).
  void StepTile(std::span<const StepInput> inputs, std::span<Score> outputs, const size_t* rows,
                int count, bool factors) {
    const int state_floats = 2 * hidden_;
    for (int i = 0; i < count; ++i) {
      const StepInput& in = inputs[rows[i]];
      StepFeatures(model_.norm, model_.prior.money_unit, in.event, *in.before, *in.after,
                   &tile_x_[i * kFeatureCount]);
      PriorRow(*in.after, in.event.ts_ms, &tile_prior_[size_t(i) * pw_],
               &tile_offsets_[i * kPriorOffsetCount]);
      float* state = &tile_state_[size_t(i) * state_floats];
      if (in.state != nullptr) {
        std::memcpy(state, in.state, sizeof(float) * state_floats);
      } else {
        std::fill(state, state + state_floats, 0.0f);
      }
    }
    kernel_->Step(count, tile_x_.data(), tile_prior_.data(), tile_offsets_.data(),
                  tile_state_.data(), tile_heads_.data(), factors ? tile_factors_.data() : nullptr);
    for (int i = 0; i < count; ++i) {
      const StepInput& in = inputs[rows[i]];
      Score& score = outputs[rows[i]];
      if (in.state != nullptr) {
        std::memcpy(in.state, &tile_state_[size_t(i) * state_floats], sizeof(float) * state_floats);
      }
      FillScore(&tile_heads_[i * LstmCpuKernel::kHeadValues], *in.after, &score);
      score.top_factors = {};
      if (factors) FillFactors(&tile_factors_[i * kFeatureCount], &score);
    }
  }

  void RescoreCpu(std::span<const RescoreInput> inputs, std::span<Score> outputs) {
    constexpr int kTile = LstmCpuKernel::kTileRows;
    tile_state_.resize(size_t(kTile) * 2 * hidden_);
    float* h = tile_state_.data();
    for (size_t begin = 0; begin < inputs.size(); begin += kTile) {
      const int rows = static_cast<int>(std::min<size_t>(kTile, inputs.size() - begin));
      for (int i = 0; i < rows; ++i) {
        const RescoreInput& in = inputs[begin + i];
        float* row = h + size_t(i) * hidden_;
        if (in.state != nullptr) {
          std::memcpy(row, in.state, sizeof(float) * hidden_);
        } else {
          std::fill(row, row + hidden_, 0.0f);
        }
        AggregateFeatures(model_.norm, model_.prior.money_unit, *in.history, in.now_ms,
                          &tile_x_[i * kAggregateCount]);
        PriorRow(*in.history, in.now_ms, &tile_prior_[size_t(i) * pw_],
                 &tile_offsets_[i * kPriorOffsetCount]);
      }
      kernel_->Heads(rows, h, tile_x_.data(), tile_prior_.data(), tile_offsets_.data(),
                     tile_heads_.data());
      for (int i = 0; i < rows; ++i) {
        FillScore(&tile_heads_[i * LstmCpuKernel::kHeadValues], *inputs[begin + i].history,
                  &outputs[begin + i]);
        outputs[begin + i].top_factors = {};
      }
    }
  }

  std::pair<torch::Tensor, torch::Tensor> Cell(const torch::Tensor& x, const torch::Tensor& h,
                                               const torch::Tensor& c) {
    return net_->Cell(x, h, c);
  }

  // Standardized prior inputs, then the attribute indicators (pw_ floats in
  // all), and the offsets of one user (lstm.h).
  void PriorRow(const History& history, int64_t now_ms, float* prior, float* offsets) const {
    RawPriorInputs(model_.prior, history, now_ms, horizon_days_, prior, offsets);
    StandardizePrior(model_.prior, prior);
    AttrIndicators(model_.attr_vocab, history, prior + kPriorCount);
  }

  // Returns (clv [B], head values [B, 4] = p, mu, sigma, churn).
  std::pair<torch::Tensor, torch::Tensor> Heads(const torch::Tensor& h, const torch::Tensor& agg,
                                                const torch::Tensor& prior,
                                                const torch::Tensor& offsets) {
    LstmHeadValues v = LstmHeadLinks(net_->Heads(h, agg, prior, offsets));
    return {v.clv, torch::stack({v.p, v.mu, v.sigma, v.churn}, 1)};
  }

  torch::Tensor HostBuffer(torch::Tensor* cache, int64_t rows, int64_t width) {
    if (!cache->defined() || cache->size(0) < rows || cache->size(1) != width) {
      auto options = torch::TensorOptions().dtype(torch::kFloat32);
      if (cuda_) options = options.pinned_memory(true);
      *cache = torch::empty({std::max<int64_t>(rows, 64), width}, options);
    }
    return cache->narrow(0, 0, rows);
  }

  void FillScore(const float* head, const History& history, Score* score) const {
    double p = head[0], mu = head[1], sigma = head[2];
    double value = p * std::exp(std::min(20.0, mu + 0.5 * sigma * sigma));
    score->clv = value;
    score->p_purchase = p;
    score->churn_risk = head[3];
    double aov = history.purchases > 0 ? history.purchase_value_sum / history.purchases
                                       : std::exp(std::min(20.0, mu + 0.5 * sigma * sigma));
    score->expected_order_value = aov;
    score->expected_purchases = aov > 0 ? score->clv / aov : 0.0;
  }

  void FillFactors(const float* contribution, Score* score) const {
    std::array<int, kFeatureCount> order;
    for (int i = 0; i < kFeatureCount; ++i) order[i] = i;
    std::partial_sort(order.begin(), order.begin() + 3, order.end(), [&](int a, int b) {
      float fa = std::fabs(contribution[a]), fb = std::fabs(contribution[b]);
      return fa != fb ? fa > fb : a < b;
    });
    for (int k = 0; k < 3; ++k) {
      Factor& factor = score->top_factors[k];
      std::strncpy(factor.name.data(), FeatureName(order[k]), factor.name.size() - 1);
      factor.contribution = contribution[order[k]];
    }
  }

  LstmModel model_;
  LstmScorerOptions options_;
  torch::Device device_;
  bool cuda_ = false;
  int hidden_ = 0;
  int pw_ = kPriorCount;  // prior inputs + attribute indicators per row
  double horizon_days_ = 365;
  // CUDA path: the network in torch (lstm_net.h).
  LstmNet net_{nullptr};
  torch::Tensor step_host_, rescore_host_;
  // CPU path.
  std::unique_ptr<LstmCpuKernel> kernel_;
  std::array<float, LstmCpuKernel::kTileRows * kFeatureCount> tile_x_{};
  std::array<float, LstmCpuKernel::kTileRows * LstmCpuKernel::kHeadValues> tile_heads_{};
  std::array<float, LstmCpuKernel::kTileRows * kFeatureCount> tile_factors_{};
  std::vector<float> tile_prior_;
  std::array<float, LstmCpuKernel::kTileRows * kPriorOffsetCount> tile_offsets_{};
  std::vector<float> tile_state_;
};

nlohmann::json FloatsToJson(const std::vector<float>& values) {
  nlohmann::json array = nlohmann::json::array();
  for (float v : values) array.push_back(v);
  return array;
}

bool JsonToFloats(const nlohmann::json& json, const char* name, std::vector<float>* out,
                  std::string* error) {
  if (!json.contains(name) || !json[name].is_array()) {
    *error = std::string("weights.") + name + ": missing or not an array";
    return false;
  }
  out->clear();
  out->reserve(json[name].size());
  for (const auto& v : json[name]) {
    if (!v.is_number()) {
      *error = std::string("weights.") + name + ": non-number entry";
      return false;
    }
    out->push_back(v.get<float>());
  }
  return true;
}

}  // namespace

std::string LstmWeights::CheckShapes() const {
  const size_t gates = 4 * size_t(hidden_size);
  if (hidden_size <= 0 || head_hidden <= 0) return "weights: hidden sizes must be > 0";
  if (input_size != kFeatureCount) {
    return "weights: input_size " + std::to_string(input_size) + " but this build has " +
           std::to_string(kFeatureCount) + " features";
  }
  if (w_ih.size() != gates * input_size) return ShapeError("w_ih", w_ih.size(), gates * input_size);
  if (w_hh.size() != gates * hidden_size)
    return ShapeError("w_hh", w_hh.size(), gates * hidden_size);
  if (b_ih.size() != gates) return ShapeError("b_ih", b_ih.size(), gates);
  if (b_hh.size() != gates) return ShapeError("b_hh", b_hh.size(), gates);
  size_t h1 = size_t(head_hidden) * head_input_size();
  if (head1_w.size() != h1) return ShapeError("head1_w", head1_w.size(), h1);
  if (head1_b.size() != size_t(head_hidden))
    return ShapeError("head1_b", head1_b.size(), head_hidden);
  size_t h2 = size_t(kHeadOutputs) * head_hidden;
  if (head2_w.size() != h2) return ShapeError("head2_w", head2_w.size(), h2);
  if (head2_b.size() != size_t(kHeadOutputs))
    return ShapeError("head2_b", head2_b.size(), kHeadOutputs);
  return "";
}

// Weight shapes plus the vocabulary matching the heads' attribute inputs.
static std::string CheckModelShapes(const LstmModel& model) {
  if (model.attr_vocab.size() != size_t(std::max(0, model.weights.attr_count))) {
    return "attr_vocab has " + std::to_string(model.attr_vocab.size()) +
           " entries but the heads take " + std::to_string(model.weights.attr_count) +
           " attribute inputs";
  }
  if (model.attr_vocab.size() > size_t(kMaxAttrVocab)) {
    return "attr_vocab has more than " + std::to_string(kMaxAttrVocab) + " entries";
  }
  return model.weights.CheckShapes();
}

LstmModel RandomLstmModel(int hidden_size, uint64_t seed, int head_hidden,
                          const std::vector<AttrVocabEntry>& attr_vocab) {
  LstmModel model;
  model.attr_vocab = attr_vocab;
  LstmWeights& w = model.weights;
  w.attr_count = static_cast<int>(attr_vocab.size());
  w.hidden_size = hidden_size;
  w.head_hidden = head_hidden;
  std::mt19937_64 random(seed);
  auto fill = [&](std::vector<float>* v, size_t n, double bound) {
    std::uniform_real_distribution<double> uniform(-bound, bound);
    v->resize(n);
    for (auto& x : *v) x = static_cast<float>(uniform(random));
  };
  const size_t gates = 4 * size_t(hidden_size);
  double lstm_bound = 1.0 / std::sqrt(double(hidden_size));
  fill(&w.w_ih, gates * w.input_size, lstm_bound);
  fill(&w.w_hh, gates * hidden_size, lstm_bound);
  fill(&w.b_ih, gates, lstm_bound);
  fill(&w.b_hh, gates, lstm_bound);
  fill(&w.head1_w, size_t(head_hidden) * w.head_input_size(),
       1.0 / std::sqrt(double(w.head_input_size())));
  fill(&w.head1_b, head_hidden, 0.1);
  fill(&w.head2_w, size_t(kHeadOutputs) * head_hidden, 1.0 / std::sqrt(double(head_hidden)));
  fill(&w.head2_b, kHeadOutputs, 0.1);
  model.version = LstmModelVersion(model);
  return model;
}

std::string LstmModelVersion(const LstmModel& model) {
  uint64_t hash = kFnv1aOffset;
  const LstmWeights& w = model.weights;
  int64_t sizes[3] = {w.input_size, w.hidden_size, w.head_hidden};
  hash = Fnv1a(hash, sizes, sizeof(sizes));
  for (const auto* v :
       {&w.w_ih, &w.w_hh, &w.b_ih, &w.b_hh, &w.head1_w, &w.head1_b, &w.head2_w, &w.head2_b}) {
    hash = HashFloats(hash, *v);
  }
  hash = Fnv1a(hash, model.norm.mean.data(), sizeof(float) * kFeatureCount);
  hash = Fnv1a(hash, model.norm.scale.data(), sizeof(float) * kFeatureCount);
  hash = Fnv1a(hash, &model.horizon_days, sizeof(double));
  hash = Fnv1a(hash, &model.min_horizon_days, sizeof(double));
  const LstmPrior& prior = model.prior;
  double params[10] = {prior.bgnbd.r,           prior.bgnbd.alpha,
                       prior.bgnbd.a,           prior.bgnbd.b,
                       prior.gamma_gamma.p,     prior.gamma_gamma.q,
                       prior.gamma_gamma.gamma, prior.browse_theta,
                       prior.browse_fade_days,  prior.browse_sessions_per_purchase};
  hash = Fnv1a(hash, params, sizeof(params));
  hash = Fnv1a(hash, prior.mean.data(), sizeof(float) * kPriorCount);
  hash = Fnv1a(hash, prior.scale.data(), sizeof(float) * kPriorCount);
  // Only portable models hash these (older ids stay the same).
  if (prior.money_unit != 1.0 || prior.from_baseline) {
    const double portable[2] = {prior.money_unit, prior.from_baseline ? 1.0 : 0.0};
    hash = Fnv1a(hash, portable, sizeof(portable));
  }
  // Only models with a vocabulary hash it (older ids stay the same).
  for (const AttrVocabEntry& entry : model.attr_vocab) {
    hash = Fnv1a(hash, &entry.pair_hash, sizeof(entry.pair_hash));
  }
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(hash));
  return std::string("lstm/") + std::string(hex, 12);
}

bool SaveLstmModel(LstmModel model, const std::string& path, std::string* error) {
  if (std::string shapes = CheckModelShapes(model); !shapes.empty()) {
    *error = "SaveLstmModel " + path + ": " + shapes;
    return false;
  }
  model.version = LstmModelVersion(model);
  nlohmann::json json;
  json["format"] = "clvstream-lstm";
  json["format_version"] = kFormatVersion;
  json["version"] = model.version;
  json["horizon_days"] = model.horizon_days;
  json["min_horizon_days"] = model.min_horizon_days;
  const LstmWeights& w = model.weights;
  json["input_size"] = w.input_size;
  json["hidden_size"] = w.hidden_size;
  json["head_hidden"] = w.head_hidden;
  json["aggregate_begin"] = kAggregateBegin;
  if (!model.attr_vocab.empty()) {
    nlohmann::json vocab = nlohmann::json::array();
    for (const AttrVocabEntry& entry : model.attr_vocab) {
      char hex[17];
      std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(entry.pair_hash));
      vocab.push_back({{"pair", entry.text}, {"hash", hex}});
    }
    json["attr_vocab"] = vocab;
  }
  json["heads"] =
      "z=[h, aggregates, prior, attr indicators]; ziln(p=sigmoid(o0+logit P_any), "
      "mu=o1+log(E[spend]/P_any), "
      "sigma=softplus(o2)+0.01) + churn=sigmoid(o3)";
  nlohmann::json features = nlohmann::json::array();
  for (int i = 0; i < kFeatureCount; ++i) {
    features.push_back(
        {{"name", FeatureName(i)}, {"mean", model.norm.mean[i]}, {"scale", model.norm.scale[i]}});
  }
  json["features"] = features;
  const LstmPrior& prior = model.prior;
  nlohmann::json prior_inputs = nlohmann::json::array();
  for (int i = 0; i < kPriorCount; ++i) {
    prior_inputs.push_back(
        {{"name", PriorName(i)}, {"mean", prior.mean[i]}, {"scale", prior.scale[i]}});
  }
  json["prior"] = {{"bgnbd",
                    {{"r", prior.bgnbd.r},
                     {"alpha", prior.bgnbd.alpha},
                     {"a", prior.bgnbd.a},
                     {"b", prior.bgnbd.b}}},
                   {"gamma_gamma",
                    {{"p", prior.gamma_gamma.p},
                     {"q", prior.gamma_gamma.q},
                     {"gamma", prior.gamma_gamma.gamma}}},
                   {"browse",
                    {{"kappa", kBrowseKappa},
                     {"theta", prior.browse_theta},
                     {"fade_days", prior.browse_fade_days},
                     {"sessions_per_purchase", prior.browse_sessions_per_purchase}}},
                   {"inputs", prior_inputs}};
  // Written only for portable models, so older files stay byte-identical.
  if (prior.money_unit != 1.0) json["prior"]["money_unit"] = prior.money_unit;
  if (prior.from_baseline) json["prior"]["source"] = "baseline";
  auto parse_object = [&](const std::string& text) {
    auto parsed = nlohmann::json::parse(text.empty() ? "{}" : text, nullptr, false);
    return parsed.is_discarded() ? nlohmann::json::object() : parsed;
  };
  json["training"] = parse_object(model.training_json);
  json["validation"] = parse_object(model.validation_json);
  json["weights"] = {{"w_ih", FloatsToJson(w.w_ih)},       {"w_hh", FloatsToJson(w.w_hh)},
                     {"b_ih", FloatsToJson(w.b_ih)},       {"b_hh", FloatsToJson(w.b_hh)},
                     {"head1_w", FloatsToJson(w.head1_w)}, {"head1_b", FloatsToJson(w.head1_b)},
                     {"head2_w", FloatsToJson(w.head2_w)}, {"head2_b", FloatsToJson(w.head2_b)}};
  std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out) {
      *error = "SaveLstmModel: cannot open " + tmp + " for writing";
      return false;
    }
    out << json.dump() << '\n';
    if (!out) {
      *error = "SaveLstmModel: write to " + tmp + " failed";
      return false;
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    *error = "SaveLstmModel: cannot rename " + tmp + " to " + path;
    return false;
  }
  return true;
}

bool LoadLstmModel(const std::string& path, LstmModel* model, std::string* error) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    *error = "LoadLstmModel: cannot open " + path;
    return false;
  }
  std::stringstream buffer;
  buffer << in.rdbuf();
  auto json = nlohmann::json::parse(buffer.str(), nullptr, false);
  if (json.is_discarded() || !json.is_object()) {
    *error = "LoadLstmModel " + path + ": not valid JSON";
    return false;
  }
  if (json.value("format", "") != "clvstream-lstm") {
    *error = "LoadLstmModel " + path + ": not a clvstream-lstm model file";
    return false;
  }
  if (int found = json.value("format_version", 0); found != kFormatVersion) {
    *error = "LoadLstmModel " + path + ": format_version " + std::to_string(found) +
             ", this build reads format_version " + std::to_string(kFormatVersion) +
             (found == 1 ? " (version 1 has no BG/NBD prior inputs in the heads): retrain it "
                           "with clv train"
                         : "");
    return false;
  }
  try {
    LstmModel loaded;
    loaded.horizon_days = json.at("horizon_days").get<double>();
    loaded.min_horizon_days = json.at("min_horizon_days").get<double>();
    const auto& prior = json.at("prior");
    const auto& bg = prior.at("bgnbd");
    loaded.prior.bgnbd = {bg.at("r").get<double>(), bg.at("alpha").get<double>(),
                          bg.at("a").get<double>(), bg.at("b").get<double>()};
    const auto& gg = prior.at("gamma_gamma");
    loaded.prior.gamma_gamma = {gg.at("p").get<double>(), gg.at("q").get<double>(),
                                gg.at("gamma").get<double>()};
    const auto& browse = prior.at("browse");
    loaded.prior.browse_theta = browse.at("theta").get<double>();
    loaded.prior.browse_fade_days = browse.at("fade_days").get<double>();
    loaded.prior.browse_sessions_per_purchase = browse.at("sessions_per_purchase").get<double>();
    if (!(loaded.prior.browse_theta >= 0) || !(loaded.prior.browse_fade_days > 0) ||
        !(loaded.prior.browse_sessions_per_purchase >= 0)) {
      *error = "LoadLstmModel " + path +
               ": prior.browse needs theta >= 0, fade_days > 0 and sessions_per_purchase >= 0";
      return false;
    }
    loaded.prior.money_unit = prior.value("money_unit", 1.0);
    if (!(loaded.prior.money_unit > 0) || !std::isfinite(loaded.prior.money_unit)) {
      *error = "LoadLstmModel " + path + ": prior.money_unit must be a positive number";
      return false;
    }
    const std::string source = prior.value("source", std::string("training"));
    if (source != "training" && source != "baseline") {
      *error = "LoadLstmModel " + path +
               ": prior.source must be \"training\" or \"baseline\" (got \"" + source + "\")";
      return false;
    }
    loaded.prior.from_baseline = source == "baseline";
    const auto& inputs = prior.at("inputs");
    if (!inputs.is_array() || inputs.size() != size_t(kPriorCount)) {
      *error = "LoadLstmModel " + path + ": prior.inputs: expected " + std::to_string(kPriorCount) +
               " entries";
      return false;
    }
    for (int i = 0; i < kPriorCount; ++i) {
      if (inputs[i].at("name").get<std::string>() != PriorName(i)) {
        *error = "LoadLstmModel " + path + ": prior.inputs[" + std::to_string(i) + "] is '" +
                 inputs[i].at("name").get<std::string>() + "', this build expects '" +
                 PriorName(i) + "'";
        return false;
      }
      loaded.prior.mean[i] = inputs[i].at("mean").get<float>();
      loaded.prior.scale[i] = inputs[i].at("scale").get<float>();
    }
    LstmWeights& w = loaded.weights;
    w.input_size = json.at("input_size").get<int>();
    w.hidden_size = json.at("hidden_size").get<int>();
    w.head_hidden = json.at("head_hidden").get<int>();
    const auto& features = json.at("features");
    if (!features.is_array() || features.size() != size_t(kFeatureCount)) {
      *error = "LoadLstmModel " + path + ": the model was trained on " +
               (features.is_array() ? std::to_string(features.size()) : std::string("no list of")) +
               " features, this build computes " + std::to_string(kFeatureCount) +
               " (docs/MODELS.md, Features); retrain it with clv train";
      return false;
    }
    for (int i = 0; i < kFeatureCount; ++i) {
      if (features[i].at("name").get<std::string>() != FeatureName(i)) {
        *error = "LoadLstmModel " + path + ": features[" + std::to_string(i) + "] is '" +
                 features[i].at("name").get<std::string>() + "', this build expects '" +
                 FeatureName(i) + "'";
        return false;
      }
      loaded.norm.mean[i] = features[i].at("mean").get<float>();
      loaded.norm.scale[i] = features[i].at("scale").get<float>();
    }
    if (json.contains("attr_vocab")) {
      const auto& vocab = json.at("attr_vocab");
      if (!vocab.is_array() || vocab.size() > size_t(kMaxAttrVocab)) {
        *error = "LoadLstmModel " + path + ": attr_vocab: expected an array of at most " +
                 std::to_string(kMaxAttrVocab) + " entries";
        return false;
      }
      for (const auto& item : vocab) {
        AttrVocabEntry entry;
        entry.text = item.at("pair").get<std::string>();
        entry.pair_hash = std::stoull(item.at("hash").get<std::string>(), nullptr, 16);
        loaded.attr_vocab.push_back(std::move(entry));
      }
    }
    w.attr_count = static_cast<int>(loaded.attr_vocab.size());
    const auto& weights = json.at("weights");
    std::string field_error;
    bool ok = JsonToFloats(weights, "w_ih", &w.w_ih, &field_error) &&
              JsonToFloats(weights, "w_hh", &w.w_hh, &field_error) &&
              JsonToFloats(weights, "b_ih", &w.b_ih, &field_error) &&
              JsonToFloats(weights, "b_hh", &w.b_hh, &field_error) &&
              JsonToFloats(weights, "head1_w", &w.head1_w, &field_error) &&
              JsonToFloats(weights, "head1_b", &w.head1_b, &field_error) &&
              JsonToFloats(weights, "head2_w", &w.head2_w, &field_error) &&
              JsonToFloats(weights, "head2_b", &w.head2_b, &field_error);
    if (!ok) {
      *error = "LoadLstmModel " + path + ": " + field_error;
      return false;
    }
    if (std::string shapes = w.CheckShapes(); !shapes.empty()) {
      *error = "LoadLstmModel " + path + ": " + shapes;
      return false;
    }
    if (json.contains("training")) loaded.training_json = json["training"].dump();
    if (json.contains("validation")) loaded.validation_json = json["validation"].dump();
    loaded.version = LstmModelVersion(loaded);
    if (json.value("version", "") != loaded.version) {
      *error = "LoadLstmModel " + path + ": version " + json.value("version", "") +
               " does not match the weights (" + loaded.version + "): file edited or corrupt";
      return false;
    }
    *model = std::move(loaded);
    return true;
  } catch (const std::exception& e) {  // json errors, std::stoull on a bad hash
    *error = "LoadLstmModel " + path + ": " + e.what();
    return false;
  }
}

std::string DefaultLstmModelPath() { return std::string(CLV_MODELS_DEFAULT_DIR) + "/lstm.json"; }

bool CudaAvailable() { return torch::cuda::is_available(); }

std::unique_ptr<Scorer> MakeLstmScorer(const LstmModel& model, const LstmScorerOptions& options,
                                       std::string* error) {
  if (std::string shapes = CheckModelShapes(model); !shapes.empty()) {
    *error = "lstm model " + model.version + ": " + shapes;
    return nullptr;
  }
  torch::Device device(torch::kCPU);
  if (!ResolveDevice(options.device, &device, error)) return nullptr;
  if (options.threads > 0) at::set_num_threads(options.threads);
  try {
    return std::make_unique<LstmScorer>(model, options, device);
  } catch (const std::exception& e) {
    *error = std::string("lstm scorer on ") + options.device + ": " + e.what();
    return nullptr;
  }
}

std::unique_ptr<Scorer> LoadLstmScorer(const config::ModelOptions& options, std::string* error) {
  std::string path = options.path.empty() ? DefaultLstmModelPath() : options.path;
  LstmModel model;
  if (!LoadLstmModel(path, &model, error)) return nullptr;
  if (model.prior.from_baseline) {
    const std::string baseline_path =
        options.baseline_path.empty() ? DefaultBaselineModelPath() : options.baseline_path;
    BaselineModel baseline;
    std::string load_error;
    if (!LoadBaselineModel(baseline_path, &baseline, &load_error)) {
      *error = "model.baseline_path (the prior of the portable LSTM " + path + "): " + load_error;
      return nullptr;
    }
    UseBaselinePrior(&model, baseline.bgnbd, baseline.gamma_gamma);
  }
  LstmScorerOptions scorer_options;
  scorer_options.device = options.device;
  scorer_options.horizon_days = options.horizon_days;
  return MakeLstmScorer(model, scorer_options, error);
}

}  // namespace clv::models
