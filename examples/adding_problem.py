"""The adding problem (Hochreiter & Schmidhuber 1997): a long-range memory test for RNNs.

Each input is a sequence of ``T`` pairs ``(value, marker)``: ``value`` is uniform in [0, 1] and
``marker`` is 0 except at exactly two steps. We use the formulation of Le, Jaitly & Hinton (2015)
and Arjovsky, Shah & Bengio (2016): one marked step drawn uniformly from the first half of the
sequence and one from the second half, so the first marked value lies more than T/2 steps before
the end. (The 1997 paper's version differs in details: values in [-1, 1], a rescaled target,
other marker positions; the variant here is the one later papers benchmark.) The target, read
once at the end of the sequence, is the sum of the two marked values.

The target has mean 1 and variance 2 * 1/12 = 1/6, so the best constant prediction (always 1.0)
has a mean squared error of 1/6 ~= 0.167. Remembering only the second marked value (0.5 + it)
gives 1/12 ~= 0.083; going below that needs the first marked value carried across more than T/2
steps, which is what gated cells are for.

This script trains an LSTM (Linear head on the last hidden state, Adam, gradient-norm clipping)
and a plain tanh RNN with the same width, optimizer, steps and batches, and prints both held-out
MSEs next to the 0.167 baseline::

    python examples/adding_problem.py                    # T=100, 2000 steps, hidden 64
    python examples/adding_problem.py --T 50 --steps 1000

Measured on the 2-core development machine (shared with other jobs, so times vary):

* defaults (``python examples/adding_problem.py``: T=100, 2000 steps, about 40 s in all): LSTM
  0.0007, tanh RNN 0.1773, constant predictor 0.1678 on the same held-out set. The LSTM sat on
  the plateau of predicting the mean (~0.167) until step ~1000 and was below 0.003 by step 1250.
  The tanh RNN never left the plateau: its held-out MSE wandered between 0.168 and 0.27 for all
  2000 steps and ended above the constant predictor (it fits batch noise at this learning rate);
  the gradient from the target back to the first marker, 50-100 tanh steps earlier, vanishes.
  Its exact figure moves with float rounding (an earlier build of the core gave 0.1908), the
  LSTM's does not (0.0007 on both).
* ``--T 50 --steps 1000`` (about 17 s): LSTM 0.0020, tanh RNN 0.1832, constant 0.1679.
"""
import argparse
import time

import numpy as np

import rnnfast as rf
from rnnfast import init, losses

BASELINE_MSE = 1.0 / 6.0


def adding_batch(rng, T, B):
    """Inputs ``(T, B, 2)`` float32 (value, marker) and targets ``(B, 1)`` float32."""
    values = rng.random((T, B))
    markers = np.zeros((T, B))
    half = T // 2
    first = rng.integers(0, half, size=B)
    second = rng.integers(half, T, size=B)
    cols = np.arange(B)
    markers[first, cols] = 1.0
    markers[second, cols] = 1.0
    x = np.stack([values, markers], axis=2).astype(np.float32)
    y = (values[first, cols] + values[second, cols])[:, None].astype(np.float32)
    return x, y


def build(cell, hidden, seed):
    """A recurrent cell with input size 2 and a Linear(hidden, 1) head on its last state."""
    if cell == "lstm":
        rnn = rf.LSTM(2, hidden, seed=seed)
        init.forget_bias(rnn, 1.0)
    elif cell == "rnn":
        rnn = rf.RNN(2, hidden, nonlinearity="tanh", seed=seed)
    else:
        raise ValueError(f"cell must be 'lstm' or 'rnn', got {cell!r}")
    init.orthogonal(rnn, seed=seed + 1)
    return rf.SequenceModel(rnn, head=rf.Linear(hidden, 1, seed=seed + 2), head_on="last")


def evaluate(model, x, y, chunk=500):
    """Mean squared error of ``model`` on held-out data (inference, no tape)."""
    total = 0.0
    for s in range(0, y.shape[0], chunk):
        pred, _ = model(x[:, s:s + chunk])
        loss, _ = losses.mse_loss(pred, y[s:s + chunk], reduction="sum", grad=False)
        total += loss
    return total / y.shape[0]


def train(cell, T, steps, hidden, batch=64, lr=1e-2, clip=1.0, seed=0, log_every=0,
          print_fn=print):
    """Train one model for a fixed number of steps; returns ``(model, held-out MSE, seconds)``.

    The training batches depend only on ``seed`` (not on the cell), so both cells see the same
    data in the same order; the held-out set comes from its own generator.
    """
    model = build(cell, hidden, seed)
    opt = rf.optim.Adam(model.modules(), lr=lr)
    data_rng = np.random.default_rng(seed + 100)
    x_test, y_test = adding_batch(np.random.default_rng(seed + 200), T, 2000)
    t0 = time.perf_counter()
    for step in range(1, steps + 1):
        x, y = adding_batch(data_rng, T, batch)
        pred, _, tape = model.forward(x, train=True)
        loss, dpred = losses.mse_loss(pred, y)
        model.zero_grad()
        model.backward(tape, dpred)
        rf.clip_grad_norm(model.modules(), clip)
        opt.step()
        if log_every and (step % log_every == 0 or step == steps):
            print_fn(f"  {cell:4s} step {step:5d}  train MSE {loss:.4f}  "
                     f"held-out MSE {evaluate(model, x_test, y_test):.4f}")
    seconds = time.perf_counter() - t0
    return model, evaluate(model, x_test, y_test), seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--T", type=int, default=100, help="sequence length (default 100)")
    p.add_argument("--steps", type=int, default=2000, help="training steps per model")
    p.add_argument("--hidden", type=int, default=64, help="hidden units of both models")
    p.add_argument("--batch", type=int, default=64, help="sequences per step")
    p.add_argument("--lr", type=float, default=1e-2, help="Adam learning rate")
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping threshold")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=250, help="progress lines (0: none)")
    args = p.parse_args(argv)
    if args.T < 2:
        p.error("--T must be at least 2 (one marker in each half)")

    print(f"adding problem: T={args.T}, {args.steps} steps of batch {args.batch}, hidden "
          f"{args.hidden}, Adam lr {args.lr}, clip {args.clip}, {rf.get_num_threads()} threads")
    results = {}
    for cell in ("lstm", "rnn"):
        _, mse, seconds = train(cell, args.T, args.steps, args.hidden, batch=args.batch,
                                lr=args.lr, clip=args.clip, seed=args.seed,
                                log_every=args.log_every)
        results[cell] = mse
        print(f"{cell}: trained in {seconds:.1f} s")
    _, y_test = adding_batch(np.random.default_rng(args.seed + 200), args.T, 2000)
    constant = float(np.mean((y_test - 1.0) ** 2))
    print(f"\nheld-out MSE (2000 sequences, T={args.T}):")
    print(f"  constant predictor 1.0   {constant:.4f}   (1/6 = {BASELINE_MSE:.4f} in expectation)")
    print(f"  LSTM                     {results['lstm']:.4f}")
    print(f"  tanh RNN                 {results['rnn']:.4f}")
    return results


if __name__ == "__main__":
    main()
