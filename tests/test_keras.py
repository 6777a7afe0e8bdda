"""rnnfast.keras: models built from Keras-layout weights compute what Keras' layers compute.

The oracle is a numpy transcription of the Keras 3 cell formulas (LSTMCell, GRUCell,
SimpleRNNCell) written here, on weights laid out as Keras stores them; Keras itself is not
needed. float64, relative error <= 1e-12.
"""
import sys

import numpy as np
import pytest

import rnnfast as rf
from rnnfast.keras import from_keras_gru, from_keras_lstm, from_keras_simple_rnn
from conftest import rel_err

TOL = 1e-12
B, T, F, U = 3, 7, 5, 4


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


# ------------------------------------------------------------------ Keras formulas, batch-major
def keras_lstm(x, kernel, recurrent_kernel, bias=None, h0=None, c0=None):
    """Keras LSTMCell: z = x K + h R + b; gates i, f, c, o side by side on the last axis."""
    u = recurrent_kernel.shape[0]
    h = np.zeros((x.shape[0], u)) if h0 is None else h0
    c = np.zeros((x.shape[0], u)) if c0 is None else c0
    ys = []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent_kernel
        if bias is not None:
            z = z + bias
        i, f = _sigmoid(z[:, :u]), _sigmoid(z[:, u:2 * u])
        g, o = np.tanh(z[:, 2 * u:3 * u]), _sigmoid(z[:, 3 * u:])
        c = f * c + i * g
        h = o * np.tanh(c)
        ys.append(h)
    return np.stack(ys, axis=1), h, c


def keras_gru(x, kernel, recurrent_kernel, bias=None, reset_after=True, h0=None):
    """Keras GRUCell: gates z, r, h; h' = z * h + (1 - z) * hh.

    reset_after=True: bias (2, 3u) = (input, recurrent),
        hh = tanh(x K_h + b_h + r * (h R_h + rb_h)).
    reset_after=False: bias (3u,), hh = tanh(x K_h + b_h + (r * h) R_h).
    """
    u = recurrent_kernel.shape[0]
    h = np.zeros((x.shape[0], u)) if h0 is None else h0
    if bias is None:
        b_in, b_rec = np.zeros(3 * u), np.zeros(3 * u)
    elif reset_after:
        b_in, b_rec = bias[0], bias[1]
    else:
        b_in, b_rec = bias, np.zeros(3 * u)
    ys = []
    for t in range(x.shape[1]):
        mx = x[:, t] @ kernel + b_in
        if reset_after:
            mi = h @ recurrent_kernel + b_rec
            z = _sigmoid(mx[:, :u] + mi[:, :u])
            r = _sigmoid(mx[:, u:2 * u] + mi[:, u:2 * u])
            hh = np.tanh(mx[:, 2 * u:] + r * mi[:, 2 * u:])
        else:
            z = _sigmoid(mx[:, :u] + h @ recurrent_kernel[:, :u])
            r = _sigmoid(mx[:, u:2 * u] + h @ recurrent_kernel[:, u:2 * u])
            hh = np.tanh(mx[:, 2 * u:] + (r * h) @ recurrent_kernel[:, 2 * u:])
        h = z * h + (1 - z) * hh
        ys.append(h)
    return np.stack(ys, axis=1), h


def keras_simple_rnn(x, kernel, recurrent_kernel, bias=None, activation="tanh", h0=None):
    """Keras SimpleRNNCell: h' = act(x K + b + h R)."""
    act = np.tanh if activation == "tanh" else (lambda v: np.maximum(v, 0.0))
    h = np.zeros((x.shape[0], recurrent_kernel.shape[0])) if h0 is None else h0
    ys = []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + h @ recurrent_kernel
        if bias is not None:
            z = z + bias
        h = act(z)
        ys.append(h)
    return np.stack(ys, axis=1), h


# ------------------------------------------------------------------ data in Keras' layout
def _weights(rng, gates, bias_shape):
    kernel = 0.5 * rng.standard_normal((F, gates * U))
    recurrent = 0.5 * rng.standard_normal((U, gates * U))
    bias = None if bias_shape is None else 0.5 * rng.standard_normal(bias_shape)
    return kernel, recurrent, bias


def _x(rng):
    return rng.standard_normal((B, T, F))


# ------------------------------------------------------------------ tests
@pytest.mark.parametrize("use_bias", [True, False])
def test_lstm_matches_keras_formulas(use_bias):
    rng = np.random.default_rng(0)
    k, r, b = _weights(rng, 4, (4 * U,) if use_bias else None)
    x = _x(rng)
    h0, c0 = rng.standard_normal((B, U)), rng.standard_normal((B, U))
    m = from_keras_lstm(k, r, b)
    assert isinstance(m, rf.LSTM) and m.batch_first and m.bias == use_bias
    assert (m.input_size, m.hidden_size, m.dtype) == (F, U, np.float64)
    for init in (None, (h0, c0)):
        y_ref, h_ref, c_ref = keras_lstm(x, k, r, b, *(init or (None, None)))
        hx = None if init is None else (h0[None], c0[None])
        y, (h, c) = m(x, hx)
        for got, ref, what in ((y, y_ref, "y"), (h[0], h_ref, "h"), (c[0], c_ref, "c")):
            assert rel_err(got, ref) <= TOL, f"{what}: {rel_err(got, ref):.2e}"


@pytest.mark.parametrize("use_bias", [True, False])
def test_gru_reset_after_matches_keras_formulas(use_bias):
    rng = np.random.default_rng(1)
    k, r, b = _weights(rng, 3, (2, 3 * U) if use_bias else None)
    x, h0 = _x(rng), rng.standard_normal((B, U))
    m = from_keras_gru(k, r, b, reset_after=True)
    assert isinstance(m, rf.GRU) and m.bias == use_bias
    for init in (None, h0):
        y_ref, h_ref = keras_gru(x, k, r, b, True, init)
        y, h = m(x, None if init is None else init[None])
        assert rel_err(y, y_ref) <= TOL, rel_err(y, y_ref)
        assert rel_err(h[0], h_ref) <= TOL, rel_err(h[0], h_ref)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("use_bias", [True, False])
def test_simple_rnn_matches_keras_formulas(activation, use_bias):
    rng = np.random.default_rng(2)
    k, r, b = _weights(rng, 1, (U,) if use_bias else None)
    x, h0 = _x(rng), rng.standard_normal((B, U))
    m = from_keras_simple_rnn(k, r, b, activation=activation)
    assert isinstance(m, rf.RNN) and m.nonlinearity == activation
    for init in (None, h0):
        y_ref, h_ref = keras_simple_rnn(x, k, r, b, activation, init)
        if activation == "relu":
            assert (y_ref == 0).any() and (y_ref > 0).any(), "data must exercise the clamp"
        y, h = m(x, None if init is None else init[None])
        assert rel_err(y, y_ref) <= TOL, rel_err(y, y_ref)
        assert rel_err(h[0], h_ref) <= TOL, rel_err(h[0], h_ref)


def test_keras_lstm_bias_goes_to_bias_ih_and_gates_keep_their_order():
    rng = np.random.default_rng(3)
    k, r, b = _weights(rng, 4, (4 * U,))
    sd = from_keras_lstm(k, r, b).state_dict()
    assert np.array_equal(sd["weight_ih_l0"], k.T) and np.array_equal(sd["weight_hh_l0"], r.T)
    assert np.array_equal(sd["bias_ih_l0"], b) and not sd["bias_hh_l0"].any()


def test_keras_gru_gates_are_reordered_z_r_h_to_r_z_n():
    rng = np.random.default_rng(4)
    k, r, b = _weights(rng, 3, (2, 3 * U))
    sd = from_keras_gru(k, r, b).state_dict()
    z, rr, n = slice(0, U), slice(U, 2 * U), slice(2 * U, 3 * U)
    for name, src in (("weight_ih_l0", k.T), ("weight_hh_l0", r.T), ("bias_ih_l0", b[0]),
                      ("bias_hh_l0", b[1])):
        assert np.array_equal(sd[name], np.concatenate([src[rr], src[z], src[n]])), name


def test_time_major_option_and_dtype_default():
    rng = np.random.default_rng(5)
    k, r, b = _weights(rng, 3, (2, 3 * U))
    x = _x(rng)
    y_bf, _ = from_keras_gru(k, r, b)(x)
    y_tf, _ = from_keras_gru(k, r, b, batch_first=False)(x.transpose(1, 0, 2))
    assert np.array_equal(y_tf.transpose(1, 0, 2), y_bf)
    m32 = from_keras_gru(k.astype(np.float32), r.astype(np.float32), b.astype(np.float32))
    assert m32.dtype == np.float32
    assert rel_err(m32(x)[0], keras_gru(x, k, r, b)[0]) <= 1e-5
    assert from_keras_lstm(*_weights(rng, 4, (4 * U,)), dtype="float32").dtype == np.float32


@pytest.mark.parametrize("use_bias", [True, False])
def test_gru_reset_before_matches_keras_formulas(use_bias):
    rng = np.random.default_rng(6)
    k, r, b = _weights(rng, 3, (3 * U,) if use_bias else None)
    x, h0 = _x(rng), rng.standard_normal((B, U))
    m = from_keras_gru(k, r, b, reset_after=False)
    assert isinstance(m, rf.GRU) and m.linear_before_reset is False and m.bias == use_bias
    for init in (None, h0):
        y_ref, h_ref = keras_gru(x, k, r, b, False, init)
        y, h = m(x, None if init is None else init[None])
        assert rel_err(y, y_ref) <= TOL, rel_err(y, y_ref)
        assert rel_err(h[0], h_ref) <= TOL, rel_err(h[0], h_ref)
    # the two Keras formulations differ materially on the same weights, so this test would catch
    # a model that ignored reset_after
    if use_bias:
        after = keras_gru(x, k, r, np.stack([b, np.zeros_like(b)]), reset_after=True)[0]
        assert np.max(np.abs(y_ref - after)) > 1e-2
    m32 = from_keras_gru(*(a.astype(np.float32) for a in (k, r)),
                         None if b is None else b.astype(np.float32), reset_after=False)
    assert m32.dtype == np.float32
    assert rel_err(m32(x)[0], keras_gru(x, k, r, b, False)[0]) <= 1e-5


def test_keras_gru_reset_before_bias_goes_to_bias_ih_reordered():
    rng = np.random.default_rng(8)
    k, r, b = _weights(rng, 3, (3 * U,))
    sd = from_keras_gru(k, r, b, reset_after=False).state_dict()
    z, rr, n = slice(0, U), slice(U, 2 * U), slice(2 * U, 3 * U)
    for name, src in (("weight_ih_l0", k.T), ("weight_hh_l0", r.T), ("bias_ih_l0", b)):
        assert np.array_equal(sd[name], np.concatenate([src[rr], src[z], src[n]])), name
    assert not sd["bias_hh_l0"].any()
    with pytest.raises(ValueError, match=r"\(3\*units,\).*reset_after=False.*\(2, 12\)"):
        from_keras_gru(k, r, np.zeros((2, 3 * U)), reset_after=False)


def test_bad_arrays_and_options_are_named():
    rng = np.random.default_rng(7)
    k, r, b = _weights(rng, 4, (4 * U,))
    with pytest.raises(ValueError, match=r"kernel must be 2-D \(input_dim, 4\*units\).*\(5, 15\)"):
        from_keras_lstm(k[:, :15], r, b)
    with pytest.raises(ValueError, match=r"recurrent_kernel.*\(4, 16\).*\(4, 12\)"):
        from_keras_lstm(k, r[:, :12], b)
    with pytest.raises(ValueError, match=r"bias.*\(16,\).*\(15,\)"):
        from_keras_lstm(k, r, b[:15])
    kg, rg, _ = _weights(rng, 3, None)
    with pytest.raises(ValueError, match=r"\(2, 3\*units\).*\(12,\)"):
        from_keras_gru(kg, rg, np.zeros(3 * U))
    with pytest.raises(TypeError, match="floating-point"):
        from_keras_simple_rnn(np.ones((F, U), dtype=np.int64), np.eye(U), None)
    with pytest.raises(NotImplementedError, match="activation='sigmoid'"):
        from_keras_simple_rnn(k[:, :U], r[:, :U], None, activation="sigmoid")
    with pytest.raises(NotImplementedError, match="recurrent_activation='hard_sigmoid'"):
        from_keras_lstm(k, r, b, recurrent_activation="hard_sigmoid")
    with pytest.raises(TypeError, match="reset_after must be a bool"):
        from_keras_gru(kg, rg, None, reset_after="yes")


def test_keras_is_not_imported():
    from_keras_simple_rnn(np.eye(3), np.eye(3))
    assert "keras" not in sys.modules and "tensorflow" not in sys.modules
    assert rf.keras.from_keras_lstm is from_keras_lstm
