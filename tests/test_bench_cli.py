"""`rnnfast bench` end to end on two tiny shapes: the table, the JSON, the derived columns, and the
outputs cross-check between frameworks. Timing values are not asserted (benchmarks are not
tests); only that they exist and are positive."""
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


def test_flops_counts_gemm_work():
    s = benchmark._shape("lstm", 4, 2, 3, "inference", "x", input_size=5, layers=2, bidir=True)
    # layer 0: 2 dirs * 2*T*B*G*H*(I+H); layer 1 input is D*H
    expected = 2 * 2 * 3 * 2 * 16 * (5 + 4) + 2 * 2 * 3 * 2 * 16 * (8 + 4)
    assert benchmark.flops(s) == expected
    s["mode"] = "training"
    assert benchmark.flops(s) == 3 * expected
