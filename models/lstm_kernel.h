// Deterministic CPU kernel of the LSTM scorer (internal to models/; no torch).
//
// Contract: every result for a row (new h and c, head values, gradient x
// input) depends ONLY on that row's inputs, bit for bit, whatever the batch
// size and the row's position in it. The kernel works on tiles of kTileRows
// rows; a short tile is padded with zero rows, so every row runs the same
// instruction sequence: matrix products accumulate over k in a fixed order
// (bias first, then one fused multiply-add per k), activations use one
// polynomial exp, head transforms run per row in double. After a crash the
// service may replay a user's events in different micro-batches; (user, seq)
// still names byte-identical state and score.
//
// The code is compiled for AVX-512, AVX2+FMA and baseline x86-64 and picked at
// run time from the CPU (results are identical between the AVX-512 and AVX2
// versions; the baseline version has no FMA and may differ in the last bit,
// so mix machines of different ISA levels only where that is acceptable).
//
// Thread-safety: Step()/Heads() use per-object scratch: one thread at a time.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/lstm.h"

namespace clv::models {

class LstmCpuKernel {
 public:
  static constexpr int kTileRows = 8;
  // Head values per row: p_purchase, mu, sigma, churn_risk.
  static constexpr int kHeadValues = 4;

  explicit LstmCpuKernel(const LstmWeights& weights);
  ~LstmCpuKernel();
  LstmCpuKernel(const LstmCpuKernel&) = delete;
  LstmCpuKernel& operator=(const LstmCpuKernel&) = delete;

  int hidden() const { return hidden_; }
  // "avx512", "avx2" or "generic": the code path this CPU runs.
  const char* isa() const;

  // One tile of `rows` (1..kTileRows) users, row-major:
  //   x      rows x kFeatureCount standardized step features (read);
  //   prior  rows x (kPriorCount + weights.attr_count): standardized prior
  //          inputs, then the 0/1 attribute indicators (read);
  //   offsets rows x kPriorOffsetCount, added to raw head outputs 0 and 1 (read);
  //   state  rows x 2*hidden (h then c): read, then overwritten by the new state;
  //   heads  rows x kHeadValues (written);
  //   contributions (nullable) rows x kFeatureCount: d clv / d x * x (written).
  void Step(int rows, const float* x, const float* prior, const float* offsets, float* state,
            float* heads, float* contributions);
  // Heads only (Rescore): h rows x hidden, aggregates rows x kAggregateCount,
  // prior and offsets as in Step.
  void Heads(int rows, const float* h, const float* aggregates, const float* prior,
             const float* offsets, float* heads);

  struct Packed;  // padded, transposed weights + scratch (lstm_kernel.cpp)

 private:
  int hidden_ = 0;
  int isa_ = 0;
  std::unique_ptr<Packed> packed_;
};

// The same step through the torch network (LstmNet, lstm_net.h) on the CPU,
// for tests that check the two implementations agree: any number of rows,
// arguments as in LstmCpuKernel::Step (no contributions). Defined in
// lstm_net.cpp.
void LstmNetStepOnCpu(const LstmWeights& weights, int rows, const float* x, const float* prior,
                      const float* offsets, float* state, float* heads);

}  // namespace clv::models
