"""The lean inference path of ``model(x, hx)``.

A call without ``lengths`` whose arrays the core can take as they are (C-contiguous, the model's
dtype and shapes) goes straight to ``_core.core_infer``, which allocates the outputs itself; every
other call falls through to ``forward``'s checks and conversions. Both must give the same bits, the
fall-through must happen exactly when it should, and bad input must still get forward's errors.
The attributes that the lean path's cached description depends on refuse assignment.
"""
import copy
import pickle

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import _core

I, H = 5, 6

MODELS = {
    "rnn_tanh": lambda L, D, dt: rf.RNN(I, H, L, bidirectional=D, dtype=dt, seed=1),
    "rnn_relu_clip": lambda L, D, dt: rf.RNN(I, H, L, nonlinearity="relu", bidirectional=D,
                                             dtype=dt, seed=1, clip=0.7),
    "lstm": lambda L, D, dt: rf.LSTM(I, H, L, bidirectional=D, dtype=dt, seed=1),
    "lstm_peephole_if": lambda L, D, dt: rf.LSTM(I, H, L, bidirectional=D, dtype=dt, seed=1,
                                                 peephole=True, input_forget=True, clip=0.9),
    "gru": lambda L, D, dt: rf.GRU(I, H, L, bidirectional=D, dtype=dt, seed=1),
    "gru_reset_before": lambda L, D, dt: rf.GRU(I, H, L, bidirectional=D, dtype=dt, seed=1,
                                                linear_before_reset=False),
}


@pytest.fixture
def spy(monkeypatch):
    """Records what each core_infer call returned: True (ran) or False (declined)."""
    calls = []
    real = _core.core_infer

    def wrapped(*args):
        r = real(*args)
        calls.append(r is not None)
        return r

    monkeypatch.setattr(_core, "core_infer", wrapped)
    return calls


def _state(m, B, rng):
    shape = (m.num_layers * m.num_directions, B, m.hidden_size)
    h = rng.standard_normal(shape).astype(m.dtype)
    return (h, rng.standard_normal(shape).astype(m.dtype)) if isinstance(m, rf.LSTM) else h


def _same(a, b):
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b)
        for u, v in zip(a, b):
            _same(u, v)
        return
    assert type(a) is np.ndarray and a.dtype == b.dtype and a.shape == b.shape
    assert a.flags.c_contiguous
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("L,D", [(1, False), (2, True)])
@pytest.mark.parametrize("T,B", [(1, 1), (4, 3)])
@pytest.mark.parametrize("with_state", [False, True])
def test_lean_equals_forward(spy, name, dtype, L, D, T, B, with_state):
    m = MODELS[name](L, D, dtype)
    rng = np.random.default_rng(T * 10 + B)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    hx = _state(m, B, rng) if with_state else None
    y, state = m(x, hx)
    assert spy == [True]
    y_ref, state_ref, tape = m.forward(x, hx, train=False)
    assert tape is None
    _same(y, y_ref)
    _same(state, state_ref)
    assert not np.shares_memory(y, x)


@pytest.mark.parametrize("name", ["lstm", "gru"])
@pytest.mark.parametrize("B,T,lean", [(1, 6, True), (4, 1, True), (1, 1, True), (3, 5, False)])
def test_batch_first(spy, name, B, T, lean):
    """A batch-first x goes the lean way when one of its first two axes is 1 (its bytes are then
    those of the time-major array); otherwise forward transposes it."""
    m = MODELS[name](1, False, "float32")
    m.batch_first = True
    rng = np.random.default_rng(0)
    x = rng.standard_normal((B, T, I)).astype(np.float32)
    hx = _state(m, B, rng)
    y, state = m(x, hx)
    assert spy == [lean]
    assert y.shape == (B, T, H)
    m.batch_first = False
    y_tm, state_tm = m(np.ascontiguousarray(x.transpose(1, 0, 2)), hx)
    _same(y, np.ascontiguousarray(y_tm.transpose(1, 0, 2)))
    _same(state, state_tm)


def test_lstm_partial_state(spy):
    """(h0, None) and (None, c0) are states the lean path takes; a list is left to forward."""
    m = MODELS["lstm"](2, True, "float32")
    rng = np.random.default_rng(2)
    x = rng.standard_normal((3, 2, I)).astype(np.float32)
    h0, c0 = _state(m, 2, rng)
    for hx in [(h0, None), (None, c0), (None, None)]:
        spy.clear()
        _same(m(x, hx), m.forward(x, hx, train=False)[:2])
        assert spy == [True]
    spy.clear()
    _same(m(x, [h0, c0]), m(x, (h0, c0)))
    assert spy == [True]  # the list went to forward without asking core_infer; the tuple did not


def _unaligned(a):
    """A copy of a whose data starts one byte past an aligned address (numpy flags it)."""
    buf = np.zeros(a.nbytes + 1, np.uint8)
    out = np.frombuffer(buf.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned and out.flags.c_contiguous
    return out


def _converted_cases(m, rng):
    """Inputs forward accepts after converting them, with the converted equivalent."""
    x = rng.standard_normal((3, 2, I))
    x32 = x.astype(np.float32)
    hx = rng.standard_normal((1, 2, H))
    return [
        (x, None, x32, None),                                          # float64 into float32
        (x32.tolist(), None, x32, None),                               # nested lists
        (np.asfortranarray(x32), None, x32, None),                     # not C-contiguous
        (np.repeat(x32, 2, axis=2)[:, :, ::2], None, x32, None),       # strided view
        (x32.astype(">f4"), None, x32, None),                         # big-endian float32
        (_unaligned(x32), None, x32, None),                            # misaligned data
        (x32, hx, x32, hx.astype(np.float32)),                         # float64 state
        (x32, hx.astype(">f4"), x32, hx.astype(np.float32)),           # big-endian state
        (x32, np.asfortranarray(hx.astype(np.float32)), x32, hx.astype(np.float32)),
    ]


def test_fall_through_converts(spy):
    m = MODELS["gru"](1, False, "float32")
    rng = np.random.default_rng(3)
    for given_x, given_h, x, h in _converted_cases(m, rng):
        spy.clear()
        got = m(given_x, given_h)
        assert spy[0] is False  # declined: forward converted, then ran
        _same(got, m(x, h))
        assert spy[-1] is True


def test_lengths_take_forward(spy):
    m = MODELS["lstm"](1, False, "float32")
    x = np.random.default_rng(4).standard_normal((4, 2, I)).astype(np.float32)
    y, _ = m(x, lengths=[4, 2])
    assert spy == []
    np.testing.assert_array_equal(y[2:, 1], 0)


@pytest.mark.parametrize("x,hx,error,match", [
    (np.zeros((2, 1, I + 1), np.float32), None, ValueError, "input_size=5"),
    (np.zeros((0, 1, I), np.float32), None, ValueError, "at least one time step"),
    (np.zeros((2, 0, I), np.float32), None, ValueError, "at least one time step"),
    (np.zeros((2, I), np.float32), None, ValueError, "3-D"),
    (np.zeros((2, 1, I), np.int32), None, TypeError, "floating-point"),
    (np.zeros((2, 1, I), np.float32), np.zeros((1, 2, H), np.float32), ValueError, "hx must have"),
    (np.zeros((2, 1, I), np.float32), np.zeros((1, 1, H + 1), np.float32), ValueError,
     "hx must have"),
    (np.zeros((2, 1, I), np.float32), np.zeros((1, 1, H), np.int64), TypeError, "floating"),
])
def test_bad_input_keeps_forward_errors(spy, x, hx, error, match):
    m = MODELS["gru"](1, False, "float32")
    with pytest.raises(error, match=match):
        m(x, hx)
    assert True not in spy


def test_core_infer_declines_what_it_cannot_take():
    """Called directly with arrays it cannot use, core_infer answers None (never reads them)."""
    m = MODELS["lstm"](1, False, "float32")
    args = (m._base, m._params, m._packed_weights())
    good = np.zeros((2, 1, I), np.float32)
    h = np.zeros((1, 1, H), np.float32)
    assert _core.core_infer(*args, good, h, h, True, False) is not None
    for x in [good.astype(np.float64), good[:, :, :-1], good.reshape(2, I), [[[0.0] * I]], None,
              good.astype(">f4"), _unaligned(good),
              np.asfortranarray(np.zeros((2, 3, I), np.float32)), np.zeros((2, 0, I), np.float32)]:
        assert _core.core_infer(*args, x, None, None, True, False) is None
    for s in [h.astype(np.float64), h.reshape(1, H), np.zeros((1, 2, H), np.float32), "h",
              h.astype(">f4"), _unaligned(h)]:
        assert _core.core_infer(*args, good, s, None, True, False) is None
        assert _core.core_infer(*args, good, None, s, True, False) is None
    assert _core.core_infer(*args, np.zeros((2, 3, I), np.float32), None, None, True, True) is None


@pytest.mark.parametrize("attr,value", [
    ("input_size", 9), ("hidden_size", 9), ("num_layers", 3), ("bias", False),
    ("bidirectional", True), ("num_directions", 2), ("dtype", np.dtype(np.float64)),
    ("clip", 1.0), ("peephole", True), ("input_forget", True), ("_mode", "GRU"),
])
def test_structure_is_read_only(attr, value):
    m = MODELS["lstm"](1, False, "float32")
    x = np.random.default_rng(5).standard_normal((2, 1, I)).astype(np.float32)
    y0, _ = m(x)
    with pytest.raises(AttributeError, match="fixed when the model is built"):
        setattr(m, attr, value)
    np.testing.assert_array_equal(m(x)[0], y0)


def test_other_cells_read_only_and_settable_options():
    with pytest.raises(AttributeError):
        rf.RNN(I, H).nonlinearity = "relu"
    with pytest.raises(AttributeError):
        rf.GRU(I, H).linear_before_reset = False
    m = rf.GRU(I, H, 2, dropout=0.2)
    m.dropout = 0.5  # read by every training call
    m.batch_first = True
    assert m.dropout == 0.5 and m.batch_first
    m.custom_tag = "mine"  # unrelated attributes stay free
    for clone in (copy.deepcopy(m), pickle.loads(pickle.dumps(m))):
        assert clone.custom_tag == "mine" and clone.batch_first
        with pytest.raises(AttributeError):
            clone.hidden_size = 3
        x = np.ones((1, 3, I), np.float32)
        _same(clone(x), m(x))


def test_sequence_model_inference_takes_the_lean_path(spy):
    from rnnfast.model import SequenceModel

    sm = SequenceModel(rf.LSTM(4, 6, seed=0), embedding=rf.Embedding(10, 4, seed=1),
                       head=rf.Linear(6, 10, seed=2))
    ids = np.random.default_rng(0).integers(0, 10, (5, 2))
    out, state = sm(ids)
    assert spy == [True]
    out_t, state_t, _ = sm.forward(ids, train=True)
    _same(out, out_t)
    _same(state, state_t)
    with pytest.raises(TypeError, match="train must be a bool"):
        sm.forward(ids, train=1)
