// Per-thread scratch memory for the engine's temporaries (input projections, gradients of the
// pre-activations, ping-pong states, packed operands). Owned by the CALLING thread and reused across
// calls, so a steady stream of calls neither allocates nor page-faults; OpenMP workers only see
// pointers into it. Above kKeepBytes the memory is returned after the call.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>

namespace rnnfast {

constexpr std::size_t kScratchAlign = 64;
constexpr std::size_t kKeepBytes = std::size_t(64) << 20;

// At least `bytes` bytes, 64-byte aligned, uninitialised; valid until the next call on this thread.
char* thread_scratch(std::size_t bytes);
// Give the memory back if it is larger than kKeepBytes.
void trim_thread_scratch();

// Carves one thread_scratch block into arrays of T, each 64-byte aligned.
template <class T>
class ScratchPlan {
 public:
  // counts: element count of each array, in order.
  explicit ScratchPlan(std::initializer_list<std::ptrdiff_t> counts) {
    std::size_t off = 0;
    int i = 0;
    for (std::ptrdiff_t c : counts) {
      offsets_[i++] = off;
      off += (std::size_t(c) * sizeof(T) + kScratchAlign - 1) / kScratchAlign * kScratchAlign;
    }
    n_ = i;
    base_ = reinterpret_cast<T*>(thread_scratch(off));
  }
  ~ScratchPlan() { trim_thread_scratch(); }
  ScratchPlan(const ScratchPlan&) = delete;
  ScratchPlan& operator=(const ScratchPlan&) = delete;
  T* operator[](int i) const {
    return reinterpret_cast<T*>(reinterpret_cast<char*>(base_) + offsets_[i]);
  }

 private:
  std::size_t offsets_[16] = {};
  int n_ = 0;
  T* base_ = nullptr;
};

}  // namespace rnnfast
