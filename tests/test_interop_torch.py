"""rf.from_torch / rf.to_torch: same architecture, same weights, same outputs as torch.

Outputs and final states are compared against the torch module run by torch (float64 rel err
<= 1e-12, float32 <= 1e-5); round trips must reproduce every tensor bit for bit.
"""
import sys

import numpy as np
import pytest
import torch

import rnnfast as rf
from conftest import CELLS, NP_DTYPES, TORCH_DTYPES, is_lstm, rel_err, rf_model, torch_model

TOL = {"float64": 1e-12, "float32": 1e-5}


@pytest.fixture(autouse=True, scope="module")
def _torch_one_thread():
    """torch's own threads cost ~0.3 s per tiny call on a loaded 2-core machine (measured); the
    oracle's thread count does not change what is compared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

# cells x layers x bidirectional in full; batch_first and bias rotate so each meets every cell
CASES = [(cell, layers, bidir, bool((layers + bidir) % 2), not (layers == 2 and bidir))
         for cell in CELLS for layers in (1, 2) for bidir in (False, True)]


def _case_id(c):
    cell, layers, bidir, bf, bias = c
    return (f"{cell}-L{layers}-{'bi' if bidir else 'uni'}-{'bf' if bf else 'tf'}"
            f"-{'bias' if bias else 'nobias'}")


def _inputs(cell, layers, bidir, batch_first, dtype, I=4, H=6, T=5, B=3, seed=0):
    rng = np.random.default_rng(seed)
    npdt = NP_DTYPES[dtype]
    x = rng.standard_normal((B, T, I) if batch_first else (T, B, I)).astype(npdt)
    S = (layers * (2 if bidir else 1), B, H)
    h0 = (0.5 * rng.standard_normal(S)).astype(npdt)
    c0 = (0.5 * rng.standard_normal(S)).astype(npdt)
    return x, ((h0, c0) if is_lstm(cell) else h0)


def _run_torch(tm, cell, x, hx):
    hxt = tuple(torch.from_numpy(a) for a in hx) if is_lstm(cell) else torch.from_numpy(hx)
    with torch.no_grad():
        y, st = tm(torch.from_numpy(x), hxt)
    states = st if is_lstm(cell) else (st,)
    return [y.numpy()] + [s.numpy() for s in states]


def _run_rf(m, cell, x, hx):
    y, st = m(x, hx)
    return [y] + (list(st) if is_lstm(cell) else [st])


def _assert_same_outputs(got, ref, tol, what):
    errs = [rel_err(g, r) for g, r in zip(got, ref)]
    assert len(got) == len(ref)
    assert max(errs) <= tol, f"{what}: relative errors {errs} (y, h_n[, c_n]) > {tol:.0e}"


def _assert_same_flags(m, tm):
    assert m.input_size == tm.input_size and m.hidden_size == tm.hidden_size
    assert m.num_layers == tm.num_layers and m.bias == tm.bias
    assert m.batch_first == tm.batch_first and m.bidirectional == tm.bidirectional
    assert m.dropout == tm.dropout and m._mode == tm.mode


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_from_torch_matches_torch(case, dtype):
    cell, layers, bidir, bf, bias = case
    torch.manual_seed(1)
    tm = torch_model(cell, 4, 6, layers, bias, bf, bidir, dtype)
    m = rf.from_torch(tm)
    assert m.dtype == NP_DTYPES[dtype]
    _assert_same_flags(m, tm)
    x, hx = _inputs(cell, layers, bidir, bf, dtype)
    _assert_same_outputs(_run_rf(m, cell, x, hx), _run_torch(tm, cell, x, hx), TOL[dtype],
                         f"from_torch {_case_id(case)} {dtype}")
    # the rnnfast model owns its weights: changing the torch module afterwards does not leak in
    before = m.params.copy()
    with torch.no_grad():
        tm.weight_hh_l0.add_(1.0)
    assert np.array_equal(m.params, before)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_to_torch_matches_rnnfast(case, dtype):
    cell, layers, bidir, bf, bias = case
    m = rf_model(cell, 4, 6, layers, bias, bf, 0.0, bidir, dtype, seed=3)
    tm = rf.to_torch(m)
    assert isinstance(tm, {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}.get(cell, torch.nn.RNN))
    assert all(p.dtype == TORCH_DTYPES[dtype] for p in tm.parameters())
    _assert_same_flags(m, tm)
    x, hx = _inputs(cell, layers, bidir, bf, dtype, seed=4)
    _assert_same_outputs(_run_torch(tm, cell, x, hx), _run_rf(m, cell, x, hx), TOL[dtype],
                         f"to_torch {_case_id(case)} {dtype}")


@pytest.mark.parametrize("cell", CELLS)
def test_round_trips_are_bit_exact(cell):
    m = rf_model(cell, 3, 5, 2, True, True, 0.25, True, "float32", seed=7)
    back = rf.from_torch(rf.to_torch(m))
    assert type(back) is type(m) and back._mode == m._mode and back.dtype == m.dtype
    assert (back.num_layers, back.bidirectional, back.batch_first, back.dropout) == (2, True,
                                                                                     True, 0.25)
    assert np.array_equal(back.params, m.params)

    torch.manual_seed(2)
    tm = torch_model(cell, 3, 5, 2, False, False, True, "float64")
    tm2 = rf.to_torch(rf.from_torch(tm))
    sd, sd2 = tm.state_dict(), tm2.state_dict()
    assert list(sd) == list(sd2)
    for k in sd:
        assert sd2[k].dtype == torch.float64 and torch.equal(sd[k], sd2[k]), k


def test_relu_nonlinearity_carries_over():
    torch.manual_seed(0)
    tm = torch.nn.RNN(3, 4, nonlinearity="relu", dtype=torch.float64)
    m = rf.from_torch(tm)
    assert m.nonlinearity == "relu" and m._mode == "RNN_RELU"
    assert rf.to_torch(m).nonlinearity == "relu"
    x = np.random.default_rng(0).standard_normal((6, 2, 3))
    got = m(x)[0]
    assert (got == 0).any(), "test data must exercise the relu clamp"
    assert rel_err(got, tm(torch.from_numpy(x))[0].detach().numpy()) <= 1e-12


def test_dtype_argument_converts_and_default_follows_the_module():
    torch.manual_seed(0)
    tm = torch.nn.LSTM(3, 4, dtype=torch.float64)
    m32 = rf.from_torch(tm, dtype="float32")
    assert m32.dtype == np.float32
    assert np.array_equal(m32.params, rf.from_torch(tm).params.astype(np.float32))
    half = torch.nn.GRU(3, 4).to(torch.float16)
    with pytest.raises(ValueError, match="float16.*dtype="):
        rf.from_torch(half)
    m = rf.from_torch(half, dtype="float64")
    ref = {k: v.double().numpy() for k, v in half.state_dict().items()}
    assert all(np.array_equal(m.state_dict()[k], ref[k]) for k in ref)
    with pytest.raises(ValueError, match="float32.*float64"):
        rf.from_torch(tm, dtype="float16")


def test_parametrized_weights_are_copied_as_forward_sees_them():
    from torch.nn.utils import parametrize

    class Double(torch.nn.Module):
        def forward(self, w):
            return 2 * w

    torch.manual_seed(0)
    tm = torch.nn.GRU(3, 4, dtype=torch.float64)
    parametrize.register_parametrization(tm, "weight_hh_l0", Double())
    m = rf.from_torch(tm)
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    assert rel_err(m(x)[0], tm(torch.from_numpy(x))[0].detach().numpy()) <= 1e-12


def test_from_torch_refuses_what_it_cannot_reproduce():
    with pytest.raises(ValueError, match="proj_size=2"):
        rf.from_torch(torch.nn.LSTM(3, 4, proj_size=2))
    with pytest.raises(TypeError, match="torch.nn.LSTM.*Linear"):
        rf.from_torch(torch.nn.Linear(3, 4))

    class Custom(torch.nn.GRU):
        def forward(self, x, hx=None):
            return super().forward(2 * x, hx)

    with pytest.raises(ValueError, match="overrides forward"):
        rf.from_torch(Custom(3, 4))
    tm = torch.nn.RNN(3, 4)
    tm.register_forward_hook(lambda mod, inp, out: out)
    with pytest.raises(ValueError, match="forward_hooks"):
        rf.from_torch(tm)
    with pytest.raises(ValueError, match="meta"):
        rf.from_torch(torch.nn.LSTM(3, 4, device="meta"))


def test_to_torch_argument_errors(monkeypatch):
    with pytest.raises(TypeError, match="RNN, LSTM and GRU.*SequenceModel.*rnn"):
        rf.to_torch(rf.SequenceModel(rf.LSTM(3, 4, seed=0)))
    # without torch, a clear ImportError that says how to get it
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="pip install torch"):
        rf.to_torch(rf.GRU(3, 4, seed=0))
