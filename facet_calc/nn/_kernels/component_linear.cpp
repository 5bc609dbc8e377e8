// An equivariant linear map of one order l on node features in e3nn's layout, for the CPU.
//
// For every node n, output channel o and component m < D = 2l + 1:
//     out[n, o * D + m] = sum_i x[n, i * D + m] * w[i, o]
// with x (n, c_in * D) and out (n, c_out * D) read and written in place inside wider rows
// (row strides x_stride, out_stride): e3nn's layout interleaves the components, channel-major,
// so torch can only multiply it after transposing to (n D, c_in) and back, two copies of the
// features larger than the product's own traffic (benchmarks/roofline.py, 7net-0's linear after
// the convolution). The same function is the adjoint with w transposed: grad_x from grad_out.
//
// Register tiles: NB nodes x D components x OC vectors of output channels stay in registers
// while the loop over the inputs i streams one row of w (OC vectors) and broadcasts NB x D
// inputs; NB and OC are chosen per D so that the tile fits the vector registers (32 with
// AVX-512, 16 below). Each output is one chain of multiply-adds over i in order.
#include <cstdint>
#include <omp.h>

#include "vectors.h"

namespace {

// shuffle masks from D vectors of L lanes (vector m: component m of L channels) to the D
// vectors of their interleaving (flat index f = u L + lane holds channel f / D, component f % D):
// mask[u][1] takes components 0 and 1 from the first two vectors (other lanes: don't care),
// mask[u][m] for m >= 2 keeps the lanes so far and takes component m from vector m
template <typename T, typename V, int D>
struct Interleave {
  static constexpr int L = sizeof(V) / sizeof(T);
  typedef typename IntOf<T>::type I;
  typedef I VI __attribute__((vector_size(sizeof(V))));
  VI mask[D][D > 1 ? D : 2];
  Interleave() {
    for (int u = 0; u < D; ++u)
      for (int m = 1; m < (D > 1 ? D : 2); ++m)
        for (int lane = 0; lane < L; ++lane) {
          const int f = u * L + lane, k = f / D, c = f % D;
          if (m == 1)
            mask[u][m][lane] = c == 0 ? k : (c == 1 ? L + k : 0);
          else
            mask[u][m][lane] = c == m ? L + k : lane;
        }
  }
  static const Interleave& masks() {
    static const Interleave instance;
    return instance;
  }
};

// the tile of NB nodes from n0 and the OC * L output channels from o0
template <typename T, int D, int OC, int NB>
inline void tile(int64_t n0, int c_in, int c_out, int o0, const T* x, int64_t x_stride, const T* w, T* out,
                 int64_t out_stride) {
  typedef typename VecOf<T>::type V;
  constexpr int L = sizeof(V) / sizeof(T);
  V acc[NB][D][OC];
  for (int b = 0; b < NB; ++b)
    for (int m = 0; m < D; ++m)
      for (int v = 0; v < OC; ++v) acc[b][m][v] = V{};
  const T* rows[NB];
  for (int b = 0; b < NB; ++b) rows[b] = x + (n0 + b) * x_stride;
  for (int i = 0; i < c_in; ++i) {
    V wi[OC];
    for (int v = 0; v < OC; ++v) wi[v] = vload<V>(w + (int64_t)i * c_out + o0 + v * L);
    for (int b = 0; b < NB; ++b)
      for (int m = 0; m < D; ++m) {
        const V xs = V{} + rows[b][i * D + m];  // broadcast
        for (int v = 0; v < OC; ++v) acc[b][m][v] += wi[v] * xs;
      }
  }
  // back to the interleaved layout: the D vectors acc[b][.][v] (component m of L channels)
  // become the D vectors of the row's L x D values, each by D - 1 two-source shuffles (scalar
  // stores were ~1 per 2 multiply-adds where c_in is small)
  const Interleave<T, V, D>& mix = Interleave<T, V, D>::masks();
  for (int b = 0; b < NB; ++b) {
    T* row = out + (n0 + b) * out_stride + (int64_t)o0 * D;
    for (int v = 0; v < OC; ++v)
      for (int u = 0; u < D; ++u) {
        V r = D == 1 ? acc[b][0][v] : __builtin_shuffle(acc[b][0][v], acc[b][D > 1 ? 1 : 0][v], mix.mask[u][1]);
        for (int m = 2; m < D; ++m) r = __builtin_shuffle(r, acc[b][m][v], mix.mask[u][m]);
        vstore(row + (v * D + u) * L, r);
      }
  }
}

template <typename T, int D, int OC, int NB>
inline void nodes(int64_t n0, int c_in, int c_out, const T* x, int64_t x_stride, const T* w, T* out,
                  int64_t out_stride) {
  typedef typename VecOf<T>::type V;
  constexpr int L = sizeof(V) / sizeof(T);
  int o0 = 0;
  for (; o0 + OC * L <= c_out; o0 += OC * L) tile<T, D, OC, NB>(n0, c_in, c_out, o0, x, x_stride, w, out, out_stride);
  for (; o0 < c_out; o0 += L) tile<T, D, 1, NB>(n0, c_in, c_out, o0, x, x_stride, w, out, out_stride);
}

template <typename T, int D, int OC, int NB>
void component_linear(int64_t n, int c_in, int c_out, const T* x, int64_t x_stride, const T* w, T* out,
                      int64_t out_stride, int n_threads) {
  const int64_t blocks = n / NB;
#pragma omp parallel for num_threads(n_threads) schedule(static)
  for (int64_t b = 0; b < blocks; ++b) nodes<T, D, OC, NB>(b * NB, c_in, c_out, x, x_stride, w, out, out_stride);
  for (int64_t r = blocks * NB; r < n; ++r) nodes<T, D, OC, 1>(r, c_in, c_out, x, x_stride, w, out, out_stride);
}

// the tiles (OC vectors, NB nodes), measured on 7net-0's orders 1 and 2 (384 -> 64 and
// 352 -> 32 channels and back): AVX-512 ~100-150 GFLOP/s, about torch's matrix product alone
constexpr bool kWide = FACET_VBYTES == 64;

template <typename T>
int dispatch(int d, int64_t n, int c_in, int c_out, const T* x, int64_t x_stride, const T* w, T* out,
             int64_t out_stride, int n_threads) {
  constexpr int L = FACET_VBYTES / sizeof(T);
  if (c_out % L != 0 || c_in < 1 || n < 0) return 1;
  switch (d) {
    case 3:
      kWide ? component_linear<T, 3, 4, 2>(n, c_in, c_out, x, x_stride, w, out, out_stride, n_threads)
            : component_linear<T, 3, 2, 2>(n, c_in, c_out, x, x_stride, w, out, out_stride, n_threads);
      return 0;
    case 5:
      kWide ? component_linear<T, 5, 2, 2>(n, c_in, c_out, x, x_stride, w, out, out_stride, n_threads)
            : component_linear<T, 5, 2, 1>(n, c_in, c_out, x, x_stride, w, out, out_stride, n_threads);
      return 0;
    case 7:
      kWide ? component_linear<T, 7, 2, 2>(n, c_in, c_out, x, x_stride, w, out, out_stride, n_threads)
            : component_linear<T, 7, 1, 2>(n, c_in, c_out, x, x_stride, w, out, out_stride, n_threads);
      return 0;
    default:
      return 1;
  }
}

}  // namespace

// Returns 0, or 1 (writing nothing) where this build has no tile: D not 3, 5 or 7, or c_out not
// a multiple of the vector's lanes (component_linear_lanes); the caller then uses torch.
#define FACET_LINEAR_EXPORT(T, SUFFIX)                                                             \
  extern "C" int component_linear_##SUFFIX(int d, int64_t n, int c_in, int c_out, const T* x,      \
                                           int64_t x_stride, const T* w, T* out, int64_t out_stride, \
                                           int n_threads) {                                       \
    return dispatch<T>(d, n, c_in, c_out, x, x_stride, w, out, out_stride, n_threads);            \
  }

FACET_LINEAR_EXPORT(float, f32)
FACET_LINEAR_EXPORT(double, f64)
