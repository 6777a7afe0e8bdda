"""ONNX ``clip`` on RNN (tanh, relu) and GRU (both forms): forward against a float64 numpy
reference of the equations, every gradient against float64 central finite differences (both sides
of the clip threshold), bit-identical results across thread counts, a clip no pre-activation
reaches gives the plain model's bits, save/load, and argument errors. ONNX parity is in
test_onnx.py.

Equations (c(a) = clamp(a, -clip, clip); what onnxruntime computes):
    RNN:  h_t = act(c(a)),  a = W_ih x + b_ih + W_hh h + b_hh
    GRU:  r = σ(c(a_r)),  z = σ(c(a_z)),  n = tanh(c(a_n)),  h_t = (1 - z) n + z h_{t-1}
          a_n = W_in x + b_in + r (W_hn h + b_hn)        (linear_before_reset=True)
          a_n = W_in x + b_in + W_hn (r h) + b_hn        (linear_before_reset=False)
"""
import numpy as np
import pytest
import torch  # noqa: F401  (the oracle must be importable; see conftest)

import rnnfast as rf
from conftest import fd_mismatches, rel_err
from rnnfast import _core

KINDS = ["rnn_tanh", "rnn_relu", "gru", "gru_rb"]


def _make(kind, I, H, **kw):
    if kind.startswith("rnn"):
        return rf.RNN(I, H, nonlinearity=kind[4:], **kw)
    return rf.GRU(I, H, linear_before_reset=kind == "gru", **kw)


def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def reference(kind, sd, x, h0, lengths, L, D, H, bias=True, clip=None):
    """float64 forward of the equations above on time-major x (T, B, I); steps past a row's length
    keep the state and output zero. Returns y, h_n and every pre-activation fed to a clamp
    (before clamping) at the active steps."""
    x = np.asarray(x, np.float64)
    T, B, _ = x.shape
    G = 1 if kind.startswith("rnn") else 3
    if h0 is None:
        h0 = np.zeros((L * D, B, H))
    lens = np.full(B, T) if lengths is None else np.asarray(lengths)
    clamp = (lambda a: a) if clip is None else (lambda a: np.clip(a, -clip, clip))
    inp, hn, pre = x, [], []
    for layer in range(L):
        ys = []
        for d in range(D):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            wi, wh = sd["weight_ih_" + sfx], sd["weight_hh_" + sfx]
            bi = sd["bias_ih_" + sfx] if bias else np.zeros(G * H)
            bh = sd["bias_hh_" + sfx] if bias else np.zeros(G * H)
            h = np.array(h0[layer * D + d], np.float64)
            y = np.zeros((T, B, H))
            for t in (range(T - 1, -1, -1) if d else range(T)):
                gx = inp[t] @ wi.T + bi
                if G == 1:
                    a = gx + h @ wh.T + bh
                    h_new = np.tanh(clamp(a)) if kind == "rnn_tanh" else np.maximum(clamp(a), 0)
                    pres = (a,)
                else:
                    gh = h @ wh[:2 * H].T + bh[:2 * H]
                    ar, az = gx[:, :H] + gh[:, :H], gx[:, H:2 * H] + gh[:, H:]
                    r, z = _sigmoid(clamp(ar)), _sigmoid(clamp(az))
                    if kind == "gru":
                        an = gx[:, 2 * H:] + r * (h @ wh[2 * H:].T + bh[2 * H:])
                    else:
                        an = gx[:, 2 * H:] + (r * h) @ wh[2 * H:].T + bh[2 * H:]
                    n = np.tanh(clamp(an))
                    h_new = (1 - z) * n + z * h
                    pres = (ar, az, an)
                act = t < lens
                pre += [v[act].ravel() for v in pres]
                h = np.where(act[:, None], h_new, h)
                y[t] = np.where(act[:, None], h_new, 0.0)
            ys.append(y)
            hn.append(h)
        inp = np.concatenate(ys, axis=2)
    return inp, np.stack(hn), np.concatenate(pre)


def _clip_with_both_regions(kind, sd, x, h0, lengths, L, D, H, bias):
    """A clip threshold at least 1e-3 away from every pre-activation it sees (so +-1e-6 finite
    differences never cross it) that clamps between 20% and 80% of them. relu also needs every
    pre-activation away from its kink at 0."""
    for clip in np.linspace(0.3, 2.0, 69):
        pre = reference(kind, sd, x, h0, lengths, L, D, H, bias, clip)[2]
        clamped = np.mean(np.abs(pre) > clip)
        margin = np.min(np.abs(np.abs(pre) - clip))
        if kind == "rnn_relu":
            margin = min(margin, np.min(np.abs(pre)))
        if margin > 1e-3 and 0.2 < clamped < 0.8:
            return float(clip)
    raise AssertionError("no clip threshold with a margin found; change the seed")


def _setup(kind, L, bidir, bias, lengths, batch_first, dtype="float64", T=4, B=3, I=3, H=3,
           seed=0, scale=2.0):
    rng = np.random.default_rng(seed)
    D = 2 if bidir else 1
    kw = dict(num_layers=L, bias=bias, batch_first=batch_first, bidirectional=bidir, seed=seed)
    m = _make(kind, I, H, dtype="float64", **kw)
    sd = {k: scale * v for k, v in m.state_dict().items()}
    x_tm = rng.standard_normal((T, B, I))
    h0 = 0.5 * rng.standard_normal((L * D, B, H))
    clip = _clip_with_both_regions(kind, sd, x_tm, h0, lengths, L, D, H, bias)
    m = _make(kind, I, H, dtype=dtype, clip=clip, **kw)
    m.load_state_dict(sd)
    return m, sd, x_tm, h0, clip


def _to_user(a, batch_first):
    return np.ascontiguousarray(a.transpose(1, 0, 2)) if batch_first else a


def _cfg_id(c):
    return "-".join(f"{k}={v}" for k, v in c.items())


FWD_CONFIGS = [
    dict(L=1, bidir=False, bias=True, lengths=None, batch_first=False),
    dict(L=2, bidir=True, bias=True, lengths=[4, 1, 3], batch_first=False),
    dict(L=2, bidir=False, bias=False, lengths=[2, 4, 1], batch_first=True),
]


@pytest.mark.parametrize("cfg", FWD_CONFIGS, ids=_cfg_id)
@pytest.mark.parametrize("kind", KINDS)
def test_forward_matches_numpy_reference(kind, cfg):
    L, bidir, bias, lengths, bf = (cfg[k] for k in ("L", "bidir", "bias", "lengths",
                                                     "batch_first"))
    m, sd, x_tm, h0, clip = _setup(kind, L, bidir, bias, lengths, bf, T=6, B=3, I=4, H=5,
                                   seed=1)
    D = 2 if bidir else 1
    y_ref, hn_ref, pre = reference(kind, sd, x_tm, h0, lengths, L, D, 5, bias, clip)
    assert np.mean(np.abs(pre) > clip) > 0.2  # the clamps bite
    x = _to_user(x_tm, bf)
    for train in (False, True):
        y, hn, _ = m.forward(x, h0, lengths, train=train)
        assert rel_err(_to_user(y, bf), y_ref) < 1e-12
        assert rel_err(hn, hn_ref) < 1e-12
    # the same model without clip is clearly different
    y_plain, _ = reference(kind, sd, x_tm, h0, lengths, L, D, 5, bias)[:2]
    assert np.max(np.abs(y_plain - y_ref)) > 1e-2
    m32 = _make(kind, 4, 5, num_layers=L, bias=bias, batch_first=bf, bidirectional=bidir,
                dtype="float32", clip=clip)
    m32.load_state_dict(sd)
    y, hn = m32(x.astype(np.float32), h0.astype(np.float32), lengths)
    assert rel_err(_to_user(y, bf), y_ref) < 1e-5 and rel_err(hn, hn_ref) < 1e-5


EPS = 1e-6
GRAD_CONFIGS = [
    dict(L=1, bidir=False, bias=True, lengths=None, batch_first=False),
    dict(L=2, bidir=True, bias=True, lengths=[4, 1, 3], batch_first=False),
    dict(L=2, bidir=True, bias=False, lengths=[2, 4, 3], batch_first=True),
]


@pytest.mark.parametrize("cfg", GRAD_CONFIGS, ids=_cfg_id)
@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_finite_differences(kind, cfg):
    L, bidir, lengths, bf = cfg["L"], cfg["bidir"], cfg["lengths"], cfg["batch_first"]
    m, sd, x_tm, h0, clip = _setup(kind, L, bidir, cfg["bias"], lengths, bf, seed=7)
    rng = np.random.default_rng(8)
    D = 2 if bidir else 1
    x = _to_user(x_tm, bf).copy()
    h0 = h0.copy()
    ry = rng.standard_normal((3, 4, D * 3) if bf else (4, 3, D * 3))
    rh = rng.standard_normal(h0.shape)
    sd = {k: v.copy() for k, v in sd.items()}

    def loss():
        m.load_state_dict(sd)
        y, hn = m(x, h0, lengths)
        return float(np.sum(y * ry) + np.sum(hn * rh))

    m.zero_grad()
    y, hn, tape = m.forward(x, h0, lengths)
    dx, dh0 = m.backward(tape, ry, rh)
    analytic = {k: np.array(v, copy=True) for k, v in dict(m.named_grads(), x=dx, h0=dh0).items()}
    arrays = dict(sd, x=x, h0=h0)
    assert set(arrays) == set(analytic)
    bad = fd_mismatches(arrays, analytic, loss, EPS)
    assert not bad, f"{kind} clip={clip}: " + ", ".join(bad)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
def test_bitwise_identical_across_thread_counts(kind, dtype, restore_threads):
    T, B, I, H, L = 9, 16, 11, 67, 2  # B: enough work for 3 threads on the 1-gate RNN too
    rng = np.random.default_rng(11)
    m = _make(kind, I, H, num_layers=L, bidirectional=True, dtype=dtype, seed=11, clip=0.8)
    m.load_state_dict({k: 4 * v for k, v in m.state_dict().items()})  # clamps bite
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((2 * L, B, H)).astype(dtype)
    ry = rng.standard_normal((T, B, 2 * H)).astype(dtype)
    lens = rng.integers(1, T + 1, B)
    lens[0] = T
    results = {}
    for n in (1, 2, 3):
        rf.set_num_threads(n)
        assert _core.core_threads_for_call(m._desc(T, B)) == n
        y, hn = m(x, h0, lens)
        m.zero_grad()
        yt, st, tape = m.forward(x, h0, lens)
        dx, dh0 = m.backward(tape, ry, st)
        results[n] = [y, hn, yt, dx, dh0, m.grads.copy()]
    for n in (2, 3):
        for k, (a, b) in enumerate(zip(results[1], results[n])):
            assert np.array_equal(a, b), f"{kind} {dtype}: output {k} differs, 1 vs {n} threads"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", KINDS)
def test_huge_clip_equals_plain_model_bitwise(kind, dtype):
    # a clip no pre-activation reaches changes nothing: same bits, forward and every gradient
    rng = np.random.default_rng(5)
    plain = _make(kind, 4, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=5)
    huge = _make(kind, 4, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=5, clip=1e30)
    huge.load_state_dict(plain.state_dict())
    x = rng.standard_normal((5, 3, 4)).astype(dtype)
    ry = rng.standard_normal((5, 3, 12)).astype(dtype)
    lens = [5, 2, 4]
    outs = []
    for m in (plain, huge):
        y, hn, tape = m.forward(x, None, lens)
        dx, dh0 = m.backward(tape, ry, hn)
        outs.append([y, hn, dx, dh0, m.grads.copy(), m(x, None, lens)[0]])
    for a, b in zip(*outs):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("kind", KINDS)
def test_stream_chunks_equal_full_call(kind):
    rng = np.random.default_rng(4)
    m = _make(kind, 5, 19, num_layers=2, dtype="float64", seed=1, clip=0.4)
    m.load_state_dict({k: 3 * v for k, v in m.state_dict().items()})
    x = rng.standard_normal((13, 3, 5))
    y_full, h_full = m(x)
    s = m.stream(batch=3)
    ys = [s.feed(x[:5]), s.step(x[5]).copy()[None], s.feed(x[6:])]
    np.testing.assert_allclose(np.concatenate(ys), y_full, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(s.state, h_full, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, tmp_path):
    m = _make(kind, 3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=2, clip=0.75)
    assert "clip=0.75" in repr(m)
    path = tmp_path / "m.safetensors"
    rf.save(m, path)
    back = rf.load(path)
    assert back.clip == 0.75 and repr(back) == repr(m)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    assert np.array_equal(back(x)[0], m(x)[0])
    rf.save(_make(kind, 3, 4), tmp_path / "p.safetensors")
    assert rf.load(tmp_path / "p.safetensors").clip is None


@pytest.mark.parametrize("clip,exc", [(0, ValueError), (-0.5, ValueError),
                                      (float("nan"), ValueError), (float("inf"), ValueError),
                                      (True, TypeError), ("1", TypeError), ([1.0], TypeError)])
@pytest.mark.parametrize("kind", KINDS)
def test_bad_clip_is_refused(kind, clip, exc):
    with pytest.raises(exc, match="clip must be a positive finite number or None"):
        _make(kind, 2, 3, clip=clip)


def test_clip_is_keyword_only():
    with pytest.raises(TypeError):
        rf.RNN(2, 3, 1, "tanh", True, False, 0.0, False, "float32", None, 0.5)
    with pytest.raises(TypeError):
        rf.GRU(2, 3, 1, True, False, 0.0, False, "float32", None, 0.5)


@pytest.mark.parametrize("kind", KINDS)
def test_to_torch_refuses_clip(kind):
    with pytest.raises(ValueError, match="clip"):
        rf.to_torch(_make(kind, 2, 3, clip=1.0))
    assert rf.from_torch(torch.nn.GRU(2, 3)).clip is None


def test_core_accepts_clip_on_every_cell():
    for cell in (0, 1, 3, 4):
        desc = (cell, 1, 3, 2, 4, 5, 1, 1, 1, 0, 0, 0.5)
        assert _core.core_param_count(desc) == _core.core_param_count(desc[:-1] + (0.0,))
        with pytest.raises(ValueError, match="descriptor"):
            _core.core_param_count(desc[:-1] + (-1.0,))
