// Body of the GEMM micro-kernel, written once with GCC/Clang vector extensions and compiled once
// per instruction set (each including TU sets RF_VBYTES and its own -m flags). Everything here has
// internal linkage so the per-ISA copies never merge at link time.
#pragma once
#include <cstddef>
#include <cstring>

#include "ukernel.h"

#ifndef RF_VBYTES
#error "define RF_VBYTES (vector width in bytes) before including ukernel_impl.h"
#endif

namespace {

template <class T>
struct Vec {
  typedef T type __attribute__((vector_size(RF_VBYTES)));
  static constexpr int lanes = RF_VBYTES / sizeof(T);
};

template <class V>
inline V load(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <class V>
inline void store(void* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// MR x (NV vectors) tile, fully in registers.
template <class T, int MR, int NV>
void tile_fixed(int kc, const T* a, std::ptrdiff_t rsa, std::ptrdiff_t csa, const T* bp, T* c,
                std::ptrdiff_t ldc, int n, int accumulate) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::lanes;
  constexpr int NR = NV * L;
  V acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = V{} ;
  for (int k = 0; k < kc; ++k) {
    V b[NV];
    for (int v = 0; v < NV; ++v) b[v] = load<V>(bp + (std::ptrdiff_t)k * NR + v * L);
    const T* ak = a + (std::ptrdiff_t)k * csa;
    for (int i = 0; i < MR; ++i) {
      const T ai = ak[i * rsa];
      for (int v = 0; v < NV; ++v) acc[i][v] += ai * b[v];
    }
  }
  for (int i = 0; i < MR; ++i) {
    T* ci = c + i * ldc;
    if (n == NR) {
      for (int v = 0; v < NV; ++v) {
        V r = acc[i][v];
        if (accumulate) r += load<V>(ci + v * L);
        store<V>(ci + v * L, r);
      }
    } else {
      T tmp[NR];
      for (int v = 0; v < NV; ++v) store<V>(tmp + v * L, acc[i][v]);
      if (accumulate)
        for (int j = 0; j < n; ++j) ci[j] += tmp[j];
      else
        for (int j = 0; j < n; ++j) ci[j] = tmp[j];
    }
  }
}

// Dispatch on the number of valid rows so that no row of A beyond m is ever read.
template <class T, int MR, int NV>
void ukernel(int kc, const T* a, std::ptrdiff_t rsa, std::ptrdiff_t csa, const T* bp, T* c,
             std::ptrdiff_t ldc, int m, int n, int accumulate) {
  if constexpr (MR > 1) {
    if (m < MR) {
      ukernel<T, MR - 1, NV>(kc, a, rsa, csa, bp, c, ldc, m, n, accumulate);
      return;
    }
  }
  tile_fixed<T, MR, NV>(kc, a, rsa, csa, bp, c, ldc, n, accumulate);
}

template <int MRF, int MRD, int NV>
rnnfast::KernelSet make_kernel_set(const char* name) {
  rnnfast::KernelSet k;
  k.name = name;
  k.mr_f = MRF;
  k.nr_f = NV * Vec<float>::lanes;
  k.mr_d = MRD;
  k.nr_d = NV * Vec<double>::lanes;
  k.kf = &ukernel<float, MRF, NV>;
  k.kd = &ukernel<double, MRD, NV>;
  return k;
}

}  // namespace
