// Chooses the micro-kernel path once, from the CPU's features, unless RNNFAST_ISA forces one.
#include <atomic>
#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif
#include <cstdlib>
#include <cstring>
#include <initializer_list>
#include <stdexcept>
#include <string>

#include "../rnnfast.h"
#include "ukernel.h"

namespace rnnfast {
namespace {

bool cpu_supports(const char* name) {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (std::strcmp(name, "avx512") == 0) return __builtin_cpu_supports("avx512f");
  if (std::strcmp(name, "avx2") == 0)
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
#endif
  return std::strcmp(name, "generic") == 0;
}

// AMD family 19h: Zen 3 and Zen 4 (with AVX-512, Zen 4).
bool amd_family_19h() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (!__builtin_cpu_is("amd")) return false;
  unsigned eax, ebx, ecx, edx;
  if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) return false;
  unsigned family = (eax >> 8) & 0xf;
  if (family == 0xf) family += (eax >> 20) & 0xff;
  return family == 0x19;
#else
  return false;
#endif
}

bool kernels_by_name(const char* name, KernelSet* out) {
  bool found = false;
#if defined(RNNFAST_HAVE_X86_KERNELS)
  if (std::strcmp(name, "avx512") == 0) { *out = avx512::engine(); found = true; }
  if (std::strcmp(name, "avx2") == 0) { *out = avx2::engine(); found = true; }
#endif
  if (std::strcmp(name, "generic") == 0) { *out = generic::engine(); found = true; }
  // Zen 4's 512-bit FMAs issue as two 256-bit halves.
  if (found) out->wide_fma = std::strcmp(name, "avx512") == 0 && !amd_family_19h();
  // Paired one-row tiles (tile_pair): measured faster with AVX-512 on the Zen 4 VM; its AVX2 path
  // ran LSTM H256 B1 T100 0.95x as fast with them, Zen 5 0.6-0.9x (ukernel_impl.h).
  if (found) out->pair_tiles = std::strcmp(name, "avx512") == 0 && amd_family_19h();
  return found;
}

KernelSet choose() {
  KernelSet k;
  const char* forced = std::getenv("RNNFAST_ISA");
  if (forced && *forced && cpu_supports(forced) && kernels_by_name(forced, &k)) return k;
  for (const char* name : {"avx512", "avx2"})
    if (cpu_supports(name) && kernels_by_name(name, &k)) return k;
  kernels_by_name("generic", &k);
  return k;
}

KernelSet& current() {
  static KernelSet k = choose();
  return k;
}

std::atomic<int> g_fused_input_mode{-1};
std::atomic<int> g_stream_prefetch_mode{-1};
// Automatic choice of the software prefetch (set_stream_prefetch_mode). On the 2-core Zen 4 VM
// (AMD family 19h), a one-row GEMV over packed panels (tile_fixed<float, 1, 2>, AVX-512, one
// thread, standalone) streamed 4-8 MB of panels from L3 at 95 GB/s without the prefetches and at
// 73-78 GB/s with them (64 rows ahead; 16-32 rows: 71-91, 128-256 rows: 56-68), against 98 GB/s
// for a plain read of the same buffer; from L2 (1 MB) 99 against 100-104. Elsewhere (Zen 5, where
// the kernels were tuned with them) they stay; on and off was not measured there.
bool prefetch_by_cpu() { return !amd_family_19h(); }
std::atomic<bool> g_stream_prefetch_on{prefetch_by_cpu()};
std::atomic<int> g_wide_blocks_mode{-1};
std::atomic<int> g_pair_tiles_mode{-1};

// A path switch for tests and paired timings: -1 auto, 0 never, 1 always.
void set_mode(std::atomic<int>& m, int mode, const char* what) {
  if (mode < -1 || mode > 1)
    throw std::invalid_argument(std::string(what) +
                                " mode must be -1 (auto), 0 (never) or 1 (always), got " +
                                std::to_string(mode));
  m.store(mode);
}

}  // namespace

void set_fused_input_mode(int mode) { set_mode(g_fused_input_mode, mode, "fused input"); }
int fused_input_mode() { return g_fused_input_mode.load(); }

void set_stream_prefetch_mode(int mode) {
  set_mode(g_stream_prefetch_mode, mode, "stream prefetch");
  g_stream_prefetch_on.store(mode == -1 ? prefetch_by_cpu() : mode == 1);
}
int stream_prefetch_mode() { return g_stream_prefetch_mode.load(); }
bool stream_prefetch_on() { return g_stream_prefetch_on.load(std::memory_order_relaxed); }

void set_wide_blocks_mode(int mode) { set_mode(g_wide_blocks_mode, mode, "wide blocks"); }
int wide_blocks_mode() { return g_wide_blocks_mode.load(); }

void set_pair_tiles_mode(int mode) { set_mode(g_pair_tiles_mode, mode, "pair tiles"); }
int pair_tiles_mode() { return g_pair_tiles_mode.load(); }
// The automatic choice follows the active path (KernelSet::pair_tiles), which select_isa changes.
bool pair_tiles_on() {
  const int mode = g_pair_tiles_mode.load(std::memory_order_relaxed);
  return mode == -1 ? current().pair_tiles : mode == 1;
}

const KernelSet& active_kernels() { return current(); }

const char* isa_name() { return current().name; }

bool select_isa(const char* name) {
  KernelSet k;
  if (!cpu_supports(name) || !kernels_by_name(name, &k)) return false;
  current() = k;
  return true;
}

}  // namespace rnnfast
