"""Saving and loading models as safetensors files: ``save(model, path)`` and ``load(path)``.

A file holds the model's tensors under their PyTorch names (``weight_ih_l0``, ...; a
``SequenceModel`` prefixes them: ``rnn.weight_ih_l0``, ``embedding.weight``, ``head.bias``), so
``safetensors.torch.load_file`` + ``torch.nn.LSTM.load_state_dict`` read it as they are. The
architecture is a JSON string under the ``"rnnfast"`` key of the safetensors metadata.

Loading trusts nothing in the file: the header is parsed by safetensors (no pickle, no code), the
JSON is checked field by field, and the tensor names, shapes and dtypes are compared with what
the JSON describes BEFORE any model is allocated, so a tampered size cannot make us allocate more
than the file itself holds. Every problem with the file's content raises ``ValueError``.

safetensors is an optional dependency (``pip install safetensors`` or ``rnnfast[io]``); it is
imported only when these functions run.
"""
import json
import math
import os

import numpy as np

from ._rnn import GRU, LSTM, RNN, _RNNBase
from .layers import Embedding, Linear
from .model import SequenceModel

__all__ = ["save", "load"]

FORMAT_VERSION = 1
_META_KEY = "rnnfast"
_RNN_CLASSES = {"RNN": RNN, "LSTM": LSTM, "GRU": GRU}
_GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
# safetensors dtype codes of the two dtypes a model can have
_ST_DTYPES = {"float32": "F32", "float64": "F64"}


def _safetensors():
    try:
        import safetensors
        import safetensors.numpy
    except ImportError as exc:
        raise ImportError("rnnfast.save / rnnfast.load need the optional safetensors package: "
                          "pip install safetensors") from exc
    return safetensors


# ----------------------------------------------------------------------------- model -> metadata
def _rnn_meta(rnn):
    meta = {"class": {"LSTM": "LSTM", "GRU": "GRU"}.get(rnn._mode, "RNN"),
            "input_size": rnn.input_size, "hidden_size": rnn.hidden_size,
            "num_layers": rnn.num_layers, "bias": rnn.bias, "batch_first": rnn.batch_first,
            "dropout": rnn.dropout, "bidirectional": rnn.bidirectional,
            "nonlinearity": rnn.nonlinearity if rnn._mode.startswith("RNN") else None,
            "dtype": rnn.dtype.name}
    # LSTM variants: written only when on, so files of plain models stay readable by rnnfast
    # versions that predate them (which refuse, as unknown entries, what they cannot run)
    for key in _LSTM_VARIANT_KEYS:
        if getattr(rnn, key) not in (False, None):
            meta[key] = getattr(rnn, key)
    if rnn._mode == "GRU":  # optional key: files written before it existed load as True
        meta["linear_before_reset"] = rnn.linear_before_reset
    return meta


def _model_meta(model):
    if isinstance(model, _RNNBase):
        meta = _rnn_meta(model)
    elif isinstance(model, SequenceModel):
        emb, head = model.embedding, model.head
        meta = {"class": "SequenceModel", "dtype": model.dtype.name, "head_on": model.head_on,
                "rnn": _rnn_meta(model.rnn),
                "embedding": None if emb is None else {
                    "num_embeddings": emb.num_embeddings, "embedding_dim": emb.embedding_dim,
                    "padding_idx": emb.padding_idx},
                "head": None if head is None else {
                    "in_features": head.in_features, "out_features": head.out_features,
                    "bias": head.bias}}
    else:
        raise TypeError(f"save writes rnnfast RNN, LSTM, GRU and SequenceModel models, got "
                        f"{type(model).__name__}")
    meta["format_version"] = FORMAT_VERSION
    return meta


def save(model, path):
    """Write ``model`` (RNN, LSTM, GRU or SequenceModel) to a safetensors file at ``path``.

    The file is written next to ``path`` under a temporary name and then renamed over it, so a
    crash mid-write never leaves a truncated file at ``path``. The model's random generator
    state (dropout masks) is not saved.
    """
    st = _safetensors()
    meta = _model_meta(model)
    tensors = {name: np.ascontiguousarray(v) for name, v in model.state_dict().items()}
    data = st.numpy.save(tensors, metadata={_META_KEY: json.dumps(meta, sort_keys=True)})
    path = os.fspath(path)
    tmp = f"{path}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    f = open(tmp, "xb")  # "x": never clobber a file we did not create
    try:
        with f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.remove(tmp)
        raise


# ----------------------------------------------------------------------------- metadata -> model
class _Bad(ValueError):
    """A problem with the file's content; ``load`` adds the path to the message."""


def _field(d, key, kind, where):
    """``d[key]`` if present and of ``kind`` ("int" >= 1, "bool", "dropout", or a tuple of
    allowed values), else raise _Bad naming what was expected and what came."""
    if key not in d:
        raise _Bad(f"{where} has no {key!r}")
    v = d[key]
    if kind == "int":
        ok, want = isinstance(v, int) and not isinstance(v, bool) and v >= 1, "a positive integer"
    elif kind == "bool":
        ok, want = isinstance(v, bool), "true or false"
    elif kind == "dropout":
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v < 1.0
        want = "a number in [0, 1)"
    else:
        ok, want = v in kind, f"one of {list(kind)}"
    if not ok:
        raise _Bad(f"{where}[{key!r}] must be {want}, got {v!r}")
    return v


def _object(d, keys, where):
    """Check that ``d`` is a JSON object with no entries outside ``keys``."""
    if not isinstance(d, dict):
        raise _Bad(f"{where} must be a JSON object, got {d!r}")
    extra = sorted(set(d) - set(keys))
    if extra:
        raise _Bad(f"{where} has unknown entries {extra}")


_LSTM_VARIANT_KEYS = ("peephole", "input_forget", "clip")
_RNN_KEYS = ("class", "input_size", "hidden_size", "num_layers", "bias", "batch_first",
             "dropout", "bidirectional", "nonlinearity", "dtype", "format_version",
             "linear_before_reset") + _LSTM_VARIANT_KEYS


def _lstm_variant(d, cls, where):
    """The optional variant entries of a description, checked: (peephole, input_forget, clip)
    with their defaults when absent. peephole and input_forget are LSTM-only; clip (ONNX's
    pre-activation clip) any class's."""
    present = [k for k in _LSTM_VARIANT_KEYS if k in d and k != "clip"]  # clip: any class
    if present and cls != "LSTM":
        raise _Bad(f"{where} has {present}, which only an LSTM can have (class {cls!r})")
    peephole = _field(d, "peephole", "bool", where) if "peephole" in d else False
    input_forget = _field(d, "input_forget", "bool", where) if "input_forget" in d else False
    clip = d.get("clip")
    if clip is not None and not (isinstance(clip, (int, float)) and not isinstance(clip, bool)
                                 and math.isfinite(clip) and clip > 0):
        raise _Bad(f"{where}['clip'] must be null or a positive finite number, got {clip!r}")
    return peephole, input_forget, clip


def _rnn_shapes(d, where, prefix, n_tensors):
    """Validate a recurrent model's description; return its tensors' {name: shape}.

    n_tensors (how many the file holds) bounds the work: a tampered num_layers of 10**9 is
    refused by a count, before any per-layer list is built. Small mismatches go on to the name
    by name comparison, whose message says which tensors are missing.
    """
    _object(d, _RNN_KEYS, where)
    cls = _field(d, "class", tuple(_RNN_CLASSES), where)
    I, H, L = (_field(d, k, "int", where) for k in ("input_size", "hidden_size", "num_layers"))
    bias, bidir = _field(d, "bias", "bool", where), _field(d, "bidirectional", "bool", where)
    _field(d, "batch_first", "bool", where)
    _field(d, "dropout", "dropout", where)
    _field(d, "nonlinearity", ("tanh", "relu") if cls == "RNN" else (None,), where)
    _field(d, "dtype", tuple(_ST_DTYPES), where)
    peephole, _, _ = _lstm_variant(d, cls, where)
    if "linear_before_reset" in d:
        if cls != "GRU":
            raise _Bad(f"{where} has 'linear_before_reset', which only a GRU has (class {cls!r})")
        _field(d, "linear_before_reset", "bool", where)
    D, G = 2 if bidir else 1, _GATES[cls]
    count = L * D * ((4 if bias else 2) + (1 if peephole else 0))
    if count > n_tensors + 1024:
        raise _Bad(f"its metadata describes {count} recurrent tensors, the file holds "
                   f"{n_tensors} tensors in all")
    # PyTorch's layout: per layer, per direction: weight_ih, weight_hh[, bias_ih, bias_hh]
    shapes = {}
    for layer in range(L):
        in_size = I if layer == 0 else D * H
        for d_ in range(D):
            sfx = f"l{layer}" + ("_reverse" if d_ else "")
            shapes[f"{prefix}weight_ih_{sfx}"] = (G * H, in_size)
            shapes[f"{prefix}weight_hh_{sfx}"] = (G * H, H)
            if bias:
                shapes[f"{prefix}bias_ih_{sfx}"] = (G * H,)
                shapes[f"{prefix}bias_hh_{sfx}"] = (G * H,)
            if peephole:
                shapes[f"{prefix}weight_peephole_{sfx}"] = (3 * H,)
    return shapes


def _build_rnn(d):
    kw = dict(num_layers=d["num_layers"], bias=d["bias"], batch_first=d["batch_first"],
              dropout=d["dropout"], bidirectional=d["bidirectional"], dtype=d["dtype"])
    if d["class"] == "RNN":
        kw["nonlinearity"] = d["nonlinearity"]
    if d["class"] == "LSTM":
        kw.update(zip(_LSTM_VARIANT_KEYS, _lstm_variant(d, "LSTM", "the metadata")))
    else:
        kw["clip"] = _lstm_variant(d, d["class"], "the metadata")[2]
    if d["class"] == "GRU":
        kw["linear_before_reset"] = d.get("linear_before_reset", True)
    return _RNN_CLASSES[d["class"]](d["input_size"], d["hidden_size"], **kw)


def _expected(meta, n_tensors):
    """From the parsed metadata: ({name: shape} it implies, dtype name, a function that builds
    the model). Raises _Bad for anything malformed. Allocates nothing model-sized."""
    if not isinstance(meta, dict):
        raise _Bad(f"its 'rnnfast' metadata must be a JSON object, got {type(meta).__name__}")
    version = meta.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise _Bad(f"its 'rnnfast' metadata has no valid format_version (got {version!r})")
    if version > FORMAT_VERSION:
        raise _Bad(f"format_version {version} was written by a newer rnnfast (this one reads "
                   f"up to {FORMAT_VERSION}); upgrade rnnfast")
    dtype = _field(meta, "dtype", tuple(_ST_DTYPES), "the metadata")
    cls = _field(meta, "class", tuple(_RNN_CLASSES) + ("SequenceModel",), "the metadata")
    if cls != "SequenceModel":
        return _rnn_shapes(meta, "the metadata", "", n_tensors), dtype, lambda: _build_rnn(meta)

    _object(meta, ("class", "dtype", "head_on", "rnn", "embedding", "head", "format_version"),
            "the metadata")
    head_on = _field(meta, "head_on", ("step", "last"), "the metadata")
    for key in ("rnn", "embedding", "head"):
        if key not in meta:
            raise _Bad(f"the metadata has no {key!r}")
    rnn, emb, head = meta["rnn"], meta["embedding"], meta["head"]
    shapes = _rnn_shapes(rnn, "the metadata's 'rnn'", "rnn.", n_tensors)
    if rnn["dtype"] != dtype:
        raise _Bad(f"the metadata's rnn dtype ({rnn['dtype']}) differs from its dtype ({dtype})")
    if emb is not None:
        where = "the metadata's 'embedding'"
        _object(emb, ("num_embeddings", "embedding_dim", "padding_idx"), where)
        n = _field(emb, "num_embeddings", "int", where)
        shapes["embedding.weight"] = (n, _field(emb, "embedding_dim", "int", where))
        if "padding_idx" not in emb:
            raise _Bad(f"{where} has no 'padding_idx'")
        p = emb["padding_idx"]
        if p is not None and not (isinstance(p, int) and not isinstance(p, bool) and 0 <= p < n):
            raise _Bad(f"{where}['padding_idx'] must be null or an integer in 0..{n - 1}, "
                       f"got {p!r}")
    if head is not None:
        where = "the metadata's 'head'"
        _object(head, ("in_features", "out_features", "bias"), where)
        fi = _field(head, "in_features", "int", where)
        fo = _field(head, "out_features", "int", where)
        shapes["head.weight"] = (fo, fi)
        if _field(head, "bias", "bool", where):
            shapes["head.bias"] = (fo,)

    def build():
        em = None if emb is None else Embedding(emb["num_embeddings"], emb["embedding_dim"],
                                                padding_idx=emb["padding_idx"], dtype=dtype)
        hd = None if head is None else Linear(head["in_features"], head["out_features"],
                                              bias=head["bias"], dtype=dtype)
        return SequenceModel(_build_rnn(rnn), embedding=em, head=hd, head_on=head_on)
    return shapes, dtype, build


def load(path):
    """Rebuild the model saved by :func:`save` at ``path``: same class, flags, dtype, weights.

    Raises ``ValueError`` (naming the path and the problem) for a file that is not a valid
    safetensors file (truncated, corrupted header), that carries no rnnfast metadata (e.g. a
    plain state_dict), whose metadata is malformed or from a newer format, or whose tensors do
    not match the metadata in names, shapes or dtype. ``OSError`` (e.g. ``FileNotFoundError``)
    when the file cannot be read.
    """
    st = _safetensors()
    path = os.fspath(path)
    try:
        with st.safe_open(path, framework="numpy") as f:
            header = f.metadata() or {}
            if _META_KEY not in header:
                raise _Bad("it has no 'rnnfast' entry in its safetensors metadata, so it was not "
                           "written by rnnfast.save (a plain state_dict can be read with "
                           "safetensors.numpy.load_file and model.load_state_dict)")
            try:
                meta = json.loads(header[_META_KEY])
            except (ValueError, RecursionError) as exc:  # RecursionError: absurd nesting
                raise _Bad(f"its 'rnnfast' metadata is not valid JSON ({exc})") from None
            keys = set(f.keys())
            shapes, dtype, build = _expected(meta, len(keys))
            missing, extra = sorted(set(shapes) - keys), sorted(keys - set(shapes))
            if missing or extra:
                raise _Bad(f"its tensors do not match its metadata: missing {missing}, "
                           f"unexpected {extra}")
            for name, shape in shapes.items():
                sl = f.get_slice(name)
                got_shape, got_dtype = tuple(sl.get_shape()), sl.get_dtype()
                if got_shape != shape:
                    raise _Bad(f"tensor {name!r} has shape {got_shape}, the metadata implies "
                               f"{shape}")
                if got_dtype != _ST_DTYPES[dtype]:
                    raise _Bad(f"tensor {name!r} has dtype {got_dtype}, the metadata says "
                               f"{dtype} ({_ST_DTYPES[dtype]})")
            try:
                model = build()
            except (TypeError, ValueError) as exc:
                raise _Bad(f"its metadata describes an invalid model: {exc}") from None
            # copied into the model's buffer while the file is still open
            model.load_state_dict({name: f.get_tensor(name) for name in shapes})
    except _Bad as exc:
        raise ValueError(f"cannot load {path!r}: {exc}") from None
    except st.SafetensorError as exc:
        raise ValueError(f"cannot load {path!r}: not a valid safetensors file ({exc})") from None
    return model
