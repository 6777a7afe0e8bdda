// The barrier of the time loop: one per step publishes h_t (forward) or dG_t (backward).
//
// OpenMP's own barrier spins for a long time before sleeping (libgomp: GOMP_SPINCOUNT, 300k rounds
// by default). When the machine is oversubscribed and the thread being waited for has lost its
// core, that spinning takes the very core it needs, and every step pays for it: measured here,
// a 25-step LSTM went from ~1 ms to ~160 ms under load. This barrier spins briefly and then yields
// the core on every round, which keeps the per-step cost low on a quiet machine and bounded on a
// busy one.
#pragma once
#include <atomic>
#include <thread>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define RF_CPU_RELAX() _mm_pause()
#else
#define RF_CPU_RELAX() ((void)0)
#endif

namespace rnnfast {

class SpinBarrier {
 public:
  explicit SpinBarrier(int n) : n_(n) {}
  // Only while no thread waits on it.
  void reset(int n) { n_ = n; }

  // All n threads call wait(); none returns before every thread has arrived. Writes made before
  // wait() by any thread are visible after it in every thread.
  void wait() {
    if (n_ <= 1) return;
    const unsigned gen = gen_.load(std::memory_order_acquire);
    if (count_.fetch_add(1, std::memory_order_acq_rel) == n_ - 1) {
      count_.store(0, std::memory_order_relaxed);
      gen_.fetch_add(1, std::memory_order_release);
      return;
    }
    for (int spins = 0; gen_.load(std::memory_order_acquire) == gen; ++spins) {
      if (spins < kSpins)
        RF_CPU_RELAX();
      else
        std::this_thread::yield();
    }
  }

 private:
  static constexpr int kSpins = 2000;
  int n_;
  alignas(64) std::atomic<int> count_{0};
  alignas(64) std::atomic<unsigned> gen_{0};
};

}  // namespace rnnfast
