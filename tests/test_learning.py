"""Proof that rnnfast learns: whole models trained end to end reach what only learning reaches.

Each test trains a small model for a fixed number of steps (never a wall-clock budget) on data
drawn from fixed seeds, then checks a held-out score against the baseline a model without the
learned skill would get. rnnfast's results are bitwise identical for any thread count, so every
number here is reproducible; the thresholds keep a wide margin below the measured values (written
next to them) so that changes in float rounding of the kernels, which alter the trajectory a little,
do not flip a test, while a broken gradient, optimizer, loss or length handling does.

The models run on one rnnfast thread. The numbers do not depend on it (the same bits come out for
any thread count; test_threads.py checks that, and these four results were seen to be identical
with one and two threads), but the models are small (hidden 16-64): on the shared 2-core machine,
with other jobs competing for the cores, two threads meeting at a barrier every time step made
this file take 51 s instead of 20 s.

The data generators are compact versions of those in examples/ (adding_problem.py,
forecasting.py, classification.py); only rnnfast and numpy are used.
"""
import numpy as np
import pytest

import rnnfast as rf
from rnnfast import demo, init, losses


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = rf.get_num_threads()
    rf.set_num_threads(1)
    yield
    rf.set_num_threads(before)


def _step(model, opt, clip, x, loss_and_grad, lengths=None):
    """One training step: forward, loss, backward, clip, update. Returns the loss."""
    out, _, tape = model.forward(x, lengths=lengths, train=True)
    loss, dout = loss_and_grad(out)
    model.zero_grad()
    model.backward(tape, dout)
    rf.clip_grad_norm(model.modules(), clip)
    opt.step()
    return loss


# ------------------------------------------------------------------------------ adding problem
def _adding_batch(rng, T, B):
    """(T, B, 2) inputs (value uniform in [0, 1], marker) with one marker in each half; (B, 1)
    targets: the sum of the two marked values."""
    values = rng.random((T, B))
    first = rng.integers(0, T // 2, size=B)
    second = rng.integers(T // 2, T, size=B)
    cols = np.arange(B)
    markers = np.zeros((T, B))
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    x = np.stack([values, markers], axis=2).astype(np.float32)
    return x, (values[first, cols] + values[second, cols])[:, None].astype(np.float32)


def test_lstm_solves_the_adding_problem_t50():
    T, H, steps = 50, 32, 1200
    rnn = rf.LSTM(2, H, seed=0)
    init.orthogonal(rnn, seed=1)
    init.forget_bias(rnn, 1.0)
    model = rf.SequenceModel(rnn, head=rf.Linear(H, 1, seed=2), head_on="last")
    opt = rf.optim.Adam(model.modules(), lr=1e-2)
    x_test, y_test = _adding_batch(np.random.default_rng(200), T, 1000)

    def held_out_mse():
        pred, _ = model(x_test)
        return losses.mse_loss(pred, y_test, grad=False)[0]

    # the target has variance 1/6, so predicting its mean (1.0) scores 0.167; remembering only the
    # second marked value scores 1/12 = 0.083, so MSE < 0.05 needs the first one (> 25 steps back)
    baseline = float(np.mean((y_test - 1.0) ** 2))
    assert 0.14 < baseline < 0.19
    before = held_out_mse()
    assert before > 0.1, f"untrained model already at MSE {before:.4f}?"

    rng = np.random.default_rng(100)
    for _ in range(steps):
        x, y = _adding_batch(rng, T, 64)
        _step(model, opt, 1.0, x, lambda pred: losses.mse_loss(pred, y))
    after = held_out_mse()
    # measured: 0.00039 (held-out baseline 0.1561, untrained 1.19). With other seeds (model
    # and data 10, 20, 30) the LSTM leaves the mean-predicting plateau (~0.167) between steps 400
    # and 800 and is at 0.0005-0.0008 by step 1200, so 0.05 leaves a margin of several hundred steps
    assert after < 0.05, f"held-out MSE {after:.4f} after {steps} steps (baseline {baseline:.4f})"


# ------------------------------------------------------------------ character-level language model
def test_char_lm_beats_unigram_entropy():
    text = demo.load_text()
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    split = int(0.95 * len(ids))
    train_ids, valid_ids = ids[:split], ids[split:]
    V = len(vocab)
    entropy = demo.unigram_bits(ids, V)
    assert entropy > 3.5                               # the corpus is not degenerate

    model = demo.build_model(V, hidden=64, layers=1, seed=0)
    opt = rf.optim.Adam(model.modules(), lr=1e-2)
    rng = np.random.default_rng(0)
    T, B, steps = 32, 32, 200
    before = demo.evaluate_bits(model, valid_ids)
    assert before > 0.9 * entropy, f"untrained model at {before:.3f} bits/char?"
    for _ in range(steps):
        starts = rng.integers(0, len(train_ids) - T - 1, size=B)
        window = train_ids[starts[None, :] + np.arange(T + 1)[:, None]]        # (T+1, B)
        _step(model, opt, 1.0, window[:-1],
              lambda logits: losses.cross_entropy(logits, window[1:]))
    bits = demo.evaluate_bits(model, valid_ids)
    # measured: 0.987 bits/char (0.23 x the unigram entropy of 4.335); seeds 7 and 13 give 0.992
    # and 0.951; 1.52 (the threshold) is where these runs are after about 120 steps
    assert bits < 0.35 * entropy, f"held-out {bits:.3f} bits/char, unigram entropy {entropy:.3f}"


# --------------------------------------------------------------------------------- forecasting
def _seasonal_ar2_series(n, seed):
    """A daily cycle (period 24) with slowly drifting amplitude plus AR(2) noise (innovation std
    0.1, so no forecast beats an MSE of 0.01 on average)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    series = (1.0 + 0.3 * np.sin(2 * np.pi * t / 1000.0)) * np.sin(2 * np.pi * t / 24.0)
    e = rng.normal(0.0, 0.1, size=n)
    z = np.zeros(n)
    for i in range(2, n):
        z[i] = 1.2 * z[i - 1] - 0.5 * z[i - 2] + e[i]
    return series + z


def _windows(series, W):
    idx = np.arange(W)[None, :] + np.arange(len(series) - W)[:, None]
    return series[idx], series[W:]                    # (N, W) windows, (N,) next values


def test_gru_forecast_beats_last_value():
    W, H, steps = 32, 16, 400
    series = _seasonal_ar2_series(6000, seed=0)
    split = 4800
    x_tr, y_tr = _windows(series[:split], W)
    x_te, y_te = _windows(series[split:], W)
    mean, std = series[:split].mean(), series[:split].std()

    def as_input(x):
        return ((x - mean) / std).T[:, :, None].astype(np.float32)            # (W, B, 1)

    model = rf.SequenceModel(rf.GRU(1, H, seed=0), head=rf.Linear(H, 1, seed=1), head_on="last")
    opt = rf.optim.Adam(model.modules(), lr=1e-2)
    rng = np.random.default_rng(1)
    for _ in range(steps):
        pick = rng.integers(0, len(x_tr), size=64)
        y = ((y_tr[pick] - mean) / std)[:, None].astype(np.float32)
        _step(model, opt, 1.0, as_input(x_tr[pick]), lambda pred: losses.mse_loss(pred, y))
    pred, _ = model(as_input(x_te))
    mse = float(np.mean((pred[:, 0] * std + mean - y_te) ** 2))
    last_value = float(np.mean((x_te[:, -1] - y_te) ** 2))
    # measured: GRU 0.0124, last value 0.0478 (0.26 x; noise floor 0.01); seeds 10, 20, 30 give
    # 0.27 x or less
    assert last_value > 0.03
    assert mse < 0.4 * last_value, f"GRU held-out MSE {mse:.4f}, last value {last_value:.4f}"


# ------------------------------------------------------------------------------ classification
def _sentiment_data(rng, n, max_len, vocab=40):
    """Sentences of 5..max_len ids: 1-10 positive, 11-20 negative, 21 "not" (flips the polarity of
    the next word), 22.. neutral, 0 padding. Label 1 when the negation-aware positive words
    outnumber the negative ones; ties are dropped, so the classes are balanced by symmetry."""
    m = 3 * n
    L = rng.integers(5, max_len + 1, size=m)
    valid = np.arange(max_len)[:, None] < L[None, :]
    kind = rng.choice(3, size=(max_len, m), p=[0.2, 0.2, 0.6])       # positive, negative, neutral
    kind[~valid] = 2
    polar = kind < 2
    negated = np.zeros_like(polar)
    negated[1:] = polar[1:] & (kind[:-1] == 2) & (rng.random((max_len - 1, m)) < 0.5)
    polarity = np.where(kind == 0, 1, np.where(kind == 1, -1, 0))
    score = np.where(negated, -polarity, polarity).sum(axis=0)
    words = np.where(kind == 0, rng.integers(1, 11, size=kind.shape),
                     np.where(kind == 1, rng.integers(11, 21, size=kind.shape),
                              rng.integers(22, vocab, size=kind.shape)))
    words[:-1][negated[1:]] = 21
    words[~valid] = 0
    keep = np.flatnonzero(score != 0)[:n]
    assert len(keep) == n
    return words[:, keep], L[keep], (score[keep] > 0).astype(np.int64)


def test_lstm_classifies_variable_length_sentences():
    max_len, E, H, steps, vocab = 24, 16, 32, 400, 40
    ids_tr, len_tr, lab_tr = _sentiment_data(np.random.default_rng(0), 10000, max_len, vocab)
    ids_te, len_te, lab_te = _sentiment_data(np.random.default_rng(1), 2000, max_len, vocab)
    assert 0.45 < lab_te.mean() < 0.55 and len(set(len_te.tolist())) == max_len - 4

    rnn = rf.LSTM(E, H, seed=0)
    init.orthogonal(rnn, seed=1)
    init.forget_bias(rnn, 1.0)
    model = rf.SequenceModel(rnn, embedding=rf.Embedding(vocab, E, seed=2),
                             head=rf.Linear(H, 2, seed=3), head_on="last")
    opt = rf.optim.Adam(model.modules(), lr=1e-2)
    rng = np.random.default_rng(2)
    for _ in range(steps):
        pick = rng.integers(0, len(lab_tr), size=64)
        lens = len_tr[pick]
        _step(model, opt, 1.0, ids_tr[:lens.max(), pick],
              lambda logits: losses.cross_entropy(logits, lab_tr[pick]), lengths=lens)
    logits, _ = model(ids_te, lengths=len_te)
    acc = float(np.mean(np.argmax(logits, axis=1) == lab_te))
    # measured: 0.9975 (chance 0.5; on the longer version of this task in
    # examples/classification.py a linear bag-of-words classifier gets 0.64); seeds 10, 20, 30
    # give 0.982-0.996
    assert acc > 0.9, f"held-out accuracy {acc:.3f}"
