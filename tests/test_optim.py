"""rnnfast.optim against torch.optim (the oracle), plus resume, validation and thread tests.

Parity: identical random gradient sequences are fed to an rnnfast optimizer over flat "models"
and to the torch optimizer (foreach=False, the single-tensor path whose scalar arithmetic rnnfast
mirrors) over the same starting parameters; after 50+ steps the parameters must agree.
"""
import math

import numpy as np
import pytest
import torch

import rnnfast as rf
from conftest import make_data, make_pair, rel_err, rf_run, torch_run

STEPS = 60

# Tolerances on rel_err (max abs difference / max |reference|) after STEPS steps.
# The results are not bitwise equal to torch's: torch's CPU kernels fuse some multiply-adds
# (rnnfast's baseline build does not) and its float32 sqrt is not always correctly rounded.
# Measured on an AVX2 machine with this file's data: float64 <= 4.2e-16 (median 1.8e-16),
# float32 <= 3.0e-7 (median 9.6e-8). Over ten other seeds the worst case, centered RMSprop with
# alpha=0.4 (s - ga^2 cancels and amplifies rounding differences), reached 1.2e-6 in float32 and
# 2.3e-15 in float64, so the bounds leave >= 8x room.
TOL = {"float64": 1e-12, "float32": 1e-5}

CASES = [
    ("SGD", dict(lr=0.05)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.3)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("SGD", dict(lr=0.05, weight_decay=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.1, nesterov=True)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01)),
    ("Adam", dict(lr=0.01, weight_decay=0.1)),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, betas=(0.3, 0.9), eps=1e-3)),  # 1-beta1 >= 0.5: lerp's other branch
    ("AdamW", dict()),
    ("AdamW", dict(lr=0.01, weight_decay=0.3)),
    ("AdamW", dict(lr=0.01, weight_decay=0.3, amsgrad=True, betas=(0.8, 0.99))),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, weight_decay=0.1, eps=1e-4)),
    ("RMSprop", dict(lr=0.01, alpha=0.4, centered=True, momentum=0.5, weight_decay=0.1)),
    ("Adagrad", dict()),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01)),
    ("Adagrad", dict(lr=0.1, initial_accumulator_value=0.5, weight_decay=0.1, eps=1e-6)),
]


class FlatModel:
    """The minimal model contract: writable flat ``params`` and ``grads`` of one size/dtype."""

    def __init__(self, params):
        self.params = np.array(params, copy=True)
        self.grads = np.zeros_like(self.params)


def _case_id(case):
    name, kw = case
    return name + "-" + ("-".join(f"{k}={v}" for k, v in kw.items()) or "defaults")


def _pair(name, kw, dtype, sizes, seed=0):
    """rnnfast optimizer over FlatModels and torch optimizer over Parameters, same start."""
    rng = np.random.default_rng(seed)
    starts = [rng.standard_normal(n).astype(dtype) for n in sizes]
    models = [FlatModel(p) for p in starts]
    tparams = [torch.nn.Parameter(torch.tensor(p.copy())) for p in starts]
    opt = getattr(rf.optim, name)(models if len(models) > 1 else models[0], **kw)
    topt = getattr(torch.optim, name)(tparams, foreach=False, **kw)
    return rng, models, tparams, opt, topt


def _feed(rng, models, tparams, opt, topt, steps, dtype, scale=1.0):
    for _ in range(steps):
        for m, tp in zip(models, tparams):
            g = (scale * rng.standard_normal(m.params.size)).astype(dtype)
            m.grads[:] = g
            tp.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_matches_torch(case, dtype):
    name, kw = case
    rng, models, tparams, opt, topt = _pair(name, kw, np.dtype(dtype), (700, 301))
    starts = [m.params.copy() for m in models]
    _feed(rng, models, tparams, opt, topt, STEPS, np.dtype(dtype))
    for i, (m, tp, p0) in enumerate(zip(models, tparams, starts)):
        ref = tp.detach().numpy()
        assert m.params.dtype == np.dtype(dtype)
        assert rel_err(ref, p0) > 1e-3, "the reference did not move: the test would prove nothing"
        err = rel_err(m.params, ref)
        assert err <= TOL[dtype], f"{name}{kw} {dtype} model {i}: rel err {err:.3e} > {TOL[dtype]}"
    assert opt.step_count == STEPS


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "RMSprop", "Adagrad"])
def test_defaults_are_torchs(name):
    p = torch.nn.Parameter(torch.zeros(3))
    kw = {"lr": 0.1} if name == "SGD" else {}
    theirs = getattr(torch.optim, name)([p], **kw).defaults
    ours = getattr(rf.optim, name)(FlatModel(np.zeros(3)), **kw).hyperparams
    assert set(ours) <= set(theirs)
    for key, value in ours.items():
        assert value == (tuple(theirs[key]) if key == "betas" else theirs[key]), key


def test_sgd_default_lr_is_torchs():
    theirs = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))]).defaults["lr"]
    assert rf.optim.SGD(FlatModel(np.zeros(1))).lr == theirs


def test_lr_setter_drives_the_update():
    m = FlatModel(np.ones(10))
    opt = rf.optim.SGD(m, lr=0.5)
    m.grads[:] = 2.0
    opt.lr = 0.0
    opt.step()
    np.testing.assert_array_equal(m.params, np.ones(10))
    opt.lr = 0.25
    opt.step()
    np.testing.assert_array_equal(m.params, np.full(10, 0.5))
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1e-3
    assert opt.lr == 0.25


# ------------------------------------------------------------------------------- real models
def test_lstm_training_matches_torch_and_refreshes_packed_weights():
    """Three Adam steps on an rf.LSTM with rnnfast's BPTT gradients vs torch end to end; every
    step must change the inference output (the cached packed weights are rebuilt)."""
    cell, T, B, I, H = "lstm", 5, 3, 4, 6
    m, tm = make_pair(cell, I, H, num_layers=2, dtype="float64", seed=3)
    rng = np.random.default_rng(1)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, 2, False, False, "float64")
    opt = rf.optim.Adam(m, lr=0.05, weight_decay=0.01)
    topt = torch.optim.Adam(tm.parameters(), lr=0.05, weight_decay=0.01, foreach=False)
    y_prev = np.array(m(x, hx)[0])
    for step in range(3):
        rf_run(m, cell, x, hx, None, ry, rh, rc)
        torch_run(tm, cell, x, hx, None, ry, rh, rc, False)
        version = m.version
        opt.step()
        topt.step()
        assert m.version > version, "step() must bump the parameter version"
        y = np.array(m(x, hx)[0])
        assert rel_err(y, y_prev) > 1e-4, f"step {step}: output unchanged (stale packed weights?)"
        with torch.no_grad():
            y_ref = tm(torch.tensor(x), tuple(torch.tensor(h) for h in hx))[0].numpy()
        assert rel_err(y, y_ref) <= 1e-10, f"step {step}: output differs from torch's"
        for name, ref in tm.state_dict().items():
            assert rel_err(m.state_dict()[name], ref.numpy()) <= 1e-12, name
        y_prev = y


def test_two_real_models_and_zero_grad():
    a = rf.GRU(3, 4, dtype="float32", seed=0)
    b = rf.RNN(2, 5, dtype="float32", seed=1)
    flat = FlatModel(np.ones(7, dtype=np.float32))
    opt = rf.optim.SGD([a, b, flat], lr=0.1)
    before = [a.params.copy(), b.params.copy()]
    for model in (a, b, flat):
        model.grads[:] = 1.0
    opt.step()
    np.testing.assert_allclose(a.params, before[0] - np.float32(0.1), rtol=0, atol=1e-7)
    np.testing.assert_allclose(b.params, before[1] - np.float32(0.1), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(flat.params, np.full(7, np.float32(0.9)))
    opt.zero_grad()
    for model in (a, b, flat):
        assert not model.grads.any()


# ----------------------------------------------------------------------------------- resuming
RESUME_CASES = [
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01)),
    ("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
    ("AdamW", dict(lr=0.01)),
    ("RMSprop", dict(lr=0.01, centered=True, momentum=0.5)),
    ("Adagrad", dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1)),
]


@pytest.mark.parametrize("case", RESUME_CASES, ids=_case_id)
def test_state_dict_resume_is_bit_identical(case):
    name, kw = case
    rng = np.random.default_rng(0)
    model = rf.LSTM(3, 5, num_layers=2, dtype="float32", seed=0)
    grads = [rng.standard_normal(model.grads.size).astype(np.float32) for _ in range(35)]
    opt = getattr(rf.optim, name)(model, **kw)
    for g in grads[:20]:
        model.grads[:] = g
        opt.step()
    saved_opt = opt.state_dict()
    saved_params = model.params.copy()
    saved_arrays = {k: v.copy() for s in saved_opt["state"] for k, v in s.items()}
    assert saved_arrays, "the optimizer should have state to save"
    for g in grads[20:]:
        model.grads[:] = g
        opt.step()
    # the saved dict holds copies: stepping on did not change it
    for k, v in saved_opt["state"][0].items():
        np.testing.assert_array_equal(v, saved_arrays[k])

    fresh = rf.LSTM(3, 5, num_layers=2, dtype="float32", seed=99)
    fresh.set_params(saved_params)
    opt2 = getattr(rf.optim, name)(fresh)  # default hyperparameters: the load must restore them
    opt2.load_state_dict(saved_opt)
    assert opt2.hyperparams == opt.hyperparams and opt2.step_count == 20
    for g in grads[20:]:
        fresh.grads[:] = g
        opt2.step()
    np.testing.assert_array_equal(fresh.params, model.params)
    assert opt2.step_count == opt.step_count == 35


def test_load_state_dict_is_checked():
    m = FlatModel(np.zeros(5))
    opt = rf.optim.Adam(m)
    m.grads[:] = 1.0
    opt.step()
    sd = opt.state_dict()
    with pytest.raises(ValueError, match="Adam"):
        rf.optim.AdamW(FlatModel(np.zeros(5))).load_state_dict(sd)
    with pytest.raises(ValueError, match="2 models|1 models"):
        rf.optim.Adam([FlatModel(np.zeros(5)), FlatModel(np.zeros(5))]).load_state_dict(sd)
    with pytest.raises(ValueError, match="float64\\[5\\]"):
        rf.optim.Adam(FlatModel(np.zeros(6))).load_state_dict(sd)
    bad = dict(sd, hyperparams=dict(sd["hyperparams"], lr=-1.0))
    target = rf.optim.Adam(FlatModel(np.zeros(5)), lr=0.5)
    with pytest.raises(ValueError, match="lr"):
        target.load_state_dict(bad)
    assert target.lr == 0.5 and target.step_count == 0, "a failed load must change nothing"


# --------------------------------------------------------------------------------- validation
BAD = [
    ("SGD", dict(lr=-0.1), "lr"),
    ("SGD", dict(lr=0.1, momentum=-0.5), "momentum"),
    ("SGD", dict(lr=0.1, weight_decay=-1e-4), "weight_decay"),
    ("SGD", dict(lr=0.1, nesterov=True), "momentum"),
    ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1, nesterov=True), "dampening"),
    ("Adam", dict(lr=-1e-3), "lr"),
    ("Adam", dict(betas=(1.0, 0.999)), "1.0"),
    ("Adam", dict(betas=(0.9, -0.1)), "-0.1"),
    ("Adam", dict(eps=-1e-8), "eps"),
    ("Adam", dict(weight_decay=-0.1), "weight_decay"),
    ("AdamW", dict(betas=(0.9, 1.5)), "1.5"),
    ("RMSprop", dict(alpha=-0.1), "alpha"),
    ("RMSprop", dict(momentum=-0.1), "momentum"),
    ("RMSprop", dict(eps=-1.0), "eps"),
    ("Adagrad", dict(lr_decay=-0.1), "lr_decay"),
    ("Adagrad", dict(initial_accumulator_value=-1.0), "initial_accumulator_value"),
    ("Adagrad", dict(eps=-1e-10), "eps"),
]


@pytest.mark.parametrize("name,kw,needle", BAD, ids=[f"{n}-{k}" for n, k, _ in BAD])
def test_bad_hyperparameters_raise_like_torch(name, kw, needle):
    with pytest.raises(ValueError):
        getattr(torch.optim, name)([torch.nn.Parameter(torch.zeros(2))], **kw)
    with pytest.raises(ValueError, match=needle.replace(".", "\\.").replace("[", "\\[")):
        getattr(rf.optim, name)(FlatModel(np.zeros(2)), **kw)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_non_finite_hyperparameters_raise(value):
    # stricter than torch, whose SGD takes lr=nan and runs on to NaN parameters
    for name, key in [("SGD", "lr"), ("Adam", "eps"), ("RMSprop", "alpha"),
                      ("Adagrad", "lr_decay")]:
        with pytest.raises(ValueError, match=key):
            getattr(rf.optim, name)(FlatModel(np.zeros(2)), **{key: value})


def test_bad_hyperparameter_types():
    m = FlatModel(np.zeros(2))
    with pytest.raises(TypeError, match="lr"):
        rf.optim.SGD(m, lr="0.1")
    with pytest.raises(TypeError, match="amsgrad"):
        rf.optim.Adam(m, amsgrad="yes")
    with pytest.raises(TypeError, match="betas"):
        rf.optim.Adam(m, betas=0.9)


class _ReadOnly:
    def __init__(self):
        self.params = np.zeros(4)
        self.params.flags.writeable = False
        self.grads = np.zeros(4)


def test_bad_models_are_refused():
    with pytest.raises(TypeError, match="models"):
        rf.optim.SGD(np.zeros(3), lr=0.1)
    with pytest.raises(ValueError, match="empty"):
        rf.optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="read-only"):
        rf.optim.SGD(_ReadOnly(), lr=0.1)
    m = FlatModel(np.zeros(4))
    with pytest.raises(ValueError, match="share"):
        rf.optim.SGD([m, m], lr=0.1)
    odd = FlatModel(np.zeros(4))
    odd.grads = np.zeros(5)
    with pytest.raises(ValueError, match="size"):
        rf.optim.SGD(odd, lr=0.1)
    ints = FlatModel(np.zeros(4))
    ints.params = np.zeros(4, dtype=np.int32)
    with pytest.raises(TypeError, match="float32 or float64"):
        rf.optim.SGD(ints, lr=0.1)


# ------------------------------------------------------------------------------ numerics, threads
@pytest.mark.parametrize("name,kw", [("Adam", dict(lr=0.01, amsgrad=True)),
                                     ("SGD", dict(lr=0.1, momentum=0.9)),
                                     ("RMSprop", dict(centered=True)),
                                     ("Adagrad", dict())])
def test_nan_gradients_propagate_like_torch(name, kw):
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(64).astype(np.float32)
    m = FlatModel(p0)
    tp = torch.nn.Parameter(torch.tensor(p0.copy()))
    opt = getattr(rf.optim, name)(m, **kw)
    topt = getattr(torch.optim, name)([tp], foreach=False, **kw)
    for step in range(4):
        g = rng.standard_normal(64).astype(np.float32)
        if step == 1:
            g[[3, 17]] = np.nan
        m.grads[:] = g
        tp.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
    ref = tp.detach().numpy()
    np.testing.assert_array_equal(np.isnan(m.params), np.isnan(ref))
    assert np.isnan(m.params[[3, 17]]).all() and np.isfinite(np.delete(m.params, [3, 17])).all()
    ok = ~np.isnan(ref)
    assert rel_err(m.params[ok], ref[ok]) <= 1e-6


@pytest.mark.parametrize("name,kw", [("Adam", dict(lr=0.01, amsgrad=True, weight_decay=0.1)),
                                     ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True)),
                                     ("RMSprop", dict(centered=True, momentum=0.3)),
                                     ("Adagrad", dict(lr_decay=0.1))])
def test_steps_do_not_depend_on_thread_count(name, kw, restore_threads):
    """Big enough (200k elements) for the kernels' parallel path; bits must not change."""
    rng = np.random.default_rng(2)
    p0 = rng.standard_normal(200_000).astype(np.float32)
    grads = [rng.standard_normal(p0.size).astype(np.float32) for _ in range(4)]
    results = []
    for threads in (1, 2, 3):
        rf.set_num_threads(threads)
        m = FlatModel(p0)
        opt = getattr(rf.optim, name)(m, **kw)
        for g in grads:
            m.grads[:] = g
            opt.step()
        results.append(m.params)
    for r in results[1:]:
        np.testing.assert_array_equal(r, results[0])
    assert not np.array_equal(results[0], p0)


def test_adam_first_step_is_sign_times_lr():
    """Closed form of the first Adam step: p -= lr * g / (|g| + eps*...) ~= lr * sign(g)."""
    g = np.array([3.0, -2.0, 0.5, -1e-3])
    m = FlatModel(np.zeros(4))
    opt = rf.optim.Adam(m, lr=0.1, eps=0.0)
    m.grads[:] = g
    opt.step()
    np.testing.assert_allclose(m.params, -0.1 * np.sign(g), rtol=1e-14, atol=0)
    assert math.isclose(opt.lr, 0.1)
