"""Serving safety: what a production process that embeds rnnfast relies on.

- One model object shared by many Python threads answers every call exactly as a single thread
  would (bit for bit), for every cell, both dtypes, mixed shapes, lengths and initial states;
  training on a separate model per thread is just as exact.
- After the parameters change (load_state_dict, set_params) between phases of concurrent calls,
  the packed-weight cache is rebuilt and the answers follow the new parameters. Changing the
  parameters WHILE other threads run the same model is the caller's responsibility and is not
  tested here: a call in flight reads both the packed weights it took at its start and the flat
  parameter buffer, so it can mix old and new values.
- The GIL is released during compute: a pure-Python loop in another thread keeps running while a
  long rnnfast call is in progress (with a GIL-holding control that shows the probe can tell).
- Memory stays flat over many calls (inference, training, rejected inputs).
- ``rf.threads(n)`` sets the core's thread count for a block and restores it.

Reference answers are computed before any thread starts, by the same code single-threaded; the
engine's results do not depend on the thread count, so equality is bitwise (np.array_equal).
"""

import gc
import os
import sys
import threading
import time

import numpy as np
import pytest
import torch  # noqa: F401  (the oracle must be importable; see conftest)

import rnnfast as rf
from conftest import is_lstm, rf_model

N_PY_THREADS = 8

# (cell, dtype, input_size, hidden_size, num_layers, bidirectional, batch_first)
SPECS = [
    ("lstm", "float32", 7, 45, 2, True, False),
    ("gru", "float32", 5, 64, 1, False, True),
    ("rnn_tanh", "float64", 6, 12, 2, False, False),
    ("rnn_relu", "float32", 4, 9, 1, True, True),
    ("lstm", "float64", 3, 30, 1, False, True),
    ("gru", "float64", 9, 16, 2, True, False),
]


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def build(spec, seed, dropout=0.0):
    cell, dtype, I, H, L, bidir, bf = spec
    return rf_model(cell, I, H, L, batch_first=bf, dropout=dropout, bidirectional=bidir,
                    dtype=dtype, seed=seed)


def twin(model, spec):
    """A separate model object holding the same parameters (its own packed-weight cache)."""
    t = build(spec, seed=12345)
    t.load_state_dict(model.state_dict())
    return t


def make_jobs(spec, rng, n, steps=(1, 5, 40), batches=(1, 3, 8)):
    """n inference inputs (x, hx, lengths) of mixed shapes for a model of this spec. Shapes come
    from a small set, so that different inputs of the same shape run at the same time (a buffer
    wrongly shared between calls would show), and include steps long enough for the threads'
    computations to overlap outside the GIL."""
    cell, dtype, I, H, L, bidir, bf = spec
    npdt = np.float32 if dtype == "float32" else np.float64
    D = 2 if bidir else 1
    jobs = []
    for k in range(n):
        T = int(rng.choice(steps))
        B = int(rng.choice(batches))
        x = rng.standard_normal((B, T, I) if bf else (T, B, I)).astype(npdt)
        hx = None
        if k % 3 != 0:
            sshape = (L * D, B, H)
            h0 = (0.5 * rng.standard_normal(sshape)).astype(npdt)
            hx = (h0, (0.5 * rng.standard_normal(sshape)).astype(npdt)) if is_lstm(cell) else h0
        lengths = None
        if k % 2 == 1:
            lengths = rng.integers(1, T + 1, size=B).astype(np.int64)
        jobs.append((x, hx, lengths))
    return jobs


def flat_result(cell, y, state):
    """(y, h_n[, c_n]) as a tuple of arrays, copied."""
    if is_lstm(cell):
        return (np.array(y), np.array(state[0]), np.array(state[1]))
    return (np.array(y), np.array(state))


def same_bits(a, b):
    return len(a) == len(b) and all(
        u.shape == v.shape and u.dtype == v.dtype and np.array_equal(u, v, equal_nan=True)
        for u, v in zip(a, b))


def run_threads(n, target):
    """Run target(tid, barrier) on n threads that start together; return the errors they hit."""
    errors = []
    barrier = threading.Barrier(n)

    def body(tid):
        try:
            target(tid, barrier)
        except BaseException as exc:  # a thread's exception would otherwise vanish
            errors.append(f"thread {tid}: {type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=body, args=(t,)) for t in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    return errors


@pytest.fixture
def fast_gil_switching():
    """Switch the GIL between Python threads often, so that the threads interleave at many more
    points of the Python layer (packed-weight cache, validation) than by default."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)


def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --------------------------------------------------------------------------
# one model, many threads
# --------------------------------------------------------------------------
@pytest.mark.parametrize("core_threads", [1, 2])
def test_shared_models_inference_bitwise_across_threads(core_threads, restore_threads,
                                                        fast_gil_switching):
    """8 Python threads call the SAME six model objects with mixed inputs, each thread in its own
    order, several rounds; every answer equals the single-threaded one bit for bit. The models
    are fresh, so the first calls also race to build the packed-weight cache."""
    rf.set_num_threads(core_threads)
    rng = np.random.default_rng(1)
    models = [build(spec, seed=40 + i) for i, spec in enumerate(SPECS)]
    jobs = [(i, job) for i, spec in enumerate(SPECS) for job in make_jobs(spec, rng, 8)]
    # References on twins, so the shared models' caches are still cold when the threads start.
    twins = [twin(m, spec) for m, spec in zip(models, SPECS)]
    refs = [flat_result(SPECS[i][0], *twins[i](x, hx=hx, lengths=lengths))
            for i, (x, hx, lengths) in jobs]
    assert all(m._packed is None for m in models)
    rounds = 6
    calls = [0] * N_PY_THREADS

    def work(tid, barrier):
        order = np.random.default_rng(100 + tid).permutation(len(jobs))
        barrier.wait()
        for _ in range(rounds):
            for j in order:
                i, (x, hx, lengths) = jobs[j]
                got = flat_result(SPECS[i][0], *models[i](x, hx=hx, lengths=lengths))
                calls[tid] += 1
                if not same_bits(got, refs[j]):
                    raise AssertionError(f"job {j} ({SPECS[i]}) differs from the single-threaded "
                                         f"answer")

    errors = run_threads(N_PY_THREADS, work)
    assert not errors, "\n".join(errors)
    assert calls == [rounds * len(jobs)] * N_PY_THREADS


def test_training_on_separate_models_per_thread_bitwise(restore_threads, fast_gil_switching):
    """Each of 8 threads trains its own model (same seed, dropout on) on the same sequence of
    forward+backward calls; everything (y, state, dx, dhx, accumulated grads) equals a
    single-threaded run of that sequence."""
    rf.set_num_threads(1)
    specs = [SPECS[0], SPECS[2], SPECS[5], SPECS[3]]  # LSTM f32, RNN f64, GRU f64, RNN-relu f32
    rng = np.random.default_rng(2)
    plan = [(s, job) for s in range(len(specs)) for job in make_jobs(specs[s], rng, 5)]

    def train_sequence(models):
        out = []
        for s, (x, hx, lengths) in plan:
            m, cell = models[s], specs[s][0]
            y, state, tape = m.forward(x, hx=hx, lengths=lengths, train=True)
            dy = np.cos(np.asarray(y) * 3.0)  # a fixed, non-trivial cotangent
            dx, dhx = m.backward(tape, dy)
            res = flat_result(cell, y, state) + (np.array(dx),)
            res += tuple(np.array(v) for v in dhx) if is_lstm(cell) else (np.array(dhx),)
            out.append(res + (np.array(m.grads),))  # grads accumulate across the sequence
        return out

    def fresh():
        # dropout only where there is a layer boundary for it to act on
        return [build(spec, seed=70 + s, dropout=0.3 if spec[4] > 1 else 0.0)
                for s, spec in enumerate(specs)]

    ref = train_sequence(fresh())
    per_thread = [fresh() for _ in range(N_PY_THREADS)]
    results = [None] * N_PY_THREADS

    def work(tid, barrier):
        barrier.wait()
        results[tid] = train_sequence(per_thread[tid])

    errors = run_threads(N_PY_THREADS, work)
    assert not errors, "\n".join(errors)
    for tid, got in enumerate(results):
        bad = [k for k, (a, b) in enumerate(zip(got, ref)) if not same_bits(a, b)]
        assert len(got) == len(ref) and not bad, f"thread {tid}: steps {bad} differ"
    # the sequence really did something: gradients are non-zero and dropout was drawn
    assert all(np.any(r[-1] != 0) for r in ref)


def test_parameter_updates_between_concurrent_phases(restore_threads, fast_gil_switching):
    """Phases of 8 threads calling shared models, separated by parameter writes made while no call
    runs (load_state_dict, set_params). Each phase must see exactly the new parameters: the first
    calls after a write race to rebuild the packed weights, and none may use the stale copy.

    Updating the parameters while other threads run the same model is the caller's
    responsibility (see the module docstring) and is not done here."""
    rf.set_num_threads(1)
    rng = np.random.default_rng(3)
    models = [build(spec, seed=90 + i) for i, spec in enumerate(SPECS)]
    jobs = [(i, job) for i, spec in enumerate(SPECS) for job in make_jobs(spec, rng, 4)]

    def answers_of(states):
        twins = []
        for spec, sd in zip(SPECS, states):
            t = build(spec, seed=1)
            t.load_state_dict(sd)
            twins.append(t)
        return [flat_result(SPECS[i][0], *twins[i](x, hx=hx, lengths=lengths))
                for i, (x, hx, lengths) in jobs]

    def phase(refs):
        def work(tid, barrier):
            order = np.random.default_rng(200 + tid).permutation(len(jobs))
            barrier.wait()
            for _ in range(2):
                for j in order:
                    i, (x, hx, lengths) = jobs[j]
                    got = flat_result(SPECS[i][0], *models[i](x, hx=hx, lengths=lengths))
                    if not same_bits(got, refs[j]):
                        raise AssertionError(f"job {j} ({SPECS[i]}): answer is not the one of "
                                             f"the current parameters (stale packed weights?)")
        return run_threads(N_PY_THREADS, work)

    previous = None
    for version in range(4):
        if version > 0:  # write new parameters while no call is running
            for i, m in enumerate(models):
                if (version + i) % 2:
                    sd = {k: (v * 0.9 + 0.05 * np.sin(v * version + i)).astype(v.dtype)
                          for k, v in m.state_dict().items()}
                    m.load_state_dict(sd)
                else:
                    m.set_params(np.asarray(m.params)[::-1] * 1.1)
        refs = answers_of([m.state_dict() for m in models])
        if previous is not None:  # the write changed every model's answers
            for i in range(len(SPECS)):
                js = [j for j, (k, _) in enumerate(jobs) if k == i]
                assert any(not same_bits(refs[j], previous[j]) for j in js), SPECS[i]
        errors = phase(refs)
        assert not errors, f"parameter version {version}:\n" + "\n".join(errors)
        previous = refs


# --------------------------------------------------------------------------
# the GIL is released while the core computes
# --------------------------------------------------------------------------
def _probe_gil(task):
    """Run task() in a thread while this thread spins a pure-Python counter that takes a time
    stamp every 256 rounds. Returns (window seconds, span of the stamps inside the window in
    seconds, rounds counted inside the window). If task() held the GIL, this thread could run
    inside the window only while the task thread waits to switch (a few ms at its edges)."""
    window = {}
    started = threading.Event()

    def run():
        started.set()
        t0 = time.perf_counter()
        task()
        window["t"] = (t0, time.perf_counter())

    th = threading.Thread(target=run)
    stamps = []
    th.start()
    started.wait()
    count = 0
    while th.is_alive():
        count += 1
        if count % 256 == 0:
            stamps.append((time.perf_counter(), count))
    th.join()
    t0, t1 = window["t"]
    inside = [(t, c) for t, c in stamps if t0 < t < t1]
    span = inside[-1][0] - inside[0][0] if len(inside) > 1 else 0.0
    rounds = inside[-1][1] - inside[0][1] if len(inside) > 1 else 0
    return t1 - t0, span, rounds


def test_gil_is_released_during_compute(restore_threads):
    """While one thread runs a long LSTM forward on one core thread, another thread's pure-Python
    loop keeps counting through most of the call. Control: a GIL-holding builtin of similar length
    (sum over a range) lets the counter run at most at the window's edges."""
    rf.set_num_threads(1)
    rng = np.random.default_rng(4)
    m = rf.LSTM(256, 256, seed=0)
    x = rng.standard_normal((600, 32, 256)).astype(np.float32)
    m(x[:2])  # pack the weights now, not inside the measured call

    window, span, rounds = _probe_gil(lambda: m(x))
    c_window, c_span, c_rounds = _probe_gil(lambda: sum(range(12_000_000)))
    assert window > 0.05 and c_window > 0.05, (window, c_window)  # both long enough to tell
    assert c_span < 0.5 * c_window, (
        f"probe broken: counter ran {c_span:.3f} s of a {c_window:.3f} s GIL-holding call")
    assert span > 0.5 * window and rounds > 1000, (
        f"the Python counter ran only {span:.3f} s ({rounds} rounds) of a {window:.3f} s rnnfast "
        f"call: the GIL is not released during compute")


# --------------------------------------------------------------------------
# memory stays flat
# --------------------------------------------------------------------------
def test_memory_flat_over_many_calls(restore_threads):
    """10,000 small inference calls (mixed models, lengths, hx), 1,000 training forward+backward
    calls and 1,000 rejected calls, after a warm-up, grow the resident set by less than 20 MB."""
    rf.set_num_threads(1)
    rng = np.random.default_rng(5)
    models = [build(spec, seed=10 + i) for i, spec in enumerate(SPECS)]
    jobs = [(i, job) for i, spec in enumerate(SPECS)
            for job in make_jobs(spec, rng, 10, steps=(1, 3, 6), batches=(1, 2, 4))]
    train_model = build(SPECS[0], seed=11, dropout=0.2)
    tx, thx, tlen = make_jobs(SPECS[0], rng, 2, steps=(6,), batches=(4,))[1]
    bad_x = np.zeros((3, 2, SPECS[1][2] + 1), np.float32)  # wrong feature count

    def workload(n_infer, n_train, n_bad):
        for k in range(n_infer):
            i, (x, hx, lengths) = jobs[k % len(jobs)]
            models[i](x, hx=hx, lengths=lengths)
        for _ in range(n_train):
            y, _, tape = train_model.forward(tx, hx=thx, lengths=tlen, train=True)
            train_model.backward(tape, np.ones_like(y))
        for _ in range(n_bad):
            with pytest.raises(ValueError):
                models[1](bad_x)

    workload(1000, 100, 100)  # warm-up: caches, scratch buffers, allocator pools
    gc.collect()
    before = rss_bytes()
    t0 = time.perf_counter()
    workload(10_000, 1000, 1000)
    elapsed = time.perf_counter() - t0
    gc.collect()
    growth = rss_bytes() - before
    assert growth < 20 * 2**20, f"RSS grew by {growth / 2**20:.1f} MB over the calls"
    assert elapsed < 60, f"the workload took {elapsed:.1f} s"


# --------------------------------------------------------------------------
# rf.threads(n)
# --------------------------------------------------------------------------
def test_threads_context_manager_sets_and_restores(restore_threads):
    rf.set_num_threads(2)
    with rf.threads(1) as n:
        assert n == 1 and rf.get_num_threads() == 1
        with rf.threads(3):
            assert rf.get_num_threads() == 3
        assert rf.get_num_threads() == 1
    assert rf.get_num_threads() == 2

    # restored when the block raises, and the exception goes through
    with pytest.raises(KeyError):
        with rf.threads(1):
            raise KeyError("inside")
    assert rf.get_num_threads() == 2

    # -1 means every CPU this process may run on, as for set_num_threads
    with rf.threads(-1) as n:
        assert n == len(os.sched_getaffinity(0)) == rf.get_num_threads()
    assert rf.get_num_threads() == 2


@pytest.mark.parametrize("bad,exc", [(0, ValueError), (-2, ValueError), (1.5, TypeError),
                                     (True, TypeError), ("2", TypeError), (None, TypeError)])
def test_threads_context_manager_rejects_bad_counts(bad, exc, restore_threads):
    """A bad count is refused before the block runs, and the setting is left alone."""
    rf.set_num_threads(2)
    ran = []
    with pytest.raises(exc, match="threads"):
        with rf.threads(bad):
            ran.append(True)
    assert not ran and rf.get_num_threads() == 2


def test_threads_context_manager_is_process_global(restore_threads):
    """The count is one setting for the whole process: a block entered in one thread changes what
    every other thread sees until it exits (documented; do not rely on per-thread counts)."""
    rf.set_num_threads(2)
    inside, release = threading.Event(), threading.Event()
    seen = []

    def holder():
        with rf.threads(1):
            inside.set()
            release.wait(10)

    th = threading.Thread(target=holder)
    th.start()
    assert inside.wait(10)
    seen.append(rf.get_num_threads())  # this (other) thread sees the block's setting
    release.set()
    th.join(10)
    seen.append(rf.get_num_threads())
    assert seen == [1, 2]


def test_threads_context_manager_results_unchanged(restore_threads):
    """The same call inside rf.threads(1) and rf.threads(2) gives identical bits."""
    rng = np.random.default_rng(6)
    m = rf.GRU(17, 70, num_layers=2, bidirectional=True, seed=6)
    x = rng.standard_normal((15, 5, 17)).astype(np.float32)
    lengths = np.array([15, 1, 7, 15, 3])
    with rf.threads(1):
        a = flat_result("gru", *m(x, lengths=lengths))
    with rf.threads(2):
        b = flat_result("gru", *m(x, lengths=lengths))
    assert same_bits(a, b)
