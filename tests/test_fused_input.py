"""The fused input projection.

The forward pass can compute x_t W_ih^T step by step inside the block loop instead of as one GEMM
over all steps (``fused_input`` in csrc/kernels/driver_impl.h). It does so on its own for batches of
16+ rows (or 8+ rows with at most 8 input values per row, or with any input where the row tile has 8
rows, as on AVX-512) when the layer's weights are within 8 MB
and the kernel's panel width divides the hidden size; ``_core.core_set_fused_input_mode(1)`` forces
it wherever the shape allows, so that every case here runs it. Hidden 64 is a multiple of every
panel width (8-32 values); batches 8, 13 (a one-row tile) and 16.
Checked with the path forced: every cell against torch (outputs, final states, every gradient;
float64 and float32), inference equal to the training forward, ragged lengths, layers of different
input sizes, bitwise identity across thread counts, the LSTM variants and clip cells against their
numpy references. Then the automatic choice, on both sides of its batch and input-size bounds.
"""
import numpy as np
import pytest
import torch  # noqa: F401  (the oracle must be importable; see conftest)

import rnnfast as rf
from rnnfast import _core
from conftest import (
    CELLS, PARITY_TOL, assert_all_close, assert_rel, is_lstm, make_data, make_pair,
    ragged_lengths, rel_err, rf_infer, rf_run, torch_run,
)
from test_clip_cells import _make as make_clip_model
from test_clip_cells import reference as clip_reference
from test_lstm_variants import reference as lstm_variant_reference
from test_threads import _assert_bitwise, _everything

H = 64


@pytest.fixture(autouse=True)
def fused_everywhere():
    _core.core_set_fused_input_mode(1)
    yield
    _core.core_set_fused_input_mode(-1)

CASES = [  # (batch, input size, layers, bidirectional, ragged, batch_first)
    (8, 24, 2, True, True, False),
    (13, 64, 1, False, False, True),
    (16, 5, 3, False, True, True),
]


def _case_id(c):
    B, I, L, bd, rg, bf = c
    return f"B{B}-I{I}-L{L}-{'bi' if bd else 'uni'}-{'ragged' if rg else 'equal'}-" + (
        "bf" if bf else "tf")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
@pytest.mark.parametrize("cell", CELLS)
def test_parity_with_torch(cell, case, dtype):
    B, I, L, bidir, ragged, bf = case
    T = 7
    seed = 40 + CELLS.index(cell) + 7 * CASES.index(case)
    rng = np.random.default_rng(seed)
    m, tm = make_pair(cell, I, H, L, True, bf, bidir, dtype, seed=seed)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, bidir, bf, dtype)
    lengths = ragged_lengths(rng, B, T) if ragged else None
    ref = torch_run(tm, cell, x, hx, lengths, ry, rh, rc, bf)
    got = rf_run(m, cell, x, hx, lengths, ry, rh, rc)
    tol = PARITY_TOL[dtype]
    ctx = f"{cell} {_case_id(case)} {dtype}"
    assert_all_close(got, ref, tol, ctx)
    y, h_n, c_n = rf_infer(m, cell, x, hx, lengths)
    assert_rel(y, ref["y"], tol, ctx + " inference y")
    assert_rel(h_n, ref["h_n"], tol, ctx + " inference h_n")
    if is_lstm(cell):
        assert_rel(c_n, ref["c_n"], tol, ctx + " inference c_n")
    if ragged:
        yv = y.transpose(1, 0, 2) if bf else y
        for b, n in enumerate(lengths):
            assert np.all(yv[n:, b] == 0), f"{ctx}: output past the length of row {b}"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_bitwise_identical_across_thread_counts(cell, dtype, restore_threads):
    B, I, L, T = 13, 20, 2, 9
    rng = np.random.default_rng(70 + CELLS.index(cell))
    m, _ = make_pair(cell, I, H, L, True, False, True, dtype, seed=3)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, True, False, dtype)
    lengths = ragged_lengths(rng, B, T)
    results = {}
    for n in (1, 2, 3):
        rf.set_num_threads(n)
        results[n] = _everything(m, cell, x, hx, lengths, ry, rh, rc)
    assert np.any(results[1]["dx"] != 0) and np.all(np.isfinite(results[1]["y"]))
    for n in (2, 3):
        _assert_bitwise(results[1], results[n], f"{cell} {dtype} 1 vs {n} threads")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("flags", [dict(peephole=True), dict(input_forget=True, clip=0.8),
                                   dict(peephole=True, input_forget=True, clip=0.8)],
                         ids=["peephole", "input_forget+clip", "all"])
def test_lstm_variants_match_reference(flags, dtype):
    T, B, I, L, D = 6, 9, 12, 2, 2
    lengths = [6, 3, 5, 6, 1, 4, 6, 2, 5]
    rng = np.random.default_rng(11)
    m = rf.LSTM(I, H, num_layers=L, bidirectional=True, dtype=dtype, seed=4, **flags)
    sd = {k: 2.0 * v for k, v in m.state_dict().items()}  # gates saturate, clamps bite
    m.load_state_dict(sd)
    x = rng.standard_normal((T, B, I))
    hx = (0.5 * rng.standard_normal((L * D, B, H)), rng.standard_normal((L * D, B, H)))
    y_ref, hn_ref, cn_ref, pre = lstm_variant_reference(
        sd, x, hx, lengths, L, D, H, True, flags.get("peephole", False),
        flags.get("input_forget", False), flags.get("clip"))
    if "clip" in flags:
        assert 0.1 < np.mean(np.abs(pre) > flags["clip"]) < 0.9
    tol = 1e-12 if dtype == "float64" else 1e-5
    for train in (False, True):
        y, (hn, cn), _ = m.forward(x.astype(dtype), tuple(s.astype(dtype) for s in hx), lengths,
                                   train=train)
        assert rel_err(y, y_ref) < tol and rel_err(hn, hn_ref) < tol and rel_err(cn, cn_ref) < tol


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "gru", "gru_rb"])
def test_clip_cells_match_reference(kind, dtype):
    T, B, I, L, D, clip = 6, 10, 7, 2, 2, 0.9
    lengths = [6, 2, 5, 6, 1, 3, 6, 4, 6, 5]
    rng = np.random.default_rng(12)
    m = make_clip_model(kind, I, H, num_layers=L, bidirectional=True, dtype=dtype, seed=6,
                        clip=clip)
    sd = {k: 2.0 * v for k, v in m.state_dict().items()}
    m.load_state_dict(sd)
    x = rng.standard_normal((T, B, I))
    h0 = 0.5 * rng.standard_normal((L * D, B, H))
    y_ref, hn_ref, pre = clip_reference(kind, sd, x, h0, lengths, L, D, H, True, clip)
    assert 0.1 < np.mean(np.abs(pre) > clip) < 0.9
    tol = 1e-12 if dtype == "float64" else 1e-5
    for train in (False, True):
        y, hn, _ = m.forward(x.astype(dtype), h0.astype(dtype), lengths, train=train)
        assert rel_err(y, y_ref) < tol and rel_err(hn, hn_ref) < tol


def _lstm_outputs(m, x, lengths):
    y, (hn, cn), tape = m.forward(x, None, lengths, train=True)
    dx, _ = m.backward(tape, np.ones_like(y), None)
    return [y, hn, cn, dx, m(x, lengths=lengths)[0]]


# 8 rows with more than 8 input values each are fused only where the row tile has 8 rows (AVX-512).
_EIGHT_ROW_TILES = rf.build_info()["isa"] == "avx512"


@pytest.mark.parametrize("B,I,fused", [(20, 96, True), (8, 64, True), (8, 65, _EIGHT_ROW_TILES),
                                       (9, 300, _EIGHT_ROW_TILES), (7, 300, False),
                                       (2, 8, False)])
def test_automatic_choice(B, I, fused):
    # float32 LSTM, H = 64 (weights far below the 8 MB budget): fused from 16 rows on, or from 8
    # rows with at most 8 input values per row (or any input, with 8-row tiles). The fused step's
    # tiles and the all-steps GEMM's sum in another order: the paths differ in rounding.
    T = 30
    rng = np.random.default_rng(9)
    m = rf.LSTM(I, H, seed=2)
    x = rng.standard_normal((T, B, I)).astype(np.float32)
    lengths = rng.integers(1, T + 1, B)
    runs = {}
    for mode in (-1, 0, 1):
        _core.core_set_fused_input_mode(mode)
        assert _core.core_fused_input_mode() == mode
        m.zero_grad()
        runs[mode] = _lstm_outputs(m, x, lengths)
    same = runs[1] if fused else runs[0]
    other = runs[0] if fused else runs[1]
    for a, b in zip(runs[-1], same):
        assert np.array_equal(a, b)
    # the two paths round differently, and agree to float32 rounding
    assert any(not np.array_equal(a, b) for a, b in zip(runs[-1], other))
    for a, b in zip(runs[-1], other):
        assert rel_err(a, b) < 1e-5


def test_bad_mode_is_refused():
    for bad in (-2, 2, 7):
        with pytest.raises(ValueError, match="fused input mode"):
            _core.core_set_fused_input_mode(bad)
    assert _core.core_fused_input_mode() == 1  # unchanged (the fixture set 1)
