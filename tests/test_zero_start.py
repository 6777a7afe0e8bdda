"""Calls without an initial state.

The first step of such a call multiplies W_hh by a zero state, so the core leaves that product out
(its tiles are zeros; the backward's dW_hh leaves out the first step's zero rows). That must change
nothing a user can see: every output equals the one of the same call with an explicit zero state
(the full product), exactly for the forward, the input, state and bias gradients and dW_ih; dW_hh
is summed over fewer (zero) terms and may differ in the last bits. A W_hh holding Inf or NaN turns
0 * w into NaN, so such weights keep the product (the check is made when the weights are packed).
Checked for every cell and variant, on every forward path (one-panel and wide blocks, the input
projection as one GEMM or fused per step, merged with W_hh or not), one and two layers in both
directions (with dropout between them too), ragged batches, float32 and float64, one and several
steps.
"""
import numpy as np
import pytest

import rnnfast as rf
from rnnfast import _core

I = 7

MODELS = {
    "rnn_tanh": lambda H, L, D, dt: rf.RNN(I, H, L, bidirectional=D, dtype=dt, seed=3),
    "rnn_relu": lambda H, L, D, dt: rf.RNN(I, H, L, nonlinearity="relu", bidirectional=D, dtype=dt,
                                        seed=3),
    "rnn_clip": lambda H, L, D, dt: rf.RNN(I, H, L, bidirectional=D, dtype=dt, seed=3, clip=0.5),
    "lstm": lambda H, L, D, dt: rf.LSTM(I, H, L, bidirectional=D, dtype=dt, seed=3),
    "lstm_peephole": lambda H, L, D, dt: rf.LSTM(I, H, L, bidirectional=D, dtype=dt, seed=3,
                                              peephole=True),
    "lstm_clip": lambda H, L, D, dt: rf.LSTM(I, H, L, bidirectional=D, dtype=dt, seed=3, clip=0.4),
    "lstm_input_forget": lambda H, L, D, dt: rf.LSTM(I, H, L, bidirectional=D, dtype=dt, seed=3,
                                                  input_forget=True),
    "gru": lambda H, L, D, dt: rf.GRU(I, H, L, bidirectional=D, dtype=dt, seed=3),
    "gru_clip": lambda H, L, D, dt: rf.GRU(I, H, L, bidirectional=D, dtype=dt, seed=3, clip=0.3),
    "gru_reset_before": lambda H, L, D, dt: rf.GRU(I, H, L, bidirectional=D, dtype=dt, seed=3,
                                                linear_before_reset=False),
    "gru_reset_before_clip": lambda H, L, D, dt: rf.GRU(I, H, L, bidirectional=D, dtype=dt,
                                                     seed=3, linear_before_reset=False, clip=0.3),
    "lstm_dropout": lambda H, L, D, dt: rf.LSTM(I, H, L, bidirectional=D, dtype=dt, seed=3,
                                                dropout=0.3),
}

# (batch, fused-input mode, wide-blocks mode, hidden size): one-panel and wide blocks at small
# batches, the input projection per step (merged into the recurrent tile for all but the GRU) or as
# one GEMM. Hidden 40 leaves a partial last panel at every panel width (8-32); the fused path needs
# whole panels, so it runs at 64.
PATHS = [(1, 0, 0, 40), (1, 0, 1, 40), (3, 0, 1, 40), (3, 1, 0, 64), (8, 0, 0, 40), (8, 1, 0, 64)]


@pytest.fixture
def modes():
    yield
    _core.core_set_fused_input_mode(-1)
    _core.core_set_wide_blocks_mode(-1)


def _zeros(m, B):
    z = np.zeros((m.num_layers * (2 if m.bidirectional else 1), B, m.hidden_size), m.dtype)
    return (z, z.copy()) if isinstance(m, rf.LSTM) else z


def _flat(state):
    return list(state) if isinstance(state, tuple) else [state]


def _run(m, x, hx, lengths, dy, dst):
    """Inference outputs, training outputs and every gradient of one call."""
    out = {}
    y, st = m(x, hx, lengths=lengths)
    out["infer y"] = y.copy()
    for i, s in enumerate(_flat(st)):
        out[f"infer state{i}"] = s.copy()
    m.zero_grad()
    y, st, tape = m.forward(x, hx, lengths=lengths, train=True)
    out["y"] = y.copy()
    for i, s in enumerate(_flat(st)):
        out[f"state{i}"] = s.copy()
    dx, dhx = m.backward(tape, dy, dst)
    out["dx"] = dx.copy()
    for i, s in enumerate(_flat(dhx)):
        out[f"dstate0_{i}"] = s.copy()
    for name, g in m.named_grads():
        out["grad " + name] = g.copy()
    return out


@pytest.mark.parametrize("T", [1, 4])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("path", PATHS, ids=[f"B{b}-fuse{f}-wide{w}-H{h}" for b, f, w, h in PATHS])
@pytest.mark.parametrize("kind", list(MODELS))
def test_same_as_explicit_zero_state(kind, path, dtype, T, modes):
    B, fuse, wide, H = path
    _core.core_set_fused_input_mode(fuse)
    _core.core_set_wide_blocks_mode(wide)
    rng = np.random.default_rng(17)
    for L, D in ((1, False), (2, True)):
        m = MODELS[kind](H, L, D, dtype)
        x = rng.standard_normal((T, B, I)).astype(dtype)
        lengths = None if B < 3 or T == 1 else np.array([T, 2, 1] + [T] * (B - 3))
        dy = rng.standard_normal((T, B, H * (2 if D else 1))).astype(dtype)
        dst = tuple(rng.standard_normal(s.shape).astype(dtype) for s in _flat(_zeros(m, B)))
        dst = dst if isinstance(m, rf.LSTM) else dst[0]
        draws = m._rng.bit_generator.state  # the same dropout masks in both runs
        got = _run(m, x, None, lengths, dy, dst)
        m._rng.bit_generator.state = draws
        ref = _run(m, x, _zeros(m, B), lengths, dy, dst)
        assert set(got) == set(ref)
        for k in ref:
            if k.startswith("grad weight_hh"):
                # fewer terms in the sum: the last bits may differ
                tol = 1e-12 if dtype == "float64" else 1e-5
                scale = max(1.0, float(np.abs(ref[k]).max()))
                assert np.abs(got[k] - ref[k]).max() <= tol * scale, (kind, L, k)
            else:
                np.testing.assert_array_equal(got[k], ref[k], err_msg=f"{kind} L{L} {k}")
        assert np.any(ref["grad weight_hh_l0"] != 0) or T == 1


@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_reset_before", "rnn_tanh"])
def test_nonfinite_recurrent_weights_still_poison_the_first_step(kind, bad):
    """0 * Inf and 0 * NaN are NaN: one bad W_hh value must show in a one-step call without a
    state exactly as in the full product (here only in the last layer's reverse direction), and
    the skip must come back once the weights are finite again."""
    H = 40
    m = MODELS[kind](H, 2, True, "float32")
    x = np.random.default_rng(2).standard_normal((1, 2, I)).astype(np.float32)
    sd = m.state_dict()
    good = sd["weight_hh_l1_reverse"].copy()
    sd["weight_hh_l1_reverse"][5, 3] = bad
    m.load_state_dict(sd)
    y, _ = m(x)
    y_ref, _ = m(x, _zeros(m, 2))
    assert np.isnan(y[..., H:]).any()
    assert not np.isnan(y[..., :H]).any()
    np.testing.assert_array_equal(y, y_ref)
    sd["weight_hh_l1_reverse"] = good
    m.load_state_dict(sd)
    y, _ = m(x)
    assert np.isfinite(y).all()
    np.testing.assert_array_equal(y, m(x, _zeros(m, 2))[0])


@pytest.mark.parametrize("kind", ["lstm", "gru", "gru_reset_before", "rnn_relu"])
def test_bitwise_the_same_on_any_thread_count(kind, restore_threads):
    """Calls without a state give the same bits on 1 and 2 threads, forward and backward."""
    rng = np.random.default_rng(23)
    m = MODELS[kind](96, 2, True, "float32")
    x = rng.standard_normal((3, 5, I)).astype(np.float32)
    dy = rng.standard_normal((3, 5, 192)).astype(np.float32)
    out = {}
    for n in (1, 2):
        rf.set_num_threads(n)
        assert _core.core_threads_for_call(m._desc(3, 5)) == n
        out[n] = _run(m, x, None, None, dy, None)
    for k in out[1]:
        np.testing.assert_array_equal(out[1][k], out[2][k], err_msg=k)
