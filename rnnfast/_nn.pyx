# cython: language_level=3, boundscheck=False, wraparound=False, embedsignature=True
"""The binding of the loss kernels (``csrc/losses.h``), and only that.

The caller (``rnnfast.losses``) has validated everything: ``logits`` is C-contiguous ``(N, C)``
float32 or float64, ``targets`` C-contiguous int64 ``(N,)`` with every non-ignored target in
``0..C-1``, and the optional outputs have the logits' dtype and the right shapes (``None`` for an
output that is not wanted). The GIL is released while the core computes.
"""
from libc.stdint cimport int64_t
cimport numpy as cnp

cnp.import_array()

cdef extern from "losses.h" namespace "rnnfast":
    double softmax_cross_entropy[T](const T* logits, const int64_t* targets, int64_t n, int64_t c,
                                    int64_t ignore_index, double label_smoothing,
                                    double grad_scale, T* row_loss, T* dlogits) except + nogil


cdef inline void* _ptr(object a):
    """Data pointer of a numpy array, or NULL for None."""
    if a is None:
        return NULL
    return cnp.PyArray_DATA(<cnp.ndarray>a)


def nn_softmax_cross_entropy(cnp.ndarray logits not None, cnp.ndarray targets not None,
                             int64_t ignore_index, double label_smoothing, double grad_scale,
                             row_loss, dlogits):
    """Sum of the row losses; fills ``row_loss`` (N,) and ``dlogits`` (N, C) when given."""
    cdef int64_t n = logits.shape[0]
    cdef int64_t c = logits.shape[1]
    cdef void* x = cnp.PyArray_DATA(logits)
    cdef const int64_t* t = <const int64_t*>cnp.PyArray_DATA(targets)
    cdef void* rl = _ptr(row_loss)
    cdef void* g = _ptr(dlogits)
    cdef double total
    if logits.dtype.num == cnp.NPY_FLOAT32:
        with nogil:
            total = softmax_cross_entropy[float](<const float*>x, t, n, c, ignore_index,
                                                 label_smoothing, grad_scale, <float*>rl,
                                                 <float*>g)
    elif logits.dtype.num == cnp.NPY_FLOAT64:
        with nogil:
            total = softmax_cross_entropy[double](<const double*>x, t, n, c, ignore_index,
                                                  label_smoothing, grad_scale, <double*>rl,
                                                  <double*>g)
    else:
        raise TypeError(f"rnnfast internal error: logits dtype {logits.dtype} reached the kernel")
    return total
