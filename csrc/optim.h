// Fused optimizer updates and gradient-clipping kernels over flat buffers. No Python headers.
//
// Every buffer is a contiguous array of n elements of one dtype (kF32 or kF64 from rnnfast.h):
// the parameters, their gradients, and each optimizer state, all mirroring one flat parameter
// buffer, so a step is one loop. The binding guarantees sizes, dtypes and contiguity.
//
// Scalars arrive in double and are rounded to the buffer's dtype once, before the loop: that is
// what torch does with Python scalars in its elementwise ops, and the callers compute the
// per-step scalars (bias corrections, step sizes) in Python doubles exactly as torch's
// single-tensor (foreach=False) optimizers do. Loops are elementwise with a static OpenMP
// schedule, so the bits do not depend on the thread count.
#pragma once
#include <cstdint>

namespace rnnfast {

// SGD (torch.optim.SGD): g += wd*p; buf = momentum*buf + (1-dampening)*g (buf = g on its first
// step); g = nesterov ? g + momentum*buf : buf; p -= lr*g.
struct SgdArgs {
  double lr = 0, momentum = 0, dampening = 0, weight_decay = 0;
  bool nesterov = false;
  bool init_buffer = false;  // first step with momentum: buf = g (torch clones the gradient)
};
// momentum_buf: IN/OUT, used only when momentum != 0 (may be null otherwise).
void sgd_step(int32_t dtype, int64_t n, void* param, const void* grad, void* momentum_buf,
              const SgdArgs& a);

// Adam / AdamW (torch.optim.Adam, decoupled_weight_decay for AdamW):
//   p *= decay_factor                        (AdamW; 1 - lr*wd, 1 means none)
//   g += weight_decay*p                      (Adam's L2 term; 0 for AdamW)
//   m = lerp(m, g, 1-beta1);  v = beta2*v + (1-beta2)*g*g;  vmax = max(vmax, v) (amsgrad)
//   p -= step_size * m / (sqrt(v or vmax)/bias_correction2_sqrt + eps)
struct AdamArgs {
  double decay_factor = 1, weight_decay = 0;
  double one_minus_beta1 = 0, beta2 = 0, one_minus_beta2 = 0;
  double step_size = 0;              // lr / (1 - beta1^t)
  double bias_correction2_sqrt = 1;  // sqrt(1 - beta2^t)
  double eps = 0;
  bool amsgrad = false;
};
// exp_avg, exp_avg_sq, max_exp_avg_sq (amsgrad only, else null): IN/OUT.
void adam_step(int32_t dtype, int64_t n, void* param, const void* grad, void* exp_avg,
               void* exp_avg_sq, void* max_exp_avg_sq, const AdamArgs& a);

// RMSprop (torch.optim.RMSprop): g += wd*p; s = alpha*s + (1-alpha)*g*g;
//   centered: ga = lerp(ga, g, 1-alpha), avg = sqrt(s - ga*ga) + eps; else avg = sqrt(s) + eps;
//   momentum > 0: buf = momentum*buf + g/avg, p -= lr*buf; else p -= lr*g/avg.
struct RmspropArgs {
  double lr = 0, alpha = 0, one_minus_alpha = 0, eps = 0, weight_decay = 0, momentum = 0;
  bool centered = false;
};
// square_avg: IN/OUT; grad_avg (centered only), momentum_buf (momentum > 0 only): IN/OUT or null.
void rmsprop_step(int32_t dtype, int64_t n, void* param, const void* grad, void* square_avg,
                  void* grad_avg, void* momentum_buf, const RmspropArgs& a);

// Adagrad (torch.optim.Adagrad): g += wd*p; sum += g*g; p -= clr*g/(sqrt(sum) + eps), where the
// caller passes clr = lr / (1 + (t-1)*lr_decay).
struct AdagradArgs {
  double clr = 0, weight_decay = 0, eps = 0;
};
void adagrad_step(int32_t dtype, int64_t n, void* param, const void* grad, void* state_sum,
                  const AdagradArgs& a);

// Gradient clipping.
// sum_i |g_i|^p for a finite p > 0, or max_i |g_i| for p = +inf (NaN propagates), accumulated in
// double. The buffer is cut into fixed-size blocks (independent of the thread count), each block
// is reduced by one thread in index order and the block results are combined in block order, so
// the result has the same bits for any number of threads.
double norm_power_sum(int32_t dtype, int64_t n, const void* g, double p);
// g *= factor (factor rounded to the dtype first, as torch's g.mul_(clip_coef) does).
void scale_inplace(int32_t dtype, int64_t n, void* g, double factor);
// g = min(max(g, lo), hi); NaN stays NaN (torch.clamp).
void clamp_inplace(int32_t dtype, int64_t n, void* g, double lo, double hi);

}  // namespace rnnfast
