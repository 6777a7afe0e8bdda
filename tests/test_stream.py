"""Streaming inference: chunks of any sizes give the numbers of one full call; a step allocates
nothing after warm-up; reset and state access; bidirectional models are refused."""
import tracemalloc

import numpy as np
import pytest

import rnnfast as rf

CELLS = {"lstm": rf.LSTM, "gru": rf.GRU, "rnn": rf.RNN}
TOL = {"float64": dict(rtol=1e-12, atol=1e-13), "float32": dict(rtol=2e-5, atol=2e-6)}


def _state_close(a, b, tol):
    if isinstance(a, tuple):
        for u, v in zip(a, b):
            np.testing.assert_allclose(u, v, **tol)
    else:
        np.testing.assert_allclose(a, b, **tol)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize("chunks", [[1] * 13, [5, 1, 7], [13], [2, 3, 4, 4]])
def test_chunks_equal_full_call(cell, dtype, chunks):
    rng = np.random.default_rng(3)
    m = CELLS[cell](5, 19, num_layers=2, dtype=dtype, seed=1)
    x = rng.standard_normal((13, 3, 5)).astype(dtype)
    y_full, state_full = m(x)
    s = m.stream(batch=3)
    ys, t = [], 0
    for c in chunks:
        if c == 1:
            ys.append(s.step(x[t]).copy()[None])
        else:
            ys.append(s.feed(x[t:t + c]))
        t += c
    np.testing.assert_allclose(np.concatenate(ys), y_full, **TOL[dtype])
    _state_close(s.state, state_full, TOL[dtype])


def test_batch_first_feed_and_initial_state():
    rng = np.random.default_rng(4)
    m = rf.LSTM(4, 6, batch_first=True, dtype="float64", seed=2)
    x = rng.standard_normal((2, 9, 4))
    h0, c0 = rng.standard_normal((1, 2, 6)), rng.standard_normal((1, 2, 6))
    y_full, _ = m(x, hx=(h0, c0))
    s = m.stream(batch=2)
    s.state = (h0, c0)
    y = np.concatenate([s.feed(x[:, :4]), s.feed(x[:, 4:])], axis=1)
    np.testing.assert_allclose(y, y_full, rtol=1e-12, atol=1e-13)


def test_reset_rows_and_all():
    rng = np.random.default_rng(5)
    m = rf.GRU(3, 8, dtype="float64", seed=3)
    s = m.stream(batch=3)
    xs = rng.standard_normal((4, 3, 3))
    for x in xs:
        s.step(x)
    before = s.state.copy()
    s.reset(rows=[1])
    after = s.state
    assert np.all(after[:, 1] == 0)
    np.testing.assert_array_equal(after[:, [0, 2]], before[:, [0, 2]])
    # a reset row continues exactly like a fresh stream
    fresh = m.stream(batch=1)
    y_row = s.step(xs[0])[1].copy()
    np.testing.assert_allclose(y_row, fresh.step(xs[0][1:2])[0], rtol=1e-12)
    s.reset()
    assert not np.any(s.state)
    with pytest.raises(ValueError, match="rows"):
        s.reset(rows=[3])


def test_step_output_buffer_and_no_allocation_after_warmup():
    m = rf.LSTM(16, 32, seed=0)
    s = m.stream(batch=1)
    x = np.ones((1, 16), np.float32)
    out = np.empty((1, 32), np.float32)
    for _ in range(10):
        s.step(x, out=out)
    tracemalloc.start()
    snap0 = tracemalloc.take_snapshot()
    for _ in range(500):
        s.step(x, out=out)
    snap1 = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(st.size_diff for st in snap1.compare_to(snap0, "filename") if st.size_diff > 0)
    assert grown < 4096, f"{grown} bytes still allocated after 500 steps"
    packed = m._packed
    s.step(x, out=out)
    assert m._packed is packed  # not repacked


def test_refuses_bidirectional_and_bad_input():
    with pytest.raises(ValueError, match="unidirectional"):
        rf.LSTM(3, 4, bidirectional=True).stream()
    s = rf.RNN(3, 4).stream(batch=2)
    with pytest.raises(ValueError, match=r"\(2, 3\)"):
        s.step(np.zeros((1, 3)))
    with pytest.raises(TypeError, match="floating"):
        s.step(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="batch of 3"):
        s.feed(np.zeros((4, 3, 3)))
    with pytest.raises(ValueError, match="batch"):
        rf.RNN(3, 4).stream(batch=0)


def test_parameter_change_is_seen_by_the_stream():
    m = rf.RNN(3, 4, dtype="float64", seed=0)
    s = m.stream()
    x = np.ones((1, 3))
    y0 = s.step(x).copy()
    s.reset()
    sd = m.state_dict()
    sd["weight_ih_l0"] = sd["weight_ih_l0"] * 2
    m.load_state_dict(sd)
    y1 = s.step(x).copy()
    np.testing.assert_allclose(y1, m(x[None])[0][0], rtol=1e-12)
    assert not np.allclose(y0, y1)


@pytest.mark.parametrize("cell", list(CELLS))
def test_zero_state_steps_match_explicit_states(cell):
    """A new or reset stream passes no initial state, so its first step skips the recurrent
    product of the zero state (as a model call without hx does): the numbers must be those of a
    call with that state spelled out, and a state set afterwards must be used."""
    rng = np.random.default_rng(8)
    m = CELLS[cell](5, 24, num_layers=2, dtype="float32", seed=4)
    x = rng.standard_normal((3, 2, 5)).astype(np.float32)
    lstm = cell == "lstm"
    zeros = np.zeros((2, 2, 24), np.float32)
    s = m.stream(batch=2)
    first = s.step(x[0]).copy()
    np.testing.assert_array_equal(first, m(x[:1], (zeros, zeros) if lstm else zeros)[0][0])
    second = s.step(x[1]).copy()
    # (a two-step call may sum the input projection in another order: float rounding)
    np.testing.assert_allclose(second, m(x[:2])[0][1], **TOL["float32"])
    s.reset()
    np.testing.assert_array_equal(s.step(x[0]), first)
    h = rng.standard_normal((2, 2, 24)).astype(np.float32)
    state = (h, 2 * h) if lstm else h
    s.state = state
    np.testing.assert_array_equal(s.step(x[2]), m(x[2:3], state)[0][0])
    s.state = None
    np.testing.assert_array_equal(s.step(x[0]), first)
    s.reset()
    np.testing.assert_array_equal(s.feed(x[:2]), m(x[:2])[0])  # feed is that call
