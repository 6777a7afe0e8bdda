// rnnfast core: the flat C++ API the Python binding calls. No Python headers here.
//
// A model is described once by a Desc. Buffers are raw pointers to contiguous memory of the
// model's dtype (float or double); the binding guarantees contiguity, dtype and shapes, so the
// core trusts them (validation happens once, at the Python boundary).
//
// Layouts (time-major; batch_first is handled by the Python layer):
//   x        (T, B, I)                   y        (T, B, D*H)
//   h0, hn   (L*D, B, H)                 c0, cn   (L*D, B, H)    (LSTM only)
//   lengths  (B,) int64 in 1..T, or null (every row has length T)
//   params   flat, PyTorch order: for l in layers, for d in dirs:
//              weight_ih (G*H, In_l), weight_hh (G*H, H), [bias_ih (G*H), bias_hh (G*H)],
//              [weight_peephole (3*H): p_i, p_f, p_o]  (LSTM with peephole only)
//   dropout  (L-1, T, B, D*H) multipliers (0 or 1/(1-p)) applied to the output of every layer
//            but the last, or null.
#pragma once
#include <cmath>
#include <cstdint>

namespace rnnfast {

// kGru is PyTorch's GRU (ONNX linear_before_reset=1); kGruResetBefore is ONNX's default
// linear_before_reset=0 (Keras reset_after=False): n = tanh(W_in x + b_in + W_hn (r * h) + b_hn).
// Both have PyTorch's GRU parameter layout.
enum Cell : int32_t { kRnnTanh = 0, kRnnRelu = 1, kLstm = 2, kGru = 3, kGruResetBefore = 4 };
enum DType : int32_t { kF32 = 0, kF64 = 1 };

struct Desc {
  int32_t cell = kLstm;
  int32_t dtype = kF32;
  int64_t seq_len = 0;      // T
  int64_t batch = 0;        // B
  int64_t input_size = 0;   // I
  int64_t hidden_size = 0;  // H
  int64_t num_layers = 1;   // L
  int64_t num_dirs = 1;     // D (1 or 2)
  int32_t has_bias = 1;
  // LSTM variants of ONNX (all off by default; other cells must leave them off):
  //   peephole:     i and f see p_i*c_{t-1}, p_f*c_{t-1}, o sees p_o*c_t (weights after the biases)
  //   input_forget: f = 1 - i (the forget gate's own weights are unused)
  //   clip:         every gate's pre-activation clamped to [-clip, clip]; 0 or +inf means off
  int32_t peephole = 0;
  int32_t input_forget = 0;
  double clip = 0.0;
};

// Whether the descriptor's clip is on (a positive finite threshold).
inline bool clip_on(const Desc& d) { return d.clip > 0.0 && std::isfinite(d.clip); }
// Whether the descriptor asks for any LSTM variant (peephole, input_forget, clip).
inline bool lstm_variant(const Desc& d) { return d.peephole || d.input_forget || clip_on(d); }

// Pointers for one forward call. workspace == nullptr means inference (nothing kept for backward).
struct ForwardArgs {
  const void* params = nullptr;
  const void* packed = nullptr;        // from pack_weights() on the same params
  const void* x = nullptr;
  const int64_t* lengths = nullptr;
  const void* h0 = nullptr;            // null: zeros
  const void* c0 = nullptr;            // null: zeros
  const void* dropout_mask = nullptr;  // null: no dropout
  void* y = nullptr;
  void* hn = nullptr;
  void* cn = nullptr;
  void* workspace = nullptr;           // workspace_size() elements, kept for backward
};

// Gradients for one backward call; the ForwardArgs of the training forward are passed alongside.
struct BackwardArgs {
  const void* dy = nullptr;    // null: zeros
  const void* dhn = nullptr;   // null: zeros
  const void* dcn = nullptr;   // null: zeros
  void* dx = nullptr;          // overwritten
  void* dh0 = nullptr;         // overwritten
  void* dc0 = nullptr;         // overwritten (LSTM)
  void* dparams = nullptr;     // accumulated (+=), same layout as params
};

int num_gates(int32_t cell);
// Throws std::invalid_argument if the descriptor is inconsistent.
void check_desc(const Desc& d);
int64_t param_count(const Desc& d);
// Element counts (of the model dtype).
int64_t workspace_size(const Desc& d);
int64_t packed_size(const Desc& d);
void pack_weights(const Desc& d, const void* params, void* packed);

void forward(const Desc& d, const ForwardArgs& a);
void backward(const Desc& d, const ForwardArgs& f, const BackwardArgs& b);

// General matrix product on the core's kernels and threads (deterministic like everything else):
// C[M x N] = (or +=, when accumulate) op(A) op(B), all row-major; op(A) is A (M x K, leading
// dimension lda) or, with trans_a, A^T of a K x M matrix; op(B) is B (K x N) or, with trans_b,
// B^T of an N x K matrix. For the dense layers around the recurrent stack.
void gemm(int32_t dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
          const void* a, int64_t lda, const void* b, int64_t ldb, void* c, int64_t ldc,
          bool accumulate);

// Threads: every parallel region uses this many threads. Results do not depend on it.
void set_num_threads(int n);
int get_num_threads();
// Threads a forward/backward call with this descriptor actually uses: at most get_num_threads(),
// fewer when the per-step work is too small to pay for a barrier per step.
int threads_for_call(const Desc& d);
// Panels (of the active kernel's width) per scheduled block of a forward call's time loop with
// this descriptor, at threads_for_call(d) threads and the current wide_blocks_mode(): 1, or 4 at
// batches of 1-4 rows (see forward_panels_per_block in geometry.h); 1 for a layer whose input
// projection is fused (which fused_input_mode() 1 can force at batch 1). Results do not depend on
// it.
int forward_panels_per_block(const Desc& d);
bool has_openmp();

// Machine probes for the benchmark (active instruction-set path, `threads` threads at once):
// peak FMA throughput in GFLOP/s over about `seconds`, and read bandwidth in GB/s over a buffer of
// `bytes` bytes (its size decides whether L2, L3 or DRAM is measured).
double measure_fma_peak(int threads, double seconds);
double measure_read_bandwidth(int threads, int64_t bytes, double seconds);

// The float32 activations of the active path applied to n values (which: 0 sigmoid, 1 tanh,
// 2 exp), for tests of their error bounds.
void eval_activation(int which, const float* x, float* y, int64_t n);

// How the forward computes each layer's input projection x W_ih^T (results differ in rounding
// only): -1 automatic (the default; see fused_input in kernels/driver_impl.h), 0 always as one GEMM
// over all steps before the time loop, 1 fused into the time loop wherever the shape allows it
// (the kernel's panel width divides the hidden size; never the reset-before GRU). For tests and
// benchmarks. Values outside -1..1 throw std::invalid_argument.
void set_fused_input_mode(int mode);
int fused_input_mode();

// Whether a forward of 1-4 batch rows schedules blocks of 4 kernel panels (gate math of 4 panels'
// units in one pass) instead of 1: -1 automatic (the default: when every thread gets 4 panels or
// more), 0 never, 1 always (every such forward but the reset-before GRU's). Results are bitwise the
// same; for tests that cover both paths at any shape, and for paired timings. Values outside
// -1..1 throw std::invalid_argument.
void set_wide_blocks_mode(int mode);
int wide_blocks_mode();

// Whether the GEMM micro-kernels prefetch long weight panels (depth >= 256) in software, ahead of
// the rows they read: -1 automatic (the default: on, except on AMD family 19h, whose hardware
// prefetchers alone streamed them faster), 0 never, 1 always. Results are bitwise the same; for
// tests and paired timings. Values outside -1..1 throw std::invalid_argument.
void set_stream_prefetch_mode(int mode);
int stream_prefetch_mode();
// The setting in force (the automatic choice resolved), read by the kernels on every tile.
bool stream_prefetch_on();

// Whether a batch-1 step computes its one-row recurrent tiles over long panels (depth >= 128;
// shorter ones always pair) and a one-step call its one-row input projection (any depth) two
// panels at a time, one pass over the row for both (tile_pair in kernels/ukernel_impl.h): -1
// automatic (the default: on for the AVX-512 path on AMD family 19h, where it streamed the
// weights faster), 0 never, 1 always. Results are bitwise the same; for tests and paired timings.
// Values outside -1..1 throw std::invalid_argument.
void set_pair_tiles_mode(int mode);
int pair_tiles_mode();
bool pair_tiles_on();

// Instruction-set path of the GEMM micro-kernels: "avx512", "avx2" or "generic".
const char* isa_name();
// Whether the active path's vector FMAs run at full rate on this CPU (false for AVX-512 on Zen 4,
// AVX2 and generic): it picks the team-size thresholds of threads_for_call.
bool wide_fma();
// Force a path; returns false (and changes nothing) if this CPU or build cannot run it.
bool select_isa(const char* name);

}  // namespace rnnfast
