"""rnnfast.clip_grad_norm / clip_grad_value against torch.nn.utils, plus thread independence.

rnnfast accumulates norms in double; torch accumulates a float32 norm in float32 (measured up to
1.7e-6 off the exact value for norm_type 1 and 3.5). So the oracle is torch run in float64 on the
same values (upcast): the norm must agree to 1e-12 relative for both dtypes (measured <= 5e-15),
clipped float32 gradients to two float32 roundings (the coefficient, then the product: measured
<= 9e-8, bound 2.5e-7), float64 to 1e-12. Agreement with torch's own float32 run is checked to
the accuracy of torch's float32 norm (1e-5). clip_grad_value is a clamp: bitwise equal.
"""
import math

import numpy as np
import pytest
import torch

import rnnfast as rf
from conftest import rel_err

GRAD_TOL = {"float64": 1e-12, "float32": 2.5e-7}
NORM_TOL = 1e-12
TORCH_F32_TOL = 1e-5
NORMS = [2.0, 1.0, 3.5, 0.5, math.inf]


class FlatModel:
    def __init__(self, grads):
        self.params = np.zeros_like(grads)
        self.grads = np.array(grads, copy=True)


def _grads(dtype, seed=0, sizes=(1000, 37, 20_000)):
    rng = np.random.default_rng(seed)
    return [(rng.standard_normal(n) * (i + 1)).astype(dtype) for i, n in enumerate(sizes)]


def _torch_params(grads):
    ps = []
    for g in grads:
        p = torch.nn.Parameter(torch.zeros(g.shape, dtype=torch.from_numpy(g).dtype))
        p.grad = torch.tensor(g.copy())
        ps.append(p)
    return ps


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("norm_type", NORMS)
@pytest.mark.parametrize("clips", [True, False])
def test_clip_grad_norm_matches_torch(dtype, norm_type, clips):
    grads = _grads(np.dtype(dtype))
    ps64 = _torch_params([g.astype(np.float64) for g in grads])  # the exact reference
    ps = _torch_params(grads)  # torch in the same dtype
    # a model, a bare array and a 2-D array, in one call
    model = FlatModel(grads[0])
    arr = grads[1].copy()
    arr2d = grads[2].copy().reshape(100, 200)
    ref_norm = float(torch.nn.utils.clip_grad_norm_(ps64, 1e300, norm_type=norm_type))
    max_norm = 0.3 * ref_norm if clips else 2.0 * ref_norm
    torch.nn.utils.clip_grad_norm_(ps64, max_norm, norm_type=norm_type, foreach=False)
    same_dtype_norm = float(torch.nn.utils.clip_grad_norm_(ps, max_norm, norm_type=norm_type,
                                                           foreach=False))
    total = rf.clip_grad_norm([model, arr, arr2d], max_norm, norm_type=norm_type)
    assert isinstance(total, float)
    assert abs(total - ref_norm) <= NORM_TOL * ref_norm
    assert abs(total - same_dtype_norm) <= TORCH_F32_TOL * ref_norm
    got = [model.grads, arr, arr2d.reshape(-1)]
    for i, (g, p64, p) in enumerate(zip(got, ps64, ps)):
        assert g.dtype == np.dtype(dtype)
        assert rel_err(g, p64.grad.numpy()) <= GRAD_TOL[dtype], f"buffer {i}"
        assert rel_err(g, p.grad.numpy()) <= TORCH_F32_TOL, f"buffer {i}"
    if clips:
        after = np.concatenate([g.astype(np.float64) for g in got])
        new_norm = (np.abs(after).max() if math.isinf(norm_type)
                    else np.sum(np.abs(after) ** norm_type) ** (1 / norm_type))
        assert abs(new_norm - max_norm) <= 1e-5 * max_norm
    else:
        for g, g0 in zip(got, grads):
            np.testing.assert_array_equal(g.reshape(-1), g0.reshape(-1))


def test_norm_is_the_norm_of_the_concatenation():
    grads = _grads(np.float64, seed=3)
    flat = np.concatenate(grads)
    for p in NORMS:
        total = rf.clip_grad_norm([g.copy() for g in grads], 1e300, norm_type=p)
        ref = np.linalg.norm(flat, ord=p) if p >= 1 else np.sum(np.abs(flat) ** p) ** (1 / p)
        assert math.isclose(total, ref, rel_tol=1e-13), p


def test_float32_norm_is_accumulated_in_double():
    # 4096^2 = 2^24, where float32 stops counting ones: a float32 accumulator loses the 999,999
    # ones that follow; a double one holds the sum exactly.
    g = np.ones(1_000_000, dtype=np.float32)
    g[0] = 4096.0
    assert rf.clip_grad_norm(g, 1e30) == math.sqrt(2.0 ** 24 + 999_999)
    assert rf.clip_grad_norm(g, 1e30, norm_type=1.0) == 4096.0 + 999_999


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("norm_type", [2.0, 3.0, math.inf])
def test_norm_and_clip_do_not_depend_on_thread_count(dtype, norm_type, restore_threads):
    rng = np.random.default_rng(7)
    g0 = (rng.standard_normal(1_000_003) * rng.uniform(0, 10, 1_000_003)).astype(dtype)
    norms, clipped = [], []
    for threads in (1, 2, 3):
        rf.set_num_threads(threads)
        g = g0.copy()
        norms.append(rf.clip_grad_norm(g, 1.0, norm_type=norm_type))
        clipped.append(g)
    assert norms[0] == norms[1] == norms[2]
    for g in clipped[1:]:
        np.testing.assert_array_equal(g, clipped[0])
    assert not np.array_equal(clipped[0], g0)


def test_clip_works_on_rnnfast_models():
    m = rf.LSTM(3, 4, num_layers=2, dtype="float32", seed=0)
    m.grads[:] = np.arange(m.grads.size, dtype=np.float32)
    norm0 = float(np.linalg.norm(m.grads.astype(np.float64)))
    assert math.isclose(rf.clip_grad_norm(m, 1.0), norm0, rel_tol=1e-12)
    assert abs(np.linalg.norm(m.grads) - 1.0) < 1e-5
    rf.clip_grad_value(m, 1e-3)
    assert np.abs(m.grads).max() == np.float32(1e-3)


# ------------------------------------------------------------------------- non-finite gradients
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_error_if_nonfinite_raises_and_leaves_grads(bad):
    g = np.arange(10, dtype=np.float32)
    g[4] = bad
    before = g.copy()
    with pytest.raises(RuntimeError, match="non-finite"):
        rf.clip_grad_norm(g, 1.0, error_if_nonfinite=True)
    np.testing.assert_array_equal(g, before)
    p = torch.nn.Parameter(torch.zeros(10))
    p.grad = torch.tensor(before.copy())
    with pytest.raises(RuntimeError):
        torch.nn.utils.clip_grad_norm_([p], 1.0, error_if_nonfinite=True)


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_nonfinite_without_error_behaves_like_torch(norm_type, bad):
    g = np.linspace(-1, 1, 9)
    g[2] = bad
    p = torch.nn.Parameter(torch.zeros(9, dtype=torch.float64))
    p.grad = torch.tensor(g.copy())
    ref_norm = float(torch.nn.utils.clip_grad_norm_([p], 1.0, norm_type=norm_type))
    total = rf.clip_grad_norm(g, 1.0, norm_type=norm_type)
    assert (math.isnan(total) and math.isnan(ref_norm)) or total == ref_norm
    np.testing.assert_array_equal(g, p.grad.numpy())  # NaN where torch has NaN


# ------------------------------------------------------------------------------ clip_grad_value
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_clip_grad_value_matches_torch_bitwise(dtype):
    grads = _grads(np.dtype(dtype), seed=1)
    grads[0][5] = np.nan
    ps = _torch_params(grads)
    torch.nn.utils.clip_grad_value_(ps, 0.75)
    model = FlatModel(grads[0])
    rest = [g.copy() for g in grads[1:]]
    assert rf.clip_grad_value([model] + rest, 0.75) is None
    for g, p in zip([model.grads] + rest, ps):
        np.testing.assert_array_equal(g, p.grad.numpy())
    assert np.isnan(model.grads[5])


# ----------------------------------------------------------------------------------- validation
def test_bad_arguments():
    g = np.ones(4)
    with pytest.raises(TypeError, match="model"):
        rf.clip_grad_norm("grads", 1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        rf.clip_grad_norm(np.ones(4, dtype=np.int64), 1.0)
    with pytest.raises(ValueError, match="contiguous"):
        rf.clip_grad_norm(np.ones(8)[::2], 1.0)
    ro = np.ones(4)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        rf.clip_grad_value(ro, 1.0)
    with pytest.raises(ValueError, match="overlap"):
        rf.clip_grad_norm([g, g], 1.0)
    with pytest.raises(ValueError, match="max_norm"):
        rf.clip_grad_norm(g, -1.0)
    with pytest.raises(ValueError, match="max_norm"):
        rf.clip_grad_norm(g, float("nan"))
    for p in (0, -2.0, float("nan"), -math.inf):
        with pytest.raises(ValueError, match="norm_type"):
            rf.clip_grad_norm(g, 1.0, norm_type=p)
    with pytest.raises(ValueError, match="clip_value"):
        rf.clip_grad_value(g, -0.5)
    np.testing.assert_array_equal(g, np.ones(4))
    assert rf.clip_grad_norm([], 1.0) == 0.0
