"""Shared helpers for the rnnfast oracle tests.

Everything here is a plain helper (plus a couple of fixtures); the tests
themselves live in the test_*.py files.  torch is imported unconditionally on
purpose: a missing oracle must make the suite fail, never skip.
"""

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnfast as rf

# torch is only the oracle here. Its own OpenMP threads contend with rnnfast's on a 2-core machine
# (0.3 s per tiny call measured under load); one torch thread keeps the suite fast.
torch.set_num_threads(1)

# The suite runs every call on the team that the fixed thresholds give (threads_for_call), so that
# a test asking for n threads gets n; test_team_tuner.py turns the timing-based choice back on.
rf._core.core_set_team_tuning_mode(0)

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")

NP_DTYPES = {"float32": np.float32, "float64": np.float64}
TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}

# Tolerances on the relative error (see rel_err) demanded by the contract.
PARITY_TOL = {"float64": 1e-10, "float32": 1e-4}


# --------------------------------------------------------------------------
# error measures
# --------------------------------------------------------------------------
def central_diff_at(arr, idx, loss, eps):
    """d loss() / d arr[idx] by a central difference, perturbing arr in place (restored after)."""
    orig = arr[idx]
    arr[idx] = orig + eps
    lp = loss()
    arr[idx] = orig - eps
    lm = loss()
    arr[idx] = orig
    return (lp - lm) / (2 * eps)


def central_diff(arr, loss, eps):
    """d loss() / d arr by central differences, perturbing arr in place (restored after)."""
    num = np.zeros_like(arr)
    for idx in np.ndindex(arr.shape):
        num[idx] = central_diff_at(arr, idx, loss, eps)
    return num


def fd_mismatches(arrays, analytic, loss, eps, tol=1e-6):
    """Central differences of loss() w.r.t. every element of every array in `arrays` (perturbed
    in place and restored), compared with `analytic` by rel_err; returns "name: err" for each
    array whose error is not below tol."""
    bad = []
    for name, arr in arrays.items():
        err = rel_err(analytic[name], central_diff(arr, loss, eps))
        if not err < tol:
            bad.append(f"{name}: {err:.2e}")
    return bad


def rel_err(a, ref):
    """max|a - ref| / max(max|ref|, 1e-30); absolute error when ref is all zero.

    Shapes must agree exactly (no broadcasting is allowed to hide a bug).
    """
    a = np.asarray(a)
    ref = np.asarray(ref)
    if a.shape != ref.shape:
        raise AssertionError(f"shape mismatch: got {a.shape}, expected {ref.shape}")
    if ref.size == 0:
        return 0.0
    a64 = a.astype(np.float64)
    r64 = ref.astype(np.float64)
    if not np.all(np.isfinite(a64)):
        return float("inf")
    diff = float(np.max(np.abs(a64 - r64)))
    scale = float(np.max(np.abs(r64)))
    if scale == 0.0:
        return diff
    return diff / max(scale, 1e-30)


def assert_rel(a, ref, tol, what=""):
    err = rel_err(a, ref)
    assert err <= tol, f"{what}: relative error {err:.3e} > {tol:.1e}"


def assert_all_close(got, ref, tol, context=""):
    """Compare two dicts of arrays key by key; report every offending tensor."""
    assert set(got) == set(ref), (
        f"{context}: tensor sets differ: only in rnnfast {sorted(set(got) - set(ref))}, "
        f"only in reference {sorted(set(ref) - set(got))}"
    )
    bad = []
    for k in sorted(ref):
        try:
            err = rel_err(got[k], ref[k])
        except AssertionError as e:  # shape mismatch
            bad.append(f"{k}: {e}")
            continue
        if not err <= tol:
            bad.append(f"{k}: rel err {err:.3e}")
    assert not bad, f"{context}: tolerance {tol:.0e} exceeded for\n  " + "\n  ".join(bad)


# --------------------------------------------------------------------------
# model construction
# --------------------------------------------------------------------------
def is_lstm(cell):
    return cell == "lstm"


def rf_model(cell, input_size, hidden_size, num_layers=1, bias=True,
             batch_first=False, dropout=0.0, bidirectional=False,
             dtype="float64", seed=None):
    kw = dict(num_layers=num_layers, bias=bias, batch_first=batch_first,
              dropout=dropout, bidirectional=bidirectional, dtype=dtype, seed=seed)
    if cell == "lstm":
        return rf.LSTM(input_size, hidden_size, **kw)
    if cell == "gru":
        return rf.GRU(input_size, hidden_size, **kw)
    if cell == "rnn_tanh":
        return rf.RNN(input_size, hidden_size, nonlinearity="tanh", **kw)
    if cell == "rnn_relu":
        return rf.RNN(input_size, hidden_size, nonlinearity="relu", **kw)
    raise ValueError(cell)


def torch_model(cell, input_size, hidden_size, num_layers=1, bias=True,
                batch_first=False, bidirectional=False, dtype="float64"):
    kw = dict(num_layers=num_layers, bias=bias, batch_first=batch_first,
              bidirectional=bidirectional, dtype=TORCH_DTYPES[dtype])
    if cell == "lstm":
        return torch.nn.LSTM(input_size, hidden_size, **kw)
    if cell == "gru":
        return torch.nn.GRU(input_size, hidden_size, **kw)
    if cell == "rnn_tanh":
        return torch.nn.RNN(input_size, hidden_size, nonlinearity="tanh", **kw)
    if cell == "rnn_relu":
        return torch.nn.RNN(input_size, hidden_size, nonlinearity="relu", **kw)
    raise ValueError(cell)


def torch_state_numpy(tm):
    return {k: v.detach().numpy().copy() for k, v in tm.state_dict().items()}


def make_pair(cell, input_size, hidden_size, num_layers=1, bias=True,
              batch_first=False, bidirectional=False, dtype="float64", seed=0):
    """A torch module and an rnnfast model holding identical weights."""
    torch.manual_seed(seed)
    tm = torch_model(cell, input_size, hidden_size, num_layers, bias,
                     batch_first, bidirectional, dtype)
    m = rf_model(cell, input_size, hidden_size, num_layers, bias, batch_first,
                 0.0, bidirectional, dtype, seed=seed)
    m.load_state_dict(torch_state_numpy(tm))
    return m, tm


# --------------------------------------------------------------------------
# data
# --------------------------------------------------------------------------
def ragged_lengths(rng, batch, seq_len):
    """Unsorted lengths in 1..T that contain a length-1 row (and a full row
    when there is room for both)."""
    lengths = rng.integers(1, seq_len + 1, size=batch)
    lengths[batch // 2] = 1
    if batch > 1:
        lengths[0] = seq_len
        # make sure the order is not sorted either way when possible
        if batch > 2:
            lengths[-1] = max(1, (seq_len + 1) // 2)
    return lengths.astype(np.int64)


def make_data(rng, cell, T, B, I, H, num_layers, bidirectional, batch_first,
              dtype, with_hx=True):
    """x, hx (rnnfast form) and the random loss cotangents ry, rh, rc."""
    npdt = NP_DTYPES[dtype]
    D = 2 if bidirectional else 1
    xshape = (B, T, I) if batch_first else (T, B, I)
    yshape = (B, T, D * H) if batch_first else (T, B, D * H)
    sshape = (num_layers * D, B, H)
    x = rng.standard_normal(xshape).astype(npdt)
    h0 = (0.5 * rng.standard_normal(sshape)).astype(npdt)
    c0 = (0.5 * rng.standard_normal(sshape)).astype(npdt)
    ry = rng.standard_normal(yshape).astype(npdt)
    rh = rng.standard_normal(sshape).astype(npdt)
    rc = rng.standard_normal(sshape).astype(npdt)
    if not with_hx:
        hx = None
    elif is_lstm(cell):
        hx = (h0, c0)
    else:
        hx = h0
    return x, hx, ry, rh, (rc if is_lstm(cell) else None)


# --------------------------------------------------------------------------
# reference (torch) and candidate (rnnfast) runs
# --------------------------------------------------------------------------
def torch_run(tm, cell, x, hx, lengths, ry, rh, rc, batch_first, zero_hx_grad=False):
    """Forward + backward of loss = sum(y*ry) + sum(h_n*rh) (+ sum(c_n*rc)).

    Returns a dict with y, h_n, (c_n), dx, dh0, (dc0) and grad:<param name>.
    When hx is None and zero_hx_grad is set, an explicit zero initial state
    that requires grad is used instead (numerically identical to hx=None), so
    that d/dh0 at h0 = 0 is available.
    """
    T = x.shape[1] if batch_first else x.shape[0]
    tm.zero_grad(set_to_none=True)
    xt = torch.tensor(x, requires_grad=True)
    leaves = []
    if hx is None and zero_hx_grad:
        B = x.shape[0] if batch_first else x.shape[1]
        D = 2 if tm.bidirectional else 1
        z = np.zeros((tm.num_layers * D, B, tm.hidden_size), dtype=x.dtype)
        hx = (z, z.copy()) if is_lstm(cell) else z
    if hx is None:
        hxt = None
    elif is_lstm(cell):
        leaves = [torch.tensor(hx[0], requires_grad=True),
                  torch.tensor(hx[1], requires_grad=True)]
        hxt = tuple(leaves)
    else:
        leaves = [torch.tensor(hx, requires_grad=True)]
        hxt = leaves[0]

    if lengths is None:
        y, st = tm(xt, hxt)
    else:
        packed = pack_padded_sequence(
            xt, torch.as_tensor(np.asarray(lengths), dtype=torch.int64),
            batch_first=batch_first, enforce_sorted=False)
        out, st = tm(packed, hxt)
        y, _ = pad_packed_sequence(out, batch_first=batch_first, total_length=T)

    if is_lstm(cell):
        h_n, c_n = st
    else:
        h_n, c_n = st, None
    loss = (y * torch.tensor(ry)).sum() + (h_n * torch.tensor(rh)).sum()
    if c_n is not None:
        loss = loss + (c_n * torch.tensor(rc)).sum()
    loss.backward()

    res = {"y": y.detach().numpy(), "h_n": h_n.detach().numpy(),
           "dx": xt.grad.numpy()}
    if c_n is not None:
        res["c_n"] = c_n.detach().numpy()
    if leaves:
        res["dh0"] = leaves[0].grad.numpy()
        if is_lstm(cell):
            res["dc0"] = leaves[1].grad.numpy()
    for name, p in tm.named_parameters():
        assert p.grad is not None, name
        res["grad:" + name] = p.grad.numpy().copy()
    return res


def rf_run(m, cell, x, hx, lengths, ry, rh, rc, want_dhx=True):
    """Same quantities as torch_run, computed by rnnfast (training API)."""
    m.zero_grad()
    y, st, tape = m.forward(x, hx=hx, lengths=lengths, train=True)
    if is_lstm(cell):
        h_n, c_n = st
        dstate = (rh, rc)
    else:
        h_n, c_n = st, None
        dstate = rh
    dx, dhx = m.backward(tape, ry, dstate)
    res = {"y": np.asarray(y), "h_n": np.asarray(h_n), "dx": np.asarray(dx)}
    if c_n is not None:
        res["c_n"] = np.asarray(c_n)
    if want_dhx:
        if is_lstm(cell):
            res["dh0"] = np.asarray(dhx[0])
            res["dc0"] = np.asarray(dhx[1])
        else:
            res["dh0"] = np.asarray(dhx)
    for name, g in m.named_grads():
        res["grad:" + name] = np.array(g, copy=True)
    return res


def rf_infer(m, cell, x, hx=None, lengths=None):
    """Inference call; returns (y, h_n, c_n-or-None)."""
    y, st = m(x, hx=hx, lengths=lengths)
    if is_lstm(cell):
        return y, st[0], st[1]
    return y, st, None


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------
@pytest.fixture
def restore_threads():
    """Put the thread count back the way it was after the test."""
    before = rf.get_num_threads()
    yield before
    rf.set_num_threads(before)
