// Activation functions for the cell gate math.
//
// float: branch-free, libm-free versions that the compiler vectorises inside the gate loops.
//   exp:      Cody-Waite reduction x = n ln2 + r, |r| <= ln2/2, degree-5 minimax polynomial for e^r
//             (tools/fit_exp.py), scaled by 2^n through the exponent bits. Max relative error
//             2.4e-7 (about 2 ulp) for x in [-87.3, 88.3]; outside it the argument is clamped (exp
//             saturates at 2.0e38 and bottoms out at 1.2e-38), which is harmless in sigmoid and tanh.
//   sigmoid:  1 / (1 + exp(-x)); max relative error 4.8e-7, result in [0, 1].
//   tanh:     odd Taylor polynomial (degree 9) for |x| < 0.25, else 1 - 2 / (exp(2x) + 1);
//             max absolute error 2.4e-7, relative error 1e-6, and |tanh(x)| <= 1 always.
//   NaN in gives NaN out. Measured against float64 over every 7th float32 bit pattern (AVX2+FMA
//   and portable builds): exp 2.1e-7, sigmoid 2.4e-7, tanh 1.9e-7 absolute / 6.4e-7 relative;
//   tests/test_activations.py checks the bounds on every kernel path. (The degree-7 Taylor
//   polynomial used before measured exp 1.0e-7, sigmoid 1.5e-7, tanh 1.8e-7 / 5.3e-7, and cost
//   two more FMAs per exp: the LSTM gate math ran ~9% slower.)
// double: the C library's exp and tanh (this precision exists for checking gradients).
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

// The activations must be inlined into the gate loops (a call would keep them scalar); GCC's
// inliner gave up on tanh_f32 once the forward loop grew, so force it.
#if defined(__GNUC__)
#define RF_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define RF_ALWAYS_INLINE inline
#endif

namespace rnnfast {

RF_ALWAYS_INLINE float exp_f32(float x) {
  // Clamps written so that NaN passes through (a comparison with NaN is false).
  x = x > 88.3f ? 88.3f : x;
  x = x < -87.3f ? -87.3f : x;
  const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to the nearest integer
  const float t = x * 1.44269504088896341f + shifter;
  const float n = t - shifter;
  float r = x - n * 0.693359375f;  // ln2 split in a short high part and a correction
  r = r - n * -2.12194440e-4f;
  // Minimax polynomial for e^r on |r| <= ln2/2 (tools/fit_exp.py): its own relative error is
  // 8.4e-8; with the float32 rounding of these steps exp_f32 measures 2.1e-7.
  float p = 0.0082652308f;
  p = p * r + 0.0418931134f;
  p = p * r + 0.166678905f;
  p = p * r + 0.499991894f;
  p = p * r + 0.999999702f;
  p = p * r + 1.0f;
  const int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

RF_ALWAYS_INLINE float sigmoid_f32(float x) { return 1.0f / (1.0f + exp_f32(-x)); }

RF_ALWAYS_INLINE float tanh_f32(float x) {
  const float ax = x < 0.0f ? -x : x;
  const float x2 = x * x;
  float p = 62.0f / 2835.0f;
  p = p * x2 - 17.0f / 315.0f;
  p = p * x2 + 2.0f / 15.0f;
  p = p * x2 - 1.0f / 3.0f;
  const float small = x + x * x2 * p;
  const float large = 1.0f - 2.0f / (exp_f32(2.0f * x) + 1.0f);
  return ax < 0.25f ? small : large;
}

template <class T> struct Act;
template <> struct Act<float> {
  static RF_ALWAYS_INLINE float sigmoid(float x) { return sigmoid_f32(x); }
  static RF_ALWAYS_INLINE float tanh(float x) { return tanh_f32(x); }
};
template <> struct Act<double> {
  static RF_ALWAYS_INLINE double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
  static RF_ALWAYS_INLINE double tanh(double x) { return std::tanh(x); }
};

}  // namespace rnnfast
