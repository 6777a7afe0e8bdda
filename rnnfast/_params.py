"""One flat parameter buffer with named views, and a gradient buffer that mirrors it: the
parameter bookkeeping every rnnfast model and layer shares (optimizers see only the flat buffers)."""
import math

import numpy as np

from . import _validate as V


class FlatParams:
    """Flat-buffer parameter bookkeeping. Subclasses call :meth:`_init_params` with their
    ``[(name, shape)]`` layout (in the order the tensors sit in the buffer) and define
    ``reset_parameters``."""

    def _init_params(self, layout, dtype, seed):
        self.dtype = V.model_dtype(dtype)
        self._layout, off = [], 0
        for name, shape in layout:
            self._layout.append((name, off, tuple(shape)))
            off += math.prod(shape)  # Python integers: no int64 wrap-around
        if off > V.MAX_ELEMENTS:
            raise ValueError(f"this model would have {off} parameters, more than the "
                             f"{V.MAX_ELEMENTS} rnnfast allows (check the sizes)")
        self._params = np.zeros(off, dtype=self.dtype)
        self.grads = np.zeros(off, dtype=self.dtype)
        self._build_views()
        self._version = 0
        self._rng = np.random.default_rng(seed)
        self.reset_parameters()

    def _build_views(self):
        self._param_views = {n: self._params[o:o + math.prod(s)].reshape(s)
                             for n, o, s in self._layout}
        self._grad_views = {n: self.grads[o:o + math.prod(s)].reshape(s)
                            for n, o, s in self._layout}

    # Pickling and copy.deepcopy: the named views are left out and rebuilt over the restored
    # buffers (pickled on their own, each would come back as a copy that no longer follows them).
    def __getstate__(self):
        state = self.__dict__.copy()
        del state["_param_views"], state["_grad_views"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._build_views()

    @property
    def params(self):
        """All parameters as one flat read-only array (write through load_state_dict or set_params)."""
        v = self._params.view()
        v.flags.writeable = False
        return v

    @property
    def version(self):
        """Parameter version: bumped by every write through the public API."""
        return self._version

    def _mark_params_changed(self):
        """Record that the parameter buffer was written (caches recorded before are then stale)."""
        self._version += 1

    def _param_buffer(self):
        """The writable flat parameter buffer, for in-package writers (optimizers, initialisers).

        Whoever writes into it must call :meth:`_mark_params_changed` afterwards.
        """
        return self._params

    def named_parameters(self):
        """Yield ``(name, array)``: read-only views into :attr:`params`, with PyTorch's names."""
        for name, _, _ in self._layout:
            v = self._param_views[name].view()
            v.flags.writeable = False
            yield name, v

    def named_grads(self):
        """Yield ``(name, array)``: writable views into :attr:`grads`, with PyTorch's names."""
        for name, _, _ in self._layout:
            yield name, self._grad_views[name]

    def zero_grad(self):
        """Set every gradient to zero (gradients accumulate across backward calls)."""
        self.grads.fill(0)

    def set_params(self, flat):
        """Overwrite all parameters from a flat array of ``params.size`` values."""
        flat = V.float_array(flat, "params", self.dtype)
        V.check_shape(flat, self._params.shape, "params", "(all parameters, flat)")
        self._params[:] = flat
        self._mark_params_changed()

    def state_dict(self):
        """Dict of parameter copies with PyTorch's names and shapes."""
        return {name: self._param_views[name].copy() for name, _, _ in self._layout}

    def load_state_dict(self, state_dict):
        """Load parameters by name. Strict: every key must be present, none extra, shapes exact.
        Nothing is written unless everything checks out."""
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        expected = [n for n, _, _ in self._layout]
        missing = [k for k in expected if k not in state_dict]
        unexpected = [k for k in state_dict.keys() if k not in self._param_views]
        if missing or unexpected:
            raise ValueError(f"state_dict keys do not match: missing {missing}, unexpected {unexpected}")
        arrays = {}
        for name, _, shape in self._layout:
            arr = V.float_array(state_dict[name], f"state_dict[{name!r}]", self.dtype)
            V.check_shape(arr, shape, f"state_dict[{name!r}]", "")
            arrays[name] = arr
        for name, arr in arrays.items():
            self._param_views[name][...] = arr
        self._mark_params_changed()

    def _check_cache(self, cache, cls):
        if not isinstance(cache, cls):
            raise TypeError(f"cache must be the second value returned by {type(self).__name__}"
                            f".forward(..., train=True), got {type(cache).__name__}")
        if cache.layer is not self:
            raise ValueError("this cache was recorded by a different layer")
        if cache.version != self._version:
            raise ValueError("parameters changed after this cache was recorded; run forward again")
