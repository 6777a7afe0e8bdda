"""pytest-benchmark harness over the same shapes and frameworks as `rnnfast bench`.

Not part of the test suite (tests/ is); run it with

    pip install ".[bench]"
    pytest bench/ --benchmark-group-by=param:shape --benchmark-columns=median,iqr,rounds

Each shape is one benchmark group with one entry per framework (rnnfast, torch, ort), so
pytest-benchmark's table puts the peers side by side; `--benchmark-json` keeps the numbers for
`pytest-benchmark compare`. Select sets with `-k`, e.g. `-k latency`.
"""
import numpy as np
import pytest

import rnnfast as rf
from rnnfast import benchmark as B

THREADS = rf.get_num_threads()
PEERS = B._peers(THREADS)
CASES = [(set_name, s) for set_name, shapes in B.shape_sets().items() for s in shapes]


@pytest.mark.parametrize("framework", ["rnnfast", "torch", "ort"])
@pytest.mark.parametrize("set_name,shape", CASES,
                         ids=[f"{n}:{B.shape_label(s)}:{s['mode']}".replace(" ", "_")
                              for n, s in CASES])
def test_rnn(benchmark, set_name, shape, framework):
    if framework != "rnnfast" and framework not in PEERS:
        pytest.skip(f"{framework} is not installed")
    calls, check = B._callables(shape, PEERS, THREADS, np.random.default_rng(0))
    if framework not in calls:
        pytest.skip(f"{framework} has no {shape['mode']} path")
    for peer, err in check.items():
        assert err < 1e-3, f"{peer} disagrees with rnnfast by {err}"
    benchmark.extra_info.update(shape=B.shape_label(shape), mode=shape["mode"], set=set_name,
                                gflop=B.flops(shape) / 1e9, threads=THREADS)
    benchmark.pedantic(calls[framework], rounds=7, iterations=1, warmup_rounds=1)
