"""The float32 activations of the gate loops (csrc/activations.h) against float64 references over
a sweep of float32 bit patterns that covers every exponent: the error bounds stated there hold,
|tanh| never exceeds 1, sigmoid stays in [0, 1], NaN propagates. Run on every kernel path the CPU
has, since each compiles the activations with its own instructions."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from rnnfast import _core

# Bounds stated in csrc/activations.h (measured: exp 2.1e-7, sigmoid 2.4e-7, tanh abs 1.9e-7).
EXP_REL, SIG_REL, TANH_ABS, TANH_REL = 2.4e-7, 4.8e-7, 2.4e-7, 1e-6


def _sweep(stride=257):
    bits = np.arange(0, 1 << 32, stride, dtype=np.uint64).astype(np.uint32)
    x = bits.view(np.float32)
    return x[np.isfinite(x)]


def _apply(which, x):
    y = np.empty_like(x)
    _core.core_activation(which, x, y)
    return y


def check_bounds():
    x = _sweep()
    xd = x.astype(np.float64)
    with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
        inr = (xd > -87.3) & (xd < 88.3)
        e = _apply(2, x).astype(np.float64)
        ref = np.exp(xd[inr])
        assert np.max(np.abs(e[inr] - ref) / ref) <= EXP_REL

        s = _apply(0, x).astype(np.float64)
        sref = 1.0 / (1.0 + np.exp(-xd))
        assert s.min() >= 0.0 and s.max() <= 1.0
        big = sref > 1e-37
        assert np.max(np.abs(s[big] - sref[big]) / sref[big]) <= SIG_REL

        t = _apply(1, x).astype(np.float64)
        tref = np.tanh(xd)
        assert np.max(np.abs(t)) <= 1.0
        assert np.max(np.abs(t - tref)) <= TANH_ABS
        nz = np.abs(tref) > 1e-30
        assert np.max(np.abs(t[nz] - tref[nz]) / np.abs(tref[nz])) <= TANH_REL
        assert np.all(np.sign(t[nz]) == np.sign(tref[nz]))
    for which in (0, 1, 2):
        out = _apply(which, np.array([np.nan, np.inf, -np.inf], np.float32))
        assert np.isnan(out[0])
    assert _apply(1, np.array([np.inf, -np.inf], np.float32)).tolist() == [1.0, -1.0]
    s_inf = _apply(0, np.array([np.inf, -np.inf], np.float32))
    assert s_inf[0] == 1.0 and 0.0 <= s_inf[1] < 1e-37  # exp saturates, so sigmoid(-inf) ~ 5e-39


def test_activation_bounds_on_active_path():
    check_bounds()


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_activation_bounds_on_every_path(isa):
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    if isa != "generic" and (isa == "avx2" and "avx2" not in flags or
                             isa == "avx512" and "avx512f" not in flags):
        pytest.skip(f"this CPU has no {isa}")
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
        import rnnfast as rf
        assert rf.build_info()["isa"] == {isa!r}
        import test_activations; test_activations.check_bounds(); print("ok")
    """)
    res = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, RNNFAST_ISA=isa),
                         capture_output=True, text=True, timeout=300, cwd="/")
    assert res.returncode == 0 and res.stdout.strip().endswith("ok"), res.stderr[-2000:]
