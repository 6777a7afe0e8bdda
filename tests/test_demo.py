"""The `rnnfast demo` command end to end, shortened: trains, reports, generates, saves a model
that rf.load reads back; and argument errors."""
import json

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import cli, demo


def test_demo_runs_learns_and_saves(tmp_path, capsys):
    path = str(tmp_path / "lm.safetensors")
    rc = cli.main(["demo", "--minutes", "0.1", "--hidden", "64", "--generate", "40", "--quiet",
                   "--save", path, "--threads", "1"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "held-out:" in out and "--- generated" in out
    bits = float(out.split("held-out: ")[1].split(" bits/char")[0])
    entropy = float(out.split("unigram entropy ")[1].split(" bits/char")[0])
    assert bits < entropy  # a few seconds of training already beat the unigram model
    model = rf.load(path)
    vocab = json.load(open(path + ".vocab.json"))
    assert model.head.params.size == 64 * len(vocab) + len(vocab)


def test_demo_text_option_and_errors(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("abcab" * 400)
    res = demo.run(text_path=str(text), minutes=0.02, hidden=16, batch=4, seq_len=8,
                   generate=10, quiet=True, print_fn=lambda *a: None)
    assert res["steps"] > 0 and np.isfinite(res["valid_bits"])
    short = tmp_path / "s.txt"
    short.write_text("ab")
    with pytest.raises(ValueError, match="at least 1000 characters"):
        demo.run(text_path=str(short), minutes=0.01, quiet=True, print_fn=lambda *a: None)
    with pytest.raises(SystemExit):
        cli.main(["demo", "--hidden", "0"])
