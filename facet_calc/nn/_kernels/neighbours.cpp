// A cell-list neighbour search for fully periodic cells (graph.py; vesin is the reference and
// serves every other case: slabs, molecules, no compiler).
//
// All directed pairs (i, j, S) with |pos[j] - pos[i] + S @ cell| < cutoff, S an integer cell
// shift, except i == j with S == 0; receivers i in ascending order (what the fused convolution
// needs), so no sort follows. Vectors are differenced in float64 as pos[j] - pos[i] + S @ cell.
//
// Atoms are wrapped into the cell (fractional coordinates in [0, 1), remembering the whole cells
// taken off) and binned: along lattice direction k the bins are at least `cutoff` apart as
// planes (n_k = floor(h_k / cutoff) bins for a plane spacing h_k), so a neighbour's fractional
// coordinate differs by at most cutoff / h_k and lies within r_k = ceil(cutoff n_k / h_k) bins;
// a stencil of (2 r_k + 1) bins per direction, each with its image shift, covers every image,
// also when the cell is shorter than the cutoff (then n_k = 1 and r_k > 1).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace {

// the inverse of a 3x3 matrix (rows: lattice vectors); false where it is singular
bool invert(const double* m, double* inv) {
  const double a = m[0], b = m[1], c = m[2], d = m[3], e = m[4], f = m[5], g = m[6], h = m[7], i = m[8];
  const double A = e * i - f * h, B = -(d * i - f * g), C = d * h - e * g;
  const double det = a * A + b * B + c * C;
  const double scale = std::fabs(a) + std::fabs(b) + std::fabs(c) + std::fabs(d) + std::fabs(e) + std::fabs(f) +
                       std::fabs(g) + std::fabs(h) + std::fabs(i);
  if (!(std::fabs(det) > 1e-12 * scale * scale * scale)) return false;
  inv[0] = A / det, inv[1] = -(b * i - c * h) / det, inv[2] = (b * f - c * e) / det;
  inv[3] = B / det, inv[4] = (a * i - c * g) / det, inv[5] = -(a * f - c * d) / det;
  inv[6] = C / det, inv[7] = -(a * h - b * g) / det, inv[8] = (a * e - b * d) / det;
  return true;
}

}  // namespace

// Returns the number of pairs (written up to `capacity`: the caller calls again with room for
// all when it is larger), or -1 for a singular cell, non-finite positions or bad arguments.
extern "C" int64_t periodic_neighbour_pairs(int64_t n, const double* pos, const double* cell, double cutoff,
                                            int64_t capacity, int64_t* receivers, int64_t* senders,
                                            double* shifts, double* vectors) {
  double inv[9];
  if (n < 0 || !(cutoff > 0) || !invert(cell, inv)) return -1;
  if (n == 0) return 0;
  // plane spacing h_k = 1 / |column k of inv|; bins per direction, capped so that a large,
  // sparse cell does not allocate millions of empty bins (larger bins stay correct)
  int nb[3], reach[3];
  double h[3];
  for (int k = 0; k < 3; ++k) {
    h[k] = 1.0 / std::sqrt(inv[k] * inv[k] + inv[3 + k] * inv[3 + k] + inv[6 + k] * inv[6 + k]);
    nb[k] = std::max(1, (int)std::floor(h[k] / cutoff));
  }
  const int64_t max_bins = 8 * n + 64;
  while ((int64_t)nb[0] * nb[1] * nb[2] > max_bins) {
    const int k = (int)(std::max_element(nb, nb + 3) - nb);
    nb[k] = std::max(1, nb[k] / 2);
  }
  for (int k = 0; k < 3; ++k) reach[k] = (int)std::ceil(cutoff * nb[k] / h[k] - 1e-12);
  // wrapped positions, whole cells taken off, bin of each atom
  std::vector<double> wrapped(3 * n);
  std::vector<int64_t> taken(3 * n), bin(n);
  for (int64_t a = 0; a < n; ++a) {
    int64_t b = 0;
    double frac[3];
    for (int k = 0; k < 3; ++k) {
      const double f = pos[3 * a] * inv[k] + pos[3 * a + 1] * inv[3 + k] + pos[3 * a + 2] * inv[6 + k];
      // non-finite or absurdly far positions are refused (the caller validates first; vesin
      // then reports them), never binned: NaN distances would pass every comparison
      if (!(std::fabs(f) < 1e12)) return -1;
      const double whole = std::floor(f);
      frac[k] = f - whole;
      taken[3 * a + k] = (int64_t)whole;
      const int c = std::min(nb[k] - 1, std::max(0, (int)std::floor(frac[k] * nb[k])));
      b = b * nb[k] + c;
    }
    for (int x = 0; x < 3; ++x)
      wrapped[3 * a + x] = frac[0] * cell[x] + frac[1] * cell[3 + x] + frac[2] * cell[6 + x];
    bin[a] = b;
  }
  // atoms grouped by bin (a counting sort), their wrapped positions beside them
  const int64_t n_bins = (int64_t)nb[0] * nb[1] * nb[2];
  std::vector<int64_t> start(n_bins + 1, 0), order(n);
  for (int64_t a = 0; a < n; ++a) ++start[bin[a] + 1];
  for (int64_t b = 0; b < n_bins; ++b) start[b + 1] += start[b];
  {
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t a = 0; a < n; ++a) order[next[bin[a]]++] = a;
  }
  std::vector<double> binned(3 * n);
  for (int64_t q = 0; q < n; ++q)
    for (int x = 0; x < 3; ++x) binned[3 * q + x] = wrapped[3 * order[q] + x];
  const double cut2 = cutoff * cutoff;
  int64_t count = 0;
  for (int64_t i = 0; i < n; ++i) {
    int c[3];
    for (int k = 2, b = (int)bin[i]; k >= 0; --k) {
      c[k] = b % nb[k];
      b /= nb[k];
    }
    const double* pi = wrapped.data() + 3 * i;
    for (int d0 = -reach[0]; d0 <= reach[0]; ++d0) {
      const int64_t t0 = c[0] + d0, b0 = ((t0 % nb[0]) + nb[0]) % nb[0], s0 = (t0 - b0) / nb[0];
      for (int d1 = -reach[1]; d1 <= reach[1]; ++d1) {
        const int64_t t1 = c[1] + d1, b1 = ((t1 % nb[1]) + nb[1]) % nb[1], s1 = (t1 - b1) / nb[1];
        for (int d2 = -reach[2]; d2 <= reach[2]; ++d2) {
          const int64_t t2 = c[2] + d2, b2 = ((t2 % nb[2]) + nb[2]) % nb[2], s2 = (t2 - b2) / nb[2];
          double image[3];  // the bin's cell shift, as a vector
          for (int x = 0; x < 3; ++x) image[x] = s0 * cell[x] + s1 * cell[3 + x] + s2 * cell[6 + x];
          const int64_t b = (b0 * nb[1] + b1) * nb[2] + b2;
          for (int64_t q = start[b]; q < start[b + 1]; ++q) {
            const double* pj = binned.data() + 3 * q;
            const double dx = pj[0] + image[0] - pi[0], dy = pj[1] + image[1] - pi[1], dz = pj[2] + image[2] - pi[2];
            const double r2 = dx * dx + dy * dy + dz * dz;
            if (r2 >= cut2) continue;
            const int64_t j = order[q];
            // in the caller's coordinates: pos[j] - pos[i] + S @ cell, S = image - taken[j] + taken[i]
            const int64_t S[3] = {s0 - taken[3 * j] + taken[3 * i], s1 - taken[3 * j + 1] + taken[3 * i + 1],
                                  s2 - taken[3 * j + 2] + taken[3 * i + 2]};
            if (j == i && S[0] == 0 && S[1] == 0 && S[2] == 0) continue;
            if (count < capacity) {
              receivers[count] = i;
              senders[count] = j;
              for (int x = 0; x < 3; ++x) {
                shifts[3 * count + x] = (double)S[x];
                vectors[3 * count + x] = pos[3 * j + x] - pos[3 * i + x] +
                                         (S[0] * cell[x] + S[1] * cell[3 + x] + S[2] * cell[6 + x]);
              }
            }
            ++count;
          }
        }
      }
    }
  }
  return count;
}
