"""Public API semantics of rnnfast: parameter naming and storage, state_dict
round trips, seeding, variable lengths, batch_first, dtypes, train/inference
consistency and build info.

torch is deliberately NOT imported here: the expected PyTorch parameter names
are written out by hand, and behaviour is checked against rnnfast itself (and
a tiny numpy reference for the Elman RNN).
"""

import numpy as np
import pytest

import rnnfast as rf

try:  # numpy >= 2
    from numpy.lib.array_utils import byte_bounds
except ImportError:  # pragma: no cover - numpy 1.x
    byte_bounds = np.byte_bounds

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")
GATES = {"lstm": 4, "gru": 3, "rnn_tanh": 1, "rnn_relu": 1}


def build(cell, input_size, hidden_size, **kw):
    if cell == "lstm":
        return rf.LSTM(input_size, hidden_size, **kw)
    if cell == "gru":
        return rf.GRU(input_size, hidden_size, **kw)
    if cell == "rnn_tanh":
        return rf.RNN(input_size, hidden_size, nonlinearity="tanh", **kw)
    if cell == "rnn_relu":
        return rf.RNN(input_size, hidden_size, nonlinearity="relu", **kw)
    raise AssertionError(cell)


def call(m, cell, x, hx=None, lengths=None):
    y, st = m(x, hx=hx, lengths=lengths)
    if cell == "lstm":
        assert isinstance(st, tuple) and len(st) == 2
        return y, st[0], st[1]
    return y, st, None


def make_hx(cell, shape, rng, dtype=np.float64):
    h0 = (0.5 * rng.standard_normal(shape)).astype(dtype)
    if cell == "lstm":
        return h0, (0.5 * rng.standard_normal(shape)).astype(dtype)
    return h0


def hx_rows(cell, hx, b):
    """The hidden state of batch row b alone (keeps the batch axis)."""
    if hx is None:
        return None
    if cell == "lstm":
        return hx[0][:, b:b + 1], hx[1][:, b:b + 1]
    return hx[:, b:b + 1]


def state_of(cell, st):
    return (st[0], st[1]) if cell == "lstm" else (st, None)


@pytest.fixture(params=CELLS)
def cell(request):
    return request.param


# --------------------------------------------------------------------------
# state_dict naming (written out by hand from the PyTorch convention)
# --------------------------------------------------------------------------
EXPECTED_KEYS = {
    # (cell, num_layers, bidirectional, bias)
    ("lstm", 1, False, True): [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
    ],
    ("lstm", 2, True, True): [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
        "weight_ih_l0_reverse", "weight_hh_l0_reverse",
        "bias_ih_l0_reverse", "bias_hh_l0_reverse",
        "weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1",
        "weight_ih_l1_reverse", "weight_hh_l1_reverse",
        "bias_ih_l1_reverse", "bias_hh_l1_reverse",
    ],
    ("lstm", 2, False, False): [
        "weight_ih_l0", "weight_hh_l0", "weight_ih_l1", "weight_hh_l1",
    ],
    ("gru", 1, True, False): [
        "weight_ih_l0", "weight_hh_l0",
        "weight_ih_l0_reverse", "weight_hh_l0_reverse",
    ],
    ("gru", 2, False, True): [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
        "weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1",
    ],
    ("rnn_tanh", 3, False, True): [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
        "weight_ih_l1", "weight_hh_l1", "bias_ih_l1", "bias_hh_l1",
        "weight_ih_l2", "weight_hh_l2", "bias_ih_l2", "bias_hh_l2",
    ],
    ("rnn_relu", 2, True, False): [
        "weight_ih_l0", "weight_hh_l0",
        "weight_ih_l0_reverse", "weight_hh_l0_reverse",
        "weight_ih_l1", "weight_hh_l1",
        "weight_ih_l1_reverse", "weight_hh_l1_reverse",
    ],
    ("rnn_tanh", 1, True, True): [
        "weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0",
        "weight_ih_l0_reverse", "weight_hh_l0_reverse",
        "bias_ih_l0_reverse", "bias_hh_l0_reverse",
    ],
}


@pytest.mark.parametrize("combo", list(EXPECTED_KEYS), ids=str)
def test_state_dict_keys_match_torch_naming(combo):
    cell, layers, bidi, bias = combo
    m = build(cell, 5, 7, num_layers=layers, bidirectional=bidi, bias=bias, seed=0)
    sd = m.state_dict()
    assert isinstance(sd, dict)
    assert sorted(sd) == sorted(EXPECTED_KEYS[combo])
    assert sorted(name for name, _ in m.named_parameters()) == sorted(EXPECTED_KEYS[combo])
    assert sorted(name for name, _ in m.named_grads()) == sorted(EXPECTED_KEYS[combo])


def test_state_dict_shapes_lstm_by_hand():
    m = rf.LSTM(5, 7, num_layers=2, bidirectional=True, seed=0)
    expected = {
        "weight_ih_l0": (28, 5), "weight_hh_l0": (28, 7),
        "bias_ih_l0": (28,), "bias_hh_l0": (28,),
        "weight_ih_l0_reverse": (28, 5), "weight_hh_l0_reverse": (28, 7),
        "bias_ih_l0_reverse": (28,), "bias_hh_l0_reverse": (28,),
        "weight_ih_l1": (28, 14), "weight_hh_l1": (28, 7),
        "bias_ih_l1": (28,), "bias_hh_l1": (28,),
        "weight_ih_l1_reverse": (28, 14), "weight_hh_l1_reverse": (28, 7),
        "bias_ih_l1_reverse": (28,), "bias_hh_l1_reverse": (28,),
    }
    assert {k: v.shape for k, v in m.state_dict().items()} == expected


def test_state_dict_shapes_gru_rnn_by_hand():
    g = rf.GRU(5, 7, num_layers=2, seed=0)
    assert {k: v.shape for k, v in g.state_dict().items()} == {
        "weight_ih_l0": (21, 5), "weight_hh_l0": (21, 7),
        "bias_ih_l0": (21,), "bias_hh_l0": (21,),
        "weight_ih_l1": (21, 7), "weight_hh_l1": (21, 7),
        "bias_ih_l1": (21,), "bias_hh_l1": (21,),
    }
    r = rf.RNN(5, 7, bidirectional=True, bias=False, seed=0)
    assert {k: v.shape for k, v in r.state_dict().items()} == {
        "weight_ih_l0": (7, 5), "weight_hh_l0": (7, 7),
        "weight_ih_l0_reverse": (7, 5), "weight_hh_l0_reverse": (7, 7),
    }


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_state_dict_is_copy_of_model_dtype(cell, dtype):
    m = build(cell, 4, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=1)
    sd = m.state_dict()
    before = m.params.copy()
    for k, v in sd.items():
        assert isinstance(v, np.ndarray)
        assert v.dtype == np.dtype(dtype), k
        assert not np.shares_memory(v, m.params), k
        v[...] = 123.0                      # must not touch the model
    np.testing.assert_array_equal(m.params, before)
    assert not np.any(m.state_dict()["weight_ih_l0"] == 123.0)


# --------------------------------------------------------------------------
# flat parameter / gradient storage
# --------------------------------------------------------------------------
def _expected_param_count(cell, I, H, L, D, bias):
    G = GATES[cell]
    n = 0
    for layer in range(L):
        inp = I if layer == 0 else D * H
        n += D * (G * H * inp + G * H * H + (2 * G * H if bias else 0))
    return n


@pytest.mark.parametrize("bidi", [False, True])
@pytest.mark.parametrize("bias", [True, False])
def test_params_flat_and_views_share_memory(cell, bidi, bias):
    m = build(cell, 4, 6, num_layers=2, bidirectional=bidi, bias=bias, seed=2)
    p = m.params
    D = 2 if bidi else 1
    assert isinstance(p, np.ndarray)
    assert p.ndim == 1 and p.flags.c_contiguous
    assert p.dtype == m.dtype
    assert p.size == _expected_param_count(cell, 4, 6, 2, D, bias)

    named = list(m.named_parameters())
    sd = m.state_dict()
    assert sum(v.size for _, v in named) == p.size
    lo_p, hi_p = byte_bounds(p)
    spans = []
    for name, v in named:
        assert np.shares_memory(v, p), name
        assert v.shape == sd[name].shape, name
        np.testing.assert_array_equal(v, sd[name])
        lo, hi = byte_bounds(v)
        assert lo_p <= lo and hi <= hi_p, name
        assert hi - lo == v.size * v.itemsize, f"{name} is not a dense block"
        spans.append((lo, hi, name))
    spans.sort()
    for (lo0, hi0, n0), (lo1, hi1, n1) in zip(spans, spans[1:]):
        assert hi0 <= lo1, f"{n0} overlaps {n1}"


def test_params_read_only(cell):
    m = build(cell, 4, 6, seed=2)
    before = m.params.copy()
    assert not m.params.flags.writeable
    with pytest.raises(ValueError):
        m.params[0] = 1.0
    with pytest.raises(ValueError):
        m.params[...] = 0.0
    for name, v in m.named_parameters():
        with pytest.raises(ValueError):
            v[...] = 0.0
    np.testing.assert_array_equal(m.params, before)


def test_grads_layout_and_writable(cell):
    m = build(cell, 4, 6, num_layers=2, bidirectional=True, seed=2)
    g = m.grads
    assert isinstance(g, np.ndarray)
    assert g.ndim == 1 and g.size == m.params.size and g.dtype == m.dtype
    assert g.flags.writeable
    named_p = dict(m.named_parameters())
    named_g = list(m.named_grads())
    assert [n for n, _ in named_g] == [n for n, _ in m.named_parameters()]
    # Fill each gradient view with its own tag; together they must tile m.grads.
    for k, (name, v) in enumerate(named_g):
        assert v.shape == named_p[name].shape, name
        assert np.shares_memory(v, g), name
        assert v.flags.writeable, name
        v[...] = k + 1
    vals, counts = np.unique(m.grads, return_counts=True)
    assert dict(zip(vals.tolist(), counts.tolist())) == {
        float(k + 1): v.size for k, (_, v) in enumerate(named_g)}
    m.zero_grad()
    np.testing.assert_array_equal(m.grads, 0)
    for _, v in m.named_grads():
        np.testing.assert_array_equal(v, 0)


def test_grads_direct_write_then_zero_grad(cell):
    m = build(cell, 3, 5, seed=2)
    m.grads[:] = 7.0
    first_name, first_view = next(iter(m.named_grads()))
    np.testing.assert_array_equal(first_view, 7.0)
    m.zero_grad()
    np.testing.assert_array_equal(m.grads, 0.0)


def test_backward_fills_grads_and_keeps_params(cell):
    m = build(cell, 3, 5, num_layers=2, bidirectional=True, seed=2)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 2, 3)).astype(np.float32)
    before = m.params.copy()
    m.zero_grad()
    y, st, tape = m.forward(x, train=True)
    m.backward(tape, rng.standard_normal(y.shape).astype(np.float32))
    assert np.isfinite(m.grads).all()
    for name, v in m.named_grads():
        assert np.abs(v).max() > 0, f"gradient of {name} is identically zero"
    np.testing.assert_array_equal(m.params, before)
    m.zero_grad()
    np.testing.assert_array_equal(m.grads, 0.0)


# --------------------------------------------------------------------------
# load_state_dict
# --------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_load_state_dict_round_trip(cell, dtype):
    kw = dict(num_layers=2, bidirectional=True, dtype=dtype)
    a = build(cell, 4, 6, seed=10, **kw)
    b = build(cell, 4, 6, seed=20, **kw)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3, 4)).astype(dtype)
    ya = call(a, cell, x)
    yb = call(b, cell, x)
    assert not np.allclose(ya[0], yb[0])
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(b.params, a.params)
    for k, v in a.state_dict().items():
        np.testing.assert_array_equal(b.state_dict()[k], v)
    # named views of b still share memory with (the possibly new) b.params
    for name, v in b.named_parameters():
        assert np.shares_memory(v, b.params), name
    yb2 = call(b, cell, x)
    for p, q in zip(yb2, ya):
        if q is not None:
            np.testing.assert_allclose(p, q, rtol=1e-6, atol=1e-7)
    # training path uses the new weights too
    ta = a.forward(x, train=True)[0]
    tb = b.forward(x, train=True)[0]
    np.testing.assert_allclose(tb, ta, rtol=1e-6, atol=1e-7)


def test_load_state_dict_changes_outputs_after_first_use(cell):
    """Loading must invalidate anything derived from the old weights (e.g. packed copies)."""
    m = build(cell, 4, 6, seed=1)
    x = np.random.default_rng(2).standard_normal((3, 2, 4)).astype(np.float32)
    y_old = call(m, cell, x)[0]
    sd = m.state_dict()
    sd2 = {k: (0.5 * v).astype(v.dtype) for k, v in sd.items()}
    m.load_state_dict(sd2)
    ref = build(cell, 4, 6, seed=99)
    ref.load_state_dict(sd2)
    y_new = call(m, cell, x)[0]
    assert not np.allclose(y_new, y_old)
    np.testing.assert_allclose(y_new, call(ref, cell, x)[0], rtol=1e-6, atol=1e-7)
    # and back again
    m.load_state_dict(sd)
    np.testing.assert_allclose(call(m, cell, x)[0], y_old, rtol=1e-6, atol=1e-7)


def test_load_float32_state_into_float64_model(cell):
    a = build(cell, 4, 6, num_layers=2, dtype="float32", seed=3)
    b = build(cell, 4, 6, num_layers=2, dtype="float64", seed=4)
    sd32 = a.state_dict()
    b.load_state_dict(sd32)
    assert b.dtype == np.float64 and b.params.dtype == np.float64
    for k, v in b.state_dict().items():
        assert v.dtype == np.float64
        np.testing.assert_array_equal(v, sd32[k].astype(np.float64))
    x = np.random.default_rng(0).standard_normal((5, 2, 4))
    y64 = call(b, cell, x)[0]
    y32 = call(a, cell, x.astype(np.float32))[0]
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, y32, rtol=1e-4, atol=1e-5)


def test_load_float64_state_into_float32_model(cell):
    a = build(cell, 4, 6, dtype="float64", seed=3)
    b = build(cell, 4, 6, dtype="float32", seed=4)
    b.load_state_dict(a.state_dict())
    assert b.params.dtype == np.float32
    for k, v in b.state_dict().items():
        assert v.dtype == np.float32
        np.testing.assert_array_equal(v, a.state_dict()[k].astype(np.float32))


def test_load_state_dict_missing_key(cell):
    m = build(cell, 4, 6, num_layers=2, seed=0)
    sd = m.state_dict()
    del sd["weight_hh_l1"]
    with pytest.raises((ValueError, KeyError), match="weight_hh_l1"):
        m.load_state_dict(sd)


def test_load_state_dict_unexpected_key(cell):
    m = build(cell, 4, 6, seed=0)
    sd = m.state_dict()
    sd["weight_ih_l1"] = sd["weight_hh_l0"].copy()
    with pytest.raises((ValueError, KeyError), match="weight_ih_l1"):
        m.load_state_dict(sd)


def test_load_state_dict_bias_into_biasless(cell):
    src = build(cell, 4, 6, bias=True, seed=0)
    dst = build(cell, 4, 6, bias=False, seed=0)
    with pytest.raises((ValueError, KeyError), match="bias_(ih|hh)_l0"):
        dst.load_state_dict(src.state_dict())


@pytest.mark.parametrize("key,fix", [
    ("weight_ih_l0", lambda v: v[:, :-1]),
    ("weight_hh_l0", lambda v: v.T.copy() if v.shape[0] != v.shape[1] else v[:-1]),
    ("bias_ih_l0", lambda v: v[:-1]),
    ("bias_hh_l0", lambda v: v[None, :]),
    ("weight_ih_l0", lambda v: v.reshape(-1)),
])
def test_load_state_dict_wrong_shape(cell, key, fix):
    m = build(cell, 4, 6, seed=0)
    sd = m.state_dict()
    sd[key] = fix(sd[key])
    with pytest.raises((ValueError, KeyError), match=key):
        m.load_state_dict(sd)


# --------------------------------------------------------------------------
# initialisation and seeding
# --------------------------------------------------------------------------
def test_seed_reproducible(cell):
    a = build(cell, 5, 8, num_layers=2, bidirectional=True, seed=123)
    b = build(cell, 5, 8, num_layers=2, bidirectional=True, seed=123)
    c = build(cell, 5, 8, num_layers=2, bidirectional=True, seed=124)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    # not just a permutation / shift: most entries differ
    assert np.mean(a.params != c.params) > 0.99


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_default_init_uniform_bound(cell, dtype):
    H = 64
    m = build(cell, 32, H, num_layers=2, bidirectional=True, dtype=dtype, seed=5)
    bound = 1.0 / np.sqrt(H)
    p = m.params.astype(np.float64)
    assert np.abs(p).max() <= bound * (1 + 1e-6)
    assert p.max() > 0.99 * bound and p.min() < -0.99 * bound
    assert abs(p.mean()) < 0.02 * bound
    # uniform(-b, b) has std b / sqrt(3)
    np.testing.assert_allclose(p.std(), bound / np.sqrt(3), rtol=0.03)
    # every tensor (biases included) is initialised, not left at zero
    for name, v in m.named_parameters():
        assert v.max() > 0.5 * bound and v.min() < -0.5 * bound, name


# --------------------------------------------------------------------------
# output structure / shapes / basic invariants
# --------------------------------------------------------------------------
@pytest.mark.parametrize("L", [1, 3])
@pytest.mark.parametrize("bidi", [False, True])
@pytest.mark.parametrize("batch_first", [False, True])
def test_output_shapes_and_types(cell, L, bidi, batch_first):
    T, B, I, H = 5, 2, 3, 4
    D = 2 if bidi else 1
    m = build(cell, I, H, num_layers=L, bidirectional=bidi, batch_first=batch_first, seed=0)
    xs = (B, T, I) if batch_first else (T, B, I)
    y, h, c = call(m, cell, np.random.default_rng(0).standard_normal(xs).astype(np.float32))
    assert type(y) is np.ndarray and type(h) is np.ndarray
    assert y.shape == ((B, T, D * H) if batch_first else (T, B, D * H))
    assert h.shape == (L * D, B, H)
    assert y.dtype == h.dtype == np.float32
    if cell == "lstm":
        assert type(c) is np.ndarray and c.shape == (L * D, B, H) and c.dtype == np.float32


@pytest.mark.parametrize("bidi", [False, True])
def test_h_n_consistent_with_y(cell, bidi):
    T, B, I, H = 6, 3, 4, 5
    m = build(cell, I, H, num_layers=2, bidirectional=bidi, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    y, h, _ = call(m, cell, x)
    if bidi:
        np.testing.assert_array_equal(h[-2], y[-1, :, :H])
        np.testing.assert_array_equal(h[-1], y[0, :, H:])
    else:
        np.testing.assert_array_equal(h[-1], y[-1])


def test_hx_none_equals_zero_state(cell):
    T, B, I, H = 4, 2, 3, 5
    m = build(cell, I, H, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    z = np.zeros((4, B, H))
    hx = (z, z.copy()) if cell == "lstm" else z
    for a, b in zip(call(m, cell, x), call(m, cell, x, hx=hx)):
        if b is not None:
            np.testing.assert_array_equal(a, b)


def test_hx_is_used(cell):
    T, B, I, H = 4, 2, 3, 5
    m = build(cell, I, H, dtype="float64", seed=0)
    x = np.random.default_rng(0).standard_normal((T, B, I))
    hx = make_hx(cell, (1, B, H), np.random.default_rng(1))
    assert not np.allclose(call(m, cell, x)[0], call(m, cell, x, hx=hx)[0])
    if cell == "lstm":   # c0 on its own matters too
        hx2 = (np.zeros((1, B, H)), hx[1])
        assert not np.allclose(call(m, cell, x)[0], call(m, cell, x, hx=hx2)[0])


def test_activation_ranges():
    x = 3 * np.random.default_rng(0).standard_normal((6, 4, 3))
    y, _ = rf.RNN(3, 8, nonlinearity="relu", dtype="float64", seed=0)(x)
    assert (y >= 0).all() and (y > 0).any()
    y, _ = rf.RNN(3, 8, nonlinearity="tanh", dtype="float64", seed=0)(x)
    assert (np.abs(y) < 1).all() and (y < 0).any()


@pytest.mark.parametrize("nonlin", ["tanh", "relu"])
@pytest.mark.parametrize("bidi", [False, True])
def test_elman_rnn_matches_numpy_reference(nonlin, bidi):
    """Checks the meaning of each state_dict entry on the simplest cell."""
    T, B, I, H = 5, 3, 4, 6
    m = rf.RNN(I, H, nonlinearity=nonlin, bidirectional=bidi, dtype="float64", seed=7)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, I))
    D = 2 if bidi else 1
    h0 = rng.standard_normal((D, B, H))
    sd = m.state_dict()
    act = np.tanh if nonlin == "tanh" else (lambda v: np.maximum(v, 0.0))
    outs, finals = [], []
    for d, sfx in enumerate(["", "_reverse"][:D]):
        W, U = sd["weight_ih_l0" + sfx], sd["weight_hh_l0" + sfx]
        b = sd["bias_ih_l0" + sfx] + sd["bias_hh_l0" + sfx]
        h = h0[d]
        out = np.zeros((T, B, H))
        steps = range(T) if d == 0 else range(T - 1, -1, -1)
        for t in steps:
            h = act(x[t] @ W.T + h @ U.T + b)
            out[t] = h
        outs.append(out)
        finals.append(h)
    y, hn = m(x, hx=h0)
    np.testing.assert_allclose(y, np.concatenate(outs, axis=-1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(hn, np.stack(finals), rtol=1e-10, atol=1e-12)


def test_outputs_not_aliased_between_calls(cell):
    m = build(cell, 3, 5, num_layers=2, seed=0)
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((4, 2, 3)).astype(np.float32)
    x2 = rng.standard_normal((4, 2, 3)).astype(np.float32)
    r1 = call(m, cell, x1)
    saved = [None if a is None else a.copy() for a in r1]
    call(m, cell, x2)
    m.forward(x2, train=True)
    for a, s in zip(r1, saved):
        if s is not None:
            np.testing.assert_array_equal(a, s)


def test_tapes_are_independent(cell):
    m = build(cell, 3, 5, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((4, 2, 3))
    x2 = rng.standard_normal((6, 3, 3))
    dy1 = rng.standard_normal((4, 2, 10))
    y1, _, tape1 = m.forward(x1, train=True)
    m.zero_grad()
    dx_ref, _ = m.backward(tape1, dy1)
    g_ref = m.grads.copy()
    y1b, _, tape1b = m.forward(x1, train=True)
    m.forward(x2, train=True)                 # a second, differently shaped tape
    m.zero_grad()
    dx, _ = m.backward(tape1b, dy1)
    np.testing.assert_allclose(dx, dx_ref, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(m.grads, g_ref, rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------
# lengths
# --------------------------------------------------------------------------
@pytest.mark.parametrize("bidi", [False, True])
@pytest.mark.parametrize("with_hx", [False, True])
def test_lengths_match_running_rows_alone(cell, bidi, with_hx):
    T, B, I, H, L = 6, 4, 3, 5, 2
    D = 2 if bidi else 1
    lengths = [6, 3, 1, 5]                    # unsorted, includes 1 and T
    m = build(cell, I, H, num_layers=L, bidirectional=bidi, dtype="float64", seed=21)
    rng = np.random.default_rng(22)
    x = rng.standard_normal((T, B, I))
    hx = make_hx(cell, (L * D, B, H), rng) if with_hx else None
    y, h, c = call(m, cell, x, hx=hx, lengths=lengths)
    assert y.shape == (T, B, D * H)
    for b, n in enumerate(lengths):
        yb, hb, cb = call(m, cell, x[:n, b:b + 1], hx=hx_rows(cell, hx, b))
        np.testing.assert_allclose(y[:n, b], yb[:, 0], rtol=1e-10, atol=1e-12,
                                   err_msg=f"row {b} (length {n})")
        assert (y[n:, b] == 0).all(), f"row {b}: output past its length must be exactly 0"
        np.testing.assert_allclose(h[:, b], hb[:, 0], rtol=1e-10, atol=1e-12,
                                   err_msg=f"h_n row {b}")
        if cell == "lstm":
            np.testing.assert_allclose(c[:, b], cb[:, 0], rtol=1e-10, atol=1e-12,
                                       err_msg=f"c_n row {b}")
    # a full-length row equals the same row without any lengths
    y0, h0_, _ = call(m, cell, x[:, :1], hx=hx_rows(cell, hx, 0))
    np.testing.assert_allclose(y[:, 0], y0[:, 0], rtol=1e-10, atol=1e-12)


def test_lengths_float32(cell):
    T, B, I, H = 5, 3, 4, 6
    lengths = np.array([2, 5, 4])
    m = build(cell, I, H, bidirectional=True, seed=21)
    x = np.random.default_rng(22).standard_normal((T, B, I)).astype(np.float32)
    y, h, _ = call(m, cell, x, lengths=lengths)
    assert y.dtype == np.float32
    for b, n in enumerate(lengths):
        yb, hb, _ = call(m, cell, x[:n, b:b + 1])
        np.testing.assert_allclose(y[:n, b], yb[:, 0], rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(y[n:, b], 0)
        np.testing.assert_allclose(h[:, b], hb[:, 0], rtol=1e-5, atol=1e-6)


def test_lengths_all_full_equals_no_lengths(cell):
    T, B, I, H = 5, 3, 4, 6
    m = build(cell, I, H, num_layers=2, bidirectional=True, dtype="float64", seed=21)
    x = np.random.default_rng(22).standard_normal((T, B, I))
    for a, b in zip(call(m, cell, x, lengths=[T] * B), call(m, cell, x)):
        if b is not None:
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


def test_lengths_ignore_padding_values(cell):
    T, B, I, H = 5, 3, 4, 6
    lengths = [5, 2, 3]
    m = build(cell, I, H, num_layers=2, bidirectional=True, dtype="float64", seed=21)
    rng = np.random.default_rng(22)
    x = rng.standard_normal((T, B, I))
    x2 = x.copy()
    for b, n in enumerate(lengths):
        x2[n:, b] = 100 * rng.standard_normal((T - n, I))
    for a, b in zip(call(m, cell, x, lengths=lengths), call(m, cell, x2, lengths=lengths)):
        if b is not None:
            np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bidi", [False, True])
def test_lengths_backward_matches_rows_alone(cell, bidi):
    T, B, I, H = 5, 3, 3, 4
    D = 2 if bidi else 1
    lengths = [3, 5, 1]
    m = build(cell, I, H, num_layers=2, bidirectional=bidi, dtype="float64", seed=31)
    rng = np.random.default_rng(32)
    x = rng.standard_normal((T, B, I))
    dy = rng.standard_normal((T, B, D * H))
    y, st, tape = m.forward(x, lengths=lengths, train=True)
    m.zero_grad()
    dx, _ = m.backward(tape, dy)
    g_total = m.grads.copy()
    assert dx.shape == x.shape
    g_sum = np.zeros_like(g_total)
    for b, n in enumerate(lengths):
        assert (dx[n:, b] == 0).all(), f"row {b}: gradient past its length must be exactly 0"
        yb, _, tb = m.forward(x[:n, b:b + 1], train=True)
        m.zero_grad()
        dxb, _ = m.backward(tb, dy[:n, b:b + 1])
        np.testing.assert_allclose(dx[:n, b], dxb[:, 0], rtol=1e-10, atol=1e-12,
                                   err_msg=f"dx row {b}")
        g_sum += m.grads
    np.testing.assert_allclose(g_total, g_sum, rtol=1e-9, atol=1e-11)


# --------------------------------------------------------------------------
# batch_first
# --------------------------------------------------------------------------
@pytest.mark.parametrize("bidi", [False, True])
def test_batch_first_is_transposed_time_major(cell, bidi):
    T, B, I, H, L = 5, 3, 4, 6, 2
    D = 2 if bidi else 1
    tm = build(cell, I, H, num_layers=L, bidirectional=bidi, dtype="float64", seed=41)
    bf = build(cell, I, H, num_layers=L, bidirectional=bidi, batch_first=True,
               dtype="float64", seed=42)
    bf.load_state_dict(tm.state_dict())
    rng = np.random.default_rng(43)
    x = rng.standard_normal((T, B, I))
    hx = make_hx(cell, (L * D, B, H), rng)    # h0/h_n are never batch-first
    lengths = [5, 2, 4]
    for lens in (None, lengths):
        yt, ht, ct = call(tm, cell, x, hx=hx, lengths=lens)
        yb, hb, cb = call(bf, cell, np.ascontiguousarray(x.transpose(1, 0, 2)),
                          hx=hx, lengths=lens)
        assert yb.shape == (B, T, D * H)
        assert hb.shape == (L * D, B, H)
        np.testing.assert_allclose(yb, yt.transpose(1, 0, 2), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(hb, ht, rtol=1e-12, atol=1e-14)
        if cell == "lstm":
            np.testing.assert_allclose(cb, ct, rtol=1e-12, atol=1e-14)
    # backward: dx comes back batch-first
    dy = rng.standard_normal((T, B, D * H))
    _, _, tape_t = tm.forward(x, train=True)
    dxt, _ = tm.backward(tape_t, dy)
    _, _, tape_b = bf.forward(x.transpose(1, 0, 2), train=True)
    dxb, _ = bf.backward(tape_b, np.ascontiguousarray(dy.transpose(1, 0, 2)))
    assert dxb.shape == (B, T, I)
    np.testing.assert_allclose(dxb, dxt.transpose(1, 0, 2), rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------
# dtype end to end, train vs inference
# --------------------------------------------------------------------------
def test_float64_end_to_end(cell):
    T, B, I, H, L = 4, 2, 3, 5, 2
    m = build(cell, I, H, num_layers=L, bidirectional=True, dtype="float64", seed=51)
    assert m.dtype == np.float64
    rng = np.random.default_rng(52)
    x = rng.standard_normal((T, B, I))
    hx = make_hx(cell, (2 * L, B, H), rng)
    y, st, tape = m.forward(x, hx=hx, train=True)
    h, c = state_of(cell, st)
    assert y.dtype == h.dtype == np.float64
    dy = rng.standard_normal(y.shape)
    dh = rng.standard_normal(h.shape)
    dstate = (dh, rng.standard_normal(h.shape)) if cell == "lstm" else dh
    m.zero_grad()
    dx, dhx = m.backward(tape, dy, dstate)
    assert dx.dtype == np.float64 and dx.shape == x.shape
    for g in (dhx if cell == "lstm" else (dhx,)):
        assert g.dtype == np.float64 and g.shape == (2 * L, B, H)
    assert m.grads.dtype == np.float64 and np.isfinite(m.grads).all()
    assert all(v.dtype == np.float64 for v in m.state_dict().values())
    # finite-difference spot check on the input, in float64 (loss = <y,dy> + <h_n,dh> ...)
    def loss(xx):
        yy, ss = m(xx, hx=hx)
        hh, cc = state_of(cell, ss)
        out = np.sum(yy * dy) + np.sum(hh * dh)
        if cell == "lstm":
            out += np.sum(cc * dstate[1])
        return out
    eps = 1e-6
    for idx in [(0, 0, 0), (2, 1, 1), (3, 0, 2)]:
        xp, xm = x.copy(), x.copy()
        xp[idx] += eps
        xm[idx] -= eps
        fd = (loss(xp) - loss(xm)) / (2 * eps)
        np.testing.assert_allclose(dx[idx], fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_matches_call(cell, dtype):
    T, B, I, H = 5, 3, 4, 6
    m = build(cell, I, H, num_layers=2, bidirectional=True, dtype=dtype, seed=61)
    rng = np.random.default_rng(62)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    hx = make_hx(cell, (4, B, H), rng, dtype=dtype)
    ref = call(m, cell, x, hx=hx, lengths=[5, 1, 3])
    for train in (False, True):
        out = m.forward(x, hx=hx, lengths=[5, 1, 3], train=train)
        assert len(out) == 3
        y, st, _ = out
        h, c = state_of(cell, st)
        np.testing.assert_allclose(y, ref[0], rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(h, ref[1], rtol=1e-6, atol=1e-7)
        if cell == "lstm":
            np.testing.assert_allclose(c, ref[2], rtol=1e-6, atol=1e-7)


def test_forward_defaults_to_training(cell):
    m = build(cell, 3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 3)).astype(np.float32)
    y, st, tape = m.forward(x)
    assert tape is not None
    dx, _ = m.backward(tape, np.ones_like(y))
    assert dx.shape == x.shape and np.abs(dx).max() > 0


def test_dropout_only_in_training(cell):
    T, B, I, H = 5, 3, 4, 6
    m = build(cell, I, H, num_layers=2, dropout=0.5, dtype="float64", seed=71)
    x = np.random.default_rng(72).standard_normal((T, B, I))
    y1 = call(m, cell, x)[0]
    y2 = call(m, cell, x)[0]
    np.testing.assert_array_equal(y1, y2)                # inference is deterministic
    y_eval = m.forward(x, train=False)[0]
    np.testing.assert_allclose(y_eval, y1, rtol=1e-12, atol=1e-14)
    y_train = m.forward(x, train=True)[0]
    assert not np.allclose(y_train, y1), "dropout between layers must act when train=True"


def test_dropout_not_applied_to_last_layer_output(cell):
    """PyTorch applies dropout to every layer's output except the last one."""
    m = build(cell, 4, 6, num_layers=1, dropout=0.5, dtype="float64", seed=71)
    x = np.random.default_rng(72).standard_normal((5, 3, 4))
    np.testing.assert_allclose(m.forward(x, train=True)[0], call(m, cell, x)[0],
                               rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------
# module-level helpers
# --------------------------------------------------------------------------
def test_build_info():
    info = rf.build_info()
    assert isinstance(info, dict)
    assert "openmp" in info and "version" in info
    assert isinstance(info["openmp"], bool)
    assert isinstance(info["version"], str) and info["version"]


def test_get_num_threads():
    n = rf.get_num_threads()
    assert isinstance(n, int) and not isinstance(n, bool)
    assert n >= 1
