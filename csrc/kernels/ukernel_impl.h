// Body of the GEMM micro-kernel, written once with GCC/Clang vector extensions and compiled once
// per instruction set (each including TU sets RF_VBYTES and its own -m flags). Everything here has
// internal linkage so the per-ISA copies never merge at link time.
#pragma once
#include <cstddef>
#include <cstring>

#include "../rnnfast.h"
#include "ukernel.h"

#if !defined(RF_VBYTES) || !defined(RF_MR_F) || !defined(RF_MR_D) || !defined(RF_NV)
#error "define RF_VBYTES, RF_MR_F, RF_MR_D and RF_NV before including ukernel_impl.h"
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

#ifndef RF_PREFETCH_K
#define RF_PREFETCH_K 64
#endif
constexpr int kPrefetchK = RF_PREFETCH_K;
constexpr int kPrefetchMinK = 256;

// Partial sums of a one-row tile over a long panel (kc >= kLongK), where the ISA sets
// RF_KS1_LONG (0: the same count as for short panels). On the 2-core Zen 5 machine, AVX-512, a
// one-row GEMV streaming its panels from L2 ran ~1.5x faster with 2 sets (4 accumulators) than
// with 4 sets (8 accumulators) in a standalone loop, and batch-1 models of hidden 128-512 1.1-1.4x
// faster end to end; a hidden size of 64 (panels that stay in L1) was ~4% faster with 4.
#ifndef RF_KS1_LONG
#define RF_KS1_LONG 0
#endif
constexpr int kLongK = 128;

// MR x (NV vectors) tile, fully in registers. A tile with few rows has too few independent
// accumulators to hide the FMA latency (one row of 2 vectors is 2 dependency chains), so such
// tiles keep KS interleaved partial sums over k (k mod KS) and add them in a fixed order at the end.
// A one-row tile may use fewer of the sets over a long panel (RF_KS1_LONG). The order depends
// only on MR and kc, which depend only on the shapes, never on threads.
template <class T, int MR, int NV>
struct TileAcc {
  typedef typename Vec<T>::type V;
  static constexpr int L = Vec<T>::lanes;
  static constexpr int NR = NV * L;
  static constexpr int KS = MR * NV >= 8 ? 1 : 8 / (MR * NV);
  static constexpr int KSL = MR == 1 && RF_KS1_LONG > 0 && RF_KS1_LONG < KS ? RF_KS1_LONG : KS;
  V acc[KS][MR][NV];

  TileAcc() {
    for (int s = 0; s < KS; ++s)
      for (int i = 0; i < MR; ++i)
        for (int v = 0; v < NV; ++v) acc[s][i][v] = V{};
  }

  // acc += A[MR x kc] * Bp[kc x NR], k in order (k mod KS into partial sum k mod KS, or k mod KSL
  // over a long panel; a tail of fewer than KS (KSL) rows into the first).
  inline void add(int kc, const T* a, std::ptrdiff_t rsa, std::ptrdiff_t csa, const T* bp) {
    // A short panel (a small hidden size) stays in L1/L2 from one call to the next, where the
    // prefetches only take load slots: LSTM H64 B1 ran 15% slower with them. The choice is made
    // once per call, outside the k loop (tested inside it, GCC kept the test and a second taken
    // branch in every iteration of the hot loop). Whether to prefetch at all depends on the CPU
    // (stream_prefetch_on, rnnfast.h).
    int k = kc >= kPrefetchMinK && rnnfast::stream_prefetch_on()
                ? add_steps<true, KSL>(kc, a, rsa, csa, bp)
            : kc >= kLongK      ? add_steps<false, KSL>(kc, a, rsa, csa, bp)
                                : add_steps<false, KS>(kc, a, rsa, csa, bp);
    for (; k < kc; ++k) step(0, k, a, csa, rsa, bp);  // tail: into the first set
  }

  // One k row into partial sum s.
  inline void step(int s, int k, const T* a, std::ptrdiff_t csa, std::ptrdiff_t rsa, const T* bp) {
    V b[NV];
    for (int v = 0; v < NV; ++v) b[v] = load<V>(bp + (std::ptrdiff_t)k * NR + v * L);
    const T* ak = a + (std::ptrdiff_t)k * csa;
    for (int i = 0; i < MR; ++i) {
      const T ai = ak[i * rsa];
      for (int v = 0; v < NV; ++v) acc[s][i][v] += ai * b[v];
    }
  }

  // Whole groups of U rows (U partial sums); returns the first k not done.
  template <bool kPrefetch, int U>
  inline int add_steps(int kc, const T* a, std::ptrdiff_t rsa, std::ptrdiff_t csa, const T* bp) {
    int k = 0;
#pragma GCC unroll 4
    for (; k + U <= kc; k += U) {
      for (int s = 0; s < U; ++s) {
        // The panel streams from L2/L3 (or memory, for a big model at a small batch): ask for it
        // kPrefetchK rows ahead, one cache line per NR-wide row at a time. Reads past the
        // panel's end only prefetch, which never faults.
        if constexpr (kPrefetch) {
          const T* pf = bp + (std::ptrdiff_t)(k + s + kPrefetchK) * NR;
          for (int v = 0; v < NR; v += 64 / (int)sizeof(T)) __builtin_prefetch(pf + v);
        }
        step(s, k + s, a, csa, rsa, bp);
      }
    }
    return k;
  }

  // C = acc, or C += acc when accumulate; only the first n columns.
  inline void write(T* c, std::ptrdiff_t ldc, int n, int accumulate) {
    for (int s = 1; s < KS; ++s)
      for (int i = 0; i < MR; ++i)
        for (int v = 0; v < NV; ++v) acc[0][i][v] += acc[s][i][v];
    for (int i = 0; i < MR; ++i) {
      T* ci = c + i * ldc;
      if (n == NR) {
        for (int v = 0; v < NV; ++v) {
          V r = acc[0][i][v];
          if (accumulate) r += load<V>(ci + v * L);
          store<V>(ci + v * L, r);
        }
      } else {
        T tmp[NR];
        for (int v = 0; v < NV; ++v) store<V>(tmp + v * L, acc[0][i][v]);
        if (accumulate)
          for (int j = 0; j < n; ++j) ci[j] += tmp[j];
        else
          for (int j = 0; j < n; ++j) ci[j] = tmp[j];
      }
    }
  }
};

template <class T, int MR, int NV>
void tile_fixed(int kc, const T* a, std::ptrdiff_t rsa, std::ptrdiff_t csa, const T* bp, T* c,
                std::ptrdiff_t ldc, int n, int accumulate) {
  TileAcc<T, MR, NV> t;
  t.add(kc, a, rsa, csa, bp);
  t.write(c, ldc, n, accumulate);
}

// One row of A against two panels in one pass over k: the partial sums of two one-row tiles
// (TileAcc<T, 1, NV>: the same sets, order and tail as TileAcc::add, so the same bits as two
// tile_fixed<T, 1, NV> calls), one load of a(k) for both and two independent sets of accumulators
// in one pass. Short panels (kc < kLongK: a batch-1 step of a hidden size under 128, which stays
// in L1) always take it: standalone, AVX-512, the 8 panels of an LSTM H64 step took 1045 against
// 1214 TSC cycles (2-core Zen 5). Long panels only where pair_tiles_on() (rnnfast.h): on Zen 5,
// where the one-row tile keeps fewer partial sums over long panels (RF_KS1_LONG), the pair was
// 0.6-0.9x as fast; on the Zen 4 VM a standalone one-thread GEMV over packed panels streamed
// 1.1-1.3x faster in pairs (0.8 MB, from L2: 93 against 83 GB/s; 12.6 MB, L3: 77 against 65).
template <class T, int NV, bool kPrefetch, int U>
inline int pair_steps(int kc, const T* a, const T* b0, const T* b1, TileAcc<T, 1, NV>& x,
                      TileAcc<T, 1, NV>& y) {
  typedef typename Vec<T>::type V;
  constexpr int L = Vec<T>::lanes, NR = NV * L;
  int k = 0;
#pragma GCC unroll 4
  for (; k + U <= kc; k += U)
    for (int s = 0; s < U; ++s) {
      if constexpr (kPrefetch) {
        const std::ptrdiff_t pk = (std::ptrdiff_t)(k + s + kPrefetchK) * NR;
        for (int v = 0; v < NR; v += 64 / (int)sizeof(T)) {
          __builtin_prefetch(b0 + pk + v);
          __builtin_prefetch(b1 + pk + v);
        }
      }
      const T ak = a[k + s];
      for (int v = 0; v < NV; ++v) {
        x.acc[s][0][v] += ak * load<V>(b0 + (std::ptrdiff_t)(k + s) * NR + v * L);
        y.acc[s][0][v] += ak * load<V>(b1 + (std::ptrdiff_t)(k + s) * NR + v * L);
      }
    }
  return k;
}

// c0 (n0 columns) and c1 (n1 columns) from panels b0 and b1 against the row a (contiguous).
template <class T, int NV>
void tile_pair(int kc, const T* a, const T* b0, const T* b1, T* c0, int n0, T* c1, int n1) {
  typedef TileAcc<T, 1, NV> Acc;
  Acc x, y;
  const int k = kc >= kPrefetchMinK && rnnfast::stream_prefetch_on()
                    ? pair_steps<T, NV, true, Acc::KSL>(kc, a, b0, b1, x, y)
                : kc >= kLongK ? pair_steps<T, NV, false, Acc::KSL>(kc, a, b0, b1, x, y)
                               : pair_steps<T, NV, false, Acc::KS>(kc, a, b0, b1, x, y);
  for (int j = k; j < kc; ++j) {  // tail: into the first set, as TileAcc::add
    x.step(0, j, a, 1, 1, b0);
    y.step(0, j, a, 1, 1, b1);
  }
  x.write(c0, 0, n0, 0);
  y.write(c1, 0, n1, 0);
}

// Two operands summed in one set of accumulators, C = A1 B1p + A2 B2p (both A row-major, full-width
// panels): the fused forward step's x_t W_ih^T + h_{t-1} W_hh^T in one pass, without writing the
// first product out and reading it back.
template <class T, int MR, int NV>
void tile_fixed2(int k1, const T* a1, std::ptrdiff_t rs1, const T* b1, int k2, const T* a2,
                 std::ptrdiff_t rs2, const T* b2, T* c, std::ptrdiff_t ldc) {
  TileAcc<T, MR, NV> t;
  t.add(k1, a1, rs1, 1, b1);
  t.add(k2, a2, rs2, 1, b2);
  t.write(c, ldc, TileAcc<T, MR, NV>::NR, 0);
}

template <class T, int MR, int NV>
void ukernel2(int k1, const T* a1, std::ptrdiff_t rs1, const T* b1, int k2, const T* a2,
              std::ptrdiff_t rs2, const T* b2, T* c, std::ptrdiff_t ldc, int m) {
  if constexpr (MR > 1) {
    if (m < MR) {
      ukernel2<T, MR - 1, NV>(k1, a1, rs1, b1, k2, a2, rs2, b2, c, ldc, m);
      return;
    }
  }
  tile_fixed2<T, MR, NV>(k1, a1, rs1, b1, k2, a2, rs2, b2, c, ldc);
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

// Tile shape of this instruction set: RF_MR_F / RF_MR_D rows, RF_NV vectors wide.
template <class T> struct TileShape;
template <> struct TileShape<float> { static constexpr int mr = RF_MR_F, nv = RF_NV; };
template <> struct TileShape<double> { static constexpr int mr = RF_MR_D, nv = RF_NV; };

}  // namespace
