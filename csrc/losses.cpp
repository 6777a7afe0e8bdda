// Fused softmax cross-entropy (log-softmax + NLL + gradient) over the rows of a logits matrix.
// See losses.h for the contract.
//
// Threads take whole blocks of kLossBlockRows rows; a block's loss is summed in row order and the
// block sums in block order after the parallel loop, so 1 and N threads give identical bits.
// Reductions inside a row use eight fixed lanes (lane j takes columns j, j+8, ...) combined in lane
// order: a fixed order that the compiler can still vectorise.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "losses.h"
#include "rnnfast.h"

namespace rnnfast {
namespace {

constexpr int kLanes = 8;
// Below this many logits a call stays on one thread (spawning costs more than it saves).
constexpr int64_t kParallelMinElements = 1 << 15;

// The bits of a float/double as the same-sized signed integer, and back. Loops below compare
// bits, not floating values: GCC (without -fno-trapping-math) will not if-convert a floating
// comparison, and a loop with a branch does not vectorise. Integer compares and selects do.
template <class T>
struct FloatBits;
template <>
struct FloatBits<float> {
  using Int = int32_t;
  static constexpr Int kAbs = 0x7fffffff;
  static constexpr Int kInf = 0x7f800000;
  static constexpr int kSignShift = 31;
};
template <>
struct FloatBits<double> {
  using Int = int64_t;
  static constexpr Int kAbs = 0x7fffffffffffffffLL;
  static constexpr Int kInf = 0x7ff0000000000000LL;
  static constexpr int kSignShift = 63;
};

template <class T>
inline typename FloatBits<T>::Int to_bits(T v) {
  typename FloatBits<T>::Int b;
  std::memcpy(&b, &v, sizeof b);
  return b;
}
template <class T>
inline T from_bits(typename FloatBits<T>::Int b) {
  T v;
  std::memcpy(&v, &b, sizeof v);
  return v;
}
// mask ? a : b for an all-ones / all-zeros mask, without a branch for GCC to keep (a conditional
// expression, even on integers, can leave one that stops the loop vectoriser).
template <class Int>
inline Int select(Int mask, Int a, Int b) {
  return (mask & a) | (~mask & b);
}
template <class Int>
inline Int mask_of(bool cond) {
  return -Int(cond);
}
// A signed integer key with the same order as the (non-NaN) floats: negative floats have their
// magnitude bits flipped. The map is its own inverse.
template <class T>
inline typename FloatBits<T>::Int order_key(typename FloatBits<T>::Int b) {
  return b ^ ((b >> FloatBits<T>::kSignShift) & FloatBits<T>::kAbs);
}

// exp(x) for x in [-inf, 0], written so that a loop of it vectorises (no libm call, no floating
// compare): x = n ln2 + r with |r| <= ln2/2, exp(r) by its Taylor polynomial, 2^n assembled in the
// exponent bits. Arguments below kLo (and NaN: callers screen rows with NaN out first) return 0:
// they only ever meet a sum >= 1 (the row maximum contributes exp(0) = 1), where anything under
// 1e-37 (float) or 1e-307 (double) cannot show.
// Measured against a long-double exp on 10^7 points of [-87, 0] / [-708, 0]: under 1.3 ulp.
template <class T>
struct ExpNeg;

template <>
struct ExpNeg<float> {
  static constexpr float kLo = -87.0f;
  static constexpr float kLog2e = 1.44269504088896341f;
  static constexpr float kLn2Hi = 0.693359375f;          // 9 significant bits: n * kLn2Hi is exact
  static constexpr float kLn2Lo = -2.12194440054690583e-4f;  // ln2 - kLn2Hi
  static constexpr float kShifter = 12582912.0f;          // 1.5 * 2^23: adding it rounds to an int
  static constexpr int kMantissa = 23;
  static constexpr int32_t kBias = 127;
  // Taylor coefficients 1/k!, k = 7 .. 2; truncation error < 6e-9 relative on |r| <= ln2/2.
  static inline float poly(float r) {
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    return p * r + 1.0f;
  }
};

template <>
struct ExpNeg<double> {
  static constexpr double kLo = -708.0;
  static constexpr double kLog2e = 1.44269504088896340736;
  static constexpr double kLn2Hi = 6.93147180369123816490e-01;  // low 32 mantissa bits are zero
  static constexpr double kLn2Lo = 1.90821492927058770002e-10;  // ln2 - kLn2Hi
  static constexpr double kShifter = 6755399441055744.0;        // 1.5 * 2^52
  static constexpr int kMantissa = 52;
  static constexpr int64_t kBias = 1023;
  // Taylor coefficients 1/k!, k = 13 .. 2; truncation error < 5e-18 relative on |r| <= ln2/2.
  static inline double poly(double r) {
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    return p * r + 1.0;
  }
};

template <class T>
inline T exp_neg(T x) {
  using E = ExpNeg<T>;
  using F = FloatBits<T>;
  using Int = typename F::Int;
  // float: x < kLo as an integer mask on the magnitude bits (x <= 0; true for -inf and NaN too),
  // which lets the loop vectorise on SSE2. double: SSE2 has no 64-bit integer compare, the loop
  // stays scalar, and a plain conditional is the cheaper scalar code.
  Int below;
  T xc;
  if (sizeof(T) == 4) {
    const Int lo_bits = to_bits<T>(E::kLo);
    const Int xb = to_bits<T>(x);
    below = mask_of<Int>((xb & F::kAbs) > (lo_bits & F::kAbs));
    xc = from_bits<T>(select(below, lo_bits, xb));
  } else {
    below = mask_of<Int>(x < E::kLo);
    xc = x < E::kLo ? E::kLo : x;
  }
  const T shifted = xc * E::kLog2e + E::kShifter;
  const T n = shifted - E::kShifter;  // round(xc / ln2), in [-1021, 0] / [-126, 0]
  const T r = (xc - n * E::kLn2Hi) - n * E::kLn2Lo;
  const Int n_int = to_bits<T>(shifted) - to_bits<T>(E::kShifter);
  const T scale = from_bits<T>((n_int + E::kBias) << E::kMantissa);  // 2^n
  const Int e = to_bits<T>(E::poly(r) * scale);
  return from_bits<T>(~below & e);
}

// One row: returns its loss (double) and, when g is not null, writes grad_scale * d loss / d x.
//   x (c,) IN; t the target class (not ignored); g (c,) OUT or null.
// A row holding NaN or +inf, or only -inf, has no finite log-sum-exp: NaN loss and gradient.
template <class T>
double row_cross_entropy(const T* x, int64_t c, int64_t t, double eps, double grad_scale, T* g) {
  using F = FloatBits<T>;
  using Int = typename F::Int;
  // Maximum of the row (as order keys), NaN detection, and for label smoothing the sum of x.
  Int mk[kLanes], bad[kLanes];
  T sx[kLanes];
  for (int j = 0; j < kLanes; ++j) {
    mk[j] = order_key<T>(to_bits<T>(x[0]));
    bad[j] = 0;
    sx[j] = T(0);
  }
  const int64_t cv = c - c % kLanes;
  for (int64_t i = 0; i < cv; i += kLanes)
    for (int j = 0; j < kLanes; ++j) {
      const Int b = to_bits<T>(x[i + j]);
      const Int k = order_key<T>(b);
      mk[j] = select(mask_of<Int>(k > mk[j]), k, mk[j]);
      bad[j] |= mask_of<Int>((b & F::kAbs) > F::kInf);
      sx[j] += x[i + j];
    }
  for (int64_t i = cv; i < c; ++i) {
    const Int b = to_bits<T>(x[i]);
    const Int k = order_key<T>(b);
    mk[0] = select(mask_of<Int>(k > mk[0]), k, mk[0]);
    bad[0] |= mask_of<Int>((b & F::kAbs) > F::kInf);
    sx[0] += x[i];
  }
  Int mkey = mk[0], any_bad = 0;
  double sum_x = 0.0;
  for (int j = 0; j < kLanes; ++j) {
    mkey = mk[j] > mkey ? mk[j] : mkey;
    any_bad |= bad[j];
    sum_x += double(sx[j]);
  }
  const T m = from_bits<T>(order_key<T>(mkey));
  if (any_bad || !std::isfinite(m)) {
    if (g)
      for (int64_t i = 0; i < c; ++i) g[i] = std::numeric_limits<T>::quiet_NaN();
    return std::numeric_limits<double>::quiet_NaN();
  }

  // Sum of exp(x - max); the exponentials go to g when there is one (reused in the last pass).
  T se[kLanes] = {};
  if (g) {
    for (int64_t i = 0; i < cv; i += kLanes)
      for (int j = 0; j < kLanes; ++j) {
        const T e = exp_neg<T>(x[i + j] - m);
        g[i + j] = e;
        se[j] += e;
      }
    for (int64_t i = cv; i < c; ++i) {
      g[i] = exp_neg<T>(x[i] - m);
      se[0] += g[i];
    }
  } else {
    for (int64_t i = 0; i < cv; i += kLanes)
      for (int j = 0; j < kLanes; ++j) se[j] += exp_neg<T>(x[i + j] - m);
    for (int64_t i = cv; i < c; ++i) se[0] += exp_neg<T>(x[i] - m);
  }
  double s = 0.0;
  for (int j = 0; j < kLanes; ++j) s += double(se[j]);

  // loss = -sum_c q_c log p_c = lse - (1-eps) x_t - eps mean(x), lse = max + log(sum exp(x - max))
  const double lse = double(m) + std::log(s);
  const double loss = lse - (1.0 - eps) * double(x[t]) - eps * (sum_x / double(c));

  if (g) {
    // d loss / d x_k = p_k - q_k, p_k = exp(x_k - max) / s
    const T inv = T(grad_scale / s);
    const T off = T(grad_scale * eps / double(c));
    for (int64_t i = 0; i < c; ++i) g[i] = g[i] * inv - off;
    g[t] -= T(grad_scale * (1.0 - eps));
  }
  return loss;
}

template <class T>
double softmax_cross_entropy_impl(const T* logits, const int64_t* targets, int64_t n, int64_t c,
                                  int64_t ignore_index, double eps, double grad_scale, T* row_loss,
                                  T* dlogits) {
  if (n <= 0) return 0.0;
  const int64_t nblocks = (n + kLossBlockRows - 1) / kLossBlockRows;
  std::vector<double> block_sum(static_cast<size_t>(nblocks), 0.0);
  const bool parallel = nblocks > 1 && n * c >= kParallelMinElements;
  const int nt = get_num_threads();
  (void)nt;        // only the OpenMP pragma reads these two; without OpenMP they are unused
  (void)parallel;

#pragma omp parallel for num_threads(nt) schedule(static) if (parallel)
  for (int64_t b = 0; b < nblocks; ++b) {
    const int64_t r0 = b * kLossBlockRows;
    const int64_t r1 = r0 + kLossBlockRows < n ? r0 + kLossBlockRows : n;
    double acc = 0.0;
    for (int64_t r = r0; r < r1; ++r) {
      T* g = dlogits ? dlogits + r * c : nullptr;
      const int64_t t = targets[r];
      if (t == ignore_index) {
        if (row_loss) row_loss[r] = T(0);
        if (g)
          for (int64_t i = 0; i < c; ++i) g[i] = T(0);
        continue;
      }
      const double loss = row_cross_entropy<T>(logits + r * c, c, t, eps, grad_scale, g);
      if (row_loss) row_loss[r] = T(loss);
      acc += loss;
    }
    block_sum[static_cast<size_t>(b)] = acc;
  }

  double total = 0.0;
  for (int64_t b = 0; b < nblocks; ++b) total += block_sum[static_cast<size_t>(b)];
  return total;
}

}  // namespace

template <class T>
double softmax_cross_entropy(const T* logits, const int64_t* targets, int64_t n, int64_t c,
                             int64_t ignore_index, double label_smoothing, double grad_scale,
                             T* row_loss, T* dlogits) {
  return softmax_cross_entropy_impl<T>(logits, targets, n, c, ignore_index, label_smoothing,
                                       grad_scale, row_loss, dlogits);
}

template double softmax_cross_entropy<float>(const float*, const int64_t*, int64_t, int64_t,
                                             int64_t, double, double, float*, float*);
template double softmax_cross_entropy<double>(const double*, const int64_t*, int64_t, int64_t,
                                              int64_t, double, double, double*, double*);

}  // namespace rnnfast
