"""GRU(linear_before_reset=False): the GRU form whose reset gate scales the state BEFORE the
recurrent product of the candidate (ONNX's default linear_before_reset=0, Keras reset_after=False):

    r = sigmoid(W_ir x + b_ir + W_hr h + b_hr),  z = sigmoid(W_iz x + b_iz + W_hz h + b_hz)
    n = tanh(W_in x + b_in + W_hn (r * h) + b_hn),  h' = (1 - z) n + z h

PyTorch has no such module, so the oracles are a numpy transcription of these equations written
here (float64 1e-12, float32 1e-5), float64 central finite differences for every gradient, and
(in test_onnx.py / test_keras.py) onnx.reference, onnxruntime and Keras' formulas.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import rnnfast as rf
from conftest import assert_all_close, central_diff, rel_err


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def reference(model, x, h0=None, lengths=None, masks=None):
    """numpy float64 forward of a GRU(linear_before_reset=False) on its own weights.

    x time-major (T, B, I); h0 (L*D, B, H) or None; lengths (B,) or None (padded steps output
    zero and carry the state); masks: dropout multipliers (L-1, T, B, D*H) applied to the output
    of every layer but the last. Returns y (T, B, D*H) and h_n (L*D, B, H).
    """
    sd = {k: np.asarray(v, np.float64) for k, v in model.state_dict().items()}
    T, B, _ = x.shape
    H, D = model.hidden_size, model.num_directions
    inp, hn = np.asarray(x, np.float64), []
    active = np.ones((T, B), bool) if lengths is None else \
        np.arange(T)[:, None] < np.asarray(lengths)[None, :]
    for layer in range(model.num_layers):
        outs = []
        for d in range(D):
            sfx = f"l{layer}" + ("_reverse" if d else "")
            Wi, Wh = sd["weight_ih_" + sfx], sd["weight_hh_" + sfx]
            bi = sd.get("bias_ih_" + sfx, np.zeros(3 * H))
            bh = sd.get("bias_hh_" + sfx, np.zeros(3 * H))
            h = np.zeros((B, H)) if h0 is None else np.array(h0[layer * D + d], np.float64)
            y = np.zeros((T, B, H))
            for t in (range(T - 1, -1, -1) if d else range(T)):
                gx = inp[t] @ Wi.T + bi
                r = _sigmoid(gx[:, :H] + h @ Wh[:H].T + bh[:H])
                z = _sigmoid(gx[:, H:2 * H] + h @ Wh[H:2 * H].T + bh[H:2 * H])
                n = np.tanh(gx[:, 2 * H:] + (r * h) @ Wh[2 * H:].T + bh[2 * H:])
                h_new = (1 - z) * n + z * h
                a = active[t][:, None]
                h = np.where(a, h_new, h)
                y[t] = np.where(a, h_new, 0.0)
            outs.append(y)
            hn.append(h)
        inp = np.concatenate(outs, axis=2)
        if masks is not None and layer < model.num_layers - 1:
            inp = inp * masks[layer]
    return inp, np.stack(hn)


def _model(I, H, L=1, bidir=False, dtype="float64", seed=0, **kw):
    return rf.GRU(I, H, num_layers=L, bidirectional=bidir, dtype=dtype, seed=seed,
                  linear_before_reset=False, **kw)


# ----------------------------------------------------------------------------------- forward
FWD_CASES = [
    dict(L=1, bidir=False, lengths=None, h0=False, bias=True, bf=False),
    dict(L=1, bidir=True, lengths=[7, 2, 5, 1], h0=True, bias=True, bf=True),
    dict(L=2, bidir=True, lengths=None, h0=True, bias=False, bf=False),
    dict(L=3, bidir=False, lengths=[3, 7, 1, 6], h0=True, bias=True, bf=False),
    dict(L=2, bidir=True, lengths=[1, 7, 4, 7], h0=False, bias=True, bf=True),
]


@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("case", FWD_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("H", [5, 70])  # 70: several unit blocks and a partial one on every path
def test_forward_matches_numpy_reference(case, dtype, tol, H):
    rng = np.random.default_rng(H + len(str(case)))
    T, B, I = 7, 4, 6
    D = 2 if case["bidir"] else 1
    m = _model(I, H, case["L"], case["bidir"], dtype, seed=1, bias=case["bias"],
               batch_first=case["bf"])
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = (0.5 * rng.standard_normal((case["L"] * D, B, H))).astype(dtype) if case["h0"] else None
    y_ref, h_ref = reference(m, x, h0, case["lengths"])
    xin = x.transpose(1, 0, 2) if case["bf"] else x
    for train in (False, True):
        y, h, _ = m.forward(xin, h0, lengths=case["lengths"], train=train)
        y = y.transpose(1, 0, 2) if case["bf"] else y
        assert y.dtype == np.dtype(dtype)
        assert rel_err(y, y_ref) <= tol, (train, rel_err(y, y_ref))
        assert rel_err(h, h_ref) <= tol, (train, rel_err(h, h_ref))
    if case["lengths"] is not None:
        pad = np.arange(T)[:, None] >= np.asarray(case["lengths"])[None, :]
        assert np.all(y[pad] == 0)


def test_differs_from_the_pytorch_form_on_the_same_weights():
    # the test above could pass with the wrong cell only if the two forms agreed: they do not
    rng = np.random.default_rng(0)
    a = _model(4, 6, seed=3)
    b = rf.GRU(4, 6, dtype="float64", seed=3)
    b.load_state_dict(a.state_dict())
    x = rng.standard_normal((5, 2, 4))
    assert np.max(np.abs(a(x)[0] - b(x)[0])) > 1e-2
    assert rel_err(b(x)[0], reference(a, x)[0]) > 1e-3


# ---------------------------------------------------------------------- finite differences
EPS, FD_TOL = 1e-6, 1e-6
T_, B_, I_, H_ = 3, 3, 3, 4
FD_CASES = [
    dict(L=1, bidir=False, lengths=None, bias=True, bf=False),
    dict(L=1, bidir=True, lengths=[3, 1, 2], bias=True, bf=True),
    dict(L=2, bidir=False, lengths=[2, 3, 1], bias=False, bf=False),
    dict(L=2, bidir=True, lengths=None, bias=True, bf=False),
    dict(L=2, bidir=True, lengths=[1, 3, 3], bias=True, bf=True),
]


def _central(arr, f):
    return central_diff(arr, f, EPS)


@pytest.mark.parametrize("case", FD_CASES, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
def test_gradients_match_finite_differences(case):
    rng = np.random.default_rng(11 + FD_CASES.index(case))
    D = 2 if case["bidir"] else 1
    m = _model(I_, H_, case["L"], case["bidir"], seed=5, bias=case["bias"], batch_first=case["bf"])
    x = rng.standard_normal((B_, T_, I_) if case["bf"] else (T_, B_, I_))
    h0 = 0.5 * rng.standard_normal((case["L"] * D, B_, H_))
    ry = rng.standard_normal((B_, T_, D * H_) if case["bf"] else (T_, B_, D * H_))
    rh = rng.standard_normal(h0.shape)
    lens = case["lengths"]

    m.zero_grad()
    _, _, tape = m.forward(x, h0, lengths=lens, train=True)
    dx, dh0 = m.backward(tape, ry, rh)
    ana = {"dx": dx, "dh0": dh0, **{"grad:" + k: np.array(v) for k, v in m.named_grads()}}

    sd = {k: np.array(v) for k, v in m.state_dict().items()}
    xx, hh = x.copy(), h0.copy()

    def loss():
        m.load_state_dict(sd)
        y, hn = m(xx, hh, lengths=lens)
        return float(np.sum(y * ry) + np.sum(hn * rh))

    num = {"dx": _central(xx, loss), "dh0": _central(hh, loss)}
    for k in list(sd):
        num["grad:" + k] = _central(sd[k], loss)
    assert_all_close(ana, num, FD_TOL, f"reset-before GRU {case}")
    assert np.max(np.abs(ana["dx"])) > 1e-3
    for k, v in ana.items():  # every gradient is exercised, none trivially zero
        assert np.max(np.abs(v)) > 1e-4, k


def test_dropout_forward_and_gradients():
    # dropout masks come from the model's generator: a model rebuilt from the same seed draws the
    # same mask, which holds the mask fixed across the finite-difference evaluations
    rng = np.random.default_rng(21)
    L, D = 2, 2
    x = rng.standard_normal((T_, B_, I_))
    ry = rng.standard_normal((T_, B_, D * H_))

    def fresh():
        return _model(I_, H_, L, True, seed=9, dropout=0.5)

    m = fresh()
    y, _, tape = m.forward(x, train=True)
    assert tape.mask is not None and np.any(tape.mask == 0)
    assert rel_err(y, reference(m, x, masks=tape.mask)[0]) <= 1e-12
    dx, _ = m.backward(tape, ry)
    ana = {"dx": dx, **{"grad:" + k: np.array(v) for k, v in m.named_grads()}}
    sd = {k: np.array(v) for k, v in m.state_dict().items()}
    xx = x.copy()

    def loss():
        mm = fresh()
        mm.load_state_dict(sd)
        return float(np.sum(mm.forward(xx, train=True)[0] * ry))

    num = {"dx": _central(xx, loss)}
    for k in list(sd):
        num["grad:" + k] = _central(sd[k], loss)
    assert_all_close(ana, num, FD_TOL, "reset-before GRU with dropout")


# ------------------------------------------------------------------------------ threads
@pytest.mark.parametrize("ragged", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_bitwise_identical_across_thread_counts(dtype, ragged, restore_threads):
    rng = np.random.default_rng(7)
    T, B, I, H, L = 9, 9, 11, 150, 2
    m = _model(I, H, L, True, dtype, seed=2)
    x = rng.standard_normal((T, B, I)).astype(dtype)
    h0 = rng.standard_normal((2 * L, B, H)).astype(dtype)
    ry = rng.standard_normal((T, B, 2 * H)).astype(dtype)
    rh = rng.standard_normal((2 * L, B, H)).astype(dtype)
    lens = rng.integers(1, T + 1, B) if ragged else None
    runs = {}
    for n in (1, 2, 3):
        rf.set_num_threads(n)
        assert rf._core.core_threads_for_call(m._desc(T, B)) == n  # really n threads
        y_inf, h_inf = m(x, h0, lengths=lens)
        m.zero_grad()
        y, h, tape = m.forward(x, h0, lengths=lens, train=True)
        dx, dh0 = m.backward(tape, ry, rh)
        runs[n] = [y_inf, h_inf, y, h, dx, dh0, m.grads.copy()]
    for n in (2, 3):
        same = [np.array_equal(a, b) for a, b in zip(runs[1], runs[n])]
        assert all(same), f"{n} threads differ from 1 in outputs {same}"


# ------------------------------------------------------------------------- kernel paths
_CHILD = textwrap.dedent(r"""
    import json, sys
    import numpy as np
    import rnnfast as rf
    sys.path.insert(0, sys.argv[1])
    from test_gru_reset_before import reference
    out = {"isa": rf.build_info()["isa"], "err": {}}
    rng = np.random.default_rng(0)
    for dt in ("float64", "float32"):
        T, B, I, H = 7, 11, 37, 45   # odd sizes: partial tiles and panels on every path
        m = rf.GRU(I, H, num_layers=2, bidirectional=True, dtype=dt, seed=1,
                   linear_before_reset=False)
        x = rng.standard_normal((T, B, I)).astype(dt)
        lens = rng.integers(1, T + 1, B)
        y, h = m(x, lengths=lens)
        yr, hr = reference(m, x, lengths=lens)
        err = max(float(np.abs(y - yr).max() / np.abs(yr).max()),
                  float(np.abs(h - hr).max() / np.abs(hr).max()))
        out["err"][dt] = err
    print(json.dumps(out))
""")


def _paths():
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    return ["generic"] + (["avx2"] if "avx2" in flags and "fma" in flags else []) + \
        (["avx512"] if "avx512f" in flags else [])


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_kernel_path_matches_reference(isa):
    if isa not in _paths():
        pytest.skip(f"this CPU has no {isa}")
    here = os.path.dirname(os.path.abspath(__file__))
    res = subprocess.run([sys.executable, "-c", _CHILD, here], capture_output=True, text=True,
                         env=dict(os.environ, RNNFAST_ISA=isa), timeout=300, cwd=here)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["isa"] == isa
    assert out["err"]["float64"] <= 1e-12, out
    assert out["err"]["float32"] <= 1e-5, out


# ------------------------------------------------------------------------------- stream
@pytest.mark.parametrize("dtype,tol", [("float64", 1e-12), ("float32", 1e-5)])
@pytest.mark.parametrize("chunks", [[1] * 9, [4, 1, 4], [2, 3, 4]])
def test_stream_chunks_equal_full_call(dtype, tol, chunks):
    rng = np.random.default_rng(3)
    m = _model(5, 19, 2, False, dtype, seed=1)
    x = rng.standard_normal((9, 3, 5)).astype(dtype)
    y_full, h_full = m(x)
    s = m.stream(batch=3)
    ys, t = [], 0
    for c in chunks:
        ys.append(s.step(x[t]).copy()[None] if c == 1 else s.feed(x[t:t + c]))
        t += c
    assert rel_err(np.concatenate(ys), y_full) <= tol
    assert rel_err(s.state, h_full) <= tol


# ---------------------------------------------------------------------- API and save/load
def test_flag_is_validated_and_shown():
    assert rf.GRU(3, 4).linear_before_reset is True
    m = _model(3, 4)
    assert m.linear_before_reset is False
    assert "linear_before_reset=False" in repr(m)
    assert "linear_before_reset" not in repr(rf.GRU(3, 4))
    for bad in ("no", 0, 1, None):
        with pytest.raises(TypeError, match="linear_before_reset must be a bool"):
            rf.GRU(3, 4, linear_before_reset=bad)
    with pytest.raises(TypeError):
        rf.LSTM(3, 4, linear_before_reset=False)  # only the GRU has two forms
    # same parameters, names and layout as the PyTorch-form GRU
    a, b = _model(3, 4, 2, True), rf.GRU(3, 4, num_layers=2, bidirectional=True)
    assert [(k, v.shape) for k, v in a.state_dict().items()] == \
        [(k, v.shape) for k, v in b.state_dict().items()]


def test_save_load_round_trip(tmp_path):
    pytest.importorskip("safetensors")
    rng = np.random.default_rng(4)
    m = _model(3, 5, 2, True, "float32", seed=8, batch_first=True)
    path = tmp_path / "g.safetensors"
    rf.save(m, path)
    back = rf.load(path)
    assert isinstance(back, rf.GRU) and back.linear_before_reset is False
    x = rng.standard_normal((2, 6, 3)).astype(np.float32)
    for a, b in zip(m(x), back(x)):
        np.testing.assert_array_equal(a, b)
    # the PyTorch form keeps saying so
    rf.save(rf.GRU(3, 5), path)
    assert rf.load(path).linear_before_reset is True


def _rewrite_meta(path, edit):
    import safetensors.numpy

    with open(path, "rb") as f:
        data = f.read()
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + n])
    meta = json.loads(header["__metadata__"]["rnnfast"])
    edit(meta)
    tensors = safetensors.numpy.load(data)
    safetensors.numpy.save_file(tensors, str(path),
                                metadata={"rnnfast": json.dumps(meta, sort_keys=True)})


def test_load_checks_the_flag_in_metadata(tmp_path):
    pytest.importorskip("safetensors")
    path = tmp_path / "g.safetensors"
    rf.save(_model(3, 5), path)
    _rewrite_meta(path, lambda m: m.update(linear_before_reset="no"))
    with pytest.raises(ValueError, match="linear_before_reset"):
        rf.load(path)
    # a file written before the flag existed (no key) is PyTorch's form
    _rewrite_meta(path, lambda m: m.pop("linear_before_reset"))
    assert rf.load(path).linear_before_reset is True
    rf.save(rf.LSTM(3, 5), path)
    _rewrite_meta(path, lambda m: m.update(linear_before_reset=False))
    with pytest.raises(ValueError, match="only a GRU"):
        rf.load(path)


def test_sequence_model_save_load(tmp_path):
    pytest.importorskip("safetensors")
    model = rf.SequenceModel(_model(4, 6, seed=2, batch_first=True),
                             head=rf.Linear(6, 3, dtype="float64"))
    path = tmp_path / "s.safetensors"
    rf.save(model, path)
    back = rf.load(path)
    assert back.rnn.linear_before_reset is False
    x = np.random.default_rng(0).standard_normal((2, 5, 4))
    np.testing.assert_array_equal(model(x)[0], back(x)[0])


def test_to_torch_refuses_with_a_clear_error():
    with pytest.raises(ValueError, match="linear_before_reset=False"):
        rf.to_torch(_model(3, 4))
