"""Loss functions for training, each returning the loss AND its gradient: ``(loss, grad)``.

There is no autograd here, so a loss is one call that hands back what the next backward needs::

    loss, dlogits = losses.cross_entropy(logits, targets)      # logits (T, B, C), targets (T, B)
    dy = head.backward(head_cache, dlogits)                    # and on down the model

* ``loss`` is a Python float for ``reduction='mean'`` or ``'sum'``, and an array shaped like the
  per-element losses for ``'none'``.
* ``grad`` has the shape and dtype of the prediction (logits / pred) and is the gradient of the
  returned loss; for ``'none'`` it is the gradient of ``loss.sum()`` (each element's own gradient).
  ``grad=False`` skips it (evaluation) and returns ``None`` in its place.
* ``reduction`` follows PyTorch: ``'mean'`` divides by the number of elements that count (for
  cross-entropy: the targets that are not ignored or masked), ``'sum'`` adds, ``'none'`` keeps them.
  A mean over nothing is NaN with a zero gradient, as in PyTorch.
* ``mask`` (optional, bool): ``False`` marks padding that contributes neither loss nor gradient nor
  to the mean's count. :func:`sequence_mask` builds one from sequence lengths.

Predictions are float32 or float64 (float16 is computed in float32); the gradient comes back in that
dtype. Sums are accumulated in float64.
"""
import numbers

import numpy as np

from . import _nn
from . import _validate as V

__all__ = ["cross_entropy", "mse_loss", "binary_cross_entropy_with_logits", "sequence_mask"]

_REDUCTIONS = ("mean", "sum", "none")


# ------------------------------------------------------------------------------ argument checks
def _to_numpy(value):
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        return value.detach().cpu().numpy()
    return value


def _float_input(value, name):
    """C-contiguous float32/float64 array (float64 stays float64, smaller floats become float32)."""
    value = _to_numpy(value)
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged nested lists and the like
        raise TypeError(f"{name} must be a numeric array, got {type(value).__name__}: {exc}") from exc
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array, got dtype {arr.dtype}")
    dtype = np.float64 if arr.dtype.itemsize >= 8 else np.float32
    return np.asarray(arr, dtype=dtype, order="C")  # keeps 0-d as 0-d


def _numeric_like(value, name, dtype, shape, shape_name):
    """Real numbers (float, int or bool) as an array of ``dtype`` with exactly ``shape``."""
    value = _to_numpy(value)
    try:
        arr = np.asarray(value)
    except Exception as exc:
        raise TypeError(f"{name} must be a numeric array, got {type(value).__name__}: {exc}") from exc
    if arr.dtype.kind not in "fiub":
        raise TypeError(f"{name} must be a real numeric array, got dtype {arr.dtype}")
    if arr.shape != tuple(shape):
        raise ValueError(f"{name} must have the shape of {shape_name} {tuple(shape)}, got {arr.shape}")
    return np.asarray(arr, dtype=dtype, order="C")  # keeps 0-d as 0-d


def _reduction(reduction):
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    return reduction


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


def _mask(mask, shape, what):
    """A bool mask whose shape is ``shape`` or a leading part of it (it then covers trailing axes)."""
    if mask is None:
        return None
    arr = np.asarray(_to_numpy(mask))
    if arr.dtype.kind not in "biu":
        raise TypeError(f"mask must be bool (or 0/1 integers), got dtype {arr.dtype}")
    if arr.dtype.kind != "b":
        if arr.size and not np.all((arr == 0) | (arr == 1)):
            raise ValueError("mask must hold only 0 and 1 (or be bool), got other values")
        arr = arr.astype(bool)
    if arr.shape != tuple(shape)[:arr.ndim]:
        raise ValueError(f"mask must have the shape of {what} {tuple(shape)} or a leading part of "
                         f"it, got {arr.shape}")
    return arr


def sequence_mask(lengths, seq_len, batch_first=False):
    """Bool mask of the valid steps of a padded batch: ``(seq_len, B)``, or ``(B, seq_len)`` when
    ``batch_first``; element ``[t, b]`` is True when ``t < lengths[b]``."""
    seq_len = V.positive_int(seq_len, "seq_len")
    batch_first = _flag(batch_first, "batch_first")
    lengths = np.asarray(_to_numpy(lengths))
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be a 1-D array (one length per batch row), got shape "
                         f"{lengths.shape}")
    lens = V.lengths_array(lengths, lengths.shape[0], seq_len)
    mask = np.arange(seq_len)[:, None] < lens[None, :]
    return np.ascontiguousarray(mask.T) if batch_first else mask


def _finish(total, count, per_elem, grad, reduction):
    """``(loss, grad)`` for the reduction; ``grad`` already carries the reduction's scale."""
    if reduction == "none":
        return per_elem, grad
    if reduction == "sum":
        return float(total), grad
    return (float(total) / count if count else float("nan")), grad


# -------------------------------------------------------------------------------- cross-entropy
def cross_entropy(logits, targets, *, ignore_index=-100, mask=None, reduction="mean",
                  label_smoothing=0.0, grad=True):
    """Softmax cross-entropy of class scores against integer class targets, and its gradient.

    logits: ``(..., C)`` float array (classes on the LAST axis, e.g. ``(T, B, C)`` from a per-step
        head; PyTorch's ``cross_entropy`` wants them on axis 1 instead).
    targets: integer array of shape ``logits.shape[:-1]``; every entry is a class in ``0..C-1`` or
        ``ignore_index``.
    ignore_index: targets equal to it contribute nothing (PyTorch's default -100).
    mask: optional bool array of ``targets``' shape (or a leading part); ``False`` = ignored.
    reduction: ``'mean'`` (over the targets that count), ``'sum'`` or ``'none'`` (per position,
        0 where ignored).
    label_smoothing: ``eps`` in [0, 1]: the target distribution is ``(1-eps) onehot + eps/C``
        (PyTorch's definition).
    grad: also return ``d loss / d logits`` (``softmax - target distribution``, scaled by the
        reduction; zero rows where ignored).

    Returns ``(loss, dlogits)``. Computed by a fused C++ kernel, one pass per row over the logits
    (threads over rows; the loss is summed in a fixed order, so any thread count gives the same
    bits). Rows whose logits hold NaN or +inf (or are all -inf) get a NaN loss and gradient.
    """
    logits = _float_input(logits, "logits")
    if logits.ndim < 1:
        raise ValueError("logits must have a class axis (shape (..., C)), got a 0-d array")
    C = logits.shape[-1]
    if C < 1:
        raise ValueError(f"logits must have at least one class (last axis), got shape {logits.shape}")
    rows_shape = logits.shape[:-1]
    if isinstance(ignore_index, (bool, np.bool_)) or not isinstance(ignore_index, numbers.Integral):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    ignore_index = int(ignore_index)
    if isinstance(label_smoothing, (bool, np.bool_)) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}")
    eps = float(label_smoothing)
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing}")
    reduction = _reduction(reduction)
    grad = _flag(grad, "grad")

    t = np.asarray(_to_numpy(targets))
    if t.dtype.kind not in "iu":
        raise TypeError(f"targets must be integer class indices, got dtype {t.dtype}")
    if t.shape != rows_shape:
        raise ValueError(f"targets must have shape {rows_shape} (logits' shape without the class "
                         f"axis, logits {logits.shape}), got {t.shape}")
    t = np.array(t, dtype=np.int64, order="C")  # a copy: masked rows are rewritten below
    m = _mask(mask, rows_shape, "targets")
    if m is not None:
        t[~np.broadcast_to(m.reshape(m.shape + (1,) * (t.ndim - m.ndim)), t.shape)] = ignore_index
    counted = t != ignore_index
    bad = counted & ((t < 0) | (t >= C))
    if bad.any():
        where = [tuple(int(i) for i in ix) for ix in np.argwhere(bad)[:3]]
        raise ValueError(f"targets must lie in 0..{C - 1} (C={C} classes) or equal "
                         f"ignore_index={ignore_index}; got {sorted(set(t[bad].tolist()))[:5]} "
                         f"at positions {where}")
    count = int(np.count_nonzero(counted))

    n = int(np.prod(rows_shape, dtype=np.int64))
    x2 = logits.reshape(n, C)
    t1 = t.reshape(n)
    row_loss = np.empty(n, dtype=logits.dtype) if reduction == "none" else None
    dlogits = np.empty_like(logits) if grad else None
    if reduction == "mean":
        scale = 1.0 / count if count else 0.0
    else:
        scale = 1.0
    total = _nn.nn_softmax_cross_entropy(x2, t1, ignore_index, eps, scale, row_loss,
                                         None if dlogits is None else dlogits.reshape(n, C))
    per_elem = row_loss.reshape(rows_shape) if row_loss is not None else None
    return _finish(total, count, per_elem, dlogits, reduction)


# ------------------------------------------------------------------------------------------ MSE
def mse_loss(pred, target, *, mask=None, reduction="mean", grad=True):
    """Mean squared error ``(pred - target)^2`` and its gradient ``2 (pred - target)`` (scaled by
    the reduction).

    pred: float array, any shape; target: numbers of the same shape. mask: optional bool array of
    ``pred``'s shape or a leading part of it (e.g. ``(T, B)`` for ``(T, B, F)``); masked-out
    elements count neither in the loss nor in the mean's denominator.

    Returns ``(loss, dpred)``.
    """
    pred = _float_input(pred, "pred")
    target = _numeric_like(target, "target", pred.dtype, pred.shape, "pred")
    reduction = _reduction(reduction)
    grad = _flag(grad, "grad")
    m = _mask(mask, pred.shape, "pred")
    diff = pred - target
    if m is not None:
        full = np.broadcast_to(m.reshape(m.shape + (1,) * (pred.ndim - m.ndim)), pred.shape)
        diff = np.where(full, diff, pred.dtype.type(0))
        count = int(np.count_nonzero(full))
    else:
        count = pred.size
    sq = diff * diff
    total = sq.sum(dtype=np.float64)
    dpred = None
    if grad:
        scale = 2.0
        if reduction == "mean":
            scale = 2.0 / count if count else 0.0
        dpred = (diff * pred.dtype.type(scale)).astype(pred.dtype, copy=False)
    return _finish(total, count, sq, dpred, reduction)


# ------------------------------------------------------------------------- binary cross-entropy
def binary_cross_entropy_with_logits(logits, targets, *, pos_weight=None, mask=None,
                                     reduction="mean", grad=True):
    """Binary cross-entropy of ``sigmoid(logits)`` against targets in [0, 1], computed from the
    logits without forming the sigmoid (stable for any magnitude)::

        loss = (1 - y) x + w softplus(-x),   w = 1 + (pos_weight - 1) y
        d loss / d x = (1 - y) - w sigmoid(-x)      (= sigmoid(x) - y without pos_weight)

    logits: float array, any shape; targets: numbers of the same shape (bool/int labels are
    accepted). pos_weight: optional weight of the positive term, a number or an array over the
    last axis (PyTorch's ``pos_weight``). mask: as in :func:`mse_loss`.

    Returns ``(loss, dlogits)``.
    """
    x = _float_input(logits, "logits")
    y = _numeric_like(targets, "targets", x.dtype, x.shape, "logits")
    reduction = _reduction(reduction)
    grad = _flag(grad, "grad")
    m = _mask(mask, x.shape, "logits")
    one = x.dtype.type(1)
    w = None
    if pos_weight is not None:
        pw = np.asarray(_to_numpy(pos_weight))
        if pw.dtype.kind not in "fiu":
            raise TypeError(f"pos_weight must be a number or a float array, got dtype {pw.dtype}")
        last = x.shape[-1] if x.ndim else 1
        if pw.ndim > 1 or (pw.ndim == 1 and pw.shape[0] != last):
            raise ValueError(f"pos_weight must be a number or have shape ({last},) (the last axis "
                             f"of logits {x.shape}), got shape {pw.shape}")
        w = one + (pw.astype(x.dtype) - one) * y

    ax = np.abs(x)
    e = np.exp(-ax)                                   # in (0, 1]: never overflows
    softplus_neg = np.maximum(-x, 0) + np.log1p(e)    # softplus(-x) = log(1 + exp(-x))
    loss = (one - y) * x + (softplus_neg if w is None else w * softplus_neg)
    dx = None
    if grad:
        sig_neg = np.where(x >= 0, e / (one + e), one / (one + e))  # sigmoid(-x)
        dx = (one - y) - (sig_neg if w is None else w * sig_neg)
    if m is not None:
        full = np.broadcast_to(m.reshape(m.shape + (1,) * (x.ndim - m.ndim)), x.shape)
        loss = np.where(full, loss, x.dtype.type(0))
        if dx is not None:
            dx = np.where(full, dx, x.dtype.type(0))
        count = int(np.count_nonzero(full))
    else:
        count = x.size
    total = loss.sum(dtype=np.float64)
    if dx is not None and reduction == "mean":
        dx = dx * x.dtype.type(1.0 / count if count else 0.0)
    if dx is not None:
        dx = np.asarray(dx, dtype=x.dtype, order="C")
    return _finish(total, count, np.asarray(loss, dtype=x.dtype, order="C"), dx, reduction)
