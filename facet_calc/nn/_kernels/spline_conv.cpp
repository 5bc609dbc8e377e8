// Fused spline-weighted 'uvu' convolution for one input block on the CPU.
//
// For every receiver i and its edges e (sender j), with the spline weights evaluated on the fly:
//     w_e[p, u]    = sum_c beta[e, c] * table[rows[e, c], p * mul + u]
//     t_e[col, u]  = sum_m A[e, col, m] * x[j, m, u]
//     h_i[col, u]  += t_e[col, u] * w_e[path_of_col[col], u]
//     out[i, out_map[col * mul + u]] = scale * h_i[col, u]
// The column map writes each block straight into the caller's layout (e3nn's), so no
// concatenation or permutation pass over the node features is needed. No per-edge tensor of width cols * mul is ever written to memory: that is what makes this
// faster than the tensor-op path, which is bound by memory traffic.
//
// Layouts (row-major, contiguous): A (E, cols, m1); x (N, m1, mul); rows (E, 4) int64;
// beta (E, 4); table (R, n_paths * mul); path_of_col (cols) int32; out (N, out_stride) with
// this block's columns given by out_map (cols * mul) int32; grad_out (N, cols, mul) in block
// layout (the caller gathers it once: reading through the map per edge is slower).
// Forward: edges sorted by receiver, recv_ptr (N + 1) delimits each receiver's edges.
// Backward: by_sender (E) lists edge ids grouped by sender, send_ptr (N + 1) delimits them, so
// that grad_x is accumulated without write conflicts; grad_A and grad_beta are per edge.
#include <cstdint>
#include <algorithm>
#include <cstring>
#include <vector>
#include <omp.h>

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
void forward(int64_t n_nodes, int mul, int m1, int cols, int n_paths, const int64_t* recv_ptr,
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
void backward(int64_t n_nodes, int mul, int m1, int cols, int n_paths, const int64_t* send_ptr,
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

}  // namespace

#define FACET_EXPORT(T, SUFFIX)                                                                    \
  extern "C" void spline_conv_forward_##SUFFIX(                                                    \
      int64_t n_nodes, int mul, int m1, int cols, int n_paths, const int64_t* recv_ptr,            \
      const int64_t* senders, const T* A, const T* x, const int64_t* rows, const T* beta,          \
      const T* table, const int32_t* path_of_col, T* out, int64_t out_stride,                       \
      const int32_t* out_map, T scale, int n_threads) {                                            \
    forward<T>(n_nodes, mul, m1, cols, n_paths, recv_ptr, senders, A, x, rows, beta, table,        \
               path_of_col, out, out_stride, out_map, scale, n_threads);                           \
  }                                                                                                \
  extern "C" void spline_conv_backward_##SUFFIX(                                                   \
      int64_t n_nodes, int mul, int m1, int cols, int n_paths, const int64_t* send_ptr,            \
      const int64_t* by_sender, const int64_t* receivers, const T* A, const T* x,                  \
      const int64_t* rows, const T* beta, const T* table, const int32_t* path_of_col,              \
      const T* grad_out, T* grad_A, T* grad_x, T* grad_beta, int n_threads) {                      \
    backward<T>(n_nodes, mul, m1, cols, n_paths, send_ptr, by_sender, receivers, A, x, rows, beta, \
                table, path_of_col, grad_out, grad_A, grad_x, grad_beta, n_threads);               \
  }

FACET_EXPORT(float, f32)
FACET_EXPORT(double, f64)
