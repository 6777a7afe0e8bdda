"""Input validation and robustness of the rnnfast public API.

Every rejected input must raise the documented exception type with a message
that names what was expected and what was received (checked with regular
expressions that are tolerant to formatting, e.g. "(4, 3, 6)" or "4x3x6", but
insist that the relevant numbers / names appear).  Accepted-but-unusual inputs
(non-contiguous, Fortran order, read-only, other float dtypes, NaN/Inf) must
give the same numbers as the plain contiguous input and never crash.

No torch here: everything is checked against rnnfast itself.
"""

import re

import numpy as np
import pytest

import rnnfast as rf

CELLS = ("lstm", "gru", "rnn_tanh", "rnn_relu")


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
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
    """Inference call returning (y, h_n, c_n or None)."""
    y, st = m(x, hx=hx, lengths=lengths)
    if cell == "lstm":
        assert isinstance(st, tuple) and len(st) == 2
        return y, st[0], st[1]
    return y, st, None


def make_hx(cell, shape, rng, dtype=np.float32):
    h0 = (0.5 * rng.standard_normal(shape)).astype(dtype)
    if cell == "lstm":
        return h0, (0.5 * rng.standard_normal(shape)).astype(dtype)
    return h0


def num(v):
    """Regex for the number v standing alone (not part of a longer number)."""
    return r"(?<!\d)(?<!\d\.)" + re.escape(str(v)) + r"(?!\.?\d)"


def shape(*dims):
    """Regex for a shape written with any short separators: (4, 3, 6), 4x3x6, [4,3,6]."""
    return r"(?<!\d)(?<!\d\.)" + r"\D{1,4}".join(str(d) for d in dims) + r"(?!\.?\d)"


def either(*pats):
    return "(?:" + "|".join("(?:%s)" % p for p in pats) + ")"


def all_of(*pats):
    """Regex matching a message that contains every pattern, in any order."""
    return "(?s)^" + "".join("(?=.*?(?:%s))" % p for p in pats)


def assert_same(a, b, rtol=1e-5, atol=1e-6):
    a = np.asarray(a)
    b = np.asarray(b)
    assert a.shape == b.shape
    assert a.dtype == b.dtype
    np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# Standard configuration for the call-validation tests.
T, B, I, H, L = 4, 3, 6, 9, 2


@pytest.fixture(params=CELLS)
def cell(request):
    return request.param


@pytest.fixture
def model(cell):
    return build(cell, I, H, num_layers=L, seed=3)


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((T, B, I)).astype(np.float32)


# --------------------------------------------------------------------------
# constructor
# --------------------------------------------------------------------------
SIZE_ARGS = ("input_size", "hidden_size", "num_layers")


def ctor_kwargs(**over):
    kw = dict(input_size=3, hidden_size=4, num_layers=1)
    kw.update(over)
    return kw


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("arg", SIZE_ARGS)
@pytest.mark.parametrize("bad", [0, -1, -7])
def test_ctor_nonpositive_size_is_value_error(cell, arg, bad):
    with pytest.raises(ValueError, match=all_of(arg, num(bad))):
        build(cell, **ctor_kwargs(**{arg: bad}))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("arg", SIZE_ARGS)
def test_ctor_fractional_size_rejected(cell, arg):
    with pytest.raises((TypeError, ValueError), match=all_of(arg, r"2\.5")):
        build(cell, **ctor_kwargs(**{arg: 2.5}))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("arg", SIZE_ARGS)
@pytest.mark.parametrize("bad", ["3", None, [3], 3 + 0j])
def test_ctor_non_number_size_is_type_error(cell, arg, bad):
    with pytest.raises(TypeError, match=arg):
        build(cell, **ctor_kwargs(**{arg: bad}))


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("arg", SIZE_ARGS)
def test_ctor_bool_size_rejected_or_means_one(cell, arg):
    """bool is an int subclass: either reject it explicitly, or treat True as 1."""
    try:
        m = build(cell, **ctor_kwargs(**{arg: True}))
    except (TypeError, ValueError) as e:
        assert arg in str(e), str(e)
        return
    kw = ctor_kwargs(**{arg: 1})
    ref = build(cell, **kw)
    sd, ref_sd = m.state_dict(), ref.state_dict()
    assert sd.keys() == ref_sd.keys()
    for k in sd:
        assert sd[k].shape == ref_sd[k].shape, k


@pytest.mark.parametrize("cell", CELLS)
def test_ctor_numpy_integer_sizes_accepted(cell):
    m = build(cell, np.int64(5), np.int32(7), num_layers=np.int16(2))
    sd = m.state_dict()
    assert sd["weight_ih_l0"].shape[1] == 5
    assert sd["weight_hh_l0"].shape[1] == 7
    assert sd["weight_ih_l1"].shape[1] == 7
    assert "weight_ih_l2" not in sd
    y, h, _ = call(m, cell, np.zeros((2, 3, 5), np.float32))
    assert y.shape == (2, 3, 7)
    assert h.shape == (2, 3, 7)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bad,pat", [
    (-0.1, r"-0\.1"),
    (-1, num(-1)),
    (1.0, r"(?<![\d.])1(?:\.0*)?(?!\.?\d)"),
    (1, r"(?<![\d.])1(?:\.0*)?(?!\.?\d)"),
    (1.5, r"1\.5"),
    (float("nan"), r"[nN][aA][nN]"),
    (float("inf"), r"[iI][nN][fF]"),
])
def test_ctor_dropout_out_of_range(cell, bad, pat):
    with pytest.raises(ValueError, match=all_of("dropout", pat)):
        build(cell, 3, 4, num_layers=2, dropout=bad)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bad", ["0.5", None, [0.5]])
def test_ctor_dropout_wrong_type(cell, bad):
    with pytest.raises((TypeError, ValueError), match="dropout"):
        build(cell, 3, 4, num_layers=2, dropout=bad)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("ok", [0, 0.0, 0.25, 0.999, np.float64(0.5)])
def test_ctor_dropout_in_range_accepted(cell, ok):
    m = build(cell, 3, 4, num_layers=2, dropout=ok, seed=0)
    y, _, _ = call(m, cell, np.ones((2, 1, 3), np.float32))
    assert y.shape == (2, 1, 4)


@pytest.mark.parametrize("bad", ["sigmoid", "gelu", ""])
def test_ctor_bad_nonlinearity(bad):
    pat = all_of("tanh", "relu") if bad == "" else all_of(re.escape(bad), "tanh", "relu")
    with pytest.raises(ValueError, match=pat):
        rf.RNN(3, 4, nonlinearity=bad)


@pytest.mark.parametrize("bad", [None, 1, np.tanh])
def test_ctor_nonlinearity_wrong_type(bad):
    with pytest.raises((TypeError, ValueError), match="nonlinearity|tanh|relu"):
        rf.RNN(3, 4, nonlinearity=bad)


@pytest.mark.parametrize("ok", ["tanh", "relu"])
def test_ctor_good_nonlinearity(ok):
    m = rf.RNN(3, 4, nonlinearity=ok, seed=0)
    y, h = m(np.ones((2, 1, 3), np.float32))
    assert y.shape == (2, 1, 4) and h.shape == (1, 1, 4)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bad,pat", [
    ("int32", "int32"),
    ("float16", "float16"),
    ("complex64", "complex64"),
    ("bogus", "bogus"),
    (np.int64, "int64"),
    (np.float16, "float16"),
    (np.dtype("complex128"), "complex128"),
    (int, "int"),
])
def test_ctor_bad_dtype(cell, bad, pat):
    with pytest.raises((TypeError, ValueError), match=pat):
        build(cell, 3, 4, dtype=bad)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("ok,expected", [
    ("float32", np.float32),
    ("float64", np.float64),
    (np.float32, np.float32),
    (np.float64, np.float64),
    (np.dtype("float32"), np.float32),
    (np.dtype("float64"), np.float64),
])
def test_ctor_good_dtype(cell, ok, expected):
    m = build(cell, 3, 4, dtype=ok, seed=0)
    assert isinstance(m.dtype, np.dtype)
    assert m.dtype == np.dtype(expected)
    assert m.params.dtype == np.dtype(expected)
    y, h, c = call(m, cell, np.ones((2, 1, 3), np.float32))
    assert y.dtype == np.dtype(expected)
    assert h.dtype == np.dtype(expected)
    if c is not None:
        assert c.dtype == np.dtype(expected)


def test_ctor_default_dtype_is_float32():
    assert rf.LSTM(3, 4).dtype == np.dtype(np.float32)
    assert rf.GRU(3, 4).dtype == np.dtype(np.float32)
    assert rf.RNN(3, 4).dtype == np.dtype(np.float32)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("bidirectional", [True, False])
def test_ctor_bool_flags_accepted(cell, bias, batch_first, bidirectional):
    m = build(cell, 3, 4, num_layers=2, bias=bias, batch_first=batch_first,
              bidirectional=bidirectional, seed=1)
    D = 2 if bidirectional else 1
    xs = (5, 2, 3) if batch_first else (2, 5, 3)   # T=2, B=5
    y, h, c = call(m, cell, np.ones(xs, np.float32))
    assert y.shape == ((5, 2, 4 * D) if batch_first else (2, 5, 4 * D))
    assert h.shape == (2 * D, 5, 4)
    assert any(k.startswith("bias") for k in m.state_dict()) == bias
    assert any(k.endswith("_reverse") for k in m.state_dict()) == bidirectional


# --------------------------------------------------------------------------
# call: x rank / feature size / dtype / empty
# --------------------------------------------------------------------------
def test_call_rank2_input_rejected(model):
    with pytest.raises(ValueError,
                       match=either(shape(4, 6), r"(?<!\d)2\s*-?\s*[dD]", r"ndim\W{0,3}2")):
        model(np.zeros((4, 6), np.float32))


def test_call_rank4_input_rejected(model):
    with pytest.raises(ValueError,
                       match=either(shape(4, 3, 1, 6), r"(?<!\d)4\s*-?\s*[dD]", r"ndim\W{0,3}4")):
        model(np.zeros((4, 3, 1, 6), np.float32))


@pytest.mark.parametrize("bad", [np.zeros(6, np.float32), np.float32(1.0)])
def test_call_rank0_rank1_input_rejected(model, bad):
    with pytest.raises(ValueError):
        model(bad)


def test_call_wrong_feature_size(model):
    with pytest.raises(ValueError, match=all_of(num(6), num(11))):
        model(np.zeros((T, B, 11), np.float32))


def test_call_wrong_feature_size_batch_first(cell):
    m = build(cell, I, H, batch_first=True, seed=0)
    with pytest.raises(ValueError, match=all_of(num(6), num(5))):
        m(np.zeros((B, T, 5), np.float32))


@pytest.mark.parametrize("dt,pat", [
    (np.int64, "int64"),
    (np.int32, "int32"),
    (np.uint8, "uint8"),
    (np.bool_, "bool"),
    (np.complex64, "complex64"),
    (np.complex128, "complex128"),
    (object, "object|O"),
])
def test_call_non_float_input_is_type_error(model, dt, pat):
    x = np.ones((T, B, I), dtype=dt)
    with pytest.raises(TypeError, match=pat):
        model(x)


def test_call_string_input_is_type_error(model):
    x = np.full((T, B, I), "a")
    with pytest.raises(TypeError, match=r"<U1|U1|str|unicode"):
        model(x)


def test_call_complex_hidden_state_is_type_error(cell, model, x):
    hx = make_hx(cell, (L, B, H), np.random.default_rng(1))
    if cell == "lstm":
        hx = (hx[0].astype(np.complex64), hx[1])
    else:
        hx = hx.astype(np.complex64)
    with pytest.raises(TypeError, match="complex"):
        model(x, hx=hx)


@pytest.mark.parametrize("xs", [(T, 0, I), (0, B, I), (0, 0, I)])
def test_call_empty_input_rejected(model, xs):
    with pytest.raises(ValueError, match=either(shape(*xs), num(0))):
        model(np.zeros(xs, np.float32))


def test_call_empty_batch_first_rejected(cell):
    m = build(cell, I, H, batch_first=True, seed=0)
    with pytest.raises(ValueError, match=either(shape(0, T, I), num(0))):
        m(np.zeros((0, T, I), np.float32))


# --------------------------------------------------------------------------
# call: hidden state
# --------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [
    (1, B, H),        # wrong layers*dirs
    (4, B, H),        # as if bidirectional
    (L, 5, H),        # wrong batch
    (L, B, 8),        # wrong hidden
    (B, H),           # rank 2 (torch's unbatched form is not supported)
    (L, B, H, 1),     # rank 4
])
def test_call_h0_wrong_shape(cell, model, x, bad):
    rng = np.random.default_rng(2)
    h0 = rng.standard_normal(bad).astype(np.float32)
    if cell == "lstm":
        hx = (h0, np.zeros((L, B, H), np.float32))
    else:
        hx = h0
    with pytest.raises(ValueError, match=all_of(shape(L, B, H), shape(*bad))):
        model(x, hx=hx)


@pytest.mark.parametrize("bad", [(1, B, H), (L, 5, H), (L, B, 8)])
def test_call_lstm_c0_wrong_shape(x, bad):
    m = build("lstm", I, H, num_layers=L, seed=0)
    hx = (np.zeros((L, B, H), np.float32), np.zeros(bad, np.float32))
    with pytest.raises(ValueError, match=all_of(shape(L, B, H), shape(*bad))):
        m(x, hx=hx)


def test_call_bidirectional_h0_shape(cell, x):
    m = build(cell, I, H, num_layers=L, bidirectional=True, seed=0)
    h0 = np.zeros((L, B, H), np.float32)          # should be (2*L, B, H)
    hx = (h0, np.zeros((2 * L, B, H), np.float32)) if cell == "lstm" else h0
    with pytest.raises(ValueError, match=all_of(shape(2 * L, B, H), shape(L, B, H))):
        m(x, hx=hx)


def test_call_lstm_hx_bare_array_rejected(x):
    m = build("lstm", I, H, num_layers=L, seed=0)
    with pytest.raises((TypeError, ValueError)):
        m(x, hx=np.zeros((L, B, H), np.float32))


@pytest.mark.parametrize("n", [1, 3])
def test_call_lstm_hx_tuple_wrong_length(x, n):
    m = build("lstm", I, H, num_layers=L, seed=0)
    hx = tuple(np.zeros((L, B, H), np.float32) for _ in range(n))
    with pytest.raises((TypeError, ValueError)):
        m(x, hx=hx)


@pytest.mark.parametrize("cell1", ["gru", "rnn_tanh"])
def test_call_gru_rnn_hx_tuple_rejected(x, cell1):
    m = build(cell1, I, H, num_layers=L, seed=0)
    z = np.zeros((L, B, H), np.float32)
    with pytest.raises((TypeError, ValueError)):
        m(x, hx=(z, z))


# --------------------------------------------------------------------------
# call: lengths
# --------------------------------------------------------------------------
@pytest.mark.parametrize("bad", [[4, 4], [4, 4, 4, 4]])
def test_lengths_wrong_count(model, x, bad):
    with pytest.raises(ValueError, match=all_of(num(B), num(len(bad)))):
        model(x, lengths=bad)


def test_lengths_wrong_count_batch_first(cell):
    m = build(cell, I, H, batch_first=True, seed=0)
    xb = np.zeros((5, T, I), np.float32)          # B = 5, T = 4
    with pytest.raises(ValueError, match=all_of(num(5), num(4))):
        m(xb, lengths=[4, 4, 4, 4])


def test_lengths_zero(model, x):
    with pytest.raises(ValueError, match=num(0)):
        model(x, lengths=[4, 0, 2])


def test_lengths_too_long(model, x):
    with pytest.raises(ValueError, match=all_of(num(5), num(T))):
        model(x, lengths=[4, 5, 2])


def test_lengths_negative(model, x):
    with pytest.raises(ValueError, match=num(-1)):
        model(x, lengths=[4, -1, 2])


@pytest.mark.parametrize("bad", [[4, 2.5, 1], np.array([4.0, 2.5, 1.0])])
def test_lengths_fractional(model, x, bad):
    with pytest.raises(ValueError, match=r"2\.5"):
        model(x, lengths=bad)


def test_lengths_2d_rejected(model, x):
    with pytest.raises(ValueError):
        model(x, lengths=np.array([[4, 2, 1]]))


def test_lengths_string_rejected(model, x):
    with pytest.raises((TypeError, ValueError)):
        model(x, lengths="abc")


def test_lengths_accepted_forms(cell, model, x):
    ref = call(model, cell, x, lengths=[4, 2, 1])
    forms = [
        (4, 2, 1),
        np.array([4, 2, 1], np.int64),
        np.array([4, 2, 1], np.int32),
        np.array([4, 2, 1], np.uint8),
        [np.int64(4), np.int32(2), np.int16(1)],
        np.array([4, 9, 2, 9, 1, 9], np.int64)[::2],     # non-contiguous
    ]
    ro = np.array([4, 2, 1], np.int64)
    ro.flags.writeable = False
    forms.append(ro)
    for lengths in forms:
        got = call(model, cell, x, lengths=lengths)
        for a, b in zip(got, ref):
            if b is not None:
                np.testing.assert_array_equal(a, b)


# --------------------------------------------------------------------------
# NaN / Inf / huge values
# --------------------------------------------------------------------------
def test_nan_in_one_row_stays_in_that_row(cell):
    m = build(cell, I, H, seed=4)
    x = np.random.default_rng(5).standard_normal((T, B, I)).astype(np.float32)
    x[2, 1, 3] = np.nan
    y, h, c = call(m, cell, x)
    others = [0, 2]
    assert np.isfinite(y[:, others]).all()
    assert np.isfinite(h[:, others]).all()
    assert np.isfinite(y[:2, 1]).all(), "output before the NaN step must be finite"
    assert np.isnan(y[2:, 1]).all(), "NaN must propagate to every unit from its step on"
    assert np.isnan(h[:, 1]).all()
    if c is not None:
        assert np.isfinite(c[:, others]).all()
        assert np.isnan(c[:, 1]).all()


def test_nan_in_one_row_deep_bidirectional(cell):
    m = build(cell, I, H, num_layers=2, bidirectional=True, seed=4)
    x = np.random.default_rng(5).standard_normal((T, B, I)).astype(np.float32)
    x[2, 1, 0] = np.nan
    y, h, c = call(m, cell, x)
    assert np.isfinite(y[:, [0, 2]]).all()
    assert np.isfinite(h[:, [0, 2]]).all()
    assert np.isnan(y[:, 1]).any()
    assert np.isnan(h[:, 1]).any()
    if c is not None:
        assert np.isfinite(c[:, [0, 2]]).all()


def test_nan_in_one_row_of_h0(cell):
    m = build(cell, I, H, seed=4)
    x = np.random.default_rng(5).standard_normal((T, B, I)).astype(np.float32)
    hx = make_hx(cell, (1, B, H), np.random.default_rng(6))
    h0 = hx[0] if cell == "lstm" else hx
    h0[0, 2, 0] = np.nan
    y, h, c = call(m, cell, x, hx=hx)
    assert np.isfinite(y[:, :2]).all()
    assert np.isfinite(h[:, :2]).all()
    assert np.isnan(y[:, 2]).any()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_nan_past_length_is_ignored(cell, bidirectional):
    """Inputs past a row's length must not influence anything (not even NaN)."""
    m = build(cell, I, H, num_layers=2, bidirectional=bidirectional, seed=4)
    x = np.random.default_rng(5).standard_normal((T, B, I)).astype(np.float32)
    x[2:, 1, :] = np.nan                      # row 1 has length 2
    x[1:, 2, :] = np.inf                      # row 2 has length 1
    y, h, c = call(m, cell, x, lengths=[T, 2, 1])
    assert np.isfinite(y).all()
    assert np.isfinite(h).all()
    if c is not None:
        assert np.isfinite(c).all()
    assert (y[2:, 1] == 0).all()
    assert (y[1:, 2] == 0).all()


@pytest.mark.parametrize("val", [np.inf, -np.inf])
def test_inf_input_does_not_crash(cell, val):
    m = build(cell, I, H, num_layers=2, bidirectional=True, seed=4)
    x = np.random.default_rng(5).standard_normal((T, B, I)).astype(np.float32)
    x[1, 0, 2] = val
    y, h, c = call(m, cell, x)
    assert y.dtype == np.float32 and y.shape == (T, B, 2 * H)
    assert np.isfinite(y[:, 1:]).all()
    assert np.isfinite(h[:, 1:]).all()


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn_tanh"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [1e4, -1e4, 1e20, -1e20])
def test_huge_finite_input_saturates_without_nan(cell, dtype, scale):
    """Bounded activations must stay finite in [-1, 1] for huge inputs
    (catches overflow-prone sigmoid/tanh formulas such as e^x/(1+e^x))."""
    m = build(cell, I, H, num_layers=2, dtype=dtype, seed=4)
    rng = np.random.default_rng(5)
    x = (scale * rng.standard_normal((T, B, I))).astype(dtype)
    y, h, c = call(m, cell, x)
    assert np.isfinite(y).all()
    assert np.isfinite(h).all()
    assert np.abs(y).max() <= 1.0
    if c is not None:
        assert np.isfinite(c).all()


# --------------------------------------------------------------------------
# memory layout and input dtypes
# --------------------------------------------------------------------------
def _compare_layouts(cell, m, x_odd, hx=None, lengths=None):
    x_copy = np.array(x_odd, copy=True)
    got = call(m, cell, x_odd, hx=hx, lengths=lengths)
    ref = call(m, cell, np.ascontiguousarray(x_odd), hx=hx, lengths=lengths)
    np.testing.assert_array_equal(x_odd, x_copy)   # input not modified
    for a, b in zip(got, ref):
        if b is not None:
            assert_same(a, b)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_strided_slice_input(cell, bidirectional):
    m = build(cell, I, H, num_layers=2, bidirectional=bidirectional, seed=7)
    big = np.random.default_rng(8).standard_normal((T, 2 * B, 2 * I)).astype(np.float32)
    x = big[:, ::2, ::2]
    assert not x.flags.c_contiguous
    _compare_layouts(cell, m, x, lengths=[4, 1, 3])


def test_transposed_input(cell):
    m = build(cell, I, H, num_layers=2, seed=7)
    base = np.random.default_rng(8).standard_normal((I, B, T)).astype(np.float32)
    x = base.transpose(2, 1, 0)
    assert x.shape == (T, B, I) and not x.flags.c_contiguous
    _compare_layouts(cell, m, x)


def test_fortran_order_input(cell):
    m = build(cell, I, H, bidirectional=True, seed=7)
    x = np.asfortranarray(np.random.default_rng(8).standard_normal((T, B, I)).astype(np.float32))
    assert x.flags.f_contiguous and not x.flags.c_contiguous
    _compare_layouts(cell, m, x)


def test_negative_stride_input(cell):
    m = build(cell, I, H, seed=7)
    x = np.random.default_rng(8).standard_normal((T, B, I)).astype(np.float32)[::-1, :, ::-1]
    _compare_layouts(cell, m, x)


def test_batch_first_transposed_view_input(cell):
    m = build(cell, I, H, batch_first=True, seed=7)
    tm = np.random.default_rng(8).standard_normal((T, B, I)).astype(np.float32)
    x = tm.transpose(1, 0, 2)                 # (B, T, I) view, non-contiguous
    _compare_layouts(cell, m, x)


def test_readonly_inputs(cell):
    m = build(cell, I, H, num_layers=L, seed=7)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    hx = make_hx(cell, (L, B, H), rng)
    ref = call(m, cell, x.copy(), hx=hx, lengths=[4, 2, 3])
    x.flags.writeable = False
    for a in (hx if cell == "lstm" else (hx,)):
        a.flags.writeable = False
    got = call(m, cell, x, hx=hx, lengths=[4, 2, 3])
    for a, b in zip(got, ref):
        if b is not None:
            np.testing.assert_array_equal(a, b)


def test_noncontiguous_hidden_state(cell):
    m = build(cell, I, H, num_layers=L, seed=7)
    rng = np.random.default_rng(8)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    big = make_hx(cell, (L, 2 * B, 2 * H), rng)
    if cell == "lstm":
        hx = (big[0][:, ::2, ::2], np.asfortranarray(big[1][:, ::2, ::2]))
        hx_c = tuple(np.ascontiguousarray(a) for a in hx)
    else:
        hx = big[:, ::2, ::2]
        hx_c = np.ascontiguousarray(hx)
    got = call(m, cell, x, hx=hx)
    ref = call(m, cell, x, hx=hx_c)
    for a, b in zip(got, ref):
        if b is not None:
            assert_same(a, b)


@pytest.mark.parametrize("in_dtype", [np.float64, np.float16])
def test_other_float_input_into_float32_model(cell, in_dtype):
    m = build(cell, I, H, seed=9, dtype="float32")
    x = np.random.randn(T, B, I).astype(in_dtype)
    got = call(m, cell, x)
    ref = call(m, cell, x.astype(np.float32))
    for a, b in zip(got, ref):
        if b is not None:
            assert a.dtype == np.float32
            assert_same(a, b)


def test_float32_input_into_float64_model(cell):
    m = build(cell, I, H, seed=9, dtype="float64")
    x = np.random.default_rng(1).standard_normal((T, B, I)).astype(np.float32)
    hx = make_hx(cell, (1, B, H), np.random.default_rng(2), dtype=np.float32)
    hx64 = tuple(a.astype(np.float64) for a in hx) if cell == "lstm" else hx.astype(np.float64)
    got = call(m, cell, x, hx=hx)
    ref = call(m, cell, x.astype(np.float64), hx=hx64)
    for a, b in zip(got, ref):
        if b is not None:
            assert a.dtype == np.float64
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("h_dtype", [np.float64, np.float16])
def test_other_float_hidden_state_into_float32_model(cell, h_dtype):
    """np.zeros / np.random give float64 by default: such a hidden state must be accepted."""
    m = build(cell, I, H, num_layers=L, seed=9, dtype="float32")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    hx = make_hx(cell, (L, B, H), rng, dtype=h_dtype)
    hx32 = tuple(a.astype(np.float32) for a in hx) if cell == "lstm" else hx.astype(np.float32)
    got = call(m, cell, x, hx=hx)
    ref = call(m, cell, x, hx=hx32)
    for a, b in zip(got, ref):
        if b is not None:
            assert a.dtype == np.float32
            assert_same(a, b)


def test_python_list_input_works_or_type_error(cell):
    m = build(cell, I, H, seed=9)
    x = np.random.default_rng(1).standard_normal((T, B, I)).astype(np.float32)
    try:
        got = call(m, cell, x.tolist())
    except TypeError:
        return
    ref = call(m, cell, x)
    for a, b in zip(got, ref):
        if b is not None:
            assert isinstance(a, np.ndarray) and a.dtype == np.float32
            assert_same(a, b)


# --------------------------------------------------------------------------
# backward
# --------------------------------------------------------------------------
BT, BB, BI, BH, BL = 4, 3, 5, 7, 2    # y: (4, 3, 14) bidirectional


@pytest.fixture
def trained(cell):
    m = build(cell, BI, BH, num_layers=BL, bidirectional=True, seed=11)
    rng = np.random.default_rng(12)
    x = rng.standard_normal((BT, BB, BI)).astype(np.float32)
    hx = make_hx(cell, (2 * BL, BB, BH), rng)
    y, st, tape = m.forward(x, hx=hx, train=True)
    return m, x, hx, y, st, tape


def test_backward_with_train_tape_works(cell, trained):
    m, x, hx, y, st, tape = trained
    assert y.shape == (BT, BB, 2 * BH)
    rng = np.random.default_rng(13)
    dy = rng.standard_normal(y.shape).astype(np.float32)
    if cell == "lstm":
        dstate = (rng.standard_normal(st[0].shape).astype(np.float32),
                  rng.standard_normal(st[1].shape).astype(np.float32))
    else:
        dstate = rng.standard_normal(st.shape).astype(np.float32)
    dx, dhx = m.backward(tape, dy, dstate)
    assert isinstance(dx, np.ndarray)
    assert dx.shape == x.shape and dx.dtype == np.float32
    assert np.isfinite(dx).all() and np.abs(dx).max() > 0
    if cell == "lstm":
        assert isinstance(dhx, tuple) and len(dhx) == 2
        for g in dhx:
            assert g.shape == (2 * BL, BB, BH) and g.dtype == np.float32
    else:
        assert dhx.shape == (2 * BL, BB, BH) and dhx.dtype == np.float32


def test_backward_accepts_float64_and_noncontiguous_dy(cell, trained):
    m, x, hx, y, st, tape = trained
    rng = np.random.default_rng(14)
    dy = rng.standard_normal(y.shape)                       # float64 into a float32 model
    m.zero_grad()
    dx_ref, _ = m.backward(tape, dy.astype(np.float32))
    g_ref = m.grads.copy()
    m.zero_grad()
    dx64, _ = m.backward(tape, dy)
    assert dx64.dtype == np.float32
    assert_same(dx64, dx_ref)
    assert_same(m.grads, g_ref)
    dy_t = np.asfortranarray(dy.astype(np.float32))         # Fortran-ordered
    m.zero_grad()
    dx_f, _ = m.backward(tape, dy_t)
    assert_same(dx_f, dx_ref)
    assert_same(m.grads, g_ref)


def test_backward_none_cotangents_accepted(cell, trained):
    m, x, hx, y, st, tape = trained
    dx, _ = m.backward(tape, None, None)
    assert dx.shape == x.shape
    np.testing.assert_array_equal(dx, 0)


@pytest.mark.parametrize("bad", [
    (BT, BB, BH),          # forgot the second direction
    (BB, BT, 2 * BH),      # batch-first layout in a time-major model
    (BT, BB, 2 * BH, 1),
    (BT, 2 * BH),
    (BT + 1, BB, 2 * BH),
])
def test_backward_wrong_dy_shape(cell, trained, bad):
    m, x, hx, y, st, tape = trained
    with pytest.raises(ValueError, match=all_of(shape(BT, BB, 2 * BH), shape(*bad))):
        m.backward(tape, np.zeros(bad, np.float32))


@pytest.mark.parametrize("bad", [(BL, BB, BH), (2 * BL, BB + 1, BH), (2 * BL, BB, BH + 1)])
def test_backward_wrong_dh_shape(cell, trained, bad):
    m, x, hx, y, st, tape = trained
    dh = np.zeros(bad, np.float32)
    dstate = (dh, None) if cell == "lstm" else dh
    with pytest.raises(ValueError, match=all_of(shape(2 * BL, BB, BH), shape(*bad))):
        m.backward(tape, None, dstate)


@pytest.mark.parametrize("bad", [(BL, BB, BH), (2 * BL, BB, BH + 1)])
def test_backward_wrong_dc_shape(trained, bad, cell):
    if cell != "lstm":
        pytest.skip("c state only exists for LSTM")
    m, x, hx, y, st, tape = trained
    dstate = (np.zeros((2 * BL, BB, BH), np.float32), np.zeros(bad, np.float32))
    with pytest.raises(ValueError, match=all_of(shape(2 * BL, BB, BH), shape(*bad))):
        m.backward(tape, None, dstate)


def test_backward_lstm_dstate_not_pair(trained, cell):
    if cell != "lstm":
        pytest.skip("LSTM only")
    m, x, hx, y, st, tape = trained
    with pytest.raises((TypeError, ValueError)):
        m.backward(tape, None, np.zeros((2 * BL, BB, BH), np.float32))


def test_backward_batch_first_dy_layout():
    m = build("gru", BI, BH, batch_first=True, seed=1)
    x = np.random.default_rng(0).standard_normal((BB, BT, BI)).astype(np.float32)
    y, st, tape = m.forward(x, train=True)
    assert y.shape == (BB, BT, BH)
    with pytest.raises(ValueError, match=all_of(shape(BB, BT, BH), shape(BT, BB, BH))):
        m.backward(tape, np.zeros((BT, BB, BH), np.float32))
    dx, _ = m.backward(tape, np.ones((BB, BT, BH), np.float32))
    assert dx.shape == (BB, BT, BI)


@pytest.mark.parametrize("not_a_tape", ["not_tape", None, 0, {}, (1, 2)])
def test_backward_non_tape_is_type_error(cell, trained, not_a_tape):
    m, x, hx, y, st, tape = trained
    with pytest.raises(TypeError):
        m.backward(not_a_tape, np.zeros_like(y))


def test_backward_array_as_tape_is_type_error(cell, trained):
    m, x, hx, y, st, tape = trained
    with pytest.raises(TypeError):
        m.backward(y, np.zeros_like(y))
