"""float64 central finite differences against rnnfast's analytic backward.

Loss: L = sum(y * r) (+ sum(h_n * rh) (+ sum(c_n * rc)) for some cases).
Parameters are perturbed through load_state_dict (the params view is
read-only).  Also: gradient accumulation / zero_grad, and dropout (masks held
fixed by rebuilding the model from the same seed for every evaluation).
"""

import numpy as np
import pytest
import torch  # noqa: F401  (the oracle must be importable; see conftest)

import rnnfast as rf
from conftest import (
    CELLS, assert_all_close, assert_rel, central_diff_at, is_lstm, rf_infer, rf_model,
)

EPS = 1e-6
TOL = 1e-6

T, B, I, H = 3, 2, 3, 2

CONFIGS = [
    dict(layers=1, bidir=False, lengths=None, batch_first=False, state_loss=False, bias=True),
    dict(layers=2, bidir=True, lengths=None, batch_first=False, state_loss=True, bias=True),
    dict(layers=1, bidir=True, lengths=[3, 1], batch_first=True, state_loss=True, bias=False),
    dict(layers=2, bidir=True, lengths=[1, 3], batch_first=False, state_loss=False, bias=True),
    dict(layers=2, bidir=False, lengths=[2, 3], batch_first=True, state_loss=True, bias=True),
]


def _cfg_id(c):
    return (f"L{c['layers']}-{'bi' if c['bidir'] else 'uni'}-len{c['lengths']}"
            f"-{'bf' if c['batch_first'] else 'tf'}-{'state' if c['state_loss'] else 'y'}"
            f"-{'bias' if c['bias'] else 'nobias'}")


def _data(rng, cell, layers, bidir, batch_first, state_loss):
    D = 2 if bidir else 1
    xshape = (B, T, I) if batch_first else (T, B, I)
    yshape = (B, T, D * H) if batch_first else (T, B, D * H)
    sshape = (layers * D, B, H)
    x = rng.standard_normal(xshape)
    h0 = 0.5 * rng.standard_normal(sshape)
    c0 = 0.5 * rng.standard_normal(sshape)
    r = rng.standard_normal(yshape)
    rh = rng.standard_normal(sshape) if state_loss else None
    rc = rng.standard_normal(sshape) if (state_loss and is_lstm(cell)) else None
    hx = (h0, c0) if is_lstm(cell) else h0
    return x, hx, r, rh, rc


def _loss(cell, y, st, r, rh, rc):
    val = float(np.sum(y * r))
    h_n = st[0] if is_lstm(cell) else st
    if rh is not None:
        val += float(np.sum(h_n * rh))
    if rc is not None:
        val += float(np.sum(st[1] * rc))
    return val


def _dstate(cell, rh, rc):
    if rh is None and rc is None:
        return None
    if is_lstm(cell):
        return (rh, rc)
    return rh


def numeric_grads(evaluate, sd, x, hx, cell):
    """evaluate(sd, x, hx) -> scalar loss.  Returns dx, dh0 (dc0), grad:<name>."""
    sd = {k: np.array(v, dtype=np.float64, copy=True) for k, v in sd.items()}
    x = np.array(x, copy=True)
    if is_lstm(cell):
        hx = (np.array(hx[0], copy=True), np.array(hx[1], copy=True))
        hx_arrays = {"dh0": hx[0], "dc0": hx[1]}
    else:
        hx = np.array(hx, copy=True)
        hx_arrays = {"dh0": hx}
    f = lambda: evaluate(sd, x, hx)  # noqa: E731  (closes over the mutable arrays)
    out = {}
    g = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        g[idx] = central_diff_at(x, idx, f, EPS)
    out["dx"] = g
    for key, arr in hx_arrays.items():
        g = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            g[idx] = central_diff_at(arr, idx, f, EPS)
        out[key] = g
    for name, arr in sd.items():
        g = np.zeros_like(arr)
        for idx in np.ndindex(arr.shape):
            g[idx] = central_diff_at(arr, idx, f, EPS)
        out["grad:" + name] = g
    return out


def analytic_grads(m, cell, x, hx, lengths, r, rh, rc):
    m.zero_grad()
    y, st, tape = m.forward(x, hx=hx, lengths=lengths, train=True)
    dx, dhx = m.backward(tape, r, _dstate(cell, rh, rc))
    out = {"dx": np.array(dx)}
    if is_lstm(cell):
        out["dh0"], out["dc0"] = np.array(dhx[0]), np.array(dhx[1])
    else:
        out["dh0"] = np.array(dhx)
    for name, g in m.named_grads():
        out["grad:" + name] = np.array(g, copy=True)
    return out, y, st


@pytest.mark.parametrize("cfg", CONFIGS, ids=_cfg_id)
@pytest.mark.parametrize("cell", CELLS)
def test_finite_differences(cell, cfg):
    seed = 17 + CELLS.index(cell) * 100 + CONFIGS.index(cfg)
    rng = np.random.default_rng(seed)
    m = rf_model(cell, I, H, cfg["layers"], bias=cfg["bias"], batch_first=cfg["batch_first"],
                 bidirectional=cfg["bidir"], dtype="float64", seed=seed)
    x, hx, r, rh, rc = _data(rng, cell, cfg["layers"], cfg["bidir"], cfg["batch_first"], cfg["state_loss"])
    lengths = None if cfg["lengths"] is None else np.array(cfg["lengths"], dtype=np.int64)
    sd0 = {k: np.array(v, copy=True) for k, v in m.state_dict().items()}

    ana, _, _ = analytic_grads(m, cell, x, hx, lengths, r, rh, rc)

    def evaluate(sd, xx, hh):
        m.load_state_dict(sd)
        y, st = m(xx, hx=hh, lengths=lengths)
        return _loss(cell, y, st, r, rh, rc)

    num = numeric_grads(evaluate, sd0, x, hx, cell)
    m.load_state_dict(sd0)
    assert_all_close(ana, num, TOL, f"{cell} {_cfg_id(cfg)}")
    # the gradients are not trivially zero
    assert np.max(np.abs(ana["dx"])) > 1e-3
    assert max(np.max(np.abs(v)) for k, v in ana.items() if k.startswith("grad:")) > 1e-3


# --------------------------------------------------------------------------
# accumulation and zero_grad
# --------------------------------------------------------------------------
@pytest.mark.parametrize("cell", CELLS)
def test_grads_accumulate_and_zero_grad(cell):
    rng = np.random.default_rng(5)
    m = rf_model(cell, I, H, 2, bidirectional=True, dtype="float64", seed=5)
    x, hx, r, rh, rc = _data(rng, cell, 2, True, False, True)
    ds = _dstate(cell, rh, rc)

    m.zero_grad()
    assert np.all(m.grads == 0)
    _, _, tape = m.forward(x, hx=hx, train=True)
    assert np.all(m.grads == 0), "forward must not touch the gradients"
    dx1, _ = m.backward(tape, r, ds)
    dx1 = np.array(dx1)
    g1 = np.array(m.grads, copy=True)
    named1 = {k: np.array(v, copy=True) for k, v in m.named_grads()}
    assert np.any(g1 != 0)

    # a second, independent forward/backward accumulates
    _, _, tape2 = m.forward(x, hx=hx, train=True)
    dx2, _ = m.backward(tape2, r, ds)
    assert_rel(np.array(m.grads), 2 * g1, 1e-14, f"{cell} 2x accumulated grads")
    for k, v in m.named_grads():
        assert_rel(v, 2 * named1[k], 1e-14, f"{cell} 2x {k}")
    # dx is returned fresh, never accumulated
    assert_rel(dx2, dx1, 1e-14, f"{cell} dx on second call")

    # reusing a tape works and accumulates again
    m.backward(tape, r, ds)
    assert_rel(np.array(m.grads), 3 * g1, 1e-14, f"{cell} 3x accumulated grads")

    m.zero_grad()
    assert np.all(m.grads == 0)
    for _, v in m.named_grads():
        assert np.all(v == 0)
    m.backward(tape, r, ds)
    assert_rel(np.array(m.grads), g1, 1e-14, f"{cell} after zero_grad")

    # the inference call leaves gradients alone
    m(x, hx=hx)
    assert_rel(np.array(m.grads), g1, 0.0, f"{cell} grads after inference call")


# --------------------------------------------------------------------------
# dropout
# --------------------------------------------------------------------------
DROP_SEED = 2024


def _drop_model(cell, layers, bidir, p=0.5, seed=DROP_SEED, sd=None, batch_first=False):
    m = rf_model(cell, I, H, layers, batch_first=batch_first, dropout=p,
                 bidirectional=bidir, dtype="float64", seed=seed)
    if sd is not None:
        m.load_state_dict(sd)
    return m


@pytest.mark.parametrize("variant", ["uni", "bi-ragged"])
@pytest.mark.parametrize("cell", CELLS)
def test_dropout_finite_differences_fixed_mask(cell, variant):
    """Mask held fixed: every evaluation uses a freshly built model with the
    same seed, whose first train=True forward draws the same mask."""
    layers = 2
    bidir = variant == "bi-ragged"
    lengths = np.array([3, 1], dtype=np.int64) if bidir else None
    rng = np.random.default_rng(99 + CELLS.index(cell))
    x, hx, r, rh, rc = _data(rng, cell, layers, bidir, False, True)
    sd0 = {k: np.array(v, copy=True) for k, v in
           _drop_model(cell, layers, bidir, seed=12345).state_dict().items()}

    # (e) same seed -> same mask; (b) the mask does something
    ya, sta, _ = _drop_model(cell, layers, bidir, sd=sd0).forward(x, hx=hx, lengths=lengths, train=True)
    yb, stb, _ = _drop_model(cell, layers, bidir, sd=sd0).forward(x, hx=hx, lengths=lengths, train=True)
    assert np.array_equal(ya, yb), "same seed must give the same dropout output"
    y_eval, _ = _drop_model(cell, layers, bidir, sd=sd0)(x, hx=hx, lengths=lengths)
    assert not np.allclose(ya, y_eval), "dropout=0.5 in training changed nothing"

    ana, y_tr, _ = analytic_grads(_drop_model(cell, layers, bidir, sd=sd0), cell, x, hx, lengths, r, rh, rc)
    assert np.array_equal(y_tr, ya)

    def evaluate(sd, xx, hh):
        mm = _drop_model(cell, layers, bidir, sd=sd)
        y, st, _ = mm.forward(xx, hx=hh, lengths=lengths, train=True)
        return _loss(cell, y, st, r, rh, rc)

    num = numeric_grads(evaluate, sd0, x, hx, cell)
    assert_all_close(ana, num, TOL, f"{cell} dropout {variant}")


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_train_eval_determinism_linearity(cell):
    rng = np.random.default_rng(7)
    layers, bidir = 2, True
    x, hx, r, rh, rc = _data(rng, cell, layers, bidir, False, True)
    lengths = np.array([2, 3], dtype=np.int64)
    m = _drop_model(cell, layers, bidir, p=0.5)
    sd = m.state_dict()
    plain = rf_model(cell, I, H, layers, bidirectional=bidir, dtype="float64", seed=1)
    plain.load_state_dict(sd)

    # (a) evaluation mode ignores dropout
    y_d, h_d, c_d = rf_infer(m, cell, x, hx, lengths)
    y_p, h_p, c_p = rf_infer(plain, cell, x, hx, lengths)
    assert_rel(y_d, y_p, 1e-13, "eval y")
    assert_rel(h_d, h_p, 1e-13, "eval h_n")
    if is_lstm(cell):
        assert_rel(c_d, c_p, 1e-13, "eval c_n")
    y_f, _, _ = m.forward(x, hx=hx, lengths=lengths, train=False)
    assert_rel(y_f, y_p, 1e-13, "forward(train=False) y")

    # (b) training mode differs, and successive training forwards draw new masks
    y1, st1, tape = m.forward(x, hx=hx, lengths=lengths, train=True)
    y2, _, _ = m.forward(x, hx=hx, lengths=lengths, train=True)
    assert not np.allclose(y1, y_p)
    assert not np.array_equal(y1, y2), "two training forwards drew the same mask"

    # (c) backward on one tape is deterministic (bitwise)
    ds = _dstate(cell, rh, rc)

    def grads(dy, dstate):
        m.zero_grad()
        dx, dhx = m.backward(tape, dy, dstate)
        out = {"dx": np.array(dx)}
        if is_lstm(cell):
            out["dh0"], out["dc0"] = np.array(dhx[0]), np.array(dhx[1])
        else:
            out["dh0"] = np.array(dhx)
        for k, v in m.named_grads():
            out["grad:" + k] = np.array(v, copy=True)
        return out

    g_a = grads(r, ds)
    g_b = grads(r, ds)
    for k in g_a:
        assert np.array_equal(g_a[k], g_b[k]), f"backward not deterministic for {k}"

    # (d) backward is linear in the cotangents for a fixed tape
    r2 = rng.standard_normal(r.shape)
    rh2 = rng.standard_normal(rh.shape)
    rc2 = rng.standard_normal(rh.shape) if is_lstm(cell) else None
    ds2 = _dstate(cell, rh2, rc2)
    ds12 = _dstate(cell, rh + rh2, None if rc is None else rc + rc2)
    g_1 = grads(r, ds)
    g_2 = grads(r2, ds2)
    g_12 = grads(r + r2, ds12)
    assert_all_close(g_12, {k: g_1[k] + g_2[k] for k in g_1}, 1e-12, f"{cell} linearity")

    # (e) two models with the same seed produce the same training outputs,
    # a different seed gives a different mask
    ma = _drop_model(cell, layers, bidir, p=0.5, seed=77, sd=sd)
    mb = _drop_model(cell, layers, bidir, p=0.5, seed=77, sd=sd)
    mc = _drop_model(cell, layers, bidir, p=0.5, seed=78, sd=sd)
    firsts = []
    for _ in range(2):
        ya = ma.forward(x, hx=hx, lengths=lengths, train=True)[0]
        yb = mb.forward(x, hx=hx, lengths=lengths, train=True)[0]
        assert np.array_equal(ya, yb), "same seed, same call index, different mask"
        firsts.append(ya)
    ya1 = firsts[0]
    yc1 = mc.forward(x, hx=hx, lengths=lengths, train=True)[0]
    assert not np.array_equal(ya1, yc1), "different seeds gave the same dropout mask"


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_single_layer_is_noop(cell):
    """As in torch, dropout acts only between layers."""
    rng = np.random.default_rng(3)
    x, hx, r, rh, rc = _data(rng, cell, 1, True, False, True)
    m = _drop_model(cell, 1, True, p=0.5)
    y_e, st_e = m(x, hx=hx)
    y_t, st_t, tape = m.forward(x, hx=hx, train=True)
    assert_rel(y_t, y_e, 1e-13, f"{cell} single layer dropout y")
    h_e = st_e[0] if is_lstm(cell) else st_e
    h_t = st_t[0] if is_lstm(cell) else st_t
    assert_rel(h_t, h_e, 1e-13, f"{cell} single layer dropout h_n")


@pytest.mark.parametrize("p", [0.5, 0.3])
def test_dropout_mask_semantics(p):
    """Reveal the mask applied to layer 0's output: layer 1 is a near-identity
    tanh RNN (W_ih = eps*I, W_hh = 0, b = 0) so atanh(y)/eps is its input.
    Torch semantics: independent Bernoulli(1-p) per element and time step,
    survivors scaled by 1/(1-p); the last layer's output is not dropped and
    h_n of layer 0 is not dropped."""
    Tn, Bn, Hn, eps = 20, 8, 16, 1e-3
    rng = np.random.default_rng(11)
    m = rf.RNN(Hn, Hn, num_layers=2, dropout=p, nonlinearity="tanh", dtype="float64", seed=21)
    sd = {k: np.array(v, copy=True) for k, v in m.state_dict().items()}
    sd["weight_ih_l1"] = eps * np.eye(Hn)
    sd["weight_hh_l1"] = np.zeros((Hn, Hn))
    sd["bias_ih_l1"] = np.zeros(Hn)
    sd["bias_hh_l1"] = np.zeros(Hn)
    m.load_state_dict(sd)
    first = rf.RNN(Hn, Hn, num_layers=1, nonlinearity="tanh", dtype="float64", seed=0)
    first.load_state_dict({k: v for k, v in sd.items() if k.endswith("_l0")})

    x = rng.standard_normal((Tn, Bn, Hn))
    y0, h0n = first(x)
    y, h_n, _ = m.forward(x, train=True)
    assert np.min(np.abs(y0)) > 1e-8  # keep the ratio well conditioned
    ratio = np.arctanh(y) / (eps * y0)
    keep = 1.0 / (1.0 - p)
    dropped = np.abs(ratio) < 1e-6
    kept = np.abs(ratio - keep) < 1e-6 * keep
    assert np.all(dropped | kept), (
        f"layer-1 input is not mask*y0/(1-p): ratios seen {np.unique(np.round(ratio, 6))[:10]}")
    frac = dropped.mean()
    assert abs(frac - p) < 0.06, f"dropped fraction {frac}, expected {p}"
    # masks vary over time (not one mask per sequence), batch and feature
    const_over_t = np.all(dropped == dropped[:1], axis=0).mean()
    assert const_over_t < 0.05
    assert not np.all(dropped == dropped[:, :1, :])
    assert not np.all(dropped == dropped[:, :, :1])
    # layer 0 final state is not dropped
    assert_rel(h_n[0], h0n[0], 1e-13, "layer-0 h_n under dropout")
