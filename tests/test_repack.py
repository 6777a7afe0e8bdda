"""Packed weights after parameter updates (a training loop repacks after every optimizer step).

The rebuilt copy must always be the new parameters' (compared with a fresh model holding the same
parameters), the old buffer is rewritten in place only when nothing else refers to it, and an
array someone kept is never changed under them.
"""
import numpy as np
import pytest

import rnnfast as rf

CELLS = {
    "rnn": lambda: rf.RNN(6, 21, 2, bidirectional=True, seed=0),
    "lstm": lambda: rf.LSTM(6, 21, 2, bidirectional=True, seed=0),
    "gru": lambda: rf.GRU(6, 21, 2, bidirectional=True, seed=0),
    "gru_f64": lambda: rf.GRU(6, 17, dtype="float64", seed=0),
}


def _fresh_copy(m):
    c = type(m)(m.input_size, m.hidden_size, m.num_layers, bidirectional=m.bidirectional,
                dtype=m.dtype)
    c.set_params(m.params)
    return c


@pytest.mark.parametrize("name", sorted(CELLS))
def test_training_steps_repack_in_place_and_correctly(name):
    m = CELLS[name]()
    opt = rf.optim.Adam([m], lr=0.05)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((5, 3, 6)).astype(m.dtype)
    addrs = set()
    for step in range(4):
        y, _, tape = m.forward(x, train=True)
        m.zero_grad()
        m.backward(tape, np.ones_like(y))
        ref = _fresh_copy(m)
        # the repack of this version (used by backward above) matches a model built from scratch
        np.testing.assert_array_equal(m._packed_weights(), ref._packed_weights())
        addrs.add(m._packed_weights().ctypes.data)
        del tape
        opt.step()
        np.testing.assert_array_equal(m(x)[0], _fresh_copy(m)(x)[0])
    assert len(addrs) == 1  # one buffer, rewritten after every step


def test_a_kept_array_is_not_overwritten():
    m = CELLS["lstm"]()
    kept = m._packed_weights()
    before = kept.copy()
    sd = m.state_dict()
    sd["weight_hh_l0"] += 1.0
    m.load_state_dict(sd)
    new = m._packed_weights()
    assert not np.shares_memory(new, kept)
    np.testing.assert_array_equal(kept, before)
    assert not np.array_equal(new, before)
    np.testing.assert_array_equal(new, _fresh_copy(m)._packed_weights())


def test_a_live_tape_does_not_pin_stale_weights():
    """A tape from before an update refuses backward; the forward after the update computes with
    the new weights even while that tape still exists."""
    m = CELLS["gru"]()
    x = np.random.default_rng(2).standard_normal((4, 2, 6)).astype(np.float32)
    y, _, old_tape = m.forward(x, train=True)
    sd = m.state_dict()
    sd["bias_hh_l1_reverse"] -= 0.5
    sd["weight_ih_l0"] *= 0.9
    m.load_state_dict(sd)
    y2, _, tape = m.forward(x, train=True)
    np.testing.assert_array_equal(y2, _fresh_copy(m)(x)[0])
    with pytest.raises(ValueError, match="parameters changed"):
        m.backward(old_tape, np.ones_like(y))
    dx, _ = m.backward(tape, np.ones_like(y2))
    ref = _fresh_copy(m)
    yr, _, tr = ref.forward(x, train=True)
    dxr, _ = ref.backward(tr, np.ones_like(yr))
    np.testing.assert_array_equal(dx, dxr)
    np.testing.assert_array_equal(m.grads, ref.grads)
