// The spherical-grid step of Facet's S2 mixer, fused, for the CPU (nn/blocks/s2_mixing.py).
//
// For every node n and channel h, with the harmonic coefficients c[n, h, :K] of a function on
// the sphere, the grid's values Y (G, K) and quadrature B (G, K):
//     back[n, h, k] = sum_g silu(sum_k' c[n, h, k'] Y[g, k']) B[g, k]
// written in e3nn's layout (order by order, H channels of 2l + 1 components each)
// and its adjoint (grad_c from grad_back, the grid values recomputed, never stored). torch
// runs this as two matrix products with an inner dimension of K = 9 (slow in BLAS) and an
// activation over an (n, H, G) tensor written to memory and read back three times; here each
// node's values stay in registers.
//
// Channels are vectorised (L lanes per vector; H a multiple of L): for one node and L channels
// the K coefficients are L-wide vectors in registers, and the loop over the G grid points
// broadcasts Y[g, k] and B[g, k]. SiLU needs exp: a vector exp by range reduction (x = n ln 2 +
// r, |r| <= ln 2 / 2) and a polynomial for e^r, ~2 ulp in float32 and float64.
#include <cmath>
#include <cstdint>
#include <omp.h>

#include "vectors.h"

namespace {

template <typename T> struct ExpConstants;
template <> struct ExpConstants<float> {
  static constexpr int kDegree = 7, kMantissa = 23, kBias = 127;
  static constexpr float kMax = 88.0f, kMin = -87.0f;
};
template <> struct ExpConstants<double> {
  static constexpr int kDegree = 13, kMantissa = 52, kBias = 1023;
  static constexpr double kMax = 708.0, kMin = -708.0;
};

// e^x lane by lane for x clamped to [kMin, kMax] (SiLU needs no more: e^-x of a large |x|
// saturates it): x = n ln2 + r, e^r by its Taylor polynomial (|r| <= ln2 / 2: the terms of
// degree 8 (float) / 13 (double) are below the type's rounding), 2^n put into the exponent bits.
template <typename T, typename V>
inline V vexp(V x) {
  typedef ExpConstants<T> C;
  typedef typename IntOf<T>::type I;
  typedef I VI __attribute__((vector_size(sizeof(V))));
  const V hi = V{} + C::kMax, lo = V{} + C::kMin;
  x = x > hi ? hi : x;
  x = x < lo ? lo : x;
  // n = round(x / ln2) (conversion truncates: add +-0.5 first); r = x - n ln2 in two parts
  const VI n = __builtin_convertvector(x * T(1.4426950408889634) + (x >= 0 ? T(0.5) : T(-0.5)), VI);
  const V nf = __builtin_convertvector(n, V);
  const V r = (x - nf * T(0.693145751953125)) - nf * T(1.428606820309417232e-06);
  V p = V{} + T(1);  // Horner: e^r = 1 + r (1 + r/2 (1 + r/3 (...)))
  for (int k = C::kDegree; k >= 1; --k) p = T(1) + r * (T(1) / T(k)) * p;
  const VI bits = (n + I(C::kBias)) << C::kMantissa;
  V scale;
  std::memcpy(&scale, &bits, sizeof(V));
  return p * scale;
}

// one node's L channels (a vector each entry): c[k] (K) in, back[k] (K) out
template <typename T, typename V, int K>
inline void forward_chunk(const V* c, int G, const T* Y, const T* B, V* back) {
  for (int k = 0; k < K; ++k) back[k] = V{};
  for (int g = 0; g < G; ++g) {
    const T* y = Y + g * K;
    const T* b = B + g * K;
    V pre = c[0] * y[0];
    for (int k = 1; k < K; ++k) pre += c[k] * y[k];
    const V f = pre / (T(1) + vexp<T>(-pre));  // silu
    for (int k = 0; k < K; ++k) back[k] += f * b[k];
  }
}

template <typename T, typename V, int K>
inline void backward_chunk(const V* c, const V* gb, int G, const T* Y, const T* B, V* gc) {
  for (int k = 0; k < K; ++k) gc[k] = V{};
  for (int g = 0; g < G; ++g) {
    const T* y = Y + g * K;
    const T* b = B + g * K;
    V pre = c[0] * y[0];
    V gf = gb[0] * b[0];
    for (int k = 1; k < K; ++k) {
      pre += c[k] * y[k];
      gf += gb[k] * b[k];
    }
    const V s = T(1) / (T(1) + vexp<T>(-pre));
    const V gp = gf * (s * (T(1) + pre * (T(1) - s)));  // silu'(pre) = s (1 + pre (1 - s))
    for (int k = 0; k < K; ++k) gc[k] += gp * y[k];
  }
}

// a row of (H, K) -> K vectors of L channels from h0
template <typename T, typename V, int K>
inline void gather(const T* row, int h0, V* out) {
  constexpr int L = sizeof(V) / sizeof(T);
  for (int k = 0; k < K; ++k)
    for (int l = 0; l < L; ++l) out[k][l] = row[(h0 + l) * K + k];
}
// the same for a row in e3nn's layout of H x (0e + 1o + 2e + ...): coefficient k (order
// l = floor(sqrt(k)), component k - l^2) of channel h at H l^2 + h (2l + 1) + k - l^2
template <int K>
struct E3nnLayout {
  int base[K], stride[K];
  explicit E3nnLayout(int H) {
    for (int k = 0, l = 0; k < K; ++k) {
      if ((l + 1) * (l + 1) <= k) ++l;
      base[k] = H * l * l + k - l * l;
      stride[k] = 2 * l + 1;
    }
  }
};
template <typename T, typename V, int K>
inline void gather_e3nn(const T* row, const E3nnLayout<K>& at, int h0, V* out) {
  constexpr int L = sizeof(V) / sizeof(T);
  for (int k = 0; k < K; ++k)
    for (int l = 0; l < L; ++l) out[k][l] = row[at.base[k] + (h0 + l) * at.stride[k]];
}
template <typename T, typename V, int K>
inline void scatter_e3nn(const V* in, const E3nnLayout<K>& at, int h0, T* row) {
  constexpr int L = sizeof(V) / sizeof(T);
  for (int k = 0; k < K; ++k)
    for (int l = 0; l < L; ++l) row[at.base[k] + (h0 + l) * at.stride[k]] = in[k][l];
}

template <typename T, int K>
void grid_silu(bool backward, int64_t n, int H, int G, const T* c, const T* grad_back, const T* Y, const T* B,
               T* out, int n_threads) {
  typedef typename VecOf<T>::type V;
  constexpr int L = sizeof(V) / sizeof(T);
  const E3nnLayout<K> at(H);
#pragma omp parallel for num_threads(n_threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const T* ci = c + i * H * K;
    T* oi = out + i * H * K;
    for (int h0 = 0; h0 < H; h0 += L) {
      V cv[K], res[K];
      gather<T, V, K>(ci, h0, cv);
      if (backward) {
        V gb[K];
        gather_e3nn<T, V, K>(grad_back + i * H * K, at, h0, gb);
        backward_chunk<T, V, K>(cv, gb, G, Y, B, res);
      } else {
        forward_chunk<T, V, K>(cv, G, Y, B, res);
      }
      if (backward)
        for (int k = 0; k < K; ++k)
          for (int l = 0; l < L; ++l) oi[(h0 + l) * K + k] = res[k][l];  // grad_c, as c
      else
        scatter_e3nn<T, V, K>(res, at, h0, oi);
    }
  }
}

template <typename T>
int dispatch(bool backward, int64_t n, int H, int K, int G, const T* c, const T* grad_back, const T* Y,
             const T* B, T* out, int n_threads) {
  constexpr int L = FACET_VBYTES / sizeof(T);
  // the baseline build's 16-byte vectors (SSE2) run this slower than torch does: not served
  if (FACET_VBYTES < 32 || H % L != 0 || n < 0 || G < 1) return 1;
  switch (K) {  // (lmax + 1)^2 for lmax = 0..3
    case 1: grid_silu<T, 1>(backward, n, H, G, c, grad_back, Y, B, out, n_threads); return 0;
    case 4: grid_silu<T, 4>(backward, n, H, G, c, grad_back, Y, B, out, n_threads); return 0;
    case 9: grid_silu<T, 9>(backward, n, H, G, c, grad_back, Y, B, out, n_threads); return 0;
    case 16: grid_silu<T, 16>(backward, n, H, G, c, grad_back, Y, B, out, n_threads); return 0;
    default: return 1;
  }
}

}  // namespace

// c: (n, H, K) contiguous; back and grad_back: (n, H K) in e3nn's layout of H x (0e + 1o + ...)
// (what the mixer's "down" linear reads); Y, B: (G, K) contiguous. Forward: out = back;
// backward: out = grad_c (n, H, K), grad_back read. Returns 0, or 1 (nothing written) where this build
// has no loop for the shapes (or is the baseline build): H not a multiple of the vector's lanes, K not 1, 4, 9 or 16.
#define FACET_GRID_EXPORT(T, SUFFIX)                                                              \
  extern "C" int s2_grid_silu_##SUFFIX(int backward, int64_t n, int H, int K, int G, const T* c,  \
                                       const T* grad_back, const T* Y, const T* B, T* out,        \
                                       int n_threads) {                                          \
    return dispatch<T>(backward != 0, n, H, K, G, c, grad_back, Y, B, out, n_threads);           \
  }

FACET_GRID_EXPORT(float, f32)
FACET_GRID_EXPORT(double, f64)
