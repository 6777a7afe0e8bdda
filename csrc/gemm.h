// Packed, cache-blocked GEMM over the active micro-kernel, plus its plain reference twin.
//
// B operands are packed once into panels of nr columns (see ukernel.h); A is read through strides.
// The multithreaded entry points are called by EVERY thread of an enclosing OpenMP parallel region
// with its (tid, nth); each thread computes a fixed part, and no element depends on nth.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "kernels/ukernel.h"
#include "rnnfast.h"

namespace rnnfast {

using idx = std::ptrdiff_t;

inline idx ceil_div(idx a, idx b) { return (a + b - 1) / b; }
inline idx round_up(idx a, idx b) { return ceil_div(a, b) * b; }

// Contiguous share [lo, hi) of n items for thread tid of nth.
inline void split(idx n, int tid, int nth, idx* lo, idx* hi) {
  *lo = n * tid / nth;
  *hi = n * (tid + 1) / nth;
}

// Elements needed to pack a K x N operand into nr-wide panels.
inline idx packed_b_size(idx K, idx N, int nr) { return ceil_div(N, nr) * nr * K; }

// Everything below has internal linkage: every translation unit that includes this header gets
// its own copy, compiled with that unit's flags (the kernels' units are built with -mavx2 or
// -mavx512f). As inline templates shared by all units, the linker would keep one copy for every
// caller: whichever unit came first (so far the baseline one, whose packing ran as SSE2 code on
// every path; a unit built for a newer instruction set coming first would have put its
// instructions in front of CPUs without them).
namespace {

// Packed B: panel p holds b(k, p*nr + j) at out[p*K*nr + k*nr + j], zero past column N.

// One panel from a row-major source: dst[k*nr + j] = src[k*ld + j] for j < nv, zero after.
// NR > 0: nr == nv == NR known at compile time (whole panels: fixed-size copies).
template <class T, int NR = 0>
void pack_panel_rows(idx K, idx nv, int nr, const T* src, idx ld, T* dst) {
  if constexpr (NR > 0) {
    for (idx k = 0; k < K; ++k) std::memcpy(dst + k * NR, src + k * ld, NR * sizeof(T));
  } else {
    for (idx k = 0; k < K; ++k) {
      std::memcpy(dst + k * nr, src + k * ld, (size_t)nv * sizeof(T));
      std::fill(dst + k * nr + nv, dst + (k + 1) * nr, T(0));
    }
  }
}

// One panel from a source holding the panel's columns as rows (a transpose):
// dst[k*nr + j] = src[j*ld + k] for j < nv, zero after. Blocks of kB k keep the nv source lines
// and the kB destination rows of a block in L1; a per-element index lambda (the earlier packer)
// took ~3 ns per element here (GRU H512: 5.3 ms to pack, more than a training step).
// NR > 0 as in pack_panel_rows.
template <class T, int NR = 0>
void pack_panel_cols(idx K, idx nv, int nr, const T* src, idx ld, T* dst) {
  constexpr idx kB = 16;
  idx k0 = 0;
  if constexpr (NR > 0) {
    for (; k0 + kB <= K; k0 += kB) {
      T blk[NR][kB];
      for (int j = 0; j < NR; ++j) std::memcpy(blk[j], src + j * ld + k0, sizeof blk[j]);
      for (idx k = 0; k < kB; ++k)
        for (int j = 0; j < NR; ++j) dst[(k0 + k) * NR + j] = blk[j][k];
    }
    nv = nr = NR;
  }
  for (; k0 < K; k0 += kB) {
    const idx k1 = std::min(K, k0 + kB);
    for (idx j = 0; j < nv; ++j) {
      const T* s = src + j * ld;
      for (idx k = k0; k < k1; ++k) dst[k * nr + j] = s[k];
    }
    if (nv < nr)
      for (idx k = k0; k < k1; ++k) std::fill(dst + k * nr + nv, dst + (k + 1) * nr, T(0));
  }
}

// Whole panels at the usual widths get the fixed-size copies.
template <class T, bool kCols>
void pack_panel(idx K, idx nv, int nr, const T* src, idx ld, T* dst) {
  auto go = [&](auto fixed) {
    constexpr int N = decltype(fixed)::value;
    if constexpr (kCols)
      pack_panel_cols<T, N>(K, nv, nr, src, ld, dst);
    else
      pack_panel_rows<T, N>(K, nv, nr, src, ld, dst);
  };
  if (nv == nr && nr == 8)
    go(std::integral_constant<int, 8>{});
  else if (nv == nr && nr == 16)
    go(std::integral_constant<int, 16>{});
  else if (nv == nr && nr == 32)
    go(std::integral_constant<int, 32>{});
  else
    go(std::integral_constant<int, 0>{});
}

// Panels [p0, p1) of b = a row-major K x N matrix (leading dimension ld), or, with cols, of b
// whose column n is row n of src (b(k, n) = src[n*ld + k]).
template <class T>
void pack_b_range(idx K, idx N, int nr, idx p0, idx p1, const T* src, idx ld, bool cols, T* out) {
  for (idx p = p0; p < p1; ++p) {
    const idx n0 = p * nr, nv = std::min<idx>(nr, N - n0);
    if (cols)
      pack_panel<T, true>(K, nv, nr, src + n0 * ld, ld, out + p * K * nr);
    else
      pack_panel<T, false>(K, nv, nr, src + n0, ld, out + p * K * nr);
  }
}

// Pack a row-major K x N matrix (leading dimension ld), threads splitting the panels.
template <class T>
void pack_b_rowmajor_mt(int tid, int nth, idx K, idx N, const T* b, idx ld, int nr, T* out) {
  idx p0, p1;
  split(ceil_div(N, nr), tid, nth, &p0, &p1);
  pack_b_range<T>(K, N, nr, p0, p1, b, ld, false, out);
}

// Cache blocking. KC: depth of one pass (a B micro-panel KC x nr stays in L1);
// MC x KC block of A stays in L2 across the NC/nr panels of a tile.
constexpr idx kKC = 256;
constexpr idx kMC = 96;
constexpr idx kNC = 512;

template <class T, int MR>
inline void copy_rows(const T* src, T* d) {
  for (int r = 0; r < MR; ++r) d[r] = src[r];
}

// Copy the A block rows [i0, i1) x k [p0, p0 + kc) into panels of mr rows: panel q holds
// a(i0 + q*mr + r, p0 + k) at out[q*kc*mr + k*mr + r] (rows past i1 are zero).
template <class T>
void pack_a_block(const T* a, idx rsa, idx csa, idx i0, idx i1, idx p0, int kc, int mr, T* out) {
  if (rsa == 1) {
    // Transposed A (e.g. dG^T, whose k rows are G*H values apart): the mr values of one k are
    // contiguous. The rows of a k range are read once per panel, so k goes in blocks of 8: their
    // lines stay in L1 from one panel to the next even when the row stride is a multiple of 4 KB
    // (all in one L1 set; a whole KC range of rows would be evicted before the next panel came).
    // Plain loops, not memcpy: a runtime-sized memcpy of mr values is a libc call per k.
    constexpr int kKB = 8;
    for (int k0 = 0; k0 < kc; k0 += kKB) {
      const int k1 = std::min(kc, k0 + kKB);
      // The k rows are a page or more apart (dG^T: G*H values), where the hardware prefetchers
      // do not follow: ask for the rows two blocks ahead (prefetches past A's end never fault).
      for (int k = k0 + 2 * kKB; k < k0 + 3 * kKB; ++k)
        for (idx i = i0; i < i1; i += 64 / (idx)sizeof(T))
          __builtin_prefetch(a + i + (p0 + k) * csa);
      for (idx i = i0, q = 0; i < i1; i += mr, ++q) {
        T* dst = out + q * kc * mr;
        const idx rows = std::min<idx>(mr, i1 - i);
        const T* src = a + i + p0 * csa;
        if (rows == 6 && mr == 6) {
          for (int k = k0; k < k1; ++k) copy_rows<T, 6>(src + k * csa, dst + k * 6);
        } else if (rows == 8 && mr == 8) {
          for (int k = k0; k < k1; ++k) copy_rows<T, 8>(src + k * csa, dst + k * 8);
        } else {
          for (int k = k0; k < k1; ++k) {
            T* d = dst + k * mr;
            for (idx r = 0; r < rows; ++r) d[r] = src[k * csa + r];
            for (idx r = rows; r < mr; ++r) d[r] = T(0);
          }
        }
      }
    }
    return;
  }
  for (idx i = i0, q = 0; i < i1; i += mr, ++q) {
    T* dst = out + q * kc * mr;
    const idx rows = std::min<idx>(mr, i1 - i);
    for (int k = 0; k < kc; ++k) {
      const T* src = a + i * rsa + (p0 + k) * csa;
      for (idx r = 0; r < rows; ++r) dst[k * mr + r] = src[r * rsa];
      for (idx r = rows; r < mr; ++r) dst[k * mr + r] = T(0);
    }
  }
}

// One KC chunk (depth kc from pc, of K) of the row block [ib, ie) of C, over its columns
// [jb, je): A read from apack when packed for this block and chunk, else in place.
template <class T>
inline void gemm_block(const Kern<T>& kern, int kc, idx pc, idx K, const T* a, idx rsa, idx csa,
                       const T* apack, idx ib, idx ie, idx jb, idx je, const T* bp, T* c, idx ldc,
                       bool acc) {
  const int mr = kern.mr, nr = kern.nr;
  // One contiguous row written, not accumulated (a one-step input projection of batch 1): the
  // panels two at a time where pair_tiles_on (tile_pair, same bits).
  if (ie - ib == 1 && !acc && !apack && csa == 1 && kern.pair && pair_tiles_on()) {
    const T* ar = a + ib * rsa + pc;
    T* cr = c + ib * ldc;
    idx j = jb;
    for (; j + nr < je; j += 2 * (idx)nr)
      kern.pair(kc, ar, bp + (j / nr) * K * nr + pc * nr, bp + (j / nr + 1) * K * nr + pc * nr,
                cr + j, nr, cr + j + nr, (int)std::min<idx>(nr, je - j - nr));
    if (j < je)
      kern.fn(kc, ar, rsa, 1, bp + (j / nr) * K * nr + pc * nr, cr + j, ldc, 1,
              (int)std::min<idx>(nr, je - j), 0);
    return;
  }
  for (idx j = jb; j < je; j += nr) {
    const T* bpanel = bp + (j / nr) * K * nr + pc * nr;
    const int n = (int)std::min<idx>(nr, je - j);
    for (idx i = ib; i < ie; i += mr) {
      const int m = (int)std::min<idx>(mr, ie - i);
      // Accumulating into C (a weight gradient): its rows are read, added to and written back,
      // and with a shallow K (one step of a small batch) waiting for them is most of the time.
      // Ask for the next row tile's C lines now, while this tile computes.
      if (acc)
        for (idx r = i + mr; r < std::min(ie, i + 2 * (idx)mr); ++r) {
          __builtin_prefetch(c + r * ldc + j, 1);
          __builtin_prefetch(c + r * ldc + j + n - 1, 1);
        }
      if (apack)
        kern.fn(kc, apack + (i - ib) * kc, 1, mr, bpanel, c + i * ldc + j, ldc, m, n, acc);
      else
        kern.fn(kc, a + i * rsa + pc * csa, rsa, csa, bpanel, c + i * ldc + j, ldc, m, n, acc);
    }
  }
}

// The depth loop of row block [ib, ie) of A, shared by gemm_mt and gemm2_mt: KC chunks, where A
// not row-major (csa != 1) is first copied into mr-row panels per chunk (a thread-local copy, at
// most mc rows); f(kc, pc, apack or null, acc) computes one chunk, acc: add into C.
// Depth blocks of kKC keep a B panel block in L1 for the next row tile. With a single row tile
// (M <= mr: a one-step input projection of a small batch) nothing reuses it, and walking B in
// kKC blocks only cuts each panel's stream in pieces: one block of depth K there (one-step
// GRU H512 B1 ~1.07x, LSTM H512 B4 ~1.05x). The depth blocking depends on M only.
template <class T, class F>
inline void for_each_depth_chunk(idx M, idx K, const T* a, idx rsa, idx csa, int mr, idx mc,
                                 idx ib, idx ie, bool accumulate, F&& f) {
  const idx kcb = M <= mr ? std::max<idx>(K, 1) : kKC;
  const bool pack_a = csa != 1;
  static thread_local std::vector<T> apack;
  if (pack_a && (idx)apack.size() < mc * kcb) apack.resize(mc * kcb);
  for (idx pc = 0; pc < K; pc += kcb) {
    const int kc = (int)std::min<idx>(kcb, K - pc);
    if (pack_a) pack_a_block(a, rsa, csa, ib, ie, pc, kc, mr, apack.data());
    f(kc, pc, pack_a ? apack.data() : nullptr, accumulate || pc > 0);
  }
}

// C[M x N] (=|+=) A[M x K] * B[K x N], B packed (packed_b_size(K, N, nr)); a(i,k) = a[i*rsa+k*csa].
// The (MC x NC) tiles of C are dealt to threads; within a tile the k loop runs in fixed KC chunks
// (one chunk of depth K when M <= mr).
// A row-major A is read in place; any other A (e.g. transposed, whose rows are a cache line
// apart) is first copied into mr-row panels per (tile, KC chunk), a thread-local copy.
// backwards (used only when M <= mr): walk this thread's tiles last to first. Callers alternate it
// from call to call over the same B (a one-step input projection), so that the tiles of B left in
// L2 by one call are read first by the next. The panels inside a tile keep their order: walked
// backwards too, a flipped call of GRU H512 B1 T1 took ~1 us longer than an unflipped one
// (C++ harness, 2-core Zen 5, AVX-512), whereas with the tiles alone both gain (15.6 us without
// the flip, 13.2 and 13.3 with it). Same results either way.
template <class T>
void gemm_mt(const Kern<T>& kern, int tid, int nth, idx M, idx N, idx K, const T* a, idx rsa,
             idx csa, const T* bp, T* c, idx ldc, bool accumulate, bool backwards = false) {
  const int mr = kern.mr, nr = kern.nr;
  const idx mc = round_up(kMC, mr);
  const idx mt = ceil_div(M, mc);
  // Few rows (a short or small-batch input projection): (mc x kNC) tiles would be too few to
  // share evenly (3 tiles on 2 threads leave one idle a third of the time), so narrow them until
  // there are at least 4 per thread. Results do not depend on the tiling: every element is summed
  // over k in the same KC chunks whatever tile holds it.
  idx nc = round_up(kNC, nr);
  if (mt * ceil_div(N, nc) < 4 * (idx)nth)
    nc = std::max<idx>(nr, round_up(ceil_div(N, ceil_div(4 * (idx)nth, mt)), nr));
  const idx nt = ceil_div(N, nc);
  idx t0, t1;
  split(mt * nt, tid, nth, &t0, &t1);
  backwards = backwards && M <= mr;
  for (idx q = t0; q < t1; ++q) {
    const idx t = backwards ? t1 - 1 - (q - t0) : q;
    const idx ib = (t % mt) * mc, jb = (t / mt) * nc;
    const idx ie = std::min(M, ib + mc), je = std::min(N, jb + nc);
    for_each_depth_chunk<T>(M, K, a, rsa, csa, mr, mc, ib, ie, accumulate,
                            [&](int kc, idx pc, const T* ap, bool acc) {
                              gemm_block<T>(kern, kc, pc, K, a, rsa, csa, ap, ib, ie, jb, je,
                                            bp, c, ldc, acc);
                            });
  }
}

// Two products over one A, C1 (=|+=) A B1 (M x N1) and C2 (=|+=) A B2 (M x N2), B1 and B2 packed
// like gemm_mt's B: each block of A is packed once for both (dW_ih and dW_hh of an LSTM or RNN read
// the same dG^T). Row blocks of A (all columns of both products) are dealt to threads; within a
// block every element is summed over k in gemm_mt's KC chunks, so each product has gemm_mt's bits.
template <class T>
void gemm2_mt(const Kern<T>& kern, int tid, int nth, idx M, idx K, const T* a, idx rsa, idx csa,
              idx N1, const T* bp1, T* c1, idx ldc1, idx N2, const T* bp2, T* c2, idx ldc2,
              bool accumulate) {
  const int mr = kern.mr;
  // At least 4 row blocks per thread where M allows (results do not depend on the blocking).
  const idx mc = std::min(round_up(kMC, mr),
                          std::max<idx>(mr, round_up(ceil_div(M, 4 * (idx)nth), mr)));
  const idx mt = ceil_div(M, mc);
  idx t0, t1;
  split(mt, tid, nth, &t0, &t1);
  for (idx t = t0; t < t1; ++t) {
    const idx ib = t * mc, ie = std::min(M, ib + mc);
    for_each_depth_chunk<T>(M, K, a, rsa, csa, mr, mc, ib, ie, accumulate,
                            [&](int kc, idx pc, const T* ap, bool acc) {
                              gemm_block<T>(kern, kc, pc, K, a, rsa, csa, ap, ib, ie, 0, N1, bp1,
                                            c1, ldc1, acc);
                              gemm_block<T>(kern, kc, pc, K, a, rsa, csa, ap, ib, ie, 0, N2, bp2,
                                            c2, ldc2, acc);
                            });
  }
}

// Reference twin: the textbook triple loop, b(k, n) read through strides.
template <class T>
void gemm_ref(idx M, idx N, idx K, const T* a, idx rsa, idx csa, const T* b, idx rsb, idx csb,
              T* c, idx ldc, bool accumulate) {
  for (idx i = 0; i < M; ++i)
    for (idx j = 0; j < N; ++j) {
      T s = 0;
      for (idx k = 0; k < K; ++k) s += a[i * rsa + k * csa] * b[k * rsb + j * csb];
      c[i * ldc + j] = accumulate ? c[i * ldc + j] + s : s;
    }
}

}  // namespace

}  // namespace rnnfast
