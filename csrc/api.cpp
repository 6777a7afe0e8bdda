// The public C++ API (rnnfast.h): descriptor checks, sizes, thread settings, and dispatch to the
// engine of the active instruction set (kernels/dispatch.cpp).
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <vector>
#if defined(__linux__)
#include <sys/mman.h>
#endif
#include <string>

#include "gemm.h"
#include "geometry.h"
#include "kernels/ukernel.h"
#include "rnnfast.h"
#include "scratch.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace rnnfast {
namespace {

int g_num_threads = 0;  // 0: not set, use the OpenMP default

int nr_for(const Desc& d) {
  const KernelSet& k = active_kernels();
  return d.dtype == kF64 ? k.nr_d : k.nr_f;
}

}  // namespace

int num_gates(int32_t cell) {
  switch (cell) {
    case kRnnTanh:
    case kRnnRelu: return 1;
    case kLstm: return 4;
    case kGru: return 3;
    case kGruResetBefore: return 3;
  }
  return 0;
}

void check_desc(const Desc& d) {
  // Runs on every call (a one-step serving call included): the messages are built only on failure
  // (formatting them up front, std::to_string of the clip value among them, took 1.1 of the 2.3 us
  // that core_forward spent on one step of an LSTM with hidden size 1).
  auto fail = [](const std::string& what) {
    throw std::invalid_argument("rnnfast core: invalid descriptor: " + what);
  };
  if (num_gates(d.cell) <= 0) fail("cell " + std::to_string(d.cell));
  if (d.dtype != kF32 && d.dtype != kF64) fail("dtype " + std::to_string(d.dtype));
  if (!(d.seq_len >= 1 && d.batch >= 1 && d.input_size >= 1 && d.hidden_size >= 1 &&
        d.num_layers >= 1))
    fail("sizes must be positive");
  if (d.num_dirs != 1 && d.num_dirs != 2) fail("num_dirs " + std::to_string(d.num_dirs));
  if (!((d.peephole == 0 || d.peephole == 1) && (d.input_forget == 0 || d.input_forget == 1)))
    fail("peephole and input_forget must be 0 or 1");
  if (!(d.clip >= 0.0))
    fail("clip must be 0 (off), positive or +inf (off), got " + std::to_string(d.clip));
  if (!(d.cell == kLstm || (d.peephole == 0 && d.input_forget == 0)))
    fail("peephole and input_forget are LSTM options");
}

bool wide_fma() { return active_kernels().wide_fma; }

int threads_for_call(const Desc& d) {
  check_desc(d);
  return threads_for(Geometry(d, nr_for(d)), get_num_threads(), wide_fma());
}

int forward_panels_per_block(const Desc& d) {
  check_desc(d);
  const Geometry g(d, nr_for(d));
  const int nth = threads_for(g, get_num_threads(), wide_fma());
  return (int)forward_panels_per_block(g, nth, d.cell == kGruResetBefore, wide_blocks_mode());
}

int64_t param_count(const Desc& d) { return Geometry(d, nr_for(d)).param_total(); }
int64_t workspace_size(const Desc& d) { return Geometry(d, nr_for(d)).ws_total(); }
int64_t packed_size(const Desc& d) { return Geometry(d, nr_for(d)).packed_total(); }

void pack_weights(const Desc& d, const void* params, void* packed) {
  check_desc(d);
  active_kernels().pack(d, params, packed);
}

void forward(const Desc& d, const ForwardArgs& a) {
  check_desc(d);
  active_kernels().forward(d, a);
}

void backward(const Desc& d, const ForwardArgs& f, const BackwardArgs& b) {
  check_desc(d);
  if (!f.workspace) throw std::invalid_argument("rnnfast core: backward needs a training workspace");
  active_kernels().backward(d, f, b);
}

namespace {

template <class T>
void gemm_t(bool trans_a, bool trans_b, idx M, idx N, idx K, const T* a, idx lda, const T* b,
            idx ldb, T* c, idx ldc, bool accumulate) {
  const Kern<T> kern = kern_of<T>(active_kernels());
  const idx panels = ceil_div(N, kern.nr);
  const ScratchPlan<T> scratch({packed_b_size(K, N, kern.nr)});
  T* const bp = scratch[0];
  const double flops = 2.0 * (double)M * (double)N * (double)K;
  const int nt = (int)std::max<double>(1, std::min<double>(get_num_threads(), flops / 4e6));
  const idx rsa = trans_a ? 1 : lda, csa = trans_a ? lda : 1;
#pragma omp parallel num_threads(nt)
  {
#ifdef _OPENMP
    const int tid = omp_get_thread_num(), nth = omp_get_num_threads();
#else
    const int tid = 0, nth = 1;
#endif
    idx p0, p1;
    split(panels, tid, nth, &p0, &p1);
    pack_b_range<T>(K, N, kern.nr, p0, p1, b, ldb, trans_b, bp);
#pragma omp barrier
    gemm_mt<T>(kern, tid, nth, M, N, K, a, rsa, csa, bp, c, ldc, accumulate);
  }
}

}  // namespace

void gemm(int32_t dtype, bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
          const void* a, int64_t lda, const void* b, int64_t ldb, void* c, int64_t ldc,
          bool accumulate) {
  if (M < 0 || N < 0 || K < 0) throw std::invalid_argument("gemm: negative size");
  if (M == 0 || N == 0) return;
  if (dtype == kF32)
    gemm_t<float>(trans_a, trans_b, M, N, K, static_cast<const float*>(a), lda,
                  static_cast<const float*>(b), ldb, static_cast<float*>(c), ldc, accumulate);
  else
    gemm_t<double>(trans_a, trans_b, M, N, K, static_cast<const double*>(a), lda,
                   static_cast<const double*>(b), ldb, static_cast<double*>(c), ldc, accumulate);
}

void set_num_threads(int n) {
  if (n < 1) throw std::invalid_argument("number of threads must be >= 1");
  g_num_threads = n;
}

int get_num_threads() {
  if (g_num_threads > 0) return g_num_threads;
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

namespace {

double now_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Runs body(tid, rounds) on `threads` threads, doubling rounds until one pass lasts `seconds`;
// returns (sum of the work units body reports) / elapsed seconds of the last pass.
template <class Body>
double rate(int threads, double seconds, Body body) {
  int64_t rounds = 1;
  for (;;) {
    std::vector<double> work(threads, 0.0);
    const double t0 = now_seconds();
#pragma omp parallel num_threads(threads)
    {
#ifdef _OPENMP
      const int tid = omp_get_thread_num();
#else
      const int tid = 0;
#endif
      work[tid] = body(tid, rounds);
    }
    const double dt = now_seconds() - t0;
    if (dt >= seconds || rounds > (int64_t(1) << 40)) {
      double total = 0;
      for (double w : work) total += w;
      return total / dt;
    }
    rounds *= 2;
  }
}

}  // namespace

namespace {
// Blocks of at least kHugeBytes are 2 MiB aligned and offered to the kernel as transparent huge
// pages: the input projection of a long sequence is read one row per 4 KiB page otherwise (a TLB
// miss per row and gate block, and no hardware prefetch across pages).
constexpr std::size_t kHugeBytes = std::size_t(2) << 20;
struct ThreadScratch {
  char* p = nullptr;
  std::size_t cap = 0;
  std::size_t align = kScratchAlign;
  void release() {
    if (p) ::operator delete[](p, std::align_val_t(align));
    p = nullptr;
    cap = 0;
  }
  ~ThreadScratch() { release(); }
};
thread_local ThreadScratch t_scratch;
}  // namespace

char* thread_scratch(std::size_t bytes) {
  if (bytes > t_scratch.cap) {
    t_scratch.release();
    const bool huge = bytes >= kHugeBytes;
    const std::size_t align = huge ? kHugeBytes : kScratchAlign;
    const std::size_t size = huge ? (bytes + kHugeBytes - 1) / kHugeBytes * kHugeBytes : bytes;
    t_scratch.p = static_cast<char*>(::operator new[](size, std::align_val_t(align)));
    t_scratch.cap = size;
    t_scratch.align = align;
#if defined(__linux__) && defined(MADV_HUGEPAGE)
    if (huge) madvise(t_scratch.p, size, MADV_HUGEPAGE);  // advice only: failure changes nothing
#endif
  }
  return t_scratch.p;
}

void trim_thread_scratch() {
  if (t_scratch.cap > kKeepBytes) t_scratch.release();
}

double measure_fma_peak(int threads, double seconds) {
  const KernelSet& k = active_kernels();
  threads = std::max(1, threads);
  return rate(threads, seconds, [&](int, int64_t rounds) { return k.fma_loop(rounds * 4096); }) / 1e9;
}

double measure_read_bandwidth(int threads, int64_t bytes, double seconds) {
  const KernelSet& k = active_kernels();
  threads = std::max(1, threads);
  const int64_t per_thread = std::max<int64_t>(1024, bytes / 4 / threads);
  std::vector<std::vector<float>> bufs(threads);
  volatile double sink = 0;
#pragma omp parallel num_threads(threads)
  {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
    bufs[tid].assign(per_thread, 1.0f);  // first touch by the thread that reads it
  }
  const double r = rate(threads, seconds, [&](int tid, int64_t rounds) {
    double s = 0;
    for (int64_t i = 0; i < rounds; ++i) s += k.read_sum(bufs[tid].data(), per_thread);
    sink = sink + s;
    return (double)rounds * per_thread * 4.0;
  });
  return r / 1e9;
}

void eval_activation(int which, const float* x, float* y, int64_t n) {
  if (which < 0 || which > 2) throw std::invalid_argument("activation must be 0, 1 or 2");
  active_kernels().activation(which, x, y, n);
}

bool has_openmp() {
#ifdef _OPENMP
  return true;
#else
  return false;
#endif
}

}  // namespace rnnfast
