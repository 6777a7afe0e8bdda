"""Every micro-kernel path this CPU supports, forced through RNNFAST_ISA, gives PyTorch's numbers;
OMP_NUM_THREADS sets the default thread count. Each case runs in a fresh interpreter because the
path and the OpenMP default are fixed at import."""
import json
import os
import subprocess
import sys
import textwrap

import pytest

import rnnfast as rf

_CHILD = textwrap.dedent(r"""
    import json, sys
    import numpy as np, torch
    import rnnfast as rf

    def rel(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))

    out = {"isa": rf.build_info()["isa"], "threads": rf.get_num_threads(), "err": {}}
    rng = np.random.default_rng(0)
    for name, cls, tcls in [("lstm", rf.LSTM, torch.nn.LSTM), ("gru", rf.GRU, torch.nn.GRU),
                            ("rnn", rf.RNN, torch.nn.RNN)]:
        for dt, tdt in [("float64", torch.float64), ("float32", torch.float32)]:
            torch.manual_seed(0)
            T, B, I, H = 7, 11, 37, 45   # odd sizes: partial tiles and panels on every path
            tm = tcls(I, H, num_layers=2, bidirectional=True, dtype=tdt)
            m = cls(I, H, num_layers=2, bidirectional=True, dtype=dt)
            m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
            x = rng.standard_normal((T, B, I)).astype(dt)
            xt = torch.tensor(x, requires_grad=True)
            yt, _ = tm(xt)
            ry = rng.standard_normal(yt.shape).astype(dt)
            (yt * torch.tensor(ry)).sum().backward()
            y, _, tape = m.forward(x)
            dx, _ = m.backward(tape, ry)
            g = dict(m.named_grads())
            errs = [rel(y, yt.detach()), rel(dx, xt.grad)]
            errs += [rel(g[n], p.grad) for n, p in tm.named_parameters()]
            out["err"][name + "_" + dt] = max(errs)
    print(json.dumps(out))
""")


def _run_child(env_extra):
    env = dict(os.environ)
    env.update(env_extra)
    res = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True,
                         timeout=300, cwd=os.path.dirname(__file__))
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


def _supported_paths():
    flags = open("/proc/cpuinfo").read().split() if os.path.exists("/proc/cpuinfo") else []
    paths = ["generic"]
    if "avx2" in flags and "fma" in flags:
        paths.append("avx2")
    if "avx512f" in flags:
        paths.append("avx512")
    return paths


@pytest.mark.parametrize("isa", ["generic", "avx2", "avx512"])
def test_every_kernel_path_matches_torch(isa):
    if isa not in _supported_paths():
        pytest.skip(f"this CPU has no {isa}")
    out = _run_child({"RNNFAST_ISA": isa})
    assert out["isa"] == isa
    for key, err in out["err"].items():
        tol = 1e-10 if key.endswith("float64") else 1e-4
        assert err <= tol, f"{isa} {key}: relative error {err:.3g} > {tol}"


def test_unavailable_isa_warns_and_falls_back():
    env = dict(os.environ, RNNFAST_ISA="no-such-isa")
    res = subprocess.run([sys.executable, "-c", "import rnnfast as rf; print(rf.build_info()['isa'])"],
                         env=env, capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(__file__))
    assert res.returncode == 0, res.stderr
    assert "RNNFAST_ISA='no-such-isa' is not available" in res.stderr
    assert res.stdout.strip() in ("generic", "avx2", "avx512")


def test_omp_num_threads_sets_default():
    if not rf.build_info()["openmp"]:
        pytest.skip("built without OpenMP")
    out = _run_child({"OMP_NUM_THREADS": "3", "RNNFAST_ISA": ""})
    assert out["threads"] == 3
