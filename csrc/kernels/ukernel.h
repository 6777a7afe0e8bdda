// GEMM micro-kernel interface shared by every instruction-set path.
//
// One call computes a tile C[m x n] (m <= mr, n <= nr) of  A[m x kc] * Bp[kc x nr]:
//   A  is read unpacked through strides: a(i, k) = a[i*rsa + k*csa]  (row-major: rsa=lda, csa=1;
//      transposed: rsa=1, csa=lda), so no A packing is needed for the small per-step GEMMs;
//   Bp is one packed panel: kc rows of nr contiguous values (zero-padded past the real columns);
//   C  is written row-major with leading dimension ldc: C = acc, or C += acc when accumulate.
// Every element of C is computed the same way (same k order, same instruction), whatever the tile
// shape or the thread that runs it: results do not depend on how work is split.
#pragma once
#include <cstddef>
#include <cstdint>

namespace rnnfast {

template <class T>
using UKernel = void (*)(int kc, const T* a, std::ptrdiff_t rsa, std::ptrdiff_t csa, const T* bp,
                         T* c, std::ptrdiff_t ldc, int m, int n, int accumulate);

// Two one-row tiles against one contiguous row a: c0 (n0 columns) from panel b0 and c1 (n1) from
// b1, with the bits of two fn calls (m = 1, no accumulation).
template <class T>
using PairKernel = void (*)(int kc, const T* a, const T* b0, const T* b1, T* c0, int n0, T* c1,
                            int n1);

// A micro-kernel with its tile shape; pair (may be null) for one-row tiles two at a time.
template <class T>
struct Kern {
  UKernel<T> fn;
  int mr, nr;
  PairKernel<T> pair = nullptr;
};

struct Desc;
struct ForwardArgs;
struct BackwardArgs;

// Everything that is compiled once per instruction set: the micro-kernels and the engine entry
// points built over them (kernels/driver_impl.h).
struct KernelSet {
  const char* name;
  int mr_f, nr_f;  // float tile
  int mr_d, nr_d;  // double tile
  UKernel<float> kf;
  UKernel<double> kd;
  void (*forward)(const Desc&, const ForwardArgs&);
  void (*backward)(const Desc&, const ForwardArgs&, const BackwardArgs&);
  void (*pack)(const Desc&, const void*, void*);
  double (*fma_loop)(int64_t iters);                 // probes (kernels/probe_impl.h)
  double (*read_sum)(const float* p, int64_t n);
  // Self-check of the float32 activations as the gate loops compile them: which = 0 sigmoid,
  // 1 tanh, 2 exp.
  void (*activation)(int which, const float* x, float* y, int64_t n);
  // Whether this path's vector FMAs run at full rate on this CPU (a property of the pair, set by
  // the dispatcher): AVX-512 on all but AMD family 19h (Zen 4, which splits a 512-bit FMA in two).
  // It picks the team-size thresholds (threads_for in geometry.h).
  bool wide_fma;
  // Whether set_pair_tiles_mode's automatic choice pairs one-row tiles on this path and CPU (set
  // by the dispatcher): AVX-512 on AMD family 19h only.
  bool pair_tiles;
};

namespace generic { KernelSet engine(); }
namespace avx2 { KernelSet engine(); }
namespace avx512 { KernelSet engine(); }

// The active set (chosen once from the CPU, or RNNFAST_ISA).
const KernelSet& active_kernels();

template <class T> Kern<T> kern_of(const KernelSet& k);
template <> inline Kern<float> kern_of<float>(const KernelSet& k) { return {k.kf, k.mr_f, k.nr_f}; }
template <> inline Kern<double> kern_of<double>(const KernelSet& k) { return {k.kd, k.mr_d, k.nr_d}; }

}  // namespace rnnfast
