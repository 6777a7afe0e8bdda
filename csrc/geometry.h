// Sizes and offsets of every buffer the driver touches, computed once per call from the Desc.
// The same rules decide the flat parameter layout that the Python layer views by name.
#pragma once
#include "gemm.h"
#include "rnnfast.h"

namespace rnnfast {

struct Geometry {
  idx T, B, I, H, L, D;
  int G;      // gates
  int S;      // stored activations per unit and step (training; kGruResetBefore: r, z, n, r*h)
  idx GH, DH;
  bool bias, lstm, gru;
  int nr;     // panel width of the active kernel for this dtype

  Geometry(const Desc& d, int nr_)
      : T(d.seq_len), B(d.batch), I(d.input_size), H(d.hidden_size), L(d.num_layers),
        D(d.num_dirs), G(num_gates(d.cell)),
        S(d.cell == kLstm || d.cell == kGru || d.cell == kGruResetBefore ? 4 : 0),
        GH(G * d.hidden_size), DH(d.num_dirs * d.hidden_size), bias(d.has_bias != 0),
        lstm(d.cell == kLstm), gru(d.cell == kGru), nr(nr_) {
    // LSTM variants: peephole weights follow the biases; with clip, backward also needs to know
    // where each of the 4 clamps was active (0/1 per gate), stored after the activations.
    peep = lstm && d.peephole != 0;
    if (lstm && clip_on(d)) S = 8, clip = d.clip;
    // RNN/GRU clip: the cell stores its clamps' derivatives after its usual slots (RnnClipCell,
    // GruClipCell, GruResetBeforeClipCell in cells.h).
    if (!lstm && clip_on(d)) S = d.cell == kRnnTanh || d.cell == kRnnRelu ? 1 : 7, clip = d.clip;
  }
  bool peep = false;  // LSTM peephole weights (3*H per layer and direction)
  double clip = 0;    // pre-activation clip threshold (any cell), 0 when off

  idx in_size(idx l) const { return l == 0 ? I : DH; }
  idx unit_blocks() const { return ceil_div(H, nr); }

  // Parameters, PyTorch order: per (layer, dir): W_ih, W_hh, [b_ih, b_hh], [p_i, p_f, p_o].
  idx param_block(idx l) const {
    return GH * in_size(l) + GH * H + (bias ? 2 * GH : 0) + (peep ? 3 * H : 0);
  }
  idx param_off(idx l, idx d) const {
    idx off = 0;
    for (idx k = 0; k < l; ++k) off += D * param_block(k);
    return off + d * param_block(l);
  }
  idx param_total() const { return param_off(L, 0); }

  // Packed weights per (layer, dir):
  //   wihT  W_ih^T as a K=In x N=GH operand, natural column order    (input projection)
  //   whhT  W_hh^T with columns regrouped: panel u*G+g holds gate g of units [u*nr, u*nr+nr)
  //         so all gates of a block of units come out of consecutive GEMM tiles (forward step)
  //   whh   W_hh as a K=GH x N=H operand                              (backward step)
  //   wih   W_ih as a K=GH x N=In operand                             (input gradient)
  idx pk_wihT(idx l) const { return packed_b_size(in_size(l), GH, nr); }
  idx pk_whhT() const { return H * G * unit_blocks() * nr; }
  idx pk_whh() const { return packed_b_size(GH, H, nr); }
  idx pk_wih(idx l) const { return packed_b_size(GH, in_size(l), nr); }
  idx pk_block(idx l) const { return pk_wihT(l) + pk_whhT() + pk_whh() + pk_wih(l); }
  idx packed_off(idx l, idx d) const {
    idx off = 0;
    for (idx k = 0; k < l; ++k) off += D * pk_block(k);
    return off + d * pk_block(l);
  }
  // After the blocks, one value per (layer, dir): 1 when that W_hh is all finite, else 0. A step
  // whose previous state is known to be zero (the first step of a call without an initial state)
  // skips its recurrent product, whose value is then exactly zero, only when nothing in W_hh could
  // have turned 0 * w into NaN.
  idx packed_flags() const { return packed_off(L, 0); }
  idx packed_total() const { return packed_flags() + L * D; }

  // Training workspace per (layer, dir):
  //   hs  (T+1, B, H) hidden states with a halo slot for the initial state: the forward direction
  //       keeps h_{t} in slot t+1 (h0 in slot 0), the reverse direction keeps h_t in slot t (h0 in
  //       slot T), so the state before step t is slot t (forward) or t+1 (reverse) and all the
  //       "previous states" form one contiguous (T*B, H) matrix for the dW_hh GEMM.
  //   cs  (T+1, B, H) cell states, same slots (LSTM only)
  //   st  (T, B, S*H) activations kept for backward
  // then, for layers 1..L-1, their input (the previous layer's output after dropout), (T, B, D*H).
  idx ws_state() const { return (T + 1) * B * H; }
  idx ws_block() const { return ws_state() * (lstm ? 2 : 1) + T * B * S * H; }
  idx ws_hs(idx l, idx d) const { return (l * D + d) * ws_block(); }
  idx ws_cs(idx l, idx d) const { return ws_hs(l, d) + ws_state(); }
  idx ws_st(idx l, idx d) const { return ws_hs(l, d) + ws_state() * (lstm ? 2 : 1); }
  idx ws_layer_input(idx l) const { return L * D * ws_block() + (l - 1) * T * B * DH; }
  idx ws_total() const { return L * D * ws_block() + (L - 1) * T * B * DH; }
};

// Threads worth using for one call. Every thread needs at least one block of hidden units, enough
// recurrent work per step to pay for the barrier that publishes h_t (a tiny model on 2 threads
// spends its time waiting), and, where starting the team is dear next to the call's work, enough
// work in the call as a whole. How much is enough was measured on two machines, and depends on how
// fast a core's vector FMAs are next to that synchronisation (wide_fma: full-rate 512-bit FMAs):
// - Zen 5 (wide): 3e4 recurrent flops per thread and step, no bound per call: batch-1 models of
//   hidden 128-256 run ~1.5-2x faster on 2 threads than on 1, because each thread's slice of W_hh
//   then fits its own L2.
// - Zen 4, whose AVX-512 FMAs run at half the rate (and the AVX2 paths): 7.5e3 flops per thread
//   and step and 9e4 per thread and call (all layers' input projections and recurrent products).
//   2 threads against 1 (the same process, alternating, 16 pairs each): batch-1 LSTM H64 T25-T100
//   1.24-1.34x, H48 T100 1.26x, GRU H64 T25-T100 1.25x, RNN H128 T100 1.24x, LSTM H64 T50 training
//   1.30x, all on 1 thread with the Zen 5 setting; and one- or few-step calls under 1.8e5 flops
//   0.78-0.92x (LSTM H64 T1-T2, GRU H64 T3, GRU H96 T1), which the bound per call keeps on one.
// Results do not depend on this choice.
struct TeamThresholds {
  double step_flops;  // least recurrent flops per thread and step
  double call_flops;  // least flops per thread and call
};
inline constexpr TeamThresholds kTeamWideFma{3e4, 0};
inline constexpr TeamThresholds kTeamNarrowFma{7.5e3, 9e4};

// The most threads one call's team has: the time loop's scheduler keeps a claim counter per
// thread (StepScheduler::kMaxThreads, checked against this in driver_impl.h). Without the cap, a
// hidden size over 8192 (more than 256 unit blocks) at more than 256 threads indexed past them.
inline constexpr int kMaxTeamThreads = 256;
// Multiply-adds times 2 of a whole forward call: every layer's input projection and recurrence.
inline double call_flops_of(const Geometry& g) {
  double f = 0;
  for (idx l = 0; l < g.L; ++l)
    f += 2.0 * (double)(g.D * g.T * g.B * g.GH) * (double)(g.H + g.in_size(l));
  return f;
}

// scale multiplies both thresholds (team_tuner.h takes the sizes at 1/2 and 4 times them as the
// candidates of a call near them).
inline int threads_for(const Geometry& g, int requested, bool wide_fma, double scale = 1.0) {
  const TeamThresholds th0 = wide_fma ? kTeamWideFma : kTeamNarrowFma;
  const TeamThresholds th{th0.step_flops * scale, th0.call_flops * scale};
  const double step_flops = 2.0 * (double)g.B * (double)g.GH * (double)g.H;
  const double call_flops = call_flops_of(g);
  const auto most = [](double work, double per_thread) {
    return per_thread > 0 ? std::max<idx>(1, (idx)std::min(work / per_thread, 1e9))
                          : (idx)kMaxTeamThreads;
  };
  return (int)std::max<idx>(
      1, std::min<idx>({(idx)requested, g.unit_blocks(), most(step_flops, th.step_flops),
                        most(call_flops, th.call_flops), (idx)kMaxTeamThreads}));
}

// Panels per scheduled block of the forward time loop (forward_direction). At a batch of 1-4 rows
// a block of one panel (nr units) leaves its gate math 2-8 vectors of work between two GEMM
// tiles: chains of dependent exp/divide steps that the out-of-order window cannot overlap with
// anything (~36 cycles per unit at batch 1, a fifth of a GRU H256 step). Blocks of kWidePanels
// panels run their tiles first and then the gate math of all their units at once (staged, four
// times the independent vectors), while every thread still gets kWidePanels panels or more:
// batch 1 LSTM H64 1.30x, GRU H256 1.17x, LSTM H128 B2 1.16x, LSTM H512 B4 1.01x. The tiles and
// the per-unit operations are the same either way, so the results do not depend on this choice.
// The reset-before GRU (forward_direction_rb) keeps one panel per block. mode: wide_blocks_mode().
inline constexpr idx kWidePanels = 4;
inline constexpr idx kWideMaxRows = 4;
inline idx forward_panels_per_block(const Geometry& g, int nth, bool reset_before, int mode) {
  if (reset_before || g.B > kWideMaxRows || mode == 0) return 1;
  return mode == 1 || g.unit_blocks() >= kWidePanels * nth ? kWidePanels : 1;
}

}  // namespace rnnfast
