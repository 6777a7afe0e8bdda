"""The feed-forward pieces around the recurrent layers: ``Embedding`` (ids -> vectors) and
``Linear`` (a dense layer on the last axis), with PyTorch's names, shapes and default inits.

Like ``RNN``/``LSTM``/``GRU``, each layer owns ONE flat parameter buffer (its named tensors are
views into it, in PyTorch's order) and a gradient buffer that mirrors it, so an optimizer updates
any of them with one flat loop. Backward passes ADD into :attr:`grads`.

Matrix products run on rnnfast's own GEMM and threads (numpy's BLAS keeps threads of its own that
spin after each call and fight rnnfast's for the cores; measured: the demo trained 2.6x faster
with OpenBLAS on one thread), so results are also identical for any thread count.
"""
import numbers

import numpy as np

from . import _core
from . import _validate as V
from ._params import FlatParams as _FlatParams

__all__ = ["Linear", "Embedding"]


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return bool(value)


class LinearCache:
    """What :meth:`Linear.forward` keeps for :meth:`Linear.backward`. Opaque to users."""

    __slots__ = ("layer", "version", "x2", "x_shape")

    def __init__(self, layer, version, x2, x_shape):
        self.layer, self.version, self.x2, self.x_shape = layer, version, x2, x_shape


class Linear(_FlatParams):
    """``y = x W^T + b`` on the last axis of an input of any rank (``torch.nn.Linear``).

    Parameters ``weight`` ``(out_features, in_features)`` and ``bias`` ``(out_features,)``, both
    initialised like PyTorch: uniform in ±1/sqrt(in_features). ``seed`` makes that reproducible.
    Apply it to every time step of ``(T, B, H)`` or to a last state ``(B, H)`` alike.
    """

    def __init__(self, in_features, out_features, bias=True, dtype="float32", seed=None):
        self.in_features = V.positive_int(in_features, "in_features")
        self.out_features = V.positive_int(out_features, "out_features")
        self.bias = _flag(bias, "bias")
        layout = [("weight", (self.out_features, self.in_features))]
        if self.bias:
            layout.append(("bias", (self.out_features,)))
        self._init_params(layout, dtype, seed)

    def reset_parameters(self):
        """PyTorch's default: weight and bias uniform in ±1/sqrt(in_features)."""
        k = 1.0 / np.sqrt(self.in_features)
        self._params[:] = self._rng.uniform(-k, k, size=self._params.size)
        self._mark_params_changed()

    def forward(self, x, train=True):
        """x: ``(..., in_features)`` floats. Returns ``(y, cache)``: ``y`` ``(..., out_features)``
        and what :meth:`backward` needs (``None`` unless ``train``)."""
        if np.ndim(x) == 0:
            raise ValueError(f"x must have in_features={self.in_features} on its last axis "
                             f"(shape (..., {self.in_features})), got a 0-d value")
        x = V.float_array(x, "x", self.dtype)
        if x.shape[-1] != self.in_features:
            raise ValueError(f"x must have in_features={self.in_features} on its last axis "
                             f"(shape (..., {self.in_features})), got shape {x.shape}")
        x2 = x.reshape(-1, self.in_features)
        y2 = np.empty((x2.shape[0], self.out_features), self.dtype)
        _core.core_gemm(x2, self._param_views["weight"], y2, trans_b=True)  # x W^T
        if self.bias:
            y2 += self._param_views["bias"]
        y = y2.reshape(x.shape[:-1] + (self.out_features,))
        cache = LinearCache(self, self._version, x2, x.shape) if train else None
        return y, cache

    def __call__(self, x):
        """Inference: ``y`` only."""
        return self.forward(x, train=False)[0]

    def backward(self, cache, dy):
        """dy: gradient w.r.t. ``y`` (its shape). Adds ``dW = dy^T x`` and ``db = sum dy`` into
        :attr:`grads`; returns ``dx`` (the shape of ``x``)."""
        self._check_cache(cache, LinearCache)
        dy = V.float_array(dy, "dy", self.dtype)
        V.check_shape(dy, cache.x_shape[:-1] + (self.out_features,), "dy", "(the shape of y)")
        dy2 = dy.reshape(-1, self.out_features)
        _core.core_gemm(dy2, cache.x2, self._grad_views["weight"], trans_a=True,
                        accumulate=True)                                      # dW += dy^T x
        if self.bias:
            self._grad_views["bias"] += dy2.sum(axis=0)
        dx2 = np.empty((dy2.shape[0], self.in_features), self.dtype)
        _core.core_gemm(dy2, self._param_views["weight"], dx2)                # dx = dy W
        return dx2.reshape(cache.x_shape)

    def __repr__(self):
        return (f"Linear({self.in_features}, {self.out_features}, bias={self.bias}, "
                f"dtype={self.dtype.name!r})")


class EmbeddingCache:
    """What :meth:`Embedding.forward` keeps for :meth:`Embedding.backward`. Opaque to users."""

    __slots__ = ("layer", "version", "ids", "ids_shape")

    def __init__(self, layer, version, ids, ids_shape):
        self.layer, self.version, self.ids, self.ids_shape = layer, version, ids, ids_shape


class Embedding(_FlatParams):
    """A lookup table ``weight`` ``(num_embeddings, embedding_dim)`` (``torch.nn.Embedding``):
    ``forward(ids)`` returns ``weight[ids]``, shape ``ids.shape + (embedding_dim,)``.

    Initialised like PyTorch: standard normal, with the ``padding_idx`` row (if any; negative counts
    from the end) zero. That row receives no gradient, so training leaves it as it is.
    """

    def __init__(self, num_embeddings, embedding_dim, padding_idx=None, dtype="float32", seed=None):
        self.num_embeddings = V.positive_int(num_embeddings, "num_embeddings")
        self.embedding_dim = V.positive_int(embedding_dim, "embedding_dim")
        if padding_idx is not None:
            if isinstance(padding_idx, (bool, np.bool_)) or not isinstance(padding_idx,
                                                                           numbers.Integral):
                raise TypeError(f"padding_idx must be an integer or None, got {padding_idx!r}")
            if not -self.num_embeddings <= padding_idx < self.num_embeddings:
                raise ValueError(f"padding_idx must be in {-self.num_embeddings}.."
                                 f"{self.num_embeddings - 1} (num_embeddings="
                                 f"{self.num_embeddings}), got {padding_idx}")
            padding_idx = int(padding_idx) % self.num_embeddings
        self.padding_idx = padding_idx
        self._init_params([("weight", (self.num_embeddings, self.embedding_dim))], dtype, seed)

    def reset_parameters(self):
        """PyTorch's default: standard normal, the padding row zero."""
        self._params[:] = self._rng.standard_normal(self._params.size)
        if self.padding_idx is not None:
            self._param_views["weight"][self.padding_idx] = 0
        self._mark_params_changed()

    def _ids(self, ids):
        if hasattr(ids, "detach") and hasattr(ids, "numpy"):
            ids = ids.detach().cpu().numpy()
        try:
            arr = np.asarray(ids)
        except Exception as exc:
            raise TypeError(f"ids must be an integer array, got {type(ids).__name__}: {exc}") from exc
        if arr.dtype.kind not in "iu":
            raise TypeError(f"ids must be an integer array, got dtype {arr.dtype}")
        arr = np.asarray(arr, dtype=np.int64, order="C")  # keeps 0-d as 0-d
        bad = (arr < 0) | (arr >= self.num_embeddings)
        if bad.any():
            where = [tuple(int(i) for i in ix) for ix in np.argwhere(bad)[:3]]
            raise ValueError(f"ids must lie in 0..{self.num_embeddings - 1} (num_embeddings="
                             f"{self.num_embeddings}); got {sorted(set(arr[bad].tolist()))[:5]} "
                             f"at positions {where}")
        return arr

    def forward(self, ids, train=True):
        """ids: integer array of any shape. Returns ``(y, cache)``: ``y`` ``ids.shape +
        (embedding_dim,)`` (a new array) and what :meth:`backward` needs (``None`` unless ``train``)."""
        ids = self._ids(ids)
        y = self._param_views["weight"][ids]  # fancy indexing copies
        cache = EmbeddingCache(self, self._version, ids.reshape(-1), ids.shape) if train else None
        return y, cache

    def __call__(self, ids):
        """Inference: the vectors only."""
        return self.forward(ids, train=False)[0]

    def backward(self, cache, dy):
        """dy: gradient w.r.t. the output (its shape). Scatter-adds it into the rows of
        ``grads['weight']`` that were looked up (repeated ids add up; the padding row gets nothing).
        Returns ``None``: ids have no gradient."""
        self._check_cache(cache, EmbeddingCache)
        dy = V.float_array(dy, "dy", self.dtype)
        V.check_shape(dy, cache.ids_shape + (self.embedding_dim,), "dy", "(the shape of the output)")
        ids, dy2 = cache.ids, dy.reshape(-1, self.embedding_dim)
        if self.padding_idx is not None:
            keep = ids != self.padding_idx
            ids, dy2 = ids[keep], dy2[keep]
        if ids.size:
            # Sum the rows of each id, then add each sum once: 3-4x faster than np.add.at at
            # a character model's sizes (512 ids of 32 values: 68 vs 233 us). A stable sort keeps
            # every id's rows in their original order.
            order = np.argsort(ids, kind="stable")
            sids = ids[order]
            starts = np.flatnonzero(np.concatenate(([True], sids[1:] != sids[:-1])))
            self._grad_views["weight"][sids[starts]] += np.add.reduceat(dy2[order], starts,
                                                                        axis=0)
        return None

    def __repr__(self):
        return (f"Embedding({self.num_embeddings}, {self.embedding_dim}, "
                f"padding_idx={self.padding_idx}, dtype={self.dtype.name!r})")
