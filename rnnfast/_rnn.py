"""Recurrent layers with PyTorch semantics: ``RNN``, ``LSTM``, ``GRU``.

A model owns ONE flat parameter buffer (PyTorch's tensors are views into it, in PyTorch's order
and layout) and a gradient buffer that mirrors it. The C++ core sees the weights re-laid into
GEMM panels; those packed weights are cached and rebuilt only when the parameter version changes
(every write through the public API bumps it).
"""
import math
import numbers
import sys
import threading

import numpy as np

from . import _core
from . import _validate as V
from ._params import FlatParams

_CELLS = {"RNN_TANH": 0, "RNN_RELU": 1, "LSTM": 2, "GRU": 3}
# The core's code of the GRU whose reset gate comes before W_hn (GRU(linear_before_reset=False))
_CELL_GRU_RESET_BEFORE = 4
_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}


class Tape:
    """What a training forward keeps for :meth:`backward`. Opaque to users; use it once or many times."""

    __slots__ = ("model", "version", "desc", "x", "lengths", "h0", "c0", "mask", "workspace",
                 "y_shape")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


class _RNNBase(FlatParams):
    """Shared machinery of RNN, LSTM and GRU. Not instantiated directly."""

    _mode = None
    # LSTM variants (see LSTM); off for every other model
    peephole = False
    input_forget = False
    clip = None

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype="float32", seed=None):
        self.input_size = V.positive_int(input_size, "input_size")
        self.hidden_size = V.positive_int(hidden_size, "hidden_size")
        self.num_layers = V.positive_int(num_layers, "num_layers", maximum=100_000)
        self.bias = self._flag(bias, "bias")
        self.batch_first = self._flag(batch_first, "batch_first")
        self.bidirectional = self._flag(bidirectional, "bidirectional")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating, np.integer)):
            raise TypeError(f"dropout must be a number in [0, 1), got {dropout!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        self.dtype = V.model_dtype(dtype)  # set again by _init_params; _desc needs it before
        self.num_directions = 2 if self.bidirectional else 1
        self._gates = _GATES[self._mode]

        self._packed = None  # (key, packed array), replaced as one object
        self._lock = threading.Lock()
        self._init_params(self._param_layout(), dtype, seed)
        # The core's description of the model, less T and B; from here on the attributes in
        # _FIXED refuse assignment, so this stays true.
        self._base = (self._cell_code(), 0 if self.dtype.char == "f" else 1, self.input_size,
                      self.hidden_size, self.num_layers, self.num_directions,
                      1 if self.bias else 0, 1 if self.peephole else 0,
                      1 if self.input_forget else 0, 0.0 if self.clip is None else float(self.clip))
        if self._params.size != _core.core_param_count(self._desc(1, 1)):
            raise RuntimeError("rnnfast internal error: parameter layout disagrees with the core")

    # What shapes the parameters and the kernels: set in __init__, read-only afterwards (build a
    # new model instead). batch_first and dropout stay settable: every call reads them.
    _FIXED = frozenset(("input_size", "hidden_size", "num_layers", "bias", "bidirectional",
                        "num_directions", "dtype", "peephole", "input_forget", "clip",
                        "nonlinearity", "linear_before_reset", "_mode", "_gates", "_base"))

    def __setattr__(self, name, value):
        if name in _RNNBase._FIXED and "_base" in self.__dict__:
            raise AttributeError(f"{type(self).__name__}.{name} is fixed when the model is built "
                                 f"(it shapes the parameters or the kernels); build a new model")
        object.__setattr__(self, name, value)

    def __getstate__(self):
        # The lock cannot be pickled, and the packed weights are a cache rebuilt on first use.
        state = super().__getstate__()
        del state["_lock"]
        state["_packed"] = None
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._lock = threading.Lock()

    @staticmethod
    def _check_clip(clip):
        """ONNX's ``clip`` option: a positive finite number (returned as a float) or None."""
        if clip is not None:
            if isinstance(clip, (bool, np.bool_)) or not isinstance(clip, numbers.Real):
                raise TypeError(f"clip must be a positive finite number or None, got {clip!r}")
            if not (math.isfinite(float(clip)) and float(clip) > 0):
                raise ValueError(f"clip must be a positive finite number or None, got {clip!r}")
            clip = float(clip)
        return clip

    @staticmethod
    def _flag(value, name):
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool, got {value!r}")
        return bool(value)

    # ----------------------------------------------------------------------------------- layout
    def _param_layout(self):
        """[(name, shape)] in PyTorch's order: per layer, per direction: w_ih, w_hh, b_ih, b_hh
        (and, for an LSTM with peepholes, weight_peephole)."""
        H, G, D = self.hidden_size, self._gates, self.num_directions
        out = []
        for layer in range(self.num_layers):
            in_size = self.input_size if layer == 0 else D * H
            for d in range(D):
                sfx = f"l{layer}" + ("_reverse" if d else "")
                shapes = [("weight_ih_", (G * H, in_size)), ("weight_hh_", (G * H, H))]
                if self.bias:
                    shapes += [("bias_ih_", (G * H,)), ("bias_hh_", (G * H,))]
                if self.peephole:  # p_i, p_f, p_o
                    shapes.append(("weight_peephole_", (3 * H,)))
                for prefix, shape in shapes:
                    out.append((prefix + sfx, shape))
        return out

    def _cell_code(self):
        return _CELLS[self._mode]

    def _desc(self, T, B):
        """The core's description of a call on T steps of B rows."""
        b = self._base
        return b[:2] + (T if type(T) is int else int(T), B if type(B) is int else int(B)) + b[2:]

    # ------------------------------------------------------------------------------- parameters
    def reset_parameters(self):
        """PyTorch's default initialisation: every parameter uniform in ±1/sqrt(hidden_size)."""
        k = 1.0 / np.sqrt(self.hidden_size)
        self._params[:] = self._rng.uniform(-k, k, size=self._params.size)
        self._mark_params_changed()

    def _packed_weights(self):
        """Packed weights for the current parameters and kernel path; rebuilt only after a change.
        The cache is one (key, array) tuple, read and replaced as a whole, so a reader never pairs
        one version's key with another's array."""
        cached = self._packed
        # The hit path compares the key's parts in place, building no key tuple (every lean call
        # and stream step comes through here: 127 -> 97 ns on a small model).
        if cached is not None and cached[0][0] == self._version and \
                cached[0][1] == _core.core_isa_name():
            return cached[1]
        key = (self._version, _core.core_isa_name())
        with self._lock:
            cached = self._packed
            if cached is None or cached[0] != key:
                desc = self._desc(1, 1)
                size = _core.core_packed_size(desc)
                packed = None if cached is None else cached[1]
                # A training loop repacks after every update: the old buffer is rewritten in
                # place (no fresh pages to fault in: ~0.2 ms of a 0.9 ms GRU H512 repack)
                # when nothing but this cache refers to it, neither the array (a call that
                # is using it, a caller that kept it) nor the tuple (a reader between its
                # key check and taking the array). Counts: the owner, our local, the argument.
                if packed is None or packed.size != size or sys.getrefcount(cached) != 3 \
                        or sys.getrefcount(packed) != 3:
                    packed = np.empty(size, dtype=self.dtype)
                self._packed = None  # if packing fails, no key names a half-written buffer
                _core.core_pack(desc, self._params, packed)
                cached = self._packed = (key, packed)
        return cached[1]

    # ---------------------------------------------------------------------------------- compute
    def _state_shape(self, B):
        return (self.num_layers * self.num_directions, B, self.hidden_size)

    def _prepare(self, x, hx, lengths):
        x = V.float_array(x, "x", self.dtype)
        layout = "(batch, seq_len, input_size)" if self.batch_first else "(seq_len, batch, input_size)"
        if x.ndim != 3:
            raise ValueError(f"x must be 3-D {layout}, got {x.ndim}-D with shape {x.shape}")
        if x.shape[2] != self.input_size:
            raise ValueError(f"x must have input_size={self.input_size} features (last axis), "
                             f"got {x.shape[2]} (shape {x.shape})")
        if self.batch_first:
            x = np.ascontiguousarray(x.transpose(1, 0, 2))
        T, B = x.shape[0], x.shape[1]
        if T == 0 or B == 0:
            raise ValueError(f"x must have at least one time step and one batch row, got shape "
                             f"{x.shape} {layout}")
        h0, c0 = self._split_hx(hx, B)
        return x, h0, c0, V.lengths_array(lengths, B, T)

    def _split_hx(self, hx, B):
        if hx is None:
            return None, None
        shape = self._state_shape(B)
        meaning = "(num_layers * num_directions, batch, hidden_size)"
        if self._mode == "LSTM":
            if not isinstance(hx, (tuple, list)) or len(hx) != 2:
                raise TypeError(f"LSTM hx must be a tuple (h0, c0), got {type(hx).__name__}"
                                + (f" of length {len(hx)}" if isinstance(hx, (tuple, list)) else ""))
            h0 = None if hx[0] is None else V.float_array(hx[0], "h0", self.dtype)
            c0 = None if hx[1] is None else V.float_array(hx[1], "c0", self.dtype)
            if h0 is not None:
                V.check_shape(h0, shape, "h0", meaning)
            if c0 is not None:
                V.check_shape(c0, shape, "c0", meaning)
            return h0, c0
        h0 = V.float_array(hx, "hx", self.dtype)
        V.check_shape(h0, shape, "hx", meaning)
        return h0, None

    def _dropout_mask(self, T, B, train):
        if not train or self.dropout == 0.0 or self.num_layers == 1:
            return None
        keep = self._rng.random((self.num_layers - 1, T, B, self.num_directions * self.hidden_size))
        return ((keep >= self.dropout) / (1.0 - self.dropout)).astype(self.dtype)

    def _pack_state(self, hn, cn):
        return (hn, cn) if self._mode == "LSTM" else hn

    def _to_user(self, y):
        return np.ascontiguousarray(y.transpose(1, 0, 2)) if self.batch_first else y

    def forward(self, x, hx=None, lengths=None, train=True):
        """Run the layer on a batch of sequences.

        x: ``(T, B, input_size)`` (``(B, T, input_size)`` if ``batch_first``), any float dtype.
        hx: initial state ``(num_layers * num_directions, B, hidden_size)``; for LSTM a tuple
            ``(h0, c0)``; ``None`` means zeros.
        lengths: optional ``B`` integers in ``1..T``: row ``b`` is valid for its first
            ``lengths[b]`` steps (PyTorch's packed-sequence semantics; no sorting needed): outputs
            past it are zero and the final state is the one at the row's last valid step.
        train: keep what :meth:`backward` needs and apply dropout between layers.

        Returns ``(y, state, tape)``: ``y`` is ``(T, B, D*hidden_size)`` (batch-first if set),
        ``state`` is ``h_n`` or, for LSTM, ``(h_n, c_n)``, and ``tape`` is ``None`` unless ``train``.
        """
        if not isinstance(train, (bool, np.bool_)):
            raise TypeError(f"train must be a bool, got {train!r}")
        x_user = x
        x, h0, c0, lens = self._prepare(x, hx, lengths)
        T, B = x.shape[0], x.shape[1]
        desc = self._desc(T, B)
        packed = self._packed_weights()
        y = np.empty((T, B, self.num_directions * self.hidden_size), dtype=self.dtype)
        hn = np.empty(self._state_shape(B), dtype=self.dtype)
        cn = np.empty_like(hn) if self._mode == "LSTM" else None
        if train and lens is not None and lens.min() < T:
            # Padding never reaches the outputs, but dW_ih sums dG^T x over every step, where
            # 0 * NaN (or inf) in the padding would poison it: keep zeros there instead.
            pad = np.arange(T)[:, None] >= lens[None, :]
            if np.shares_memory(x, x_user):
                x = x.copy()
            x[pad] = 0
        mask = self._dropout_mask(T, B, train)
        ws = np.empty(_core.core_workspace_size(desc), dtype=self.dtype) if train else None
        _core.core_forward(desc, self._params, packed, x, lens, h0, c0, mask, y, hn, cn, ws)
        tape = None
        if train:
            tape = Tape(model=self, version=self._version, desc=desc, x=x, lengths=lens, h0=h0,
                        c0=c0, mask=mask, workspace=ws, y_shape=y.shape)
        return self._to_user(y), self._pack_state(hn, cn), tape

    def __call__(self, x, hx=None, lengths=None):
        """Inference: ``y, h_n`` (RNN, GRU) or ``y, (h_n, c_n)`` (LSTM). See :meth:`forward`."""
        if lengths is None:
            # Lean path: arrays the core can take as they are go straight to it (2.3 us per call
            # instead of forward's 6.4 with its checks and conversions); anything else falls
            # through.
            lstm = self._mode == "LSTM"
            lean, h0, c0 = True, None, None
            if hx is not None:
                if not lstm:
                    h0 = hx
                elif type(hx) is tuple and len(hx) == 2:
                    h0, c0 = hx
                else:
                    lean = False
            if lean:
                r = _core.core_infer(self._base, self._params, self._packed_weights(), x, h0, c0,
                                     lstm, self.batch_first)
                if r is not None:
                    return r[0], ((r[1], r[2]) if lstm else r[1])
        y, state, _ = self.forward(x, hx, lengths, train=False)
        return y, state

    def backward(self, tape, dy, dstate=None):
        """Backpropagation through time for a training forward.

        dy: gradient w.r.t. ``y`` (same shape as ``y``) or ``None``; dstate: gradient w.r.t. the
        final state, ``dh_n`` or for LSTM ``(dh_n, dc_n)`` (any element may be ``None``).
        Parameter gradients are ADDED into :attr:`grads`. Returns ``(dx, dhx)`` with ``dx`` shaped
        like ``x`` and ``dhx`` = ``dh0`` or, for LSTM, ``(dh0, dc0)``.
        """
        if not isinstance(tape, Tape):
            raise TypeError(f"tape must be the third value returned by forward(..., train=True), "
                            f"got {type(tape).__name__}")
        if tape.model is not self:
            raise ValueError("this tape was recorded by a different model")
        if tape.version != self._version:
            raise ValueError("parameters changed after this tape was recorded; run forward again")
        T, B = tape.desc[2], tape.desc[3]
        if dy is not None:
            dy = V.float_array(dy, "dy", self.dtype)
            user_shape = (B, T, tape.y_shape[2]) if self.batch_first else tape.y_shape
            V.check_shape(dy, user_shape, "dy", "(the shape of y)")
            if self.batch_first:
                dy = np.ascontiguousarray(dy.transpose(1, 0, 2))
        dhn, dcn = self._split_dstate(dstate, B)
        dx = np.empty_like(tape.x)
        dh0 = np.empty(self._state_shape(B), dtype=self.dtype)
        dc0 = np.empty_like(dh0) if self._mode == "LSTM" else None
        # the tape's version is the current one, so the cached packed weights are the tape's
        _core.core_backward(tape.desc, self._params, self._packed_weights(), tape.x, tape.lengths,
                            tape.h0, tape.c0, tape.mask, tape.workspace, dy, dhn, dcn, dx, dh0,
                            dc0, self.grads)
        return self._to_user(dx), self._pack_state(dh0, dc0)

    def stream(self, batch=1):
        """A :class:`rnnfast.stream.Stream` over this model: step-by-step inference that keeps the
        state inside (unidirectional models only)."""
        from .stream import Stream

        return Stream(self, batch)

    def _split_dstate(self, dstate, B):
        if dstate is None:
            return None, None
        shape = self._state_shape(B)
        meaning = "(num_layers * num_directions, batch, hidden_size)"
        if self._mode == "LSTM":
            if not isinstance(dstate, (tuple, list)) or len(dstate) != 2:
                raise TypeError(f"LSTM dstate must be a tuple (dh_n, dc_n), got "
                                f"{type(dstate).__name__}")
            out = []
            for name, v in zip(("dh_n", "dc_n"), dstate):
                if v is not None:
                    v = V.float_array(v, name, self.dtype)
                    V.check_shape(v, shape, name, meaning)
                out.append(v)
            return tuple(out)
        dhn = V.float_array(dstate, "dh_n", self.dtype)
        V.check_shape(dhn, shape, "dh_n", meaning)
        return dhn, None

    def __repr__(self):
        extra = ""
        if self._mode.startswith("RNN"):
            extra = f", nonlinearity={self.nonlinearity!r}"
        if self.peephole:
            extra += ", peephole=True"
        if self.input_forget:
            extra += ", input_forget=True"
        if self.clip is not None:
            extra += f", clip={self.clip!r}"
        if self._mode == "GRU" and not self.linear_before_reset:
            extra += ", linear_before_reset=False"
        return (f"{type(self).__name__}({self.input_size}, {self.hidden_size}, "
                f"num_layers={self.num_layers}, bias={self.bias}, batch_first={self.batch_first}, "
                f"dropout={self.dropout}, bidirectional={self.bidirectional}{extra}, "
                f"dtype={self.dtype.name!r})")


class LSTM(_RNNBase):
    """Long short-term memory layer stack with ``torch.nn.LSTM`` semantics (gates i, f, g, o).

    Calling it returns ``y, (h_n, c_n)``. See :meth:`_RNNBase.forward` for shapes and options.

    ONNX's optional LSTM features (off by default; a model with any of them on has no
    ``torch.nn.LSTM`` equivalent):

    peephole: gates see the cell state, ``i = σ(a_i + p_i ⊙ c_{t-1})``,
        ``f = σ(a_f + p_f ⊙ c_{t-1})``, ``o = σ(a_o + p_o ⊙ c_t)``, with a parameter
        ``weight_peephole_l{k}`` (``_reverse``) of ``3 * hidden_size`` values ``p_i, p_f, p_o``.
    input_forget: couple the gates, ``f = 1 - i`` (the forget gate's weights are then unused
        and get zero gradients).
    clip: a positive finite number ``c``: every gate's pre-activation (peephole term included)
        is clamped to ``[-c, c]`` before its activation; ``None`` for no clipping.
    """

    _mode = "LSTM"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype="float32", seed=None, *,
                 peephole=False, input_forget=False, clip=None):
        self.peephole = self._flag(peephole, "peephole")
        self.input_forget = self._flag(input_forget, "input_forget")
        self.clip = self._check_clip(clip)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed)


class GRU(_RNNBase):
    """Gated recurrent unit stack with ``torch.nn.GRU`` semantics (gates r, z, n; the reset gate
    multiplies ``W_hn h + b_hn``). Calling it returns ``y, h_n``.

    ``linear_before_reset=False`` selects the other GRU form (ONNX's default
    ``linear_before_reset=0``, Keras' ``reset_after=False``): the reset gate scales the state
    before the recurrent product, ``n = tanh(W_in x + b_in + W_hn (r * h) + b_hn)``. Parameters
    keep PyTorch's names and layout; PyTorch itself has no such GRU (``to_torch`` refuses it).

    ``clip`` (ONNX's option, either form): a positive finite number ``c``: the pre-activations of
    r, z and n (for n the whole argument of its tanh, reset term included) are clamped to
    ``[-c, c]`` before their activations; ``None`` (default) for no clipping.
    """

    _mode = "GRU"

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False,
                 dropout=0.0, bidirectional=False, dtype="float32", seed=None, *,
                 linear_before_reset=True, clip=None):
        self.linear_before_reset = self._flag(linear_before_reset, "linear_before_reset")
        self.clip = self._check_clip(clip)
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed)

    def _cell_code(self):
        return _CELLS["GRU"] if self.linear_before_reset else _CELL_GRU_RESET_BEFORE


class RNN(_RNNBase):
    """Elman RNN stack with ``torch.nn.RNN`` semantics: ``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``,
    ``act`` = tanh or relu. Calling it returns ``y, h_n``.

    ``clip`` (ONNX's option): a positive finite number ``c``: the pre-activation is clamped to
    ``[-c, c]`` before ``act``; ``None`` (default) for no clipping."""

    def __init__(self, input_size, hidden_size, num_layers=1, nonlinearity="tanh", bias=True,
                 batch_first=False, dropout=0.0, bidirectional=False, dtype="float32", seed=None,
                 *, clip=None):
        self.clip = self._check_clip(clip)
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        self._mode = "RNN_TANH" if nonlinearity == "tanh" else "RNN_RELU"
        super().__init__(input_size, hidden_size, num_layers, bias, batch_first, dropout,
                         bidirectional, dtype, seed)
