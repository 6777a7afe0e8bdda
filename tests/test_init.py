"""rnnfast.init: orthogonal gate blocks, fan-based Xavier bounds per gate block, the LSTM forget
bias, PyTorch's default, seeding, and that every init reaches the kernels (packed weights are
rebuilt after the write)."""

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import init

GATES = {"rnn": 1, "lstm": 4, "gru": 3}


def make(kind, I=5, H=12, layers=2, bidir=True, bias=True, dtype="float64", seed=0):
    cls = {"rnn": rf.RNN, "lstm": rf.LSTM, "gru": rf.GRU}[kind]
    return cls(I, H, num_layers=layers, bidirectional=bidir, bias=bias, dtype=dtype, seed=seed)


def blocks(w, H):
    return [w[g * H:(g + 1) * H] for g in range(w.shape[0] // H)]


@pytest.mark.parametrize("kind", ["rnn", "lstm", "gru"])
def test_orthogonal_recurrent_blocks(kind):
    m = make(kind)
    before = m.state_dict()
    assert init.orthogonal(m, gain=1.5, seed=0) is m
    sd = m.state_dict()
    seen = []
    for name, w in sd.items():
        if name.startswith("weight_hh"):
            assert w.shape == (GATES[kind] * 12, 12)
            for b in blocks(w, 12):
                np.testing.assert_allclose(b @ b.T, 2.25 * np.eye(12), atol=1e-12)
                np.testing.assert_allclose(b.T @ b, 2.25 * np.eye(12), atol=1e-12)
                seen.append(b)
        else:  # input weights and biases are untouched
            np.testing.assert_array_equal(w, before[name])
    assert len(seen) == GATES[kind] * 2 * 2
    # independent blocks, not one matrix repeated
    assert all(not np.allclose(seen[0], s) for s in seen[1:])


def test_orthogonal_is_uniform_not_biased_by_qr_signs():
    """Without the sign fix, QR's Q has a positive-diagonal R bias: E[trace(Q)] is far from 0."""
    m = rf.RNN(1, 8, dtype="float64", seed=0)
    rng = np.random.default_rng(0)
    traces = []
    for _ in range(400):
        init.orthogonal(m, seed=rng)
        traces.append(np.trace(m.state_dict()["weight_hh_l0"]))
    # for Haar-uniform orthogonal matrices E[trace] = 0 and Var[trace] = 1
    assert abs(np.mean(traces)) < 4 / np.sqrt(400), np.mean(traces)


def test_orthogonal_linear_is_semi_orthogonal():
    for shape in ((6, 10), (10, 6)):
        lin = rf.Linear(shape[1], shape[0], dtype="float64", seed=0)
        b = lin.state_dict()["bias"]
        init.orthogonal(lin, seed=1)
        w = lin.state_dict()["weight"]
        small = min(shape)
        gram = w @ w.T if shape[0] < shape[1] else w.T @ w
        np.testing.assert_allclose(gram, np.eye(small), atol=1e-12)
        np.testing.assert_array_equal(lin.state_dict()["bias"], b)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_xavier_uniform_per_gate_block_fans(kind):
    I, H = 40, 50
    m = make(kind, I=I, H=H, layers=2, bidir=True)
    before = m.state_dict()
    init.xavier_uniform(m, gain=2.0, seed=0)
    for name, w in m.state_dict().items():
        if name.startswith("bias"):
            np.testing.assert_array_equal(w, before[name])
            continue
        fan_in = w.shape[1]                   # I, 2H (layer 1 input of a bidirectional stack), H
        bound = 2.0 * np.sqrt(6.0 / (fan_in + H))   # the block's fans, not (G*H, in)'s
        for b in blocks(w, H):
            assert np.abs(b).max() <= bound
            assert np.abs(b).max() > 0.97 * bound, (name, np.abs(b).max(), bound)
            assert abs(b.std() - bound / np.sqrt(3)) < 0.06 * bound / np.sqrt(3)


def test_xavier_which_and_linear():
    m = make("lstm", layers=1, bidir=False)
    before = m.state_dict()
    init.xavier_uniform(m, which="hh", seed=0)
    after = m.state_dict()
    np.testing.assert_array_equal(after["weight_ih_l0"], before["weight_ih_l0"])
    assert not np.array_equal(after["weight_hh_l0"], before["weight_hh_l0"])
    lin = rf.Linear(30, 70, dtype="float64", seed=0)
    init.xavier_uniform(lin, seed=0)
    w = lin.state_dict()["weight"]
    bound = np.sqrt(6.0 / 100)
    assert bound * 0.97 < np.abs(w).max() <= bound
    with pytest.raises(ValueError, match="which"):
        init.xavier_uniform(m, which="bias")


def test_forget_bias():
    H = 7
    m = make("lstm", H=H)
    before = m.state_dict()
    init.forget_bias(m, 1.0)
    sd = m.state_dict()
    for name in sd:
        if name.startswith("bias_ih"):
            np.testing.assert_array_equal(sd[name][H:2 * H], 1.0)
        elif name.startswith("bias_hh"):
            np.testing.assert_array_equal(sd[name][H:2 * H], 0.0)
        if name.startswith("bias"):
            # the effective forget bias is exactly the value; other gates untouched
            rest = np.r_[0:H, 2 * H:4 * H]
            np.testing.assert_array_equal(sd[name][rest], before[name][rest])
        else:
            np.testing.assert_array_equal(sd[name], before[name])
    with pytest.raises(TypeError, match="LSTM"):
        init.forget_bias(make("gru"), 1.0)
    with pytest.raises(ValueError, match="bias=False"):
        init.forget_bias(make("lstm", bias=False), 1.0)
    with pytest.raises(ValueError, match="finite"):
        init.forget_bias(m, float("nan"))


def test_pytorch_default_and_zero_bias():
    m = make("gru", I=6, H=64, layers=1, bidir=False)
    init.pytorch_default(m, seed=3)
    k = 1 / np.sqrt(64)
    assert np.abs(m.params).max() <= k and np.abs(m.params).max() > 0.99 * k
    init.zero_bias(m)
    sd = m.state_dict()
    assert not sd["bias_ih_l0"].any() and not sd["bias_hh_l0"].any()
    assert sd["weight_hh_l0"].any()
    lin = rf.Linear(25, 40, dtype="float64")
    init.pytorch_default(lin, seed=0)
    assert np.abs(lin.params).max() <= 0.2 and np.abs(lin.params).max() > 0.19
    emb = rf.Embedding(50, 20, padding_idx=3, dtype="float64")
    init.pytorch_default(emb, seed=0)
    assert not emb.state_dict()["weight"][3].any() and emb.params.std() > 0.9


def test_seeding():
    a, b, c = make("lstm"), make("lstm"), make("lstm")
    init.orthogonal(init.xavier_uniform(a, seed=7), seed=8)
    init.orthogonal(init.xavier_uniform(b, seed=7), seed=8)
    init.orthogonal(init.xavier_uniform(c, seed=7), seed=9)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    g1, g2 = np.random.default_rng(5), np.random.default_rng(5)
    init.xavier_uniform(a, seed=g1)
    init.xavier_uniform(b, seed=g2)
    np.testing.assert_array_equal(a.params, b.params)
    for bad in (1.5, "x", True):
        with pytest.raises(TypeError, match="seed"):
            init.orthogonal(a, seed=bad)
    with pytest.raises(ValueError, match="gain"):
        init.orthogonal(a, gain=0)
    with pytest.raises(TypeError, match="applies to"):
        init.orthogonal(rf.Embedding(3, 2))


@pytest.mark.parametrize("fn", [
    lambda m: init.orthogonal(m, seed=1),
    lambda m: init.xavier_uniform(m, seed=1),
    lambda m: init.forget_bias(m, 2.0),
    lambda m: init.pytorch_default(m, seed=1),
    lambda m: init.zero_bias(m),
])
def test_init_reaches_the_kernels(fn):
    """A forward after the init must use the new weights (the packed copy is rebuilt)."""
    m = make("lstm", dtype="float32")
    x = np.random.default_rng(0).standard_normal((4, 3, 5)).astype(np.float32)
    y_before, _ = m(x)  # packs the old weights
    v = m.version
    fn(m)
    assert m.version > v
    fresh = make("lstm", dtype="float32", seed=99)
    fresh.load_state_dict(m.state_dict())
    y_after, _ = m(x)
    np.testing.assert_array_equal(y_after, fresh(x)[0])
    assert not np.array_equal(y_after, y_before)
