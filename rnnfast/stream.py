"""Stateful streaming inference: feed one time step or a chunk at a time, the state stays inside.

    stream = model.stream(batch=1)
    y_t = stream.step(x_t)            # x_t (B, input_size) -> y_t (B, hidden_size)
    y = stream.feed(x_chunk)          # (T, B, input_size) (batch-first if the model is) -> y
    stream.reset()                    # all rows back to the initial state; reset(rows=[2]) one row
    stream.state                      # h (L, B, H), or (h, c) for LSTM; assignable

Feeding a sequence in chunks of any sizes gives the numbers of one call over the whole sequence
(to float rounding: a row's input projection may be summed in another order when the chunk puts
it in another GEMM tile). Only unidirectional models stream: the reverse direction of a
bidirectional model needs the whole sequence.

`step` is the serving path: after the first call it allocates no arrays (pass `out=` to receive
the output in your own buffer; otherwise the returned array is a view of the stream's buffer,
overwritten by the next step) and repacks no weights (the model's packed weights are reused until
its parameters change).
"""
import numpy as np

from . import _core
from . import _validate as V


class Stream:
    """A batch of independent streams over a unidirectional RNN, LSTM or GRU (see module doc)."""

    def __init__(self, model, batch=1):
        if model.bidirectional:
            raise ValueError("streaming needs a unidirectional model: the reverse direction of a "
                             "bidirectional model needs the whole sequence")
        self.model = model
        self.batch = V.positive_int(batch, "batch")
        self._lstm = model._mode == "LSTM"
        shape = model._state_shape(self.batch)
        self._h = [np.zeros(shape, model.dtype), np.zeros(shape, model.dtype)]
        self._c = [np.zeros(shape, model.dtype), np.zeros(shape, model.dtype)] if self._lstm else None
        self._cur = 0
        # The state is known to be all zeros (new, or reset): the next step passes no initial
        # state, so the core skips that step's recurrent product (it would multiply by zeros).
        self._zero = True
        self._y = np.empty((1, self.batch, model.hidden_size), model.dtype)
        self._desc1 = model._desc(1, self.batch)

    # ----------------------------------------------------------------------------------- state
    @property
    def state(self):
        """Copy of the current state: h, or (h, c) for LSTM, shaped (num_layers, batch, hidden)."""
        h = self._h[self._cur].copy()
        return (h, self._c[self._cur].copy()) if self._lstm else h

    @state.setter
    def state(self, value):
        h0, c0 = self.model._split_hx(value, self.batch)
        self._h[self._cur][...] = 0 if h0 is None else h0
        if self._lstm:
            self._c[self._cur][...] = 0 if c0 is None else c0
        self._zero = value is None

    def reset(self, rows=None):
        """Zero the state of every row, or of the given batch rows (indices or a boolean mask)."""
        if rows is None:
            self._h[self._cur].fill(0)
            if self._lstm:
                self._c[self._cur].fill(0)
            self._zero = True
            return
        idx = np.arange(self.batch)[np.asarray(rows)] if np.asarray(rows).dtype == bool \
            else np.asarray(rows)
        if idx.dtype.kind not in "iu" or idx.ndim != 1 or np.any(idx < 0) or \
                np.any(idx >= self.batch):
            raise ValueError(f"rows must be indices in 0..{self.batch - 1} or a boolean mask of "
                             f"{self.batch}, got {rows!r}")
        self._h[self._cur][:, idx] = 0
        if self._lstm:
            self._c[self._cur][:, idx] = 0

    # --------------------------------------------------------------------------------- compute
    def step(self, x, out=None):
        """Advance every stream by one step. x: (batch, input_size). Returns (batch, hidden)."""
        m = self.model
        if not (isinstance(x, np.ndarray) and x.dtype == m.dtype and x.flags.c_contiguous):
            x = V.float_array(x, "x", m.dtype)
        if x.shape != (self.batch, m.input_size):
            raise ValueError(f"x must have shape {(self.batch, m.input_size)} (batch, input_size), "
                             f"got {x.shape}")
        cur, nxt = self._cur, 1 - self._cur
        h0 = None if self._zero else self._h[cur]
        c0 = None if self._zero or not self._lstm else self._c[cur]
        _core.core_forward(self._desc1, m._params, m._packed_weights(), x, None, h0, c0, None,
                           self._y, self._h[nxt], self._c[nxt] if self._lstm else None, None)
        self._cur = nxt
        self._zero = False
        if out is None:
            return self._y[0]
        out[...] = self._y[0]
        return out

    def feed(self, x):
        """Advance every stream by a chunk of T steps; x and the result follow the model's
        batch_first layout. Returns a new (T, batch, hidden) array (or batch-first)."""
        m = self.model
        shape = np.shape(x)
        if len(shape) == 3 and shape[0 if m.batch_first else 1] != self.batch:
            raise ValueError(f"x has a batch of {shape[0 if m.batch_first else 1]}, the stream has "
                             f"{self.batch} (x shape {shape})")
        hx = (self._h[self._cur], self._c[self._cur]) if self._lstm else self._h[self._cur]
        y, state = m(x, hx=None if self._zero else hx)
        nxt = 1 - self._cur
        if self._lstm:
            self._h[nxt][...], self._c[nxt][...] = state
        else:
            self._h[nxt][...] = state
        self._cur = nxt
        self._zero = False
        return y
