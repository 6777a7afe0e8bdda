"""`rnnfast demo`: train a character-level LSTM language model, then generate text.

The default corpus is rnnfast/data/corpus.txt, generated for this package by tools/make_corpus.py.
Training streams B parallel positions through the text in chunks of T characters (truncated BPTT:
each chunk starts from the previous chunk's final state, without gradient across the boundary),
with Adam and gradient-norm clipping, for a fixed wall-clock budget. The last 5% of the text is
held out: the demo reports its bits per character next to the unigram entropy of the text (what a
model that ignores context would reach).
"""
import json
import math
import os
import time

import numpy as np

from . import init, losses, sampling
from ._rnn import LSTM
from .clip import clip_grad_norm
from .layers import Embedding, Linear
from .model import SequenceModel
from .optim import Adam
from .progress import progress

DEFAULT_CORPUS = os.path.join(os.path.dirname(__file__), "data", "corpus.txt")


def load_text(path=None):
    path = path or DEFAULT_CORPUS
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if len(set(text)) < 2 or len(text) < 1000:
        raise ValueError(f"{path}: need at least 1000 characters and 2 distinct ones, got "
                         f"{len(text)} characters, {len(set(text))} distinct")
    return text


def unigram_bits(ids, vocab_size):
    p = np.bincount(ids, minlength=vocab_size) / len(ids)
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum())


def build_model(vocab_size, hidden, layers, embed=32, seed=0):
    rnn = LSTM(embed, hidden, num_layers=layers, seed=seed)
    init.orthogonal(rnn, seed=seed + 1)
    init.forget_bias(rnn, 1.0)
    return SequenceModel(rnn, embedding=Embedding(vocab_size, embed, seed=seed + 2),
                         head=Linear(hidden, vocab_size, seed=seed + 3))


def evaluate_bits(model, ids, T=128, B=16):
    """Bits per character of `model` on `ids` (teacher forcing, state carried across chunks)."""
    n = (len(ids) - 1) // B
    if n < 2:
        raise ValueError("held-out text too short to evaluate")
    x_all = ids[:n * B].reshape(B, n).T           # (n, B): B streams
    y_all = ids[1:n * B + 1].reshape(B, n).T
    state, total, count = None, 0.0, 0
    for s in range(0, n, T):
        logits, state = model(x_all[s:s + T], hx=state)
        loss, _ = losses.cross_entropy(logits, y_all[s:s + T], reduction="sum", grad=False)
        total += float(loss)
        count += y_all[s:s + T].size
    return total / count / math.log(2)


def run(text_path=None, minutes=1.0, hidden=256, layers=1, batch=32, seq_len=64, lr=3e-3,
        clip=1.0, seed=0, generate=400, temperature=0.7, save=None, prefix="The ", quiet=False,
        print_fn=print):
    """Train and generate; returns a dict of what was measured."""
    text = load_text(text_path)
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.fromiter((index[c] for c in text), dtype=np.int64, count=len(text))
    split = int(len(ids) * 0.95)
    train_ids, valid_ids = ids[:split], ids[split:]
    V = len(vocab)
    model = build_model(V, hidden, layers, seed=seed)
    opt = Adam(model.modules(), lr=lr)
    h_uni = unigram_bits(ids, V)
    print_fn(f"rnnfast demo: {len(text):,} characters, vocabulary {V}, unigram entropy "
             f"{h_uni:.3f} bits/char; LSTM {layers}x{hidden}, batch {batch} x {seq_len} steps, "
             f"{model.num_parameters():,} parameters, {minutes:g} min budget")

    # B streams, each reading its own contiguous stretch of the training text
    n = (len(train_ids) - 1) // batch
    x_streams = train_ids[:n * batch].reshape(batch, n).T
    y_streams = train_ids[1:n * batch + 1].reshape(batch, n).T
    budget = 60.0 * minutes
    est_steps = max(1, int(budget / 0.1))
    bar = progress(est_steps, desc="training", unit="step", disable=quiet)
    state, pos, step, seen = None, 0, 0, 0
    t0 = time.perf_counter()
    ema = None
    while time.perf_counter() - t0 < budget:
        if pos + seq_len > n:
            pos, state = 0, None
        x, y = x_streams[pos:pos + seq_len], y_streams[pos:pos + seq_len]
        pos += seq_len
        logits, new_state, tape = model.forward(x, hx=state, train=True)
        loss, dlogits = losses.cross_entropy(logits, y)
        model.zero_grad()
        model.backward(tape, dlogits)
        clip_grad_norm(model.modules(), clip)
        opt.step()
        state = new_state
        step += 1
        seen += x.size
        bits = float(loss) / math.log(2)
        ema = bits if ema is None else 0.95 * ema + 0.05 * bits
        elapsed = time.perf_counter() - t0
        if step == 5 or step >= bar.total:  # re-estimate the steps the budget allows, for the bar
            bar.total = max(step + 1, int(budget / (elapsed / step)))
        bar.set_postfix_str(f"loss {float(loss):.3f} bits/char {ema:.3f} "
                            f"{seen / elapsed:,.0f} chars/s")
        bar.update(1)
    bar.close()
    train_time = time.perf_counter() - t0
    valid_bits = evaluate_bits(model, valid_ids)
    print_fn(f"trained {step} steps ({seen:,} characters) in {train_time:.1f} s, "
             f"{seen / train_time:,.0f} chars/s")
    print_fn(f"held-out: {valid_bits:.3f} bits/char (unigram entropy {h_uni:.3f})")

    prefix_ids = np.array([index[c] for c in prefix if c in index] or [0], dtype=np.int64)
    out = sampling.sample(model, prefix_ids, generate, temperature=temperature, seed=seed)
    sample_text = "".join(vocab[i] for i in prefix_ids) + "".join(vocab[i] for i in np.ravel(out))
    print_fn(f"\n--- generated (temperature {temperature}) ---\n{sample_text}\n")
    if save:
        from .io import save as save_model

        save_model(model, save)
        with open(save + ".vocab.json", "w", encoding="utf-8") as f:
            json.dump(vocab, f)
        print_fn(f"saved the model to {save} (rf.load reads it) and its vocabulary to "
                 f"{save}.vocab.json")
    return dict(steps=step, chars=seen, seconds=train_time, valid_bits=valid_bits,
                unigram_bits=h_uni, sample=sample_text)
