"""rnnfast.optim's LR schedulers against torch.optim.lr_scheduler's LR sequences.

rnnfast's schedulers are closed forms of the step index; torch's are mostly recursive (each lr
from the previous one), so the two agree to accumulated rounding: |ours - torch| must stay below
1e-12 * the schedule's peak lr over every step (measured, relative to the peak: 1.4e-14 for
cosine annealing run 5x past T_max, where torch's recursion drifts; <= 3e-16 for the rest).
ReduceLROnPlateau does the same arithmetic as torch and must match exactly.
"""
import math

import numpy as np
import pytest
import torch

import rnnfast as rf
from rnnfast import optim as O

SEQ_TOL = 1e-12


class FlatModel:
    def __init__(self, n=4, dtype=np.float64):
        self.params = np.zeros(n, dtype=dtype)
        self.grads = np.zeros(n, dtype=dtype)


def _opts(lr=0.1, momentum=0.9):
    ours = O.SGD(FlatModel(), lr=lr, momentum=momentum)
    theirs = torch.optim.SGD([torch.nn.Parameter(torch.zeros(4))], lr=lr, momentum=momentum)
    return ours, theirs


def _sequences(make_ours, make_theirs, steps, lr=0.1):
    """LR (and momentum) after construction and after each of ``steps`` steps, both sides."""
    opt, topt = _opts(lr)
    sched, tsched = make_ours(opt), make_theirs(topt)
    ours, theirs = [], []
    for t in range(steps + 1):
        if t:
            topt.step()  # no grads: changes nothing, keeps torch's call-order check quiet
            tsched.step()
            sched.step()
        assert opt.lr == sched.get_last_lr()[0]
        ours.append((opt.lr, opt.momentum))
        theirs.append((tsched.get_last_lr()[0], topt.param_groups[0]["momentum"]))
    return np.array(ours), np.array(theirs)


def _assert_close(ours, theirs):
    scale = np.abs(theirs).max(axis=0)
    err = (np.abs(ours - theirs) / scale).max()
    assert err <= SEQ_TOL, f"max |ours - torch| / peak = {err:.3e}"


L = torch.optim.lr_scheduler
SCHEDULES = {
    "step": (lambda o: O.StepLR(o, step_size=7, gamma=0.5),
             lambda o: L.StepLR(o, step_size=7, gamma=0.5), 60),
    "step-default-gamma": (lambda o: O.StepLR(o, 3), lambda o: L.StepLR(o, 3), 20),
    "exponential": (lambda o: O.ExponentialLR(o, gamma=0.93),
                    lambda o: L.ExponentialLR(o, gamma=0.93), 100),
    "cosine": (lambda o: O.CosineAnnealingLR(o, T_max=40),
               lambda o: L.CosineAnnealingLR(o, T_max=40), 40),
    "cosine-eta-min-past-T": (lambda o: O.CosineAnnealingLR(o, T_max=25, eta_min=1e-3),
                              lambda o: L.CosineAnnealingLR(o, T_max=25, eta_min=1e-3), 120),
    "warmup-default": (lambda o: O.LinearWarmup(o, 5), lambda o: L.LinearLR(o), 12),
    "warmup": (lambda o: O.LinearWarmup(o, warmup_steps=30, start_factor=0.01),
               lambda o: L.LinearLR(o, start_factor=0.01, total_iters=30), 50),
    "warmup-to-half": (lambda o: O.LinearWarmup(o, 10, start_factor=0.2, end_factor=0.5),
                       lambda o: L.LinearLR(o, start_factor=0.2, end_factor=0.5, total_iters=10),
                       20),
    "onecycle": (lambda o: O.OneCycleLR(o, max_lr=1.0, total_steps=100),
                 lambda o: L.OneCycleLR(o, max_lr=1.0, total_steps=100), 100),
    "onecycle-linear": (lambda o: O.OneCycleLR(o, 0.5, total_steps=50, anneal_strategy="linear",
                                               pct_start=0.25),
                        lambda o: L.OneCycleLR(o, 0.5, total_steps=50, anneal_strategy="linear",
                                               pct_start=0.25), 50),
    "onecycle-three-phase": (lambda o: O.OneCycleLR(o, 2.0, epochs=4, steps_per_epoch=20,
                                                    three_phase=True, div_factor=10.0,
                                                    final_div_factor=100.0),
                             lambda o: L.OneCycleLR(o, 2.0, epochs=4, steps_per_epoch=20,
                                                    three_phase=True, div_factor=10.0,
                                                    final_div_factor=100.0), 80),
    "onecycle-no-momentum": (lambda o: O.OneCycleLR(o, 0.3, 40, cycle_momentum=False),
                             lambda o: L.OneCycleLR(o, 0.3, 40, cycle_momentum=False), 40),
}


@pytest.mark.parametrize("kind", sorted(SCHEDULES))
def test_lr_sequence_matches_torch(kind):
    make_ours, make_theirs, steps = SCHEDULES[kind]
    ours, theirs = _sequences(make_ours, make_theirs, steps)
    assert len(np.unique(ours[:, 0])) > 2, "the schedule should move the lr"
    _assert_close(ours, theirs)


def test_onecycle_refuses_steps_past_total_like_torch():
    opt, topt = _opts()
    sched = O.OneCycleLR(opt, 1.0, total_steps=10)
    tsched = L.OneCycleLR(topt, 1.0, total_steps=10)
    for _ in range(10):
        topt.step()
        tsched.step()
        sched.step()
    with pytest.raises(ValueError, match="total steps"):
        tsched.step()
    lr = opt.lr
    with pytest.raises(ValueError, match="total steps is 10"):
        sched.step()
    assert opt.lr == lr and sched.last_epoch == 10


def test_onecycle_cycles_adam_beta1_and_trains_like_torch():
    """Adam under OneCycleLR (lr and beta1 cycled) for 40 steps: parameters match torch."""
    rng = np.random.default_rng(0)
    p0 = rng.standard_normal(50)
    model = FlatModel(50)
    model.params[:] = p0
    tp = torch.nn.Parameter(torch.tensor(p0.copy()))
    opt = O.Adam(model, betas=(0.9, 0.99))
    topt = torch.optim.Adam([tp], betas=(0.9, 0.99), foreach=False)
    sched = O.OneCycleLR(opt, max_lr=0.05, total_steps=40)
    tsched = L.OneCycleLR(topt, max_lr=0.05, total_steps=40)
    beta1s = set()
    for _ in range(40):
        g = rng.standard_normal(50)
        model.grads[:] = g
        tp.grad = torch.tensor(g.copy())
        opt.step()
        topt.step()
        sched.step()
        tsched.step()
        assert abs(opt.betas[0] - topt.param_groups[0]["betas"][0]) <= 1e-15
        assert opt.betas[1] == 0.99
        beta1s.add(opt.betas[0])
    assert len(beta1s) > 10
    ref = tp.detach().numpy()
    assert np.abs(model.params - ref).max() <= 1e-12 * np.abs(ref).max()


def test_onecycle_needs_momentum_to_cycle():
    with pytest.raises(ValueError, match="cycle_momentum"):
        O.OneCycleLR(O.Adagrad(FlatModel()), 1.0, 10)
    O.OneCycleLR(O.Adagrad(FlatModel()), 1.0, 10, cycle_momentum=False)


# ------------------------------------------------------------------------- ReduceLROnPlateau
PLATEAU = [
    dict(),
    dict(patience=2, factor=0.5),
    dict(mode="max", patience=1, threshold=0.05, threshold_mode="abs", cooldown=2),
    dict(mode="min", patience=0, threshold=0.0, cooldown=1, min_lr=0.004),
    dict(patience=1, factor=0.5, eps=0.02),  # 0.1, 0.05, 0.025, then the step is below eps
]


def _metrics(n=80):
    rng = np.random.default_rng(4)
    trend = np.concatenate([np.linspace(5.0, 1.0, n // 4), np.full(n - n // 4, 1.0)])
    m = trend + 0.05 * rng.standard_normal(n)
    m[n // 2] = float("nan")  # never better
    return m


@pytest.mark.parametrize("kw", PLATEAU, ids=lambda kw: ",".join(f"{k}={v}" for k, v in kw.items())
                         or "defaults")
def test_reduce_on_plateau_matches_torch_exactly(kw):
    opt, topt = _opts(lr=0.1)
    sched = O.ReduceLROnPlateau(opt, **kw)
    tsched = L.ReduceLROnPlateau(topt, **kw)
    ours, theirs = [], []
    for metric in _metrics():
        sched.step(metric)
        tsched.step(metric)
        ours.append(opt.lr)
        theirs.append(topt.param_groups[0]["lr"])
        assert sched.get_last_lr() == [opt.lr]
    assert ours == theirs
    assert len(set(ours)) > 1, "the metric sequence should trigger a reduction"


def test_reduce_on_plateau_accepts_numpy_and_refuses_junk():
    sched = O.ReduceLROnPlateau(O.SGD(FlatModel(), lr=1.0), patience=0)
    sched.step(np.float32(1.0))
    sched.step(np.array(2.0))
    assert sched.optimizer.lr == pytest.approx(0.1)
    with pytest.raises(TypeError, match="metric"):
        sched.step("low")


# ----------------------------------------------------------------------------------- resuming
RESUMABLE = ["step", "exponential", "cosine-eta-min-past-T", "warmup", "onecycle",
             "onecycle-three-phase"]


@pytest.mark.parametrize("kind", RESUMABLE)
@pytest.mark.parametrize("scheduler_first", [True, False])
def test_scheduler_resume_continues_exactly(kind, scheduler_first):
    make_ours = SCHEDULES[kind][0]
    opt, _ = _opts()
    sched = make_ours(opt)
    for _ in range(17):
        sched.step()
    saved_sched, saved_opt = sched.state_dict(), opt.state_dict()
    expected = []
    for _ in range(20):
        sched.step()
        expected.append((opt.lr, opt.momentum))

    opt2, _ = _opts(lr=0.7, momentum=0.1)  # other values: the loads must restore them
    if scheduler_first:
        sched2 = make_ours(opt2)
        opt2.load_state_dict(saved_opt)
    else:
        opt2.load_state_dict(saved_opt)
        sched2 = make_ours(opt2)
    sched2.load_state_dict(saved_sched)
    assert opt2.lr == saved_sched["_last_lr"][0]
    got = []
    for _ in range(20):
        sched2.step()
        got.append((opt2.lr, opt2.momentum))
    assert got == expected


def test_plateau_resume_continues_exactly():
    metrics = _metrics()
    opt, _ = _opts()
    sched = O.ReduceLROnPlateau(opt, patience=2, cooldown=1)
    for m in metrics[:30]:
        sched.step(m)
    saved = sched.state_dict(), opt.state_dict()
    expected = []
    for m in metrics[30:]:
        sched.step(m)
        expected.append(opt.lr)
    opt2, _ = _opts(lr=5.0)
    sched2 = O.ReduceLROnPlateau(opt2, patience=2, cooldown=1)
    sched2.load_state_dict(saved[0])
    opt2.load_state_dict(saved[1])
    got = []
    for m in metrics[30:]:
        sched2.step(m)
        got.append(opt2.lr)
    assert got == expected and len(set(got)) > 1


def test_scheduler_state_dict_is_checked():
    opt, _ = _opts()
    sd = O.StepLR(opt, 5).state_dict()
    with pytest.raises(ValueError, match="T_max"):
        O.CosineAnnealingLR(opt, 10).load_state_dict(sd)
    with pytest.raises(TypeError):
        O.StepLR(opt, 5).load_state_dict([1, 2])


# --------------------------------------------------------------------------------- validation
@pytest.mark.parametrize("make,exc,needle", [
    (lambda o: O.StepLR(o, 0), ValueError, "step_size"),
    (lambda o: O.StepLR(o, 2.5), TypeError, "step_size"),
    (lambda o: O.StepLR(o, 3, gamma=-0.5), ValueError, "gamma"),
    (lambda o: O.ExponentialLR(o, 0.0), ValueError, "gamma"),
    (lambda o: O.CosineAnnealingLR(o, 0), ValueError, "T_max"),
    (lambda o: O.CosineAnnealingLR(o, 10, eta_min=-1.0), ValueError, "eta_min"),
    (lambda o: O.LinearWarmup(o, 5, start_factor=0.0), ValueError, "start_factor"),
    (lambda o: O.LinearWarmup(o, 5, start_factor=1.5), ValueError, "start_factor"),
    (lambda o: O.LinearWarmup(o, 5, end_factor=2.0), ValueError, "end_factor"),
    (lambda o: O.LinearWarmup(o, 0), ValueError, "warmup_steps"),
    (lambda o: O.OneCycleLR(o, 1.0), ValueError, "total_steps"),
    (lambda o: O.OneCycleLR(o, 1.0, 10, pct_start=1.5), ValueError, "pct_start"),
    (lambda o: O.OneCycleLR(o, 1.0, 10, anneal_strategy="cosine"), ValueError, "anneal"),
    (lambda o: O.OneCycleLR(o, -1.0, 10), ValueError, "max_lr"),
    (lambda o: O.OneCycleLR(o, 1.0, 0), ValueError, "total_steps"),
    (lambda o: O.ReduceLROnPlateau(o, mode="avg"), ValueError, "mode"),
    (lambda o: O.ReduceLROnPlateau(o, factor=1.0), ValueError, "factor"),
    (lambda o: O.ReduceLROnPlateau(o, threshold_mode="pct"), ValueError, "threshold_mode"),
    (lambda o: O.ReduceLROnPlateau(o, patience=-1), ValueError, "patience"),
])
def test_bad_scheduler_arguments(make, exc, needle):
    opt, _ = _opts()
    with pytest.raises(exc, match=needle):
        make(opt)


def test_scheduler_needs_an_rnnfast_optimizer():
    _, topt = _opts()
    with pytest.raises(TypeError, match="optimizer"):
        O.StepLR(topt, 3)
    with pytest.raises(TypeError, match="optimizer"):
        O.ReduceLROnPlateau(object())


def test_schedulers_are_reexported():
    from rnnfast import lr_scheduler

    assert O.CosineAnnealingLR is lr_scheduler.CosineAnnealingLR
    assert rf.optim is O
    assert math.isclose(O.LinearWarmup(_opts()[0], 4).get_last_lr()[0], 0.1 / 3)
