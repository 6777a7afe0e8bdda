"""``SequenceModel``: an optional ``Embedding``, a recurrent stack, an optional ``Linear`` head.

Each part keeps its own flat parameter buffer; the model only wires them together, prefixes their
parameter names (``embedding.weight``, ``rnn.weight_ih_l0``, ``head.bias``) and hands the parts to
whoever updates them (``model.modules()``: a list of objects with flat ``params``/``grads``).
"""
import numpy as np

from . import _validate as V
from ._rnn import _RNNBase
from .layers import Embedding, Linear

__all__ = ["SequenceModel", "SequenceTape"]

_HEAD_ON = ("step", "last")


class SequenceTape:
    """What :meth:`SequenceModel.forward` keeps for :meth:`SequenceModel.backward`. Opaque."""

    __slots__ = ("model", "emb_cache", "rnn_tape", "head_cache", "batch", "out_shape")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


class SequenceModel:
    """Embedding (optional) -> recurrent stack -> Linear head (optional).

    rnn: an ``rnnfast.RNN``/``LSTM``/``GRU``; its ``batch_first`` sets the layout of the inputs
        and of per-step outputs.
    embedding: an ``rnnfast.Embedding`` whose ``embedding_dim`` is ``rnn.input_size``; with it the
        model takes integer ids ``(T, B)`` (``(B, T)`` if batch-first), without it float features
        ``(T, B, input_size)``.
    head: an ``rnnfast.Linear`` whose ``in_features`` is the recurrent output width
        ``num_directions * hidden_size``; without it the model outputs the recurrent features.
    head_on: ``"step"`` applies the head at every time step (out ``(T, B, out)``; steps past a
        row's length see the zero padding of the recurrent output, so mask them in the loss);
        ``"last"`` applies it once per row to the last layer's final state, which with ``lengths``
        is the state at the row's own last step (out ``(B, out)``; bidirectional: the forward
        direction's final state then the reverse direction's, as ``y`` lays them out).

    All parts must share one dtype.
    """

    def __init__(self, rnn, embedding=None, head=None, head_on="step"):
        if not isinstance(rnn, _RNNBase):
            raise TypeError(f"rnn must be an rnnfast RNN, LSTM or GRU, got {type(rnn).__name__}")
        if embedding is not None and not isinstance(embedding, Embedding):
            raise TypeError(f"embedding must be an rnnfast.Embedding or None, got "
                            f"{type(embedding).__name__}")
        if head is not None and not isinstance(head, Linear):
            raise TypeError(f"head must be an rnnfast.Linear or None, got {type(head).__name__}")
        if head_on not in _HEAD_ON:
            raise ValueError(f"head_on must be one of {_HEAD_ON}, got {head_on!r}")
        if embedding is not None and embedding.embedding_dim != rnn.input_size:
            raise ValueError(f"embedding.embedding_dim ({embedding.embedding_dim}) must equal "
                             f"rnn.input_size ({rnn.input_size})")
        features = rnn.num_directions * rnn.hidden_size
        if head is not None and head.in_features != features:
            raise ValueError(f"head.in_features ({head.in_features}) must equal the recurrent "
                             f"output width num_directions * hidden_size ({features})")
        for name, part in (("embedding", embedding), ("head", head)):
            if part is not None and part.dtype != rnn.dtype:
                raise ValueError(f"{name}.dtype ({part.dtype.name}) must equal rnn.dtype "
                                 f"({rnn.dtype.name})")
        self.rnn, self.embedding, self.head, self.head_on = rnn, embedding, head, head_on
        self.dtype = rnn.dtype
        self._parts = [(n, p) for n, p in (("embedding", embedding), ("rnn", rnn), ("head", head))
                       if p is not None]

    # ------------------------------------------------------------------------------- parameters
    def modules(self):
        """The parts, in data-flow order: each has its own flat ``params``/``grads`` buffer (pass
        this list to an optimizer)."""
        return [p for _, p in self._parts]

    def named_modules(self):
        """``[(prefix, part)]``: ``embedding``, ``rnn``, ``head`` (those present)."""
        return list(self._parts)

    def named_parameters(self):
        """Yield ``(prefix.name, read-only view)`` for every parameter of every part."""
        for prefix, part in self._parts:
            for name, v in part.named_parameters():
                yield f"{prefix}.{name}", v

    def named_grads(self):
        """Yield ``(prefix.name, gradient view)`` for every parameter of every part."""
        for prefix, part in self._parts:
            for name, g in part.named_grads():
                yield f"{prefix}.{name}", g

    def num_parameters(self):
        return sum(p.params.size for p in self.modules())

    def zero_grad(self):
        for part in self.modules():
            part.zero_grad()

    def state_dict(self):
        """Parameter copies under prefixed PyTorch names (``rnn.weight_ih_l0``, ``head.bias``, ...)."""
        out = {}
        for prefix, part in self._parts:
            for name, v in part.state_dict().items():
                out[f"{prefix}.{name}"] = v
        return out

    def load_state_dict(self, state_dict):
        """Strict load by prefixed name: every key present, none extra, shapes exact. Everything is
        checked before any part is written."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        shapes = {name: v.shape for name, v in self.named_parameters()}
        missing = [k for k in shapes if k not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in shapes]
        if missing or unexpected:
            raise ValueError(f"state_dict keys do not match: missing {missing}, unexpected {unexpected}")
        per_part = {prefix: {} for prefix, _ in self._parts}
        for key, shape in shapes.items():
            arr = V.float_array(state_dict[key], f"state_dict[{key!r}]", self.dtype)
            V.check_shape(arr, shape, f"state_dict[{key!r}]", "")
            prefix, name = key.split(".", 1)
            per_part[prefix][name] = arr
        for prefix, part in self._parts:
            part.load_state_dict(per_part[prefix])

    # ---------------------------------------------------------------------------------- compute
    def _rnn_input(self, x, train):
        if self.embedding is None:
            return x, None
        ids = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x)
        order = "(batch, seq_len)" if self.rnn.batch_first else "(seq_len, batch)"
        if ids.ndim != 2:
            raise ValueError(f"with an embedding, x must be 2-D integer ids {order}, got shape "
                             f"{ids.shape}")
        return self.embedding.forward(ids, train=train)

    def _last_features(self, state):
        """(B, D*H) from the last layer's final hidden state(s)."""
        hn = state[0] if isinstance(state, tuple) else state
        D = self.rnn.num_directions
        last = hn[-D:]                                   # (D, B, H)
        return np.ascontiguousarray(last.transpose(1, 0, 2)).reshape(last.shape[1], -1)

    def forward(self, x, hx=None, lengths=None, train=True):
        """Run the model. x: ids ``(T, B)`` with an embedding, else features ``(T, B, I)``
        (batch-first if the rnn is); hx, lengths: as for the rnn.

        Returns ``(out, state, tape)``: ``out`` is ``(T, B, out)`` for ``head_on="step"`` and
        ``(B, out)`` for ``"last"`` (``out`` = the recurrent width when there is no head), ``state``
        the rnn's final state, ``tape`` what :meth:`backward` needs (``None`` unless ``train``).
        """
        if not isinstance(train, (bool, np.bool_)):
            raise TypeError(f"train must be a bool, got {train!r}")
        e, emb_cache = self._rnn_input(x, train)
        if train:
            y, state, rnn_tape = self.rnn.forward(e, hx, lengths, train=True)
        else:  # the rnn's call: its lean path when the arrays are ready for the core
            (y, state), rnn_tape = self.rnn(e, hx, lengths), None
        feats = y if self.head_on == "step" else self._last_features(state)
        if self.head is not None:
            out, head_cache = self.head.forward(feats, train=train)
        else:
            out, head_cache = feats, None
        tape = None
        if train:
            B = y.shape[0] if self.rnn.batch_first else y.shape[1]
            tape = SequenceTape(model=self, emb_cache=emb_cache, rnn_tape=rnn_tape,
                                head_cache=head_cache, batch=B, out_shape=out.shape)
        return out, state, tape

    def __call__(self, x, hx=None, lengths=None):
        """Inference: ``(out, state)``. See :meth:`forward`."""
        out, state, _ = self.forward(x, hx, lengths, train=False)
        return out, state

    def backward(self, tape, dout, dstate=None):
        """Backpropagate ``dout`` (the shape of ``out``, or ``None``) and ``dstate`` (gradient
        w.r.t. the returned final state, as for the rnn; optional) through head, rnn and embedding.
        Every parameter gradient is ADDED into its part's ``grads``.

        Returns ``(dx, dhx)``: ``dx`` w.r.t. the input features (``None`` with an embedding: ids
        have no gradient) and ``dhx`` w.r.t. the initial state.
        """
        if not isinstance(tape, SequenceTape):
            raise TypeError(f"tape must be the third value returned by forward(..., train=True), "
                            f"got {type(tape).__name__}")
        if tape.model is not self:
            raise ValueError("this tape was recorded by a different model")
        dfeats = None
        if dout is not None:
            if self.head is not None:
                dfeats = self.head.backward(tape.head_cache, dout)
            else:
                dfeats = V.float_array(dout, "dout", self.dtype)
                V.check_shape(dfeats, tape.out_shape, "dout", "(the shape of out)")
        if self.head_on == "step":
            dy, rnn_dstate = dfeats, dstate
        else:
            dy, rnn_dstate = None, self._add_last_grad(dfeats, dstate, tape.batch)
        dx, dhx = self.rnn.backward(tape.rnn_tape, dy, rnn_dstate)
        if self.embedding is not None:
            self.embedding.backward(tape.emb_cache, dx)
            dx = None
        return dx, dhx

    def _add_last_grad(self, dfeats, dstate, B):
        """dstate for the rnn: the user's plus the head's gradient at the last layer's final h."""
        if dfeats is None:
            return dstate
        rnn = self.rnn
        D, H = rnn.num_directions, rnn.hidden_size
        if rnn._mode == "LSTM":
            if dstate is None:
                user_h, user_c = None, None
            elif isinstance(dstate, (tuple, list)) and len(dstate) == 2:
                user_h, user_c = dstate
            else:
                raise TypeError(f"LSTM dstate must be a tuple (dh_n, dc_n), got "
                                f"{type(dstate).__name__}")
        else:
            user_h, user_c = dstate, None
        dhn = np.zeros((rnn.num_layers * D, B, H), dtype=self.dtype)
        if user_h is not None:
            user_h = V.float_array(user_h, "dh_n", self.dtype)
            V.check_shape(user_h, dhn.shape, "dh_n",
                          "(num_layers * num_directions, batch, hidden_size)")
            dhn += user_h
        dhn[-D:] += dfeats.reshape(B, D, H).transpose(1, 0, 2)
        return (dhn, user_c) if rnn._mode == "LSTM" else dhn

    def __repr__(self):
        parts = ", ".join(f"{n}={p!r}" for n, p in self._parts)
        return f"SequenceModel({parts}, head_on={self.head_on!r})"
