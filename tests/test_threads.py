"""Thread-count independence: results must be bit-identical for any number of
threads (np.array_equal, not allclose), plus the thread-count API."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch  # noqa: F401  (the oracle must be importable; see conftest)

import rnnfast as rf
from rnnfast import _core
from conftest import CELLS, NP_DTYPES, is_lstm, make_data, ragged_lengths, rf_model

T, B, I, H, L = 13, 9, 11, 67, 2
THREAD_COUNTS = (1, 2, 3)


def _everything(m, cell, x, hx, lengths, ry, rh, rc):
    """All forward outputs and gradients of one model, copied out."""
    out = {}
    y, st = m(x, hx=hx, lengths=lengths)
    out["infer:y"] = np.array(y, copy=True)
    if is_lstm(cell):
        out["infer:h_n"], out["infer:c_n"] = np.array(st[0]), np.array(st[1])
    else:
        out["infer:h_n"] = np.array(st)
    m.zero_grad()
    y, st, tape = m.forward(x, hx=hx, lengths=lengths, train=True)
    out["y"] = np.array(y, copy=True)
    if is_lstm(cell):
        out["h_n"], out["c_n"] = np.array(st[0]), np.array(st[1])
        dx, dhx = m.backward(tape, ry, (rh, rc))
        out["dh0"], out["dc0"] = np.array(dhx[0]), np.array(dhx[1])
    else:
        out["h_n"] = np.array(st)
        dx, dhx = m.backward(tape, ry, rh)
        out["dh0"] = np.array(dhx)
    out["dx"] = np.array(dx)
    for name, g in m.named_grads():
        out["grad:" + name] = np.array(g, copy=True)
    out["grads_flat"] = np.array(m.grads, copy=True)
    return out


def _assert_bitwise(a, b, ctx):
    assert set(a) == set(b)
    diff = [k for k in sorted(a)
            if a[k].shape != b[k].shape or a[k].dtype != b[k].dtype
            or not np.array_equal(a[k], b[k])]
    assert not diff, f"{ctx}: results differ bitwise for {diff}"


@pytest.mark.parametrize("ragged", [True, False])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell", CELLS)
def test_bitwise_identical_across_thread_counts(cell, dtype, ragged, restore_threads):
    seed = 300 + CELLS.index(cell)
    rng = np.random.default_rng(seed)
    bf = not ragged  # cover both layouts
    m = rf_model(cell, I, H, L, batch_first=bf, bidirectional=True, dtype=dtype, seed=seed)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, True, bf, dtype)
    lengths = ragged_lengths(rng, B, T) if ragged else None

    results = {}
    for n in THREAD_COUNTS:
        rf.set_num_threads(n)
        assert rf.get_num_threads() == n or n > 2
        results[n] = _everything(m, cell, x, hx, lengths, ry, rh, rc)
    # sanity: something real was computed
    assert np.any(results[1]["dx"] != 0) and np.all(np.isfinite(results[1]["y"]))
    for n in THREAD_COUNTS[1:]:
        _assert_bitwise(results[1], results[n], f"{cell} {dtype} ragged={ragged} 1 vs {n} threads")
    # and running again with the same thread count is reproducible
    rf.set_num_threads(2)
    _assert_bitwise(results[2], _everything(m, cell, x, hx, lengths, ry, rh, rc),
                    f"{cell} {dtype} repeat at 2 threads")


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("cell,hidden", [("lstm", 131), ("gru", 175), ("rnn_tanh", 530)])
def test_bitwise_identical_large_shapes(cell, hidden, dtype, restore_threads):
    """Sizes past GEMM blocking (depth > 256, gate rows > 512, T*B > 96)."""
    Tn, Bn, In, Ln = 20, 6, 300, 2
    rng = np.random.default_rng(17)
    m = rf_model(cell, In, hidden, Ln, bidirectional=True, dtype=dtype, seed=17)
    x, hx, ry, rh, rc = make_data(rng, cell, Tn, Bn, In, hidden, Ln, True, False, dtype)
    lengths = ragged_lengths(rng, Bn, Tn)
    results = {}
    for n in THREAD_COUNTS:
        rf.set_num_threads(n)
        results[n] = _everything(m, cell, x, hx, lengths, ry, rh, rc)
    for n in THREAD_COUNTS[1:]:
        _assert_bitwise(results[1], results[n], f"{cell} {dtype} large, 1 vs {n} threads")


@pytest.mark.parametrize("cell", CELLS)
def test_dropout_masks_independent_of_threads(cell, restore_threads):
    rng = np.random.default_rng(5)
    x, hx, ry, rh, rc = make_data(rng, cell, T, B, I, H, L, True, False, "float64")
    lengths = ragged_lengths(rng, B, T)
    outs = []
    for n in (1, 2, 3):
        rf.set_num_threads(n)
        m = rf_model(cell, I, H, L, dropout=0.4, bidirectional=True, dtype="float64", seed=8)
        m.zero_grad()
        y, _, tape = m.forward(x, hx=hx, lengths=lengths, train=True)
        dx, _ = m.backward(tape, ry, (rh, rc) if is_lstm(cell) else rh)
        outs.append((np.array(y), np.array(dx), np.array(m.grads, copy=True)))
    for n, other in zip((2, 3), outs[1:]):
        for a, b, what in zip(outs[0], other, ("y", "dx", "grads")):
            assert np.array_equal(a, b), f"{cell} dropout {what} differs between 1 and {n} threads"


def test_num_threads_api(restore_threads):
    before = restore_threads
    assert isinstance(before, int) and before >= 1
    for n in (1, 2, 1):
        rf.set_num_threads(n)
        got = rf.get_num_threads()
        assert isinstance(got, int)
        assert got == n
    with pytest.raises(ValueError):
        rf.set_num_threads(0)
    assert rf.get_num_threads() == 1, "a rejected call must not change the setting"
    for bad in (1.5, "2", None):
        with pytest.raises((ValueError, TypeError)):
            rf.set_num_threads(bad)
    assert rf.get_num_threads() == 1
    # -1 ("all cores") may be accepted; if so the result is a positive count
    try:
        rf.set_num_threads(-1)
    except ValueError:
        pass
    else:
        assert rf.get_num_threads() >= 1


def test_team_capped_at_256_threads(restore_threads):
    """A call never runs more threads than the time loop's scheduler has counters for (256), even
    when more are asked for and the model has more unit blocks than that (hidden > 8192)."""
    m = rf.RNN(4, 16)
    desc = m._desc(2, 1)
    for hidden, want in ((8192 + 32, 256), (8192, 256), (4096, 128)):
        big = desc[:5] + (hidden,) + desc[6:]  # (cell, dtype, T, B, input, hidden, ...)
        rf.set_num_threads(4096)
        assert _core.core_threads_for_call(big) == want
        rf.set_num_threads(3)
        assert _core.core_threads_for_call(big) == 3


def _cpu_is_amd_family_19h():
    """AMD family 19h (Zen 3/4; with AVX-512, Zen 4) from /proc/cpuinfo; None where unreadable."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in text.splitlines()[:30] if ":" in line)
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    if "vendor_id" not in fields or "cpu family" not in fields:
        return None
    return fields["vendor_id"] == "AuthenticAMD" and int(fields["cpu family"]) == 0x19


def test_wide_fma_follows_the_path_and_the_cpu():
    """Full-rate FMAs only on the AVX-512 path, and not on Zen 4 (AMD family 19h), whose 512-bit
    FMAs issue as two halves; AVX2 and generic are never wide."""
    info = rf.build_info()
    assert isinstance(info["wide_fma"], bool)
    if info["isa"] != "avx512":
        assert info["wide_fma"] is False
    elif _cpu_is_amd_family_19h() is not None:
        assert info["wide_fma"] is (not _cpu_is_amd_family_19h())
    code = "import rnnfast as rf; i = rf.build_info(); print(i['isa'], i['wide_fma'])"
    for isa in ("avx2", "generic"):
        res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             env={**os.environ, "RNNFAST_ISA": isa}, timeout=120,
                             cwd=os.path.dirname(__file__))
        assert res.returncode == 0, res.stderr
        got_isa, wide = res.stdout.split()
        if got_isa == isa:  # the CPU has it
            assert wide == "False"


def test_team_size_thresholds(restore_threads):
    """How much work a call needs per thread (threads_for in csrc/geometry.h): per step and, with
    narrow FMAs, per call. Batch-1 LSTM H64 (32768 recurrent flops a step): 100 steps on 2
    threads only with narrow FMAs; 1-2 steps on one thread either way. LSTM H128 (131072 a
    step) takes 2 threads from one step on."""
    wide = rf.build_info()["wide_fma"]
    rf.set_num_threads(2)
    if _core.core_get_num_threads() != 2:
        pytest.skip("no OpenMP")
    small, big = rf.LSTM(64, 64), rf.LSTM(128, 128)
    assert _core.core_threads_for_call(small._desc(100, 1)) == (1 if wide else 2)
    assert _core.core_threads_for_call(small._desc(1, 1)) == 1
    assert _core.core_threads_for_call(small._desc(2, 1)) == 1
    assert _core.core_threads_for_call(big._desc(1, 1)) == 2
    rnn = rf.RNN(32, 32)  # 2048 flops a step: one thread whatever the length
    assert _core.core_threads_for_call(rnn._desc(1000, 1)) == 1
    rf.set_num_threads(1)
    assert _core.core_threads_for_call(big._desc(100, 64)) == 1


def test_build_info():
    info = rf.build_info()
    assert isinstance(info, dict)
    assert len(info) > 0


def test_models_share_thread_setting(restore_threads):
    """The thread count is global: a model built earlier follows later calls
    and its results stay bit-identical."""
    rng = np.random.default_rng(1)
    m = rf_model("lstm", I, H, 1, dtype="float32", seed=1)
    x = rng.standard_normal((T, B, I)).astype(NP_DTYPES["float32"])
    rf.set_num_threads(1)
    y1, _ = m(x)
    rf.set_num_threads(2)
    assert rf.get_num_threads() == 2
    y2, _ = m(x)
    assert np.array_equal(y1, y2)


def test_floating_point_environment_untouched(restore_threads):
    """Whatever the kernels do with denormal modes inside a call, the calling
    thread must get its floating-point environment back (numpy keeps
    producing float32 and float64 subnormals)."""
    def subnormals_work():
        a = np.array([1e-38], dtype=np.float32) * np.float32(1e-3)
        b = np.array([1e-300]) * 1e-10
        return a[0] != 0 and b[0] != 0

    assert subnormals_work()
    rng = np.random.default_rng(2)
    for dtype in ("float32", "float64"):
        for n in (1, 2):
            rf.set_num_threads(n)
            for cell in CELLS:
                m = rf_model(cell, 4, 6, 2, bidirectional=True, dtype=dtype, seed=2)
                x = rng.standard_normal((5, 3, 4)).astype(NP_DTYPES[dtype])
                m(x)
                assert subnormals_work(), f"{cell} {dtype} inference left FTZ/DAZ on"
                y, _, tape = m.forward(x, train=True)
                m.backward(tape, np.ones_like(y), None)
                assert subnormals_work(), f"{cell} {dtype} training left FTZ/DAZ on"


_SHORT_TEAM_CHILD = r"""
import sys, numpy as np, rnnfast as rf
rf.set_num_threads(3)
rng = np.random.default_rng(0)
out = {}
for name, cls in (("lstm", rf.LSTM), ("gru", rf.GRU)):
    for B, T in ((1, 6), (4, 5), (32, 3)):
        m = cls(24, 128, seed=1)
        x = rng.standard_normal((T, B, 24)).astype(np.float32)
        out[f"{name}{B}:infer"] = m(x)[0]
        y, _, tape = m.forward(x, train=True)
        out[f"{name}{B}:dx"] = m.backward(tape, np.ones_like(y))[0]
        out[f"{name}{B}:grads"] = m.grads.copy()
np.savez(sys.argv[1], **out)
"""


@pytest.mark.parametrize("limit", ["1", "2"])
def test_fewer_threads_granted_than_asked(tmp_path, limit):
    """OpenMP may grant a region fewer threads than asked for (here OMP_THREAD_LIMIT caps the 3
    asked for): the barrier and the step scheduler are then sized from the team that runs, and the
    results are those of a full team, bit for bit."""
    import os
    import subprocess
    import sys

    files = {}
    for key, env in (("capped", {"OMP_THREAD_LIMIT": limit}), ("free", {})):
        path = tmp_path / f"{key}.npz"
        full_env = {k: v for k, v in os.environ.items() if k != "OMP_THREAD_LIMIT"}
        full_env.update(env)
        # cwd away from the checkout, whose unbuilt rnnfast/ would shadow the installed one
        res = subprocess.run([sys.executable, "-c", _SHORT_TEAM_CHILD, str(path)], env=full_env,
                             capture_output=True, text=True, timeout=120, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        files[key] = np.load(path)
    assert sorted(files["capped"].files) == sorted(files["free"].files)
    for k in files["free"].files:
        np.testing.assert_array_equal(files["capped"][k], files["free"][k], err_msg=k)
