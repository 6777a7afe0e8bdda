"""Initialisation schemes for the recurrent models (``RNN``/``LSTM``/``GRU``) and ``Linear``.

Each function rewrites parameters in place through the model's flat buffer, marks them changed
(so packed kernel weights are rebuilt) and returns the model, so calls chain::

    init.orthogonal(init.xavier_uniform(lstm, seed=0), seed=1)
    init.forget_bias(lstm, 1.0)

``seed`` is an int, ``None`` (fresh entropy) or a ``numpy.random.Generator`` (used as is, so one
generator can drive several calls). Recurrent weights are treated gate by gate: a weight
``(G*H, in)`` is G blocks ``(H, in)`` (LSTM i, f, g, o; GRU r, z, n), each of which is its own
matrix for fan and orthogonality, as is common practice (Keras, and PyTorch users who init per
gate); biases are left alone unless a function says otherwise.
"""
import numbers

import numpy as np

from . import _validate as V

from ._rnn import _RNNBase
from .layers import Embedding, Linear

__all__ = ["pytorch_default", "xavier_uniform", "orthogonal", "forget_bias", "zero_bias"]


def _gain(gain):
    if isinstance(gain, (bool, np.bool_)) or not isinstance(gain, numbers.Real):
        raise TypeError(f"gain must be a positive number, got {gain!r}")
    if not np.isfinite(gain) or gain <= 0:
        raise ValueError(f"gain must be a positive finite number, got {gain}")
    return float(gain)


def _check(model, kinds, what, accepted):
    if not isinstance(model, kinds):
        raise TypeError(f"{what} applies to {accepted}, got {type(model).__name__}")


def _writable(model):
    """{name: writable view into model._param_buffer()} with the shapes of named_parameters().

    Parameters lie back to back in named_parameters() order; each view is checked to sit where
    the model's own read-only view does, so a layout change cannot go unnoticed.
    """
    buf = model._param_buffer()
    views, off = {}, 0
    for name, ro in model.named_parameters():
        w = buf[off:off + ro.size].reshape(ro.shape)
        if w.__array_interface__["data"][0] != ro.__array_interface__["data"][0]:
            raise RuntimeError(f"rnnfast internal error: parameter {name!r} is not where the flat "
                               f"layout puts it")
        views[name] = w
        off += ro.size
    return views


def _gate_blocks(model, name, w):
    """Gate blocks (H, in) of a recurrent weight, or the whole matrix for a Linear weight."""
    if isinstance(model, _RNNBase):
        H = model.hidden_size
        return [w[g * H:(g + 1) * H] for g in range(model._gates)]
    return [w]


def _weights(model, which):
    """Names of the weight matrices an init touches: recurrent weight_ih/_hh, or Linear weight."""
    prefixes = {"all": ("weight_ih", "weight_hh"), "ih": ("weight_ih",), "hh": ("weight_hh",)}
    if which not in prefixes:
        raise ValueError(f"which must be 'all', 'ih' or 'hh', got {which!r}")
    if isinstance(model, Linear):
        return ["weight"]
    return [n for n, _ in model.named_parameters() if n.startswith(prefixes[which])]


def pytorch_default(model, seed=None):
    """PyTorch's default initialisation: recurrent models uniform in ±1/sqrt(hidden_size) (every
    parameter), Linear uniform in ±1/sqrt(in_features) (weight and bias), Embedding standard
    normal with a zero padding row."""
    _check(model, (_RNNBase, Linear, Embedding), "pytorch_default",
           "RNN, LSTM, GRU, Linear or Embedding")
    rng = V.rng(seed)
    buf = model._param_buffer()
    if isinstance(model, Embedding):
        buf[:] = rng.standard_normal(buf.size)
        if model.padding_idx is not None:
            _writable(model)["weight"][model.padding_idx] = 0
    else:
        fan = model.hidden_size if isinstance(model, _RNNBase) else model.in_features
        k = 1.0 / np.sqrt(fan)
        buf[:] = rng.uniform(-k, k, size=buf.size)
    model._mark_params_changed()
    return model


def xavier_uniform(model, gain=1.0, which="all", seed=None):
    """Glorot/Xavier uniform: each gate block ``(H, in)`` uniform in
    ``±gain * sqrt(6 / (in + H))`` (fans of the block, not of the stacked matrix). ``which``:
    ``'all'`` (weight_ih and weight_hh), ``'ih'`` or ``'hh'``. For Linear: the weight with
    ``±gain * sqrt(6 / (in_features + out_features))``. Biases are untouched."""
    _check(model, (_RNNBase, Linear), "xavier_uniform", "RNN, LSTM, GRU or Linear")
    gain, rng = _gain(gain), V.rng(seed)
    views = _writable(model)
    for name in _weights(model, which):
        for block in _gate_blocks(model, name, views[name]):
            fan_out, fan_in = block.shape
            bound = gain * np.sqrt(6.0 / (fan_in + fan_out))
            block[...] = rng.uniform(-bound, bound, size=block.shape)
    model._mark_params_changed()
    return model


def _orthogonal_matrix(rows, cols, rng):
    """A (rows, cols) matrix with orthonormal rows or columns (whichever are fewer), uniformly
    distributed: QR of a Gaussian matrix with R's diagonal signs folded into Q."""
    tall = rows >= cols
    a = rng.standard_normal((rows, cols) if tall else (cols, rows))
    q, r = np.linalg.qr(a)
    q = q * np.where(np.diag(r) < 0, -1.0, 1.0)  # the sign fix makes the distribution uniform
    return q if tall else q.T


def orthogonal(model, gain=1.0, seed=None):
    """Orthogonal recurrent weights: each gate block ``(H, H)`` of every ``weight_hh`` becomes
    ``gain`` times an orthogonal matrix (independent per block, layer and direction). For Linear:
    the weight becomes (semi-)orthogonal, rows or columns orthonormal. Input weights and biases are
    untouched."""
    _check(model, (_RNNBase, Linear), "orthogonal", "RNN, LSTM, GRU or Linear")
    gain, rng = _gain(gain), V.rng(seed)
    views = _writable(model)
    for name in _weights(model, "hh"):
        for block in _gate_blocks(model, name, views[name]):
            block[...] = gain * _orthogonal_matrix(block.shape[0], block.shape[1], rng)
    model._mark_params_changed()
    return model


def forget_bias(model, value=1.0):
    """LSTM forget-gate bias: the forget slice ``[H:2H]`` of every ``bias_ih`` set to ``value``
    and of every ``bias_hh`` to 0, so the gate's effective bias (their sum) is exactly ``value``
    (Jozefowicz et al. 2015 recommend 1). Other gates' biases are untouched."""
    from ._rnn import LSTM

    if not isinstance(model, LSTM):
        raise TypeError(f"forget_bias applies to LSTM models, got {type(model).__name__}")
    if not model.bias:
        raise ValueError("forget_bias needs a model with biases (this LSTM has bias=False)")
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"value must be a number, got {value!r}")
    if not np.isfinite(value):
        raise ValueError(f"value must be finite, got {value}")
    H = model.hidden_size
    for name, view in _writable(model).items():
        if name.startswith("bias_ih"):
            view[H:2 * H] = value
        elif name.startswith("bias_hh"):
            view[H:2 * H] = 0
    model._mark_params_changed()
    return model


def zero_bias(model):
    """Every bias of a recurrent model or Linear set to 0."""
    _check(model, (_RNNBase, Linear), "zero_bias", "RNN, LSTM, GRU or Linear")
    for name, view in _writable(model).items():
        if name.startswith("bias"):
            view[...] = 0
    model._mark_params_changed()
    return model
