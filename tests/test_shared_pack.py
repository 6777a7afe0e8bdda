"""Backward of an LSTM or Elman RNN over 8+ steps computes dW_ih and dW_hh in one pass over dG^T
(gemm2_mt in csrc/gemm.h, kSharedPackMinSteps in kernels/driver_impl.h), over every row, the
zero-state step's included. Checked against PyTorch for every gradient (with and without an
initial state, ragged lengths, two layers, both directions), for the same bits on 1 and 2 threads,
and for the same bits with no state as with an explicit zero state (weight_hh included: both sum
the same rows). The GRU keeps two passes (its dGh is not dGx) and is checked here too."""
import numpy as np
import pytest

import rnnfast as rf
from conftest import (CELLS, PARITY_TOL, assert_all_close, make_data, make_pair,
                      ragged_lengths, rf_run, torch_run)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("with_hx", [False, True])
@pytest.mark.parametrize("ragged", [False, True])
@pytest.mark.parametrize("cell", CELLS)
def test_many_steps_match_torch(cell, ragged, with_hx, dtype):
    seed = 11 + CELLS.index(cell) * 4 + 2 * ragged + with_hx
    rng = np.random.default_rng(seed)
    T, B, I, H, L, bd = 9, 5, 6, 33, 2, True
    m, tm = make_pair(cell, I, H, L, True, False, bd, dtype, seed=seed)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, bd, False, dtype, with_hx=with_hx)
    lengths = ragged_lengths(rng, B, T) if ragged else None
    ref = torch_run(tm, cell, x, hx, lengths, ry, rh, rc, False, zero_hx_grad=not with_hx)
    got = rf_run(m, cell, x, hx, lengths, ry, rh, rc, want_dhx=with_hx)
    if not with_hx:
        ref = {k: v for k, v in ref.items() if k in got}
    assert_all_close(got, ref, PARITY_TOL[dtype], f"{cell} T{T} ragged={ragged} hx={with_hx}")


def _grads(m, x, hx, dy):
    m.zero_grad()
    y, _, tape = m.forward(x, hx)
    dx, _ = m.backward(tape, dy)
    return {"dx": dx.copy(), **{n: g.copy() for n, g in m.named_grads()}}


def _zero_state(m, B):
    z = np.zeros((m.num_layers * (2 if m.bidirectional else 1), B, m.hidden_size), np.float32)
    return (z, z.copy()) if isinstance(m, rf.LSTM) else z


@pytest.mark.parametrize("T", [7, 8, 12])
@pytest.mark.parametrize("cls", [rf.LSTM, rf.RNN, rf.GRU])
def test_no_state_same_bits_as_zero_state_and_on_any_thread_count(cls, T, restore_threads):
    # 40 rows: T*B > 256, so the KC chunks of the weight-gradient GEMMs (csrc/gemm.h) would start
    # elsewhere if the zero-state step's rows were left out
    B = 40
    rng = np.random.default_rng(T)
    m = cls(20, 40, num_layers=2, bidirectional=True, seed=T)
    x = rng.standard_normal((T, B, 20)).astype(np.float32)
    dy = rng.standard_normal((T, B, 80)).astype(np.float32)
    runs = {}
    for n in (1, 2):
        rf.set_num_threads(n)
        runs[n] = _grads(m, x, None, dy)
    for k in runs[1]:
        np.testing.assert_array_equal(runs[1][k], runs[2][k], err_msg=k)
    explicit = _grads(m, x, _zero_state(m, B), dy)
    shared = T >= 8 and cls is not rf.GRU  # the one-pass path
    for k, v in explicit.items():
        if k.startswith("weight_hh") and not shared:
            # the two-pass path skips the zero rows without a state: the last bits may differ
            np.testing.assert_allclose(runs[1][k], v, rtol=0, atol=1e-5 * max(1, np.abs(v).max()))
        else:
            np.testing.assert_array_equal(runs[1][k], v, err_msg=k)
