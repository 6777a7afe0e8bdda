"""ONNX in and out: ``load_onnx`` runs an ONNX graph's LSTM/GRU/RNN nodes on rnnfast models,
``save_onnx`` writes an rnnfast model as an ONNX graph.

``load_onnx`` returns a small session with onnxruntime's calling convention
(``sess.run(None, {"x": x})``). It walks the graph in topological order: the recurrent operators
run on rnnfast models built from their weights, and the glue that ``torch.onnx.export`` puts
around ``nn.LSTM/GRU/RNN`` (Transpose, Squeeze, Shape, Gather, Concat, Expand, ...) runs on numpy.
LSTM's optional peepholes (input ``P``), ``clip`` and ``input_forget`` run on rnnfast's LSTM
variants (``rf.LSTM(peephole=, clip=, input_forget=)``); GRU nodes run in either form:
``linear_before_reset=1`` (PyTorch's) or ``0`` (the ONNX default) on
``GRU(linear_before_reset=False)``; ``clip`` on GRU and RNN nodes runs on ``rf.GRU(clip=)`` and
``rf.RNN(clip=)``. Anything rnnfast cannot reproduce exactly (an unknown operator, other
activations, ...) raises an error that names it, never a silently different answer.

The ``onnx`` package is imported only inside these functions: rnnfast's only runtime dependency
stays numpy.
"""
import os

import numpy as np

from ._rnn import GRU, LSTM, RNN, _RNNBase

__all__ = ["load_onnx", "save_onnx"]

# ONNX gate blocks, written as PyTorch block indices: LSTM i,o,f,c; GRU z,r,h; RNN one block.
_ONNX_ORDER = {"LSTM": [0, 3, 1, 2], "GRU": [1, 0, 2], "RNN": [0]}
# LSTM peephole blocks: ONNX's P is (p_i, p_o, p_f), rnnfast's weight_peephole (p_i, p_f, p_o);
# the permutation is its own inverse, so it converts both ways.
_PEEPHOLE_ORDER = [0, 2, 1]
_DEFAULT_ACTS = {"LSTM": ["Sigmoid", "Tanh", "Tanh"], "GRU": ["Sigmoid", "Tanh"]}
_RECURRENT = ("LSTM", "GRU", "RNN")


def _import_onnx(what):
    try:
        import onnx
        from onnx import numpy_helper
    except ImportError as exc:
        raise ImportError(f"{what} needs the onnx package, which is not installed: "
                          f"pip install onnx") from exc
    return onnx, numpy_helper


def _regate(w, order, H):
    """Reorder the gate blocks (axis 0, blocks of H rows) of w: block j of the result is block
    order[j] of w."""
    return np.concatenate([w[g * H:(g + 1) * H] for g in order], axis=0)


# ------------------------------------------------------------------------------------- glue ops
def _axes_arg(node, ins, attrs, opset):
    if len(ins) > 1 and ins[1] is not None:
        return [int(a) for a in np.asarray(ins[1]).reshape(-1)]
    return attrs.get("axes")


def _op_squeeze(node, ins, attrs, opset):
    x = ins[0]
    axes = _axes_arg(node, ins, attrs, opset)
    if axes is None:
        return [np.squeeze(x)]
    return [np.squeeze(x, axis=tuple(a % x.ndim for a in axes))]


def _op_unsqueeze(node, ins, attrs, opset):
    x = ins[0]
    axes = _axes_arg(node, ins, attrs, opset)
    if axes is None:
        raise ValueError(f"Unsqueeze node {node.name!r} has no axes")
    out_ndim = x.ndim + len(axes)
    for a in sorted(a % out_ndim for a in axes):
        x = np.expand_dims(x, a)
    return [x]


def _op_reshape(node, ins, attrs, opset):
    x, shape = ins[0], [int(s) for s in np.asarray(ins[1]).reshape(-1)]
    if not attrs.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [np.reshape(x, shape)]


def _op_shape(node, ins, attrs, opset):
    shape = np.array(ins[0].shape, dtype=np.int64)
    start, end = attrs.get("start", 0), attrs.get("end", None)
    return [shape[start:end]]


def _op_gather(node, ins, attrs, opset):
    x, idx = ins[0], np.asarray(ins[1]).astype(np.int64)
    axis = attrs.get("axis", 0) % x.ndim
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return [np.take(x, idx, axis=axis)]


def _op_slice(node, ins, attrs, opset):
    x = ins[0]
    if opset < 10:
        starts, ends = attrs["starts"], attrs["ends"]
        axes, steps = attrs.get("axes"), None
    else:
        starts = [int(v) for v in np.asarray(ins[1]).reshape(-1)]
        ends = [int(v) for v in np.asarray(ins[2]).reshape(-1)]
        opt = [None if len(ins) <= k or ins[k] is None
               else [int(v) for v in np.asarray(ins[k]).reshape(-1)] for k in (3, 4)]
        axes, steps = opt
    axes = list(range(len(starts))) if axes is None else axes
    steps = [1] * len(starts) if steps is None else steps
    index = [slice(None)] * x.ndim
    for s, e, a, st in zip(starts, ends, axes, steps):
        n = x.shape[a % x.ndim]
        # ONNX clamps huge sentinels (INT64_MAX / MIN) the way Python slices do.
        s = max(min(s, n), -n - 1)
        e = max(min(e, n), -n - 1)
        if st < 0 and e < -n:
            e = None
        index[a % x.ndim] = slice(s, e, st)
    return [x[tuple(index)]]


def _op_constant(node, ins, attrs, opset):
    for key in ("value", "value_float", "value_floats", "value_int", "value_ints"):
        if key in attrs:
            v = attrs[key]
            if key in ("value_float", "value_floats"):
                return [np.array(v, dtype=np.float32)]
            if key in ("value_int", "value_ints"):
                return [np.array(v, dtype=np.int64)]
            return [v]
    raise NotImplementedError(f"Constant node {node.name!r}: only value, value_float(s) and "
                              f"value_int(s) are supported, got {sorted(attrs)}")


def _op_constant_of_shape(node, ins, attrs, opset):
    value = attrs.get("value", np.zeros(1, dtype=np.float32))
    shape = [int(s) for s in np.asarray(ins[0]).reshape(-1)]
    return [np.full(shape, value.reshape(-1)[0], dtype=value.dtype)]


def _op_cast(node, ins, attrs, opset):
    from onnx import helper

    return [np.asarray(ins[0]).astype(helper.tensor_dtype_to_np_dtype(attrs["to"]))]


def _op_expand(node, ins, attrs, opset):
    x, shape = ins[0], tuple(int(s) for s in np.asarray(ins[1]).reshape(-1))
    return [np.broadcast_to(x, np.broadcast_shapes(x.shape, shape)).copy()]


def _op_transpose(node, ins, attrs, opset):
    return [np.transpose(ins[0], attrs.get("perm"))]


def _op_concat(node, ins, attrs, opset):
    return [np.concatenate([np.asarray(a) for a in ins], axis=attrs["axis"])]


def _binary(fn):
    def op(node, ins, attrs, opset):
        a, b = np.asarray(ins[0]), np.asarray(ins[1])
        if fn is np.divide and a.dtype.kind in "iu":  # ONNX integer Div truncates toward zero
            return [np.trunc(a / b).astype(np.result_type(a, b))]
        return [fn(a, b).astype(np.result_type(a, b))]
    return op


_GLUE = {
    "Identity": lambda node, ins, attrs, opset: [ins[0]],
    "Transpose": _op_transpose,
    "Squeeze": _op_squeeze,
    "Unsqueeze": _op_unsqueeze,
    "Reshape": _op_reshape,
    "Concat": _op_concat,
    "Shape": _op_shape,
    "Gather": _op_gather,
    "Slice": _op_slice,
    "Constant": _op_constant,
    "ConstantOfShape": _op_constant_of_shape,
    "Cast": _op_cast,
    "Expand": _op_expand,
    "Add": _binary(np.add),
    "Sub": _binary(np.subtract),
    "Mul": _binary(np.multiply),
    "Div": _binary(np.divide),
}


# -------------------------------------------------------------------------------- recurrent ops
def _same(a, b):
    """Whether a weight array fed now equals the one the model was loaded from."""
    if a is None or b is None:
        return a is None and b is None
    a = np.asarray(a)
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


class _RecurrentNode:
    """One LSTM/GRU/RNN node: its checked attributes and the rnnfast model that runs it."""

    def __init__(self, node, attrs, const_values):
        op = node.op_type
        self.op, self.name = op, node.name or f"<unnamed {op}>"
        where = f"ONNX {op} node {self.name!r}"
        self.where = where
        direction = attrs.get("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            raise ValueError(f"{where}: unknown direction {direction!r}")
        self.direction = direction
        self.D = 2 if direction == "bidirectional" else 1
        self.layout = int(attrs.get("layout", 0))
        if self.layout not in (0, 1):
            raise ValueError(f"{where}: layout must be 0 or 1, got {self.layout}")
        self.hidden_size = attrs.get("hidden_size")
        # clip: any op; input_forget: LSTM's only (other ops leave it as before)
        self.clip, self.input_forget = self._lstm_variant(
            attrs if op == "LSTM" else {k: v for k, v in attrs.items() if k == "clip"}, where)
        self.linear_before_reset = True
        if op == "GRU":
            lbr = int(attrs.get("linear_before_reset", 0))  # ONNX's default is 0
            if lbr not in (0, 1):
                raise ValueError(f"{where}: linear_before_reset must be 0 or 1, got {lbr}")
            self.linear_before_reset = lbr == 1
        for key in ("activation_alpha", "activation_beta"):
            if key in attrs:
                raise NotImplementedError(f"{where}: attribute {key!r} is not supported by rnnfast")
        acts = attrs.get("activations")
        acts = None if acts is None else [a.decode() if isinstance(a, bytes) else a for a in acts]
        self.nonlinearity = "tanh"
        if op == "RNN":
            if acts is not None:
                if len(acts) != self.D or len(set(acts)) != 1 or acts[0] not in ("Tanh", "Relu"):
                    raise NotImplementedError(
                        f"{where}: attribute 'activations={acts}' is not supported by rnnfast "
                        f"(one of Tanh or Relu for every direction)")
                self.nonlinearity = acts[0].lower()
        elif acts is not None and acts != _DEFAULT_ACTS[op] * self.D:
            raise NotImplementedError(f"{where}: attribute 'activations={acts}' is not supported "
                                      f"by rnnfast (only the default {_DEFAULT_ACTS[op]})")
        names = list(node.input) + [""] * 8
        self.inputs = {k: names[i] for i, k in enumerate(
            ["X", "W", "R", "B", "sequence_lens", "initial_h"]
            + (["initial_c", "P"] if op == "LSTM" else []))}
        if not self.inputs["W"] or not self.inputs["R"]:
            raise ValueError(f"{where}: inputs W and R are required")
        outs = list(node.output) + ["", "", ""]
        self.outputs = outs[:3] if op == "LSTM" else outs[:2]
        self.model = None
        self._loaded = None  # the (W, R, B, P) arrays the model holds
        keys = ("W", "R", "B", "P") if op == "LSTM" else ("W", "R", "B")
        weights = [const_values.get(self.inputs[k]) for k in keys]
        if weights[0] is not None and weights[1] is not None and all(
                not self.inputs[k] or w is not None for k, w in zip(keys[2:], weights[2:])):
            self._load(*weights)
        # weights from initializers never change: no per-run comparison
        self._constant = self.model is not None

    @staticmethod
    def _lstm_variant(attrs, where):
        """(clip or None, input_forget) of a node, checked as onnxruntime does: clip must be > 0
        (+inf clips nothing; any recurrent op), input_forget 0 or 1 (LSTM)."""
        clip = None
        if "clip" in attrs:
            clip = float(attrs["clip"])
            if not clip > 0:
                raise ValueError(f"{where}: attribute 'clip' must be > 0, got {clip}")
            if np.isinf(clip):
                clip = None
        input_forget = int(attrs.get("input_forget", 0))
        if input_forget not in (0, 1):
            raise ValueError(f"{where}: attribute 'input_forget' must be 0 or 1, got "
                             f"{input_forget}")
        return clip, bool(input_forget)

    def _load(self, W, R, B, P=None):
        """Build (or refill) the rnnfast model for these ONNX weights (P: LSTM peepholes)."""
        op, D, where = self.op, self.D, self.where
        W, R = np.asarray(W), np.asarray(R)
        if W.ndim != 3 or R.ndim != 3 or W.shape[0] != D or R.shape[0] != D:
            raise ValueError(f"{where}: W must be (num_directions={D}, gates*hidden, input) and "
                             f"R (num_directions, gates*hidden, hidden), got {W.shape} and {R.shape}")
        G = len(_ONNX_ORDER[op])
        H = R.shape[2]
        if self.hidden_size is not None and int(self.hidden_size) != H:
            raise ValueError(f"{where}: hidden_size={self.hidden_size} but R has hidden size {H}")
        if W.shape[1] != G * H or R.shape[1] != G * H:
            raise ValueError(f"{where}: W and R must have {G}*hidden_size={G * H} rows, got "
                             f"{W.shape} and {R.shape}")
        dtype = "float64" if W.dtype == np.float64 else "float32"
        Bz = np.zeros((D, 2 * G * H), dtype=W.dtype) if B is None else np.asarray(B)
        if Bz.shape != (D, 2 * G * H):
            raise ValueError(f"{where}: B must be (num_directions, 2*{G}*hidden_size) = "
                             f"{(D, 2 * G * H)}, got {Bz.shape}")
        if P is not None:
            P = np.asarray(P)
            if P.shape != (D, 3 * H):
                raise ValueError(f"{where}: P must be (num_directions, 3*hidden_size) = "
                                 f"{(D, 3 * H)}, got {P.shape}")
        # A reverse-only node runs as the reverse half of a bidirectional rnnfast layer whose
        # forward half has zero weights and is discarded (rnnfast has no reverse-only layer).
        two = D == 2 or self.direction == "reverse"
        m = self.model
        if m is None or m.input_size != W.shape[2] or m.hidden_size != H or \
                m.dtype != np.dtype(dtype) or m.peephole != (P is not None):
            kw = dict(bidirectional=two, dtype=dtype)
            if op == "RNN":
                m = RNN(W.shape[2], H, nonlinearity=self.nonlinearity, clip=self.clip, **kw)
            elif op == "LSTM":
                m = LSTM(W.shape[2], H, peephole=P is not None, input_forget=self.input_forget,
                         clip=self.clip, **kw)
            else:
                m = GRU(W.shape[2], H, linear_before_reset=self.linear_before_reset,
                        clip=self.clip, **kw)
        inv = list(np.argsort(_ONNX_ORDER[op]))  # PyTorch block k = ONNX block inv[k]
        sd = {}
        for d in range(D):
            sfx = "l0_reverse" if (d == 1 or self.direction == "reverse") else "l0"
            sd[f"weight_ih_{sfx}"] = _regate(W[d], inv, H)
            sd[f"weight_hh_{sfx}"] = _regate(R[d], inv, H)
            sd[f"bias_ih_{sfx}"] = _regate(Bz[d, :G * H], inv, H)
            sd[f"bias_hh_{sfx}"] = _regate(Bz[d, G * H:], inv, H)
            if P is not None:
                sd[f"weight_peephole_{sfx}"] = _regate(P[d], _PEEPHOLE_ORDER, H)
        if self.direction == "reverse":
            for k in list(sd):
                sd[k.replace("_reverse", "")] = np.zeros_like(sd[k])
        m.load_state_dict(sd)
        self.model = m
        self._loaded = (W.copy(), R.copy(), None if B is None else np.array(B),
                        None if P is None else np.array(P))

    def run(self, values):
        get = lambda k: values[self.inputs[k]] if self.inputs[k] else None  # noqa: E731
        W, R, B = get("W"), get("R"), get("B")
        P = get("P") if self.op == "LSTM" else None
        if not self._constant and (self._loaded is None or not all(
                _same(a, b) for a, b in zip((W, R, B, P), self._loaded))):
            self._load(W, R, B, P)
        m, D, H, where = self.model, self.D, self.model.hidden_size, self.where
        X = np.asarray(get("X"))
        if X.ndim != 3:
            raise ValueError(f"{where}: X must be 3-D, got shape {X.shape}")
        if self.layout == 1:
            X = X.transpose(1, 0, 2)
        T, Bsz = X.shape[0], X.shape[1]
        lens = get("sequence_lens")
        if lens is not None:
            lens = np.asarray(lens).reshape(-1).astype(np.int64)
            if lens.shape != (Bsz,) or lens.min() < 1 or lens.max() > T:
                raise ValueError(f"{where}: sequence_lens must hold one length in 1..{T} per "
                                 f"batch row ({Bsz}), got {lens.tolist()} (rnnfast does not run "
                                 f"zero-length rows)")
        states = []
        for k in ("initial_h", "initial_c") if self.op == "LSTM" else ("initial_h",):
            s = get(k)
            if s is not None:
                s = np.asarray(s)
                if self.layout == 1:
                    s = s.transpose(1, 0, 2)
                if self.direction == "reverse":  # rnnfast's model is bidirectional (see _load)
                    s = np.concatenate([np.zeros_like(s), s], axis=0)
            states.append(s)
        if self.op == "LSTM":
            hx = None if states[0] is None and states[1] is None else tuple(states)
        else:
            hx = states[0]
        y, state = m(X, hx, lens)
        hn, cn = state if self.op == "LSTM" else (state, None)
        Dm = m.num_directions
        y = y.reshape(T, Bsz, Dm, H)
        if self.direction == "reverse":
            y, hn = y[:, :, 1:], hn[1:]
            cn = None if cn is None else cn[1:]
        if self.layout == 0:
            Y = np.ascontiguousarray(y.transpose(0, 2, 1, 3))
        else:
            Y = np.ascontiguousarray(y.transpose(1, 0, 2, 3))
            hn = np.ascontiguousarray(hn.transpose(1, 0, 2))
            cn = None if cn is None else np.ascontiguousarray(cn.transpose(1, 0, 2))
        results = [Y, hn, cn][:len(self.outputs)]
        return {name: r for name, r in zip(self.outputs, results) if name}


# ---------------------------------------------------------------------------------- session
class _ValueInfo:
    """What ``get_inputs()`` / ``get_outputs()`` return: ``.name``, ``.shape`` and ``.type``."""

    def __init__(self, name, shape, type_name):
        self.name, self.shape, self.type = name, shape, type_name

    def __repr__(self):
        return f"NodeArg(name={self.name!r}, type={self.type!r}, shape={self.shape})"


def _value_info(vi):
    from onnx import helper

    t = vi.type.tensor_type
    shape = None
    if t.HasField("shape"):
        shape = [d.dim_param if d.HasField("dim_param") else
                 (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
    try:
        type_name = f"tensor({np.dtype(helper.tensor_dtype_to_np_dtype(t.elem_type)).name})"
    except Exception:
        type_name = None
    return _ValueInfo(vi.name, shape, type_name)


class OnnxSession:
    """An ONNX graph run by rnnfast. Build it with :func:`load_onnx`; call :meth:`run` like an
    onnxruntime ``InferenceSession``. ``models`` lists the rnnfast model of each recurrent node in
    graph order (``None`` until the first run for a node whose weights are graph inputs)."""

    def __init__(self, model_proto):
        onnx, numpy_helper = _import_onnx("load_onnx")
        g = model_proto.graph
        self._opset = 1
        for imp in model_proto.opset_import:
            if imp.domain in ("", "ai.onnx"):
                self._opset = imp.version
        self._consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        self._inputs = [_value_info(v) for v in g.input if v.name not in self._consts]
        self._overridable = [v.name for v in g.input if v.name in self._consts]
        self._outputs = [_value_info(v) for v in g.output]
        self._nodes = self._toposort(g)
        self._plan = []
        const_values = dict(self._consts)
        for node in self._nodes:
            if node.domain not in ("", "ai.onnx"):
                raise NotImplementedError(f"ONNX operator {node.domain}.{node.op_type} (node "
                                          f"{node.name!r}) is not supported by rnnfast.load_onnx")
            attrs = {a.name: self._attr(a) for a in node.attribute}
            if node.op_type in _RECURRENT:
                self._plan.append((node, attrs, _RecurrentNode(
                    node, attrs, {k: v for k, v in const_values.items()
                                  if k not in self._overridable})))
            elif node.op_type in _GLUE:
                self._plan.append((node, attrs, _GLUE[node.op_type]))
                if node.op_type == "Constant":
                    const_values[node.output[0]] = _op_constant(node, [], attrs, self._opset)[0]
            else:
                raise NotImplementedError(
                    f"ONNX operator {node.op_type!r} (node {node.name!r}) is not supported by "
                    f"rnnfast.load_onnx; supported: LSTM, GRU, RNN and {', '.join(sorted(_GLUE))}")

    @staticmethod
    def _attr(a):
        from onnx import helper, numpy_helper

        v = helper.get_attribute_value(a)
        if hasattr(v, "dims") and hasattr(v, "data_type"):  # TensorProto
            return numpy_helper.to_array(v)
        if isinstance(v, bytes):
            return v.decode()
        return v

    @staticmethod
    def _toposort(g):
        """The nodes ordered so that each comes after the producers of its inputs."""
        available = {t.name for t in g.initializer} | {v.name for v in g.input} | {""}
        pending, ordered = list(g.node), []
        while pending:
            rest = []
            for node in pending:
                if all(i in available for i in node.input):
                    ordered.append(node)
                    available.update(node.output)
                else:
                    rest.append(node)
            if len(rest) == len(pending):
                missing = sorted({i for n in rest for i in n.input if i not in available})
                raise ValueError(f"ONNX graph cannot be ordered: no node or input produces "
                                 f"{missing[:5]} (a cycle or a missing input)")
            pending = rest
        return ordered

    @property
    def models(self):
        return [step.model for _, _, step in self._plan if isinstance(step, _RecurrentNode)]

    def get_inputs(self):
        return list(self._inputs)

    def get_outputs(self):
        return list(self._outputs)

    def run(self, output_names, input_feed, run_options=None):
        """Run the graph: ``output_names`` (``None`` for all outputs) and a dict
        ``{input name: array}``; returns the outputs as a list of numpy arrays."""
        if not hasattr(input_feed, "items"):
            raise TypeError(f"input_feed must be a dict {{name: array}}, got "
                            f"{type(input_feed).__name__}")
        known = {v.name for v in self._inputs} | set(self._overridable)
        unknown = [k for k in input_feed if k not in known]
        if unknown:
            raise ValueError(f"unknown input(s) {unknown}; the graph's inputs are "
                             f"{sorted(v.name for v in self._inputs)}")
        missing = [v.name for v in self._inputs if v.name not in input_feed]
        if missing:
            raise ValueError(f"missing input(s) {missing}")
        values = dict(self._consts)
        values.update({k: np.asarray(v) for k, v in input_feed.items()})
        values[""] = None
        for node, attrs, step in self._plan:
            if isinstance(step, _RecurrentNode):
                values.update(step.run(values))
            else:
                ins = [values[i] if i else None for i in node.input]
                for name, out in zip(node.output, step(node, ins, attrs, self._opset)):
                    if name:
                        values[name] = out
        names = [v.name for v in self._outputs] if output_names is None else list(output_names)
        absent = [n for n in names if n not in values]
        if absent:
            raise ValueError(f"unknown output(s) {absent}")
        return [np.asarray(values[n]) for n in names]


def load_onnx(path_or_bytes):
    """Load an ONNX model (a path, the file's bytes, or an ``onnx.ModelProto``) into an
    :class:`OnnxSession` whose ``run(output_names, input_feed)`` follows onnxruntime."""
    onnx, _ = _import_onnx("load_onnx")
    if isinstance(path_or_bytes, onnx.ModelProto):
        proto = path_or_bytes
    elif isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        proto = onnx.load_from_string(bytes(path_or_bytes))
    elif isinstance(path_or_bytes, (str, os.PathLike)):
        proto = onnx.load(os.fspath(path_or_bytes))
    else:
        raise TypeError(f"load_onnx takes a path, bytes or onnx.ModelProto, got "
                        f"{type(path_or_bytes).__name__}")
    return OnnxSession(proto)


# ------------------------------------------------------------------------------------- export
def save_onnx(model, path=None, initial_state=False, lengths=False, opset=14):
    """Write an rnnfast ``RNN``/``LSTM``/``GRU`` as an ONNX graph of LSTM/GRU/RNN operators.

    Inputs: ``x`` in the model's layout (batch-first if ``batch_first``), then, if
    ``initial_state``, ``h0`` (and ``c0`` for LSTM) shaped ``(num_layers * num_directions, batch,
    hidden_size)``, then, if ``lengths``, ``sequence_lens`` (int32, one per batch row).
    Outputs: ``y`` (rnnfast's layout), ``h_n`` and, for LSTM, ``c_n``.
    An LSTM's variants go along: peepholes as the node's input ``P``, ``clip`` and
    ``input_forget`` as its attributes (ONNX stores ``clip`` as a float32 number).
    Weights and activations keep the model's dtype: a float64 model gives a float64 graph, which
    ``load_onnx`` and ``onnx.reference`` run but onnxruntime's CPU kernels (float only) refuse.
    Returns the serialized bytes if ``path`` is None, else writes the file and returns None.
    """
    onnx, numpy_helper = _import_onnx("save_onnx")
    from onnx import TensorProto, helper

    if not isinstance(model, _RNNBase):
        raise TypeError(f"save_onnx takes an rnnfast RNN, LSTM or GRU, got {type(model).__name__}")
    op = "LSTM" if isinstance(model, LSTM) else ("GRU" if isinstance(model, GRU) else "RNN")
    lstm = op == "LSTM"
    H, D, L = model.hidden_size, model.num_directions, model.num_layers
    elem = TensorProto.DOUBLE if model.dtype == np.float64 else TensorProto.FLOAT
    sd = model.state_dict()
    order = _ONNX_ORDER[op]
    nodes, inits = [], []
    const = lambda name, arr: inits.append(numpy_helper.from_array(np.asarray(arr), name))  # noqa: E731

    cur = "x"
    if model.batch_first:
        nodes.append(helper.make_node("Transpose", ["x"], ["x_tm"], perm=[1, 0, 2]))
        cur = "x_tm"
    const("shape_tbx", np.array([0, 0, -1], np.int64))
    hn_parts, cn_parts = [], []
    for layer in range(L):
        sfx = [f"l{layer}", f"l{layer}_reverse"][:D]
        names = [f"W{layer}", f"R{layer}"]
        const(names[0], np.stack([_regate(sd[f"weight_ih_{s}"], order, H) for s in sfx]))
        const(names[1], np.stack([_regate(sd[f"weight_hh_{s}"], order, H) for s in sfx]))
        if model.bias:
            names.append(f"B{layer}")
            const(names[2], np.stack([np.concatenate([_regate(sd[f"bias_ih_{s}"], order, H),
                                                      _regate(sd[f"bias_hh_{s}"], order, H)])
                                      for s in sfx]))
        else:
            names.append("")
        names.append("sequence_lens" if lengths else "")
        if initial_state:
            const(f"start{layer}", np.array([layer * D], np.int64))
            const(f"end{layer}", np.array([(layer + 1) * D], np.int64))
            if layer == 0:
                const("axis0", np.array([0], np.int64))
            for st in ("h", "c") if lstm else ("h",):
                nodes.append(helper.make_node("Slice", [f"{st}0", f"start{layer}", f"end{layer}",
                                                        "axis0"], [f"{st}0_{layer}"]))
            names += [f"h0_{layer}"] + ([f"c0_{layer}"] if lstm else [])
        if lstm and model.peephole:  # P is the LSTM's 8th input: after initial_h, initial_c
            names += [""] * (6 - len(names)) + [f"P{layer}"]
            const(f"P{layer}", np.stack([_regate(sd[f"weight_peephole_{s}"], _PEEPHOLE_ORDER, H)
                                         for s in sfx]))
        while names and names[-1] == "":
            names.pop()
        attrs = dict(hidden_size=H, direction="bidirectional" if D == 2 else "forward")
        if op == "GRU":
            attrs["linear_before_reset"] = 1 if model.linear_before_reset else 0
        if model.clip is not None:  # any op (ONNX clips every gate's pre-activation)
            attrs["clip"] = float(model.clip)
        if lstm and model.input_forget:
            attrs["input_forget"] = 1
        if op == "RNN":
            attrs["activations"] = [model.nonlinearity.capitalize()] * D
        outs = [f"Y{layer}", f"hn{layer}"] + ([f"cn{layer}"] if lstm else [])
        nodes.append(helper.make_node(op, [cur] + names, outs, name=f"{op.lower()}{layer}", **attrs))
        hn_parts.append(f"hn{layer}")
        cn_parts.append(f"cn{layer}")
        # Y: (T, D, B, H) -> (T, B, D*H), the next layer's input
        nodes.append(helper.make_node("Transpose", [f"Y{layer}"], [f"Yt{layer}"], perm=[0, 2, 1, 3]))
        cur = f"X{layer + 1}"
        nodes.append(helper.make_node("Reshape", [f"Yt{layer}", "shape_tbx"], [cur]))
    if model.batch_first:
        nodes.append(helper.make_node("Transpose", [cur], ["y"], perm=[1, 0, 2]))
    else:
        nodes.append(helper.make_node("Identity", [cur], ["y"]))
    for final, parts in (("h_n", hn_parts), ("c_n", cn_parts))[:2 if lstm else 1]:
        nodes.append(helper.make_node("Concat", parts, [final], axis=0)
                     if L > 1 else helper.make_node("Identity", parts, [final]))

    xshape = ["batch", "seq_len", model.input_size] if model.batch_first else \
        ["seq_len", "batch", model.input_size]
    yshape = xshape[:2] + [D * H]
    sshape = [L * D, "batch", H]
    inputs = [helper.make_tensor_value_info("x", elem, xshape)]
    if initial_state:
        inputs += [helper.make_tensor_value_info(n, elem, sshape)
                   for n in (("h0", "c0") if lstm else ("h0",))]
    if lengths:
        inputs.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["batch"]))
    outputs = [helper.make_tensor_value_info("y", elem, yshape)]
    outputs += [helper.make_tensor_value_info(n, elem, sshape)
                for n in (("h_n", "c_n") if lstm else ("h_n",))]
    graph = helper.make_graph(nodes, f"rnnfast_{op.lower()}", inputs, outputs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="rnnfast")
    proto.ir_version = 8
    onnx.checker.check_model(proto)
    data = proto.SerializeToString()
    if path is None:
        return data
    with open(path, "wb") as f:
        f.write(data)
    return None
