// The calling thread's team-size estimates (team_tuner.h).
#include "team_tuner.h"

#include "barrier.h"  // RF_CPU_RELAX

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <limits>
#include <initializer_list>
#include <stdexcept>
#include <string>

namespace rnnfast {
namespace {

// The first kExplore calls of a shape alternate between the candidates; after that the chosen
// one's estimate follows every call and the other's is sampled again after kProbeEvery calls, an
// interval that doubles (up to kProbeMax) each time the sample leaves the choice as it was: a
// probe of the slower size can cost many calls' time (2 threads with a busy process on the second
// core: one time slice of that process), so probes of a settled choice grow rare. An estimate
// drops at once to a faster sample and rises towards a slower one as an exponential average:
// noise on a shared machine only ever makes a call slower, and the first calls on a team size can
// be slow for reasons of their own (seen here: a process's first 2-thread calls of LSTM H64 T100
// took 4-12 ms, later ones 0.09 ms), and a single slow sample moves an estimate by a bounded
// amount. A candidate replaces the chosen one when its estimate is kSwitch of it or less, so
// that two about equal sizes do not swap back and forth.
constexpr uint64_t kExplore = 6;
constexpr uint64_t kProbeEvery = 32;
constexpr uint64_t kProbeMax = 8192;
constexpr double kKeep = 0.75;     // weight of the old estimate, chosen candidate
constexpr double kKeepProbe = 0.5;  // ... the other candidate, whose samples are rarer
constexpr double kSwitch = 0.93;
constexpr double kMaxRise = 2.0;
constexpr int kSlots = 256;  // per calling thread; a shape has a warm entry and up to kIdleClasses

struct Entry {
  uint64_t key = 0;
  bool used = false;
  int first = 0;  // the candidate tried first: the fixed thresholds' choice
  int n[2] = {1, 1};
  double est[2] = {0, 0};
  bool seen[2] = {false, false};
  uint64_t calls = 0;  // 64 bits: a 32-bit count would wrap next_probe in a long-lived server
  uint64_t next_probe = kExplore + kProbeEvery;
  uint64_t interval = kProbeEvery;
  int choice = 1;
};

struct Table {
  Entry e[kSlots];
};

Table& table() {
  static thread_local Table t;
  return t;
}

std::atomic<int> g_mode{-1};

double clock_now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// When the calling thread's last call, and its last call on more than one thread, ended (a
// thread that has made none: long ago).
struct CallClock {
  double call_end = -std::numeric_limits<double>::infinity();
  double team_end = -std::numeric_limits<double>::infinity();
};

CallClock& call_clock() {
  static thread_local CallClock c;
  return c;
}

}  // namespace

TeamPick pick_team(uint64_t key, int lo, int hi, int fixed) {
  TeamPick p;
  p.n = fixed;
  if (lo >= hi || g_mode.load(std::memory_order_relaxed) == 0) return p;
  const int slot = (int)(key % kSlots);
  Entry& e = table().e[slot];
  if (!e.used || e.key != key || e.n[0] != lo || e.n[1] != hi) {
    e = Entry{};
    e.used = true;
    e.key = key;
    e.n[0] = lo;
    e.n[1] = hi;
    e.first = fixed == lo ? 0 : 1;
    e.choice = e.first;
  }
  int cand;
  if (e.calls < kExplore) {
    // the fixed choice first: a shape seen once (a table too small for the workload's shapes)
    // runs as it would untuned
    cand = (int)((e.calls + (uint64_t)e.first) & 1u);
  } else if (e.calls >= e.next_probe) {
    cand = 1 - e.choice;
    e.next_probe = e.calls + e.interval;  // moved by the probe's outcome in record_team
  } else {
    cand = e.choice;
  }
  ++e.calls;
  p.n = e.n[cand];
  p.slot = slot;
  p.cand = cand;
  return p;
}

void record_team(const TeamPick& p, double seconds) {
  if (p.slot < 0 || !(seconds >= 0)) return;
  Entry& e = table().e[p.slot];
  if (!e.used || e.n[p.cand] != p.n) return;  // the slot was taken over meanwhile
  double& est = e.est[p.cand];
  if (!e.seen[p.cand] || seconds < est) {
    est = seconds;
    e.seen[p.cand] = true;
  } else {
    // a slower sample counts as at most kMaxRise times the estimate: one stall (a sleeping
    // worker woken after a pause, a time slice lost to another process) moves it by at most
    // (1 - keep) * (kMaxRise - 1), while a lasting slowdown still takes over within a few calls
    const double keep = p.cand == e.choice ? kKeep : kKeepProbe;
    const double capped = seconds < kMaxRise * est ? seconds : kMaxRise * est;
    est = keep * est + (1 - keep) * capped;
  }
  if (e.calls >= kExplore && e.seen[0] && e.seen[1]) {
    const int other = 1 - e.choice;
    const bool probe = e.calls > kExplore && p.cand != e.choice;
    if (e.est[other] <= kSwitch * e.est[e.choice]) {
      e.choice = other;
      e.interval = kProbeEvery;
      e.next_probe = e.calls + e.interval;
    } else if (probe) {
      e.interval = e.interval < kProbeMax ? 2 * e.interval : kProbeMax;
      e.next_probe = e.calls + e.interval;
    }
  }
}

uint64_t team_key(const Desc& d, int kind, bool from_state, bool ragged, int requested) {
  int64_t t_class = 0;  // floor(log2(T)) + 1: lengths within a factor of 2 share an entry
  for (int64_t t = d.seq_len; t > 0; t >>= 1) ++t_class;
  uint64_t k = key_mix(0, (uint64_t)d.cell);
  for (int64_t v : {(int64_t)d.dtype, t_class, d.batch, d.input_size, d.hidden_size,
                    d.num_layers, d.num_dirs, (int64_t)d.has_bias, (int64_t)d.peephole,
                    (int64_t)d.input_forget, (int64_t)clip_on(d), (int64_t)kind,
                    (int64_t)from_state, (int64_t)ragged, (int64_t)requested})
    k = key_mix(k, (uint64_t)v);
  return k;
}

namespace {

// The spin count libgomp uses between regions: GOMP_SPINCOUNT if set (a number with an optional
// k/M/G/T suffix, or "infinite"), else by OMP_WAIT_POLICY (active: forever, passive: none), else
// 300000.
double gomp_spin_count() {
  const double inf = std::numeric_limits<double>::infinity();
  if (const char* sc = std::getenv("GOMP_SPINCOUNT")) {
    const std::string v(sc);
    if (v.rfind("infinit", 0) == 0) return inf;
    char* end = nullptr;
    double n = std::strtod(sc, &end);
    if (end != sc && n >= 0) {
      switch (*end) {
        case 'k': case 'K': n *= 1e3; break;
        case 'M': n *= 1e6; break;
        case 'G': n *= 1e9; break;
        case 'T': n *= 1e12; break;
        default: break;
      }
      return n;
    }
  }
  if (const char* wp = std::getenv("OMP_WAIT_POLICY")) {
    const std::string v(wp);
    if (v == "active" || v == "ACTIVE") return inf;
    if (v == "passive" || v == "PASSIVE") return 0;
  }
  return 3e5;
}

// Seconds per pause instruction: the fastest of a few short loops (one that lost its core is
// only slower).
double pause_seconds() {
  double best = std::numeric_limits<double>::infinity();
  for (int r = 0; r < 5; ++r) {
    const double t0 = clock_now();
    for (int i = 0; i < 256; ++i) RF_CPU_RELAX();
    const double t = (clock_now() - t0) / 256;
    if (t < best) best = t;
  }
  return best;
}

}  // namespace

double idle_boundary() {
  static const double b = [] {
    const double n = gomp_spin_count();
    if (n == std::numeric_limits<double>::infinity()) return n;  // even where a pause takes ~0 s
    const double spin = n == 0 ? 0 : n * pause_seconds();
    return spin > kIdleMin ? spin : kIdleMin;
  }();
  return b;
}

int idle_class(double since_call, double since_team, double boundary) {
  if (!(since_call >= kIdleMin)) return 0;  // also NaN
  if (!(since_team >= since_call)) since_team = since_call;
  if (!(since_team >= boundary)) return 0;  // the workers still spin (or never sleep)
  int c = 1;
  for (double t = since_team; t >= 2 * boundary && c < kIdleClasses; t /= 2) ++c;
  return c;
}

int idle_class_now() {
  const CallClock& c = call_clock();
  const double now = clock_now();
  return idle_class(now - c.call_end, now - c.team_end, idle_boundary());
}

void note_call_end(int threads) {
  CallClock& c = call_clock();
  c.call_end = clock_now();
  if (threads > 1) c.team_end = c.call_end;
}

void set_team_tuning_mode(int mode) {
  if (mode != -1 && mode != 0 && mode != 1)
    throw std::invalid_argument("team tuning mode must be -1 (auto), 0 (off) or 1 (on), got " +
                                std::to_string(mode));
  g_mode.store(mode);
}

int team_tuning_mode() { return g_mode.load(); }

int team_choice(uint64_t key) {
  const Entry& e = table().e[key % kSlots];
  return e.used && e.key == key ? e.n[e.choice] : 0;
}

}  // namespace rnnfast
