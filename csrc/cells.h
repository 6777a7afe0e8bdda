// Cell policies: the elementwise gate math of one (batch row, hidden unit) for forward and
// backward. The driver calls them in loops over the units of one tile, right after the recurrent
// GEMM tile that feeds them; they are templates, so the time loop has no virtual call, and they
// have no branches on data or pointers, so those loops vectorise.
//
// Conventions for one unit j of one batch row (gate g of the pre-activations sits at g*gs + j):
//   gx   input projection W_ih x_t                 (stride gs between gates)
//   bx   b_ih                                        (stride gs)
//   gh   recurrent projection W_hh h_{t-1}          (stride ts between gates, from the GEMM tile)
//   bh   b_hh                                        (stride gs)
//   st   what backward needs from this step         (stride gs; S values per unit), written only
//        when Store (training)
// Backward receives dh = dL/dh_t (including the output's gradient) and writes the gradients of the
// pre-activations: dgx (w.r.t. the input projection) and, for GRU only (kSplitGh), dgh (w.r.t. the
// recurrent projection, which differs from dgx in the candidate gate). *dh_direct receives the part
// of dL/dh_{t-1} that does not go through W_hh.
#pragma once
#include <cstddef>
#include <cstring>

#include "activations.h"

namespace rnnfast {

using std::ptrdiff_t;

// Staged gate math of a block of rows x W units (W: the kernel's panel width, a compile-time
// constant). The per-unit fwd() above is one long dependency chain per unit (exp, divide, ...,
// then tanh(c)); the out-of-order window holds too few of them to hide their latency, so the
// gate math ran at about half the speed (an earlier build: ~36 against ~17 cycles per unit, in
// the engine). fwd_rows() runs the same scalar operations stage by stage over arrays of rows*W
// values, whose iterations are independent, with results identical to fwd() (same operations,
// same order, per element). The LSTM and GRU stages are: the gates' activations (and the LSTM's
// c_t) in one loop per row, the last tanh over all rows, the outputs per row; each activation as
// a pass of its own was ~30% slower (standalone LSTM, 16 rows x 32 units, AVX-512: 3.6 against
// 2.5 TSC cycles per unit).
//   rows of the block: gx + r*gxs (+ g*gs + k), gh (the GEMM tile) + r*ghs (+ g*ts + k),
//   hp/cp/hn/cn + r*hs, y + r*ys, st + r*sts (+ g*gs + k); all offset to the block's first unit.
//   Only units k < w are read or written; only rows with active[r] are written.
//   pre: scratch of (G + 2) * rows * W values.
template <class T>
struct StageIO {
  ptrdiff_t rows, w;
  const T *gx, *bx, *bh, *gh;
  ptrdiff_t gxs, gs, ghs, ts;
  const T *hp, *cp;
  T *hn, *cn;
  ptrdiff_t hs;
  T* y;
  ptrdiff_t ys;
  T* st;
  ptrdiff_t sts;
  const unsigned char* active;
  T* pre;
};

// pre[g][r*W + k] = (gx + bx) + (gh + bh) of gate g (the same sum fwd() forms); 0 past w.
template <class T, int W>
RF_ALWAYS_INLINE void stage_gather(const StageIO<T>& a, int g, T* out) {
  const T* bx = a.bx + g * a.gs;
  const T* bh = a.bh + g * a.gs;
  for (ptrdiff_t r = 0; r < a.rows; ++r) {
    const T* gx = a.gx + r * a.gxs + g * a.gs;
    const T* gh = a.gh + r * a.ghs + g * a.ts;
    T* o = out + r * W;
    if (a.w == W) {
      // One W-wide vector expression (the compiler splits it into native vectors): written as a
      // loop, the compile-time trip count got the loop fully unrolled before vectorisation, and
      // the straight-line code was left scalar (16 loads, adds and stores per row and gate).
      typedef T V __attribute__((vector_size(W * sizeof(T))));
      V vgx, vbx, vgh, vbh;
      std::memcpy(&vgx, gx, sizeof(V));
      std::memcpy(&vbx, bx, sizeof(V));
      std::memcpy(&vgh, gh, sizeof(V));
      std::memcpy(&vbh, bh, sizeof(V));
      const V sum = (vgx + vbx) + (vgh + vbh);
      std::memcpy(o, &sum, sizeof(V));
    } else {
      for (ptrdiff_t k = 0; k < a.w; ++k) o[k] = (gx[k] + bx[k]) + (gh[k] + bh[k]);
      for (ptrdiff_t k = a.w; k < W; ++k) o[k] = T(0);
    }
  }
}

// Training: the four staged arrays p0..p3 of row r (already offset to the row) into the row's
// stored slots 0..3 (st + r*sts, slot stride gs), units k < w.
template <class T>
RF_ALWAYS_INLINE void stage_store4(const StageIO<T>& a, ptrdiff_t r, const T* p0, const T* p1,
                                   const T* p2, const T* p3) {
  T* st = a.st + r * a.sts;
#pragma GCC ivdep
  for (ptrdiff_t k = 0; k < a.w; ++k) {
    st[k] = p0[k];
    st[a.gs + k] = p1[k];
    st[2 * a.gs + k] = p2[k];
    st[3 * a.gs + k] = p3[k];
  }
}

template <class T>
RF_ALWAYS_INLINE void stage_tanh(ptrdiff_t n, const T* in, T* out) {
#pragma GCC ivdep
  for (ptrdiff_t e = 0; e < n; ++e) out[e] = Act<T>::tanh(in[e]);
}

// Cell::fwd_rows_w<Store, W, Full>(a) with Full = (a.w == W): a full block's loops over its units
// get compile-time trip counts (standalone LSTM, 16 rows x 32 units: ~10% faster than with the
// count known only at run time).
template <class Cell, bool Store, int W, class T>
RF_ALWAYS_INLINE void stage_rows(const StageIO<T>& a) {
  if (a.w == W)
    Cell::template fwd_rows_w<Store, W, true>(a);
  else
    Cell::template fwd_rows_w<Store, W, false>(a);
}

// Elman RNN, h_t = act(gx + b_ih + gh + b_hh). Stores nothing: act' is recovered from h_t.
template <class T, bool Relu>
struct RnnCell {
  static constexpr int G = 1, S = 0;
  static constexpr bool kHasC = false, kSplitGh = false;
  template <bool Store>
  static RF_ALWAYS_INLINE void fwd(const T* gx, const T* bx, const T* gh, ptrdiff_t, const T* bh, ptrdiff_t,
                         T, T, T* h, T*, T*) {
    const T a = (gx[0] + bx[0]) + (gh[0] + bh[0]);
    // relu keeps NaN (a comparison with NaN is false, so a != a selects a)
    *h = Relu ? (a > T(0) ? a : (a != a ? a : T(0))) : Act<T>::tanh(a);
  }
  template <bool Store, int W>
  static RF_ALWAYS_INLINE void fwd_rows(const StageIO<T>& a) {
    T* p = a.pre;
    const ptrdiff_t n = a.rows * W;
    stage_gather<T, W>(a, 0, p);
    if constexpr (Relu) {
#pragma GCC ivdep
      for (ptrdiff_t e = 0; e < n; ++e) {
        const T v = p[e];
        p[e] = v > T(0) ? v : (v != v ? v : T(0));
      }
    } else {
      stage_tanh(n, p, p);
    }
    for (ptrdiff_t r = 0; r < a.rows; ++r) {
      if (!a.active[r]) continue;
      const T* pr = p + r * W;
      T* hn = a.hn + r * a.hs;
      T* y = a.y + r * a.ys;
#pragma GCC ivdep
      for (ptrdiff_t k = 0; k < a.w; ++k) {
        hn[k] = pr[k];
        y[k] = pr[k];
      }
    }
  }
  // h_t = act(a): da = dh * act'(a), with act'(a) = 1 - h_t^2 (tanh) or [h_t > 0] (relu).
  static RF_ALWAYS_INLINE void bwd(T dh, T, const T*, ptrdiff_t, T hnew, T, T, T*, T* dgx, T*,
                         T* dh_direct) {
    dgx[0] = Relu ? (hnew > T(0) ? dh : T(0)) : dh * (T(1) - hnew * hnew);
    *dh_direct = T(0);
  }
};

// LSTM (gates i, f, g, o). Stores the four activations; c_t lives in the cell-state buffer.
template <class T>
struct LstmCell {
  static constexpr int G = 4, S = 4;
  static constexpr bool kHasC = true, kSplitGh = false;
  template <bool Store>
  static RF_ALWAYS_INLINE void fwd(const T* gx, const T* bx, const T* gh, ptrdiff_t ts, const T* bh,
                         ptrdiff_t gs, T, T cprev, T* h, T* c, T* st) {
    const T i = Act<T>::sigmoid((gx[0] + bx[0]) + (gh[0] + bh[0]));
    const T f = Act<T>::sigmoid((gx[gs] + bx[gs]) + (gh[ts] + bh[gs]));
    const T g = Act<T>::tanh((gx[2 * gs] + bx[2 * gs]) + (gh[2 * ts] + bh[2 * gs]));
    const T o = Act<T>::sigmoid((gx[3 * gs] + bx[3 * gs]) + (gh[3 * ts] + bh[3 * gs]));
    const T cn = f * cprev + i * g;
    *c = cn;
    *h = o * Act<T>::tanh(cn);
    if constexpr (Store) {
      st[0] = i;
      st[gs] = f;
      st[2 * gs] = g;
      st[3 * gs] = o;
    }
  }
  // The gate activations and c_t in one pass per row (every element independent, so the loop over
  // a row's units vectorises and rows overlap), then tanh(c_t) over all rows, then the outputs.
  // Before, the gather, each activation and the c_t update were passes of their own over the
  // staged arrays: standalone (16 rows x 32 units, AVX-512) 3.6 TSC cycles per unit, now 2.5; same
  // bits.
  template <bool Store, int W>
  static RF_ALWAYS_INLINE void fwd_rows(const StageIO<T>& a) {
    stage_rows<LstmCell, Store, W>(a);
  }
  template <bool Store, int W, bool Full>
  static RF_ALWAYS_INLINE void fwd_rows_w(const StageIO<T>& a) {
    const ptrdiff_t n = a.rows * W, w = Full ? W : a.w, gs = a.gs, ts = a.ts;
    T* const pi = a.pre;
    T* const pf = pi + n;
    T* const pg = pf + n;
    T* const po = pg + n;
    T* const pc = po + n;
    T* const ptc = pc + n;
    for (ptrdiff_t r = 0; r < a.rows; ++r) {
      const T* gx = a.gx + r * a.gxs;
      const T* gh = a.gh + r * a.ghs;
      const T* bx = a.bx;
      const T* bh = a.bh;
      const T* cp = a.cp + r * a.hs;
      const ptrdiff_t e0 = r * W;
#pragma GCC ivdep
      for (ptrdiff_t k = 0; k < w; ++k) {
        // the sums fwd() forms, gate by gate
        const T i = Act<T>::sigmoid((gx[k] + bx[k]) + (gh[k] + bh[k]));
        const T f = Act<T>::sigmoid((gx[gs + k] + bx[gs + k]) + (gh[ts + k] + bh[gs + k]));
        const T g =
            Act<T>::tanh((gx[2 * gs + k] + bx[2 * gs + k]) + (gh[2 * ts + k] + bh[2 * gs + k]));
        const T o =
            Act<T>::sigmoid((gx[3 * gs + k] + bx[3 * gs + k]) + (gh[3 * ts + k] + bh[3 * gs + k]));
        pi[e0 + k] = i;
        pf[e0 + k] = f;
        pg[e0 + k] = g;
        po[e0 + k] = o;
        // Written i*g + f*c (fwd() reads f*c + i*g): in float32 this order makes GCC contract
        // the same product into the FMA as it does in fwd(), so both give the same bits
        // (checked by tests/test_lstm_variants.py, whose variants run per unit).
        pc[e0 + k] = i * g + f * cp[k];
      }
      for (ptrdiff_t k = w; k < W; ++k) pc[e0 + k] = T(0);
    }
    stage_tanh(n, pc, ptc);
    for (ptrdiff_t r = 0; r < a.rows; ++r) {
      if (!a.active[r]) continue;
      const ptrdiff_t e0 = r * W;
      T* hn = a.hn + r * a.hs;
      T* cn = a.cn + r * a.hs;
      T* y = a.y + r * a.ys;
#pragma GCC ivdep
      for (ptrdiff_t k = 0; k < w; ++k) {
        const T h = po[e0 + k] * ptc[e0 + k];
        cn[k] = pc[e0 + k];
        hn[k] = h;
        y[k] = h;
      }
      if constexpr (Store) stage_store4(a, r, pi + e0, pf + e0, pg + e0, po + e0);
    }
  }
  // c_t = f c_{t-1} + i g;  h_t = o tanh(c_t).  *dc carries dL/dc_t in and dL/dc_{t-1} out.
  static RF_ALWAYS_INLINE void bwd(T dh, T, const T* st, ptrdiff_t gs, T, T cprev, T cnew, T* dc, T* dgx,
                         T*, T* dh_direct) {
    const T i = st[0], f = st[gs], g = st[2 * gs], o = st[3 * gs];
    const T tc = Act<T>::tanh(cnew);
    const T dct = *dc + dh * o * (T(1) - tc * tc);  // through h_t = o tanh(c_t)
    const T di = dct * g, df = dct * cprev, dg = dct * i, d_o = dh * tc;
    *dc = dct * f;  // c_t = f c_{t-1} + ...
    dgx[0] = di * i * (T(1) - i);
    dgx[gs] = df * f * (T(1) - f);
    dgx[2 * gs] = dg * (T(1) - g * g);
    dgx[3 * gs] = d_o * o * (T(1) - o);
    *dh_direct = T(0);
  }
};

// LSTM with ONNX's optional features, each a compile-time switch (the plain LstmCell above stays
// the default path):
//   Peep:        a_i += p_i c_{t-1},  a_f += p_f c_{t-1},  a_o += p_o c_t
//   Clip:        every pre-activation clamped to [-clip, clip] just before its activation
//   InputForget: f = 1 - i (the forget gate's pre-activation is ignored; its gradient is zero)
// pw points at unit j of the peephole weights (p_i, p_f, p_o with stride gs); clip is the
// threshold. Stores i, f, g, o and, with Clip, at st[4..7]*gs whether each clamp let its input
// through (1) or was active (0): the derivative of the clamp, which backward needs exactly.
template <class T, bool Peep, bool Clip, bool InputForget>
struct LstmExtCell {
  static constexpr int G = 4, S = Clip ? 8 : 4;
  static constexpr bool kHasC = true, kSplitGh = false;
  // clamp(a, -c, c), NaN kept (both comparisons are false for NaN), and its derivative
  static RF_ALWAYS_INLINE T clamp(T a, T c) { return a < -c ? -c : (a > c ? c : a); }
  static RF_ALWAYS_INLINE T pass(T a, T c) { return (a >= -c && a <= c) ? T(1) : T(0); }

  template <bool Store>
  static RF_ALWAYS_INLINE void fwd(const T* gx, const T* bx, const T* gh, ptrdiff_t ts, const T* bh,
                         ptrdiff_t gs, T, T cprev, T* h, T* c, T* st, const T* pw, T clip) {
    T ai = (gx[0] + bx[0]) + (gh[0] + bh[0]);
    T af = (gx[gs] + bx[gs]) + (gh[ts] + bh[gs]);
    T ag = (gx[2 * gs] + bx[2 * gs]) + (gh[2 * ts] + bh[2 * gs]);
    T ao = (gx[3 * gs] + bx[3 * gs]) + (gh[3 * ts] + bh[3 * gs]);
    if constexpr (Peep) {
      ai += pw[0] * cprev;
      af += pw[gs] * cprev;
    }
    T mi = T(1), mf = T(1), mg = T(1);
    if constexpr (Clip) {
      mi = pass(ai, clip), mf = pass(af, clip), mg = pass(ag, clip);
      ai = clamp(ai, clip), af = clamp(af, clip), ag = clamp(ag, clip);
    }
    const T i = Act<T>::sigmoid(ai);
    const T f = InputForget ? T(1) - i : Act<T>::sigmoid(af);
    const T g = Act<T>::tanh(ag);
    const T cn = f * cprev + i * g;
    if constexpr (Peep) ao += pw[2 * gs] * cn;
    T mo = T(1);
    if constexpr (Clip) {
      mo = pass(ao, clip);
      ao = clamp(ao, clip);
    }
    const T o = Act<T>::sigmoid(ao);
    *c = cn;
    *h = o * Act<T>::tanh(cn);
    if constexpr (Store) {
      st[0] = i;
      st[gs] = f;
      st[2 * gs] = g;
      st[3 * gs] = o;
      if constexpr (Clip) {
        st[4 * gs] = mi;
        st[5 * gs] = mf;
        st[6 * gs] = mg;
        st[7 * gs] = mo;
      }
    }
  }
  // Forward, inverted step by step. *dc carries dL/dc_t in and dL/dc_{t-1} out; dgx receives the
  // gradients of the unclamped pre-activations without the peephole terms (a_i, a_f, a_g, a_o),
  // which are also what the peephole weights' gradients need (dp_i = sum da_i c_{t-1}, ...).
  static RF_ALWAYS_INLINE void bwd(T dh, T, const T* st, ptrdiff_t gs, T, T cprev, T cnew, T* dc, T* dgx,
                         T*, T* dh_direct, const T* pw) {
    const T i = st[0], f = st[gs], g = st[2 * gs], o = st[3 * gs];
    const T tc = Act<T>::tanh(cnew);
    T dao = dh * tc * o * (T(1) - o);                    // h_t = o tanh(c_t), o = sigma(a_o')
    if constexpr (Clip) dao *= st[7 * gs];               // a_o' = clamp(a_o + p_o c_t)
    T dct = *dc + dh * o * (T(1) - tc * tc);             // through tanh(c_t)
    if constexpr (Peep) dct += dao * pw[2 * gs];         // through p_o c_t
    T di = dct * g;                                      // c_t = f c_{t-1} + i g
    const T df = dct * cprev, dg = dct * i;
    if constexpr (InputForget) di -= df;                 // f = 1 - i
    T dai = di * i * (T(1) - i);
    T daf = InputForget ? T(0) : df * f * (T(1) - f);
    T dag = dg * (T(1) - g * g);
    if constexpr (Clip) {
      dai *= st[4 * gs];
      daf *= st[5 * gs];
      dag *= st[6 * gs];
    }
    T dcp = dct * f;
    if constexpr (Peep) dcp += dai * pw[0] + daf * pw[gs];  // a_i, a_f saw p_i c_{t-1}, p_f c_{t-1}
    *dc = dcp;
    dgx[0] = dai;
    dgx[gs] = daf;
    dgx[2 * gs] = dag;
    dgx[3 * gs] = dao;
    *dh_direct = T(0);
  }
};

// Whether the forward time loop runs a cell's gate math staged (fwd_rows) rather than per unit:
// float32 only (the product precision). The staged and per-unit loops give the same bits only
// where the compiler contracts the same products into FMAs, which the operand order in fwd_rows
// arranges for float32; float64 (for checking) stays per unit.
template <class Cell>
inline constexpr bool kCellStaged = false;
template <bool Relu>
inline constexpr bool kCellStaged<RnnCell<float, Relu>> = true;
template <>
inline constexpr bool kCellStaged<LstmCell<float>> = true;

// Whether a cell's fwd/bwd take the per-(layer, direction) extras (peephole pointer, clip).
template <class Cell>
inline constexpr bool kCellTakesExtras = false;
template <class T, bool Peep, bool Clip, bool InputForget>
inline constexpr bool kCellTakesExtras<LstmExtCell<T, Peep, Clip, InputForget>> = true;

// GRU, PyTorch form: r, z from gx + b_ih + gh + b_hh; n = tanh(gx_n + b_in + r * (gh_n + b_hn));
// h_t = (1 - z) n + z h_{t-1}. Stores r, z, n and (gh_n + b_hn).
template <class T>
struct GruCell {
  static constexpr int G = 3, S = 4;
  static constexpr bool kHasC = false, kSplitGh = true;
  template <bool Store>
  static RF_ALWAYS_INLINE void fwd(const T* gx, const T* bx, const T* gh, ptrdiff_t ts, const T* bh,
                         ptrdiff_t gs, T hprev, T, T* h, T*, T* st) {
    const T r = Act<T>::sigmoid((gx[0] + bx[0]) + (gh[0] + bh[0]));
    const T z = Act<T>::sigmoid((gx[gs] + bx[gs]) + (gh[ts] + bh[gs]));
    const T hn = gh[2 * ts] + bh[2 * gs];
    const T n = Act<T>::tanh((gx[2 * gs] + bx[2 * gs]) + r * hn);
    *h = (T(1) - z) * n + z * hprev;
    if constexpr (Store) {
      st[0] = r;
      st[gs] = z;
      st[2 * gs] = n;
      st[3 * gs] = hn;
    }
  }
  // r, z and the candidate's pre-activation in one pass per row, then tanh over all rows, then
  // h_t (as LstmCell::fwd_rows; before, the gathers, each sigmoid and the candidate's sum were
  // passes of their own). Same bits.
  template <bool Store, int W>
  static RF_ALWAYS_INLINE void fwd_rows(const StageIO<T>& a) {
    stage_rows<GruCell, Store, W>(a);
  }
  template <bool Store, int W, bool Full>
  static RF_ALWAYS_INLINE void fwd_rows_w(const StageIO<T>& a) {
    const ptrdiff_t n = a.rows * W, w = Full ? W : a.w, gs = a.gs, ts = a.ts;
    T* const pr = a.pre;
    T* const pz = pr + n;
    T* const pn = pz + n;
    T* const phn = pn + n;
    for (ptrdiff_t r = 0; r < a.rows; ++r) {
      const T* gx = a.gx + r * a.gxs;
      const T* gh = a.gh + r * a.ghs;
      const T* bx = a.bx;
      const T* bh = a.bh;
      const ptrdiff_t e0 = r * W;
#pragma GCC ivdep
      for (ptrdiff_t k = 0; k < w; ++k) {
        // the sums fwd() forms
        const T rr = Act<T>::sigmoid((gx[k] + bx[k]) + (gh[k] + bh[k]));
        const T z = Act<T>::sigmoid((gx[gs + k] + bx[gs + k]) + (gh[ts + k] + bh[gs + k]));
        const T hn = gh[2 * ts + k] + bh[2 * gs + k];
        pr[e0 + k] = rr;
        pz[e0 + k] = z;
        phn[e0 + k] = hn;
        pn[e0 + k] = (gx[2 * gs + k] + bx[2 * gs + k]) + rr * hn;
      }
      for (ptrdiff_t k = w; k < W; ++k) pn[e0 + k] = T(0);
    }
    stage_tanh(n, pn, pn);
    for (ptrdiff_t r = 0; r < a.rows; ++r) {
      if (!a.active[r]) continue;
      const ptrdiff_t e0 = r * W;
      const T* hp = a.hp + r * a.hs;
      T* hn = a.hn + r * a.hs;
      T* y = a.y + r * a.ys;
#pragma GCC ivdep
      for (ptrdiff_t k = 0; k < w; ++k) {
        const T z = pz[e0 + k];
        const T h = (T(1) - z) * pn[e0 + k] + z * hp[k];
        hn[k] = h;
        y[k] = h;
      }
      if constexpr (Store) stage_store4(a, r, pr + e0, pz + e0, pn + e0, phn + e0);
    }
  }
  static RF_ALWAYS_INLINE void bwd(T dh, T hprev, const T* st, ptrdiff_t gs, T, T, T, T*, T* dgx, T* dgh,
                         T* dh_direct) {
    const T r = st[0], z = st[gs], n = st[2 * gs], hn = st[3 * gs];
    const T dn = dh * (T(1) - z);             // h_t = (1 - z) n + z h_{t-1}
    const T dz = dh * (hprev - n);
    const T dan = dn * (T(1) - n * n);        // n = tanh(a_n), a_n = gx_n + r * hn
    const T dr = dan * hn;
    const T dar = dr * r * (T(1) - r), daz = dz * z * (T(1) - z);
    dgx[0] = dar;
    dgx[gs] = daz;
    dgx[2 * gs] = dan;
    dgh[0] = dar;
    dgh[gs] = daz;
    dgh[2 * gs] = dan * r;                    // hn = W_hn h + b_hn enters scaled by r
    *dh_direct = dh * z;
  }
};

template <>
inline constexpr bool kCellStaged<GruCell<float>> = true;

// GRU with the reset gate applied BEFORE the recurrent product of the candidate (ONNX
// linear_before_reset=0, its default; Keras reset_after=False):
//   r = sigmoid(gx_r + b_ir + W_hr h + b_hr),  z = sigmoid(gx_z + b_iz + W_hz h + b_hz)
//   n = tanh(gx_n + b_in + W_hn q + b_hn)  with q = r * h_{t-1}
//   h_t = (1 - z) n + z h_{t-1}
// W_hn q needs q of ALL units, so a step runs in two phases with a sync between them (see
// forward_direction_rb in the driver): phase 1 (reset) computes the r tile and q; phase 2 (update)
// the z tile (from h_{t-1}) and the n tile (from q), then h_t. Backward likewise splits at
// dq = da_n W_hn. Same parameters and layout as GruCell. Stores r, z, n, q (slots 0..3, stride
// gs); q is also the operand of the dW_hn GEMM.
template <class T>
struct GruResetBeforeCell {
  static constexpr int G = 3, S = 4;
  static constexpr bool kHasC = false, kSplitGh = false;
  // Phase 1 of one unit: gh_r = (W_hr h_{t-1})_j.  *q = r * h_{t-1}.
  static RF_ALWAYS_INLINE T fwd_reset(T gx_r, T bx_r, T gh_r, T bh_r, T hprev, T* q) {
    const T r = Act<T>::sigmoid((gx_r + bx_r) + (gh_r + bh_r));
    *q = r * hprev;
    return r;
  }
  // Phase 2 of one unit: gh_z = (W_hz h_{t-1})_j, gq_n = (W_hn q)_j. Returns h_t.
  static RF_ALWAYS_INLINE T fwd_update(T gx_z, T bx_z, T gh_z, T bh_z, T gx_n, T bx_n, T gq_n, T bh_n,
                             T hprev, T* z_out, T* n_out) {
    const T z = Act<T>::sigmoid((gx_z + bx_z) + (gh_z + bh_z));
    const T n = Act<T>::tanh((gx_n + bx_n) + (gq_n + bh_n));
    *z_out = z;
    *n_out = n;
    return (T(1) - z) * n + z * hprev;
  }
  // Backward, first part (needs only this unit): h_t = (1 - z) n + z h_{t-1}, n = tanh(a_n),
  // z = sigmoid(a_z). Returns the part of dL/dh_{t-1} that goes straight through z * h_{t-1}.
  static RF_ALWAYS_INLINE T bwd_update(T dh, T hprev, T z, T n, T* da_z, T* da_n) {
    *da_n = dh * (T(1) - z) * (T(1) - n * n);
    *da_z = dh * (hprev - n) * z * (T(1) - z);
    return dh * z;
  }
  // Backward, second part, once dq = da_n W_hn is known (all units' da_n): q = r * h_{t-1}.
  // Returns the part of dL/dh_{t-1} through q.
  static RF_ALWAYS_INLINE T bwd_reset(T dq, T hprev, T r, T* da_r) {
    *da_r = dq * hprev * r * (T(1) - r);
    return dq * r;
  }
};

// Cells whose step runs in the two phases above (the driver picks its loops by this).
template <class Cell>
inline constexpr bool kResetBefore = false;
template <class T>
inline constexpr bool kResetBefore<GruResetBeforeCell<T>> = true;

// ---------------------------------------------------------------------------------------------
// ONNX `clip` on the other cells: every gate's pre-activation clamped to [-clip, clip] just before
// its activation (what onnxruntime computes for RNN, tanh and relu, and for both GRU forms, where
// the clamped candidate pre-activation is the full one, r-term included). Each stores, after what
// its plain cell stores, the clamp derivatives (1: input let through, 0: clamp active) that
// backward multiplies in, rather than guessing them from activation values. They take the extras
// (kCellTakesExtras: pw, unused, and clip), like LstmExtCell.
template <class T>
inline T clip_clamp(T a, T c) { return a < -c ? -c : (a > c ? c : a); }  // NaN kept
template <class T>
inline T clip_pass(T a, T c) { return (a >= -c && a <= c) ? T(1) : T(0); }

// Elman RNN with clip: h_t = act(clamp(a)). Stores the clamp derivative (S = 1); act' is still
// recovered from h_t (1 - h_t^2, or [h_t > 0]: clamp(a) > 0 iff a > 0 since clip > 0).
template <class T, bool Relu>
struct RnnClipCell {
  static constexpr int G = 1, S = 1;
  static constexpr bool kHasC = false, kSplitGh = false;
  template <bool Store>
  static inline void fwd(const T* gx, const T* bx, const T* gh, ptrdiff_t, const T* bh, ptrdiff_t,
                         T, T, T* h, T*, T* st, const T*, T clip) {
    T a = (gx[0] + bx[0]) + (gh[0] + bh[0]);
    if constexpr (Store) st[0] = clip_pass(a, clip);
    a = clip_clamp(a, clip);
    *h = Relu ? (a > T(0) ? a : (a != a ? a : T(0))) : Act<T>::tanh(a);
  }
  static inline void bwd(T dh, T, const T* st, ptrdiff_t, T hnew, T, T, T*, T* dgx, T*,
                         T* dh_direct, const T*) {
    const T da = Relu ? (hnew > T(0) ? dh : T(0)) : dh * (T(1) - hnew * hnew);
    dgx[0] = da * st[0];
    *dh_direct = T(0);
  }
};

// GruCell (linear_before_reset=1) with clip: r = σ(clamp(a_r)), z = σ(clamp(a_z)),
// n = tanh(clamp(gx_n + b_in + r * hn)). Stores r, z, n, hn and the derivatives of the three
// clamps (slots 4, 5, 6: S = 7).
template <class T>
struct GruClipCell {
  static constexpr int G = 3, S = 7;
  static constexpr bool kHasC = false, kSplitGh = true;
  template <bool Store>
  static inline void fwd(const T* gx, const T* bx, const T* gh, ptrdiff_t ts, const T* bh,
                         ptrdiff_t gs, T hprev, T, T* h, T*, T* st, const T*, T clip) {
    const T ar = (gx[0] + bx[0]) + (gh[0] + bh[0]);
    const T az = (gx[gs] + bx[gs]) + (gh[ts] + bh[gs]);
    const T r = Act<T>::sigmoid(clip_clamp(ar, clip));
    const T z = Act<T>::sigmoid(clip_clamp(az, clip));
    const T hn = gh[2 * ts] + bh[2 * gs];
    const T an = (gx[2 * gs] + bx[2 * gs]) + r * hn;
    const T n = Act<T>::tanh(clip_clamp(an, clip));
    *h = (T(1) - z) * n + z * hprev;
    if constexpr (Store) {
      st[0] = r;
      st[gs] = z;
      st[2 * gs] = n;
      st[3 * gs] = hn;
      st[4 * gs] = clip_pass(ar, clip);
      st[5 * gs] = clip_pass(az, clip);
      st[6 * gs] = clip_pass(an, clip);
    }
  }
  static inline void bwd(T dh, T hprev, const T* st, ptrdiff_t gs, T, T, T, T*, T* dgx, T* dgh,
                         T* dh_direct, const T*) {
    const T r = st[0], z = st[gs], n = st[2 * gs], hn = st[3 * gs];
    const T dn = dh * (T(1) - z);
    const T dz = dh * (hprev - n);
    const T dan = dn * (T(1) - n * n) * st[6 * gs];
    const T dr = dan * hn;
    const T dar = dr * r * (T(1) - r) * st[4 * gs], daz = dz * z * (T(1) - z) * st[5 * gs];
    dgx[0] = dar;
    dgx[gs] = daz;
    dgx[2 * gs] = dan;
    dgh[0] = dar;
    dgh[gs] = daz;
    dgh[2 * gs] = dan * r;
    *dh_direct = dh * z;
  }
};

// GruResetBeforeCell with clip: the same two phases, each clamp's derivative written to *m_*
// (stored slots 4, 5, 6 for r, z, n when training: S = 7; q stays in slot 3).
template <class T>
struct GruResetBeforeClipCell {
  static constexpr int G = 3, S = 7;
  static constexpr bool kHasC = false, kSplitGh = false;
  static inline T fwd_reset(T gx_r, T bx_r, T gh_r, T bh_r, T hprev, T* q, T clip, T* m_r) {
    const T a = (gx_r + bx_r) + (gh_r + bh_r);
    *m_r = clip_pass(a, clip);
    const T r = Act<T>::sigmoid(clip_clamp(a, clip));
    *q = r * hprev;
    return r;
  }
  static inline T fwd_update(T gx_z, T bx_z, T gh_z, T bh_z, T gx_n, T bx_n, T gq_n, T bh_n,
                             T hprev, T* z_out, T* n_out, T clip, T* m_z, T* m_n) {
    const T az = (gx_z + bx_z) + (gh_z + bh_z);
    const T an = (gx_n + bx_n) + (gq_n + bh_n);
    *m_z = clip_pass(az, clip);
    *m_n = clip_pass(an, clip);
    const T z = Act<T>::sigmoid(clip_clamp(az, clip));
    const T n = Act<T>::tanh(clip_clamp(an, clip));
    *z_out = z;
    *n_out = n;
    return (T(1) - z) * n + z * hprev;
  }
  static inline T bwd_update(T dh, T hprev, T z, T n, T* da_z, T* da_n, T m_z, T m_n) {
    *da_n = dh * (T(1) - z) * (T(1) - n * n) * m_n;
    *da_z = dh * (hprev - n) * z * (T(1) - z) * m_z;
    return dh * z;
  }
  static inline T bwd_reset(T dq, T hprev, T r, T* da_r, T m_r) {
    *da_r = dq * hprev * r * (T(1) - r) * m_r;
    return dq * r;
  }
};

template <class T, bool Relu>
inline constexpr bool kCellTakesExtras<RnnClipCell<T, Relu>> = true;
template <class T>
inline constexpr bool kCellTakesExtras<GruClipCell<T>> = true;
template <class T>
inline constexpr bool kCellTakesExtras<GruResetBeforeClipCell<T>> = true;
template <class T>
inline constexpr bool kResetBefore<GruResetBeforeClipCell<T>> = true;

}  // namespace rnnfast
