"""copy.deepcopy and pickle of models and layers (keeping the best model so far, sending a model
to a worker process): the copy computes the same numbers, owns its buffers, and its named views
follow its own flat arrays."""
import copy
import pickle

import numpy as np
import pytest

import rnnfast as rf

MAKERS = {
    "lstm": lambda: rf.LSTM(5, 12, num_layers=2, bidirectional=True, seed=1),
    "lstm_peephole_clip": lambda: rf.LSTM(5, 12, seed=1, peephole=True, clip=0.7),
    "gru": lambda: rf.GRU(5, 12, num_layers=2, seed=1, dtype="float64"),
    "gru_reset_before": lambda: rf.GRU(5, 12, seed=1, linear_before_reset=False),
    "rnn": lambda: rf.RNN(5, 12, nonlinearity="relu", batch_first=True, seed=1),
}
COPIES = {"deepcopy": copy.deepcopy, "pickle": lambda m: pickle.loads(pickle.dumps(m))}


@pytest.mark.parametrize("how", list(COPIES))
@pytest.mark.parametrize("kind", list(MAKERS))
def test_recurrent_model_copies(kind, how):
    m = MAKERS[kind]()
    x = np.random.default_rng(0).standard_normal((4, 3, 5)).astype(m.dtype)
    y, _ = m(x)  # the original has built its packed-weight cache: the copy must not share it
    c = COPIES[how](m)
    assert type(c) is type(m) and repr(c) == repr(m)
    np.testing.assert_array_equal(c(x)[0], y)
    assert not np.shares_memory(c.params, m.params) and not np.shares_memory(c.grads, m.grads)
    # the copy's named views follow its own buffer ...
    c.set_params(np.zeros_like(c.params))
    assert all(not v.any() for _, v in c.named_parameters())
    assert not np.array_equal(c(x)[0], y)
    # ... and the original is untouched
    np.testing.assert_array_equal(m(x)[0], y)
    assert any(v.any() for _, v in m.named_parameters())
    # training works on the copy: gradients land in its own grads, seen through its views
    c = COPIES[how](m)
    yt, _, tape = c.forward(x, train=True)
    c.backward(tape, np.ones_like(yt))
    assert c.grads.any() and not m.grads.any()
    assert sum(float(np.abs(g).sum()) for _, g in c.named_grads()) == pytest.approx(
        float(np.abs(c.grads).sum()))
    # streaming from a copy
    if not c.bidirectional:
        s = c.stream(batch=x.shape[0] if c.batch_first else x.shape[1])
        first = x[:, 0] if c.batch_first else x[0]
        np.testing.assert_array_equal(s.step(first), (c(x)[0][:, 0] if c.batch_first
                                                      else c(x)[0][0]))


@pytest.mark.parametrize("how", list(COPIES))
def test_whole_model_copies(how):
    emb = rf.Embedding(20, 6, seed=2)
    m = rf.SequenceModel(rf.GRU(6, 10, seed=2), embedding=emb, head=rf.Linear(10, 4, seed=2))
    ids = np.random.default_rng(1).integers(0, 20, size=(7, 2))
    out, _ = m(ids)
    c = COPIES[how](m)
    np.testing.assert_array_equal(c(ids)[0], out)
    c.head.set_params(np.zeros_like(c.head.params))
    assert not np.array_equal(c(ids)[0], out)
    np.testing.assert_array_equal(m(ids)[0], out)
    assert all(not v.any() for _, v in c.head.named_parameters())
