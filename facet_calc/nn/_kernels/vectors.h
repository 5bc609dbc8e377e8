// Explicit SIMD vectors of the build's width, shared by the CPU kernels (GCC/clang vector
// extensions: the same source compiles for every instruction-set level of __init__.py).
// FACET_VBYTES: AVX-512 64 bytes, AVX2 32, the x86-64 baseline (SSE2) 16.
#pragma once
#include <cstdint>
#include <cstring>

#if defined(__AVX512F__)
#define FACET_VBYTES 64
#elif defined(__AVX__)
#define FACET_VBYTES 32
#else
#define FACET_VBYTES 16
#endif
typedef float vf __attribute__((vector_size(FACET_VBYTES)));
typedef double vd __attribute__((vector_size(FACET_VBYTES)));
template <typename T> struct VecOf;
template <> struct VecOf<float> { typedef vf type; };
template <> struct VecOf<double> { typedef vd type; };
// a vector of half the width (same element type), for multiplicities of half the lanes
template <typename T> struct HalfOf { typedef T type __attribute__((vector_size(FACET_VBYTES / 2))); };
// the signed integer of a float type's width (lanes of shuffle masks, exponent bits)
template <typename T> struct IntOf;
template <> struct IntOf<float> { typedef int32_t type; };
template <> struct IntOf<double> { typedef int64_t type; };

// unaligned loads and stores (memcpy compiles to one vector move)
template <typename V, typename T>
inline V vload(const T* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V, typename T>
inline void vstore(T* p, const V& v) {
  std::memcpy(p, &v, sizeof(V));
}
