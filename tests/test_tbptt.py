"""Truncated BPTT as documented: carrying the final state of one chunk into the next as hx gives
the same outputs as one call over the whole sequence, and each chunk's backward matches PyTorch
with the carried state detached."""
import numpy as np
import pytest
import torch

import rnnfast as rf


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_chunked_forward_equals_full_and_chunk_grads_match_torch(cell):
    rng = np.random.default_rng(1)
    cls = {"lstm": rf.LSTM, "gru": rf.GRU, "rnn": rf.RNN}[cell]
    tcls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
    torch.manual_seed(1)
    tm = tcls(4, 9, num_layers=2, dtype=torch.float64)
    m = cls(4, 9, num_layers=2, dtype="float64")
    m.load_state_dict({k: v.detach().numpy() for k, v in tm.state_dict().items()})
    x = rng.standard_normal((23, 3, 4))
    y_full, state_full = m(x)

    state, ys = None, []
    tstate = None
    for start in range(0, 23, 5):  # chunks of 5, last one of 3
        xc = x[start:start + 5]
        y, new_state, tape = m.forward(xc, hx=state, train=True)
        ys.append(y)
        dy = rng.standard_normal(y.shape)
        m.zero_grad()
        dx, _ = m.backward(tape, dy)

        xt = torch.tensor(xc, requires_grad=True)
        tm.zero_grad()
        yt, tnew = tm(xt, tstate)
        (yt * torch.tensor(dy)).sum().backward()
        np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
        g = dict(m.named_grads())
        for n, p in tm.named_parameters():
            np.testing.assert_allclose(g[n], p.grad.numpy(), rtol=1e-9, atol=1e-12, err_msg=n)
        state = new_state
        tstate = tuple(s.detach() for s in tnew) if cell == "lstm" else tnew.detach()

    np.testing.assert_allclose(np.concatenate(ys), y_full, rtol=1e-12, atol=1e-13)
    if cell == "lstm":
        np.testing.assert_allclose(state[0], state_full[0], rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(state[1], state_full[1], rtol=1e-12, atol=1e-13)
    else:
        np.testing.assert_allclose(state, state_full, rtol=1e-12, atol=1e-13)


def test_readme_truncated_bptt_loop_learns():
    """The README's loop, run for a few epochs, lowers the one-step prediction error."""
    m = rf.LSTM(1, 32, seed=0)
    series = np.sin(np.linspace(0, 60, 1001))[:, None, None]
    lr = 0.05
    epoch_mse = []
    for _ in range(4):
        state, mse = None, []
        for start in range(0, 1000, 50):
            x, target = series[start:start + 50], series[start + 1:start + 51]
            y, new_state, tape = m.forward(x, hx=state, train=True)
            pred = y.sum(axis=2, keepdims=True)
            mse.append(float(((pred - target) ** 2).mean()))
            m.zero_grad()
            m.backward(tape, dy=np.broadcast_to(2 * (pred - target) / 50, y.shape))
            m.set_params(m.params - lr * m.grads)
            state = new_state
        epoch_mse.append(np.mean(mse))
    assert epoch_mse[-1] < 0.5 * epoch_mse[0], epoch_mse
