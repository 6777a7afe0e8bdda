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

// Mixes one more value into a shape key.
inline uint64_t key_mix(uint64_t h, uint64_t v) {
  h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
  h ^= h >> 31;
  h *= 0xbf58476d1ce4e5b9ull;
  return h ^ (h >> 29);
}

}  // namespace rnnfast
