// The engine: walks layers x directions x time for inference, training forward and BPTT.
// This file is compiled once per instruction set (kernels/isa_*.cpp set RF_VBYTES, RF_ISA and their
// own -m flags), so the GEMM micro-kernel is inlined into the fused step and the gate math is
// vectorised at that width. Everything here has internal linkage or lives in namespace RF_ISA.
//
// Per (layer, direction) there is one OpenMP parallel region. Inside it:
//   forward:  Gx = X W_ih^T for all steps (one GEMM), then per step the threads compute, block of
//             hidden units by block (all gates of a block together), the recurrent GEMM tile
//             h_{t-1} W_hh^T and at once the cell's gate math on it. Each thread starts with its own
//             blocks and then takes unstarted ones of others (StepScheduler); a step ends when all
//             blocks are done, which publishes h_t.
//   backward: per step (phase A) each thread turns dL/dh_t of its units into pre-activation
//             gradients dG_t, barrier, (phase B) computes dL/dh_{t-1} = dG_t W_hh for its units.
//             After the loop dW_ih, dW_hh, biases and dX come from large GEMMs/reductions.
// Every output element is produced by one thread in a fixed order, so results do not depend on
// the number of threads.
#pragma once
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../barrier.h"
#include "../cells.h"
#include "../gemm.h"
#include "../geometry.h"
#include "../rnnfast.h"
#include "../scratch.h"
#include "../team_tuner.h"
#include "probe_impl.h"
#include "ukernel_impl.h"

#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define RF_HAVE_MXCSR 1
#endif

#ifndef RF_ISA
#error "define RF_ISA (the namespace of this instruction-set build) before including driver_impl.h"
#endif

namespace rnnfast {
namespace RF_ISA {
namespace {

// The micro-kernel of this TU, called directly (inlined) by the fused per-step loops.
template <class T>
inline void tile_gemm(int kc, const T* a, idx rsa, idx csa, const T* bp, T* c, idx ldc, int m,
                      int n, int accumulate) {
  ukernel<T, TileShape<T>::mr, TileShape<T>::nv>(kc, a, rsa, csa, bp, c, ldc, m, n, accumulate);
}

// The two-operand tile of the fused step: c = a1 b1 + a2 b2 (ukernel2).
template <class T>
inline void tile_gemm2(int k1, const T* a1, idx rs1, const T* b1, int k2, const T* a2, idx rs2,
                       const T* b2, T* c, idx ldc, int m) {
  ukernel2<T, TileShape<T>::mr, TileShape<T>::nv>(k1, a1, rs1, b1, k2, a2, rs2, b2, c, ldc, m);
}

template <class T>
Kern<T> kern_for() {
  return Kern<T>{&ukernel<T, TileShape<T>::mr, TileShape<T>::nv>, TileShape<T>::mr,
                 TileShape<T>::nv * Vec<T>::lanes, &tile_pair<T, TileShape<T>::nv>};
}


int thread_id() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}
int thread_count() {
#ifdef _OPENMP
  return omp_get_num_threads();
#else
  return 1;
#endif
}

// Runs body() on a team of nt threads. A team of one runs on the calling thread without a parallel
// region: libgomp allocates and frees a team for every region, even of one thread (0.5 us of the
// 3 us that Stream.step took for an LSTM with hidden size 1). Outside a region thread_id() is 0,
// thread_count() 1, and an `omp single` is run by the caller.
template <class F>
void run_team(int nt, F&& body) {
  if (nt <= 1) {
    body();
    return;
  }
#pragma omp parallel num_threads(nt)
  body();
}

// Flush denormals to zero (float only) for the lifetime of a parallel region, per thread.
template <class T>
struct DenormalGuard {
#ifdef RF_HAVE_MXCSR
  unsigned saved = 0;
  DenormalGuard() {
    if (sizeof(T) == 4) {
      saved = _mm_getcsr();
      _mm_setcsr(saved | 0x8040u);  // FTZ | DAZ
    }
  }
  ~DenormalGuard() {
    if (sizeof(T) == 4) _mm_setcsr(saved);
  }
#endif
};

template <class T>
struct LayerPtrs {
  const T *wih, *whh, *bih, *bhh;              // parameters (biases point at zeros without bias)
  const T *pk_wihT, *pk_whhT, *pk_whh, *pk_wih;  // packed operands
  T *hs, *cs, *st;                             // training workspace (null for inference)
  const T* peep;                               // LSTM peepholes (3, H): p_i, p_f, p_o, or null
  T clip;                                      // clip threshold (0: off; LSTM, RNN, GRU)
  bool whh_finite;                             // no Inf or NaN in W_hh (Geometry::packed_flags)
};

template <class T>
LayerPtrs<T> layer_ptrs(const Geometry& g, idx l, idx d, const T* params, const T* packed,
                        T* ws, const T* zeros) {
  LayerPtrs<T> p;
  const T* base = params + g.param_off(l, d);
  const idx in = g.in_size(l);
  p.wih = base;
  p.whh = base + g.GH * in;
  p.bih = g.bias ? p.whh + g.GH * g.H : zeros;
  p.bhh = g.bias ? p.bih + g.GH : zeros;
  p.peep = g.peep ? p.whh + g.GH * g.H + (g.bias ? 2 * g.GH : 0) : nullptr;
  p.clip = T(g.clip);
  const T* pk = packed + g.packed_off(l, d);
  p.pk_wihT = pk;
  p.pk_whhT = p.pk_wihT + g.pk_wihT(l);
  p.pk_whh = p.pk_whhT + g.pk_whhT();
  p.pk_wih = p.pk_whh + g.pk_whh();
  p.whh_finite = packed[g.packed_flags() + l * g.D + d] != T(0);
  p.hs = ws ? ws + g.ws_hs(l, d) : nullptr;
  p.cs = ws && g.lstm ? ws + g.ws_cs(l, d) : nullptr;
  p.st = ws && g.S ? ws + g.ws_st(l, d) : nullptr;
  return p;
}

static_assert(StepScheduler::kMaxThreads >= kMaxTeamThreads,
              "the scheduler has a counter for every thread of a team");

// The threads of one parallel region: who I am, how many we are, and the barrier we share.
struct Team {
  int tid, nth;
  SpinBarrier* bar;
  StepScheduler* sched;  // forward time loop only
  bool flip;             // this call walks the weights the other way round (forward_t)
  void sync() const { bar->wait(); }
};

// Whether forward_direction computes layer l's input projection step by step, fused into the
// block loop (x_t W_ih^T for a block's columns right before its recurrent tiles), instead of as one
// GEMM over all steps first. The big GEMM writes a (T, B, G*H) buffer that streams through the
// caches twice (written, then read by the gate math); fused, it shrinks to one step that stays in
// L1/L2, at the price of reading all of W_ih once per step. Automatic choice (fused_input_mode()
// == -1), from paired timings of the two paths on the 2-core Zen 5 machine:
//   - W_ih and W_hh together within 8 MB, half this machine's last-level cache, so that they stay
//     cached across steps (LSTM H1024 B16, 32 MB of weights: 15% slower fused; RNN H1760 B16:
//     9% slower);
//   - and a batch that reuses each W_ih row read per step: 16+ rows (LSTM/GRU/RNN B16-B32 with
//     inputs 64-512: 2-25% faster fused, 25% for LSTM I64 H256 B32 T100), or 8+ rows with an
//     input of at most 8 values per row (GRU I64 H256 B8: 10% faster, LSTM I40 H320 B8: 7%;
//     LSTM I128-I512 B8: 1-4% slower; B2-B4: up to 6% slower) on AVX2, whose row tiles have 6
//     rows; with 8-row tiles (mr >= 8: AVX-512), where 8 rows are one full tile per step, 8+ rows
//     whatever the input (same machine, AVX-512: LSTM I128 H256 B8 7% faster fused, LSTM I256
//     H256 B8 6%, RNN I512 H512 B8 3%, LSTM I512 H512 B8 2%, GRU I512 H512 B8 even; B4 3-15%
//     slower, B2 24% slower, so those stay unfused).
// Fixed figures, not the cache sizes the OS reports (in a VM those can be the host's), so that the
// choice, and with it the bits, is the same on every machine of one instruction set; never from
// the thread count. Needs whole panels per gate (nr divides H).
constexpr double kFuseMaxWeightBytes = 8.0 * (1 << 20);
template <class T>
inline bool fused_input(const Geometry& g, idx l, int mode) {
  if (mode == 0 || g.H % g.nr != 0) return false;
  if (mode == 1) return true;
  const idx in = g.in_size(l);
  const double weights = (double)g.GH * (double)(in + g.H) * (double)sizeof(T);
  return weights <= kFuseMaxWeightBytes &&
         (g.B >= 16 || (g.B >= 8 && (in <= 8 * g.B || TileShape<T>::mr >= 8)));
}

// Whether backward_direction computes dW_ih and dW_hh in one pass over dG^T (gemm2_mt): cells
// whose dGh is dGx (all but the GRUs), from kSharedPackMinSteps steps on.
constexpr idx kSharedPackMinSteps = 8;
template <class Cell>
inline bool shared_weight_grad_pass(const Geometry& g) {
  return !Cell::kSplitGh && !kResetBefore<Cell> && g.T >= kSharedPackMinSteps;
}

inline bool row_active(const int64_t* len, idx b, idx t) { return !len || t < len[b]; }

// Gate math of units [j0, j1) of one batch row (all pointers indexed by unit; gh by unit too, i.e.
// already offset by -j0 into the tile). Branch-free so that it vectorises.
// pw, clip: the LSTM variants' extras (kCellTakesExtras), unused by the other cells.
template <class T, class Cell, bool Store, int W = 0>
inline void forward_units(idx j0, idx j1, const T* gx, const T* bx, const T* gh, idx ts,
                          const T* bh, idx gs, const T* hp, const T* cp, T* hn, T* cn, T* st,
                          T* y, const T* pw, T clip) {
  // W > 0: a full block of W units whose tile stride is W too; a compile-time trip count lets the
  // compiler emit straight vector code without loop prologue/epilogue (blocks are only 1-4 vectors).
  const idx n = W > 0 ? W : j1 - j0;
  if constexpr (W > 0) ts = W;
#pragma GCC ivdep
  for (idx k = 0; k < n; ++k) {
    const idx j = j0 + k;
    T h, c;
    if constexpr (kCellTakesExtras<Cell>)
      Cell::template fwd<Store>(gx + j, bx + j, gh + j, ts, bh + j, gs, hp[j], cp[j], &h, &c,
                                st + j, pw + j, clip);
    else
      Cell::template fwd<Store>(gx + j, bx + j, gh + j, ts, bh + j, gs, hp[j],
                                Cell::kHasC ? cp[j] : T(0), &h, &c, st + j);
    hn[j] = h;
    y[j] = h;
    if constexpr (Cell::kHasC) cn[j] = c;
  }
}

// Backward gate math of units [j0, j1) of one batch row: dh_cur holds dL/dh_t (without the
// output's part, added from dy here) and receives the part of dL/dh_{t-1} that bypasses W_hh.
template <class T, class Cell, bool HasDy>
inline void backward_units(idx j0, idx j1, T* dh_cur, const T* dy, const T* hp, const T* hn,
                           const T* cp, const T* cn, const T* st, idx gs, T* dc, T* dgx, T* dgh,
                           const T* pw) {
#pragma GCC ivdep
  for (idx j = j0; j < j1; ++j) {
    T dh = dh_cur[j];
    if constexpr (HasDy) dh += dy[j];
    T direct;
    if constexpr (kCellTakesExtras<Cell>)
      Cell::bwd(dh, hp[j], st + j, gs, hn[j], cp[j], cn[j], dc + j, dgx + j, dgh + j, &direct,
                pw + j);
    else
      Cell::bwd(dh, hp[j], st + j, gs, hn[j], Cell::kHasC ? cp[j] : T(0),
                Cell::kHasC ? cn[j] : T(0), dc + j, dgx + j, dgh + j, &direct);
    dh_cur[j] = direct;
  }
}

// ---------------------------------------------------------------------------------------------
// Forward over one (layer, direction); called by every thread of the region.
//   xin (T, B, In)  ->  yout columns [d*H, d*H+H) of (T, B, D*H);  h0/c0, hn/cn (B, H) or null.
//   gx (T, B, GH) scratch; hbuf/cbuf (2, B, H) ping-pong states for inference.
//   fuse: the input projection step by step (fused_input); wide: 1-4 rows in blocks of
//   kWidePanels panels (forward_panels_per_block; the scheduler counts those blocks).
template <class T, class Cell>
void forward_direction(const Geometry& g, idx l, idx d, const LayerPtrs<T>& P, const T* xin,
                       T* yout, const T* h0, const T* c0, T* hn, T* cn, const int64_t* len,
                       T* gx, T* hbuf, T* cbuf, bool fuse, bool wide, const T* zgx,
                       const Team& team) {
  const int tid = team.tid, nth = team.nth;
  const Kern<T> kern = kern_for<T>();
  const int mr = kern.mr, nr = g.nr;
  const idx T_ = g.T, B = g.B, H = g.H, GH = g.GH, DH = g.DH, S = g.S, in = g.in_size(l);
  constexpr int G = Cell::G;
  constexpr int kNR = TileShape<T>::nv * Vec<T>::lanes;  // == nr
  const bool rev = d == 1, train = P.hs != nullptr;

  // Input projection gx = xin W_ih^T (b_ih is added in the gate math: writing the bias first and
  // accumulating would stream this buffer through memory twice more). Either for all steps at once,
  // one large GEMM, or (fused_input) step by step inside the block loop below, into a one-step gx.
  if (!fuse)
    gemm_mt<T>(kern, tid, nth, T_ * B, GH, in, xin, in, 1, P.pk_wihT, gx, GH, false,
               team.flip);
  // A one-step call of a small batch (T*B <= mr) takes this path too. Two alternatives measured
  // against it on the 2-core Zen 5 machine (AVX-512) and dropped: each block computing its own
  // columns of x W_ih^T in the block loop below (wide blocks kept, same bits, no barrier between
  // this GEMM and the gate math): GRU/LSTM H256-H512 B1-B4 T1 0.81-0.94x as fast, H64-H128
  // 0.97-1.05x; and this GEMM's tiles claimed dynamically (own first, then the others'): GRU
  // H512 B1 T1 even with 8 tiles, 5-20% slower with 32. In that call (15.0 us, C++ harness on the
  // core library) each thread's share of the GEMM took 13.6-13.9 us and the barrier below cost
  // the threads 0.1 and 0.9 us. And for a step from a given state (a stream's step), both
  // products in one pass over the (gate, unit block) panels before the block loop, so that
  // W_ih and W_hh form one stream that the call-to-call flip (StepScheduler) walks both ways:
  // same bits, but LSTM/GRU H512-H1024 B1-B4 streams 0.94-0.96x as fast (Python, 2 threads).
  // Fused, and the cell adds the two projections before anything else (all but the GRU): one
  // GEMM pass per tile computes their sum (tile_gemm2), and gx is not used.
  const bool merged = fuse && !Cell::kSplitGh;
  // Without an initial state the first step's previous state is zero, so its recurrent product is
  // exactly zero (W_hh finite: 0 * w is +-0 and sums of +-0 into accumulators that start at +0 are
  // +0): that step reads no W_hh and its tiles are filled with zeros instead. A one-step call
  // then streams only W_ih. (Merged, the product is just left out of the tile; the sum can then
  // differ from the full one only in the sign of a zero.)
  const bool zero_start = !h0 && P.whh_finite;

  // This thread's hidden units: blocks [u0, u1) of nr units, i.e. units [j0, j1).
  idx u0, u1;
  split(g.unit_blocks(), tid, nth, &u0, &u1);
  const idx j0 = std::min(H, u0 * nr), j1 = std::min(H, u1 * nr);

  T* hinit = train ? P.hs + (rev ? T_ : 0) * B * H : hbuf;
  T* cinit = Cell::kHasC ? (train ? P.cs + (rev ? T_ : 0) * B * H : cbuf) : nullptr;
  for (idx b = 0; b < B; ++b)
    for (idx j = j0; j < j1; ++j) {
      hinit[b * H + j] = h0 ? h0[b * H + j] : T(0);
      if (cinit) cinit[b * H + j] = c0 ? c0[b * H + j] : T(0);
    }
  team.sync();

  // Recurrent pre-activations of a chunk of rows: (rows, G*nr). Rows are taken in chunks of whole
  // row tiles so that each gate's weight panel is loaded once per chunk and then reused, from L1,
  // by every row tile of the chunk (row tiles outermost would stream the thread's whole weight
  // slice from L2/L3 once per row tile).
  constexpr int kTileBytes = 16384;
  alignas(64) T tile[kTileBytes / sizeof(T)];
  const idx row_tiles = ceil_div(B, (idx)mr);
  const idx max_tiles = std::max<idx>(1, (idx)(kTileBytes / sizeof(T)) / ((idx)mr * G * nr));
  const idx chunk_tiles = ceil_div(row_tiles, ceil_div(row_tiles, max_tiles));
  const idx chunk_rows = chunk_tiles * mr;
  // Staging arrays of the staged gate math: (G + 2) arrays of kStageRows x kNR values. Every
  // value a pass reads was written by it (fwd_rows fills the lanes past a partial block with 0).
  constexpr idx kStageRows = std::max(1, 512 / kNR);
  alignas(64) T stage[kCellStaged<Cell> ? (G + 2) * kStageRows * kNR : 1];
  constexpr idx kWide = kWidePanels;
  static_assert(kWideMaxRows * kWide <= kStageRows &&
                    kWideMaxRows * G * kWide * kNR * sizeof(T) <= kTileBytes &&
                    kWideMaxRows <= TileShape<T>::mr,
                "a wide block's staging arrays and tile fit the per-step buffers, its rows one "
                "row tile");
  StepScheduler& sched = *team.sched;
  const bool pair_long = pair_tiles_on();  // once per call: every step takes the same tiles
  for (idx s = 0; s < T_; ++s) {
    const idx t = rev ? T_ - 1 - s : s;
    const T* hprev = train ? P.hs + (rev ? t + 1 : t) * B * H : hbuf + (s & 1) * B * H;
    T* hnew = train ? P.hs + (rev ? t : t + 1) * B * H : hbuf + ((s + 1) & 1) * B * H;
    const T* cprev = hprev;  // cell-state pointers are only read or written by the LSTM
    T* cnew = hnew;
    if (Cell::kHasC) {
      cprev = train ? P.cs + (rev ? t + 1 : t) * B * H : cbuf + (s & 1) * B * H;
      cnew = train ? P.cs + (rev ? t : t + 1) * B * H : cbuf + ((s + 1) & 1) * B * H;
    }
    T* st = P.st ? P.st + t * B * S * H : nullptr;
    T* const gxt = fuse ? gx : gx + t * B * GH;
    const T* const xt = xin + t * B * in;
    T* yt = yout + t * B * DH + d * H;
    const bool zero_h = zero_start && s == 0;  // hprev is all zeros
    // Row b past its length, units [ja, jb): state carried, output zero.
    auto carry_row = [&](idx b, idx ja, idx jb) {
      const idx hb = b * H;
      for (idx j = ja; j < jb; ++j) {
        hnew[hb + j] = hprev[hb + j];
        if (Cell::kHasC) cnew[hb + j] = cprev[hb + j];
        yt[b * DH + j] = T(0);
      }
    };
    // Staged gate math (StageIO in cells.h) of rows [q0, q0 + rows) x units [ja, jb): their
    // input projections at gxr (row stride gxs), their GEMM tile at ghr (row stride ghs, gate
    // stride ts).
    auto stage_io = [&](idx q0, idx rows, idx ja, idx jb, const T* gxr, idx gxs, const T* ghr,
                        idx ghs, idx ts, const unsigned char* active) {
      StageIO<T> io;
      io.rows = rows;
      io.w = jb - ja;
      io.gx = gxr;
      io.bx = P.bih + ja;
      io.bh = P.bhh + ja;
      io.gh = ghr;
      io.gxs = gxs;
      io.gs = H;
      io.ghs = ghs;
      io.ts = ts;
      io.hp = hprev + q0 * H + ja;
      io.cp = cprev + q0 * H + ja;
      io.hn = hnew + q0 * H + ja;
      io.cn = cnew + q0 * H + ja;
      io.hs = H;
      io.y = yt + q0 * DH + ja;
      io.ys = DH;
      io.st = st ? st + q0 * S * H + ja : nullptr;
      io.sts = S * H;
      io.active = active;
      io.pre = stage;
      return io;
    };
    // Last step: whoever computes a block writes its final state out to hn/cn at once, so the
    // step needs no closing wait (the end of the parallel region is the barrier).
    const bool last = s == T_ - 1;
    auto publish = [&](idx ja, idx jb) {
      for (idx b = 0; b < B; ++b)
        for (idx j = ja; j < jb; ++j) {
          hn[b * H + j] = hnew[b * H + j];
          if (Cell::kHasC && cn) cn[b * H + j] = cnew[b * H + j];
        }
    };
    // One block: the recurrent GEMM tiles of units [ju0, ju1) for all rows, each chunk of rows
    // followed at once by the gate math of its rows.
    auto run_block = [&](idx u) {
      const idx ju0 = u * nr, ju1 = std::min(H, ju0 + nr);
      for (idx r0 = 0; r0 < B; r0 += chunk_rows) {
        const idx r1 = std::min(B, r0 + chunk_rows);
        if (merged) {
          // x_t W_ih^T + h_{t-1} W_hh^T in one set of accumulators (whole nr-wide panels of
          // wihT: fused_input needs nr | H); the gate math then reads a zero input projection.
          for (int gg = 0; gg < G; ++gg)
            for (idx i0 = r0; i0 < r1; i0 += mr)
              tile_gemm2<T>((int)in, xt + i0 * in, in, P.pk_wihT + (gg * H + ju0) * in,
                            zero_h ? 0 : (int)H,
                            hprev + i0 * H, H, P.pk_whhT + (u * G + gg) * H * nr,
                            tile + (i0 - r0) * G * nr + gg * nr, G * nr,
                            (int)std::min<idx>(mr, r1 - i0));
        } else if (fuse) {
          // This chunk's slice of the input projection, x_t W_ih^T for the block's columns of
          // every gate, into the one-step gx (the GRU's candidate keeps it apart from W_hh h).
          for (int gg = 0; gg < G; ++gg)
            for (idx i0 = r0; i0 < r1; i0 += mr)
              tile_gemm<T>((int)in, xt + i0 * in, in, 1, P.pk_wihT + (gg * H + ju0) * in,
                           gxt + i0 * GH + gg * H + ju0, GH, (int)std::min<idx>(mr, r1 - i0), nr,
                           0);
        } else {
          // The chunk's slice of the input projection is read by the gate math right after the
          // tiles: start loading it now (it streams from L3 or memory, one line per row and gate).
          for (idx b = r0; b < r1; ++b)
            for (int gg = 0; gg < G; ++gg)
              for (idx j = ju0; j < ju1; j += 64 / (idx)sizeof(T))
                __builtin_prefetch(gxt + b * GH + gg * H + j);
        }
        if (!merged && zero_h) {
          std::fill(tile, tile + (r1 - r0) * G * nr, T(0));
        } else if (!merged && B == 1 && (H < kLongK || pair_long)) {
          // batch 1: the gates two at a time (tile_pair, same bits; long panels where
          // pair_tiles_on)
          int gg = 0;
          for (; gg + 1 < G; gg += 2)
            tile_pair<T, TileShape<T>::nv>((int)H, hprev, P.pk_whhT + (u * G + gg) * H * nr,
                                           P.pk_whhT + (u * G + gg + 1) * H * nr, tile + gg * nr,
                                           nr, tile + (gg + 1) * nr, nr);
          for (; gg < G; ++gg)
            tile_gemm<T>((int)H, hprev, H, 1, P.pk_whhT + (u * G + gg) * H * nr, tile + gg * nr,
                         G * nr, 1, nr, 0);
        } else if (!merged)
          for (int gg = 0; gg < G; ++gg)
            for (idx i0 = r0; i0 < r1; i0 += mr)
              tile_gemm<T>((int)H, hprev + i0 * H, H, 1, P.pk_whhT + (u * G + gg) * H * nr,
                           tile + (i0 - r0) * G * nr + gg * nr, G * nr,
                           (int)std::min<idx>(mr, r1 - i0), nr, 0);
        bool staged = false;
        if constexpr (kCellStaged<Cell>) staged = r1 - r0 > 1;
        if constexpr (kCellStaged<Cell>) if (staged) {
          // Staged gate math (see StageIO in cells.h), kStageRows rows at a time. (A single row
          // has too little independent work for the stages to pay: GRU H256 B1 ran 5% slower.)
          for (idx q0 = r0; q0 < r1; q0 += kStageRows) {
            const idx q1 = std::min(r1, q0 + kStageRows);
            unsigned char active[kStageRows];
            for (idx b = q0; b < q1; ++b) active[b - q0] = row_active(len, b, t) ? 1 : 0;
            const StageIO<T> io = stage_io(
                q0, q1 - q0, ju0, ju1, merged ? zgx + ju0 : gxt + q0 * GH + ju0,
                merged ? 0 : GH, tile + (q0 - r0) * G * nr, (idx)G * nr, nr, active);
            if (st)
              Cell::template fwd_rows<true, kNR>(io);
            else
              Cell::template fwd_rows<false, kNR>(io);
            for (idx b = q0; b < q1; ++b)
              if (!active[b - q0]) carry_row(b, ju0, ju1);
          }
        }
        if (!staged)
        for (idx b = r0; b < r1; ++b) {
          const idx hb = b * H;
          if (row_active(len, b, t)) {
            const T* ghr = tile + (b - r0) * G * nr - ju0;

            T* yr = yt + b * DH;
            const T* gxb = merged ? zgx : gxt + b * GH;
            T* stb = st ? st + b * S * H : yr;
            if (ju1 - ju0 == kNR) {
              if (st)
                forward_units<T, Cell, true, kNR>(ju0, ju1, gxb, P.bih, ghr, nr, P.bhh, H,
                                                  hprev + hb, cprev + hb, hnew + hb, cnew + hb,
                                                  stb, yr, P.peep, P.clip);
              else
                forward_units<T, Cell, false, kNR>(ju0, ju1, gxb, P.bih, ghr, nr, P.bhh, H,
                                                   hprev + hb, cprev + hb, hnew + hb, cnew + hb,
                                                   stb, yr, P.peep, P.clip);
            } else if (st) {
              forward_units<T, Cell, true>(ju0, ju1, gxb, P.bih, ghr, nr, P.bhh, H, hprev + hb,
                                           cprev + hb, hnew + hb, cnew + hb, stb, yr, P.peep, P.clip);
            } else {
              forward_units<T, Cell, false>(ju0, ju1, gxb, P.bih, ghr, nr, P.bhh, H, hprev + hb,
                                            cprev + hb, hnew + hb, cnew + hb, stb, yr, P.peep, P.clip);
            }
          } else {
            carry_row(b, ju0, ju1);
          }
        }
      }
      if (last) publish(ju0, ju1);
      sched.finish();
    };
    // Small batches, blocks of kWide panels (forward_panels_per_block): the tiles of every
    // panel into a (B, G, kWide*nr) tile, then the gate math of the block's units in one pass.
    // rows: B, as a compile-time 1 at batch 1 (fixed trip counts in the staged loops; LSTM H256
    // B1 ran 3-5% slower with the count known only at run time).
    auto run_wide = [&](idx wb, auto rows) {
      constexpr int kW = kWide * kNR;
      const idx pu0 = wb * kWide, pu1 = std::min(g.unit_blocks(), pu0 + kWide);
      const idx ju0 = pu0 * nr, ju1 = std::min(H, pu1 * nr);
      const idx ts = (idx)G * kW;  // row stride of the tile
      for (idx b = 0; b < (idx)rows; ++b)
        for (idx j = ju0; j < ju1; j += 64 / (idx)sizeof(T))
          for (int gg = 0; gg < G; ++gg) __builtin_prefetch(gxt + b * GH + gg * H + j);
      // Panels in the scheduler's serpentine order (odd steps backwards, see StepScheduler), so
      // that weights beyond the last-level cache are met while still cached.
      if (zero_h) std::fill(tile, tile + (idx)rows * ts, T(0));
      const idx npanels = zero_h ? 0 : pu1 - pu0;
      if (rows == 1 && pair_long) {
        // One row: the block's (panel, gate) tiles two at a time in the same order (tile_pair,
        // same bits), across panels where G is odd.
        const idx ntiles = npanels * G;
        struct TileRef {
          const T* b;  // packed panel
          T* c;        // its place in the tile
          int n;       // valid columns
        };
        auto at = [&](idx f) {
          const idx i = f / G, pu = sched.backwards(s) ? pu1 - 1 - i : pu0 + i;
          const int gg = (int)(f % G);
          return TileRef{P.pk_whhT + (pu * G + gg) * H * nr, tile + gg * kW + (pu - pu0) * nr,
                         (int)std::min<idx>(nr, H - pu * nr)};
        };
        idx f = 0;
        for (; f + 1 < ntiles; f += 2) {
          const TileRef x = at(f), y = at(f + 1);
          tile_pair<T, TileShape<T>::nv>((int)H, hprev, x.b, y.b, x.c, x.n, y.c, y.n);
        }
        if (f < ntiles) {
          const TileRef x = at(f);
          tile_gemm<T>((int)H, hprev, H, 1, x.b, x.c, ts, 1, x.n, 0);
        }
      } else {
        for (idx i = 0; i < npanels; ++i) {
          const idx pu = sched.backwards(s) ? pu1 - 1 - i : pu0 + i;
          for (int gg = 0; gg < G; ++gg)
            tile_gemm<T>((int)H, hprev, H, 1, P.pk_whhT + (pu * G + gg) * H * nr,
                         tile + gg * kW + (pu - pu0) * nr, ts, (int)rows,
                         (int)std::min<idx>(nr, H - pu * nr), 0);
        }
      }
      unsigned char active[kWideMaxRows];
      for (idx b = 0; b < (idx)rows; ++b) active[b] = row_active(len, b, t) ? 1 : 0;
      if constexpr (kCellStaged<Cell>) {
        const StageIO<T> io = stage_io(0, rows, ju0, ju1, gxt + ju0, GH, tile, ts, kW, active);
        if (st)
          Cell::template fwd_rows<true, kW>(io);
        else
          Cell::template fwd_rows<false, kW>(io);
      }
      for (idx b = 0; b < (idx)rows; ++b) {
        const idx hb = b * H;
        if (!active[b]) {
          carry_row(b, ju0, ju1);
        } else if constexpr (!kCellStaged<Cell>) {
          T* yr = yt + b * DH;
          T* stb = st ? st + b * S * H : yr;
          const T* ghr = tile + b * ts - ju0;
          if (st)
            forward_units<T, Cell, true>(ju0, ju1, gxt + b * GH, P.bih, ghr, kW, P.bhh, H,
                                         hprev + hb, cprev + hb, hnew + hb, cnew + hb, stb, yr,
                                         P.peep, P.clip);
          else
            forward_units<T, Cell, false>(ju0, ju1, gxt + b * GH, P.bih, ghr, kW, P.bhh, H,
                                          hprev + hb, cprev + hb, hnew + hb, cnew + hb, stb, yr,
                                          P.peep, P.clip);
        }
      }
      if (last) publish(ju0, ju1);
      sched.finish();
    };
    idx u;
    for (int k = 0; k < nth; ++k)  // own blocks first, then the others' unstarted ones
      while (sched.claim((tid + k) % nth, s, &u)) {
        if (wide && B == 1)
          run_wide(u, std::integral_constant<idx, 1>{});
        else if (wide)
          run_wide(u, B);
        else
          run_block(u);
      }
    if (!last) sched.wait_step(s);
  }
}

// Peephole weight gradients of one (layer, direction):
//   dpeep[0:H] += sum_r da_i[r] c_prev[r],  dpeep[H:2H] += sum_r da_f[r] c_prev[r],
//   dpeep[2H:3H] += sum_r da_o[r] c_new[r]   over the rows r = t*B + b of
//   da (TB, lda) (gate k's block at column k*H), c_prev and c_new (TB, H).
// Units are split among the threads; each sums its units' rows in row order, so the result does
// not depend on the thread count (like the bias sums).
template <class T>
void peephole_grads(idx TB, idx H, const T* da, idx lda, const T* c_prev, const T* c_new,
                    T* dpeep, int tid, int nth) {
  idx c0, c1;
  split(H, tid, nth, &c0, &c1);
  constexpr idx kCols = 128;
  T si[kCols], sf[kCols], so[kCols];
  for (idx cb = c0; cb < c1; cb += kCols) {
    const idx nc = std::min(kCols, c1 - cb);
    std::fill(si, si + nc, T(0));
    std::fill(sf, sf + nc, T(0));
    std::fill(so, so + nc, T(0));
    for (idx r = 0; r < TB; ++r) {
      const T* ar = da + r * lda + cb;
      const T* cp = c_prev + r * H + cb;
      const T* cn = c_new + r * H + cb;
#pragma GCC ivdep
      for (idx c = 0; c < nc; ++c) {
        si[c] += ar[c] * cp[c];
        sf[c] += ar[H + c] * cp[c];
        so[c] += ar[3 * H + c] * cn[c];
      }
    }
    for (idx c = 0; c < nc; ++c) {
      dpeep[cb + c] += si[c];
      dpeep[H + cb + c] += sf[c];
      dpeep[2 * H + cb + c] += so[c];
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Backward over one (layer, direction); called by every thread of the region.
//   dyl (T, B, D*H) gradient w.r.t. this layer's output (or null); dhn/dcn (B, H) or null.
//   Writes dh0/dc0 (B, H); accumulates dW_ih, dW_hh, db_ih, db_hh into dp; writes (or adds, if
//   dx_accumulate) dxin (T, B, In). Scratch: dgx, dgh (T, B, GH) (dgh == dgx except GRU),
//   dhbuf (2, B, H), dcbuf (B, H), packbuf for the weight-gradient GEMMs.
template <class T, class Cell>
void backward_direction(const Geometry& g, idx l, idx d, const LayerPtrs<T>& P, const T* xin,
                        const T* dyl, const T* dhn, const T* dcn, T* dh0, T* dc0,
                        const int64_t* len, T* dp, T* dxin, bool dx_accumulate, T* dgx, T* dgh,
                        T* dhbuf, T* dcbuf, T* packbuf, bool zero_start, const Team& team) {
  const int tid = team.tid, nth = team.nth;
  const Kern<T> kern = kern_for<T>();
  const int mr = kern.mr, nr = g.nr;
  const idx T_ = g.T, B = g.B, H = g.H, GH = g.GH, DH = g.DH, S = g.S, in = g.in_size(l);
  const idx TB = T_ * B;
  const bool rev = d == 1;

  idx u0, u1;
  split(g.unit_blocks(), tid, nth, &u0, &u1);
  const idx j0 = std::min(H, u0 * nr), j1 = std::min(H, u1 * nr);

  T* dh_cur = dhbuf;
  T* dh_nxt = dhbuf + B * H;
  for (idx b = 0; b < B; ++b)
    for (idx j = j0; j < j1; ++j) {
      dh_cur[b * H + j] = dhn ? dhn[b * H + j] : T(0);
      dcbuf[b * H + j] = dcn ? dcn[b * H + j] : T(0);
    }

  alignas(64) T tile[8 * 64];
  for (idx s = T_ - 1; s >= 0; --s) {
    const idx t = rev ? T_ - 1 - s : s;
    const T* hprev = P.hs + (rev ? t + 1 : t) * B * H;
    const T* hnew = P.hs + (rev ? t : t + 1) * B * H;
    // LSTM's cell states; the other cells never read these (they alias h to stay valid pointers)
    const T* cprev = Cell::kHasC ? P.cs + (rev ? t + 1 : t) * B * H : hprev;
    const T* cnew = Cell::kHasC ? P.cs + (rev ? t : t + 1) * B * H : hnew;
    const T* st = P.st ? P.st + t * B * S * H : nullptr;
    T* dgxt = dgx + t * B * GH;
    T* dght = dgh + t * B * GH;

    // Phase A (own units): dL/dh_t -> pre-activation gradients. dh_cur keeps, per active row, the
    // part of dL/dh_{t-1} that bypasses W_hh (GRU's z * dh); inactive rows pass dh through.
    for (idx b = 0; b < B; ++b) {
      const idx hb = b * H;
      if (row_active(len, b, t)) {
        const T* dyt = dyl ? dyl + (t * B + b) * DH + d * H : nullptr;
        const T* stb = st ? st + b * S * H : hprev + hb;  // the RNN cell stores nothing
        if (dyt)
          backward_units<T, Cell, true>(j0, j1, dh_cur + hb, dyt, hprev + hb, hnew + hb,
                                        cprev + hb, cnew + hb, stb, H, dcbuf + hb,
                                        dgxt + b * GH, dght + b * GH, P.peep);
        else
          backward_units<T, Cell, false>(j0, j1, dh_cur + hb, nullptr, hprev + hb, hnew + hb,
                                         cprev + hb, cnew + hb, stb, H, dcbuf + hb,
                                         dgxt + b * GH, dght + b * GH, P.peep);
      } else {
        for (int gg = 0; gg < Cell::G; ++gg)
          for (idx j = j0; j < j1; ++j) {
            dgxt[b * GH + gg * H + j] = T(0);
            dght[b * GH + gg * H + j] = T(0);
          }
      }
    }
    team.sync();
    // Phase B (own units): dL/dh_{t-1} = dG_t W_hh (+ the bypass part).
    for (idx u = u0; u < u1; ++u) {
      const idx ju0 = u * nr, ju1 = std::min(H, ju0 + nr);
      for (idx i0 = 0; i0 < B; i0 += mr) {
        const int m = (int)std::min<idx>(mr, B - i0);
        tile_gemm<T>((int)GH, dght + i0 * GH, GH, 1, P.pk_whh + u * GH * nr, tile, nr, m, nr, 0);
        for (int ii = 0; ii < m; ++ii) {
          const idx b = i0 + ii, hb = b * H;
          const bool active = row_active(len, b, t);
          for (idx j = ju0; j < ju1; ++j)
            dh_nxt[hb + j] = active ? tile[ii * nr + (j - ju0)] + dh_cur[hb + j] : dh_cur[hb + j];
        }
      }
    }
    std::swap(dh_cur, dh_nxt);
  }
  for (idx b = 0; b < B; ++b)
    for (idx j = j0; j < j1; ++j) {
      dh0[b * H + j] = dh_cur[b * H + j];
      if (dc0) dc0[b * H + j] = dcbuf[b * H + j];
    }
  team.sync();

  T* dwih = dp + g.param_off(l, d);
  T* dwhh = dwih + GH * in;
  if (g.bias) {  // column sums, each column summed in row order; columns split among threads
    T* dbih = dwhh + GH * H;
    T* dbhh = dbih + GH;
    idx c0_, c1_;
    split(GH, tid, nth, &c0_, &c1_);
    // Walk the rows (contiguous) in chunks of columns that stay in L1, rather than down a column
    // (a cache line per element).
    constexpr idx kCols = 256;
    T sx[kCols], sh[kCols];
    for (idx cb = c0_; cb < c1_; cb += kCols) {
      const idx nc = std::min(kCols, c1_ - cb);
      std::fill(sx, sx + nc, T(0));
      std::fill(sh, sh + nc, T(0));
      for (idx r = 0; r < TB; ++r) {
        const T* rx = dgx + r * GH + cb;
        const T* rh = dgh + r * GH + cb;
#pragma GCC ivdep
        for (idx c = 0; c < nc; ++c) {
          sx[c] += rx[c];
          sh[c] += rh[c];
        }
      }
      for (idx c = 0; c < nc; ++c) {
        dbih[cb + c] += sx[c];
        dbhh[cb + c] += sh[c];
      }
    }
  }
  if (P.peep)  // dp_i, dp_f, dp_o, after the biases of the block (c_prev, c_new: see Geometry)
    peephole_grads<T>(TB, H, dgx, GH, P.cs + (rev ? B * H : 0), P.cs + (rev ? 0 : B * H),
                      dwhh + GH * H + (g.bias ? 2 * GH : 0), tid, nth);
  // dW_ih += dGx^T X   (GH x In, summed over all T*B rows)
  // dW_hh += dGh^T H_prev, H_prev = the (T*B, H) block of previous states (see Geometry::hs); on
  // its own (the GRU, or fewer than kSharedPackMinSteps steps) less the first step's B rows when
  // they are zeros (zero_start; first forward, last in reverse)
  const idx zr = zero_start ? B : 0, zf = rev ? 0 : zr;
  if (shared_weight_grad_pass<Cell>(g)) {
    // dGh is dGx: one pass over its blocks feeds both products. Over all T*B rows, the
    // zero-state step's included (its H_prev rows are the zeros the forward stored): dW_ih then
    // has the bits of its own GEMM, and dW_hh those of a call given a zero state. (Packing dG^T
    // for each product took 6.0% of the perf samples of a one-thread LSTM I64 H256 B32 T100
    // training call, one pass for both 4.5%; the zero rows add 1/T to dW_hh's work, hence the
    // minimum T.)
    T* const pbx = packbuf;
    T* const pbh = packbuf + packed_b_size(TB, in, nr);
    pack_b_rowmajor_mt<T>(tid, nth, TB, in, xin, in, nr, pbx);
    pack_b_rowmajor_mt<T>(tid, nth, TB, H, P.hs + (rev ? B : 0) * H, H, nr, pbh);
    team.sync();
    gemm2_mt<T>(kern, tid, nth, GH, TB, dgx, 1, GH, in, pbx, dwih, in, H, pbh, dwhh, H, true);
  } else {
    pack_b_rowmajor_mt<T>(tid, nth, TB, in, xin, in, nr, packbuf);
    team.sync();
    gemm_mt<T>(kern, tid, nth, GH, in, TB, dgx, 1, GH, packbuf, dwih, in, true);
    team.sync();
    if (TB > zr) {
      pack_b_rowmajor_mt<T>(tid, nth, TB - zr, H, P.hs + (rev ? B : zf) * H, H, nr, packbuf);
      team.sync();
      gemm_mt<T>(kern, tid, nth, GH, H, TB - zr, dgh + zf * GH, 1, GH, packbuf, dwhh, H, true);
    }
  }
  // dX (+)= dGx W_ih
  gemm_mt<T>(kern, tid, nth, TB, in, GH, dgx, GH, 1, P.pk_wih, dxin, in, dx_accumulate);
}

// ---------------------------------------------------------------------------------------------
// GRU with the reset gate before the recurrent product (GruResetBeforeCell): forward over one
// (layer, direction). Like forward_direction, but a step has two phases, each a round of the
// StepScheduler (rounds 2s and 2s+1), because W_hn (r * h_{t-1}) needs r * h_{t-1} of all units:
//   phase 1 (reset):  per block, tile h_{t-1} W_hr^T -> r, q = r * h_{t-1}
//   phase 2 (update): per block, tiles h_{t-1} W_hz^T and q W_hn^T -> z, n, h_t
// The packed W_hh^T is GruCell's (panel u*3+g = gate g of unit block u), so each phase reads
// contiguous panels. q lives in the stored slot 3 when training (row stride S*H; backward's dW_hn
// GEMM reads it there), else in qbuf (B, H). Rows past their length get q = 0 (finite operands for
// the GEMMs), carry h, output zero.
// Cell: GruResetBeforeCell or, with clip, GruResetBeforeClipCell (clamp derivatives of r, z, n in
// stored slots 4, 5, 6 when training).
template <class T, class Cell = GruResetBeforeCell<T>>
void forward_direction_rb(const Geometry& g, idx l, idx d, const LayerPtrs<T>& P, const T* xin,
                          T* yout, const T* h0, T* hn, const int64_t* len, T* gx, T* hbuf,
                          T* qbuf, const Team& team) {
  constexpr bool kClip = kCellTakesExtras<Cell>;
  const int tid = team.tid, nth = team.nth;
  const Kern<T> kern = kern_for<T>();
  const int mr = kern.mr, nr = g.nr;
  const idx T_ = g.T, B = g.B, H = g.H, GH = g.GH, DH = g.DH, S = g.S, in = g.in_size(l);
  constexpr int G = Cell::G;
  const bool rev = d == 1, train = P.hs != nullptr;

  gemm_mt<T>(kern, tid, nth, T_ * B, GH, in, xin, in, 1, P.pk_wihT, gx, GH, false,
             team.flip);

  idx u0, u1;
  split(g.unit_blocks(), tid, nth, &u0, &u1);
  const idx j0 = std::min(H, u0 * nr), j1 = std::min(H, u1 * nr);
  T* hinit = train ? P.hs + (rev ? T_ : 0) * B * H : hbuf;
  for (idx b = 0; b < B; ++b)
    for (idx j = j0; j < j1; ++j) hinit[b * H + j] = h0 ? h0[b * H + j] : T(0);
  team.sync();

  const T *bir = P.bih, *biz = P.bih + H, *bin = P.bih + 2 * H;
  const T *bhr = P.bhh, *bhz = P.bhh + H, *bhn = P.bhh + 2 * H;
  alignas(64) T tile[8 * 2 * 64];  // mr x (2*nr): phase 1 uses the first nr columns
  const bool zero_start = !h0 && P.whh_finite;  // as in forward_direction (q = r * 0 is 0 too)
  StepScheduler& sched = *team.sched;
  for (idx s = 0; s < T_; ++s) {
    const idx t = rev ? T_ - 1 - s : s;
    const T* hprev = train ? P.hs + (rev ? t + 1 : t) * B * H : hbuf + (s & 1) * B * H;
    T* hnew = train ? P.hs + (rev ? t : t + 1) * B * H : hbuf + ((s + 1) & 1) * B * H;
    T* st = P.st ? P.st + t * B * S * H : nullptr;
    T* q = st ? st + 3 * H : qbuf;
    const idx qs = st ? S * H : H;  // row stride of q
    const T* gxt = gx + t * B * GH;
    T* yt = yout + t * B * DH + d * H;
    const bool zero_h = zero_start && s == 0;

    auto run_reset = [&](idx u) {
      const idx ju0 = u * nr, ju1 = std::min(H, ju0 + nr);
      for (idx i0 = 0; i0 < B; i0 += mr) {
        const int m = (int)std::min<idx>(mr, B - i0);
        if (zero_h)
          std::fill(tile, tile + m * nr, T(0));
        else
          tile_gemm<T>((int)H, hprev + i0 * H, H, 1, P.pk_whhT + (u * G + 0) * H * nr, tile, nr,
                       m, nr, 0);
        for (int ii = 0; ii < m; ++ii) {
          const idx b = i0 + ii;
          const T* hp = hprev + b * H;
          T* qb = q + b * qs;
          if (row_active(len, b, t)) {
            const T* gxr = gxt + b * GH;
            const T* ghr = tile + ii * nr - ju0;
            if (st) {
              T* rb = st + b * S * H;
#pragma GCC ivdep
              for (idx j = ju0; j < ju1; ++j) {
                if constexpr (kClip)
                  rb[j] = Cell::fwd_reset(gxr[j], bir[j], ghr[j], bhr[j], hp[j], qb + j, P.clip,
                                          rb + 4 * H + j);
                else
                  rb[j] = Cell::fwd_reset(gxr[j], bir[j], ghr[j], bhr[j], hp[j], qb + j);
              }
            } else {
#pragma GCC ivdep
              for (idx j = ju0; j < ju1; ++j) {
                if constexpr (kClip) {
                  T m;
                  Cell::fwd_reset(gxr[j], bir[j], ghr[j], bhr[j], hp[j], qb + j, P.clip, &m);
                } else {
                  Cell::fwd_reset(gxr[j], bir[j], ghr[j], bhr[j], hp[j], qb + j);
                }
              }
            }
          } else {
            for (idx j = ju0; j < ju1; ++j) qb[j] = T(0);
          }
        }
      }
      sched.finish();
    };
    auto run_update = [&](idx u) {
      const idx ju0 = u * nr, ju1 = std::min(H, ju0 + nr);
      for (idx i0 = 0; i0 < B; i0 += mr) {
        const int m = (int)std::min<idx>(mr, B - i0);
        if (zero_h) {
          std::fill(tile, tile + m * 2 * nr, T(0));
        } else {
          tile_gemm<T>((int)H, hprev + i0 * H, H, 1, P.pk_whhT + (u * G + 1) * H * nr, tile,
                       2 * nr, m, nr, 0);
          tile_gemm<T>((int)H, q + i0 * qs, qs, 1, P.pk_whhT + (u * G + 2) * H * nr, tile + nr,
                       2 * nr, m, nr, 0);
        }
        for (int ii = 0; ii < m; ++ii) {
          const idx b = i0 + ii, hb = b * H;
          const T* hp = hprev + hb;
          T* hw = hnew + hb;
          T* yr = yt + b * DH;
          if (row_active(len, b, t)) {
            const T* gxz = gxt + b * GH + H;
            const T* gxn = gxt + b * GH + 2 * H;
            const T* ghz = tile + ii * 2 * nr - ju0;
            const T* gqn = ghz + nr;
            if (st) {
              T* zb = st + b * S * H + H;
              T* nb = zb + H;
#pragma GCC ivdep
              for (idx j = ju0; j < ju1; ++j) {
                T h;
                if constexpr (kClip)
                  h = Cell::fwd_update(gxz[j], biz[j], ghz[j], bhz[j], gxn[j], bin[j], gqn[j],
                                       bhn[j], hp[j], zb + j, nb + j, P.clip, zb + 4 * H + j,
                                       nb + 4 * H + j);
                else
                  h = Cell::fwd_update(gxz[j], biz[j], ghz[j], bhz[j], gxn[j], bin[j], gqn[j],
                                       bhn[j], hp[j], zb + j, nb + j);
                hw[j] = h;
                yr[j] = h;
              }
            } else {
#pragma GCC ivdep
              for (idx j = ju0; j < ju1; ++j) {
                T z, n, h;
                if constexpr (kClip) {
                  T mz, mn;
                  h = Cell::fwd_update(gxz[j], biz[j], ghz[j], bhz[j], gxn[j], bin[j], gqn[j],
                                       bhn[j], hp[j], &z, &n, P.clip, &mz, &mn);
                } else {
                  h = Cell::fwd_update(gxz[j], biz[j], ghz[j], bhz[j], gxn[j], bin[j], gqn[j],
                                       bhn[j], hp[j], &z, &n);
                }
                hw[j] = h;
                yr[j] = h;
              }
            }
          } else {  // past this row's length: state carried, output zero
            for (idx j = ju0; j < ju1; ++j) {
              hw[j] = hp[j];
              yr[j] = T(0);
            }
          }
        }
      }
      sched.finish();
    };
    idx u;
    for (int k = 0; k < nth; ++k)
      while (sched.claim((tid + k) % nth, 2 * s, &u)) run_reset(u);
    sched.wait_step(2 * s);
    for (int k = 0; k < nth; ++k)
      while (sched.claim((tid + k) % nth, 2 * s + 1, &u)) run_update(u);
    sched.wait_step(2 * s + 1);
  }

  const T* hfin = train ? P.hs + (rev ? 0 : T_) * B * H : hbuf + (T_ & 1) * B * H;
  for (idx b = 0; b < B; ++b)
    for (idx j = j0; j < j1; ++j) hn[b * H + j] = hfin[b * H + j];
}

// GruResetBeforeCell: backward over one (layer, direction). Per step, three phases on this
// thread's units with a barrier after the first two:
//   A: dL/dh_t -> da_z, da_n (and dh z, the part of dL/dh_{t-1} through z h_{t-1})
//   B: dq = da_n W_hn (all units' da_n) -> da_r = dq h_{t-1} r (1 - r); add dq r to dL/dh_{t-1}
//   C: dL/dh_{t-1} += [da_r, da_z] W_h{r,z} (all units' da_r, da_z)
// After the loop: biases (both are column sums of dG: b_hn enters a_n unscaled), dW_ih = dG^T X,
// dW_h{r,z} = dG_{r,z}^T H_prev, dW_hn = dG_n^T Q with Q = r * h_{t-1} from stored slot 3, and dX.
// Arguments as backward_direction's (dgh == dgx for this cell; no cell state).
template <class T, class Cell = GruResetBeforeCell<T>>
void backward_direction_rb(const Geometry& g, idx l, idx d, const LayerPtrs<T>& P, const T* xin,
                           const T* dyl, const T* dhn, T* dh0, const int64_t* len, T* dp,
                           T* dxin, bool dx_accumulate, T* dgx, T* dhbuf, T* packbuf,
                           bool zero_start, const Team& team) {
  constexpr bool kClip = kCellTakesExtras<Cell>;
  const int tid = team.tid, nth = team.nth;
  const Kern<T> kern = kern_for<T>();
  const int mr = kern.mr, nr = g.nr;
  const idx T_ = g.T, B = g.B, H = g.H, GH = g.GH, DH = g.DH, S = g.S, in = g.in_size(l);
  const idx TB = T_ * B;
  const bool rev = d == 1;

  idx u0, u1;
  split(g.unit_blocks(), tid, nth, &u0, &u1);
  const idx j0 = std::min(H, u0 * nr), j1 = std::min(H, u1 * nr);

  T* dh_cur = dhbuf;
  T* dh_nxt = dhbuf + B * H;
  for (idx b = 0; b < B; ++b)
    for (idx j = j0; j < j1; ++j) dh_cur[b * H + j] = dhn ? dhn[b * H + j] : T(0);

  alignas(64) T tile[8 * 64];
  for (idx s = T_ - 1; s >= 0; --s) {
    const idx t = rev ? T_ - 1 - s : s;
    const T* hprev = P.hs + (rev ? t + 1 : t) * B * H;
    const T* st = P.st + t * B * S * H;
    T* dgxt = dgx + t * B * GH;

    // Phase A (own units)
    for (idx b = 0; b < B; ++b) {
      const idx hb = b * H;
      T* dga = dgxt + b * GH;
      if (row_active(len, b, t)) {
        const T* dyt = dyl ? dyl + (t * B + b) * DH + d * H : nullptr;
        const T* zb = st + b * S * H + H;
        const T* nb = zb + H;
        const T* hp = hprev + hb;
        T* dc = dh_cur + hb;
        if constexpr (kClip) {  // clamp derivatives of z, n: stored slots 5, 6
          const T* mzb = zb + 4 * H;
          const T* mnb = nb + 4 * H;
#pragma GCC ivdep
          for (idx j = j0; j < j1; ++j)
            dc[j] = Cell::bwd_update(dyt ? dc[j] + dyt[j] : dc[j], hp[j], zb[j], nb[j],
                                     dga + H + j, dga + 2 * H + j, mzb[j], mnb[j]);
        } else if (dyt) {
#pragma GCC ivdep
          for (idx j = j0; j < j1; ++j)
            dc[j] = Cell::bwd_update(dc[j] + dyt[j], hp[j], zb[j], nb[j], dga + H + j,
                                     dga + 2 * H + j);
        } else {
#pragma GCC ivdep
          for (idx j = j0; j < j1; ++j)
            dc[j] = Cell::bwd_update(dc[j], hp[j], zb[j], nb[j], dga + H + j, dga + 2 * H + j);
        }
      } else {  // past this row's length: dL/dh passes through, no gate gradients
        for (int gg = 0; gg < 3; ++gg)
          for (idx j = j0; j < j1; ++j) dga[gg * H + j] = T(0);
      }
    }
    team.sync();
    // Phase B (own units): dq = da_n W_hn, rows 2H..3H of the packed W_hh panels
    for (idx u = u0; u < u1; ++u) {
      const idx ju0 = u * nr, ju1 = std::min(H, ju0 + nr);
      for (idx i0 = 0; i0 < B; i0 += mr) {
        const int m = (int)std::min<idx>(mr, B - i0);
        tile_gemm<T>((int)H, dgxt + i0 * GH + 2 * H, GH, 1, P.pk_whh + u * GH * nr + 2 * H * nr,
                     tile, nr, m, nr, 0);
        for (int ii = 0; ii < m; ++ii) {
          const idx b = i0 + ii, hb = b * H;
          if (!row_active(len, b, t)) continue;  // da_r stays 0, dL/dh passes through
          const T* dq = tile + ii * nr - ju0;
          const T* rb = st + b * S * H;
          const T* hp = hprev + hb;
          T* dar = dgxt + b * GH;
          T* dc = dh_cur + hb;
#pragma GCC ivdep
          for (idx j = ju0; j < ju1; ++j) {
            if constexpr (kClip)  // clamp derivative of r: stored slot 4
              dc[j] += Cell::bwd_reset(dq[j], hp[j], rb[j], dar + j, rb[4 * H + j]);
            else
              dc[j] += Cell::bwd_reset(dq[j], hp[j], rb[j], dar + j);
          }
        }
      }
    }
    team.sync();
    // Phase C (own units): dL/dh_{t-1} = [da_r, da_z] W_h{r,z} + the parts above
    for (idx u = u0; u < u1; ++u) {
      const idx ju0 = u * nr, ju1 = std::min(H, ju0 + nr);
      for (idx i0 = 0; i0 < B; i0 += mr) {
        const int m = (int)std::min<idx>(mr, B - i0);
        tile_gemm<T>((int)(2 * H), dgxt + i0 * GH, GH, 1, P.pk_whh + u * GH * nr, tile, nr, m,
                     nr, 0);
        for (int ii = 0; ii < m; ++ii) {
          const idx b = i0 + ii, hb = b * H;
          const bool active = row_active(len, b, t);
          for (idx j = ju0; j < ju1; ++j)
            dh_nxt[hb + j] = active ? tile[ii * nr + (j - ju0)] + dh_cur[hb + j] : dh_cur[hb + j];
        }
      }
    }
    std::swap(dh_cur, dh_nxt);
  }
  for (idx b = 0; b < B; ++b)
    for (idx j = j0; j < j1; ++j) dh0[b * H + j] = dh_cur[b * H + j];
  team.sync();

  T* dwih = dp + g.param_off(l, d);
  T* dwhh = dwih + GH * in;
  if (g.bias) {  // db_ih and db_hh are both the column sums of dG, each in row order
    T* dbih = dwhh + GH * H;
    T* dbhh = dbih + GH;
    idx c0_, c1_;
    split(GH, tid, nth, &c0_, &c1_);
    constexpr idx kCols = 256;
    T sx[kCols];
    for (idx cb = c0_; cb < c1_; cb += kCols) {
      const idx nc = std::min(kCols, c1_ - cb);
      std::fill(sx, sx + nc, T(0));
      for (idx r = 0; r < TB; ++r) {
        const T* rx = dgx + r * GH + cb;
#pragma GCC ivdep
        for (idx c = 0; c < nc; ++c) sx[c] += rx[c];
      }
      for (idx c = 0; c < nc; ++c) {
        dbih[cb + c] += sx[c];
        dbhh[cb + c] += sx[c];
      }
    }
  }
  // dW_ih += dG^T X
  pack_b_rowmajor_mt<T>(tid, nth, TB, in, xin, in, nr, packbuf);
  team.sync();
  gemm_mt<T>(kern, tid, nth, GH, in, TB, dgx, 1, GH, packbuf, dwih, in, true);
  team.sync();
  // Both without the first step's B rows when h_{t-1} (and so Q) is zero there (zero_start: the
  // first rows forward, the last in reverse; see backward_direction).
  const idx zr = zero_start ? B : 0, zf = rev ? 0 : zr;
  if (TB > zr) {
    // dW_h{r,z} += dG_{r,z}^T H_prev  (rows 0..2H of dW_hh)
    pack_b_rowmajor_mt<T>(tid, nth, TB - zr, H, P.hs + (rev ? B : zf) * H, H, nr, packbuf);
    team.sync();
    gemm_mt<T>(kern, tid, nth, 2 * H, H, TB - zr, dgx + zf * GH, 1, GH, packbuf, dwhh, H, true);
    team.sync();
    // dW_hn += dG_n^T Q, Q = the (T*B, H) values r * h_{t-1} in stored slot 3 (row stride S*H)
    pack_b_rowmajor_mt<T>(tid, nth, TB - zr, H, P.st + zf * S * H + 3 * H, S * H, nr, packbuf);
    team.sync();
    gemm_mt<T>(kern, tid, nth, H, H, TB - zr, dgx + zf * GH + 2 * H, 1, GH, packbuf,
               dwhh + 2 * H * H, H, true);
  }
  // dX (+)= dG W_ih
  gemm_mt<T>(kern, tid, nth, TB, in, GH, dgx, GH, 1, P.pk_wih, dxin, in, dx_accumulate);
}

template <class T>
void scale_by_mask(idx n, T* v, const T* mask, int nt) {
#pragma omp parallel for num_threads(nt) schedule(static)
  for (idx e = 0; e < n; ++e) v[e] *= mask[e];
}

// The team of one call (team_tuner.h): kind 0 inference, 1 training forward, 2 backward;
// from_state: the call starts from a given state (its first step has a recurrent product).
inline TeamPick team_for(const Desc& d, const Geometry& g, int kind, bool from_state,
                         bool ragged) {
  const int req = get_num_threads();
  const bool wide = active_kernels().wide_fma;
  const int fixed = threads_for(g, req, wide);
  int lo = threads_for(g, req, wide, 4.0);
  const int hi = threads_for(g, req, wide, 0.5);
  TeamPick p;
  p.n = fixed;
  if (team_tuning_mode() == 0) return p;
  // after a pause: one thread against the warm candidates' larger team, under a key of its own
  const int idle = hi > 1 && call_flops_of(g) <= kIdleMaxFlops ? idle_class_now() : 0;
  if (idle > 0) lo = 1;
  if (lo >= hi) return p;  // one candidate: no key to build
  return pick_team(idle_key(team_key(d, kind, from_state, ragged, req), idle), lo, hi, fixed);
}

// Reports a call's wall time per step to the tuner, and its end to the pause clock, when it goes
// out of scope (after the call's last parallel region).
struct TeamTimer {
  TeamPick pick;
  idx steps;
  std::chrono::steady_clock::time_point t0;
  TeamTimer(const TeamPick& p, idx T) : pick(p), steps(std::max<idx>(1, T)) {
    if (pick.slot >= 0) t0 = std::chrono::steady_clock::now();
  }
  ~TeamTimer() {
    if (pick.slot >= 0)
      record_team(pick, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0)
                                .count() / (double)steps);
    note_call_end(pick.n);
  }
  TeamTimer(const TeamTimer&) = delete;
  TeamTimer& operator=(const TeamTimer&) = delete;
};

template <class T, class Cell>
void forward_t(const Desc& desc, const ForwardArgs& a) {
  const Geometry g(desc, kern_for<T>().nr);
  const TeamTimer timer(team_for(desc, g, a.workspace ? 1 : 0, a.h0 != nullptr,
                                 a.lengths != nullptr), g.T);
  const int nt = timer.pick.n;
  const T* params = static_cast<const T*>(a.params);
  const T* packed = static_cast<const T*>(a.packed);
  T* ws = static_cast<T*>(a.workspace);
  const T* mask = static_cast<const T*>(a.dropout_mask);
  const bool train = ws != nullptr;
  const idx TB = g.T * g.B, BH = g.B * g.H;

  // Every element of these is written before it is read (zeros: just below).
  // The input projection buffer holds one step when every layer fuses it (fused_input), else all
  // steps. The mode is read once: another thread may change it during the call.
  const int fuse_mode = fused_input_mode();
  const int wide_mode = wide_blocks_mode();
  bool all_fused = !kResetBefore<Cell>, any_fused = false;
  for (idx l = 0; l < g.L; ++l) {
    const bool f = !kResetBefore<Cell> && fused_input<T>(g, l, fuse_mode);
    all_fused = all_fused && f;
    any_fused = any_fused || f;
  }
  const ScratchPlan<T> scratch({(all_fused ? g.B : TB) * g.GH, 2 * BH, g.lstm ? 2 * BH : 0,
                                !train && g.L > 1 ? 2 * TB * g.DH : 0,
                                g.bias && !any_fused ? 0 : g.GH,
                                kResetBefore<Cell> && !train ? BH : 0});
  T* const gx = scratch[0];
  T* const hbuf = scratch[1];
  T* const cbuf = scratch[2];
  T* const inter = scratch[3];
  // zeros: the biases of a model without bias, and the input projection of a merged fused step
  T* const zeros = scratch[4];
  T* const qbuf = scratch[5];   // r * h_{t-1} of the reset-before GRU, inference
  if (!g.bias || any_fused) std::fill(zeros, zeros + g.GH, T(0));
  static thread_local StepScheduler sched_storage;  // of the calling thread, reused across calls
  StepScheduler* const sched = &sched_storage;
  // Every other call walks the weights the other way round (StepScheduler::reset's flip, and
  // gemm_mt's backwards for a one-step input projection): a call then starts on the panels that
  // the previous call read last, which are still in L2. Weights a little over the threads' L2
  // caches are then mostly read from there, not from L3 (one-step calls, where each call reads
  // every weight once). The results do not depend on the order.
  // The parity counts the steps of all calls so far, so that the steps of consecutive calls
  // keep alternating across the call boundary (StepScheduler's serpentine).
  static std::atomic<uint64_t> steps_so_far{0};
  const bool flip =
      (steps_so_far.fetch_add((uint64_t)g.T, std::memory_order_relaxed) & 1u) != 0;

  // One parallel region for the whole call: the layers and directions follow each other inside
  // it, separated by a barrier of the team (the next one reads this one's output, and they share
  // hbuf, cbuf and gx), instead of a region each (0.45 us to start one on two threads here).
  SpinBarrier bar(nt);
  run_team(nt, [&] {
    DenormalGuard<T> guard;
    // OpenMP may grant fewer threads than asked for (nesting, thread limits): then size the
    // barrier and the scheduler from the team actually running (every thread of the team sees
    // the same count, so all or none of them reach the single).
    const int nth = thread_count(), tid = thread_id();
    if (nth != nt) {
#pragma omp single
      bar.reset(nth);
    }
    const Team team{tid, nth, &bar, sched, flip};
    for (idx l = 0; l < g.L; ++l) {
      const T* xin = l == 0 ? static_cast<const T*>(a.x)
                            : (train ? ws + g.ws_layer_input(l) : inter + ((l - 1) & 1) * TB * g.DH);
      T* yout = l == g.L - 1 ? static_cast<T*>(a.y)
                             : (train ? ws + g.ws_layer_input(l + 1) : inter + (l & 1) * TB * g.DH);
      const bool fuse = all_fused || (!kResetBefore<Cell> && fused_input<T>(g, l, fuse_mode));
      // Wide blocks compute no fused input projection: one-panel blocks where it is fused.
      const idx panels =
          fuse ? idx(1) : forward_panels_per_block(g, nth, kResetBefore<Cell>, wide_mode);
      for (idx d = 0; d < g.D; ++d) {
        const LayerPtrs<T> P = layer_ptrs<T>(g, l, d, params, packed, ws, zeros);
        const idx so = (l * g.D + d) * BH;
        const T* h0 = a.h0 ? static_cast<const T*>(a.h0) + so : nullptr;
        const T* c0 = a.c0 ? static_cast<const T*>(a.c0) + so : nullptr;
        T* hn = static_cast<T*>(a.hn) + so;
        T* cn = a.cn ? static_cast<T*>(a.cn) + so : nullptr;
        // Every thread is done with the previous direction (its last step has no closing wait)
        // and with the scheduler; the one reset here is seen by all after the first barrier in
        // forward_direction(_rb), before which nobody claims a block.
        if (l > 0 || d > 0) team.sync();
        if (tid == 0) sched->reset(nth, ceil_div(g.unit_blocks(), panels), flip);
        if constexpr (kResetBefore<Cell>)
          forward_direction_rb<T, Cell>(g, l, d, P, xin, yout, h0, hn, a.lengths, gx, hbuf, qbuf,
                                        team);
        else
          forward_direction<T, Cell>(g, l, d, P, xin, yout, h0, c0, hn, cn, a.lengths, gx, hbuf,
                                     cbuf, fuse, panels == kWidePanels, zeros, team);
      }
      // Dropout on this layer's output, each thread its own contiguous share (elementwise, so
      // the same bits at any thread count), once every direction has written it.
      if (l < g.L - 1 && mask) {
        team.sync();
        idx e0, e1;
        split(TB * g.DH, tid, nth, &e0, &e1);
        const T* ml = mask + l * TB * g.DH;
        for (idx e = e0; e < e1; ++e) yout[e] *= ml[e];
      }
    }
  });
}

template <class T, class Cell>
void backward_t(const Desc& desc, const ForwardArgs& f, const BackwardArgs& bw) {
  const Geometry g(desc, kern_for<T>().nr);
  const TeamTimer timer(team_for(desc, g, 2, f.h0 != nullptr, f.lengths != nullptr), g.T);
  const int nt = timer.pick.n;
  const T* params = static_cast<const T*>(f.params);
  const T* packed = static_cast<const T*>(f.packed);
  T* ws = static_cast<T*>(f.workspace);
  const T* mask = static_cast<const T*>(f.dropout_mask);
  T* dp = static_cast<T*>(bw.dparams);
  const idx TB = g.T * g.B, BH = g.B * g.H;

  // Every element of these is written before it is read (zeros: just below).
  const ScratchPlan<T> scratch(
      {TB * g.GH, g.gru ? TB * g.GH : 0, 2 * BH, BH, g.L > 1 ? 2 * TB * g.DH : 0,
       packed_b_size(TB, std::max(g.in_size(0), std::max(g.H, g.DH)), g.nr) +
           (shared_weight_grad_pass<Cell>(g) ? packed_b_size(TB, g.H, g.nr) : 0),
       g.bias ? 0 : g.GH});
  T* const zeros = scratch[6];
  if (!g.bias) std::fill(zeros, zeros + g.GH, T(0));
  T* const dgx = scratch[0];
  T* const dgh = g.gru ? scratch[1] : dgx;
  T* const dhbuf = scratch[2];
  T* const dcbuf = scratch[3];
  T* const dbuf = scratch[4];
  T* const packbuf = scratch[5];

  const T* dyl = static_cast<const T*>(bw.dy);
  const bool zero_start = f.h0 == nullptr;  // every layer's first step started from zeros
  for (idx l = g.L - 1; l >= 0; --l) {
    const T* xin = l == 0 ? static_cast<const T*>(f.x) : ws + g.ws_layer_input(l);
    T* dxin = l == 0 ? static_cast<T*>(bw.dx) : dbuf + (l & 1) * TB * g.DH;
    for (idx d = 0; d < g.D; ++d) {
      const LayerPtrs<T> P = layer_ptrs<T>(g, l, d, params, packed, ws, zeros);
      const idx so = (l * g.D + d) * BH;
      const T* dhn = bw.dhn ? static_cast<const T*>(bw.dhn) + so : nullptr;
      const T* dcn = bw.dcn ? static_cast<const T*>(bw.dcn) + so : nullptr;
      T* dh0 = static_cast<T*>(bw.dh0) + so;
      T* dc0 = bw.dc0 ? static_cast<T*>(bw.dc0) + so : nullptr;
      SpinBarrier bar(nt);
      run_team(nt, [&] {
        DenormalGuard<T> guard;
        // Sized for nt before the region; resized (all threads of the team or none reach the
        // single) only when OpenMP grants fewer threads than asked for, as in forward_t.
        if (thread_count() != nt) {
#pragma omp single
          bar.reset(thread_count());
        }
        const Team team{thread_id(), thread_count(), &bar, nullptr, false};
        if constexpr (kResetBefore<Cell>)
          backward_direction_rb<T, Cell>(g, l, d, P, xin, dyl, dhn, dh0, f.lengths, dp, dxin,
                                         d > 0, dgx, dhbuf, packbuf, zero_start, team);
        else
          backward_direction<T, Cell>(g, l, d, P, xin, dyl, dhn, dcn, dh0, dc0, f.lengths, dp,
                                      dxin, d > 0, dgx, dgh, dhbuf, dcbuf, packbuf, zero_start,
                                      team);
      });
    }
    if (l > 0 && mask) scale_by_mask<T>(TB * g.DH, dxin, mask + (l - 1) * TB * g.DH, nt);
    dyl = dxin;
  }
}

// Whether none of a[0, n) is Inf or NaN: an all-ones exponent, tested on the bits with an OR
// reduction that vectorises (std::isfinite in a short-circuit loop did not).
template <class T>
bool all_finite(const T* a, idx n) {
  using U = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  constexpr U kExp = sizeof(T) == 4 ? U(0x7f800000u) : U(0x7ff0000000000000ull);
  U bad = 0;
  for (idx i = 0; i < n; ++i) {
    U b;
    std::memcpy(&b, a + i, sizeof b);
    bad |= U((b & kExp) == kExp);
  }
  return bad == 0;
}

template <class T>
void pack_t(const Desc& desc, const T* params, T* packed) {
  const Geometry g(desc, kern_for<T>().nr);
  const int nt = g.param_total() < 100000 ? 1 : get_num_threads();
  const idx H = g.H, GH = g.GH, G = g.G, nr = g.nr;
  for (idx l = 0; l < g.L; ++l)
    for (idx d = 0; d < g.D; ++d) {
      const idx in = g.in_size(l);
      const T* wih = params + g.param_off(l, d);
      const T* whh = wih + GH * in;
      T* out = packed + g.packed_off(l, d);
#pragma omp parallel num_threads(nt)
      {
        const int tid = thread_id(), nth = thread_count();
        idx p0, p1;
        T* o = out;
        split(ceil_div(GH, nr), tid, nth, &p0, &p1);  // W_ih^T: b(k=i, n=r) = W_ih[r][i]
        pack_b_range<T>(in, GH, (int)nr, p0, p1, wih, in, true, o);
        o += g.pk_wihT(l);
        // W_hh^T regrouped: panel p = u*G + gate holds the rows gate*H + u*nr + j of W_hh (the
        // units of block u), zero past H.
        split(g.unit_blocks() * G, tid, nth, &p0, &p1);
        for (idx p = p0; p < p1; ++p) {
          const idx u = p / G, gate = p % G, nv = std::min<idx>(nr, H - u * nr);
          pack_panel<T, true>(H, nv, (int)nr, whh + (gate * H + u * nr) * H, H, o + p * H * nr);
        }
        o += g.pk_whhT();
        split(ceil_div(H, nr), tid, nth, &p0, &p1);  // W_hh: b(k=r, n=unit)
        pack_b_range<T>(GH, H, (int)nr, p0, p1, whh, H, false, o);
        o += g.pk_whh();
        split(ceil_div(in, nr), tid, nth, &p0, &p1);  // W_ih: b(k=r, n=i)
        pack_b_range<T>(GH, in, (int)nr, p0, p1, wih, in, false, o);
      }
      packed[g.packed_flags() + l * g.D + d] = all_finite(whh, GH * H) ? T(1) : T(0);
    }
}

// Calls run(LstmExtCell<T, peephole, clip, input_forget>{}) for the variant the descriptor asks
// for (at least one switch on: the plain LSTM runs LstmCell).
template <class T, class Run>
void with_lstm_variant(const Desc& d, Run&& run) {
  const int bits = (d.peephole ? 1 : 0) | (clip_on(d) ? 2 : 0) | (d.input_forget ? 4 : 0);
  switch (bits) {
    case 1: return run(LstmExtCell<T, true, false, false>{});
    case 2: return run(LstmExtCell<T, false, true, false>{});
    case 3: return run(LstmExtCell<T, true, true, false>{});
    case 4: return run(LstmExtCell<T, false, false, true>{});
    case 5: return run(LstmExtCell<T, true, false, true>{});
    case 6: return run(LstmExtCell<T, false, true, true>{});
    case 7: return run(LstmExtCell<T, true, true, true>{});
  }
}

// Calls run(Cell{}) with the clip variant of an RNN or GRU cell (clip on, cell not an LSTM).
template <class T, class Run>
void with_clip_cell(const Desc& d, Run&& run) {
  switch (d.cell) {
    case kRnnTanh: return run(RnnClipCell<T, false>{});
    case kRnnRelu: return run(RnnClipCell<T, true>{});
    case kGru: return run(GruClipCell<T>{});
    case kGruResetBefore: return run(GruResetBeforeClipCell<T>{});
  }
}

template <class T>
void forward_dispatch(const Desc& d, const ForwardArgs& a) {
  if (d.cell == kLstm && lstm_variant(d))
    return with_lstm_variant<T>(d, [&](auto cell) { forward_t<T, decltype(cell)>(d, a); });
  if (d.cell != kLstm && clip_on(d))
    return with_clip_cell<T>(d, [&](auto cell) { forward_t<T, decltype(cell)>(d, a); });
  switch (d.cell) {
    case kRnnTanh: return forward_t<T, RnnCell<T, false>>(d, a);
    case kRnnRelu: return forward_t<T, RnnCell<T, true>>(d, a);
    case kLstm: return forward_t<T, LstmCell<T>>(d, a);
    case kGru: return forward_t<T, GruCell<T>>(d, a);
    case kGruResetBefore: return forward_t<T, GruResetBeforeCell<T>>(d, a);
  }
}

template <class T>
void backward_dispatch(const Desc& d, const ForwardArgs& f, const BackwardArgs& b) {
  if (d.cell == kLstm && lstm_variant(d))
    return with_lstm_variant<T>(d, [&](auto cell) { backward_t<T, decltype(cell)>(d, f, b); });
  if (d.cell != kLstm && clip_on(d))
    return with_clip_cell<T>(d, [&](auto cell) { backward_t<T, decltype(cell)>(d, f, b); });
  switch (d.cell) {
    case kRnnTanh: return backward_t<T, RnnCell<T, false>>(d, f, b);
    case kRnnRelu: return backward_t<T, RnnCell<T, true>>(d, f, b);
    case kLstm: return backward_t<T, LstmCell<T>>(d, f, b);
    case kGru: return backward_t<T, GruCell<T>>(d, f, b);
    case kGruResetBefore: return backward_t<T, GruResetBeforeCell<T>>(d, f, b);
  }
}

void forward_entry(const Desc& d, const ForwardArgs& a) {
  if (d.dtype == kF32)
    forward_dispatch<float>(d, a);
  else
    forward_dispatch<double>(d, a);
}

void backward_entry(const Desc& d, const ForwardArgs& f, const BackwardArgs& b) {
  if (d.dtype == kF32)
    backward_dispatch<float>(d, f, b);
  else
    backward_dispatch<double>(d, f, b);
}

void pack_entry(const Desc& d, const void* params, void* packed) {
  if (d.dtype == kF32)
    pack_t<float>(d, static_cast<const float*>(params), static_cast<float*>(packed));
  else
    pack_t<double>(d, static_cast<const double*>(params), static_cast<double*>(packed));
}

void activation_entry(int which, const float* x, float* y, int64_t n) {
#pragma GCC ivdep
  for (int64_t i = 0; i < n; ++i)
    y[i] = which == 0 ? Act<float>::sigmoid(x[i]) : which == 1 ? Act<float>::tanh(x[i]) : exp_f32(x[i]);
}

}  // namespace

// The engine of this instruction set: micro-kernels and entry points.
KernelSet engine() {
  KernelSet k;
  k.name = RF_ISA_NAME;
  k.mr_f = kern_for<float>().mr;
  k.nr_f = kern_for<float>().nr;
  k.mr_d = kern_for<double>().mr;
  k.nr_d = kern_for<double>().nr;
  k.kf = kern_for<float>().fn;
  k.kd = kern_for<double>().fn;
  k.forward = &forward_entry;
  k.backward = &backward_entry;
  k.pack = &pack_entry;
  k.pair_tiles = false;  // the dispatcher sets it (kernels_by_name)
  k.fma_loop = &probe_fma_loop;
  k.read_sum = &probe_read_sum;
  k.activation = &activation_entry;
  k.wide_fma = false;  // the dispatcher sets it for the CPU
  return k;
}

}  // namespace RF_ISA
}  // namespace rnnfast
