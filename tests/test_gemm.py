"""The core's general GEMM (used by Linear) against numpy, every transpose combination, both
dtypes, edge shapes, accumulation, and identical bits for 1 and 2 threads."""
import numpy as np
import pytest

import rnnfast as rf
from rnnfast import _core


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("ta", [False, True])
@pytest.mark.parametrize("tb", [False, True])
@pytest.mark.parametrize("M,N,K", [(1, 1, 1), (7, 33, 5), (97, 130, 300), (600, 40, 17),
                                   (100, 70, 260), (150, 40, 33)])
def test_gemm_matches_numpy(dtype, tol, ta, tb, M, N, K):
    rng = np.random.default_rng(M + N + K)
    a = rng.standard_normal((K, M) if ta else (M, K)).astype(dtype)
    b = rng.standard_normal((N, K) if tb else (K, N)).astype(dtype)
    ref = (a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64)
    c = np.empty((M, N), dtype)
    _core.core_gemm(a, b, c, trans_a=ta, trans_b=tb)
    scale = np.abs(ref).max()
    assert np.abs(c - ref).max() <= tol * scale * max(1, K ** 0.5)
    c0 = rng.standard_normal((M, N)).astype(dtype)
    c = c0.copy()
    _core.core_gemm(a, b, c, trans_a=ta, trans_b=tb, accumulate=True)
    assert np.abs(c - (c0 + ref)).max() <= tol * (scale + np.abs(c0).max()) * max(1, K ** 0.5)


def test_gemm_same_bits_for_any_thread_count():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((700, 300)).astype(np.float32)
    b = rng.standard_normal((300, 500)).astype(np.float32)
    out = []
    for n in (1, 2):
        with rf.threads(n):
            c = np.empty((700, 500), np.float32)
            _core.core_gemm(a, b, c)
            out.append(c)
    assert np.array_equal(out[0], out[1])


def test_gemm_rows_do_not_depend_on_row_blocking():
    # M decides how the rows fall into row blocks and whether the last row tile is partial; a row
    # in a whole row tile must get the same bits whatever M is.
    rng = np.random.default_rng(1)
    a = rng.standard_normal((294, 600)).astype(np.float32)
    b = rng.standard_normal((600, 70)).astype(np.float32)
    ref = None
    for M in (96, 102, 144, 150, 294):
        c = np.empty((M, 70), np.float32)
        _core.core_gemm(a[:M], b, c)
        if ref is None:
            ref = c[:90].copy()
        assert np.array_equal(c[:90], ref), M


def test_gemm_rejects_mismatched_shapes():
    a = np.zeros((3, 4))
    with pytest.raises(ValueError, match="do not chain"):
        _core.core_gemm(a, np.zeros((5, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="C-contiguous"):
        _core.core_gemm(a, np.zeros((4, 2), np.float32), np.zeros((3, 2)))
