// Deterministic CPU kernel of the LSTM scorer. See lstm_kernel.h.
//
// Layout: all matrix products are "row times matrix" with the matrix stored
// so that a row of it is contiguous over the outputs (c[r][j] += a[r][k] *
// b[k][j]); a block of kGroup rows x 16*kBlock outputs stays in registers
// while k runs 0..K-1 in order. Output widths are padded to 16 floats with
// zero weights. Padded hidden units stay exactly 0 (zero weights, zero bias,
// zero state) and are never written out.
#include "models/lstm_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

namespace clv::models {

namespace {

#define CLV_INLINE inline __attribute__((always_inline))

typedef float V16 __attribute__((vector_size(64)));
typedef int32_t I16 __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));
typedef int32_t I8 __attribute__((vector_size(32)));
typedef float V4 __attribute__((vector_size(16)));
typedef int32_t I4 __attribute__((vector_size(16)));
// Matching integer vector; lanes per vector.
template <typename V>
struct VecInt;
template <>
struct VecInt<V16> {
  using type = I16;
};
template <>
struct VecInt<V8> {
  using type = I8;
};
template <>
struct VecInt<V4> {
  using type = I4;
};
template <typename V>
constexpr int kVl = int(sizeof(V) / sizeof(float));

constexpr int kLanes = 16;
constexpr int kTile = LstmCpuKernel::kTileRows;

int Pad16(int n) { return (n + kLanes - 1) / kLanes * kLanes; }

#define CLV_LOAD(v, p) std::memcpy(&(v), (p), sizeof(v))
#define CLV_STORE(p, v) std::memcpy((p), &(v), sizeof(v))

enum Isa { kGeneric = 0, kAvx2 = 1, kAvx512 = 2 };

}  // namespace

struct LstmCpuKernel::Packed {
  int h = 0, hp = 0;          // hidden, padded to 16
  int hh = 0, hhp = 0;        // head hidden, padded
  int k0 = 0, n0 = 0;         // gates: K = F + H, N = 4 * hp
  int pw = 0;                 // prior row width: kPriorCount + attribute indicators
  int k1 = 0, k1p = 0;        // head input H + A + pw, padded
  int fp = 0;                 // features padded
  std::vector<float> wg, bg;  // [k0][n0], [n0]
  std::vector<float> w1, b1;  // [k1][hhp], [hhp]
  std::vector<float> w2, b2;  // [hh][16], [16]
  std::vector<float> w2r;     // [4][hhp]   (backward)
  std::vector<float> w1r;     // [hh][k1p]  (backward)
  std::vector<float> wx;      // [n0][fp]   (backward)
  // Scratch, kTile rows each.
  std::vector<float> u, gates, cprev, c1, tc, h1, z, pre1, hid, out, dout, dhid, dz, dh, dg, dx;
};

namespace {

using Packed = LstmCpuKernel::Packed;

// c[r][0:kVl*kBlock] = bias (or 0) + sum_k a[r][k] * b[k][...], r < kGroup.
template <typename V, int kGroup, int kBlock>
CLV_INLINE void GemmBlock(const float* a, int lda, int kk, const float* b, int ldb,
                          const float* bias, float* c, int ldc) {
  // Fully unrolled so that the accumulators live in registers.
  V acc[kGroup][kBlock];
#pragma GCC unroll 8
  for (int q = 0; q < kBlock; ++q) {
    V init = {};
    if (bias != nullptr) CLV_LOAD(init, bias + kVl<V> * q);
#pragma GCC unroll 8
    for (int r = 0; r < kGroup; ++r) acc[r][q] = init;
  }
  for (int k = 0; k < kk; ++k) {
    V w[kBlock];
#pragma GCC unroll 8
    for (int q = 0; q < kBlock; ++q) CLV_LOAD(w[q], b + size_t(k) * ldb + kVl<V> * q);
#pragma GCC unroll 8
    for (int r = 0; r < kGroup; ++r) {
      const float s = a[r * lda + k];
#pragma GCC unroll 8
      for (int q = 0; q < kBlock; ++q) acc[r][q] += s * w[q];
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < kGroup; ++r) {
#pragma GCC unroll 8
    for (int q = 0; q < kBlock; ++q) CLV_STORE(c + r * ldc + kVl<V> * q, acc[r][q]);
  }
}

// c[r][0:n] for all kTile rows; n % 16 == 0.
template <typename V, int kGroup, int kBlock>
CLV_INLINE void Gemm(const float* a, int lda, int kk, const float* b, int n, const float* bias,
                     float* c, int ldc) {
  for (int r0 = 0; r0 < kTile; r0 += kGroup) {
    int j = 0;
    for (; j + kVl<V> * kBlock <= n; j += kVl<V> * kBlock) {
      GemmBlock<V, kGroup, kBlock>(a + r0 * lda, lda, kk, b + j, n, bias ? bias + j : nullptr,
                                   c + r0 * ldc + j, ldc);
    }
    for (; j < n; j += kVl<V>) {
      GemmBlock<V, kGroup, 1>(a + r0 * lda, lda, kk, b + j, n, bias ? bias + j : nullptr,
                              c + r0 * ldc + j, ldc);
    }
  }
}

// exp, Cephes-style: x = n ln2 + r, degree-6 polynomial, scale by 2^n.
template <typename V>
CLV_INLINE void ExpV(V* v) {
  using I = typename VecInt<V>::type;
  const V zero = {};
  V x = *v;
  const V hi = zero + 88.3f, lo = zero - 87.3f;
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  V t = x * 1.44269504088896341f;
  V fx = (t + 12582912.0f) - 12582912.0f;  // round to nearest integer
  V r = x - fx * 0.693359375f;
  r = r - fx * -2.12194440e-4f;
  V p = zero + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  V y = p * (r * r) + r + 1.0f;
  I n = __builtin_convertvector(fx, I);
  I bits = (n + 127) << 23;
  V scale;
  std::memcpy(&scale, &bits, sizeof(V));
  *v = y * scale;
}

template <typename V>
CLV_INLINE void SigmoidV(V* v) {
  V t = -*v;
  ExpV(&t);
  *v = 1.0f / (1.0f + t);
}

template <typename V>
CLV_INLINE void TanhV(V* v) {
  V t = *v * -2.0f;
  ExpV(&t);
  *v = 2.0f / (1.0f + t) - 1.0f;
}

double Sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

// Head transforms of one row (scalar, double): raw outputs -> p, mu, sigma,
// churn; with `dout`, d clv / d raw outputs.
void HeadRow(const float* raw, float* heads, float* dout) {
  const double p = Sigmoid(raw[0]);
  const double mu = raw[1];
  const double softplus = raw[2] > 20.0f ? double(raw[2]) : std::log1p(std::exp(double(raw[2])));
  const double sigma = softplus + 0.01;
  heads[0] = static_cast<float>(p);
  heads[1] = static_cast<float>(mu);
  heads[2] = static_cast<float>(sigma);
  heads[3] = static_cast<float>(Sigmoid(raw[3]));
  if (dout == nullptr) return;
  const double exponent = mu + 0.5 * sigma * sigma;
  const bool clamped = exponent > 20.0;
  const double e = std::exp(std::min(20.0, exponent));
  dout[0] = static_cast<float>(e * p * (1.0 - p));
  dout[1] = clamped ? 0.0f : static_cast<float>(p * e);
  dout[2] = clamped ? 0.0f : static_cast<float>(p * e * sigma * Sigmoid(raw[2]));
  dout[3] = 0.0f;
}

// Heads from p.z (kTile rows of k1 floats); backward when dout_wanted.
template <typename V, int kGroup, int kBlock>
CLV_INLINE void HeadsBody(Packed& p, int rows, const float* offsets, float* heads,
                          bool dout_wanted) {
  Gemm<V, kGroup, kBlock>(p.z.data(), p.k1, p.k1, p.w1.data(), p.hhp, p.b1.data(), p.pre1.data(),
                          p.hhp);
  for (int i = 0; i < kTile * p.hhp; ++i) p.hid[i] = p.pre1[i] > 0.0f ? p.pre1[i] : 0.0f;
  Gemm<V, kGroup, 1>(p.hid.data(), p.hhp, p.hh, p.w2.data(), kLanes, p.b2.data(), p.out.data(),
                     kLanes);
  std::fill(p.dout.begin(), p.dout.end(), 0.0f);
  for (int r = 0; r < rows; ++r) {
    for (int o = 0; o < kPriorOffsetCount; ++o) {
      p.out[r * kLanes + o] += offsets[r * kPriorOffsetCount + o];
    }
    HeadRow(&p.out[r * kLanes], heads + r * LstmCpuKernel::kHeadValues,
            dout_wanted ? &p.dout[r * kLanes] : nullptr);
  }
}

template <typename V, int kGroup, int kBlock>
CLV_INLINE void StepBody(Packed& p, int rows, const float* x, const float* prior,
                         const float* offsets, float* state, float* heads, float* contributions) {
  const int f = kFeatureCount, h = p.h, hp = p.hp, n0 = p.n0;
  // u = [x, h] and the previous c; rows past `rows` are zero.
  std::fill(p.u.begin(), p.u.end(), 0.0f);
  std::fill(p.cprev.begin(), p.cprev.end(), 0.0f);
  for (int r = 0; r < rows; ++r) {
    std::memcpy(&p.u[r * p.k0], x + r * f, sizeof(float) * f);
    std::memcpy(&p.u[r * p.k0 + f], state + r * 2 * h, sizeof(float) * h);
    std::memcpy(&p.cprev[r * hp], state + r * 2 * h + h, sizeof(float) * h);
  }
  Gemm<V, kGroup, kBlock>(p.u.data(), p.k0, p.k0, p.wg.data(), n0, p.bg.data(), p.gates.data(), n0);
  for (int r = 0; r < kTile; ++r) {
    float* g_row = &p.gates[r * n0];
    for (int j = 0; j < hp; j += kVl<V>) {
      V gi, gf, gg, go, cp;
      CLV_LOAD(gi, g_row + j);
      CLV_LOAD(gf, g_row + hp + j);
      CLV_LOAD(gg, g_row + 2 * hp + j);
      CLV_LOAD(go, g_row + 3 * hp + j);
      CLV_LOAD(cp, &p.cprev[r * hp + j]);
      SigmoidV(&gi);
      SigmoidV(&gf);
      TanhV(&gg);
      SigmoidV(&go);
      V c1 = gf * cp + gi * gg;
      V tc = c1;
      TanhV(&tc);
      V h1 = go * tc;
      CLV_STORE(g_row + j, gi);
      CLV_STORE(g_row + hp + j, gf);
      CLV_STORE(g_row + 2 * hp + j, gg);
      CLV_STORE(g_row + 3 * hp + j, go);
      CLV_STORE(&p.c1[r * hp + j], c1);
      CLV_STORE(&p.tc[r * hp + j], tc);
      CLV_STORE(&p.h1[r * hp + j], h1);
    }
    std::memcpy(&p.z[r * p.k1], &p.h1[r * hp], sizeof(float) * h);
    std::memcpy(&p.z[r * p.k1 + h], &p.u[r * p.k0 + kAggregateBegin],
                sizeof(float) * kAggregateCount);
    if (r < rows) {
      std::memcpy(&p.z[r * p.k1 + h + kAggregateCount], prior + r * p.pw, sizeof(float) * p.pw);
    } else {
      std::fill_n(&p.z[r * p.k1 + h + kAggregateCount], p.pw, 0.0f);
    }
  }
  for (int r = 0; r < rows; ++r) {
    std::memcpy(state + r * 2 * h, &p.h1[r * hp], sizeof(float) * h);
    std::memcpy(state + r * 2 * h + h, &p.c1[r * hp], sizeof(float) * h);
  }
  HeadsBody<V, kGroup, kBlock>(p, rows, offsets, heads, contributions != nullptr);
  if (contributions == nullptr) return;

  // Backward of clv to the standardized x (gradient x input).
  Gemm<V, kGroup, 1>(p.dout.data(), kLanes, LstmCpuKernel::kHeadValues, p.w2r.data(), p.hhp,
                     nullptr, p.dhid.data(), p.hhp);
  for (int i = 0; i < kTile * p.hhp; ++i) p.dhid[i] = p.pre1[i] > 0.0f ? p.dhid[i] : 0.0f;
  Gemm<V, kGroup, kBlock>(p.dhid.data(), p.hhp, p.hh, p.w1r.data(), p.k1p, nullptr, p.dz.data(),
                          p.k1p);
  std::fill(p.dh.begin(), p.dh.end(), 0.0f);
  for (int r = 0; r < kTile; ++r) std::memcpy(&p.dh[r * hp], &p.dz[r * p.k1p], sizeof(float) * h);
  for (int r = 0; r < kTile; ++r) {
    const float* g_row = &p.gates[r * n0];
    float* dg_row = &p.dg[r * n0];
    for (int j = 0; j < hp; j += kVl<V>) {
      V gi, gf, gg, go, cp, tc, dh;
      CLV_LOAD(gi, g_row + j);
      CLV_LOAD(gf, g_row + hp + j);
      CLV_LOAD(gg, g_row + 2 * hp + j);
      CLV_LOAD(go, g_row + 3 * hp + j);
      CLV_LOAD(cp, &p.cprev[r * hp + j]);
      CLV_LOAD(tc, &p.tc[r * hp + j]);
      CLV_LOAD(dh, &p.dh[r * hp + j]);
      V dc = dh * go * (1.0f - tc * tc);
      V di = dc * gg * gi * (1.0f - gi);
      V df = dc * cp * gf * (1.0f - gf);
      V dgg = dc * gi * (1.0f - gg * gg);
      V dout = dh * tc * go * (1.0f - go);
      CLV_STORE(dg_row + j, di);
      CLV_STORE(dg_row + hp + j, df);
      CLV_STORE(dg_row + 2 * hp + j, dgg);
      CLV_STORE(dg_row + 3 * hp + j, dout);
    }
  }
  Gemm<V, kGroup, 1>(p.dg.data(), n0, n0, p.wx.data(), p.fp, nullptr, p.dx.data(), p.fp);
  for (int r = 0; r < rows; ++r) {
    for (int k = 0; k < f; ++k) {
      float grad = p.dx[r * p.fp + k];
      if (k >= kAggregateBegin) grad += p.dz[r * p.k1p + h + (k - kAggregateBegin)];
      contributions[r * f + k] = grad * x[r * f + k];
    }
  }
}

template <typename V, int kGroup, int kBlock>
CLV_INLINE void RescoreBody(Packed& p, int rows, const float* h, const float* aggregates,
                            const float* prior, const float* offsets, float* heads) {
  std::fill(p.z.begin(), p.z.end(), 0.0f);
  for (int r = 0; r < rows; ++r) {
    std::memcpy(&p.z[r * p.k1], h + r * p.h, sizeof(float) * p.h);
    std::memcpy(&p.z[r * p.k1 + p.h], aggregates + r * kAggregateCount,
                sizeof(float) * kAggregateCount);
    std::memcpy(&p.z[r * p.k1 + p.h + kAggregateCount], prior + r * p.pw, sizeof(float) * p.pw);
  }
  HeadsBody<V, kGroup, kBlock>(p, rows, offsets, heads, false);
}

#if defined(__x86_64__)
#define CLV_TARGET_AVX512 __attribute__((target("avx512f,avx512dq,avx512vl,avx2,fma")))
#define CLV_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define CLV_TARGET_AVX512
#define CLV_TARGET_AVX2
#endif

CLV_TARGET_AVX512 void StepAvx512(Packed& p, int rows, const float* x, const float* pr,
                                  const float* off, float* s, float* hd, float* c) {
  StepBody<V16, 8, 2>(p, rows, x, pr, off, s, hd, c);
}
CLV_TARGET_AVX2 void StepAvx2(Packed& p, int rows, const float* x, const float* pr,
                              const float* off, float* s, float* hd, float* c) {
  StepBody<V8, 4, 2>(p, rows, x, pr, off, s, hd, c);
}
void StepGeneric(Packed& p, int rows, const float* x, const float* pr, const float* off, float* s,
                 float* hd, float* c) {
  StepBody<V4, 4, 2>(p, rows, x, pr, off, s, hd, c);
}
CLV_TARGET_AVX512 void RescoreAvx512(Packed& p, int rows, const float* h, const float* a,
                                     const float* pr, const float* off, float* hd) {
  RescoreBody<V16, 8, 2>(p, rows, h, a, pr, off, hd);
}
CLV_TARGET_AVX2 void RescoreAvx2(Packed& p, int rows, const float* h, const float* a,
                                 const float* pr, const float* off, float* hd) {
  RescoreBody<V8, 4, 2>(p, rows, h, a, pr, off, hd);
}
void RescoreGeneric(Packed& p, int rows, const float* h, const float* a, const float* pr,
                    const float* off, float* hd) {
  RescoreBody<V4, 4, 2>(p, rows, h, a, pr, off, hd);
}

int DetectIsa() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma")) {
    return kAvx512;
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return kAvx2;
#endif
  return kGeneric;
}

}  // namespace

LstmCpuKernel::LstmCpuKernel(const LstmWeights& w)
    : hidden_(w.hidden_size), isa_(DetectIsa()), packed_(std::make_unique<Packed>()) {
  if (const char* forced = std::getenv("CLV_LSTM_KERNEL"); forced != nullptr) {
    // Testing/benchmark hook: run a lower ISA level than the CPU offers.
    std::string name = forced;
    if (name == "generic") isa_ = kGeneric;
    if (name == "avx2" && isa_ >= kAvx2) isa_ = kAvx2;
  }
  Packed& p = *packed_;
  const int f = kFeatureCount, a = kAggregateCount, h = w.hidden_size;
  p.h = h;
  p.hp = Pad16(h);
  p.hh = w.head_hidden;
  p.hhp = Pad16(w.head_hidden);
  p.k0 = f + h;
  p.n0 = 4 * p.hp;
  p.pw = kPriorCount + w.attr_count;
  p.k1 = h + a + p.pw;
  p.k1p = Pad16(p.k1);
  p.fp = Pad16(f);
  p.wg.assign(size_t(p.k0) * p.n0, 0.0f);
  p.bg.assign(p.n0, 0.0f);
  for (int gate = 0; gate < 4; ++gate) {
    for (int j = 0; j < h; ++j) {
      const int row = gate * h + j, col = gate * p.hp + j;
      for (int k = 0; k < f; ++k) p.wg[size_t(k) * p.n0 + col] = w.w_ih[size_t(row) * f + k];
      for (int k = 0; k < h; ++k) p.wg[size_t(f + k) * p.n0 + col] = w.w_hh[size_t(row) * h + k];
      p.bg[col] = w.b_ih[row] + w.b_hh[row];
    }
  }
  p.w1.assign(size_t(p.k1) * p.hhp, 0.0f);
  p.b1.assign(p.hhp, 0.0f);
  p.w1r.assign(size_t(p.hh) * p.k1p, 0.0f);
  for (int j = 0; j < p.hh; ++j) {
    for (int k = 0; k < p.k1; ++k) {
      p.w1[size_t(k) * p.hhp + j] = w.head1_w[size_t(j) * p.k1 + k];
      p.w1r[size_t(j) * p.k1p + k] = w.head1_w[size_t(j) * p.k1 + k];
    }
    p.b1[j] = w.head1_b[j];
  }
  p.w2.assign(size_t(p.hh) * kLanes, 0.0f);
  p.b2.assign(kLanes, 0.0f);
  p.w2r.assign(size_t(kHeadValues) * p.hhp, 0.0f);
  for (int o = 0; o < kHeadValues; ++o) {
    for (int j = 0; j < p.hh; ++j) {
      p.w2[size_t(j) * kLanes + o] = w.head2_w[size_t(o) * p.hh + j];
      p.w2r[size_t(o) * p.hhp + j] = w.head2_w[size_t(o) * p.hh + j];
    }
    p.b2[o] = w.head2_b[o];
  }
  p.wx.assign(size_t(p.n0) * p.fp, 0.0f);
  for (int gate = 0; gate < 4; ++gate) {
    for (int j = 0; j < h; ++j) {
      for (int k = 0; k < f; ++k) {
        p.wx[size_t(gate * p.hp + j) * p.fp + k] = w.w_ih[size_t(gate * h + j) * f + k];
      }
    }
  }
  auto rows = [](std::vector<float>* v, int width) { v->assign(size_t(kTile) * width, 0.0f); };
  rows(&p.u, p.k0);
  rows(&p.gates, p.n0);
  rows(&p.cprev, p.hp);
  rows(&p.c1, p.hp);
  rows(&p.tc, p.hp);
  rows(&p.h1, p.hp);
  rows(&p.z, p.k1);
  rows(&p.pre1, p.hhp);
  rows(&p.hid, p.hhp);
  rows(&p.out, kLanes);
  rows(&p.dout, kLanes);
  rows(&p.dhid, p.hhp);
  rows(&p.dz, p.k1p);
  rows(&p.dh, p.hp);
  rows(&p.dg, p.n0);
  rows(&p.dx, p.fp);
}

LstmCpuKernel::~LstmCpuKernel() = default;

const char* LstmCpuKernel::isa() const {
  return isa_ == kAvx512 ? "avx512" : isa_ == kAvx2 ? "avx2" : "generic";
}

void LstmCpuKernel::Step(int rows, const float* x, const float* prior, const float* offsets,
                         float* state, float* heads, float* contributions) {
  switch (isa_) {
    case kAvx512: StepAvx512(*packed_, rows, x, prior, offsets, state, heads, contributions); break;
    case kAvx2: StepAvx2(*packed_, rows, x, prior, offsets, state, heads, contributions); break;
    default: StepGeneric(*packed_, rows, x, prior, offsets, state, heads, contributions); break;
  }
}

void LstmCpuKernel::Heads(int rows, const float* h, const float* aggregates, const float* prior,
                          const float* offsets, float* heads) {
  switch (isa_) {
    case kAvx512: RescoreAvx512(*packed_, rows, h, aggregates, prior, offsets, heads); break;
    case kAvx2: RescoreAvx2(*packed_, rows, h, aggregates, prior, offsets, heads); break;
    default: RescoreGeneric(*packed_, rows, h, aggregates, prior, offsets, heads); break;
  }
}

}  // namespace clv::models
