// Fused optimizer updates and gradient norms over flat buffers (see optim.h for the formulas).
//
// Each update is one elementwise pass that reads the gradient once and reads/writes every state
// buffer once. The order of the floating-point operations per element follows torch's
// single-tensor implementations op by op (e.g. Adam's denom = sqrt(v) / sqrt(bc2) + eps, then
// p += (-step_size * m) / denom), so float64 agrees with torch to a few ulps and float32 to
// float32 rounding (torch fuses some multiply-adds on CPUs with FMA; this baseline build does not).
#include "optim.h"

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "rnnfast.h"

namespace rnnfast {
namespace {

using idx = int64_t;

// Below this many elements a step runs on the calling thread: waking a team costs more than the
// loop. Elementwise results are the same either way.
constexpr idx kMinParallel = idx(1) << 15;
// Norms reduce fixed blocks of this many elements, whatever the thread count.
constexpr idx kNormBlock = idx(1) << 13;

// torch's lerp: a + w*(b-a) for |w| < 0.5, else b - (b-a)*(1-w) (more accurate near w = 1).
template <class T>
inline T lerp(T a, T b, T w, bool small_w) {
  return small_w ? a + w * (b - a) : b - (b - a) * (T(1) - w);
}

// torch.maximum: NaN in either argument gives NaN.
template <class T>
inline T nan_max(T a, T b) {
  return (a != a || a > b) ? a : b;
}

template <class T>
void sgd_t(idx n, T* __restrict p, const T* __restrict grad, T* __restrict buf, const SgdArgs& a) {
  const T wd = T(a.weight_decay), mom = T(a.momentum), keep = T(1.0 - a.dampening);
  const T neg_lr = T(-a.lr);
  const bool decay = a.weight_decay != 0, use_mom = a.momentum != 0, init = a.init_buffer;
  const bool nesterov = a.nesterov;
  const int nt = get_num_threads();
#pragma omp parallel for num_threads(nt) schedule(static) if (n >= kMinParallel)
  for (idx i = 0; i < n; ++i) {
    T g = grad[i];
    if (decay) g = g + wd * p[i];
    if (use_mom) {
      T b = init ? g : buf[i] * mom + keep * g;
      buf[i] = b;
      g = nesterov ? g + mom * b : b;
    }
    p[i] = p[i] + neg_lr * g;
  }
}

template <class T, bool kAmsgrad>
void adam_t(idx n, T* __restrict p, const T* __restrict grad, T* __restrict m, T* __restrict v,
            T* __restrict vmax, const AdamArgs& a) {
  const T decay_factor = T(a.decay_factor), wd = T(a.weight_decay);
  const T w1 = T(a.one_minus_beta1), b2 = T(a.beta2), w2 = T(a.one_minus_beta2);
  const T bc2 = T(a.bias_correction2_sqrt), eps = T(a.eps), neg_step = T(-a.step_size);
  const bool decoupled = a.decay_factor != 1, coupled = a.weight_decay != 0;
  const bool small_w1 = std::abs(w1) < T(0.5);
  const int nt = get_num_threads();
#pragma omp parallel for num_threads(nt) schedule(static) if (n >= kMinParallel)
  for (idx i = 0; i < n; ++i) {
    T pi = p[i];
    if (decoupled) pi = pi * decay_factor;
    T g = grad[i];
    if (coupled) g = g + wd * pi;
    const T mi = lerp(m[i], g, w1, small_w1);
    m[i] = mi;
    T vi = v[i] * b2;
    vi = vi + (w2 * g) * g;
    v[i] = vi;
    if (kAmsgrad) {
      vi = nan_max(vmax[i], vi);
      vmax[i] = vi;
    }
    const T denom = std::sqrt(vi) / bc2 + eps;
    p[i] = pi + (neg_step * mi) / denom;
  }
}

template <class T, bool kCentered, bool kMomentum>
void rmsprop_t(idx n, T* __restrict p, const T* __restrict grad, T* __restrict sq,
               T* __restrict ga, T* __restrict buf, const RmspropArgs& a) {
  const T wd = T(a.weight_decay), alpha = T(a.alpha), w = T(a.one_minus_alpha);
  const T eps = T(a.eps), mom = T(a.momentum), neg_lr = T(-a.lr);
  const bool decay = a.weight_decay != 0, small_w = std::abs(w) < T(0.5);
  const int nt = get_num_threads();
#pragma omp parallel for num_threads(nt) schedule(static) if (n >= kMinParallel)
  for (idx i = 0; i < n; ++i) {
    T g = grad[i];
    if (decay) g = g + wd * p[i];
    T s = sq[i] * alpha;
    s = s + (w * g) * g;
    sq[i] = s;
    T avg;
    if (kCentered) {
      const T gi = lerp(ga[i], g, w, small_w);
      ga[i] = gi;
      avg = std::sqrt(s + (T(-1) * gi) * gi);
    } else {
      avg = std::sqrt(s);
    }
    avg = avg + eps;
    if (kMomentum) {
      const T b = buf[i] * mom + g / avg;
      buf[i] = b;
      p[i] = p[i] + neg_lr * b;
    } else {
      p[i] = p[i] + (neg_lr * g) / avg;
    }
  }
}

template <class T>
void adagrad_t(idx n, T* __restrict p, const T* __restrict grad, T* __restrict sum,
               const AdagradArgs& a) {
  const T wd = T(a.weight_decay), eps = T(a.eps), neg_clr = T(-a.clr);
  const bool decay = a.weight_decay != 0;
  const int nt = get_num_threads();
#pragma omp parallel for num_threads(nt) schedule(static) if (n >= kMinParallel)
  for (idx i = 0; i < n; ++i) {
    T g = grad[i];
    if (decay) g = g + wd * p[i];
    const T s = sum[i] + g * g;
    sum[i] = s;
    p[i] = p[i] + (neg_clr * g) / (std::sqrt(s) + eps);
  }
}

enum class NormKind { kOne, kTwo, kPow, kInf };

// One block, in index order. Four interleaved accumulators keep the adds pipelined; their
// combination order is fixed, so the result is still a function of the block alone.
template <class T>
double block_reduce(const T* g, idx n, NormKind kind, double p) {
  if (kind == NormKind::kInf) {
    double m = 0;
    for (idx i = 0; i < n; ++i) m = nan_max(double(std::abs(g[i])), m);
    return m;
  }
  double acc[4] = {0, 0, 0, 0};
  idx i = 0;
  for (; i + 4 <= n; i += 4) {
    for (int k = 0; k < 4; ++k) {
      const double x = std::abs(double(g[i + k]));
      acc[k] += kind == NormKind::kOne ? x : kind == NormKind::kTwo ? x * x : std::pow(x, p);
    }
  }
  for (; i < n; ++i) {
    const double x = std::abs(double(g[i]));
    acc[0] += kind == NormKind::kOne ? x : kind == NormKind::kTwo ? x * x : std::pow(x, p);
  }
  return (acc[0] + acc[1]) + (acc[2] + acc[3]);
}

template <class T>
double norm_t(idx n, const T* g, double p) {
  if (n <= 0) return 0.0;
  const NormKind kind = std::isinf(p) ? NormKind::kInf
                        : p == 1.0    ? NormKind::kOne
                        : p == 2.0    ? NormKind::kTwo
                                      : NormKind::kPow;
  const idx nb = (n + kNormBlock - 1) / kNormBlock;
  std::vector<double> part(nb);
  const int nt = get_num_threads();
#pragma omp parallel for num_threads(nt) schedule(static) if (n >= kMinParallel)
  for (idx b = 0; b < nb; ++b) {
    const idx lo = b * kNormBlock, len = std::min(kNormBlock, n - lo);
    part[b] = block_reduce(g + lo, len, kind, p);
  }
  double total = 0;
  for (idx b = 0; b < nb; ++b)
    total = kind == NormKind::kInf ? nan_max(part[b], total) : total + part[b];
  return total;
}

template <class T>
void scale_t(idx n, T* g, double factor) {
  const T f = T(factor);
  const int nt = get_num_threads();
#pragma omp parallel for num_threads(nt) schedule(static) if (n >= kMinParallel)
  for (idx i = 0; i < n; ++i) g[i] = g[i] * f;
}

template <class T>
void clamp_t(idx n, T* g, double lo, double hi) {
  const T l = T(lo), h = T(hi);
  const int nt = get_num_threads();
#pragma omp parallel for num_threads(nt) schedule(static) if (n >= kMinParallel)
  for (idx i = 0; i < n; ++i) {
    T v = g[i];
    v = v < l ? l : v;
    g[i] = v > h ? h : v;
  }
}

void check_dtype(int32_t dtype) {
  if (dtype != kF32 && dtype != kF64)
    throw std::invalid_argument("rnnfast optim: dtype must be float32 (0) or float64 (1)");
}

template <class T>
T* as(void* ptr) {
  return static_cast<T*>(ptr);
}
template <class T>
const T* as(const void* ptr) {
  return static_cast<const T*>(ptr);
}

// The flags that decide which state buffers a step touches are template parameters: a loop with
// a conditional load or store does not vectorise, one with a loop-invariant select can. (With
// GCC the sqrt loops still stay scalar unless the file is built with -fno-math-errno: errno on a
// negative argument is a side effect the vectoriser must keep.)
template <class T>
void adam_dispatch(idx n, void* p, const void* g, void* m, void* v, void* vmax,
                   const AdamArgs& a) {
  if (a.amsgrad)
    adam_t<T, true>(n, as<T>(p), as<T>(g), as<T>(m), as<T>(v), as<T>(vmax), a);
  else
    adam_t<T, false>(n, as<T>(p), as<T>(g), as<T>(m), as<T>(v), nullptr, a);
}

template <class T>
void rmsprop_dispatch(idx n, void* p, const void* g, void* sq, void* ga, void* buf,
                      const RmspropArgs& a) {
  const bool mom = a.momentum > 0;
  if (a.centered && mom)
    rmsprop_t<T, true, true>(n, as<T>(p), as<T>(g), as<T>(sq), as<T>(ga), as<T>(buf), a);
  else if (a.centered)
    rmsprop_t<T, true, false>(n, as<T>(p), as<T>(g), as<T>(sq), as<T>(ga), nullptr, a);
  else if (mom)
    rmsprop_t<T, false, true>(n, as<T>(p), as<T>(g), as<T>(sq), nullptr, as<T>(buf), a);
  else
    rmsprop_t<T, false, false>(n, as<T>(p), as<T>(g), as<T>(sq), nullptr, nullptr, a);
}

}  // namespace

void sgd_step(int32_t dtype, int64_t n, void* param, const void* grad, void* momentum_buf,
              const SgdArgs& a) {
  check_dtype(dtype);
  if (dtype == kF32)
    sgd_t<float>(n, as<float>(param), as<float>(grad), as<float>(momentum_buf), a);
  else
    sgd_t<double>(n, as<double>(param), as<double>(grad), as<double>(momentum_buf), a);
}

void adam_step(int32_t dtype, int64_t n, void* param, const void* grad, void* exp_avg,
               void* exp_avg_sq, void* max_exp_avg_sq, const AdamArgs& a) {
  check_dtype(dtype);
  if (dtype == kF32)
    adam_dispatch<float>(n, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, a);
  else
    adam_dispatch<double>(n, param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, a);
}

void rmsprop_step(int32_t dtype, int64_t n, void* param, const void* grad, void* square_avg,
                  void* grad_avg, void* momentum_buf, const RmspropArgs& a) {
  check_dtype(dtype);
  if (dtype == kF32)
    rmsprop_dispatch<float>(n, param, grad, square_avg, grad_avg, momentum_buf, a);
  else
    rmsprop_dispatch<double>(n, param, grad, square_avg, grad_avg, momentum_buf, a);
}

void adagrad_step(int32_t dtype, int64_t n, void* param, const void* grad, void* state_sum,
                  const AdagradArgs& a) {
  check_dtype(dtype);
  if (dtype == kF32)
    adagrad_t<float>(n, as<float>(param), as<float>(grad), as<float>(state_sum), a);
  else
    adagrad_t<double>(n, as<double>(param), as<double>(grad), as<double>(state_sum), a);
}

double norm_power_sum(int32_t dtype, int64_t n, const void* g, double p) {
  check_dtype(dtype);
  if (!(p > 0)) throw std::invalid_argument("rnnfast optim: norm order must be > 0");
  return dtype == kF32 ? norm_t<float>(n, as<float>(g), p) : norm_t<double>(n, as<double>(g), p);
}

void scale_inplace(int32_t dtype, int64_t n, void* g, double factor) {
  check_dtype(dtype);
  if (dtype == kF32)
    scale_t<float>(n, as<float>(g), factor);
  else
    scale_t<double>(n, as<double>(g), factor);
}

void clamp_inplace(int32_t dtype, int64_t n, void* g, double lo, double hi) {
  check_dtype(dtype);
  if (dtype == kF32)
    clamp_t<float>(n, as<float>(g), lo, hi);
  else
    clamp_t<double>(n, as<double>(g), lo, hi);
}

}  // namespace rnnfast
