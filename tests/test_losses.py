"""Losses against torch.nn.functional (cross_entropy, mse_loss, binary_cross_entropy_with_logits):
loss and gradient, every reduction, ignore_index / masks / label smoothing, extreme logits, and
bitwise independence of the thread count for the C++ cross-entropy kernel."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rnnfast as rf
from rnnfast import losses
from conftest import assert_rel, rel_err

TOL = {"float64": 1e-12, "float32": 1e-5}
REDUCTIONS = ("mean", "sum", "none")


def _torch_ce(logits, targets, reduction, ignore_index=-100, label_smoothing=0.0):
    """torch's cross-entropy on (N, C) rows (its class axis is 1, ours is last) and its grad."""
    C = logits.shape[-1]
    x = torch.tensor(logits.reshape(-1, C), requires_grad=True)
    t = torch.tensor(targets.reshape(-1), dtype=torch.int64)
    loss = F.cross_entropy(x, t, reduction=reduction, ignore_index=ignore_index,
                           label_smoothing=label_smoothing)
    loss.sum().backward()
    val = loss.detach().numpy()
    if reduction == "none":
        val = val.reshape(targets.shape)
    return val, x.grad.numpy().reshape(logits.shape)


def _check(ours, ref, tol, what):
    loss, grad = ours
    ref_loss, ref_grad = ref
    if np.ndim(ref_loss) == 0:
        assert isinstance(loss, float)
        assert abs(loss - float(ref_loss)) <= tol * max(1.0, abs(float(ref_loss))), \
            f"{what}: loss {loss!r} vs torch {float(ref_loss)!r}"
    else:
        assert_rel(loss, ref_loss, tol, f"{what}: loss")
    assert_rel(grad, ref_grad, tol, f"{what}: grad")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape", [(9, 1), (9, 3), (6, 4, 13), (300, 1000)])
def test_cross_entropy_matches_torch(dtype, reduction, shape):
    rng = np.random.default_rng(0)
    C = shape[-1]
    logits = (3 * rng.standard_normal(shape)).astype(dtype)
    targets = rng.integers(0, C, size=shape[:-1])
    targets.flat[::4] = -100
    ours = losses.cross_entropy(logits, targets, reduction=reduction)
    assert ours[1].dtype == np.dtype(dtype) and ours[1].shape == logits.shape
    _check(ours, _torch_ce(logits, targets, reduction), TOL[dtype], f"{shape} {reduction}")
    ignored = (targets == -100)
    assert not ours[1][ignored].any(), "ignored rows must get zero gradient"


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_label_smoothing_and_custom_ignore(dtype, reduction):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((5, 7, 11)).astype(dtype)
    targets = rng.integers(0, 11, size=(5, 7))
    targets[0] = 4
    ours = losses.cross_entropy(logits, targets, ignore_index=4, label_smoothing=0.2,
                                reduction=reduction)
    ref = _torch_ce(logits, targets, reduction, ignore_index=4, label_smoothing=0.2)
    _check(ours, ref, TOL[dtype], f"smoothing {reduction}")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_mask_equals_ignore_index(reduction):
    rng = np.random.default_rng(2)
    T, B, C = 6, 4, 9
    logits = rng.standard_normal((T, B, C))
    targets = rng.integers(0, C, size=(T, B))
    lengths = np.array([6, 2, 1, 4])
    mask = losses.sequence_mask(lengths, T)
    assert mask.shape == (T, B) and mask.sum() == lengths.sum()
    targets_pad = targets.copy()
    targets_pad[~mask] = 12345  # out of range, but masked out: must not be checked
    ours = losses.cross_entropy(logits, targets_pad, mask=mask, reduction=reduction)
    ref_t = np.where(mask, targets, -100)
    _check(ours, _torch_ce(logits, ref_t, reduction), 1e-12, f"mask {reduction}")
    # the batch-first mask is the transpose
    np.testing.assert_array_equal(losses.sequence_mask(lengths, T, batch_first=True), mask.T)


def test_cross_entropy_mean_over_nothing_is_nan_like_torch():
    logits = np.random.default_rng(3).standard_normal((4, 5))
    targets = np.full(4, -100)
    loss, grad = losses.cross_entropy(logits, targets)
    ref_loss, ref_grad = _torch_ce(logits, targets, "mean")
    assert np.isnan(loss) and np.isnan(float(ref_loss))
    np.testing.assert_array_equal(grad, ref_grad)
    assert not grad.any()
    assert losses.cross_entropy(logits, targets, reduction="sum")[0] == 0.0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cross_entropy_extreme_logits_stay_finite(dtype):
    rng = np.random.default_rng(4)
    logits = rng.choice([-1e4, 1e4, 0.0, 3.0], size=(40, 17)).astype(dtype)
    logits[0] = 1e4   # all equal and huge
    logits[1] = -1e4  # all equal and very negative
    targets = rng.integers(0, 17, size=40)
    for reduction in REDUCTIONS:
        loss, grad = losses.cross_entropy(logits, targets, reduction=reduction)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
        ref = _torch_ce(logits, targets, reduction)
        # losses reach 2e4; the error is relative to that scale
        _check((loss, grad), ref, TOL[dtype], f"extreme {reduction}")


def test_cross_entropy_bad_rows_are_nan_and_others_unaffected():
    rng = np.random.default_rng(5)
    logits = rng.standard_normal((4, 10))
    logits[1, 3] = np.nan
    logits[2, 0] = np.inf
    targets = np.array([1, 2, 3, 4])
    loss, grad = losses.cross_entropy(logits, targets, reduction="none")
    assert np.isnan(loss[1]) and np.isnan(loss[2]) and np.isnan(grad[1]).all()
    ref_loss, ref_grad = _torch_ce(logits[[0, 3]], targets[[0, 3]], "none")
    assert_rel(loss[[0, 3]], ref_loss, 1e-12, "clean rows")
    assert_rel(grad[[0, 3]], ref_grad, 1e-12, "clean rows grad")


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_cross_entropy_same_bits_for_1_and_2_threads(dtype, restore_threads):
    rng = np.random.default_rng(6)
    logits = (4 * rng.standard_normal((1000, 301))).astype(dtype)  # 16 blocks, above the
    targets = rng.integers(0, 301, size=1000)                        # parallel threshold
    targets[::7] = -100
    results = []
    for n in (1, 2):
        rf.set_num_threads(n)
        for red in ("mean", "none"):
            results.append((n, red, losses.cross_entropy(logits, targets, reduction=red,
                                                         label_smoothing=0.1)))
    by = {(n, red): r for n, red, r in results}
    for red in ("mean", "none"):
        l1, g1 = by[(1, red)]
        l2, g2 = by[(2, red)]
        assert np.array_equal(np.asarray(l1), np.asarray(l2)), red
        assert np.array_equal(g1, g2), red


def test_cross_entropy_grad_false_and_flat_input():
    logits = np.random.default_rng(7).standard_normal(5)
    loss, grad = losses.cross_entropy(logits, np.int64(2), grad=False)
    assert grad is None
    ref, _ = _torch_ce(logits[None], np.array([2]), "mean")
    assert abs(loss - float(ref)) < 1e-14


def test_cross_entropy_validation():
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"targets must lie in 0\.\.3.*\[-3, 4\].*\(0,\), \(2,\)"):
        losses.cross_entropy(x, np.array([4, 1, -3]))
    with pytest.raises(TypeError, match="integer class indices"):
        losses.cross_entropy(x, np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"targets must have shape \(3,\)"):
        losses.cross_entropy(x, np.array([[0, 1, 2]]))
    with pytest.raises(TypeError, match="floating-point"):
        losses.cross_entropy(np.zeros((3, 4), dtype=np.int32), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="reduction"):
        losses.cross_entropy(x, np.array([0, 1, 2]), reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        losses.cross_entropy(x, np.array([0, 1, 2]), label_smoothing=1.5)
    with pytest.raises(TypeError, match="ignore_index"):
        losses.cross_entropy(x, np.array([0, 1, 2]), ignore_index=None)
    with pytest.raises(ValueError, match="mask"):
        losses.cross_entropy(x, np.array([0, 1, 2]), mask=np.ones(4, bool))
    with pytest.raises(ValueError, match="class axis"):
        losses.cross_entropy(np.float64(1.0), np.int64(0))
    with pytest.raises(ValueError, match="at least one class"):
        losses.cross_entropy(np.zeros((3, 0)), np.array([0, 1, 2]))


# ------------------------------------------------------------------------------------------- MSE
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_matches_torch(dtype, reduction):
    rng = np.random.default_rng(8)
    pred = rng.standard_normal((5, 3, 4)).astype(dtype)
    target = rng.standard_normal((5, 3, 4)).astype(dtype)
    ours = losses.mse_loss(pred, target, reduction=reduction)
    p = torch.tensor(pred, requires_grad=True)
    ref = F.mse_loss(p, torch.tensor(target), reduction=reduction)
    ref.sum().backward()
    _check(ours, (ref.detach().numpy(), p.grad.numpy()), TOL[dtype], f"mse {reduction}")


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_mask_selects_like_indexing(reduction):
    rng = np.random.default_rng(9)
    pred = rng.standard_normal((6, 4, 3))
    target = rng.standard_normal((6, 4, 3))
    mask = losses.sequence_mask([6, 1, 3, 2], 6)                     # (T, B) covers the features
    loss, grad = losses.mse_loss(pred, target, mask=mask, reduction=reduction)
    p = torch.tensor(pred, requires_grad=True)
    m = torch.tensor(mask)
    ref = F.mse_loss(p[m], torch.tensor(target)[m], reduction=reduction)
    ref.sum().backward()
    if reduction == "none":
        assert_rel(loss[mask], ref.detach().numpy(), 1e-12, "masked mse")
        assert not loss[~mask].any()
    else:
        assert abs(loss - ref.item()) < 1e-12 * max(1, abs(ref.item()))
    assert_rel(grad, p.grad.numpy(), 1e-12, "masked mse grad")


# ----------------------------------------------------------------------------------------- BCE
@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("with_pos_weight", [False, True])
def test_bce_with_logits_matches_torch(dtype, reduction, with_pos_weight):
    rng = np.random.default_rng(10)
    x = (4 * rng.standard_normal((7, 3, 5))).astype(dtype)
    x[0, 0] = [1e4, -1e4, 80.0, -80.0, 0.0]  # extremes stay finite
    y = rng.random((7, 3, 5)).astype(dtype)
    y[0, 0] = [0.0, 1.0, 0.0, 1.0, 0.5]
    pw = rng.uniform(0.5, 3.0, size=5).astype(dtype) if with_pos_weight else None
    ours = losses.binary_cross_entropy_with_logits(x, y, pos_weight=pw, reduction=reduction)
    assert np.all(np.isfinite(ours[0])) and np.all(np.isfinite(ours[1]))
    xt = torch.tensor(x, requires_grad=True)
    ref = F.binary_cross_entropy_with_logits(
        xt, torch.tensor(y), pos_weight=None if pw is None else torch.tensor(pw),
        reduction=reduction)
    ref.sum().backward()
    _check(ours, (ref.detach().numpy(), xt.grad.numpy()), TOL[dtype], f"bce {reduction}")


def test_bce_int_labels_and_mask():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((4, 6))
    y = rng.integers(0, 2, size=(4, 6))
    mask = np.array([True, False, True, True])
    loss, grad = losses.binary_cross_entropy_with_logits(x, y, mask=mask)
    xt = torch.tensor(x, requires_grad=True)
    ref = F.binary_cross_entropy_with_logits(xt[torch.tensor(mask)],
                                             torch.tensor(y[mask], dtype=torch.float64))
    ref.backward()
    assert abs(loss - ref.item()) < 1e-14
    assert_rel(grad, xt.grad.numpy(), 1e-12, "masked bce grad")


def test_mse_and_bce_validation():
    with pytest.raises(ValueError, match=r"target must have the shape of pred \(2, 3\)"):
        losses.mse_loss(np.zeros((2, 3)), np.zeros((3, 2)))
    with pytest.raises(TypeError, match="floating-point"):
        losses.mse_loss(np.zeros((2, 3), dtype=int), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="pos_weight"):
        losses.binary_cross_entropy_with_logits(np.zeros((2, 3)), np.zeros((2, 3)),
                                                pos_weight=np.ones(2))
    with pytest.raises(TypeError, match="grad must be a bool"):
        losses.mse_loss(np.zeros(2), np.zeros(2), grad=1)
    with pytest.raises(TypeError, match="mask must be bool"):
        losses.mse_loss(np.zeros(2), np.zeros(2), mask=np.ones(2))
    with pytest.raises(ValueError, match="lengths must lie in"):
        losses.sequence_mask([3, 0], 3)
    assert losses.mse_loss(np.zeros(2), np.ones(2), grad=False) == (1.0, None)
    assert rel_err(losses.mse_loss(np.float32(2.0), 1.0)[1], np.float32(2.0)) == 0
