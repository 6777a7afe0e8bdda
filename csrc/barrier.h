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
#include <cstdint>
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

// Work distribution of the forward time loop. Each thread owns a contiguous range of unit blocks
// (so its slice of the recurrent weights stays in its cache) and takes them in order (reversed
// on odd steps); a thread
// that runs out takes the blocks the others have not started. A step ends when every block is
// done, not when every thread has arrived: a thread that has lost its core (a busy machine) only
// holds up the block it is in the middle of, and its remaining blocks are taken by the others.
// Which thread computes a block never changes the numbers.
class StepScheduler {
 public:
  static constexpr int kMaxThreads = 256;

  // Only while no thread uses it. Owner o gets blocks [o*nblocks/nth, (o+1)*nblocks/nth).
  // flip: this call's steps walk in the other direction (step s as step s + 1 would), so that
  // calls alternate too (forward_t passes the same flag to the input projection's GEMM).
  void reset(int nth, int64_t nblocks, bool flip = false) {
    nth_ = nth < kMaxThreads ? nth : kMaxThreads;
    nblocks_ = nblocks;
    flip_ = flip;
    for (int o = 0; o < nth_; ++o) owners_[o].claimed.store(0, std::memory_order_relaxed);
    done_.store(0, std::memory_order_relaxed);
  }

  // Claim the next unstarted block of `owner` in step `step`; false if none is left.
  bool claim(int owner, int64_t step, int64_t* block) {
    const int64_t lo = nblocks_ * owner / nth_, n = nblocks_ * (owner + 1) / nth_ - lo;
    std::atomic<int64_t>& c = owners_[owner].claimed;  // counts over all steps: step s has [s*n, s*n+n)
    int64_t k = c.load(std::memory_order_relaxed);
    while (k < (step + 1) * n) {
      if (c.compare_exchange_weak(k, k + 1, std::memory_order_relaxed)) {
        // Serpentine: odd steps walk the owner's blocks backwards, so the weights a step touched
        // last are touched first by the next one. Weights larger than the last-level cache then
        // find the part that is still cached instead of being evicted just before their turn.
        const int64_t i = k - step * n;
        *block = lo + (backwards(step) ? n - 1 - i : i);
        return true;
      }
    }
    return false;
  }

  // Publishes the block's writes to whoever waits for the step.
  void finish() { done_.fetch_add(1, std::memory_order_release); }

  // Returns once every block of `step` is finished; their writes are then visible.
  void wait_step(int64_t step) {
    const int64_t target = (step + 1) * nblocks_;
    for (int spins = 0; done_.load(std::memory_order_acquire) < target; ++spins) {
      if (spins < 2000)
        RF_CPU_RELAX();
      else
        std::this_thread::yield();
    }
  }

  int threads() const { return nth_; }
  // Whether step `step` walks its blocks (and the panels inside them) backwards.
  bool backwards(int64_t step) const { return ((step + (flip_ ? 1 : 0)) & 1) != 0; }

 private:
  struct alignas(64) Owner {
    std::atomic<int64_t> claimed{0};
  };
  int nth_ = 1;
  int64_t nblocks_ = 0;
  bool flip_ = false;
  Owner owners_[kMaxThreads];
  alignas(64) std::atomic<int64_t> done_{0};
};

}  // namespace rnnfast
