"""Sampling from a recurrent language model: a prefix in, generated token ids out.

The model is a :class:`rnnfast.SequenceModel` with an ``Embedding``, a recurrent stack and a
per-step head over the vocabulary (``head_on="step"``). The prefix is run through the model once;
then each new token is drawn from the last step's logits and fed back as a ``T = 1`` step carrying
the recurrent state, with the model's inference call (no tape is recorded).
"""
import numbers

import numpy as np

from . import _validate as V

from .model import SequenceModel

__all__ = ["sample"]


def _check_model(model):
    if not isinstance(model, SequenceModel):
        raise TypeError(f"model must be an rnnfast.SequenceModel, got {type(model).__name__}")
    if model.embedding is None or model.head is None or model.head_on != "step":
        raise ValueError("sampling needs a language model: SequenceModel with an embedding, a head "
                         "and head_on='step' (got "
                         f"embedding={'yes' if model.embedding is not None else 'None'}, "
                         f"head={'yes' if model.head is not None else 'None'}, "
                         f"head_on={model.head_on!r})")
    vocab = model.head.out_features
    if vocab > model.embedding.num_embeddings:
        raise ValueError(f"the head scores {vocab} tokens but the embedding only has "
                         f"{model.embedding.num_embeddings} rows: generated ids could not be fed "
                         f"back")
    return vocab


def _choose(logits, temperature, top_k, rng):
    """One id per row of ``logits`` (B, V): argmax at temperature 0, else a draw from
    softmax(logits / temperature) restricted to the top_k largest."""
    if temperature == 0.0:
        return np.argmax(logits, axis=1)
    z = logits.astype(np.float64) / temperature
    if top_k is not None and top_k < z.shape[1]:
        # keep exactly k per row: argpartition picks one side of ties at the k-th value
        keep = np.argpartition(-z, top_k - 1, axis=1)[:, :top_k]
        masked = np.full_like(z, -np.inf)
        np.put_along_axis(masked, keep, np.take_along_axis(z, keep, axis=1), axis=1)
        z = masked
    z -= z.max(axis=1, keepdims=True)
    p = np.exp(z)
    cdf = np.cumsum(p, axis=1)
    u = rng.random(z.shape[0])[:, None] * cdf[:, -1:]
    # first index whose cumulative mass exceeds u; a zero-probability id is never chosen
    ids = (cdf <= u).sum(axis=1)
    return np.minimum(ids, z.shape[1] - 1)


def sample(model, prefix, n, temperature=1.0, top_k=None, seed=None, hx=None):
    """Generate ``n`` token ids after ``prefix``.

    model: a SequenceModel language model (see the module docstring).
    prefix: integer ids, 1-D ``(P,)`` for one sequence or 2-D ``(B, P)`` for a batch (always
        batch-major here, whatever the model's ``batch_first``); ``P >= 1``.
    n: how many ids to generate (>= 0).
    temperature: 0 for greedy (argmax; ties go to the lowest id), else > 0: logits are divided by
        it before the softmax (below 1 sharper, above 1 flatter).
    top_k: None, or keep only the ``top_k`` most likely ids (1 is greedy); at most the vocabulary.
    seed: int, None or a ``numpy.random.Generator``: the same seed gives the same ids.
    hx: initial recurrent state, as for the model (``None``: zeros).

    Returns the generated ids, ``(n,)`` or ``(B, n)``, int64 (the prefix is not included).
    """
    vocab = _check_model(model)
    if isinstance(n, (bool, np.bool_)) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n must be a non-negative integer, got {n!r}")
    if n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n}")
    if isinstance(temperature, (bool, np.bool_)) or not isinstance(temperature, numbers.Real):
        raise TypeError(f"temperature must be a number >= 0, got {temperature!r}")
    temperature = float(temperature)
    if not np.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0 (0 = greedy), got {temperature}")
    if top_k is not None:
        if isinstance(top_k, (bool, np.bool_)) or not isinstance(top_k, numbers.Integral):
            raise TypeError(f"top_k must be a positive integer or None, got {top_k!r}")
        if not 1 <= top_k <= vocab:
            raise ValueError(f"top_k must be in 1..{vocab} (the vocabulary size), got {top_k}")
        top_k = int(top_k)
    rng = V.rng(seed)

    ids = np.asarray(prefix.detach().cpu().numpy() if hasattr(prefix, "detach") else prefix)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"prefix must be integer token ids, got dtype {ids.dtype}")
    if ids.ndim not in (1, 2) or ids.shape[-1] < 1:
        raise ValueError(f"prefix must be (P,) or (B, P) token ids with P >= 1, got shape {ids.shape}")
    single = ids.ndim == 1
    ids = ids.reshape(1, -1) if single else ids          # (B, P)
    B = ids.shape[0]
    bf = model.rnn.batch_first

    def step(tokens, state):
        x = tokens if bf else np.ascontiguousarray(tokens.T)   # model layout
        out, state = model(x, state)
        last = out[:, -1] if bf else out[-1]                   # (B, V) logits of the last step
        return last, state

    logits, state = step(ids, hx)
    out = np.empty((B, n), dtype=np.int64)
    for i in range(n):
        tok = _choose(logits, temperature, top_k, rng)
        out[:, i] = tok
        if i + 1 < n:
            logits, state = step(tok[:, None], state)
    return out[0] if single else out
