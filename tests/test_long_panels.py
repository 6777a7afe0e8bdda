"""Batch-1 models with hidden sizes of 128 and more: their per-step recurrent products are one-row
GEMM tiles over panels of kc >= 128 rows, which the AVX-512 path sums with fewer interleaved
partial sums than short panels (RF_KS1_LONG in kernels/ukernel_impl.h). Forward and every
gradient against PyTorch, with depths that leave a tail of k rows (odd sizes), and the same bits
on 1 and 2 threads."""
import numpy as np
import pytest

import rnnfast as rf
from conftest import (CELLS, PARITY_TOL, assert_all_close, make_data, make_pair, rf_run,
                      torch_run)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden,inp", [(128, 5), (131, 257), (260, 64)])
@pytest.mark.parametrize("cell", CELLS)
def test_batch1_long_panels_match_torch(cell, hidden, inp, dtype):
    rng = np.random.default_rng(hidden + inp)
    m, tm = make_pair(cell, inp, hidden, 1, True, False, False, dtype, seed=hidden)
    x, hx, ry, rh, rc = make_data(rng, cell, 9, 1, inp, hidden, 1, False, False, dtype)
    ref = torch_run(tm, cell, x, hx, None, ry, rh, rc, False)
    got = rf_run(m, cell, x, hx, None, ry, rh, rc)
    assert_all_close(got, ref, PARITY_TOL[dtype], f"{cell} H{hidden} I{inp} B1 {dtype}")


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_batch1_long_panels_same_bits_on_1_and_2_threads(cell, restore_threads):
    cls = rf.LSTM if cell == "lstm" else rf.GRU
    m = cls(300, 300, seed=3)
    x = np.random.default_rng(3).standard_normal((12, 1, 300)).astype(np.float32)
    outs = []
    for n in (1, 2):
        rf.set_num_threads(n)
        outs.append(m(x)[0])
    assert np.array_equal(outs[0], outs[1])
