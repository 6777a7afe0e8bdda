"""Gradient clipping with ``torch.nn.utils``' semantics: ``clip_grad_norm``, ``clip_grad_value``.

Both take a model (anything with a flat numpy ``grads`` buffer), a gradient array, or a list of
them, and work in place on the gradient buffers. The norm is one pass per buffer in C++,
accumulated in double and reduced in a fixed order, so it has the same bits for any thread count.
"""
import math
import numbers

import numpy as np

from . import _optim

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _grad_buffers(grads_or_models, fn):
    """Flat, writable, contiguous float32/float64 gradient buffers, pairwise disjoint."""
    items = list(grads_or_models) if isinstance(grads_or_models, (list, tuple)) else [
        grads_or_models]
    bufs = []
    for i, item in enumerate(items):
        if isinstance(item, np.ndarray):
            arr, what = item, f"gradient array {i}"
        elif hasattr(item, "grads"):
            arr, what = item.grads, f"{type(item).__name__}.grads"
        else:
            raise TypeError(f"{fn} takes a model (with a 'grads' buffer), a numpy array or a list "
                            f"of them; got {type(item).__name__}")
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{what} must be a numpy array, got {type(arr).__name__}")
        if arr.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{what} must be float32 or float64, got {arr.dtype}")
        if not arr.flags.c_contiguous:
            raise ValueError(f"{what} must be C-contiguous (it is modified in place)")
        if not arr.flags.writeable:
            raise ValueError(f"{what} is read-only (it is modified in place)")
        bufs.append(arr.reshape(-1))
    for i in range(len(bufs)):
        for j in range(i):
            if np.may_share_memory(bufs[i], bufs[j]):
                raise ValueError(f"{fn}: gradient buffers {j} and {i} overlap (the same gradients "
                                 "listed twice?)")
    return bufs


def _real(value, name):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    return float(value)


def clip_grad_norm(grads_or_models, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale gradients in place so that their joint ``norm_type``-norm is at most ``max_norm``.

    The norm is taken over all the given gradients together (``norm_type``: any positive number,
    or ``math.inf`` for the largest magnitude). Gradients are multiplied by
    ``max_norm / (total_norm + 1e-6)`` when that is below 1 (torch's ``clip_grad_norm_``; a NaN
    norm makes the gradients NaN unless ``error_if_nonfinite``, which raises RuntimeError on a
    NaN or infinite norm and leaves the gradients untouched).

    Returns the total norm BEFORE clipping, as a Python float.
    """
    bufs = _grad_buffers(grads_or_models, "clip_grad_norm")
    max_norm = _real(max_norm, "max_norm")
    if not max_norm >= 0:
        raise ValueError(f"max_norm must be >= 0, got {max_norm}")
    p = _real(norm_type, "norm_type")
    if not p > 0:
        raise ValueError(f"norm_type must be a positive number or math.inf, got {norm_type}")
    if not isinstance(error_if_nonfinite, (bool, np.bool_)):
        raise TypeError(f"error_if_nonfinite must be a bool, got {error_if_nonfinite!r}")
    parts = [_optim.norm_pow_sum(b, p) for b in bufs]
    if math.isinf(p):
        total = 0.0
        for x in parts:  # max that keeps NaN
            total = x if (x != x or x > total) else total
    else:
        s = sum(parts)  # buffer order: fixed
        total = math.sqrt(s) if p == 2.0 else s if p == 1.0 else s ** (1.0 / p)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"The total norm of order {p} for the gradients is non-finite "
                           f"({total}), so it cannot be clipped. To scale the gradients by the "
                           "non-finite norm anyway, set error_if_nonfinite=False")
    coef = max_norm / (total + 1e-6)
    if coef < 1.0 or math.isnan(coef):
        for b in bufs:
            _optim.scale(b, coef)
    return total


def clip_grad_value(grads_or_models, clip_value):
    """Clamp every gradient element in place to ``[-clip_value, clip_value]`` (NaN stays NaN)."""
    bufs = _grad_buffers(grads_or_models, "clip_grad_value")
    c = _real(clip_value, "clip_value")
    if not c >= 0:
        raise ValueError(f"clip_value must be >= 0, got {clip_value}")
    for b in bufs:
        _optim.clamp(b, -c, c)
