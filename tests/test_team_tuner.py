"""The timing-based team size (csrc/team_tuner.h): calls near the thresholds of threads_for take
whichever of two candidate thread counts has been faster for their shape, and results stay
bitwise the same whatever it picks."""

import numpy as np
import pytest

import rnnfast as rf
from rnnfast import _core


@pytest.fixture
def tuning():
    """Tuning on for the test (conftest turns it off for the rest of the suite), 2 threads."""
    before_mode, before_threads = _core.core_team_tuning_mode(), rf.get_num_threads()
    _core.core_set_team_tuning_mode(-1)
    rf.set_num_threads(2)
    yield
    _core.core_set_team_tuning_mode(before_mode)
    rf.set_num_threads(before_threads)


def _needs_two_threads():
    if rf.get_num_threads() != 2 or not rf.build_info()["openmp"]:
        pytest.skip("needs OpenMP and 2 threads")


def test_policy_follows_the_faster_candidate(tuning):
    """Made-up times: the faster size wins after the first calls, a change of which one is faster
    is followed within a few dozen calls, and probes of a settled choice grow rare."""
    key = 0x5EED_0001
    phases = [(200, 100e-6, 60e-6), (400, 100e-6, 300e-6), (2000, 100e-6, 300e-6)]
    picked = _core.core_team_tuner_replay(key, 1, 2, phases)
    first, second, third = picked[:200], picked[200:600], picked[600:]
    assert set(first[:6]) == {1, 2}  # both tried first
    assert first[6:].count(2) >= 190  # then the faster one, bar probes
    switch = second.index(1)
    assert switch <= 40  # the change is seen on the next probe
    assert second[switch:].count(1) >= len(second[switch:]) - 10
    assert third.count(2) <= 8  # probe interval doubles: a handful in 2000 calls
    # equal times: no flapping between the two
    flat = _core.core_team_tuner_replay(key + 1, 1, 2, [(1000, 100e-6, 99e-6)])
    changes = sum(a != b for a, b in zip(flat[6:], flat[7:]))
    assert changes <= 20


def test_one_stall_does_not_flip_the_choice(tuning):
    """A single call 40x slower than usual (a worker woken after a pause) leaves the choice
    alone; a lasting slowdown of the chosen size moves it within a few calls."""
    key = 0x5EED_0003
    phases = [(100, 130e-6, 90e-6), (1, 130e-6, 4e-3), (40, 130e-6, 90e-6)]
    picked = _core.core_team_tuner_replay(key, 1, 2, phases)
    assert picked[100:].count(1) <= 2  # at most a probe
    picked = _core.core_team_tuner_replay(key, 1, 2, [(20, 130e-6, 190e-6)])
    assert picked[:6].count(2) >= 3 and picked[-10:].count(1) >= 9


def test_policy_survives_slow_first_calls(tuning):
    """A candidate whose first calls are slow (a cold team) is picked once it is faster."""
    key = 0x5EED_0002
    picked = _core.core_team_tuner_replay(key, 1, 2, [(6, 130e-6, 5e-3), (300, 130e-6, 90e-6)])
    assert picked[-100:].count(2) >= 95


def test_a_new_shape_runs_the_fixed_choice_first(tuning):
    """The first call of a shape takes the fixed thresholds' team (a workload whose shapes never
    repeat runs as untuned), then the other candidate."""
    for fixed in (1, 2):
        picked = _core.core_team_tuner_replay(0x5EED_0100 + fixed, 1, 2, [(2, 1e-4, 1e-4)], fixed)
        assert picked == [fixed, 3 - fixed]


def test_lengths_within_a_factor_of_two_share_an_entry(tuning):
    """T = 64..127 is one entry (costs are kept per step); T = 128 is another."""
    _needs_two_threads()
    m = rf.LSTM(64, 64)
    for T in range(64, 128, 4):
        m(np.zeros((T, 1, 64), np.float32))
    assert _core.core_team_choice(m._desc(64, 1), 0) in (1, 2)
    assert _core.core_team_choice(m._desc(127, 1), 0) in (1, 2)
    assert _core.core_team_choice(m._desc(128, 1), 0) == 0


def test_tuned_calls_keep_the_bits(tuning):
    """LSTM H64 batch 1 (near the thresholds on every machine class) over many calls with tuning
    on: every output bitwise equal to the fixed-threshold call, and a choice is made."""
    _needs_two_threads()
    rng = np.random.default_rng(5)
    m = rf.LSTM(64, 64, seed=3)
    x = rng.standard_normal((40, 1, 64)).astype(np.float32)
    _core.core_set_team_tuning_mode(0)
    y0, (h0, c0) = m(x)
    yt0, _, tape = m.forward(x, train=True)
    m.zero_grad()
    dx0, _ = m.backward(tape, np.ones_like(yt0))
    g0 = m.grads.copy()
    _core.core_set_team_tuning_mode(-1)
    for _ in range(40):
        y, (h, c) = m(x)
        assert np.array_equal(y, y0) and np.array_equal(h, h0) and np.array_equal(c, c0)
        yt, _, tape = m.forward(x, train=True)
        m.zero_grad()
        dx, _ = m.backward(tape, np.ones_like(yt))
        assert np.array_equal(yt, yt0) and np.array_equal(dx, dx0)
        assert np.array_equal(m.grads, g0)
    desc = m._desc(40, 1)
    for kind in (0, 1, 2):
        assert _core.core_team_choice(desc, kind) in (1, 2)


def test_shapes_far_from_the_thresholds_are_not_tuned(tuning):
    """One unit block (RNN H32) or plenty of work (LSTM H256 B16): one team size fits, no
    estimates kept."""
    _needs_two_threads()
    small, big = rf.RNN(32, 32), rf.LSTM(256, 256)
    xs = np.zeros((10, 1, 32), np.float32)
    xb = np.zeros((10, 16, 256), np.float32)
    for _ in range(10):
        small(xs)
        big(xb)
    assert _core.core_team_choice(small._desc(10, 1), 0) == 0
    assert _core.core_team_choice(big._desc(10, 16), 0) == 0


def test_mode_is_checked():
    with pytest.raises(ValueError, match="tuning mode"):
        _core.core_set_team_tuning_mode(2)


def test_pause_classes():
    """A call within 1 ms of the thread's previous one is warm (class 0), and so is one whose
    workers (the thread's last multi-thread call) ended less than their spin time ago; later ones
    are classed by octaves of that time over the spin time, capped."""
    c, top, b = _core.core_idle_class, _core.core_idle_classes(), 8e-3
    assert c(0.0, 0.0, b) == 0 and c(0.9e-3, 10.0, b) == 0  # warm, however long the workers slept
    assert c(5e-3, 5e-3, b) == 0 and c(7.9e-3, 7.9e-3, b) == 0  # the workers still spin
    assert c(8e-3, 8e-3, b) == 1 and c(15e-3, 15e-3, b) == 1 and c(16e-3, 16e-3, b) == 2
    assert c(2e-3, 20e-3, b) == 2  # the workers' last call sets the class, not the last call
    assert c(20e-3, 1e-3, b) == 2  # since_team below since_call cannot be: taken as since_call
    assert c(0.05, 0.05, b) == top and c(float("inf"), float("inf"), b) == top
    assert c(float("nan"), 1.0, b) == 0
    assert c(10.0, 10.0, float("inf")) == 0  # workers that never sleep: always warm
    assert 1e-3 <= _core.core_idle_boundary()


def test_calls_after_a_pause_are_tuned_apart(tuning):
    """Batch-1 LSTM H128 T1 called after pauses longer than the workers spin: those calls keep estimates under their pause class,
    apart from the warm calls of the shape, and give the same bits as the fixed-threshold call.
    A call too large for a wake to matter (LSTM H512 B64 T50, far above the thresholds) is not
    tuned after a pause either."""
    _needs_two_threads()
    import time

    rng = np.random.default_rng(9)
    m = rf.LSTM(128, 128, seed=4)
    x = rng.standard_normal((1, 1, 128)).astype(np.float32)
    _core.core_set_team_tuning_mode(0)
    y0, (h0, c0) = m(x)
    _core.core_set_team_tuning_mode(-1)
    desc, top = m._desc(1, 1), _core.core_idle_classes()
    pause = 4 * _core.core_idle_boundary() + 0.005  # the top class
    if not pause < 1:
        pytest.skip("OpenMP's workers spin for a second or more here")
    for _ in range(8):
        time.sleep(pause)
        y, (h, c) = m(x)
        assert np.array_equal(y, y0) and np.array_equal(h, h0) and np.array_equal(c, c0)
    # every call came a top-class pause after the previous: that entry has a choice by now
    assert _core.core_team_choice(desc, 0, idle=top) in (1, 2)
    big = rf.LSTM(512, 512)
    xb = np.zeros((50, 64, 512), np.float32)
    for _ in range(2):
        time.sleep(pause)
        big(xb)
    for idle in range(top + 1):
        assert _core.core_team_choice(big._desc(50, 64), 0, idle=idle) == 0
