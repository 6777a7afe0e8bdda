"""Paired one-row tiles over long panels (``set_pair_tiles_mode`` in csrc/rnnfast.h).

At batch 1 a forward step can compute its one-row recurrent tiles two at a time, one pass over the
state row for both (``tile_pair`` in csrc/kernels/ukernel_impl.h), with the partial sums, order
and tail of the single tile. Every result must therefore be bitwise that of single tiles: checked
for every cell in float32 and float64, at hidden sizes of 151 (odd: a tail row; a partial last
panel for every panel width; an odd number of tiles per block for the GRU) and 272 (deep enough
for the software prefetch, which is forced on there), one-panel and wide blocks, a sequence
shorter than T, inference and training with all gradients, on 1 and 2 threads; one-step calls (whose batch-1
input projection is paired too) with and without a state, at input sizes 13 and 300. Plus the
automatic choice and bad modes.
"""
import numpy as np
import pytest
import torch  # noqa: F401  (the oracle must be importable; see conftest)

import rnnfast as rf
from rnnfast import _core
from conftest import CELLS, make_data, make_pair
from test_threads import _assert_bitwise, _cpu_is_amd_family_19h, _everything

T, I, L = 6, 13, 2


@pytest.fixture
def pair_mode():
    yield
    _core.core_set_pair_tiles_mode(-1)
    _core.core_set_wide_blocks_mode(-1)
    _core.core_set_stream_prefetch_mode(-1)


@pytest.mark.parametrize("H", [151, 272])
@pytest.mark.parametrize("lengths", [None, [T - 2]], ids=["full", "short"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_bitwise_same_as_single_tiles(cell, dtype, lengths, H, pair_mode, restore_threads):
    rng = np.random.default_rng(700 + CELLS.index(cell))
    m, _ = make_pair(cell, I, H, L, True, False, True, dtype, seed=7)
    x, hx, ry, rh, rc = make_data(rng, cell, T, 1, I, H, L, True, False, dtype)
    if H >= 256:
        _core.core_set_stream_prefetch_mode(1)
    out = {}
    for pair in (0, 1):
        _core.core_set_pair_tiles_mode(pair)
        assert _core.core_pair_tiles_on() is (pair == 1)
        for wide in (0, 1):
            _core.core_set_wide_blocks_mode(wide)
            for n in (1, 2):
                rf.set_num_threads(n)
                out[pair, wide, n] = _everything(m, cell, x, hx, lengths, ry, rh, rc)
    ref = out[0, 0, 1]
    for key, got in out.items():
        _assert_bitwise(ref, got, f"pair tiles {key[0]}, wide blocks {key[1]}, {key[2]} threads")


@pytest.mark.parametrize("I_", [13, 300])
@pytest.mark.parametrize("cell", CELLS)
def test_one_step_calls_bitwise_same(cell, I_, pair_mode, restore_threads):
    """One step of batch 1 (its input projection is a one-row GEMM, paired too): without a state,
    from a state, and trained."""
    rng = np.random.default_rng(720 + CELLS.index(cell))
    H = 151
    m, _ = make_pair(cell, I_, H, L, True, False, True, "float32", seed=9)
    x, hx, ry, rh, rc = make_data(rng, cell, 1, 1, I_, H, L, True, False, "float32")
    out = {}
    for pair in (0, 1):
        _core.core_set_pair_tiles_mode(pair)
        for n in (1, 2):
            rf.set_num_threads(n)
            got = _everything(m, cell, x, hx, None, ry, rh, rc)
            y, _ = m(x)
            got["no state:y"] = np.array(y, copy=True)
            out[pair, n] = got
    ref = out[0, 1]
    for key, got in out.items():
        _assert_bitwise(ref, got, f"pair tiles {key[0]}, {key[1]} threads")


def test_pairs_change_the_numbers_of_nothing_but_batch_one(pair_mode, restore_threads):
    """A batch of 2 never takes the pairs: the same bits whatever the mode, and the same as the
    batch-1 results of each row on its own."""
    rng = np.random.default_rng(71)
    m, _ = make_pair("gru", I, 150, 1, True, False, True, "float32", seed=8)
    x = rng.standard_normal((T, 2, I)).astype(np.float32)
    got = {}
    for pair in (0, 1):
        _core.core_set_pair_tiles_mode(pair)
        y, _ = m(x)
        got[pair] = np.array(y, copy=True)
        for b in range(2):
            yb, _ = m(x[:, b:b + 1])
            np.testing.assert_allclose(yb[:, 0], got[pair][:, b], rtol=1e-5, atol=1e-6)
    assert np.array_equal(got[0], got[1])


def test_automatic_choice_follows_the_cpu_and_path(pair_mode):
    _core.core_set_pair_tiles_mode(-1)
    assert _core.core_pair_tiles_mode() == -1
    amd19 = _cpu_is_amd_family_19h()
    start = rf.build_info()["isa"]
    try:
        for isa in ("avx512", "avx2", "generic"):
            if not _core.core_select_isa(isa):
                continue
            if amd19 is not None:
                assert _core.core_pair_tiles_on() is (amd19 and isa == "avx512"), isa
            for mode in (0, 1):  # a forced mode holds on every path
                _core.core_set_pair_tiles_mode(mode)
                assert _core.core_pair_tiles_on() is (mode == 1), isa
            _core.core_set_pair_tiles_mode(-1)
    finally:
        assert _core.core_select_isa(start)


@pytest.mark.parametrize("bad", [-2, 2, 5])
def test_bad_mode_is_refused(bad, pair_mode):
    with pytest.raises(ValueError, match="pair tiles"):
        _core.core_set_pair_tiles_mode(bad)
    assert _core.core_pair_tiles_mode() == -1
