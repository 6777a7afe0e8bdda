"""Small-batch forward in wide blocks.

At batches of 1-4 rows the forward time loop schedules blocks of 4 kernel panels instead of 1 when
every thread gets at least 4 panels (``forward_panels_per_block`` in csrc/geometry.h): the GEMM
tiles of the four panels first, then the gate math of all their units in one pass. The per-unit
operations are the same, so every result must be bitwise that of one-panel blocks.
``_core.core_set_wide_blocks_mode`` forces either path (0 never, 1 always) so that both run at any
shape.
Checked: every cell, the LSTM variants and the clip cells (whose gate math is not staged), at a
hidden size with a partial last panel and a partial last block, batches of 1 and 3, inference and
training with all gradients, sequences shorter than T, 1 and 2 threads; parity with torch and the
numpy references on the wide path; the automatic choice and bad modes.
"""
import numpy as np
import pytest
import torch  # noqa: F401  (the oracle must be importable; see conftest)

import rnnfast as rf
from rnnfast import _core
from conftest import (
    CELLS, PARITY_TOL, assert_all_close, is_lstm, make_data, make_pair, rel_err, rf_run,
    torch_run,
)
from test_clip_cells import _make as make_clip_model
from test_clip_cells import reference as clip_reference
from test_lstm_variants import reference as lstm_variant_reference
from test_threads import _assert_bitwise, _everything

# 100 = 6 * 16 + 4: a partial last panel for every panel width (8-32 values), and a last block of
# fewer than 4 panels for most of them.
T, I, H, L = 9, 11, 100, 2


@pytest.fixture
def wide_mode():
    yield
    _core.core_set_wide_blocks_mode(-1)


def _both_paths(m, run, B=1):
    """run() under one-panel blocks and under wide blocks, on 1 and 2 threads."""
    out = {}
    for mode in (0, 1):
        _core.core_set_wide_blocks_mode(mode)
        for n in (1, 2):
            rf.set_num_threads(n)
            assert _core.core_forward_panels_per_block(m._desc(T, B)) == (4 if mode else 1)
            out[mode, n] = run()
    return out


@pytest.mark.parametrize("B,lengths", [(1, None), (1, [T - 3]), (3, None), (3, [T - 3, T, 2])],
                         ids=["B1-full", "B1-short", "B3-full", "B3-ragged"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_bitwise_same_as_one_panel_blocks(cell, dtype, B, lengths, wide_mode, restore_threads):
    rng = np.random.default_rng(500 + CELLS.index(cell))
    m, _ = make_pair(cell, I, H, L, True, False, True, dtype, seed=5)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, True, False, dtype)
    out = _both_paths(m, lambda: _everything(m, cell, x, hx, lengths, ry, rh, rc), B)
    ref = out[0, 1]
    assert np.any(ref["dx"] != 0) and np.all(np.isfinite(ref["y"]))
    for b, n in enumerate(lengths or []):
        assert np.all(ref["y"][n:, b] == 0)
    for key, got in out.items():
        _assert_bitwise(ref, got, f"{cell} {dtype} mode {key[0]}, {key[1]} threads")


@pytest.mark.parametrize("B,lengths", [(1, None), (4, [T - 3, T, 2, 5])], ids=["B1", "B4-ragged"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("cell", CELLS)
def test_wide_blocks_match_torch(cell, dtype, B, lengths, wide_mode):
    _core.core_set_wide_blocks_mode(1)
    rng = np.random.default_rng(600 + CELLS.index(cell))
    m, tm = make_pair(cell, I, H, L, True, False, True, dtype, seed=6)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, True, False, dtype)
    ref = torch_run(tm, cell, x, hx, lengths, ry, rh, rc, False)
    got = rf_run(m, cell, x, hx, lengths, ry, rh, rc)
    assert_all_close(got, ref, PARITY_TOL[dtype], f"{cell} {dtype} batch {B}, wide blocks")


def test_fused_input_projection_keeps_one_panel_blocks(wide_mode):
    # Forcing the fused input projection at batch 1 (a mode for tests) and wide blocks together:
    # wide blocks compute no fused projection, so those layers keep one-panel blocks.
    _core.core_set_wide_blocks_mode(1)
    _core.core_set_fused_input_mode(1)
    try:
        for cell in CELLS:
            rng = np.random.default_rng(650 + CELLS.index(cell))
            m, tm = make_pair(cell, I, 64, L, True, False, True, "float64", seed=6)
            x, hx, ry, rh, rc = make_data(rng, cell, T, 1, I, 64, L, True, False, "float64")
            ref = torch_run(tm, cell, x, hx, None, ry, rh, rc, False)
            got = rf_run(m, cell, x, hx, None, ry, rh, rc)
            assert_all_close(got, ref, PARITY_TOL["float64"], f"{cell} fused, batch 1")
    finally:
        _core.core_set_fused_input_mode(-1)


def _forward_all(m, x, hx):
    runs = []
    for train in (False, True):
        y, st, _ = m.forward(x, hx, None, train=train)
        runs.append(np.array(y))
        runs.extend(np.array(s) for s in (st if isinstance(st, tuple) else (st,)))
    return {str(i): r for i, r in enumerate(runs)}


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("flags", [dict(peephole=True), dict(input_forget=True, clip=0.8)],
                         ids=["peephole", "input_forget+clip"])
def test_lstm_variants(flags, dtype, wide_mode, restore_threads):
    rng = np.random.default_rng(13)
    m = rf.LSTM(I, H, num_layers=L, bidirectional=True, dtype=dtype, seed=4, **flags)
    sd = {k: 2.0 * v for k, v in m.state_dict().items()}  # gates saturate, clamps bite
    m.load_state_dict(sd)
    x = rng.standard_normal((T, 1, I))
    hx = (0.5 * rng.standard_normal((2 * L, 1, H)), rng.standard_normal((2 * L, 1, H)))
    xd, hxd = x.astype(dtype), tuple(s.astype(dtype) for s in hx)
    out = _both_paths(m, lambda: _forward_all(m, xd, hxd))
    for key, got in out.items():
        _assert_bitwise(out[0, 1], got, f"{flags} {dtype} mode {key[0]}, {key[1]} threads")
    y_ref, hn_ref, cn_ref, _ = lstm_variant_reference(
        sd, x, hx, None, L, 2, H, True, flags.get("peephole", False),
        flags.get("input_forget", False), flags.get("clip"))
    tol = 1e-12 if dtype == "float64" else 1e-5
    y, hn, cn = out[1, 2]["0"], out[1, 2]["1"], out[1, 2]["2"]
    assert rel_err(y, y_ref) < tol and rel_err(hn, hn_ref) < tol and rel_err(cn, cn_ref) < tol


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("kind", ["rnn_tanh", "rnn_relu", "gru"])
def test_clip_cells(kind, dtype, wide_mode, restore_threads):
    clip = 0.9
    rng = np.random.default_rng(14)
    m = make_clip_model(kind, I, H, num_layers=L, bidirectional=True, dtype=dtype, seed=6,
                        clip=clip)
    sd = {k: 2.0 * v for k, v in m.state_dict().items()}
    m.load_state_dict(sd)
    x = rng.standard_normal((T, 1, I))
    h0 = 0.5 * rng.standard_normal((2 * L, 1, H))
    out = _both_paths(m, lambda: _forward_all(m, x.astype(dtype), h0.astype(dtype)))
    for key, got in out.items():
        _assert_bitwise(out[0, 1], got, f"{kind} clip {dtype} mode {key[0]}, {key[1]} threads")
    y_ref, hn_ref, _ = clip_reference(kind, sd, x, h0, None, L, 2, H, True, clip)
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert rel_err(out[1, 2]["0"], y_ref) < tol and rel_err(out[1, 2]["1"], hn_ref) < tol


def test_automatic_choice(wide_mode, restore_threads):
    rf.set_num_threads(1)
    _core.core_set_wide_blocks_mode(-1)
    assert _core.core_wide_blocks_mode() == -1
    m = rf.LSTM(16, 512, seed=0)  # 16+ panels of every width
    for B in (1, 2, 4):
        assert _core.core_forward_panels_per_block(m._desc(5, B)) == 4
    assert _core.core_forward_panels_per_block(m._desc(5, 5)) == 1  # batches of 1-4 only
    small = rf.LSTM(16, 8, seed=0)  # one panel
    assert _core.core_forward_panels_per_block(small._desc(5, 1)) == 1
    rb = rf.GRU(16, 512, linear_before_reset=False, seed=0)  # its own two-phase loop
    for mode in (-1, 1):
        _core.core_set_wide_blocks_mode(mode)
        assert _core.core_forward_panels_per_block(rb._desc(5, 1)) == 1
    _core.core_set_wide_blocks_mode(0)
    assert _core.core_forward_panels_per_block(m._desc(5, 1)) == 1


def test_bad_mode_is_refused(wide_mode):
    _core.core_set_wide_blocks_mode(0)
    for bad in (-2, 2, 5):
        with pytest.raises(ValueError, match="wide blocks mode"):
            _core.core_set_wide_blocks_mode(bad)
    assert _core.core_wide_blocks_mode() == 0  # unchanged
