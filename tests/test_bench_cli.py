"""`rnnfast bench` end to end on two tiny shapes: the table, the JSON, the derived columns, and the
outputs cross-check between frameworks. Timing values are not asserted (benchmarks are not
tests); only that they exist and are positive."""
import io
import json

import pytest

from rnnfast import benchmark, cli


@pytest.fixture
def tiny_sets(monkeypatch):
    shapes = {"tiny": [benchmark._shape("lstm", 16, 2, 5, "inference", "test"),
                       benchmark._shape("gru", 16, 2, 5, "training", "test", input_size=8),
                       benchmark._shape("lstm", 16, 1, 1, "stream", "test")]}
    monkeypatch.setattr(benchmark, "shape_sets", lambda: shapes)


def test_bench_cli_writes_table_and_json(tiny_sets, tmp_path, capsys):
    path = tmp_path / "b.json"
    assert cli.main(["bench", "--budget", "0.02", "--quiet", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "measured FMA peak" in out and "lstm H16 B2 T5" in out and "geometric-mean" in out
    res = json.loads(path.read_text())
    assert res["fma_peak_gflops"] > 0 and len(res["rows"]) == 3
    for row in res["rows"]:
        assert row["times"]["rnnfast"]["median_s"] > 0
        assert row["gflops"] > 0 and 0 < row["peak_frac"]
        for peer, err in row["check"].items():  # every peer computed the same outputs
            assert err < 1e-4, (row["label"], peer, err)
        if "torch" in row["times"]:
            assert row["speedup"] > 0
        assert row["bandwidth_gbs"] > 0 and row["roofline_s"] > 0 and row["roof_frac"] > 0
        assert row["bound"] in ("compute", "memory")
        assert (row["bound"] == "memory") == ("bw_frac" in row)


def test_flops_counts_gemm_work():
    s = benchmark._shape("lstm", 4, 2, 3, "inference", "x", input_size=5, layers=2, bidir=True)
    # per layer, 2 dirs * (input projection 2*T*B*G*H*I + recurrent products of steps 1..T-1, the
    # first step's state being zero: 2*(T-1)*B*G*H*H); layer 1's input is D*H
    proj0, proj1, rec = 2 * 2 * 3 * 2 * 16 * 5, 2 * 2 * 3 * 2 * 16 * 8, 2 * 2 * 2 * 16 * 4
    assert benchmark.flops(s) == proj0 + proj1 + 2 * 2 * rec
    # training: + input gradient and dW_ih (one projection each), dW_hh (T-1 steps) and dL/dh
    # through all T steps
    s["mode"] = "training"
    assert benchmark.flops(s) == 3 * (proj0 + proj1) + 2 * (2 + 2 + 3) * rec
    # a stream row carries its state: its one step has a recurrent product
    st = benchmark._shape("gru", 4, 2, 1, "stream", "x", input_size=5)
    assert benchmark.recurrent_steps(st) == 1
    assert benchmark.flops(st) == 2 * 2 * 12 * (5 + 4)
    assert benchmark.flops(dict(st, mode="inference")) == 2 * 2 * 12 * 5


def test_weight_bytes_counts_every_matrix():
    s = benchmark._shape("gru", 4, 2, 3, "inference", "x", input_size=5, layers=2, bidir=True)
    # layer 0: 2 dirs * 3*H*(I+H) floats; layer 1: input D*H
    assert benchmark.weight_bytes(s) == 4 * (2 * 12 * (5 + 4) + 2 * 12 * (8 + 4))


def test_roofline_phases():
    # LSTM I=H=512, batch 1, 100 steps, peak 200 GFLOP/s, 100 GB/s: the input projection is one
    # compute-limited GEMM (2*100*2048*512 flops = 1.048576 ms), each of the 99 steps after the
    # first (whose state is zero) is limited by reading W_hh (4 MiB = 0.04194304 ms).
    s = benchmark._shape("lstm", 512, 1, 100, "inference", "x")
    seen = []

    def bw(nbytes):
        seen.append(nbytes)
        return 100.0

    r = benchmark.roofline(s, 200.0, bw)
    # W_hh is read every step with only W_hh in between; W_ih once per call, the model in between
    assert sorted(set(seen)) == [2048 * 512 * 4, 2 * 2048 * 512 * 4]
    proj = 2 * 100 * 2048 * 512 / 200e9
    step = 2048 * 512 * 4 / 100e9
    assert r["compute_s"] == pytest.approx(proj, rel=1e-12)
    assert r["memory_s"] == pytest.approx(99 * step, rel=1e-12)
    assert r["time_s"] == pytest.approx(proj + 99 * step, rel=1e-12)
    # one step without a state: only W_ih is streamed, and only W_ih between two calls' reads
    seen.clear()
    one = benchmark.roofline(dict(s, T=1), 200.0, bw)
    assert set(seen) == {2048 * 512 * 4}
    assert one["compute_s"] == 0 and one["memory_s"] == pytest.approx(step, rel=1e-12)
    # its training reads W_hh too (dL/dh through the step, for the initial state's gradient)
    seen.clear()
    benchmark.roofline(dict(s, T=1, mode="training"), 200.0, bw)
    assert set(seen) == {2 * 2048 * 512 * 4}
    # one step of a stream: W_ih and W_hh, each with the whole model between two reads
    seen.clear()
    st = benchmark.roofline(dict(s, T=1, mode="stream"), 200.0, bw)
    assert seen == [2 * 2048 * 512 * 4] * 2
    assert st["compute_s"] == 0 and st["memory_s"] == pytest.approx(2 * step, rel=1e-12)
    # batch 64: every phase compute-limited, the bound is the flop count at the peak
    big = dict(s, B=64)
    assert benchmark.roofline(big, 200.0, bw)["time_s"] == pytest.approx(
        benchmark.flops(big) / 200e9, rel=1e-12)
    assert benchmark.roofline(big, 200.0, bw)["memory_s"] == 0
    # training: the input gradient (a projection), dL/dh over all 100 steps, the weight gradients
    # at the peak (one projection and the 99 recurrent products of the forward)
    tr = benchmark.roofline(dict(s, mode="training"), 200.0, bw)
    assert tr["memory_s"] == pytest.approx(99 * step + 100 * step, rel=1e-12)
    fwd_rec = 99 * 2 * 2048 * 512 / 200e9
    assert tr["compute_s"] == pytest.approx(2 * proj + proj + fwd_rec, rel=1e-12)
    bigtr = dict(big, mode="training")
    assert benchmark.roofline(bigtr, 200.0, bw)["time_s"] == pytest.approx(
        benchmark.flops(bigtr) / 200e9, rel=1e-12)


def test_l2_bytes_is_a_cache_size():
    n = benchmark.l2_bytes()
    assert 64 << 10 <= n <= 64 << 20 and n % 1024 == 0


def test_run_shape_takes_turns(monkeypatch):
    """Each framework is timed in `passes` blocks, the order rotating so that no framework always
    runs first; rounds are bounded by min/max_rounds; the result is the median over all rounds."""
    log = []

    def make(name):
        def call():
            log.append(name)
        return call

    calls = {n: make(n) for n in ("rnnfast", "torch", "ort")}
    monkeypatch.setattr(benchmark, "_callables", lambda *a: (dict(calls), {"torch": 0.0}))
    monkeypatch.setattr(benchmark.time, "sleep", lambda s: None)
    res, check = benchmark.run_shape({}, {}, 1, None, budget_s=0.0, min_rounds=6, max_rounds=30,
                                     passes=3)
    assert check == {"torch": 0.0}
    # block order: the first name of each new block, in turn
    firsts = [log[i] for i in range(len(log)) if i == 0 or log[i] != log[i - 1]]
    assert firsts == ["rnnfast", "torch", "ort", "torch", "ort", "rnnfast", "ort", "rnnfast",
                      "torch"]
    for name, r in res.items():
        assert r["samples"] == 6  # budget 0: the minimum, 2 rounds per pass
        assert r["median_s"] >= 0 and r["iqr_rel"] >= 0


def test_summary_reads_the_targets_from_the_rows():
    def row(label, B, H, mode, speedup, peak, bound="compute", bw=None):
        r = dict(label=label, shape=dict(B=B, H=H, mode=mode), speedup=speedup, peak_frac=peak,
                 bound=bound)
        if bw is not None:
            r["bw_frac"] = bw
        return r
    rows = [row("a", 16, 512, "inference", 2.0, 0.8),
            row("b", 64, 1024, "inference", 0.5, 0.9),
            row("c", 16, 512, "training", 1.0, 0.7),
            row("d", 8, 512, "inference", 1.0, 0.1),      # batch < 16: not compute-class
            row("e", 32, 256, "training", 1.0, 0.2),      # hidden < 512: not compute-class
            row("f", 1, 1024, "inference", 1.0, 0.3, "memory", 0.85),
            row("g", 1, 1536, "inference", 1.0, 0.3, "memory", 0.84)]
    s = benchmark._summary(rows)
    assert s["geomean_speedup"] == pytest.approx(1.0)
    assert s["slower_than_best_peer"] == ["b inference"]
    assert s["compute_peak_frac"] == {"inference": [0.8, 0.9], "training": [0.7, 0.7]}
    assert (s["memory_bound"], s["memory_within_15pct"]) == (2, 1)
    assert s["memory_not_within_15pct"] == ["g inference"]
    buf = io.StringIO()
    benchmark._print_summary(s, buf)
    text = buf.getvalue()
    assert "inference: 80.0-90.0% of the FMA peak" in text and "training: 70.0-70.0%" in text
    assert "within 15% of the roofline limit: 1 of 2" in text
