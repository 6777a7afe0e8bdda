// Machine probes compiled per instruction set, for the benchmark's roofline columns:
//   fma_loop:  `iters` rounds of independent vector FMAs on registers (enough chains to cover the
//              FMA latency on two pipes); returns the floating-point operations done.
//   read_sum:  streams `n` floats with full-width loads and several accumulators; returns the sum
//              (so the compiler cannot drop the loads).
#pragma once
#include <cstdint>

#include "ukernel_impl.h"

namespace {

double probe_fma_loop(int64_t iters) {
  typedef Vec<float>::type V;
  constexpr int kChains = 12;
  V acc[kChains];
  for (int c = 0; c < kChains; ++c) acc[c] = V{} + (float)(c + 1) * 1e-3f;
  V m = V{} + 0.999999f, a = V{} + 1e-7f;
  for (int64_t i = 0; i < iters; ++i) {
    for (int c = 0; c < kChains; ++c) acc[c] = acc[c] * m + a;
    __asm__ volatile("" : "+x"(m));  // keep the multiplier opaque so the loop is not folded
  }
  float s = 0;
  for (int c = 0; c < kChains; ++c)
    for (int l = 0; l < Vec<float>::lanes; ++l) s += acc[c][l];
  volatile float sink = s;
  (void)sink;
  return 2.0 * (double)iters * kChains * Vec<float>::lanes;
}

double probe_read_sum(const float* p, int64_t n) {
  typedef Vec<float>::type V;
  constexpr int L = Vec<float>::lanes, U = 8;
  V acc[U];
  for (int u = 0; u < U; ++u) acc[u] = V{};
  int64_t i = 0;
  for (; i + U * L <= n; i += U * L)
    for (int u = 0; u < U; ++u) acc[u] += load<V>(p + i + u * L);
  double s = 0;
  for (; i < n; ++i) s += p[i];
  for (int u = 0; u < U; ++u)
    for (int l = 0; l < L; ++l) s += acc[u][l];
  return s;
}

}  // namespace
