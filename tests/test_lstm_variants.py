"""LSTM variants of ONNX (peephole, input_forget, clip): forward against a float64 numpy reference
of the equations, every gradient against float64 central finite differences (both sides of the
clip threshold), bit-identical results across thread counts, reduction to the plain LSTM when a
variant is neutral, streaming, save/load, and argument errors. ONNX parity is in test_onnx.py.

Equations (gates i, f, g, o; c(a) = clamp(a, -clip, clip), the identity without clip):
    i = σ(c(a_i + p_i c_{t-1}))   f = σ(c(a_f + p_f c_{t-1}))  (f = 1 - i with input_forget)
    g = tanh(c(a_g))              c_t = f c_{t-1} + i g
    o = σ(c(a_o + p_o c_t))       h_t = o tanh(c_t)
"""
import numpy as np
import pytest
import torch  # noqa: F401  (the oracle must be importable; see conftest)

import rnnfast as rf
from conftest import fd_mismatches, rel_err
from rnnfast import _core

VARIANTS = {
    "peephole": dict(peephole=True),
    "input_forget": dict(input_forget=True),
    "clip": dict(clip="auto"),
    "peephole+clip": dict(peephole=True, clip="auto"),
    "all": dict(peephole=True, input_forget=True, clip="auto"),
}


# ------------------------------------------------------------------------------- the reference
def _sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def reference(sd, x, hx, lengths, L, D, H, bias=True, peephole=False, input_forget=False,
              clip=None):
    """float64 forward of the equations above, time-major x (T, B, I), PyTorch's semantics for
    lengths (steps past a row's length keep the state and output zero). Returns y, h_n, c_n and
    the pre-activations fed to the clamps (before clamping) at every active step."""
    x = np.asarray(x, np.float64)
    T, B, _ = x.shape
    if hx is None:
        hx = (np.zeros((L * D, B, H)), np.zeros((L * D, B, H)))
    lens = np.full(B, T) if lengths is None else np.asarray(lengths)
    clamp = (lambda a: a) if clip is None else (lambda a: np.clip(a, -clip, clip))
    inp, hn, cn, pre = x, [], [], []
    for layer in range(L):
        ys = []
        for d in range(D):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            wi, wh = sd["weight_ih_" + sfx], sd["weight_hh_" + sfx]
            b = sd["bias_ih_" + sfx] + sd["bias_hh_" + sfx] if bias else np.zeros(4 * H)
            p = sd["weight_peephole_" + sfx] if peephole else np.zeros(3 * H)
            h = np.array(hx[0][layer * D + d], np.float64)
            c = np.array(hx[1][layer * D + d], np.float64)
            y = np.zeros((T, B, H))
            for t in (range(T - 1, -1, -1) if d else range(T)):
                a = inp[t] @ wi.T + h @ wh.T + b
                ai = a[:, :H] + p[:H] * c
                af = a[:, H:2 * H] + p[H:2 * H] * c
                ag = a[:, 2 * H:3 * H]
                i = _sigmoid(clamp(ai))
                f = 1.0 - i if input_forget else _sigmoid(clamp(af))
                g = np.tanh(clamp(ag))
                c_new = f * c + i * g
                ao = a[:, 3 * H:] + p[2 * H:] * c_new
                o = _sigmoid(clamp(ao))
                h_new = o * np.tanh(c_new)
                act = t < lens
                pre += [v[act].ravel() for v in ((ai, ag, ao) if input_forget else (ai, af, ag, ao))]
                h = np.where(act[:, None], h_new, h)
                c = np.where(act[:, None], c_new, c)
                y[t] = np.where(act[:, None], h_new, 0.0)
            ys.append(y)
            hn.append(h)
            cn.append(c)
        inp = np.concatenate(ys, axis=2)
    return inp, np.stack(hn), np.stack(cn), np.concatenate(pre)


def _clip_with_both_regions(sd, x, hx, lengths, L, D, H, bias, peephole, input_forget):
    """A clip threshold at least 1e-3 away from every pre-activation it sees (so +-1e-6 finite
    differences never cross it) that clamps between 20% and 80% of them."""
    for clip in np.linspace(0.3, 2.0, 69):
        pre = reference(sd, x, hx, lengths, L, D, H, bias, peephole, input_forget, clip)[3]
        clamped = np.mean(np.abs(pre) > clip)
        if np.min(np.abs(np.abs(pre) - clip)) > 1e-3 and 0.2 < clamped < 0.8:
            return float(clip)
    raise AssertionError("no clip threshold with a margin found; change the seed")


def _setup(variant, L, bidir, bias, lengths, batch_first, dtype="float64", T=4, B=3, I=3, H=3,
           seed=0, scale=2.0):
    """Model (weights scaled up so that gates saturate and clamps bite), data, reference args."""
    rng = np.random.default_rng(seed)
    D = 2 if bidir else 1
    kw = dict(VARIANTS[variant])
    m = rf.LSTM(I, H, num_layers=L, bias=bias, batch_first=batch_first, bidirectional=bidir,
                dtype="float64", seed=seed, **{k: v for k, v in kw.items() if k != "clip"})
    sd = {k: scale * v for k, v in m.state_dict().items()}
    x_tm = rng.standard_normal((T, B, I))
    hx = (0.5 * rng.standard_normal((L * D, B, H)), rng.standard_normal((L * D, B, H)))
    if kw.get("clip") == "auto":
        kw["clip"] = _clip_with_both_regions(sd, x_tm, hx, lengths, L, D, H, bias,
                                             kw.get("peephole", False),
                                             kw.get("input_forget", False))
    m = rf.LSTM(I, H, num_layers=L, bias=bias, batch_first=batch_first, bidirectional=bidir,
                dtype=dtype, seed=seed, **kw)
    m.load_state_dict(sd)
    return m, sd, x_tm, hx, kw


def _to_user(a, batch_first):
    return np.ascontiguousarray(a.transpose(1, 0, 2)) if batch_first else a


FWD_CONFIGS = [
    dict(L=1, bidir=False, bias=True, lengths=None, batch_first=False),
    dict(L=2, bidir=True, bias=True, lengths=[4, 1, 3], batch_first=False),
    dict(L=2, bidir=False, bias=False, lengths=[2, 4, 1], batch_first=True),
    dict(L=3, bidir=True, bias=True, lengths=None, batch_first=True),
]


def _cfg_id(c):
    return "-".join(f"{k}={v}" for k, v in c.items())


# ----------------------------------------------------------------------------- forward
@pytest.mark.parametrize("cfg", FWD_CONFIGS, ids=_cfg_id)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_forward_matches_numpy_reference(variant, cfg):
    m, sd, x_tm, hx, kw = _setup(variant, cfg["L"], cfg["bidir"], cfg["bias"], cfg["lengths"],
                                 cfg["batch_first"], T=6, B=3, I=4, H=5, seed=1)
    D = 2 if cfg["bidir"] else 1
    y_ref, hn_ref, cn_ref, _ = reference(sd, x_tm, hx, cfg["lengths"], cfg["L"], D, 5,
                                         cfg["bias"], kw.get("peephole", False),
                                         kw.get("input_forget", False), kw.get("clip"))
    x = _to_user(x_tm, cfg["batch_first"])
    # float64: to rounding; training forward gives the same numbers as inference
    for train in (False, True):
        y, (hn, cn), _ = m.forward(x, hx, cfg["lengths"], train=train)
        assert rel_err(_to_user(y, cfg["batch_first"]), y_ref) < 1e-12
        assert rel_err(hn, hn_ref) < 1e-12 and rel_err(cn, cn_ref) < 1e-12
    # float32: to float32 rounding
    m32 = rf.LSTM(4, 5, num_layers=cfg["L"], bias=cfg["bias"], batch_first=cfg["batch_first"],
                  bidirectional=cfg["bidir"], dtype="float32", **kw)
    m32.load_state_dict(sd)
    y, (hn, cn) = m32(x.astype(np.float32), tuple(s.astype(np.float32) for s in hx),
                      cfg["lengths"])
    assert rel_err(_to_user(y, cfg["batch_first"]), y_ref) < 1e-5
    assert rel_err(hn, hn_ref) < 1e-5 and rel_err(cn, cn_ref) < 1e-5


def test_variants_change_the_result():
    # each switch must do something (a flag ignored on the way to the core would pass the
    # reference test only if the reference ignored it too)
    m0, sd, x, hx, _ = _setup("peephole", 2, True, True, None, False, seed=2)
    sd = {k: v for k, v in sd.items() if "peephole" not in k}
    plain = rf.LSTM(3, 3, num_layers=2, bidirectional=True, dtype="float64")
    plain.load_state_dict(sd)
    y0, _ = plain(x, hx)
    for kw in (dict(peephole=True), dict(input_forget=True), dict(clip=0.5)):
        m = rf.LSTM(3, 3, num_layers=2, bidirectional=True, dtype="float64", **kw)
        m.load_state_dict(dict(sd, **{k: v for k, v in m0.state_dict().items()
                                      if "peephole" in k}) if "peephole" in kw else sd)
        y, _ = m(x, hx)
        assert np.max(np.abs(y - y0)) > 1e-3, kw


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_neutral_variants_equal_plain_lstm_bitwise(dtype):
    # zero peepholes and a clip no pre-activation reaches add exactly nothing: same bits as the
    # plain LSTM, forward and every shared gradient (the peephole gradients come on top)
    rng = np.random.default_rng(5)
    plain = rf.LSTM(4, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=5)
    var = rf.LSTM(4, 6, num_layers=2, bidirectional=True, dtype=dtype, seed=5, peephole=True,
                  clip=1e30)
    sd = plain.state_dict()
    var.load_state_dict(dict(sd, **{k: np.zeros(18) for k, _ in var.named_parameters()
                                    if "peephole" in k}))
    x = rng.standard_normal((5, 3, 4)).astype(dtype)
    ry = rng.standard_normal((5, 3, 12)).astype(dtype)
    lens = [5, 2, 4]
    outs = []
    for m in (plain, var):
        y, (hn, cn), tape = m.forward(x, None, lens)
        dx, (dh0, dc0) = m.backward(tape, ry, (hn, cn))
        outs.append([y, hn, cn, dx, dh0, dc0] + [dict(m.named_grads())[k] for k in sd])
    for a, b in zip(*outs):
        assert np.array_equal(a, b)


def test_input_forget_ignores_forget_weights_and_gives_them_zero_gradients():
    m, sd, x, hx, _ = _setup("input_forget", 2, True, True, [4, 2, 3], False, seed=3)
    y, _ = m(x, hx)
    H = 3
    sd2 = {k: v.copy() for k, v in sd.items()}
    for k in sd2:
        if not k.startswith("weight_peephole"):
            sd2[k][H:2 * H] = 1e3  # the forget gate's rows of every weight and bias
    m.load_state_dict(sd2)
    y2, (hn, cn), tape = m.forward(x, hx)
    assert np.array_equal(y, y2)
    m.zero_grad()
    m.backward(tape, np.ones_like(y2), (hn, cn))
    for k, g in m.named_grads():
        assert np.all(g[H:2 * H] == 0), k
        assert np.any(g[:H] != 0), k


# ----------------------------------------------------------------------------- gradients
EPS = 1e-6
GRAD_CONFIGS = [
    dict(L=1, bidir=False, bias=True, lengths=None, batch_first=False),
    dict(L=2, bidir=True, bias=True, lengths=[4, 1, 3], batch_first=False),
    dict(L=2, bidir=True, bias=False, lengths=[2, 4, 3], batch_first=True),
]


@pytest.mark.parametrize("cfg", GRAD_CONFIGS, ids=_cfg_id)
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_gradients_match_finite_differences(variant, cfg):
    L, bidir, lengths, bf = cfg["L"], cfg["bidir"], cfg["lengths"], cfg["batch_first"]
    m, sd, x_tm, hx, kw = _setup(variant, L, bidir, cfg["bias"], lengths, bf, seed=7)
    rng = np.random.default_rng(8)
    D = 2 if bidir else 1
    x = _to_user(x_tm, bf).copy()
    h0, c0 = hx[0].copy(), hx[1].copy()
    ry = rng.standard_normal((3, 4, D * 3) if bf else (4, 3, D * 3))
    rh, rc = rng.standard_normal(h0.shape), rng.standard_normal(c0.shape)
    sd = {k: v.copy() for k, v in sd.items()}

    def loss():
        m.load_state_dict(sd)
        y, (hn, cn) = m(x, (h0, c0), lengths)
        return float(np.sum(y * ry) + np.sum(hn * rh) + np.sum(cn * rc))

    m.zero_grad()
    y, (hn, cn), tape = m.forward(x, (h0, c0), lengths)
    dx, (dh0, dc0) = m.backward(tape, ry, (rh, rc))
    analytic = dict(m.named_grads(), x=dx, h0=dh0, c0=dc0)
    analytic = {k: np.array(v, copy=True) for k, v in analytic.items()}
    arrays = dict(sd, x=x, h0=h0, c0=c0)
    assert set(arrays) == set(analytic)
    if kw.get("peephole"):
        assert any(k.startswith("weight_peephole") for k in arrays)
    bad = fd_mismatches(arrays, analytic, loss, EPS)
    assert not bad, f"{variant} {kw}: " + ", ".join(bad)


# ----------------------------------------------------------------------------- threads
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("variant", ["peephole+clip", "all", "input_forget"])
def test_bitwise_identical_across_thread_counts(variant, dtype, restore_threads):
    T, B, I, H, L = 9, 7, 11, 67, 2
    rng = np.random.default_rng(11)
    kw = {k: (0.8 if v == "auto" else v) for k, v in VARIANTS[variant].items()}
    m = rf.LSTM(I, H, num_layers=L, bidirectional=True, dtype=dtype, seed=11, **kw)
    m.load_state_dict({k: 4 * v for k, v in m.state_dict().items()})  # clamps bite
    x = rng.standard_normal((T, B, I)).astype(dtype)
    hx = tuple(rng.standard_normal((2 * L, B, H)).astype(dtype) for _ in range(2))
    ry = rng.standard_normal((T, B, 2 * H)).astype(dtype)
    lens = rng.integers(1, T + 1, B)
    lens[0] = T
    results = {}
    for n in (1, 2, 3):
        rf.set_num_threads(n)
        assert _core.core_threads_for_call(m._desc(T, B)) == n
        y, (hn, cn) = m(x, hx, lens)
        m.zero_grad()
        yt, st, tape = m.forward(x, hx, lens)
        dx, (dh0, dc0) = m.backward(tape, ry, st)
        results[n] = [y, hn, cn, yt, dx, dh0, dc0, m.grads.copy()]
    for n in (2, 3):
        for k, (a, b) in enumerate(zip(results[1], results[n])):
            assert np.array_equal(a, b), f"{variant} {dtype}: output {k} differs, 1 vs {n} threads"


# ----------------------------------------------------------------------------- stream, io
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_stream_chunks_equal_full_call(dtype):
    tol = dict(rtol=1e-12, atol=1e-13) if dtype == "float64" else dict(rtol=2e-5, atol=2e-6)
    rng = np.random.default_rng(4)
    m = rf.LSTM(5, 19, num_layers=2, dtype=dtype, seed=1, peephole=True, input_forget=True,
                clip=0.4)
    x = rng.standard_normal((13, 3, 5)).astype(dtype)
    y_full, (h_full, c_full) = m(x)
    s = m.stream(batch=3)
    ys = [s.feed(x[:5]), s.step(x[5]).copy()[None], s.feed(x[6:])]
    np.testing.assert_allclose(np.concatenate(ys), y_full, **tol)
    np.testing.assert_allclose(s.state[0], h_full, **tol)
    np.testing.assert_allclose(s.state[1], c_full, **tol)


def test_save_load_round_trip(tmp_path):
    m = rf.LSTM(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=2, peephole=True,
                input_forget=True, clip=0.75)
    path = tmp_path / "m.safetensors"
    rf.save(m, path)
    back = rf.load(path)
    assert (back.peephole, back.input_forget, back.clip) == (True, True, 0.75)
    assert repr(back) == repr(m) and "clip=0.75" in repr(m) and "peephole=True" in repr(m)
    assert back.state_dict().keys() == m.state_dict().keys()
    for k, v in m.state_dict().items():
        assert np.array_equal(back.state_dict()[k], v)
    x = np.random.default_rng(0).standard_normal((5, 2, 3))
    assert np.array_equal(back(x)[0], m(x)[0])
    # a plain model's file carries none of the new keys (older versions still read it)
    rf.save(rf.LSTM(3, 4), tmp_path / "p.safetensors")
    with open(tmp_path / "p.safetensors", "rb") as f:
        head = f.read(4096)
    assert b"peephole" not in head and b"clip" not in head


@pytest.mark.parametrize("edit,message", [
    (dict(clip=-1.0), "clip"),
    (dict(clip="1"), "clip"),
    (dict(peephole=1), "peephole"),
    (dict(cls="GRU"), "only an LSTM"),
])
def test_bad_variant_metadata_is_a_value_error(tmp_path, edit, message):
    import json

    import safetensors.numpy

    m = rf.LSTM(3, 4, clip=0.5, peephole=True, seed=0)
    path = tmp_path / "m.safetensors"
    rf.save(m, path)
    tensors = safetensors.numpy.load_file(str(path))
    meta = json.loads(safetensors.safe_open(str(path), "numpy").metadata()["rnnfast"])
    if "cls" in edit:
        meta["class"] = edit["cls"]
        meta["input_size"] = 3
    else:
        meta.update(edit)
    bad = tmp_path / "bad.safetensors"
    safetensors.numpy.save_file(tensors, str(bad), metadata={"rnnfast": json.dumps(meta)})
    with pytest.raises(ValueError, match=message):
        rf.load(bad)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("clip,exc", [(0, ValueError), (-0.5, ValueError),
                                      (float("nan"), ValueError), (float("inf"), ValueError),
                                      (True, TypeError), ("1", TypeError), ([1.0], TypeError)])
def test_bad_clip_is_refused(clip, exc):
    with pytest.raises(exc, match="clip must be a positive finite number or None"):
        rf.LSTM(2, 3, clip=clip)


@pytest.mark.parametrize("name", ["peephole", "input_forget"])
def test_flags_must_be_bools(name):
    with pytest.raises(TypeError, match=name):
        rf.LSTM(2, 3, **{name: 1})


def test_other_models_do_not_take_the_variants():
    for cls in (rf.GRU, rf.RNN):
        with pytest.raises(TypeError):
            cls(2, 3, peephole=True)
        assert cls(2, 3).clip is None and not cls(2, 3).peephole
    plain = rf.LSTM(2, 3)
    assert (plain.peephole, plain.input_forget, plain.clip) == (False, False, None)
    assert "peephole" not in repr(plain) and "clip" not in repr(plain)
    assert not any("peephole" in k for k in plain.state_dict())


def test_core_refuses_inconsistent_descriptors():
    base = (2, 0, 3, 2, 4, 5, 1, 1, 1)  # LSTM float32 T=3 B=2 I=4 H=5
    assert _core.core_param_count(base + (1, 0, 0.0)) == \
        _core.core_param_count(base + (0, 0, 0.0)) + 15
    for variant in ((0, 0, -1.0), (0, 0, float("nan")), (2, 0, 0.0), (0, 2, 0.0)):
        with pytest.raises(ValueError, match="descriptor"):
            _core.core_param_count(base + variant)
    gru = (3,) + base[1:]
    for variant in ((1, 0, 0.0), (0, 1, 0.0)):  # clip: any cell (test_clip_cells.py)
        with pytest.raises(ValueError, match="LSTM options"):
            _core.core_param_count(gru + variant)


def test_to_torch_refuses_and_from_torch_is_unaffected():
    for kw in (dict(peephole=True), dict(input_forget=True), dict(clip=1.0)):
        with pytest.raises(ValueError, match="torch.nn.LSTM"):
            rf.to_torch(rf.LSTM(2, 3, **kw))
    m = rf.from_torch(torch.nn.LSTM(2, 3))
    assert (m.peephole, m.input_forget, m.clip) == (False, False, None)
