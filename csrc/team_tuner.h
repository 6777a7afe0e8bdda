// Team size by measurement, for the calls where the fixed thresholds of threads_for cannot tell.
//
// Whether a small call runs faster on one thread or on two depends on more than its work: how long
// one core takes to see another's write changes on a shared host from minute to minute. Measured
// on the 2-core Zen 4 VM with a two-thread ping-pong: a round trip took ~95 ns most of the time and
// ~400 ns for minutes at a time (the host placing the two vCPUs farther apart). Batch-1 LSTM H64
// T100 ran 1.4x faster on two threads in the first state and 0.7x as fast in the second, while
// LSTM H256-H512 B1 still ran 1.6-2x faster on two.
//
// So a call whose work lies near the thresholds (between the team sizes that 1/2 and 4 times the
// thresholds give) has two candidate team sizes, and the calling thread keeps, per call shape, a
// running estimate of each one's wall time: the first calls alternate between them, later calls
// take the faster and now and then try the other again, after an interval that starts at a few
// dozen calls and grows while the choice holds (team_tuner.cpp). Results do not depend on the
// team size, so this changes only the time.
//
// Calls after an idle pause have estimates of their own. OpenMP's workers spin for a while after
// a parallel region (libgomp: GOMP_SPINCOUNT pause instructions, 300k by default, ~7.9 ms here)
// and then sleep, and waking them can cost far more than a small call's work: measured on the
// Zen 4 VM, batch-1 LSTM H256 T1 took 24 us on two threads back to back, 100 us after a 5 ms
// pause, and 1.8-3.8 ms after a 20-50 ms pause (the woken worker shares the caller's core until
// the kernel moves it), against 130-140 us on one thread. A call that starts kIdleMin or more
// after the calling thread's previous call ended, and at least the workers' spin time
// (idle_boundary) after its last call on more than one thread, is tuned under its shape's key
// mixed with the pause class (idle_class: octaves of that time over the spin time). Its
// candidates are one thread and the warm candidates' larger size, when its work is small enough
// (kIdleMaxFlops) for a wake to matter. Shorter pauses stay warm: offering one thread there
// would let the workers fall asleep and make two threads look slow from then on (measured: 5 ms
// pauses with classes from 1 ms settled on one thread, 1.13-1.28x slower than two).
#pragma once
#include <cstdint>

#include "rnnfast.h"

namespace rnnfast {

struct TeamPick {
  int n = 1;           // threads for this call
  int slot = -1;       // tuner entry (-1: not tuned, nothing to record)
  int cand = 0;        // which of the entry's two candidates n is
};

// A team size for a call of shape `key` whose candidates are lo < hi threads (the calling thread's
// estimates); with tuning off, `fixed` (the fixed thresholds' choice, also a new shape's first).
TeamPick pick_team(uint64_t key, int lo, int hi, int fixed);
// Cost of the call that pick_team answered: its wall time per step (calls of one key differ in
// length by up to a factor of 2).
void record_team(const TeamPick& p, double seconds_per_step);

// -1 (default) or 1: tune; 0: always the fixed thresholds (threads_for).
void set_team_tuning_mode(int mode);
int team_tuning_mode();
// The calling thread's current choice for shape `key` (0 if it has none); for tests.
int team_choice(uint64_t key);

// The key of a call's shape: the descriptor (its length as floor(log2 T), so that variable-length
// calls share estimates), kind (0 inference, 1 training forward, 2 backward), whether it starts
// from a given state, whether it has lengths, and the threads asked for.
uint64_t team_key(const Desc& d, int kind, bool from_state, bool ragged, int requested);

// Pause classes (see the header comment): 0 for a warm call, else 1..kIdleClasses.
inline constexpr double kIdleMin = 1e-3;      // seconds
inline constexpr int kIdleClasses = 3;        // the last one: 4 spin times and longer
inline constexpr double kIdleMaxFlops = 2e8;  // larger calls amortise a wake: warm candidates
// How long OpenMP's workers spin before they sleep (seconds; +inf: they never sleep), from
// OMP_WAIT_POLICY / GOMP_SPINCOUNT as libgomp reads them and the time of one pause instruction
// measured once; at least kIdleMin.
double idle_boundary();
// since_call: seconds since the calling thread's previous call ended; since_team: since its
// last call on more than one thread ended (>= since_call); boundary: idle_boundary().
int idle_class(double since_call, double since_team, double boundary);
// The class of a call that starts now on the calling thread (its clock, note_call_end).
int idle_class_now();
// Marks the end of a call on `threads` threads, for idle_class_now.
void note_call_end(int threads);

// Mixes one more value into a shape key.
inline uint64_t key_mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 29);
}

// The key of a call of shape `key` in pause class `idle` (idle_class; 0: the warm key itself).
inline uint64_t idle_key(uint64_t key, int idle) {
  return idle > 0 ? key_mix(key, 0x1D1Eu + (uint64_t)idle) : key;
}

}  // namespace rnnfast
