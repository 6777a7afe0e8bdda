"""SequenceModel (Embedding -> RNN/LSTM/GRU -> Linear) against the same composition in torch:
outputs, final state, and the gradient of every parameter by its prefixed name, in float64
(rel err <= 1e-10), per-step heads and heads on the last valid state with ragged lengths."""

import numpy as np
import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnfast as rf
from rnnfast import losses
from conftest import assert_all_close, assert_rel, ragged_lengths, rf_model, torch_model

TOL = 1e-10


class TorchComposition(torch.nn.Module):
    """The torch twin of SequenceModel (same parameter names once prefixed)."""

    def __init__(self, embedding, rnn, head, head_on):
        super().__init__()
        self.embedding, self.rnn, self.head, self.head_on = embedding, rnn, head, head_on

    def forward(self, x, hx, lengths):
        e = self.embedding(x) if self.embedding is not None else x
        bf = self.rnn.batch_first
        if lengths is None:
            y, state = self.rnn(e, hx)
        else:
            T = e.shape[1] if bf else e.shape[0]
            packed = pack_padded_sequence(e, torch.as_tensor(lengths), batch_first=bf,
                                          enforce_sorted=False)
            y, state = self.rnn(packed, hx)
            y, _ = pad_packed_sequence(y, batch_first=bf, total_length=T)
        if self.head_on == "step":
            feats = y
        else:
            hn = state[0] if isinstance(state, tuple) else state
            D = 2 if self.rnn.bidirectional else 1
            feats = torch.cat([hn[-D + d] for d in range(D)], dim=1)
        out = self.head(feats) if self.head is not None else feats
        return out, state


def build(cell, *, vocab=13, emb=5, inp=None, hidden=6, layers=2, bidir=False, batch_first=False,
          out=7, head_on="step", with_embedding=True, with_head=True, seed=0):
    """A SequenceModel and its torch twin holding identical weights."""
    torch.manual_seed(seed)
    in_size = emb if with_embedding else inp
    t_rnn = torch_model(cell, in_size, hidden, layers, True, batch_first, bidir, "float64")
    rnn = rf_model(cell, in_size, hidden, layers, True, batch_first, 0.0, bidir, "float64", seed)
    D = 2 if bidir else 1
    embedding = head = t_emb = t_head = None
    if with_embedding:
        embedding = rf.Embedding(vocab, emb, padding_idx=0, dtype="float64", seed=seed + 1)
        t_emb = torch.nn.Embedding(vocab, emb, padding_idx=0, dtype=torch.float64)
    if with_head:
        head = rf.Linear(D * hidden, out, dtype="float64", seed=seed + 2)
        t_head = torch.nn.Linear(D * hidden, out, dtype=torch.float64)
    m = rf.SequenceModel(rnn, embedding=embedding, head=head, head_on=head_on)
    t = TorchComposition(t_emb, t_rnn, t_head, head_on)
    m.load_state_dict({k: v.detach().numpy().copy() for k, v in t.state_dict().items()})
    return m, t


def run_both(m, t, cell, x, lengths, with_hx, rng):
    """Forward + backward of loss = sum(out * r) + sum(h_n * rh) (+ sum(c_n * rc)) in both."""
    rnn = m.rnn
    B = x.shape[0] if rnn.batch_first else x.shape[1]
    sshape = (rnn.num_layers * rnn.num_directions, B, rnn.hidden_size)
    lstm = cell == "lstm"
    h0 = 0.5 * rng.standard_normal(sshape)
    c0 = 0.5 * rng.standard_normal(sshape)
    hx = ((h0, c0) if lstm else h0) if with_hx else None
    m.zero_grad()
    out, state, tape = m.forward(x, hx, lengths)
    r = rng.standard_normal(out.shape)
    rh = rng.standard_normal(sshape)
    rc = rng.standard_normal(sshape)
    dx, dhx = m.backward(tape, r, (rh, rc) if lstm else rh)

    t.zero_grad(set_to_none=True)
    xt = torch.tensor(x) if m.embedding is not None else torch.tensor(x, requires_grad=True)
    leaves = []
    if with_hx:
        leaves = [torch.tensor(h0, requires_grad=True)] + (
            [torch.tensor(c0, requires_grad=True)] if lstm else [])
    hxt = (tuple(leaves) if lstm else leaves[0]) if with_hx else None
    out_t, st_t = t(xt, hxt, lengths)
    hn_t = st_t[0] if lstm else st_t
    loss = (out_t * torch.tensor(r)).sum() + (hn_t * torch.tensor(rh)).sum()
    if lstm:
        loss = loss + (st_t[1] * torch.tensor(rc)).sum()
    loss.backward()

    assert_rel(out, out_t.detach().numpy(), TOL, "out")
    hn = state[0] if lstm else state
    assert_rel(hn, hn_t.detach().numpy(), TOL, "h_n")
    got = {name: g.copy() for name, g in m.named_grads()}
    ref = {name: p.grad.numpy() for name, p in t.named_parameters()}
    assert_all_close(got, ref, TOL, "parameter gradients")
    if m.embedding is None:
        assert_rel(dx, xt.grad.numpy(), TOL, "dx")
    else:
        assert dx is None
    if with_hx:
        assert_rel(dhx[0] if lstm else dhx, leaves[0].grad.numpy(), TOL, "dh0")
    return out


CASES = [
    # cell, head_on, bidir, batch_first, ragged, with_hx
    ("lstm", "step", False, False, False, True),
    ("gru", "step", True, True, True, False),
    ("rnn_tanh", "step", False, True, True, True),
    ("lstm", "last", False, False, True, True),
    ("lstm", "last", True, True, True, False),
    ("gru", "last", True, False, True, True),
    ("rnn_relu", "last", False, False, False, False),
]


@pytest.mark.parametrize("cell,head_on,bidir,batch_first,ragged,with_hx", CASES)
def test_sequence_model_matches_torch(cell, head_on, bidir, batch_first, ragged, with_hx):
    rng = np.random.default_rng(hash((cell, head_on, bidir)) % 2**32)
    T, B = 7, 5
    m, t = build(cell, bidir=bidir, batch_first=batch_first, head_on=head_on)
    ids = rng.integers(0, 13, size=(B, T) if batch_first else (T, B))
    ids.flat[::5] = 0  # padding ids: their embedding row gets no gradient
    lengths = ragged_lengths(rng, B, T) if ragged else None
    out = run_both(m, t, cell, ids, lengths, with_hx, rng)
    expect = (B, 7) if head_on == "last" else ((B, T, 7) if batch_first else (T, B, 7))
    assert out.shape == expect


@pytest.mark.parametrize("head_on", ["step", "last"])
def test_without_embedding_and_without_head(head_on):
    rng = np.random.default_rng(3)
    m, t = build("gru", inp=4, with_embedding=False, bidir=True, head_on=head_on)
    x = rng.standard_normal((6, 3, 4))
    run_both(m, t, "gru", x, np.array([6, 2, 4]), True, rng)
    m2, t2 = build("lstm", inp=4, with_embedding=False, with_head=False, head_on=head_on)
    out = run_both(m2, t2, "lstm", x, np.array([1, 6, 3]), False, rng)
    assert out.shape == ((3, 6) if head_on == "last" else (6, 3, 6))


def test_head_on_last_reads_the_last_valid_step():
    """With lengths, the 'last' head sees y at each row's own last step (unidirectional)."""
    rng = np.random.default_rng(4)
    m, _ = build("lstm", head_on="last", layers=1, with_head=False)
    ids = rng.integers(1, 13, size=(8, 4))
    lengths = np.array([8, 3, 1, 5])
    out, _ = m(ids, lengths=lengths)
    full, _ = rf.SequenceModel(m.rnn, embedding=m.embedding)(ids, lengths=lengths)
    np.testing.assert_array_equal(out, full[lengths - 1, np.arange(4)])


def test_state_dict_names_roundtrip_and_strict_load():
    m, t = build("lstm", bidir=True)
    sd = m.state_dict()
    assert set(sd) == set(t.state_dict())
    assert {"embedding.weight", "rnn.weight_ih_l0", "rnn.bias_hh_l1_reverse", "head.weight",
            "head.bias"} <= set(sd)
    assert [n for n, _ in m.named_parameters()] == list(sd)
    m2, _ = build("lstm", bidir=True, seed=9)
    assert not np.array_equal(m2.rnn.params, m.rnn.params)
    m2.load_state_dict(sd)
    for part, part2 in zip(m.modules(), m2.modules()):
        np.testing.assert_array_equal(part.params, part2.params)
    before = [p.params.copy() for p in m2.modules()]
    bad = dict(sd)
    bad["head.bias"] = np.zeros(3)  # wrong shape in the LAST part: nothing may be written
    bad["embedding.weight"] = np.zeros_like(sd["embedding.weight"])
    with pytest.raises(ValueError, match=r"state_dict\['head.bias'\] must have shape \(7,\)"):
        m2.load_state_dict(bad)
    for b, p in zip(before, m2.modules()):
        np.testing.assert_array_equal(b, p.params)
    with pytest.raises(ValueError, match="missing \\['head.bias'\\].*unexpected \\['head.b'\\]"):
        m2.load_state_dict({**{k: v for k, v in sd.items() if k != "head.bias"},
                            "head.b": sd["head.bias"]})


def test_modules_zero_grad_and_inference_call():
    rng = np.random.default_rng(5)
    m, _ = build("gru")
    parts = m.modules()
    assert parts == [m.embedding, m.rnn, m.head]
    assert all(hasattr(p, "params") and hasattr(p, "grads") and hasattr(p, "_param_buffer")
               for p in parts)
    assert m.num_parameters() == sum(p.params.size for p in parts)
    ids = rng.integers(0, 13, size=(5, 2))
    out, state, tape = m.forward(ids)
    m.backward(tape, np.ones_like(out))
    assert all(np.abs(p.grads).sum() > 0 for p in parts)
    m.zero_grad()
    assert not any(p.grads.any() for p in parts)
    out2, state2 = m(ids)
    np.testing.assert_array_equal(out, out2)
    np.testing.assert_array_equal(state, state2)


def test_training_steps_reduce_the_loss():
    """A few plain SGD steps through the flat buffers of modules() lower a cross-entropy loss."""
    rng = np.random.default_rng(6)
    vocab = 11
    m = rf.SequenceModel(rf.LSTM(8, 16, seed=0), embedding=rf.Embedding(vocab, 8, seed=1),
                         head=rf.Linear(16, vocab, seed=2))
    inputs = rng.integers(0, vocab, size=(12, 4))
    targets = (inputs + 1) % vocab  # learnable: the successor of the current id
    first = None
    for _ in range(40):
        m.zero_grad()
        logits, _, tape = m.forward(inputs)
        loss, dlogits = losses.cross_entropy(logits, targets)
        first = loss if first is None else first
        m.backward(tape, dlogits)
        for part in m.modules():
            part._param_buffer()[:] -= 1.0 * part.grads
            part._mark_params_changed()
    assert loss < 0.5 * first, (first, loss)


def test_validation():
    lstm = rf.LSTM(5, 6, seed=0)
    with pytest.raises(ValueError, match=r"embedding_dim \(4\) must equal rnn.input_size \(5\)"):
        rf.SequenceModel(lstm, embedding=rf.Embedding(10, 4))
    with pytest.raises(ValueError, match=r"head.in_features \(5\) must equal"):
        rf.SequenceModel(lstm, head=rf.Linear(5, 3))
    with pytest.raises(ValueError, match="dtype"):
        rf.SequenceModel(lstm, head=rf.Linear(6, 3, dtype="float64"))
    with pytest.raises(ValueError, match="head_on"):
        rf.SequenceModel(lstm, head_on="first")
    with pytest.raises(TypeError, match="rnn must be"):
        rf.SequenceModel(rf.Linear(5, 6))
    m = rf.SequenceModel(lstm, embedding=rf.Embedding(10, 5), head=rf.Linear(6, 3))
    with pytest.raises(ValueError, match="2-D integer ids"):
        m.forward(np.zeros((3, 2, 5), dtype=np.int64))
    with pytest.raises(ValueError, match="ids must lie in 0..9"):
        m.forward(np.full((3, 2), 10))
    out, _, tape = m.forward(np.zeros((3, 2), dtype=np.int64))
    with pytest.raises(ValueError, match=r"dy must have shape \(3, 2, 3\)"):
        m.backward(tape, np.zeros((3, 2, 4)))
    with pytest.raises(TypeError, match="tape"):
        m.backward(None, out)
    last = rf.SequenceModel(lstm, head=rf.Linear(6, 3), head_on="last")
    _, _, tape = last.forward(np.zeros((3, 2, 5)))
    with pytest.raises(TypeError, match="LSTM dstate must be a tuple"):
        last.backward(tape, np.zeros((2, 3)), np.zeros((1, 2, 6)))
