"""Linear and Embedding against torch.nn.Linear / torch.nn.Embedding with the same weights:
outputs and every gradient, float64 (rel err <= 1e-12) and float32 (<= 1e-5); plus defaults,
parameter bookkeeping and input validation."""

import numpy as np
import pytest
import torch

import rnnfast as rf
from conftest import assert_rel

TOL = {"float64": 1e-12, "float32": 1e-5}
TDT = {"float64": torch.float64, "float32": torch.float32}


def _torch_linear(m, dtype):
    t = torch.nn.Linear(m.in_features, m.out_features, bias=m.bias, dtype=TDT[dtype])
    t.load_state_dict({k: torch.tensor(v) for k, v in m.state_dict().items()})
    return t


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("shape", [(7,), (5, 7), (4, 3, 7), (2, 3, 2, 7)])
@pytest.mark.parametrize("bias", [True, False])
def test_linear_matches_torch(dtype, shape, bias):
    rng = np.random.default_rng(1)
    m = rf.Linear(7, 6, bias=bias, dtype=dtype, seed=3)
    t = _torch_linear(m, dtype)
    x = rng.standard_normal(shape).astype(dtype)
    r = rng.standard_normal(shape[:-1] + (6,)).astype(dtype)

    y, cache = m.forward(x)
    dx = m.backward(cache, r)
    xt = torch.tensor(x, requires_grad=True)
    yt = t(xt)
    (yt * torch.tensor(r)).sum().backward()

    assert y.dtype == np.dtype(dtype) and dx.dtype == np.dtype(dtype)
    assert_rel(y, yt.detach().numpy(), TOL[dtype], "y")
    assert_rel(dx, xt.grad.numpy(), TOL[dtype], "dx")
    grads = dict(m.named_grads())
    assert set(grads) == ({"weight", "bias"} if bias else {"weight"})
    for name, p in t.named_parameters():
        assert_rel(grads[name], p.grad.numpy(), TOL[dtype], name)
    np.testing.assert_array_equal(m(x), y)


def test_linear_grads_accumulate_and_zero():
    rng = np.random.default_rng(0)
    m = rf.Linear(3, 2, dtype="float64", seed=0)
    x = rng.standard_normal((4, 3))
    dy = rng.standard_normal((4, 2))
    _, c = m.forward(x)
    m.backward(c, dy)
    once = m.grads.copy()
    assert np.abs(once).max() > 0
    m.backward(c, dy)
    np.testing.assert_allclose(m.grads, 2 * once, rtol=1e-15)
    m.zero_grad()
    assert not m.grads.any()


def test_linear_default_init_like_torch():
    m = rf.Linear(50, 400, seed=0, dtype="float64")
    k = 1 / np.sqrt(50)
    w, b = m.state_dict()["weight"], m.state_dict()["bias"]
    assert w.shape == (400, 50) and b.shape == (400,)
    assert np.abs(w).max() <= k and np.abs(w).max() > 0.99 * k
    assert np.abs(b).max() <= k and np.abs(b).max() > 0.95 * k
    assert abs(w.mean()) < 0.01 and abs(w.std() - k / np.sqrt(3)) < 0.01 * k
    np.testing.assert_array_equal(rf.Linear(50, 400, seed=0, dtype="float64").params, m.params)
    assert not np.array_equal(rf.Linear(50, 400, seed=1, dtype="float64").params, m.params)


def test_linear_flat_buffer_and_views():
    m = rf.Linear(3, 2, dtype="float64", seed=0)
    assert m.params.size == 8 and m.grads.size == 8
    with pytest.raises(ValueError):
        m.params[0] = 1.0  # read-only
    named = dict(m.named_parameters())
    assert np.shares_memory(named["weight"], m.params) and np.shares_memory(named["bias"], m.params)
    np.testing.assert_array_equal(np.concatenate([named["weight"].ravel(), named["bias"]]), m.params)
    v = m.version
    m._param_buffer()[:] = 0.5
    m._mark_params_changed()
    assert m.version == v + 1
    np.testing.assert_array_equal(m(np.ones((1, 3))), np.full((1, 2), 2.0))


def test_linear_state_dict_roundtrip_with_torch_and_strictness():
    t = torch.nn.Linear(4, 3, dtype=torch.float64)
    m = rf.Linear(4, 3, dtype="float64", seed=0)
    m.load_state_dict(t.state_dict())  # torch tensors accepted
    x = np.random.default_rng(0).standard_normal((2, 4))
    np.testing.assert_allclose(m(x), t(torch.tensor(x)).detach().numpy(), rtol=1e-14, atol=1e-15)
    before = m.params.copy()
    with pytest.raises(ValueError, match="missing \\['bias'\\]"):
        m.load_state_dict({"weight": np.zeros((3, 4))})
    with pytest.raises(ValueError, match="unexpected \\['extra'\\]"):
        m.load_state_dict({**m.state_dict(), "extra": np.zeros(1)})
    with pytest.raises(ValueError, match=r"state_dict\['bias'\] must have shape \(3,\)"):
        m.load_state_dict({"weight": np.zeros((3, 4)), "bias": np.zeros(4)})
    np.testing.assert_array_equal(m.params, before)  # nothing was written by the failed loads
    with pytest.raises(TypeError):
        m.load_state_dict([("weight", 1)])


def test_linear_validation():
    m = rf.Linear(4, 3, seed=0)
    with pytest.raises(ValueError, match="in_features=4.*got shape \\(2, 5\\)"):
        m.forward(np.zeros((2, 5)))
    with pytest.raises(TypeError, match="floating-point"):
        m.forward(np.zeros((2, 4), dtype=np.int64))
    y, c = m.forward(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="dy must have shape \\(2, 3\\)"):
        m.backward(c, np.zeros((3, 2)))
    with pytest.raises(TypeError, match="cache"):
        m.backward(None, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="different layer"):
        rf.Linear(4, 3, seed=0).backward(c, np.zeros((2, 3)))
    m.load_state_dict(m.state_dict())
    with pytest.raises(ValueError, match="parameters changed"):
        m.backward(c, np.zeros((2, 3)))
    with pytest.raises(TypeError):
        rf.Linear(4.0, 3)
    with pytest.raises(ValueError):
        rf.Linear(0, 3)
    with pytest.raises(TypeError):
        rf.Linear(4, 3, bias=1)
    with pytest.raises(ValueError):
        rf.Linear(4, 3, dtype="float16")
    assert m.forward(np.zeros((2, 4)), train=False)[1] is None


# ------------------------------------------------------------------------------------ Embedding
def _torch_embedding(m, dtype):
    t = torch.nn.Embedding(m.num_embeddings, m.embedding_dim, padding_idx=m.padding_idx,
                           dtype=TDT[dtype])
    t.load_state_dict({k: torch.tensor(v) for k, v in m.state_dict().items()})
    return t


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("padding_idx", [None, 0, 3, -1])
def test_embedding_matches_torch(dtype, padding_idx):
    rng = np.random.default_rng(2)
    m = rf.Embedding(11, 5, padding_idx=padding_idx, dtype=dtype, seed=4)
    t = _torch_embedding(m, dtype)
    ids = rng.integers(0, 11, size=(6, 4))
    ids[0, :] = 3          # repeated ids must add up
    ids[1, 0] = 10
    ids[1, 1] = 0
    r = rng.standard_normal((6, 4, 5)).astype(dtype)

    y, cache = m.forward(ids)
    assert m.backward(cache, r) is None
    yt = t(torch.tensor(ids))
    (yt * torch.tensor(r)).sum().backward()

    assert y.shape == (6, 4, 5) and y.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(y, yt.detach().numpy())  # a lookup is exact
    g = dict(m.named_grads())["weight"]
    assert_rel(g, t.weight.grad.numpy(), TOL[dtype], "grad weight")
    if padding_idx is not None:
        row = padding_idx % 11
        assert not g[row].any(), "the padding row must get no gradient"
        assert not m.state_dict()["weight"][row].any(), "the padding row starts at zero"


def test_embedding_default_init_and_seed():
    m = rf.Embedding(300, 40, padding_idx=7, dtype="float64", seed=5)
    w = m.state_dict()["weight"]
    assert not w[7].any()
    rest = np.delete(w, 7, axis=0)
    assert abs(rest.mean()) < 0.03 and abs(rest.std() - 1) < 0.03
    np.testing.assert_array_equal(rf.Embedding(300, 40, padding_idx=7, dtype="float64",
                                               seed=5).params, m.params)


@pytest.mark.parametrize("ids_shape", [(), (7,), (2, 3, 4)])
def test_embedding_any_rank(ids_shape):
    m = rf.Embedding(9, 3, dtype="float64", seed=0)
    ids = np.random.default_rng(0).integers(0, 9, size=ids_shape)
    y, c = m.forward(ids)
    assert y.shape == ids_shape + (3,)
    np.testing.assert_array_equal(y, m.state_dict()["weight"][ids])
    m.backward(c, np.ones(ids_shape + (3,)))
    counts = np.bincount(np.ravel(ids), minlength=9)
    np.testing.assert_array_equal(dict(m.named_grads())["weight"][:, 0], counts)


def test_embedding_validation():
    m = rf.Embedding(5, 2, seed=0)
    with pytest.raises(ValueError, match=r"ids must lie in 0\.\.4.*\[-1, 5, 9\]"):
        m.forward(np.array([[0, 5], [9, -1]]))
    with pytest.raises(TypeError, match="integer"):
        m.forward(np.array([0.0, 1.0]))
    with pytest.raises(TypeError, match="integer"):
        m.forward(np.array([True, False]))
    y, c = m.forward(np.array([1, 2]))
    with pytest.raises(ValueError, match="dy must have shape \\(2, 2\\)"):
        m.backward(c, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="padding_idx"):
        rf.Embedding(5, 2, padding_idx=5)
    with pytest.raises(ValueError, match="padding_idx"):
        rf.Embedding(5, 2, padding_idx=-6)
    with pytest.raises(TypeError, match="padding_idx"):
        rf.Embedding(5, 2, padding_idx=1.0)
    assert rf.Embedding(5, 2, padding_idx=-1).padding_idx == 4


def test_embedding_grad_sums_like_add_at():
    """The per-id sums equal np.add.at's to float64 rounding (summed in another association);
    gradients accumulate across calls; all-padding input adds nothing."""
    rng = np.random.default_rng(7)
    m = rf.Embedding(50, 6, padding_idx=2, dtype="float64", seed=0)
    ids = rng.integers(0, 50, size=(40, 9))
    dy = rng.standard_normal((40, 9, 6))
    ref = np.zeros((50, 6))
    keep = ids.reshape(-1) != 2
    np.add.at(ref, ids.reshape(-1)[keep], dy.reshape(-1, 6)[keep])
    _, c = m.forward(ids)
    m.backward(c, dy)
    g = dict(m.named_grads())["weight"]
    np.testing.assert_allclose(g, ref, rtol=1e-13, atol=1e-14)
    assert not g[2].any() and (g != 0).sum(axis=1).astype(bool).sum() == len(set(ids.ravel()) - {2})
    m.backward(c, dy)
    np.testing.assert_allclose(g, 2 * ref, rtol=1e-13, atol=1e-14)
    m.zero_grad()
    _, c = m.forward(np.full((3, 4), 2))
    m.backward(c, np.ones((3, 4, 6)))
    assert not m.grads.any()
