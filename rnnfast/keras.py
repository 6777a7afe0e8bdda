"""Build rnnfast models from the weight arrays of Keras 3 recurrent layers.

Keras itself is never imported: pass the arrays as the layer stores them
(``layer.get_weights()`` gives ``[kernel, recurrent_kernel, bias]``, or just the first two with
``use_bias=False``), so ``from_keras_lstm(*layer.get_weights())`` works.

Keras lays weights out as ``x @ kernel``: ``kernel`` ``(input_dim, G*units)``,
``recurrent_kernel`` ``(units, G*units)``, gate blocks side by side on the last axis. PyTorch
(and rnnfast) store ``W @ x``: ``(G*units, input_dim)``. So every import is a transpose plus, for
the GRU, a gate reorder:

- LSTM: Keras gates i, f, c, o are PyTorch's i, f, g, o. One bias ``(4*units,)`` goes to
  ``bias_ih``; ``bias_hh`` is zero.
- GRU (``reset_after=True``, Keras 3's default): Keras gates z, r, h become PyTorch's r, z, n;
  bias ``(2, 3*units)`` is (input bias, recurrent bias) = (``bias_ih``, ``bias_hh``). The math
  is then PyTorch's: ``n = tanh(W_n x + b_in + r * (U_n h + b_hn))``,
  ``h' = z * h + (1 - z) * n``.
- GRU (``reset_after=False``): same gate reorder; the reset gate scales the state before the
  recurrent product, ``n = tanh(W_n x + b_n + U_n (r * h))``, which is
  ``rnnfast.GRU(linear_before_reset=False)``. One bias ``(3*units,)`` goes to ``bias_ih``;
  ``bias_hh`` is zero.
- SimpleRNN: one gate; activation ``tanh`` or ``relu``.

Models are single-layer, unidirectional and batch-first by default, as Keras' inputs are
``(batch, time, features)``. Their initial state is zeros unless given, as in Keras.
"""
import numpy as np

from . import _validate as V
from ._rnn import GRU, LSTM, RNN

__all__ = ["from_keras_lstm", "from_keras_gru", "from_keras_simple_rnn"]


def _dtype(dtype, kernel):
    """The model dtype: as given, else float64 for float64 weights and float32 for the rest."""
    if dtype is not None:
        return V.model_dtype(dtype)
    kind = np.asarray(kernel).dtype
    return np.dtype(np.float64) if kind == np.float64 else np.dtype(np.float32)


def _kernels(kernel, recurrent_kernel, gates, dtype, layer):
    """Validate and convert the two kernels; return them with (input_dim, units)."""
    k = V.float_array(kernel, "kernel", dtype)
    if k.ndim != 2 or k.shape[1] == 0 or k.shape[1] % gates:
        raise ValueError(f"{layer} kernel must be 2-D (input_dim, {gates}*units), got shape "
                         f"{k.shape}")
    input_dim, units = k.shape[0], k.shape[1] // gates
    r = V.float_array(recurrent_kernel, "recurrent_kernel", dtype)
    V.check_shape(r, (units, gates * units), f"{layer} recurrent_kernel",
                  f"(units, {gates}*units) with units={units} from the kernel")
    if input_dim == 0:
        raise ValueError(f"{layer} kernel has input_dim 0 (shape {k.shape})")
    return k, r, input_dim, units


def _check_activation(name, value, supported, layer):
    if value not in supported:
        raise NotImplementedError(f"{layer} with {name}={value!r} is not supported by rnnfast "
                                  f"(supported: {', '.join(map(repr, supported))})")


def _gate_blocks(w, order, units):
    """Reorder the gate blocks along axis 0 of a PyTorch-layout ``(G*units, ...)`` array."""
    return np.concatenate([w[g * units:(g + 1) * units] for g in order], axis=0)


def from_keras_lstm(kernel, recurrent_kernel, bias=None, *, activation="tanh",
                    recurrent_activation="sigmoid", batch_first=True, dtype=None):
    """An ``rnnfast.LSTM`` equal to a Keras ``LSTM`` layer with these weights.

    kernel ``(input_dim, 4*units)``, recurrent_kernel ``(units, 4*units)``, bias ``(4*units,)`` or
    ``None`` (``use_bias=False``); gate order i, f, c, o. activation / recurrent_activation: the
    layer's; only Keras' defaults ``"tanh"`` / ``"sigmoid"`` are computable here (older Keras
    defaulted to ``"hard_sigmoid"``, which is refused). dtype: ``None`` = float64 for float64
    weights, else float32.
    """
    _check_activation("activation", activation, ("tanh",), "LSTM")
    _check_activation("recurrent_activation", recurrent_activation, ("sigmoid",), "LSTM")
    dtype = _dtype(dtype, kernel)
    k, r, input_dim, units = _kernels(kernel, recurrent_kernel, 4, dtype, "LSTM")
    state = {"weight_ih_l0": k.T, "weight_hh_l0": r.T}
    if bias is not None:
        b = V.float_array(bias, "bias", dtype)
        V.check_shape(b, (4 * units,), "LSTM bias", f"(4*units,) with units={units}")
        state["bias_ih_l0"] = b
        state["bias_hh_l0"] = np.zeros_like(b)
    model = LSTM(input_size=input_dim, hidden_size=units, bias=bias is not None,
                 batch_first=batch_first, dtype=dtype)
    model.load_state_dict(state)
    return model


# Keras GRU blocks are (z, r, h); PyTorch's are (r, z, n): PyTorch block g is Keras block
# _GRU_ORDER[g].
_GRU_ORDER = (1, 0, 2)


def from_keras_gru(kernel, recurrent_kernel, bias=None, reset_after=True, *, activation="tanh",
                   recurrent_activation="sigmoid", batch_first=True, dtype=None):
    """An ``rnnfast.GRU`` equal to a Keras ``GRU`` layer with these weights.

    kernel ``(input_dim, 3*units)``, recurrent_kernel ``(units, 3*units)`` (gate order z, r, h),
    bias or ``None`` (``use_bias=False``).
    reset_after: the layer's. ``True`` (Keras 3's default, PyTorch's formulation): bias
    ``(2, 3*units)`` (input bias row, recurrent bias row); the model is a plain ``GRU``.
    ``False``: Keras applies the reset gate before the recurrent product,
    ``tanh(W_h x + b_h + U_h (r * h))``, and has one bias ``(3*units,)``; the model is a
    ``GRU(linear_before_reset=False)`` with that bias as ``bias_ih`` and ``bias_hh`` zero.
    """
    if not isinstance(reset_after, (bool, np.bool_)):
        raise TypeError(f"reset_after must be a bool, got {reset_after!r}")
    _check_activation("activation", activation, ("tanh",), "GRU")
    _check_activation("recurrent_activation", recurrent_activation, ("sigmoid",), "GRU")
    dtype = _dtype(dtype, kernel)
    k, r, input_dim, units = _kernels(kernel, recurrent_kernel, 3, dtype, "GRU")
    state = {"weight_ih_l0": _gate_blocks(k.T, _GRU_ORDER, units),
             "weight_hh_l0": _gate_blocks(r.T, _GRU_ORDER, units)}
    if bias is not None and reset_after:
        b = V.float_array(bias, "bias", dtype)
        V.check_shape(b, (2, 3 * units), "GRU bias",
                      f"(2, 3*units) (input bias, recurrent bias; reset_after=True) "
                      f"with units={units}")
        state["bias_ih_l0"] = _gate_blocks(b[0], _GRU_ORDER, units)
        state["bias_hh_l0"] = _gate_blocks(b[1], _GRU_ORDER, units)
    elif bias is not None:
        b = V.float_array(bias, "bias", dtype)
        V.check_shape(b, (3 * units,), "GRU bias",
                      f"(3*units,) (one bias; reset_after=False) with units={units}")
        state["bias_ih_l0"] = _gate_blocks(b, _GRU_ORDER, units)
        state["bias_hh_l0"] = np.zeros_like(b)
    model = GRU(input_size=input_dim, hidden_size=units, bias=bias is not None,
                batch_first=batch_first, dtype=dtype, linear_before_reset=bool(reset_after))
    model.load_state_dict(state)
    return model


def from_keras_simple_rnn(kernel, recurrent_kernel, bias=None, activation="tanh", *,
                          batch_first=True, dtype=None):
    """An ``rnnfast.RNN`` equal to a Keras ``SimpleRNN`` layer with these weights:
    ``h' = activation(x @ kernel + h @ recurrent_kernel + bias)``.

    kernel ``(input_dim, units)``, recurrent_kernel ``(units, units)``, bias ``(units,)`` or
    ``None``; activation ``"tanh"`` or ``"relu"`` (others raise ``NotImplementedError``).
    """
    _check_activation("activation", activation, ("tanh", "relu"), "SimpleRNN")
    dtype = _dtype(dtype, kernel)
    k, r, input_dim, units = _kernels(kernel, recurrent_kernel, 1, dtype, "SimpleRNN")
    state = {"weight_ih_l0": k.T, "weight_hh_l0": r.T}
    if bias is not None:
        b = V.float_array(bias, "bias", dtype)
        V.check_shape(b, (units,), "SimpleRNN bias", f"(units,) with units={units}")
        state["bias_ih_l0"] = b
        state["bias_hh_l0"] = np.zeros_like(b)
    model = RNN(input_size=input_dim, hidden_size=units, nonlinearity=activation,
                bias=bias is not None, batch_first=batch_first, dtype=dtype)
    model.load_state_dict(state)
    return model
