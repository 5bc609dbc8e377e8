// Fused spline-weighted 'uvu' convolution for one input block on the CPU.
//
// For every receiver i and its edges e (sender j), with the spline weights and the coupling
// evaluated on the fly:
//     A_e[col, m]  = sum_k Y[e, k] * coupling[k, col * m1 + m]
//     w_e[p, u]    = sum_c beta[e, c] * table[rows[e, c], p * mul + u]
//     t_e[col, u]  = sum_m A[e, col, m] * x[j, m, u]
//     h_i[col, u]  += t_e[col, u] * w_e[path_of_col[col], u]
//     out[i, out_map[col * mul + u]] = scale * h_i[col, u]
// The column map writes each block straight into the caller's layout (e3nn's), so no
// concatenation or permutation pass over the node features is needed. No per-edge tensor of width cols * mul is ever written to memory: that is what makes this
// faster than the tensor-op path, which is bound by memory traffic.
//
// Layouts (row-major, contiguous): Y (E, dim_sh); coupling (dim_sh, cols * m1); x (N, m1, mul); rows (E, 4) int64;
// beta (E, 4); table (R, n_paths * mul); path_of_col (cols) int32; out (N, out_stride) with
// this block's columns given by out_map (cols * mul) int32; grad_out (N, cols, mul) in block
// layout (the caller gathers it once: reading through the map per edge is slower).
// Forward: edges sorted by receiver, recv_ptr (N + 1) delimits each receiver's edges.
// Backward: by_sender (E) lists edge ids grouped by sender, send_ptr (N + 1) delimits them, so
// that grad_x is accumulated without write conflicts; grad_beta is per edge and grad_Y per edge
// is added to (the blocks of one input share Y).
//
// The inner loops come in two forms: register-blocked ones on explicit vectors of the build's
// width (FACET_VBYTES, set by the instruction-set level the library is compiled for, see
// __init__.py and vectors.h) for the usual orders and multiplicities, and plain loops for the rest.
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <vector>
#include <omp.h>
#include <type_traits>

#include "vectors.h"

namespace {

template <typename T>
inline void spline_weights(const int64_t* rows, const T* beta, const T* table, int64_t width, T* w) {
  const T* r0 = table + rows[0] * width;
  const T* r1 = table + rows[1] * width;
  const T* r2 = table + rows[2] * width;
  const T* r3 = table + rows[3] * width;
  const T b0 = beta[0], b1 = beta[1], b2 = beta[2], b3 = beta[3];
#pragma omp simd
  for (int64_t k = 0; k < width; ++k) w[k] = b0 * r0[k] + b1 * r1[k] + b2 * r2[k] + b3 * r3[k];
}

// below this many entries per edge, the coupling's loops run plain (not as vector loops, whose
// set-up and horizontal sums cost more than the work at these widths; the thresholds measured
// on the small distillation students' blocks of 1, 3, 5 and 9 entries)
constexpr int64_t kNarrowCouple = 8, kNarrowTransposed = 16;

// a[j] = sum_k y[k] * coupling[k, j] for j < n: one edge's coupling A (cols * m1) from its
// spherical harmonics y (dim_sh); the coupling is dense over (sh, col, m1), a few kB, in L1
template <typename T>
inline void couple(const T* y, const T* coupling, int dim_sh, int64_t n, T* a) {
  if (n < kNarrowCouple) {  // a narrow block: plain loops (a vector loop of 1-7 entries is mostly overhead)
    for (int64_t j = 0; j < n; ++j) {
      T acc = 0;
      for (int k = 0; k < dim_sh; ++k) acc += y[k] * coupling[(int64_t)k * n + j];
      a[j] = acc;
    }
    return;
  }
  const T y0 = y[0];
#pragma omp simd
  for (int64_t j = 0; j < n; ++j) a[j] = y0 * coupling[j];
  for (int k = 1; k < dim_sh; ++k) {
    const T yk = y[k];
    const T* ck = coupling + (int64_t)k * n;
#pragma omp simd
    for (int64_t j = 0; j < n; ++j) a[j] += yk * ck[j];
  }
}

// gy[k] += sum_j ga[j] * coupling[k, j]: the gradient of the spherical harmonics from grad A
template <typename T>
inline void couple_transposed(const T* ga, const T* coupling, int dim_sh, int64_t n, T* gy) {
  if (n < kNarrowTransposed) {
    for (int k = 0; k < dim_sh; ++k) {
      const T* ck = coupling + (int64_t)k * n;
      T acc = 0;
      for (int64_t j = 0; j < n; ++j) acc += ga[j] * ck[j];
      gy[k] += acc;
    }
    return;
  }
  for (int k = 0; k < dim_sh; ++k) {
    const T* ck = coupling + (int64_t)k * n;
    T acc = 0;
#pragma omp simd reduction(+ : acc)
    for (int64_t j = 0; j < n; ++j) acc += ga[j] * ck[j];
    gy[k] += acc;
  }
}

// t[u] = sum_m a[m] * x[m, u]: one column of A_e applied to the sender's features (m1, mul)
template <typename T>
inline void contract(const T* a, const T* x, int m1, int mul, T* t) {
#pragma omp simd
  for (int u = 0; u < mul; ++u) t[u] = a[0] * x[u];
  for (int m = 1; m < m1; ++m) {
    const T am = a[m];
    const T* xm = x + (int64_t)m * mul;
#pragma omp simd
    for (int u = 0; u < mul; ++u) t[u] += am * xm[u];
  }
}

template <typename T>
void forward_plain(int64_t n_nodes, int mul, int m1, int cols, int n_paths, const int64_t* recv_ptr,
             const int64_t* senders, const T* A, const T* x, const int64_t* rows, const T* beta,
             const T* table, const int32_t* path_of_col, T* out, int64_t out_stride,
             const int32_t* out_map, T scale, int n_threads) {
  const int64_t width = (int64_t)n_paths * mul;
  const int64_t n_out = (int64_t)cols * mul;
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<T> w(width), t(mul), acc(n_out);
#pragma omp for schedule(dynamic, 4)
    for (int64_t i = 0; i < n_nodes; ++i) {
      T* h = acc.data();
      std::fill(acc.begin(), acc.end(), T(0));
      for (int64_t e = recv_ptr[i]; e < recv_ptr[i + 1]; ++e) {
        spline_weights(rows + 4 * e, beta + 4 * e, table, width, w.data());
        const T* xj = x + senders[e] * (int64_t)m1 * mul;
        const T* a = A + e * (int64_t)cols * m1;
        for (int col = 0; col < cols; ++col) {
          const T* wp = w.data() + (int64_t)path_of_col[col] * mul;
          T* hc = h + (int64_t)col * mul;
          const T* ac = a + (int64_t)col * m1;
          contract(ac, xj, m1, mul, t.data());
#pragma omp simd
          for (int u = 0; u < mul; ++u) hc[u] += t[u] * wp[u];
        }
      }
      T* row = out + i * out_stride;
      for (int64_t k = 0; k < n_out; ++k) row[out_map[k]] = scale * h[k];
    }
  }
}

template <typename T>
void backward_plain(int64_t n_nodes, int mul, int m1, int cols, int n_paths, const int64_t* send_ptr,
              const int64_t* by_sender, const int64_t* receivers, const T* A, const T* x,
              const int64_t* rows, const T* beta, const T* table, const int32_t* path_of_col,
              const T* grad_out, T* grad_A, T* grad_x, T* grad_beta, int n_threads) {
  const int64_t width = (int64_t)n_paths * mul;
#pragma omp parallel num_threads(n_threads)
  {
    std::vector<T> w(width), s(width), t(mul), gw(mul);
#pragma omp for schedule(dynamic, 4)
    for (int64_t j = 0; j < n_nodes; ++j) {
      const T* xj = x + j * (int64_t)m1 * mul;
      T* gx = grad_x + j * (int64_t)m1 * mul;
      std::memset(gx, 0, sizeof(T) * m1 * mul);
      for (int64_t q = send_ptr[j]; q < send_ptr[j + 1]; ++q) {
        const int64_t e = by_sender[q];
        const int64_t* re = rows + 4 * e;
        spline_weights(re, beta + 4 * e, table, width, w.data());
        std::fill(s.begin(), s.end(), T(0));
        const T* g = grad_out + receivers[e] * (int64_t)cols * mul;
        const T* a = A + e * (int64_t)cols * m1;
        T* ga = grad_A + e * (int64_t)cols * m1;
        for (int col = 0; col < cols; ++col) {
          const int64_t p = path_of_col[col];
          const T* wp = w.data() + p * mul;
          T* sp = s.data() + p * mul;
          const T* gc = g + (int64_t)col * mul;
          const T* ac = a + (int64_t)col * m1;
          // t = A_col . x_j ;  s_p += t * g ;  gw = g * w
          contract(ac, xj, m1, mul, t.data());
#pragma omp simd
          for (int u = 0; u < mul; ++u) {
            sp[u] += t[u] * gc[u];
            gw[u] = gc[u] * wp[u];
          }
          // grad_A[e, col, m] = sum_u x_j[m, u] gw[u] ;  grad_x[j, m, u] += A[e, col, m] gw[u]
          for (int m = 0; m < m1; ++m) {
            const T* xm = xj + (int64_t)m * mul;
            T* gxm = gx + (int64_t)m * mul;
            const T am = ac[m];
            T acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int u = 0; u < mul; ++u) {
              acc += xm[u] * gw[u];
              gxm[u] += am * gw[u];
            }
            ga[(int64_t)col * m1 + m] = acc;
          }
        }
        // grad_beta[e, c] = sum_{p,u} table[rows[e, c], p, u] * s[p, u]
        for (int c = 0; c < 4; ++c) {
          const T* rc = table + re[c] * width;
          T acc = 0;
#pragma omp simd reduction(+ : acc)
          for (int64_t k = 0; k < width; ++k) acc += rc[k] * s[k];
          grad_beta[4 * e + c] = acc;
        }
      }
    }
  }
}


// ---- register-blocked versions: explicit vectors of the build's width (AVX-512: 64 bytes,
// AVX2: 32, baseline: 16), the order m1 a compile-time constant (1, 3, 5, 7), for blocks whose
// multiplicity is a multiple of the vector's lanes (7net-0: 128, 64, 32), or of half of them
// (then on vectors of half the width: a small student's 8 channels of order 2 in float32 on
// AVX-512); others take the plain loops above. Same arithmetic, in the same order per output entry (up to FMA contraction).
// The vectors (vf, vd, VecOf, HalfOf, IntOf, vload, vstore) are those of vectors.h.

// sum of a vector's lanes by halving (a loop over the lanes compiles to a serial chain)
template <typename T, typename V>
inline T hsum(const V& v) {
  constexpr int L = sizeof(V) / sizeof(T);
  if constexpr (L == 1) {
    return v[0];
  } else {
    typedef T H __attribute__((vector_size(sizeof(V) / 2)));
    H lo, hi;
    std::memcpy(&lo, &v, sizeof(H));
    std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(H), sizeof(H));
    return hsum<T, H>(lo + hi);
  }
}

// out[k] = sum of the lanes of v[k] for the L vectors v[0..L) (destroyed): a transposing tree
// of two-source shuffles and adds, about 3 operations per vector instead of ~2 log2(L) for
// separate sums. Level by level, each vector holds segments of S lanes, each a partial sum of
// one input vector; a pair (a, b) becomes one vector of segments of S / 2 lanes.
#if defined(__clang__)
template <typename T, typename V>
inline void lane_sums(V* v, T* out) {
  constexpr int L = sizeof(V) / sizeof(T);
  for (int k = 0; k < L; ++k) out[k] = hsum<T>(v[k]);
}
#else
template <typename T, typename V>
struct ShuffleMasks {
  static constexpr int L = sizeof(V) / sizeof(T);
  typedef typename IntOf<T>::type I;
  typedef I VI __attribute__((vector_size(sizeof(V))));
  VI lo[8], hi[8];  // per level: the first and second halves of every segment
  ShuffleMasks() {
    int level = 0;
    for (int S = L; S > 1; S /= 2, ++level) {
      const int h = S / 2, per = L / S;  // per: segments in each input vector
      for (int i = 0; i < L; ++i) {
        const int sg = i / h, o = i % h;
        lo[level][i] = (sg >= per ? L : 0) + (sg % per) * S + o;
        hi[level][i] = lo[level][i] + h;
      }
    }
  }
};

template <typename T, typename V>
inline void lane_sums(V* v, T* out) {
  constexpr int L = sizeof(V) / sizeof(T);
  static const ShuffleMasks<T, V> masks;
  int n = L, level = 0;
  for (int S = L; S > 1; S /= 2, ++level) {
    for (int k = 0; k < n / 2; ++k) {
      const V a = v[2 * k], b = v[2 * k + 1];
      v[k] = __builtin_shuffle(a, b, masks.lo[level]) + __builtin_shuffle(a, b, masks.hi[level]);
    }
    n /= 2;
  }
  vstore(out, v[0]);
}
#endif

// output columns whose accumulators stay in registers (32 vector registers with AVX-512, 16 below)
constexpr int kGroup = FACET_VBYTES == 64 ? 16 : 8;

// forward, one receiver's edges (their couplings A in a (deg, cols, m1) buffer) for G columns
// from c0 on: for one vector of channels u, the G sums over the edges stay in registers (G is a
// compile-time constant, so the column loop is unrolled and the accumulators never touch
// memory); the spline weights of the group's paths are evaluated per edge from the 4 table rows.
template <typename T, int M1, typename V, int G>
inline void forward_group(int64_t e0, int64_t e1, int mul, int64_t width, int64_t na, int c0,
                          const int64_t* senders, const T* x, const int64_t* rows, const T* beta, const T* table,
                          const int32_t* path_of_col, const T* a_buf, T* row, const int32_t* out_map, T scale) {
  constexpr int L = sizeof(V) / sizeof(T);
  const int p_lo = path_of_col[c0], p_hi = path_of_col[c0 + G - 1];
  int pc[G];
  for (int c = 0; c < G; ++c) pc[c] = path_of_col[c0 + c] - p_lo;
  for (int u0 = 0; u0 < mul; u0 += L) {
    V acc[G];
    for (int c = 0; c < G; ++c) acc[c] = V{};
    for (int64_t e = e0; e < e1; ++e) {
      const T* xj = x + senders[e] * (int64_t)M1 * mul + u0;
      V xm[M1];
      for (int m = 0; m < M1; ++m) xm[m] = vload<V>(xj + (int64_t)m * mul);
      const int64_t* re = rows + 4 * e;
      const T b0 = beta[4 * e], b1 = beta[4 * e + 1], b2 = beta[4 * e + 2], b3 = beta[4 * e + 3];
      const T* r0 = table + re[0] * width + u0;
      const T* r1 = table + re[1] * width + u0;
      const T* r2 = table + re[2] * width + u0;
      const T* r3 = table + re[3] * width + u0;
      V w[G];
      for (int p = 0; p <= p_hi - p_lo; ++p) {
        const int64_t off = (int64_t)(p + p_lo) * mul;
        w[p] = b0 * vload<V>(r0 + off) + b1 * vload<V>(r1 + off) + b2 * vload<V>(r2 + off) + b3 * vload<V>(r3 + off);
      }
      const T* a = a_buf + (e - e0) * na + c0 * M1;
#pragma GCC unroll 16
      for (int c = 0; c < G; ++c) {
        V t = a[c * M1] * xm[0];
        for (int m = 1; m < M1; ++m) t += a[c * M1 + m] * xm[m];
        acc[c] += t * w[pc[c]];
      }
    }
    for (int c = 0; c < G; ++c) {
      const int32_t* map = out_map + (int64_t)(c0 + c) * mul + u0;
      for (int k = 0; k < L; ++k) row[map[k]] = scale * acc[c][k];
    }
  }
}

// forward, receiver by receiver: the columns in groups of kGroup, then of 8, 4, 2 and 1 for the
// rest (each group size its own unrolled loop, see forward_group); no per-edge tensor is
// written anywhere.
template <typename T, int M1, typename V>
void forward_blocked(int64_t n_nodes, int mul, int cols, int n_paths, int dim_sh, const int64_t* recv_ptr,
                     const int64_t* senders, const T* sh, const T* coupling, const T* x, const int64_t* rows,
                     const T* beta, const T* table, const int32_t* path_of_col, T* out, int64_t out_stride,
                     const int32_t* out_map, T scale, int n_threads) {
  const int64_t width = (int64_t)n_paths * mul;
  const int64_t na = (int64_t)cols * M1;
#pragma omp parallel num_threads(n_threads)
  {
  std::vector<T> a_buf;  // the receiver's edges' couplings A (deg, cols, m1)
#pragma omp for schedule(dynamic, 4)
  for (int64_t i = 0; i < n_nodes; ++i) {
    T* row = out + i * out_stride;
    const int64_t e0 = recv_ptr[i], e1 = recv_ptr[i + 1];
    if ((int64_t)a_buf.size() < (e1 - e0) * na) a_buf.resize((e1 - e0) * na);
    for (int64_t e = e0; e < e1; ++e) couple(sh + e * dim_sh, coupling, dim_sh, na, a_buf.data() + (e - e0) * na);
#define FACET_GROUP(G) \
  forward_group<T, M1, V, G>(e0, e1, mul, width, na, c0, senders, x, rows, beta, table, path_of_col, a_buf.data(), \
                             row, out_map, scale); \
  c0 += G
    for (int c0 = 0; c0 < cols;) {
      const int left = cols - c0;
      if (left >= kGroup) {
        FACET_GROUP(kGroup);
      } else if (kGroup > 8 && left >= 8) {
        FACET_GROUP(8);
      } else if (left >= 4) {
        FACET_GROUP(4);
      } else if (left >= 2) {
        FACET_GROUP(2);
      } else {
        FACET_GROUP(1);
      }
    }
#undef FACET_GROUP
  }
  }
}

// backward, sender by sender, edge by edge: for one vector of channels u the sender's features,
// its grad x contribution and the running spline product s of the current path stay in
// registers while the columns are walked; grad A accumulates per (column, m) over the vectors of
// channels in a small buffer and is summed over its lanes once per edge. The columns of a path
// are consecutive (FastSplineConvolution builds them so), so each s[p, u] is stored once.
//
// members > 1: a committee's members stacked along the channels (x (N, m1, members * mul), the
// table's columns (path, member, u), grad_out (N, cols, members * mul)), all sharing the edges,
// their spherical harmonics and spline basis. The edge loop, the coupling A and the loads of the
// edge's rows run once for all members; grad A, and with it grad_sh, and grad_beta are kept per
// member (grad_sh (members, E, dim_sh), grad_beta (members, E, 4), E = send_ptr[n_nodes]), so
// each member gets the gradient of its own energy. mul is a multiple of the vector's lanes, so
// no vector holds two members' channels.
//
// NU > 0 (NU = mul / L vectors per member, a compile-time constant): the columns are walked
// outermost and each member's NU vectors innermost, so a column's grad A (M1 vectors) sums over
// the channels in registers and is stored once, and the sender's grad x (M1 x NU vectors) stays
// in registers for the whole edge; NU = 0: the channels outermost, grad A added into memory
// column by column (read-modify-write per vector of channels), for blocks too wide for the
// registers.
template <typename T, int M1, typename V, int NU>
void backward_blocked(int64_t n_nodes, int mul, int members, int cols, int n_paths, int dim_sh,
                      const int64_t* send_ptr, const int64_t* by_sender, const int64_t* receivers, const T* sh,
                      const T* coupling, const T* x, const int64_t* rows, const T* beta, const T* table,
                      const int32_t* path_of_col, const T* grad_out, T* grad_sh, T* grad_x, T* grad_beta,
                      int n_threads) {
  constexpr int L = sizeof(V) / sizeof(T);
  const int64_t channels = (int64_t)members * mul;  // all members' channels of one (m, path)
  const int64_t width = (int64_t)n_paths * channels;
  const int64_t na = (int64_t)cols * M1;
  const int64_t n_edges = send_ptr[n_nodes];  // the stride of one member in grad_sh and grad_beta
#pragma omp parallel num_threads(n_threads)
  {
    // grad A's entries in whole groups of L go through lane_sums, the rest (all of them when
    // na < L: a narrow block, e.g. a last layer's single output column) are summed one by one,
    // so no zero vector is accumulated or reduced
    const int64_t na_grouped = na / L * L;
    std::vector<T> w(width), s(width), a_buf(na), ga_buf(na);
    std::vector<V> ga_acc(members * na);
#pragma omp for schedule(dynamic, 4)
    for (int64_t j = 0; j < n_nodes; ++j) {
      const T* xj = x + j * (int64_t)M1 * channels;
      T* gx = grad_x + j * (int64_t)M1 * channels;
      std::memset(gx, 0, sizeof(T) * M1 * channels);
      for (int64_t q = send_ptr[j]; q < send_ptr[j + 1]; ++q) {
        const int64_t e = by_sender[q];
        const int64_t* re = rows + 4 * e;
        spline_weights(re, beta + 4 * e, table, width, w.data());
        const T* g = grad_out + receivers[e] * (int64_t)cols * channels;
        couple(sh + e * dim_sh, coupling, dim_sh, na, a_buf.data());
        const T* a = a_buf.data();
        if constexpr (NU > 0) {
          for (int k = 0; k < members; ++k) {
            const int64_t base = (int64_t)k * mul;
            V gxr[M1][NU], sacc[NU];
            for (int v = 0; v < NU; ++v) {
              sacc[v] = V{};
              for (int m = 0; m < M1; ++m) gxr[m][v] = V{};
            }
            V* gak = ga_acc.data() + k * na;
            int p = path_of_col[0];
            for (int col = 0; col < cols; ++col) {
              if (path_of_col[col] != p) {
                for (int v = 0; v < NU; ++v) {
                  vstore(s.data() + (int64_t)p * channels + base + v * L, sacc[v]);
                  sacc[v] = V{};
                }
                p = path_of_col[col];
              }
              const T* ac = a + col * M1;
              const T* gc = g + (int64_t)col * channels + base;
              const T* wp = w.data() + (int64_t)p * channels + base;
              V gac[M1];
              for (int m = 0; m < M1; ++m) gac[m] = V{};
              for (int v = 0; v < NU; ++v) {
                V xm[M1];
                for (int m = 0; m < M1; ++m) xm[m] = vload<V>(xj + (int64_t)m * channels + base + v * L);
                const V gv = vload<V>(gc + v * L);
                V t = ac[0] * xm[0];
                for (int m = 1; m < M1; ++m) t += ac[m] * xm[m];
                sacc[v] += t * gv;
                const V gw = gv * vload<V>(wp + v * L);
                for (int m = 0; m < M1; ++m) {
                  gac[m] += xm[m] * gw;
                  gxr[m][v] += ac[m] * gw;
                }
              }
              for (int m = 0; m < M1; ++m) gak[col * M1 + m] = gac[m];
            }
            for (int v = 0; v < NU; ++v) vstore(s.data() + (int64_t)p * channels + base + v * L, sacc[v]);
            for (int m = 0; m < M1; ++m)
              for (int v = 0; v < NU; ++v) {
                T* gxm = gx + (int64_t)m * channels + base + v * L;
                vstore(gxm, vload<V>(gxm) + gxr[m][v]);
              }
          }
        } else {
        for (int64_t k = 0; k < members * na; ++k) ga_acc[k] = V{};
        for (int64_t u0 = 0; u0 < channels; u0 += L) {
          V xm[M1], gxa[M1];
          for (int m = 0; m < M1; ++m) {
            xm[m] = vload<V>(xj + (int64_t)m * channels + u0);
            gxa[m] = V{};
          }
          V* ga_member = ga_acc.data() + (u0 / mul) * na;
          int p = path_of_col[0];
          V wv = vload<V>(w.data() + (int64_t)p * channels + u0);
          V sacc = V{};
          for (int col = 0; col < cols; ++col) {
            if (path_of_col[col] != p) {
              vstore(s.data() + (int64_t)p * channels + u0, sacc);
              p = path_of_col[col];
              wv = vload<V>(w.data() + (int64_t)p * channels + u0);
              sacc = V{};
            }
            const T* ac = a + col * M1;
            const V gv = vload<V>(g + (int64_t)col * channels + u0);
            V t = ac[0] * xm[0];
            for (int m = 1; m < M1; ++m) t += ac[m] * xm[m];
            sacc += t * gv;
            const V gw = gv * wv;
            V* gac = ga_member + col * M1;
            for (int m = 0; m < M1; ++m) {
              gac[m] += xm[m] * gw;
              gxa[m] += ac[m] * gw;
            }
          }
          vstore(s.data() + (int64_t)p * channels + u0, sacc);
          for (int m = 0; m < M1; ++m) {
            T* gxm = gx + (int64_t)m * channels + u0;
            vstore(gxm, vload<V>(gxm) + gxa[m]);
          }
        }
        }
        for (int k = 0; k < members; ++k) {
          V* gak = ga_acc.data() + k * na;
          for (int64_t i = 0; i < na_grouped; i += L) lane_sums<T>(gak + i, ga_buf.data() + i);
          for (int64_t i = na_grouped; i < na; ++i) ga_buf[i] = hsum<T>(gak[i]);
          couple_transposed(ga_buf.data(), coupling, dim_sh, na, grad_sh + (k * n_edges + e) * dim_sh);
          // grad_beta of member k: its columns (p, k, u) of the edge's four table rows against s,
          // in vectors (mul is a multiple of L), one horizontal sum per row
          V acc[4] = {V{}, V{}, V{}, V{}};
          for (int pp = 0; pp < n_paths; ++pp) {
            const int64_t off = (int64_t)pp * channels + (int64_t)k * mul;
            for (int u0 = 0; u0 < mul; u0 += L) {
              const V sv = vload<V>(s.data() + off + u0);
              for (int c = 0; c < 4; ++c) acc[c] += vload<V>(table + re[c] * width + off + u0) * sv;
            }
          }
          T* gb = grad_beta + 4 * (k * n_edges + e);
          for (int c = 0; c < 4; ++c) gb[c] = hsum<T>(acc[c]);
        }
      }
    }
  }
}

// the plain loops on a coupling A formed for all edges (blocks whose multiplicity is not a
// multiple of the vector's lanes: small models only)
template <typename T>
std::vector<T> all_couplings(int64_t n_edges, int dim_sh, const T* sh, const T* coupling, int64_t na) {
  std::vector<T> A(n_edges * na);
  for (int64_t e = 0; e < n_edges; ++e) couple(sh + e * dim_sh, coupling, dim_sh, na, A.data() + e * na);
  return A;
}

template <typename T>
void forward(int64_t n_nodes, int mul, int m1, int cols, int n_paths, int dim_sh, const int64_t* recv_ptr,
             const int64_t* senders, const T* sh, const T* coupling, const T* x, const int64_t* rows,
             const T* beta, const T* table, const int32_t* path_of_col, T* out, int64_t out_stride,
             const int32_t* out_map, T scale, int n_threads) {
  typedef typename VecOf<T>::type V;
  typedef typename HalfOf<T>::type VH;
  constexpr int L = FACET_VBYTES / sizeof(T);
  // (a group's paths are at most kGroup, the size of its w array: each path has >= 1 column)
#define FACET_FWD(M, VT) \
  return forward_blocked<T, M, VT>(n_nodes, mul, cols, n_paths, dim_sh, recv_ptr, senders, sh, coupling, x, rows, \
                                   beta, table, path_of_col, out, out_stride, out_map, scale, n_threads)
  if (mul % L == 0) {
    switch (m1) {
      case 1: FACET_FWD(1, V);
      case 3: FACET_FWD(3, V);
      case 5: FACET_FWD(5, V);
      case 7: FACET_FWD(7, V);
      default: break;
    }
  } else if (L >= 4 && mul % (L / 2) == 0) {  // half-width vectors (e.g. 8 channels of float32 on AVX-512)
    switch (m1) {
      case 1: FACET_FWD(1, VH);
      case 3: FACET_FWD(3, VH);
      case 5: FACET_FWD(5, VH);
      case 7: FACET_FWD(7, VH);
      default: break;
    }
  }
#undef FACET_FWD
  const std::vector<T> A = all_couplings(recv_ptr[n_nodes], dim_sh, sh, coupling, (int64_t)cols * m1);
  forward_plain<T>(n_nodes, mul, m1, cols, n_paths, recv_ptr, senders, A.data(), x, rows, beta, table,
                   path_of_col, out, out_stride, out_map, scale, n_threads);
}

// backward_blocked with NU = mul / lanes where its registers suffice (float only: the double
// build keeps the channel-outer loop, fewer instantiations), else NU = 0
constexpr int kVectorRegisters = FACET_VBYTES == 64 ? 32 : 16;
template <typename T, int M1, typename V>
int backward_of_width(int64_t n_nodes, int mul, int members, int cols, int n_paths, int dim_sh,
                      const int64_t* send_ptr, const int64_t* by_sender, const int64_t* receivers, const T* sh,
                      const T* coupling, const T* x, const int64_t* rows, const T* beta, const T* table,
                      const int32_t* path_of_col, const T* grad_out, T* grad_sh, T* grad_x, T* grad_beta,
                      int n_threads) {
  constexpr int L = sizeof(V) / sizeof(T);
  const int nu = mul / L;
  // registers of the column loop: grad x (M1 x NU), s (NU), grad A and x (M1 each), 4 temporaries
  const bool fits = M1 * nu + nu + 2 * M1 + 4 <= kVectorRegisters - 2;
#define FACET_NU(N) \
  backward_blocked<T, M1, V, N>(n_nodes, mul, members, cols, n_paths, dim_sh, send_ptr, by_sender, receivers, sh, \
                                coupling, x, rows, beta, table, path_of_col, grad_out, grad_sh, grad_x, grad_beta, \
                                n_threads); \
  return 0
  if constexpr (std::is_same<T, float>::value) {
    if (fits) {
      switch (nu) {
        case 1: FACET_NU(1);
        case 2: FACET_NU(2);
        case 4: FACET_NU(4);
        case 8: FACET_NU(8);
        default: break;
      }
    }
  }
  FACET_NU(0);
#undef FACET_NU
}

// grad_sh is accumulated into (the caller sums the blocks of one input there). members > 1 (a
// committee stacked along the channels, see backward_blocked) needs a blocked path: returns 1,
// computing nothing, where none serves this mul (the caller then runs the members one by one).
template <typename T>
int backward(int64_t n_nodes, int mul, int members, int m1, int cols, int n_paths, int dim_sh,
             const int64_t* send_ptr, const int64_t* by_sender, const int64_t* receivers, const T* sh,
             const T* coupling, const T* x, const int64_t* rows, const T* beta, const T* table,
             const int32_t* path_of_col, const T* grad_out, T* grad_sh, T* grad_x, T* grad_beta, int n_threads) {
  typedef typename VecOf<T>::type V;
  typedef typename HalfOf<T>::type VH;
  constexpr int L = FACET_VBYTES / sizeof(T);
#define FACET_BWD(M, VT) \
  return backward_of_width<T, M, VT>(n_nodes, mul, members, cols, n_paths, dim_sh, send_ptr, by_sender, receivers, \
                                     sh, coupling, x, rows, beta, table, path_of_col, grad_out, grad_sh, grad_x, \
                                     grad_beta, n_threads)
  if (mul % L == 0) {
    switch (m1) {
      case 1: FACET_BWD(1, V);
      case 3: FACET_BWD(3, V);
      case 5: FACET_BWD(5, V);
      case 7: FACET_BWD(7, V);
      default: break;
    }
  } else if (L >= 4 && mul % (L / 2) == 0) {
    switch (m1) {
      case 1: FACET_BWD(1, VH);
      case 3: FACET_BWD(3, VH);
      case 5: FACET_BWD(5, VH);
      case 7: FACET_BWD(7, VH);
      default: break;
    }
  }
#undef FACET_BWD
  if (members != 1) return 1;
  const int64_t n_edges = send_ptr[n_nodes], na = (int64_t)cols * m1;
  const std::vector<T> A = all_couplings(n_edges, dim_sh, sh, coupling, na);
  std::vector<T> grad_A(n_edges * na);
  backward_plain<T>(n_nodes, mul, m1, cols, n_paths, send_ptr, by_sender, receivers, A.data(), x, rows, beta,
                    table, path_of_col, grad_out, grad_A.data(), grad_x, grad_beta, n_threads);
  for (int64_t e = 0; e < n_edges; ++e)
    couple_transposed(grad_A.data() + e * na, coupling, dim_sh, na, grad_sh + e * dim_sh);
  return 0;
}

}  // namespace

#define FACET_EXPORT(T, SUFFIX)                                                                    \
  extern "C" void spline_conv_forward_##SUFFIX(                                                    \
      int64_t n_nodes, int mul, int m1, int cols, int n_paths, int dim_sh, const int64_t* recv_ptr, \
      const int64_t* senders, const T* sh, const T* coupling, const T* x, const int64_t* rows,      \
      const T* beta, const T* table, const int32_t* path_of_col, T* out, int64_t out_stride,       \
      const int32_t* out_map, T scale, int n_threads) {                                            \
    forward<T>(n_nodes, mul, m1, cols, n_paths, dim_sh, recv_ptr, senders, sh, coupling, x, rows, beta, \
               table, path_of_col, out, out_stride, out_map, scale, n_threads);                    \
  }                                                                                                \
  extern "C" int spline_conv_backward_##SUFFIX(                                                    \
      int64_t n_nodes, int mul, int members, int m1, int cols, int n_paths, int dim_sh,            \
      const int64_t* send_ptr, const int64_t* by_sender, const int64_t* receivers, const T* sh,    \
      const T* coupling, const T* x, const int64_t* rows, const T* beta, const T* table,           \
      const int32_t* path_of_col, const T* grad_out, T* grad_sh, T* grad_x, T* grad_beta,          \
      int n_threads) {                                                                             \
    return backward<T>(n_nodes, mul, members, m1, cols, n_paths, dim_sh, send_ptr, by_sender, receivers, sh, \
                       coupling, x, rows, beta, table, path_of_col, grad_out, grad_sh, grad_x, grad_beta, \
                       n_threads);                                                                 \
  }

FACET_EXPORT(float, f32)
FACET_EXPORT(double, f64)

// the edges grouped by sender, in edge order within each sender (a stable counting sort):
// out[send_ptr[s] + k] is the k-th edge of sender s. Returns 1, writing nothing meaningful, when a
// sender is out of [0, n_nodes) or the offsets do not match the senders' counts.
extern "C" int edges_by_sender(int64_t n_nodes, int64_t n_edges, const int64_t* senders, const int64_t* send_ptr,
                               int64_t* out) {
  std::vector<int64_t> next(send_ptr, send_ptr + n_nodes);
  for (int64_t e = 0; e < n_edges; ++e) {
    const int64_t s = senders[e];
    if (s < 0 || s >= n_nodes || next[s] >= send_ptr[s + 1]) return 1;
    out[next[s]++] = e;
  }
  return 0;
}

// the vector width the blocked loops use, in bytes (a committee's members may be stacked along
// the channels when mul is a multiple of its lanes or of half of them, see backward)
extern "C" int spline_conv_vector_bytes() { return FACET_VBYTES; }
