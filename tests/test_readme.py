"""Every Python example in README.md runs as written (in order, sharing one namespace), so the
README stays true. The signature summary of forward/backward is the one block not meant to run."""
import os
import re

import pytest

README = os.path.join(os.path.dirname(__file__), "..", "README.md")


def _blocks():
    text = open(README, encoding="utf-8").read()
    return [b for b in re.findall(r"```python\n(.*?)```", text, re.S)
            if "dstate=(dh_n, dc_n)" not in b]  # the signature summary


def test_readme_examples_run(tmp_path, monkeypatch):
    blocks = _blocks()
    assert len(blocks) >= 6
    monkeypatch.chdir(tmp_path)  # the examples write model.safetensors
    ns = {}
    exec("import numpy as np\nimport torch\nimport rnnfast as rf", ns)
    for i, code in enumerate(blocks):
        try:
            exec(compile(code, f"README.md python block {i}", "exec"), ns)
        except Exception as exc:  # pragma: no cover - the message is the point
            pytest.fail(f"README python block {i} failed: {type(exc).__name__}: {exc}\n{code}")
