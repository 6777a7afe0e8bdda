"""Every other forward call walks the weights in the opposite order (so that the part of them a call
left in L2 is read first by the next). The order must never show in the results: consecutive
calls, which alternate the order, give the same bits as each other and as other thread counts."""

import numpy as np
import pytest

import rnnfast as rf
from conftest import CELLS, NP_DTYPES, is_lstm, rf_model

I, H = 40, 96  # 3-4 gates x 96 units: several tiles and blocks per thread


def _copy(out):
    y, st = out
    st = st if isinstance(st, tuple) else (st,)
    return [np.array(y, copy=True)] + [np.array(s, copy=True) for s in st]


def _calls(m, x, hx, n):
    """n consecutive calls of m on the same input (the walk order alternates with every call of
    an odd number of steps; a one-step call with T == 1 in between keeps it alternating for even
    step counts)."""
    x1 = x[:1]
    outs = []
    for _ in range(n):
        outs.append(_copy(m(x, hx=hx)))
        if x.shape[0] % 2 == 0:
            m(x1)
    return outs


@pytest.mark.parametrize("dtype", list(NP_DTYPES))
@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("T,B,with_state", [(1, 1, False), (1, 1, True), (1, 3, True),
                                            (3, 2, True), (4, 1, False)])
def test_alternating_order_same_bits(cell, dtype, T, B, with_state, restore_threads):
    rng = np.random.default_rng(7)
    dtype = NP_DTYPES[dtype]
    m = rf_model(cell, I, H, 2, dtype=dtype, seed=11)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    hx = None
    if with_state:
        h0 = rng.standard_normal((2, B, H)).astype(dtype)
        hx = (h0, rng.standard_normal((2, B, H)).astype(dtype)) if is_lstm(cell) else h0
    results = {}
    for n in (1, 2, 3):
        rf.set_num_threads(n)
        results[n] = _calls(m, x, hx, 4)
    ref = results[1][0]
    for n, outs in results.items():
        for k, out in enumerate(outs):
            for a, b in zip(ref, out):
                assert np.array_equal(a, b), f"{n} threads, call {k}: results differ"
    # and they are the right numbers: a float64 model (same weights) agrees to float32 rounding
    m64 = rf_model(cell, I, H, 2, dtype=np.float64, seed=11)
    m64.load_state_dict({k: v.astype(np.float64) for k, v in m.state_dict().items()})
    hx64 = None if hx is None else (tuple(h.astype(np.float64) for h in hx)
                                    if isinstance(hx, tuple) else hx.astype(np.float64))
    want = _copy(m64(x.astype(np.float64), hx=hx64))
    for a, b in zip(ref, want):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 if dtype == np.float32 else 1e-12)


@pytest.mark.parametrize("cell", CELLS)
def test_stream_steps_same_bits_in_either_order(cell, restore_threads):
    """Stream.step calls alternate the walk order too: a stream whose steps are interleaved with
    one-step calls of the model (which shifts every step's order) gives the same bits, on any
    thread count, and the sequence call's outputs (to rounding: that call's input projection is
    one GEMM over all steps, summed in another order)."""
    rng = np.random.default_rng(8)
    m = rf_model(cell, I, H, 1, dtype=np.float32, seed=12)
    x = rng.standard_normal((6, 2, I)).astype(np.float32)
    runs = []
    for n, shift in ((1, False), (2, False), (2, True), (3, True)):
        rf.set_num_threads(n)
        s = m.stream(batch=2)
        steps = []
        for t in range(6):
            if shift:
                m(x[:1])
            steps.append(np.array(s.step(x[t]), copy=True))
        runs.append(np.stack(steps))
    for k, got in enumerate(runs[1:], 1):
        assert np.array_equal(got, runs[0]), f"run {k} differs"
    np.testing.assert_allclose(runs[0], m(x)[0], rtol=0, atol=1e-6)
