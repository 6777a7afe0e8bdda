"""Software prefetch of long weight panels (``set_stream_prefetch_mode`` in csrc/rnnfast.h).

The GEMM micro-kernels can prefetch panels of depth 256 or more ahead of the rows they read; on
AMD family 19h (Zen 3/4) the automatic choice leaves it to the hardware prefetchers. Prefetches
never change a value, so every result must be bitwise the same either way: checked for every cell
at a depth over 256 (hidden and input sizes), batches of 1 and 9 (one-row GEMV and full tiles),
inference and training with all gradients, on 1 and 2 threads. Plus the automatic choice and bad
modes.
"""
import numpy as np
import pytest
import torch  # noqa: F401  (the oracle must be importable; see conftest)

import rnnfast as rf
from rnnfast import _core
from conftest import CELLS, make_data, make_pair
from test_threads import _assert_bitwise, _everything
from test_threads import _cpu_is_amd_family_19h

T, I, H, L = 5, 300, 272, 2


@pytest.fixture
def prefetch_mode():
    yield
    _core.core_set_stream_prefetch_mode(-1)


@pytest.mark.parametrize("B", [1, 9])
@pytest.mark.parametrize("cell", CELLS)
def test_bitwise_same_with_and_without_prefetch(cell, B, prefetch_mode, restore_threads):
    rng = np.random.default_rng(900 + CELLS.index(cell))
    m, _ = make_pair(cell, I, H, L, True, False, True, "float32", seed=9)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, True, False, "float32")
    out = {}
    for mode in (0, 1):
        _core.core_set_stream_prefetch_mode(mode)
        assert _core.core_stream_prefetch_on() is (mode == 1)
        for n in (1, 2):
            rf.set_num_threads(n)
            out[mode, n] = _everything(m, cell, x, hx, None, ry, rh, rc)
    ref = out[0, 1]
    for key, got in out.items():
        _assert_bitwise(ref, got, f"prefetch mode {key[0]}, {key[1]} threads")


def test_automatic_choice_follows_the_cpu(prefetch_mode):
    _core.core_set_stream_prefetch_mode(-1)
    assert _core.core_stream_prefetch_mode() == -1
    amd19 = _cpu_is_amd_family_19h()
    if amd19 is not None:
        assert _core.core_stream_prefetch_on() is (not amd19)


@pytest.mark.parametrize("bad", [-2, 2, 7])
def test_bad_mode_is_refused(bad, prefetch_mode):
    with pytest.raises(ValueError, match="stream prefetch"):
        _core.core_set_stream_prefetch_mode(bad)
