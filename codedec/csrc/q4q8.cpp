// Block-quantized products for decode rows on AVX2 CPUs: Q4_1 and Q8_0 weights against
// activations rounded to 8 bits per block of 32 (codedec/q8kernel.py builds and calls this; its
// torch twin there states the arithmetic). Built with -mavx2 -mfma -mf16c.
//
// Weights, row by row, blocks of 32 along K:
//   Q4_1: 20 bytes {fp16 d, fp16 m, 16 bytes: byte j = q[j] | q[j + 16] << 4}, w = d * q + m, q 0..15
//   Q8_0: 34 bytes {fp16 d, 32 x int8 q}, w = d * q
// Activations x [R, K] fp32 -> per row and block: int8 q (round(x / s), s = max|x| / 127), s, and
// s * sum(q) (Q4_1's offset term). Each output y[r, n] depends on row r of x only, computed by
// the same sequence of operations for any R (tiles of rows share the unpacked weights, never a
// sum): a row alone and the same row among others give bit-equal results.
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

namespace {

constexpr int64_t QK = 32;
constexpr int64_t TILE = 4;  // rows sharing one unpacking of a weight block

struct Q8Rows {  // activations of R rows, quantized per block
  torch::Tensor q, s, sum;  // [R, K] int8, [R, B] fp32, [R, B] fp32 (s * sum of q)
};

Q8Rows quantize_rows(const torch::Tensor& x) {
  const int64_t R = x.size(0), K = x.size(1), B = K / QK;
  Q8Rows out{torch::empty({R, K}, torch::kInt8), torch::empty({R, B}, torch::kFloat),
             torch::empty({R, B}, torch::kFloat)};
  const float* X = x.data_ptr<float>();
  int8_t* Q = out.q.data_ptr<int8_t>();
  float *S = out.s.data_ptr<float>(), *U = out.sum.data_ptr<float>();
  for (int64_t i = 0; i < R * B; ++i) {
    const float* xb = X + i * QK;
    float amax = 0.f;
    for (int j = 0; j < QK; ++j) amax = std::max(amax, std::fabs(xb[j]));
    const float s = amax / 127.f, inv = s > 0.f ? 1.f / s : 0.f;
    int sum = 0;
    for (int j = 0; j < QK; ++j) {
      const int q = static_cast<int>(std::nearbyint(xb[j] * inv));  // round half to even
      Q[i * QK + j] = static_cast<int8_t>(q);
      sum += q;
    }
    S[i] = s;
    U[i] = s * static_cast<float>(sum);
  }
  return out;
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline float half_to_float(uint16_t h) { return _cvtsh_ss(h); }

// 8 partial int32 sums of u8 (0..15) x s8 products, as floats
inline __m256 dot_u4(__m256i w, const int8_t* x) {
  const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x));
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(w, xv), _mm256_set1_epi16(1)));
}

// 8 partial int32 sums of s8 x s8 products (|w| unsigned, the sign moved onto x), as floats
inline __m256 dot_s8(__m256i w_abs, __m256i w, const int8_t* x) {
  const __m256i xv = _mm256_sign_epi8(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(x)), w);
  return _mm256_cvtepi32_ps(_mm256_madd_epi16(_mm256_maddubs_epi16(w_abs, xv), _mm256_set1_epi16(1)));
}

// Rows r0 .. r0 + RT - 1 of y[:, n] for one weight row of Q4_1 blocks. RT is a compile-time
// constant so the accumulators live in registers; each row's operations are the same for every RT.
template <int RT>
inline void q4_1_rows(const uint8_t* row, int64_t B, int64_t K, const int8_t* XQ, const float* XS,
                      const float* XU, int64_t r0, float* out, int64_t stride) {
  const __m128i low = _mm_set1_epi8(0x0F);
  __m256 acc0[RT], acc1[RT];
  float off0[RT], off1[RT];
  for (int t = 0; t < RT; ++t) {
    acc0[t] = acc1[t] = _mm256_setzero_ps();
    off0[t] = off1[t] = 0.f;
  }
  for (int64_t b = 0; b < B; ++b) {
    const uint8_t* blk = row + b * 20;
    uint16_t dh, mh;
    std::memcpy(&dh, blk, 2);
    std::memcpy(&mh, blk + 2, 2);
    const float d = half_to_float(dh), m = half_to_float(mh);
    const __m128i p = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 4));
    const __m256i wv = _mm256_set_m128i(_mm_and_si128(_mm_srli_epi16(p, 4), low), _mm_and_si128(p, low));
    for (int t = 0; t < RT; ++t) {
      const int64_t r = r0 + t;
      const __m256 prod = dot_u4(wv, XQ + r * K + b * QK);
      const __m256 scale = _mm256_set1_ps(d * XS[r * B + b]);
      const float o = m * XU[r * B + b];
      if (b & 1) {  // two accumulators per row: consecutive blocks do not wait on each other
        acc1[t] = _mm256_fmadd_ps(prod, scale, acc1[t]);
        off1[t] += o;
      } else {
        acc0[t] = _mm256_fmadd_ps(prod, scale, acc0[t]);
        off0[t] += o;
      }
    }
  }
  for (int t = 0; t < RT; ++t) out[t * stride] = hsum(_mm256_add_ps(acc0[t], acc1[t])) + (off0[t] + off1[t]);
}

template <int RT>
inline void q8_0_rows(const uint8_t* row, int64_t B, int64_t K, const int8_t* XQ, const float* XS, int64_t r0,
                      float* out, int64_t stride) {
  __m256 acc0[RT], acc1[RT];
  for (int t = 0; t < RT; ++t) acc0[t] = acc1[t] = _mm256_setzero_ps();
  for (int64_t b = 0; b < B; ++b) {
    const uint8_t* blk = row + b * 34;
    uint16_t dh;
    std::memcpy(&dh, blk, 2);
    const float d = half_to_float(dh);
    const __m256i wv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 2));
    const __m256i wa = _mm256_sign_epi8(wv, wv);
    for (int t = 0; t < RT; ++t) {
      const int64_t r = r0 + t;
      const __m256 prod = dot_s8(wa, wv, XQ + r * K + b * QK);
      const __m256 scale = _mm256_set1_ps(d * XS[r * B + b]);
      if (b & 1)
        acc1[t] = _mm256_fmadd_ps(prod, scale, acc1[t]);
      else
        acc0[t] = _mm256_fmadd_ps(prod, scale, acc0[t]);
    }
  }
  for (int t = 0; t < RT; ++t) out[t * stride] = hsum(_mm256_add_ps(acc0[t], acc1[t]));
}

// y [R, N]: rows(rt, n, r0, out) fills y[r0 .. r0 + rt - 1, n] (rt a std::integral_constant
// 1..TILE, so each tile size is its own instantiation), output rows n split over torch's threads
template <typename Rows>
void product(int64_t R, int64_t n_out, int64_t grain, float* Y, Rows rows) {
  at::parallel_for(0, n_out, grain, [&](int64_t n0, int64_t n1) {
    for (int64_t n = n0; n < n1; ++n)
      for (int64_t r0 = 0; r0 < R; r0 += TILE) {
        float* out = Y + r0 * n_out + n;
        switch (std::min(TILE, R - r0)) {
          case 1: rows(std::integral_constant<int, 1>{}, n, r0, out); break;
          case 2: rows(std::integral_constant<int, 2>{}, n, r0, out); break;
          case 3: rows(std::integral_constant<int, 3>{}, n, r0, out); break;
          default: rows(std::integral_constant<int, 4>{}, n, r0, out); break;
        }
      }
  });
}

// What both products check and compute first: x [R, K] fp32 contiguous, K a multiple of 32, w
// `block_bytes` per block of every one of n_out rows; x rounded to 8 bits, y allocated
struct Call {
  int64_t R, K, B;
  Q8Rows a;
  torch::Tensor y;
};

Call begin_call(const torch::Tensor& x, const torch::Tensor& w, int64_t n_out, int64_t block_bytes,
                const char* what) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat && x.is_contiguous(), "x: contiguous fp32 [R, K]");
  const int64_t R = x.size(0), K = x.size(1), B = K / QK;
  TORCH_CHECK(K % QK == 0, "K must be a multiple of 32");
  TORCH_CHECK(w.scalar_type() == torch::kUInt8 && w.is_contiguous() && w.numel() == n_out * B * block_bytes,
              "w: ", what, " blocks [N, K/32 * ", block_bytes, "] uint8");
  return Call{R, K, B, quantize_rows(x), torch::empty({R, n_out}, torch::kFloat)};
}

torch::Tensor q4_1_mm(torch::Tensor x, torch::Tensor w, int64_t n_out) {
  const Call c = begin_call(x, w, n_out, 20, "Q4_1");
  const int64_t K = c.K, B = c.B, bytes = B * 20;
  const uint8_t* W = w.data_ptr<uint8_t>();
  const int8_t* XQ = c.a.q.data_ptr<int8_t>();
  const float *XS = c.a.s.data_ptr<float>(), *XU = c.a.sum.data_ptr<float>();
  product(c.R, n_out, 16, c.y.data_ptr<float>(), [&](auto rt, int64_t n, int64_t r0, float* out) {
    q4_1_rows<decltype(rt)::value>(W + n * bytes, B, K, XQ, XS, XU, r0, out, n_out);
  });
  return c.y;
}

torch::Tensor q8_0_mm(torch::Tensor x, torch::Tensor w, int64_t n_out) {
  const Call c = begin_call(x, w, n_out, 34, "Q8_0");
  const int64_t K = c.K, B = c.B, bytes = B * 34;
  const uint8_t* W = w.data_ptr<uint8_t>();
  const int8_t* XQ = c.a.q.data_ptr<int8_t>();
  const float* XS = c.a.s.data_ptr<float>();
  product(c.R, n_out, 64, c.y.data_ptr<float>(), [&](auto rt, int64_t n, int64_t r0, float* out) {
    q8_0_rows<decltype(rt)::value>(W + n * bytes, B, K, XQ, XS, r0, out, n_out);
  });
  return c.y;
}

// ---- one decoder layer's decode rows around attention (Llama: RMSNorm, joint q|k|v, RoPE; then
// o, residual, RMSNorm, joint gate|up, SiLU, down, residual), every row on its own.

// out[p, :] = w * (x[p, :] / sqrt(mean(x[p, :]^2) + eps)), sums in row order
void rms_rows(const float* x, const float* w, float eps, int64_t P, int64_t H, float* out) {
  for (int64_t p = 0; p < P; ++p) {
    const float* xr = x + p * H;
    float ss = 0.f;
    for (int64_t i = 0; i < H; ++i) ss += xr[i] * xr[i];
    const float inv = 1.f / std::sqrt(ss / static_cast<float>(H) + eps);
    for (int64_t i = 0; i < H; ++i) out[p * H + i] = w[i] * (xr[i] * inv);
  }
}

std::vector<torch::Tensor> layer_pre(torch::Tensor x, torch::Tensor norm_w, double eps, torch::Tensor qkv,
                                     int64_t n_qkv, torch::Tensor cos, torch::Tensor sin_signed, int64_t hq,
                                     int64_t hk) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat && x.is_contiguous(), "x: contiguous fp32 [P, H]");
  const int64_t P = x.size(0), H = x.size(1), D = cos.size(-1), half = D / 2;
  TORCH_CHECK(n_qkv == (hq + 2 * hk) * D, "n_qkv must be (hq + 2 hk) * head_dim");
  TORCH_CHECK(cos.is_contiguous() && sin_signed.is_contiguous() && cos.numel() == P * D && sin_signed.numel() == P * D,
              "cos / sin_signed: contiguous [P, D]");
  auto h = torch::empty({P, H}, torch::kFloat);
  rms_rows(x.data_ptr<float>(), norm_w.data_ptr<float>(), static_cast<float>(eps), P, H, h.data_ptr<float>());
  const torch::Tensor heads = q4_1_mm(h, qkv, n_qkv);  // [P, (hq + 2 hk) D]
  auto q = torch::empty({1, hq, P, D}, torch::kFloat);
  auto k = torch::empty({1, hk, P, D}, torch::kFloat);
  auto v = torch::empty({1, hk, P, D}, torch::kFloat);
  const float *HD = heads.data_ptr<float>(), *C = cos.data_ptr<float>(), *S = sin_signed.data_ptr<float>();
  float *Q = q.data_ptr<float>(), *K = k.data_ptr<float>(), *V = v.data_ptr<float>();
  for (int64_t p = 0; p < P; ++p) {
    const float* row = HD + p * n_qkv;
    const float *c = C + p * D, *sn = S + p * D;
    for (int64_t head = 0; head < hq + 2 * hk; ++head) {
      const float* in = row + head * D;
      float* out = head < hq ? Q + (head * P + p) * D
                 : head < hq + hk ? K + ((head - hq) * P + p) * D : V + ((head - hq - hk) * P + p) * D;
      if (head >= hq + hk) {
        std::memcpy(out, in, D * sizeof(float));
        continue;
      }
      for (int64_t i = 0; i < D; ++i)  // x * cos + roll(x, D/2) * sin_signed: rotate_half's products
        out[i] = in[i] * c[i] + in[(i + half) % D] * sn[i];
    }
  }
  return {q, k, v};
}

torch::Tensor layer_post(torch::Tensor x, torch::Tensor o, torch::Tensor o_w, torch::Tensor norm_w, double eps,
                         torch::Tensor gate_up, int64_t n_gate, torch::Tensor down) {
  TORCH_CHECK(x.dim() == 2 && x.scalar_type() == torch::kFloat && x.is_contiguous(), "x: contiguous fp32 [P, H]");
  const int64_t P = x.size(0), H = x.size(1);
  TORCH_CHECK(o.dim() == 4 && o.size(0) == 1 && o.size(2) == P, "o: [1, Hq, P, D]");
  const torch::Tensor flat = o.transpose(1, 2).reshape({P, -1}).contiguous();  // [P, Hq D]
  const torch::Tensor attn = q4_1_mm(flat, o_w, H);  // [P, H]
  auto x1 = torch::empty({P, H}, torch::kFloat);
  const float *X = x.data_ptr<float>(), *A = attn.data_ptr<float>();
  float* X1 = x1.data_ptr<float>();
  for (int64_t i = 0; i < P * H; ++i) X1[i] = X[i] + A[i];
  auto h = torch::empty({P, H}, torch::kFloat);
  rms_rows(X1, norm_w.data_ptr<float>(), static_cast<float>(eps), P, H, h.data_ptr<float>());
  const torch::Tensor gu = q4_1_mm(h, gate_up, 2 * n_gate);  // [P, 2 I]
  auto act = torch::empty({P, n_gate}, torch::kFloat);
  const float* G = gu.data_ptr<float>();
  float* M = act.data_ptr<float>();
  for (int64_t p = 0; p < P; ++p)
    for (int64_t i = 0; i < n_gate; ++i) {
      const float g = G[p * 2 * n_gate + i], u = G[p * 2 * n_gate + n_gate + i];
      M[p * n_gate + i] = (g / (1.f + std::exp(-g))) * u;  // SiLU(gate) * up
    }
  const torch::Tensor dn = q4_1_mm(act, down, H);  // [P, H]
  const float* DN = dn.data_ptr<float>();
  for (int64_t i = 0; i < P * H; ++i) X1[i] = X1[i] + DN[i];
  return x1;
}

}  // namespace

TORCH_LIBRARY(codedec_q8, m) {
  m.def("q4_1_mm(Tensor x, Tensor w, int n_out) -> Tensor");
  m.def("q8_0_mm(Tensor x, Tensor w, int n_out) -> Tensor");
  m.def("layer_pre(Tensor x, Tensor norm_w, float eps, Tensor qkv, int n_qkv, Tensor cos, Tensor sin_signed, "
        "int hq, int hk) -> Tensor[]");
  m.def("layer_post(Tensor x, Tensor o, Tensor o_w, Tensor norm_w, float eps, Tensor gate_up, int n_gate, "
        "Tensor down) -> Tensor");
}

TORCH_LIBRARY_IMPL(codedec_q8, CPU, m) {
  m.impl("q4_1_mm", &q4_1_mm);
  m.impl("q8_0_mm", &q8_0_mm);
  m.impl("layer_pre", &layer_pre);
  m.impl("layer_post", &layer_post);
}
