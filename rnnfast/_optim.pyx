# cython: language_level=3, boundscheck=False, wraparound=False, embedsignature=True
"""The binding of the fused optimizer and clipping kernels (csrc/optim.h), and only that.

The callers (``rnnfast.optim``, ``rnnfast.clip``) have already validated every array: C-contiguous,
float32 or float64, all buffers of one update of the same dtype and size. ``None`` stands for an
absent optional state buffer. The GIL is released while the core computes.
"""
from libc.stdint cimport int32_t, int64_t
cimport numpy as cnp

cnp.import_array()

cdef extern from "optim.h" namespace "rnnfast":
    cdef cppclass SgdArgs:
        double lr, momentum, dampening, weight_decay
        bint nesterov, init_buffer

    cdef cppclass AdamArgs:
        double decay_factor, weight_decay, one_minus_beta1, beta2, one_minus_beta2
        double step_size, bias_correction2_sqrt, eps
        bint amsgrad

    cdef cppclass RmspropArgs:
        double lr, alpha, one_minus_alpha, eps, weight_decay, momentum
        bint centered

    cdef cppclass AdagradArgs:
        double clr, weight_decay, eps

    void sgd_step(int32_t, int64_t, void*, const void*, void*, const SgdArgs&) except + nogil
    void adam_step(int32_t, int64_t, void*, const void*, void*, void*, void*,
                   const AdamArgs&) except + nogil
    void rmsprop_step(int32_t, int64_t, void*, const void*, void*, void*, void*,
                      const RmspropArgs&) except + nogil
    void adagrad_step(int32_t, int64_t, void*, const void*, void*,
                      const AdagradArgs&) except + nogil
    double norm_power_sum(int32_t, int64_t, const void*, double) except + nogil
    void scale_inplace(int32_t, int64_t, void*, double) except + nogil
    void clamp_inplace(int32_t, int64_t, void*, double, double) except + nogil


cdef inline void* _ptr(object a):
    """Data pointer of a numpy array, or NULL for None."""
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


cdef inline int32_t _dtype(cnp.ndarray a):
    """The core's dtype code (rnnfast::kF32 = 0, kF64 = 1)."""
    return 0 if a.dtype.itemsize == 4 else 1


def sgd(param, grad, buf, double lr, double momentum, double dampening, double weight_decay,
        bint nesterov, bint init_buffer):
    cdef SgdArgs a
    a.lr, a.momentum, a.dampening, a.weight_decay = lr, momentum, dampening, weight_decay
    a.nesterov, a.init_buffer = nesterov, init_buffer
    cdef int32_t dt = _dtype(param)
    cdef int64_t n = param.size
    cdef void* p = _ptr(param)
    cdef const void* g = _ptr(grad)
    cdef void* b = _ptr(buf)
    with nogil:
        sgd_step(dt, n, p, g, b, a)


def adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, double decay_factor,
         double weight_decay, double one_minus_beta1, double beta2, double one_minus_beta2,
         double step_size, double bias_correction2_sqrt, double eps, bint amsgrad):
    cdef AdamArgs a
    a.decay_factor, a.weight_decay = decay_factor, weight_decay
    a.one_minus_beta1, a.beta2, a.one_minus_beta2 = one_minus_beta1, beta2, one_minus_beta2
    a.step_size, a.bias_correction2_sqrt, a.eps = step_size, bias_correction2_sqrt, eps
    a.amsgrad = amsgrad
    cdef int32_t dt = _dtype(param)
    cdef int64_t n = param.size
    cdef void* p = _ptr(param)
    cdef const void* g = _ptr(grad)
    cdef void* m = _ptr(exp_avg)
    cdef void* v = _ptr(exp_avg_sq)
    cdef void* vmax = _ptr(max_exp_avg_sq)
    with nogil:
        adam_step(dt, n, p, g, m, v, vmax, a)


def rmsprop(param, grad, square_avg, grad_avg, buf, double lr, double alpha,
            double one_minus_alpha, double eps, double weight_decay, double momentum,
            bint centered):
    cdef RmspropArgs a
    a.lr, a.alpha, a.one_minus_alpha, a.eps = lr, alpha, one_minus_alpha, eps
    a.weight_decay, a.momentum, a.centered = weight_decay, momentum, centered
    cdef int32_t dt = _dtype(param)
    cdef int64_t n = param.size
    cdef void* p = _ptr(param)
    cdef const void* g = _ptr(grad)
    cdef void* s = _ptr(square_avg)
    cdef void* ga = _ptr(grad_avg)
    cdef void* b = _ptr(buf)
    with nogil:
        rmsprop_step(dt, n, p, g, s, ga, b, a)


def adagrad(param, grad, state_sum, double clr, double weight_decay, double eps):
    cdef AdagradArgs a
    a.clr, a.weight_decay, a.eps = clr, weight_decay, eps
    cdef int32_t dt = _dtype(param)
    cdef int64_t n = param.size
    cdef void* p = _ptr(param)
    cdef const void* g = _ptr(grad)
    cdef void* s = _ptr(state_sum)
    with nogil:
        adagrad_step(dt, n, p, g, s, a)


def norm_pow_sum(grad, double p):
    """sum |g|^p (max |g| for p = inf) over a flat buffer, in double, thread-count independent."""
    cdef int32_t dt = _dtype(grad)
    cdef int64_t n = grad.size
    cdef const void* g = _ptr(grad)
    cdef double out
    with nogil:
        out = norm_power_sum(dt, n, g, p)
    return out


def scale(grad, double factor):
    cdef int32_t dt = _dtype(grad)
    cdef int64_t n = grad.size
    cdef void* g = _ptr(grad)
    with nogil:
        scale_inplace(dt, n, g, factor)


def clamp(grad, double lo, double hi):
    cdef int32_t dt = _dtype(grad)
    cdef int64_t n = grad.size
    cdef void* g = _ptr(grad)
    with nogil:
        clamp_inplace(dt, n, g, lo, hi)
