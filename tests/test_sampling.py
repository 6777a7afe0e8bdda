"""rnnfast.sampling.sample: greedy decoding agrees with a full-sequence forward (so the carried
state is right), top_k=1 is greedy, seeds reproduce, top_k restricts the choice, the first draw
follows softmax(logits / temperature), and bad arguments are refused."""

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import sampling

V = 17


def lm(cell=rf.LSTM, batch_first=False, seed=0, vocab=V):
    rnn = cell(6, 20, num_layers=2, batch_first=batch_first, dtype="float64", seed=seed)
    m = rf.SequenceModel(rnn, embedding=rf.Embedding(vocab, 6, dtype="float64", seed=seed + 1),
                         head=rf.Linear(20, vocab, dtype="float64", seed=seed + 2))
    # sharpen the head so that greedy choices are far from ties
    m.head._param_buffer()[:] *= 4
    m.head._mark_params_changed()
    return m


def full_logits(m, seq):
    """Logits at every position of a (B, L) sequence, from ONE forward over the whole thing."""
    x = seq if m.rnn.batch_first else np.ascontiguousarray(seq.T)
    out, _ = m(x)
    return out if m.rnn.batch_first else out.transpose(1, 0, 2)   # (B, L, V)


@pytest.mark.parametrize("cell,batch_first", [(rf.LSTM, False), (rf.GRU, True)])
def test_greedy_agrees_with_a_full_forward(cell, batch_first):
    m = lm(cell, batch_first)
    prefix = np.array([[3, 1, 4], [1, 5, 9]])
    gen = sampling.sample(m, prefix, 12, temperature=0)
    assert gen.shape == (2, 12) and gen.dtype == np.int64
    logits = full_logits(m, np.concatenate([prefix, gen], axis=1))
    # token i was chosen from the logits after prefix + gen[:i]
    expect = np.argmax(logits[:, prefix.shape[1] - 1:-1], axis=2)
    np.testing.assert_array_equal(gen, expect)
    np.testing.assert_array_equal(sampling.sample(m, prefix, 12, temperature=0), gen)
    # a 1-D prefix is one sequence; the batch rows are independent of each other
    np.testing.assert_array_equal(sampling.sample(m, prefix[1], 12, temperature=0), gen[1])


def test_top_k_1_is_greedy_and_seeds_reproduce():
    m = lm()
    prefix = np.array([2, 7])
    greedy = sampling.sample(m, prefix, 15, temperature=0)
    np.testing.assert_array_equal(sampling.sample(m, prefix, 15, temperature=1.3, top_k=1,
                                                  seed=123), greedy)
    a = sampling.sample(m, prefix, 30, temperature=1.5, seed=4)
    b = sampling.sample(m, prefix, 30, temperature=1.5, seed=4)
    c = sampling.sample(m, prefix, 30, temperature=1.5, seed=5)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    d = sampling.sample(m, prefix, 30, temperature=1.5, seed=np.random.default_rng(4))
    np.testing.assert_array_equal(a, d)
    assert sampling.sample(m, prefix, 0).shape == (0,)


def test_top_k_only_draws_from_the_k_best():
    m = lm()
    prefix = np.tile(np.array([[1, 2, 3]]), (40, 1))
    gen = sampling.sample(m, prefix, 6, temperature=3.0, top_k=3, seed=0)
    logits = full_logits(m, np.concatenate([prefix, gen], axis=1))[:, 2:-1]  # (40, 6, V)
    rank = (logits > np.take_along_axis(logits, gen[..., None], axis=2)).sum(axis=2)
    assert rank.max() <= 2        # always one of the top 3
    assert len(np.unique(gen)) > 3  # and not a fixed choice: a high temperature spreads it


def test_first_draw_follows_the_tempered_softmax():
    m = lm()
    B, temp = 6000, 0.8
    prefix = np.tile(np.array([[4, 4]]), (B, 1))
    first = sampling.sample(m, prefix, 1, temperature=temp, seed=11)[:, 0]
    z = full_logits(m, prefix[:1])[0, -1] / temp
    p = np.exp(z - z.max())
    p /= p.sum()
    freq = np.bincount(first, minlength=V) / B
    sigma = np.sqrt(p * (1 - p) / B)
    assert np.all(np.abs(freq - p) <= 5 * sigma + 1e-12), np.c_[freq, p]


def test_hx_continues_from_a_state():
    m = lm()
    _, state = m(np.array([[5], [6], [7]]))   # T=3, B=1 (time-major)
    cont = sampling.sample(m, np.array([8]), 5, temperature=0, hx=state)
    whole = sampling.sample(m, np.array([5, 6, 7, 8]), 5, temperature=0)
    np.testing.assert_array_equal(cont, whole)


def test_argument_validation():
    m = lm()
    p = np.array([1, 2])
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            sampling.sample(m, p, 3, temperature=bad)
    for bad in ("hot", True, None):
        with pytest.raises(TypeError, match="temperature"):
            sampling.sample(m, p, 3, temperature=bad)
    for bad in (0, V + 1):
        with pytest.raises(ValueError, match=f"top_k must be in 1..{V}"):
            sampling.sample(m, p, 3, top_k=bad)
    with pytest.raises(TypeError, match="top_k"):
        sampling.sample(m, p, 3, top_k=2.0)
    with pytest.raises(ValueError, match="n must be"):
        sampling.sample(m, p, -1)
    with pytest.raises(TypeError, match="n must be"):
        sampling.sample(m, p, 2.0)
    with pytest.raises(TypeError, match="prefix must be integer"):
        sampling.sample(m, np.array([1.0, 2.0]), 3)
    with pytest.raises(ValueError, match="P >= 1"):
        sampling.sample(m, np.array([], dtype=np.int64), 3)
    with pytest.raises(ValueError, match="ids must lie in"):
        sampling.sample(m, np.array([1, V]), 3)
    with pytest.raises(TypeError, match="seed"):
        sampling.sample(m, p, 3, seed="abc")
    with pytest.raises(TypeError, match="SequenceModel"):
        sampling.sample(m.rnn, p, 3)
    no_head = rf.SequenceModel(m.rnn, embedding=m.embedding)
    with pytest.raises(ValueError, match="language model"):
        sampling.sample(no_head, p, 3)
    bigger = rf.SequenceModel(m.rnn, embedding=m.embedding,
                              head=rf.Linear(20, V + 3, dtype="float64"))
    with pytest.raises(ValueError, match="could not be fed"):
        sampling.sample(bigger, p, 3)
