"""Property-based tests of the public API (hypothesis).

Every call either returns the right answer or raises ValueError/TypeError with a message that
names the argument: never a crash, a hang, another exception, or silently wrong numbers. "The
right answer" is a plain numpy float64 implementation of RNN/LSTM/GRU forward written here with
PyTorch's semantics (gate orders LSTM i,f,g,o and GRU r,z,n; with lengths, outputs past a row's
length are zero, the final state is the one at the row's last valid step, and the reverse
direction starts at the row's own last step).

Tolerances. Rounding in a gate pre-activation is at most eps * (|W_ih||x| + |b_ih| + |W_hh||h| +
|b_hh|), elementwise absolute values; the reference tracks the largest such sum (and |c|, |h|) per
batch row and calls it the row's scale. An output may differ from the reference by at most
TOL * scale + a tiny floor (denormals are flushed to zero inside the kernels). TOL leaves about
1,000x (float32) and 1,000,000x (float64) headroom over eps for growth through layers and time
steps; it is the same relative precision the torch parity tests demand (1e-4 and 1e-10), but
measured against the scale of the computation, so that inputs of any magnitude can be drawn.

Defects found here were fixed; their tests stay as regression tests (comments say what failed).
"""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import rnnfast as rf

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
GATES = {"rnn_tanh": 1, "rnn_relu": 1, "lstm": 4, "gru": 3}
TOL = {"float32": 1e-4, "float64": 1e-10}
FLOOR = {"float32": 1e-30, "float64": 1e-300}
ACCEPTED = (ValueError, TypeError)

# No example database: runs start fresh (as in CI) and leave no .hypothesis/ folder in the tree;
# a failure prints the @reproduce_failure blob that replays it.
PROPERTY = settings(max_examples=150, deadline=None, print_blob=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# --------------------------------------------------------------------------
# the numpy reference
# --------------------------------------------------------------------------
def _sigmoid(v):
    return 0.5 * (1.0 + np.tanh(0.5 * v))  # no overflow for large |v|


def _cell(cell, gi, gh, c):
    """One step for a batch: gi = W_ih x + b_ih, gh = W_hh h + b_hh (B, G*H). Returns (h, c)."""
    if cell == "rnn_tanh":
        return np.tanh(gi + gh), None
    if cell == "rnn_relu":
        return np.maximum(gi + gh, 0.0), None  # np.maximum keeps NaN: relu(NaN) = NaN
    if cell == "lstm":
        i, f, g, o = np.split(gi + gh, 4, axis=1)
        c = _sigmoid(f) * c + _sigmoid(i) * np.tanh(g)
        return _sigmoid(o) * np.tanh(c), c
    r_i, z_i, n_i = np.split(gi, 3, axis=1)
    r_h, z_h, n_h = np.split(gh, 3, axis=1)
    r, z = _sigmoid(r_i + r_h), _sigmoid(z_i + z_h)
    n = np.tanh(n_i + r * n_h)
    return n, z  # the caller mixes: h = (1 - z) * n + z * h


def reference(cell, sd, x, h0, c0, lengths, num_layers, num_dirs, hidden):
    """Forward of a stack in float64. x (T, B, I) time-major; h0, c0 (L*D, B, H) or None; lengths
    (B,) or None. Returns (y, h_n, c_n, scale) with scale (B,): the largest magnitude that went into
    a rounding step of that row (see the module docstring)."""
    T, B, _ = x.shape
    H = hidden
    lens = np.full(B, T) if lengths is None else np.asarray(lengths, dtype=np.int64)
    inp = x
    hn, cn = [], []
    scale = np.zeros(B)
    with np.errstate(all="ignore"):
        for layer in range(num_layers):
            outs = []
            for d in range(num_dirs):
                sfx = f"l{layer}" + ("_reverse" if d else "")
                w_ih, w_hh = sd["weight_ih_" + sfx], sd["weight_hh_" + sfx]
                zero = np.zeros(w_ih.shape[0])
                b_ih, b_hh = sd.get("bias_ih_" + sfx, zero), sd.get("bias_hh_" + sfx, zero)
                k = layer * num_dirs + d
                h = np.zeros((B, H)) if h0 is None else h0[k].copy()
                c = np.zeros((B, H)) if c0 is None else c0[k].copy()
                y = np.zeros((T, B, H))
                for t in (range(T) if d == 0 else range(T - 1, -1, -1)):
                    active = (t < lens)[:, None]
                    gi = inp[t] @ w_ih.T + b_ih
                    gh = h @ w_hh.T + b_hh
                    absum = (np.abs(inp[t]) @ np.abs(w_ih).T + np.abs(b_ih)
                             + np.abs(h) @ np.abs(w_hh).T + np.abs(b_hh))
                    h_new, extra = _cell(cell, gi, gh, c)
                    if cell == "gru":
                        h_new = (1.0 - extra) * h_new + extra * h
                    elif cell == "lstm":
                        c = np.where(active, extra, c)
                    h = np.where(active, h_new, h)
                    y[t] = np.where(active, h_new, 0.0)
                    step = np.max(np.concatenate([absum, np.abs(h), np.abs(c)], axis=1), axis=1)
                    scale = np.where(active[:, 0], np.fmax(scale, step), scale)
                outs.append(y)
                hn.append(h)
                cn.append(c)
            inp = np.concatenate(outs, axis=2)
    return inp, np.stack(hn), (np.stack(cn) if cell == "lstm" else None), scale


# --------------------------------------------------------------------------
# models and calls
# --------------------------------------------------------------------------
def build(cfg, **extra):
    kw = dict(num_layers=cfg["L"], bias=cfg["bias"], batch_first=cfg["bf"],
              bidirectional=cfg["bidir"], dtype=cfg["dtype"], seed=cfg["seed"])
    kw.update(extra)
    if cfg["cell"] == "lstm":
        return rf.LSTM(cfg["I"], cfg["H"], **kw)
    if cfg["cell"] == "gru":
        return rf.GRU(cfg["I"], cfg["H"], **kw)
    return rf.RNN(cfg["I"], cfg["H"], nonlinearity=cfg["cell"][4:], **kw)


configs = st.fixed_dictionaries({
    "cell": st.sampled_from(CELLS),
    "I": st.integers(1, 6),
    "H": st.integers(1, 9),
    "L": st.integers(1, 3),
    "bidir": st.booleans(),
    "bf": st.booleans(),
    "bias": st.booleans(),
    "dtype": st.sampled_from(["float32", "float64"]),
    "seed": st.integers(0, 2**32 - 1),
})


def _float_arrays(shape, dtype, bound):
    """Finite floats of `dtype` in [-bound, bound], including zeros, subnormals and extremes."""
    width = np.dtype(dtype).itemsize * 8
    bound = float(np.asarray(min(bound, float(np.finfo(dtype).max))).astype(dtype))  # exact
    return hnp.arrays(dtype, shape, elements=st.floats(-bound, bound, allow_nan=False,
                                                       allow_infinity=False, width=width))


def _layout(draw, arr):
    """The same values as C order, Fortran order, or a non-contiguous view."""
    kind = draw(st.sampled_from(["c", "fortran", "strided"]))
    if kind == "fortran":
        return np.asfortranarray(arr)
    if kind == "strided":
        big = np.zeros(arr.shape[:-1] + (2 * arr.shape[-1],), dtype=arr.dtype)
        big[..., ::2] = arr
        return big[..., ::2]
    return arr


@st.composite
def valid_calls(draw, with_lengths=None, padding=(0.0, np.nan, np.inf, -np.inf, 1e30, -3e38)):
    """A model config and a valid call: x, hx, lengths (drawn or, if with_lengths is a bool,
    present or not), with `padding` values past each row's length, where they must not matter."""
    cfg = draw(configs)
    T, B = draw(st.integers(1, 7)), draw(st.integers(1, 5))
    D, H, L = 2 if cfg["bidir"] else 1, cfg["H"], cfg["L"]
    # the model converts other float dtypes; magnitudes stay where the model's dtype cannot
    # overflow in a dot product (float32: 3e38)
    in_dtype = draw(st.sampled_from([np.float16, np.float32, np.float64]))
    bound = draw(st.sampled_from([1.0, 1e3, 1e6, 1e30]))
    if cfg["dtype"] == "float64":
        bound = draw(st.sampled_from([bound, 1e100]))
    x_tm = draw(_float_arrays((T, B, cfg["I"]), in_dtype, bound))  # time-major
    lengths = None
    if with_lengths if with_lengths is not None else draw(st.booleans()):
        lens = draw(st.lists(st.integers(1, T), min_size=B, max_size=B))
        form = draw(st.sampled_from(["list", "int32", "int64", "uint8", "float"]))
        lengths = lens if form == "list" else np.array(lens, dtype=form if form != "float"
                                                       else np.float64)
        # past each row's length the values must not matter: put garbage there
        fill = draw(st.sampled_from(padding))
        with np.errstate(over="ignore"):
            for b, n in enumerate(lens):
                x_tm[n:, b] = fill
    x = np.ascontiguousarray(x_tm.transpose(1, 0, 2)) if cfg["bf"] else x_tm
    x = _layout(draw, x)
    hx = None
    hx_kind = draw(st.sampled_from(["none", "tuple", "list", "h_only", "c_only"]))
    sshape = (L * D, B, H)
    if hx_kind != "none":
        h_dtype = draw(st.sampled_from([np.float32, np.float64]))
        h0 = _layout(draw, draw(_float_arrays(sshape, h_dtype, draw(st.sampled_from([1.0, 1e3])))))
        c0 = _layout(draw, draw(_float_arrays(sshape, h_dtype, 10.0)))
        if cfg["cell"] == "lstm":  # (h0, c0) as a tuple or list, or one of them None (zeros)
            hx = {"tuple": (h0, c0), "list": [h0, c0], "h_only": (h0, None),
                  "c_only": (None, c0)}[hx_kind]
        else:
            hx = h0
    train = draw(st.booleans())
    return cfg, x, hx, lengths, train


def run(m, cfg, x, hx, lengths, train):
    """Call the model; return (y time-major, h_n, c_n or None) as arrays."""
    if train:
        y, state, tape = m.forward(x, hx=hx, lengths=lengths, train=True)
        assert tape is not None
    else:
        y, state = m(x, hx=hx, lengths=lengths)
    if cfg["cell"] == "lstm":
        assert isinstance(state, tuple) and len(state) == 2
        h_n, c_n = state
    else:
        assert isinstance(state, np.ndarray)
        h_n, c_n = state, None
    y = np.asarray(y)
    if cfg["bf"]:
        y = y.transpose(1, 0, 2)
    return y, np.asarray(h_n), (None if c_n is None else np.asarray(c_n))


def expected(m, cfg, x, hx, lengths):
    """The reference for this call, from the model's own parameters and the inputs as the model
    sees them (converted to its dtype first)."""
    dt = np.dtype(cfg["dtype"])
    sd = {k: v.astype(np.float64) for k, v in m.state_dict().items()}
    with np.errstate(over="ignore"):
        xm = np.asarray(x).astype(dt).astype(np.float64)
        if cfg["bf"]:
            xm = xm.transpose(1, 0, 2)
        h0 = c0 = None
        if hx is not None:
            h, c = hx if cfg["cell"] == "lstm" else (hx, None)
            h0 = None if h is None else np.asarray(h).astype(dt).astype(np.float64)
            c0 = None if c is None else np.asarray(c).astype(dt).astype(np.float64)
    lens = None if lengths is None else np.asarray(lengths).astype(np.int64)
    return reference(cfg["cell"], sd, xm, h0, c0, lens, cfg["L"], 2 if cfg["bidir"] else 1,
                     cfg["H"]), lens


def assert_matches(got, want, scale, batch_axis, tol, floor, what):
    """|got - want| <= tol * scale[row] + floor for every element, rows on `batch_axis`."""
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    shape = [1] * want.ndim
    shape[batch_axis] = -1
    allowed = tol * scale.reshape(shape) + floor
    with np.errstate(invalid="ignore"):
        bad = ~(np.abs(got.astype(np.float64) - want) <= allowed)
    if bad.any():
        idx = tuple(int(i[0]) for i in np.nonzero(bad))
        raise AssertionError(f"{what}: {int(bad.sum())} of {bad.size} elements off; first at "
                             f"{idx}: got {got[idx]!r}, expected {want[idx]!r}, allowed error "
                             f"{np.broadcast_to(allowed, want.shape)[idx]:.3g}")


# --------------------------------------------------------------------------
# valid calls give the right answer
# --------------------------------------------------------------------------
@PROPERTY
@given(valid_calls())
def test_valid_calls_match_numpy_reference(call):
    """Random cell, sizes, layers, directions, layout, bias, dtype, input dtype and memory
    layout, magnitudes from 1 to 1e30 (1e100 in float64), lengths in several integer forms with
    NaN/inf/huge garbage past each row's length, hx absent, full or partial: the answer equals the
    numpy reference, padded outputs are exactly zero, and dtypes and shapes are the model's."""
    cfg, x, hx, lengths, train = call
    note(f"cfg={cfg} x.shape={x.shape} x.dtype={x.dtype} lengths={lengths} train={train}")
    m = build(cfg)
    y, h_n, c_n = run(m, cfg, x, hx, lengths, train)
    (ry, rh, rc, scale), lens = expected(m, cfg, x, hx, lengths)
    dt = np.dtype(cfg["dtype"])
    tol, floor = TOL[cfg["dtype"]], FLOOR[cfg["dtype"]]
    assert y.dtype == dt and h_n.dtype == dt
    assert_matches(y, ry, scale, 1, tol, floor, "y")
    assert_matches(h_n, rh, scale, 1, tol, floor, "h_n")
    if cfg["cell"] == "lstm":
        assert c_n.dtype == dt
        assert_matches(c_n, rc, scale, 1, tol, floor, "c_n")
    if lens is not None:
        for b, n in enumerate(lens):
            assert not np.any(y[n:, b]), f"row {b}: output past its length {n} is not zero"


@st.composite
def tainted_calls(draw):
    """A valid float model call with NaN or +-inf put into some rows' valid steps or states."""
    cfg = draw(configs)
    T, B = draw(st.integers(1, 6)), draw(st.integers(2, 5))
    D, L = 2 if cfg["bidir"] else 1, cfg["L"]
    dt = np.dtype(cfg["dtype"])
    x = draw(_float_arrays((T, B, cfg["I"]), dt, 10.0))
    lens = np.array(draw(st.lists(st.integers(1, T), min_size=B, max_size=B)))
    h0 = draw(_float_arrays((L * D, B, cfg["H"]), dt, 1.0))
    c0 = draw(_float_arrays((L * D, B, cfg["H"]), dt, 1.0))
    rows = draw(st.lists(st.integers(0, B - 1), min_size=1, max_size=B - 1, unique=True))
    taints = []
    for b in rows:
        where = draw(st.sampled_from(["x", "h0", "c0"] if cfg["cell"] == "lstm" else ["x", "h0"]))
        value = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        if where == "x":
            t, f = draw(st.integers(0, lens[b] - 1)), draw(st.integers(0, cfg["I"] - 1))
            x[t, b, f] = value
        else:
            k, j = draw(st.integers(0, L * D - 1)), draw(st.integers(0, cfg["H"] - 1))
            (h0 if where == "h0" else c0)[k, b, j] = value
            taints.append((b, where, value, k, j))
            continue
        taints.append((b, where, value, None, None))
    return cfg, x, lens, h0, c0, taints


@PROPERTY
@given(tainted_calls())
def test_non_finite_values_stay_in_their_row(call):
    """NaN/inf in one row's input or initial state: every other row is exactly as without it
    (rows are independent), and a NaN is never swallowed. NaN in x reaches every gate, so the
    row's whole final state (every layer and direction) is NaN; NaN in h0[k] reaches every gate
    through W_hh, so h_n[k] of the row is all NaN; NaN in c0[k, :, j] stays in unit j for the
    first step (c = f*c + i*g is elementwise), so h_n[k] and c_n[k] of the row are NaN at j."""
    cfg, x, lens, h0, c0, taints = call
    note(f"cfg={cfg} lengths={lens} taints={taints}")
    m = build(cfg, batch_first=False)
    cfg = dict(cfg, bf=False)
    hx = (h0, c0) if cfg["cell"] == "lstm" else h0
    y, h_n, c_n = run(m, cfg, x, hx, lens, False)
    tainted = sorted({b for b, *_ in taints})
    clean = [b for b in range(x.shape[1]) if b not in tainted]
    # the clean rows against the reference of the clean rows alone
    sub = np.array(clean)
    hx_clean = (h0[:, sub], c0[:, sub]) if cfg["cell"] == "lstm" else h0[:, sub]
    (ry, rh, rc, scale), _ = expected(m, cfg, x[:, sub], hx_clean, lens[sub])
    tol, floor = TOL[cfg["dtype"]], FLOOR[cfg["dtype"]]
    assert_matches(y[:, sub], ry, scale, 1, tol, floor, "y (clean rows)")
    assert_matches(h_n[:, sub], rh, scale, 1, tol, floor, "h_n (clean rows)")
    if cfg["cell"] == "lstm":
        assert_matches(c_n[:, sub], rc, scale, 1, tol, floor, "c_n (clean rows)")
    # a NaN shows in the row's final states
    for b, where, value, k, j in taints:
        if not np.isnan(value):
            continue
        if where == "c0":
            assert np.isnan(h_n[k, b, j]) and np.isnan(c_n[k, b, j]), (
                f"NaN in c0[{k}, {b}, {j}] did not reach h_n/c_n: {h_n[k, b]}, {c_n[k, b]}")
            continue
        for kk in (range(h_n.shape[0]) if where == "x" else [k]):
            assert np.isnan(h_n[kk, b]).all(), (
                f"NaN in {where} of row {b} did not reach h_n[{kk}, {b}] = {h_n[kk, b]}")


@PROPERTY
@given(valid_calls(with_lengths=True, padding=(0.0,)), st.sampled_from([1e30, -3e38, 12345.0]))
def test_training_ignores_finite_padding(call, fill):
    """Training forward+backward: y equals the inference answer, and every gradient (dx at valid
    steps, dhx, parameter gradients) is the same whatever finite values sit past each row's
    length. (Non-finite padding: see the regression test below.)"""
    cfg, x, hx, lengths, _ = call
    lens = np.asarray(lengths).astype(np.int64)
    results = []
    for pad in (0.0, fill):
        xp = np.array(x, dtype=cfg["dtype"])
        with np.errstate(over="ignore"):
            for b, n in enumerate(lens):
                if cfg["bf"]:
                    xp[b, n:] = pad
                else:
                    xp[n:, b] = pad
        m = build(cfg)
        y, state, tape = m.forward(xp, hx=hx, lengths=lengths, train=True)
        y_inf, _ = m(xp, hx=hx, lengths=lengths)
        assert np.array_equal(y, y_inf), "training forward differs from inference"
        dy = np.cos(np.asarray(y, dtype=np.float64)).astype(cfg["dtype"])
        dx, dhx = m.backward(tape, dy)
        dx = np.asarray(dx).transpose(1, 0, 2) if cfg["bf"] else np.asarray(dx)
        dhx = np.concatenate([np.ravel(v) for v in dhx]) if cfg["cell"] == "lstm" \
            else np.ravel(dhx)
        results.append((np.array(m.grads), dx, dhx))
    (g0, dx0, dh0), (g1, dx1, dh1) = results
    assert np.all(np.isfinite(g0)), "parameter gradients are not finite"
    assert np.array_equal(g0, g1), "parameter gradients depend on padding"
    assert np.array_equal(dh0, dh1), "dhx depends on padding"
    for b, n in enumerate(lens):
        assert np.array_equal(dx0[:n, b], dx1[:n, b]), f"dx of row {b} depends on padding"
        assert not np.any(dx1[n:, b]), f"dx of row {b} is not zero past its length {n}"


# Regression test for a fixed defect: NaN or inf in x past a row's length (padding, which PyTorch's packed path never reads)
# makes every weight_ih_l0 gradient NaN: backward forms dW_ih = sum_t dG_t^T x_t over all T steps,
# and 0 * NaN = NaN. Forward and dx are unaffected. Minimal reproducer:
#   m = rf.RNN(1, 1, seed=0); x = np.array([[[1.0]], [[np.nan]]], np.float32)
#   y, _, tape = m.forward(x, lengths=[1], train=True); m.backward(tape, np.ones_like(y))
#   m.grads -> [nan, ...]   (with x[1] = 0 instead: all finite)
@pytest.mark.parametrize("fill", [np.nan, np.inf])
@pytest.mark.parametrize("cell", CELLS)
def test_training_ignores_non_finite_padding(cell, fill):
    cfg = dict(cell=cell, I=2, H=3, L=1, bidir=True, bf=False, bias=True, dtype="float32", seed=0)
    x = np.random.default_rng(0).standard_normal((4, 2, 2)).astype(np.float32)
    lengths = [4, 2]
    grads = []
    for pad in (0.0, fill):
        xp = x.copy()
        xp[2:, 1] = pad
        m = build(cfg)
        y, _, tape = m.forward(xp, lengths=lengths, train=True)
        m.backward(tape, np.ones_like(y))
        grads.append(np.array(m.grads))
    assert np.array_equal(grads[0], grads[1])


# --------------------------------------------------------------------------
# garbage is refused with a clear exception
# --------------------------------------------------------------------------
_NON_ARRAYS = [None, "abc", {}, {1.0}, object(), b"\x00\x01", [[[1.0, 2.0], [1.0]]]]
_BAD_DTYPES = [np.int32, np.int64, np.uint8, np.bool_, np.complex64, object, "U3", "M8[s]"]


@st.composite
def bad_calls(draw):
    """A model and a call with exactly one bad argument; returns (cfg, x, hx, lengths, name of
    the bad argument as the message must spell it)."""
    cfg = draw(configs)
    T, B = draw(st.integers(1, 5)), draw(st.integers(1, 4))
    D, H, L, I = 2 if cfg["bidir"] else 1, cfg["H"], cfg["L"], cfg["I"]
    lstm = cfg["cell"] == "lstm"

    def xs(t, b, i, dtype=np.float32):
        shape = (b, t, i) if cfg["bf"] else (t, b, i)
        return np.zeros(shape, dtype=dtype)

    x = xs(T, B, I)
    sshape = (L * D, B, H)
    hx = None
    lengths = None
    target = draw(st.sampled_from(["x", "hx", "lengths"]))
    kind = None
    if target == "x":
        kind = draw(st.sampled_from(["features", "rank", "empty", "dtype", "non-array"]))
        if kind == "features":
            x = xs(T, B, I + draw(st.integers(1, 3)))
        elif kind == "rank":
            x = np.ones(draw(st.sampled_from([(), (T,), (T, I), (T, B, I, 1), (1, T, B, I)])),
                        dtype=np.float32)
        elif kind == "empty":
            x = xs(*draw(st.sampled_from([(0, B, I), (T, 0, I), (0, 0, I)])))
        elif kind == "dtype":
            x = xs(T, B, I, draw(st.sampled_from(_BAD_DTYPES)))
        else:
            x = draw(st.sampled_from(_NON_ARRAYS))
        name = "x"
    elif target == "hx":
        kind = draw(st.sampled_from(["shape", "dtype", "non-array"] + (["structure"] if lstm
                                                                      else [])))
        good = np.zeros(sshape, np.float32)
        if kind == "shape":
            axis = draw(st.integers(0, 2))
            wrong = list(sshape)
            wrong[axis] += draw(st.sampled_from([-1, 1, 2])) if sshape[axis] > 1 else 1
            bad = np.zeros(draw(st.sampled_from([tuple(wrong), sshape[1:], sshape + (1,)])),
                           np.float32)
        elif kind == "dtype":
            bad = np.zeros(sshape, draw(st.sampled_from(_BAD_DTYPES[:6])))
        else:
            bad = draw(st.sampled_from(_NON_ARRAYS[1:]))
        if lstm and kind == "structure":
            hx = draw(st.sampled_from([good, (good,), (good, good, good), "hc", 3.0]))
            name = "hx"
        elif lstm:
            slot = draw(st.integers(0, 1))
            hx = (bad, good) if slot == 0 else (good, bad)
            name = ("h0", "c0")[slot]
        else:
            hx = bad
            name = "hx"
    else:
        kind = draw(st.sampled_from(["range", "count", "rank", "non-integer", "dtype", "huge"]))
        if kind == "range":
            lens = [1] * B
            lens[draw(st.integers(0, B - 1))] = draw(st.sampled_from([0, -1, T + 1, T + 7]))
            lengths = np.array(lens)
        elif kind == "count":
            lengths = np.ones(B + draw(st.sampled_from([-1, 1, 3])), np.int64)
            if B == 1 and lengths.size == 0:
                lengths = np.ones(2, np.int64)
        elif kind == "rank":
            lengths = draw(st.sampled_from([np.ones((B, 1), np.int64), np.int64(1)]))
        elif kind == "non-integer":
            v = draw(st.sampled_from([0.5, 1.5, np.nan, np.inf, -np.inf]))
            lengths = np.ones(B)
            lengths[draw(st.integers(0, B - 1))] = v
        elif kind == "dtype":
            lengths = draw(st.sampled_from([np.ones(B, bool), np.ones(B, complex),
                                            np.array(["1"] * B), [None] * B, "1" * B]))
        else:
            lengths = draw(st.sampled_from([np.full(B, 2**62), np.full(B, 1e20),
                                            [2**70] * B, np.full(B, 2**64 - 1, np.uint64)]))
        name = "lengths"
    return cfg, x, hx, lengths, name, f"{target}:{kind}"


@PROPERTY
@given(bad_calls(), st.booleans())
def test_bad_arguments_raise_clear_errors(call, train):
    """One bad argument (wrong shapes, ranks, feature counts, empty arrays, integer/bool/complex/
    object/string/date dtypes, non-arrays, LSTM state structure, lengths out of range, of the
    wrong count or rank, non-integral, NaN, huge) raises ValueError or TypeError whose message
    names the argument; never another exception, a crash or an answer."""
    cfg, x, hx, lengths, name, kind = call
    note(f"cfg={cfg} kind={kind} x={x!r:.200} hx={hx!r:.200} lengths={lengths!r:.200}")
    m = build(cfg)
    with pytest.raises(ACCEPTED) as info:
        if train:
            m.forward(x, hx=hx, lengths=lengths, train=True)
        else:
            m(x, hx=hx, lengths=lengths)
    msg = str(info.value)
    assert re.search(rf"\b{name}\b", msg), f"{kind}: message does not name {name!r}: {msg!r}"


# Regression test for a fixed defect: a ragged nested list as lengths raises numpy's own ValueError ("setting an array element
# with a sequence...") that does not say which argument was wrong; x gets a message naming it.
#   rf.GRU(3, 4)(np.zeros((2, 2, 3), np.float32), lengths=[[1], [1, 2]])
def test_ragged_lengths_message_names_the_argument():
    with pytest.raises(ACCEPTED, match="lengths"):
        rf.GRU(3, 4)(np.zeros((2, 2, 3), np.float32), lengths=[[1], [1, 2]])


# --------------------------------------------------------------------------
# constructors and the thread setter
# --------------------------------------------------------------------------
_SIZE_VALUES = st.one_of(st.integers(1, 6), st.integers(-3, 0), st.sampled_from(
    [1.0, 2.5, True, False, "3", None, np.int64(3), np.uint8(2), np.float32(2.0), [2]]))
_FLAG_VALUES = st.sampled_from([True, False, np.True_, np.False_, 0, 1, "yes", None, 1.0])
_DROPOUT_VALUES = st.sampled_from([0.0, 0.5, 0, np.float32(0.2), 1.0, -0.1, 1.5, np.nan, np.inf,
                                   "0.1", True, None])
_DTYPE_VALUES = st.sampled_from(["float32", "float64", np.float32, np.dtype("float64"),
                                 "float16", "int32", np.int64, object, "nope", 3, "complex64"])


@PROPERTY
@given(st.sampled_from(CELLS), _SIZE_VALUES, _SIZE_VALUES, _SIZE_VALUES, _FLAG_VALUES,
       _FLAG_VALUES, _FLAG_VALUES, _DROPOUT_VALUES, _DTYPE_VALUES,
       st.sampled_from(["tanh", "relu", "sigmoid", None, 1]))
def test_constructor_accepts_valid_and_refuses_garbage(cell, I, H, L, bias, bf, bidir, dropout,
                                                       dtype, nonlin):
    """Any combination of constructor arguments either builds a model whose attributes are the
    arguments (and which then runs) or raises ValueError/TypeError. Huge sizes: see the regression test
    tests below."""
    kw = dict(num_layers=L, bias=bias, batch_first=bf, bidirectional=bidir, dropout=dropout,
              dtype=dtype)
    try:
        if cell == "lstm":
            m = rf.LSTM(I, H, **kw)
        elif cell == "gru":
            m = rf.GRU(I, H, **kw)
        else:
            m = rf.RNN(I, H, nonlinearity=nonlin, **kw)
    except ACCEPTED as exc:
        assert str(exc)
        return
    # accepted: only real values of the documented kinds got through
    for v, name in ((I, "input_size"), (H, "hidden_size"), (L, "num_layers")):
        assert not isinstance(v, (bool, float, str, list, np.floating)) and v >= 1, (name, v)
        assert getattr(m, name) == int(v)
    for v in (bias, bf, bidir):
        assert isinstance(v, (bool, np.bool_)), v
    assert 0.0 <= float(dropout) < 1.0 and not isinstance(dropout, (bool, str))
    assert m.dtype == np.dtype(dtype) and m.dtype.name in ("float32", "float64")
    if cell.startswith("rnn"):
        assert nonlin in ("tanh", "relu")
    x = np.ones((2, 1, m.input_size), np.float32)
    y, _ = m(x)
    assert y.shape == (2, 1, m.num_directions * m.hidden_size)  # (T, B) or, batch-first, (B, T)
    assert np.all(np.isfinite(y))


@PROPERTY
@given(st.one_of(st.integers(-5, 64), st.sampled_from([1.5, True, "2", None, np.int32(2),
                                                        np.uint64(3), [1]])))
def test_thread_setter_accepts_counts_and_refuses_garbage(n):
    before = rf.get_num_threads()
    try:
        try:
            with rf.threads(n) as got:
                assert got == rf.get_num_threads() >= 1
                assert isinstance(n, (int, np.integer)) and not isinstance(n, bool)
                assert n == -1 or got == n
        except ACCEPTED as exc:
            assert "threads" in str(exc)
        assert rf.get_num_threads() == before
    finally:
        rf.set_num_threads(before)


# Regression test for a fixed defect: sizes whose element counts do not fit int64 raise OverflowError (np.prod over the shape
# tuple) or RuntimeError ("rnnfast internal error: parameter layout disagrees with the core": the
# int64 element counts wrap), not ValueError naming the size:
#   rf.LSTM(2, 2**62) -> RuntimeError      rf.LSTM(2, 2**64) -> OverflowError
# (Sizes that fit but cannot be allocated, e.g. rf.LSTM(2, 2**31), give numpy's MemoryError; not
# tested here, since on a machine that overcommits memory the allocation could succeed.)
@pytest.mark.parametrize("I,H", [(2, 2**62), (2, 2**64), (2**64, 2)])
def test_huge_sizes_raise_value_error(I, H):
    with pytest.raises(ACCEPTED, match="size"):
        rf.LSTM(I, H)


# Regression test for a fixed defect: set_num_threads(2**31) (and rf.threads) raises OverflowError from the C int conversion.
def test_huge_thread_count_raises_value_error():
    before = rf.get_num_threads()
    try:
        with pytest.raises(ACCEPTED, match="threads"):
            rf.set_num_threads(2**31)
    finally:
        rf.set_num_threads(before)


# Regression test for a fixed defect: num_layers=2**63 builds the Python layout list one layer at a time before any check: the
# constructor runs until memory is exhausted (measured: 67 s to fill 1.5 GiB; a hang in practice).
# Run in a child process with a 3 s limit (and a 1.5 GiB address-space cap as a safety net); a
# fixed constructor refuses at once.
def test_huge_num_layers_refused_quickly():
    code = textwrap.dedent("""
        import resource, sys
        resource.setrlimit(resource.RLIMIT_AS, (1536 << 20, 1536 << 20))
        import rnnfast as rf
        try:
            rf.GRU(3, 4, num_layers=2**63)
        except (ValueError, TypeError) as exc:
            print("refused:", exc)
            sys.exit(0)
        except BaseException as exc:
            print("wrong exception:", type(exc).__name__)
            sys.exit(1)
        sys.exit(2)
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    try:
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              timeout=3, env=env, cwd="/")
    except subprocess.TimeoutExpired:
        pytest.fail("rf.GRU(3, 4, num_layers=2**63) still running after 3 s")
    assert proc.returncode == 0, proc.stdout + proc.stderr
