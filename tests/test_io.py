"""rf.save / rf.load: safetensors files with PyTorch tensor names and the architecture as JSON
metadata. Round trips are bit-exact; every kind of bad file is a ValueError naming the problem.
"""
import json
import os
import struct
import sys

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

import rnnfast as rf
from conftest import is_lstm, rf_model


def _header(path):
    """(header dict, tensor bytes) of a safetensors file: u64 little-endian length, JSON, data."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8:8 + n]), raw[8 + n:]


def _write(path, header, data):
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + data)


def _with_meta(src, dst, edit):
    """Copy a saved file, passing its parsed 'rnnfast' metadata through ``edit`` (which changes
    it in place or returns a replacement string)."""
    header, data = _header(src)
    meta = json.loads(header["__metadata__"]["rnnfast"])
    out = edit(meta)
    header["__metadata__"]["rnnfast"] = out if isinstance(out, str) else json.dumps(meta)
    _write(dst, header, data)
    return dst


def _same_model(a, b):
    assert type(a) is type(b) and repr(a) == repr(b)
    assert a.dtype == b.dtype
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb)
    for k in sa:
        assert sa[k].dtype == sb[k].dtype and np.array_equal(sa[k], sb[k]), k


@pytest.fixture
def saved(tmp_path):
    m = rf.LSTM(3, 4, num_layers=2, bidirectional=True, dtype="float64", seed=0)
    path = tmp_path / "m.safetensors"
    rf.save(m, path)
    return m, path


# ------------------------------------------------------------------------------ round trips
ROUND = [("lstm", 2, True, True, True, 0.3, "float32"),
         ("gru", 1, False, False, True, 0.0, "float64"),
         ("rnn_tanh", 2, False, True, False, 0.0, "float32"),
         ("rnn_relu", 1, True, False, True, 0.0, "float64"),
         ("gru", 2, True, False, False, 0.5, "float32"),
         ("lstm", 1, False, True, False, 0.0, "float64")]


@pytest.mark.parametrize("cell,layers,bidir,bf,bias,dropout,dtype", ROUND)
def test_round_trip_is_bit_exact(tmp_path, cell, layers, bidir, bf, bias, dropout, dtype):
    m = rf_model(cell, 5, 6, layers, bias, bf, dropout, bidir, dtype, seed=1)
    path = tmp_path / "model.safetensors"
    rf.save(m, path)
    back = rf.load(str(path))
    _same_model(back, m)
    x = np.random.default_rng(0).standard_normal((3, 4, 5))
    y, st = m(x)
    y2, st2 = back(x)
    assert np.array_equal(y, y2)
    for a, b in zip(st if is_lstm(cell) else (st,), st2 if is_lstm(cell) else (st2,)):
        assert np.array_equal(a, b)
    assert [p for p in os.listdir(tmp_path)] == ["model.safetensors"], "temporary file left"


@pytest.mark.parametrize("with_parts", [True, False])
def test_sequence_model_round_trip(tmp_path, with_parts):
    rnn = rf.GRU(8, 6, bidirectional=True, batch_first=True, seed=2)
    if with_parts:
        model = rf.SequenceModel(rnn, embedding=rf.Embedding(11, 8, padding_idx=3, seed=3),
                                 head=rf.Linear(12, 5, seed=4), head_on="last")
        x = np.random.default_rng(0).integers(0, 11, size=(2, 7))
    else:
        model = rf.SequenceModel(rnn)
        x = np.random.default_rng(0).standard_normal((2, 7, 8))
    path = tmp_path / "seq.safetensors"
    rf.save(model, path)
    back = rf.load(path)
    assert isinstance(back, rf.SequenceModel) and repr(back) == repr(model)
    if with_parts:
        assert back.embedding.padding_idx == 3 and back.head_on == "last"
    sd, sd2 = model.state_dict(), back.state_dict()
    assert list(sd) == list(sd2) and all(np.array_equal(sd[k], sd2[k]) for k in sd)
    assert np.array_equal(model(x)[0], back(x)[0])


def test_file_is_a_plain_safetensors_state_dict_torch_can_load(saved):
    m, path = saved
    tensors = load_file(path)
    assert sorted(tensors) == sorted(m.state_dict())
    tm = torch.nn.LSTM(3, 4, num_layers=2, bidirectional=True, dtype=torch.float64)
    tm.load_state_dict({k: torch.from_numpy(v) for k, v in tensors.items()}, strict=True)
    x = np.random.default_rng(1).standard_normal((5, 2, 3))
    with torch.no_grad():
        yt = tm(torch.from_numpy(x))[0].numpy()
    assert np.max(np.abs(m(x)[0] - yt)) <= 1e-12
    meta = json.loads(_header(path)[0]["__metadata__"]["rnnfast"])
    assert meta == {"class": "LSTM", "input_size": 3, "hidden_size": 4, "num_layers": 2,
                    "bias": True, "batch_first": False, "dropout": 0.0, "bidirectional": True,
                    "nonlinearity": None, "dtype": "float64", "format_version": 1}


def test_save_overwrites_and_refuses_non_models(tmp_path, saved):
    m, path = saved
    other = rf.GRU(2, 3, seed=5)
    rf.save(other, path)
    _same_model(rf.load(path), other)
    with pytest.raises(TypeError, match="save writes rnnfast.*Linear"):
        rf.save(rf.Linear(2, 3), tmp_path / "x.safetensors")
    with pytest.raises(FileNotFoundError):
        rf.save(other, tmp_path / "no_such_dir" / "m.safetensors")
    assert sorted(os.listdir(tmp_path)) == ["m.safetensors"]


# ------------------------------------------------------------------------------ bad files
def test_truncated_files_are_value_errors(saved, tmp_path):
    _, path = saved
    raw = open(path, "rb").read()
    bad = tmp_path / "bad.safetensors"
    for cut in (0, 4, 8, 20, len(raw) // 2, len(raw) - 1):
        bad.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="cannot load.*not a valid safetensors file"):
            rf.load(bad)


def test_garbage_and_other_formats_are_value_errors(tmp_path):
    bad = tmp_path / "bad"
    bad.write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match="not a valid safetensors"):
        rf.load(bad)
    npz = tmp_path / "m.npz"
    np.savez(npz, **rf.GRU(2, 3, seed=0).state_dict())
    with pytest.raises(ValueError, match="not a valid safetensors"):
        rf.load(npz)
    with pytest.raises(FileNotFoundError):
        rf.load(tmp_path / "missing.safetensors")


def test_tampered_header_is_a_value_error(saved, tmp_path):
    _, path = saved
    raw = bytearray(open(path, "rb").read())
    raw[9] = ord("#")  # inside the header JSON
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="not a valid safetensors"):
        rf.load(bad)
    # offsets pointing past the data
    header, data = _header(path)
    header["weight_ih_l0"]["data_offsets"][1] += 8
    _write(bad, header, data)
    with pytest.raises(ValueError, match="cannot load"):
        rf.load(bad)


def test_non_rnnfast_safetensors_file(tmp_path):
    path = tmp_path / "plain.safetensors"
    save_file(rf.LSTM(3, 4, seed=0).state_dict(), path)
    with pytest.raises(ValueError, match="no 'rnnfast' entry.*load_state_dict"):
        rf.load(path)
    save_file({"w": np.zeros(3)}, path, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="no 'rnnfast' entry"):
        rf.load(path)


def test_tensors_that_do_not_match_the_metadata(saved, tmp_path):
    m, path = saved
    bad = tmp_path / "bad.safetensors"
    meta = _header(path)[0]["__metadata__"]
    sd = m.state_dict()
    sd["extra"] = np.zeros(2)
    save_file(sd, bad, metadata=meta)
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        rf.load(bad)
    sd = m.state_dict()
    del sd["bias_hh_l1_reverse"]
    save_file(sd, bad, metadata=meta)
    with pytest.raises(ValueError, match=r"missing \['bias_hh_l1_reverse'\]"):
        rf.load(bad)
    sd = {k: v.astype(np.float32) for k, v in m.state_dict().items()}
    save_file(sd, bad, metadata=meta)
    with pytest.raises(ValueError, match="dtype F32, the metadata says float64"):
        rf.load(bad)
    sd = m.state_dict()
    sd["weight_hh_l0"] = np.ascontiguousarray(sd["weight_hh_l0"][:4])
    save_file(sd, bad, metadata=meta)
    with pytest.raises(ValueError, match=r"'weight_hh_l0' has shape \(4, 4\).*\(16, 4\)"):
        rf.load(bad)


def _set(key, value):
    def edit(meta):
        meta[key] = value
    return edit


@pytest.mark.parametrize("edit,message", [
    (_set("hidden_size", 5), r"'weight_ih_l0' has shape \(16, 3\), the metadata implies \(20, 3\)"),
    (_set("num_layers", 10 ** 9), "describes 8000000000 recurrent tensors"),
    (_set("class", "Transformer"), r"'class'\] must be one of"),
    (_set("class", "GRU"), "has shape"),
    (_set("format_version", 99), "newer rnnfast"),
    (_set("format_version", "1"), "no valid format_version"),
    (_set("bias", "true"), r"\['bias'\] must be true or false"),
    (_set("dropout", 1.5), r"\['dropout'\] must be a number in \[0, 1\)"),
    (_set("input_size", 0), r"\['input_size'\] must be a positive integer"),
    (_set("nonlinearity", "tanh"), r"\['nonlinearity'\] must be one of \[None\]"),
    (_set("dtype", "float16"), r"\['dtype'\] must be one of"),
    (_set("surprise", 1), r"unknown entries \['surprise'\]"),
    (lambda meta: meta.pop("batch_first"), "has no 'batch_first'"),
    (lambda meta: "{not json", "not valid JSON"),
    (lambda meta: "[" * 100000 + "]" * 100000, "not valid JSON"),
    (lambda meta: "[1, 2]", "must be a JSON object"),
])
def test_bad_metadata_is_a_value_error(saved, tmp_path, edit, message):
    _, path = saved
    bad = _with_meta(path, tmp_path / "bad.safetensors", edit)
    with pytest.raises(ValueError, match=message):
        rf.load(bad)


def test_inconsistent_sequence_model_metadata(tmp_path):
    model = rf.SequenceModel(rf.LSTM(4, 3, seed=0), head=rf.Linear(3, 2, seed=1))
    path = tmp_path / "seq.safetensors"
    rf.save(model, path)
    header, data = _header(path)
    meta = json.loads(header["__metadata__"]["rnnfast"])
    # a head that reads 5 features from a 3-wide rnn; the tensors agree with the metadata
    meta["head"]["in_features"] = 5
    header["__metadata__"]["rnnfast"] = json.dumps(meta)
    sd = model.state_dict()
    sd["head.weight"] = np.zeros((2, 5), dtype=np.float32)
    save_file(sd, path, metadata=header["__metadata__"])
    with pytest.raises(ValueError, match="invalid model.*in_features"):
        rf.load(path)
    bad = _with_meta(path, tmp_path / "b2.safetensors", lambda m: m["rnn"].update(dtype="float64"))
    with pytest.raises(ValueError, match="rnn dtype"):
        rf.load(bad)
    bad = _with_meta(path, tmp_path / "b3.safetensors", _set("embedding", {"num_embeddings": 3}))
    with pytest.raises(ValueError, match="has no 'embedding_dim'"):
        rf.load(bad)


def test_missing_safetensors_is_a_clear_import_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "safetensors", None)
    monkeypatch.setitem(sys.modules, "safetensors.numpy", None)
    with pytest.raises(ImportError, match="pip install safetensors"):
        rf.save(rf.GRU(2, 3, seed=0), tmp_path / "m.safetensors")
    with pytest.raises(ImportError, match="pip install safetensors"):
        rf.load(tmp_path / "m.safetensors")
