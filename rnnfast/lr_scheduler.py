"""Learning-rate schedulers with ``torch.optim.lr_scheduler``'s semantics and defaults.

``StepLR``, ``ExponentialLR``, ``CosineAnnealingLR``, ``LinearWarmup`` (torch's ``LinearLR``) and
``OneCycleLR`` set ``optimizer.lr`` from a closed-form function of the step index: construction
sets the value for step 0 and each ``step()`` (called after ``optimizer.step()``) moves to the next
index. torch computes most of these recursively (lr_t from lr_{t-1}); the closed forms give the
same values to rounding and cannot drift. ``ReduceLROnPlateau`` reduces the lr when a metric stops
improving (``step(metric)``).

One scheduler drives one optimizer's lr. ``state_dict()``/``load_state_dict()`` save and restore
a scheduler; loading also puts the scheduler's last lr back into the optimizer, so the order in
which an optimizer and its scheduler are restored does not matter.
"""
import copy
import math
import numbers

import numpy as np

from . import _validate as V


def _optimizer(opt):
    from .optim import Optimizer

    if not isinstance(opt, Optimizer):
        raise TypeError(f"a scheduler drives an rnnfast.optim optimizer, got {type(opt).__name__}")
    return opt


_number = V.real_number


def _positive(value, name):
    value = _number(value, name)
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return value


def _non_negative(value, name):
    value = _number(value, name)
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def _int(value, name, minimum):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


class _Stateful:
    """state_dict/load_state_dict over every attribute but the optimizer (as torch does)."""

    def state_dict(self):
        return {k: copy.deepcopy(v) for k, v in self.__dict__.items() if k != "optimizer"}

    def load_state_dict(self, state_dict):
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        own = set(self.state_dict())
        got = set(state_dict.keys())
        if own != got:
            raise ValueError(f"state_dict does not belong to this {type(self).__name__}: missing "
                             f"{sorted(own - got)}, unexpected {sorted(got - own)}")
        last = state_dict["_last_lr"]
        if not isinstance(last, (list, tuple)) or len(last) != 1:
            raise ValueError(f"state_dict['_last_lr'] must be a one-element list, got {last!r}")
        lr = _number(last[0], "state_dict['_last_lr'][0]")
        self.__dict__.update(copy.deepcopy(dict(state_dict)))
        # Written directly: a value this scheduler produced (OneCycleLR's last one may be < 0).
        self.optimizer._hyper["lr"] = lr

    def get_last_lr(self):
        """The lr set by the last step, as a one-element list (torch returns one per group)."""
        return list(self._last_lr)


class LRScheduler(_Stateful):
    """Base of the closed-form schedulers: ``optimizer.lr = self._lr_at(step index)``."""

    def __init__(self, optimizer):
        self.optimizer = _optimizer(optimizer)
        if optimizer.initial_lr is None:
            optimizer.initial_lr = optimizer.lr
        self.base_lr = float(optimizer.initial_lr)
        self.last_epoch = -1
        self._last_lr = [optimizer.lr]
        self.step()

    def _lr_at(self, t):
        raise NotImplementedError

    def step(self):
        """Move to the next step index and set the optimizer's lr for it."""
        t = self.last_epoch + 1
        lr = self._lr_at(t)
        self.last_epoch = t
        self._apply(lr)

    def _apply(self, lr):
        self.optimizer.lr = lr
        self._last_lr = [self.optimizer.lr]


class StepLR(LRScheduler):
    """lr = base_lr * gamma ** (t // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size = _int(step_size, "step_size", 1)
        self.gamma = _positive(gamma, "gamma")
        super().__init__(optimizer)

    def _lr_at(self, t):
        return self.base_lr * self.gamma ** (t // self.step_size)


class ExponentialLR(LRScheduler):
    """lr = base_lr * gamma ** t."""

    def __init__(self, optimizer, gamma):
        self.gamma = _positive(gamma, "gamma")
        super().__init__(optimizer)

    def _lr_at(self, t):
        return self.base_lr * self.gamma ** t


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base_lr - eta_min) * (1 + cos(pi * t / T_max)) / 2 (no restarts; past
    T_max the cosine goes on, as torch's does)."""

    def __init__(self, optimizer, T_max, eta_min=0.0):
        self.T_max = _int(T_max, "T_max", 1)
        self.eta_min = _non_negative(eta_min, "eta_min")
        super().__init__(optimizer)

    def _lr_at(self, t):
        return (self.eta_min
                + (self.base_lr - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2)


class LinearWarmup(LRScheduler):
    """Linear warm-up (torch's ``LinearLR``): the factor on base_lr goes linearly from
    ``start_factor`` at step 0 to ``end_factor`` at step ``warmup_steps`` and stays there."""

    def __init__(self, optimizer, warmup_steps, start_factor=1.0 / 3, end_factor=1.0):
        self.warmup_steps = _int(warmup_steps, "warmup_steps", 1)
        self.start_factor = _number(start_factor, "start_factor")
        if not 0 < self.start_factor <= 1:
            raise ValueError(f"start_factor must be in (0, 1], got {self.start_factor}")
        self.end_factor = _number(end_factor, "end_factor")
        if not 0 <= self.end_factor <= 1:
            raise ValueError(f"end_factor must be in [0, 1], got {self.end_factor}")
        super().__init__(optimizer)

    def _lr_at(self, t):
        frac = min(self.warmup_steps, t) / self.warmup_steps
        return self.base_lr * (self.start_factor + (self.end_factor - self.start_factor) * frac)


class OneCycleLR(LRScheduler):
    """The 1cycle policy (torch's ``OneCycleLR``): from max_lr/div_factor up to max_lr over the
    first ``pct_start`` of ``total_steps``, then down to max_lr/(div_factor*final_div_factor)
    (``three_phase``: up, back down to the start, then down to the minimum).

    With ``cycle_momentum`` (torch's default) the momentum (SGD, RMSprop) or beta1 (Adam, AdamW)
    moves the opposite way between ``max_momentum`` and ``base_momentum``. Stepping past
    ``total_steps`` raises ValueError.
    """

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None,
                 pct_start=0.3, anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85,
                 max_momentum=0.95, div_factor=25.0, final_div_factor=1e4, three_phase=False):
        _optimizer(optimizer)
        if total_steps is not None:
            self.total_steps = _int(total_steps, "total_steps", 1)
        elif epochs is not None and steps_per_epoch is not None:
            self.total_steps = (_int(epochs, "epochs", 1)
                                * _int(steps_per_epoch, "steps_per_epoch", 1))
        else:
            raise ValueError("OneCycleLR needs total_steps, or epochs and steps_per_epoch")
        pct_start = _number(pct_start, "pct_start")
        if not 0 <= pct_start <= 1:
            raise ValueError(f"pct_start must be in [0, 1], got {pct_start}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        max_lr = _positive(max_lr, "max_lr")
        div_factor = _positive(div_factor, "div_factor")
        final_div_factor = _positive(final_div_factor, "final_div_factor")
        self.max_lr = max_lr
        self.initial_lr = max_lr / div_factor
        self.min_lr = self.initial_lr / final_div_factor
        if not isinstance(three_phase, (bool, np.bool_)):
            raise TypeError(f"three_phase must be a bool, got {three_phase!r}")
        n = self.total_steps
        # (end_step, start, end) for lr and for momentum, torch's phase table.
        lo, hi, fin = "initial_lr", "max_lr", "min_lr"
        if three_phase:
            self._phases = [
                (float(pct_start * n) - 1, lo, hi, "max_momentum", "base_momentum"),
                (float(2 * pct_start * n) - 2, hi, lo, "base_momentum", "max_momentum"),
                (n - 1, lo, fin, "max_momentum", "max_momentum"),
            ]
        else:
            self._phases = [
                (float(pct_start * n) - 1, lo, hi, "max_momentum", "base_momentum"),
                (n - 1, hi, fin, "base_momentum", "max_momentum"),
            ]
        if not isinstance(cycle_momentum, (bool, np.bool_)):
            raise TypeError(f"cycle_momentum must be a bool, got {cycle_momentum!r}")
        self.cycle_momentum = bool(cycle_momentum)
        if self.cycle_momentum:
            if hasattr(optimizer, "betas"):
                self._momentum_attr = "betas"
            elif hasattr(optimizer, "momentum"):
                self._momentum_attr = "momentum"
            else:
                raise ValueError(f"{type(optimizer).__name__} has no momentum or beta1 to cycle; "
                                 "pass cycle_momentum=False")
            self.base_momentum = _non_negative(base_momentum, "base_momentum")
            self.max_momentum = _non_negative(max_momentum, "max_momentum")
            self._set_momentum(optimizer, self.max_momentum)
        optimizer.initial_lr = self.initial_lr
        super().__init__(optimizer)

    def _set_momentum(self, optimizer, value):
        if self._momentum_attr == "betas":
            optimizer.betas = (value, optimizer.betas[1])
        else:
            optimizer.momentum = value

    def _anneal(self, start, end, pct):
        if self.anneal_strategy == "cos":
            return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)
        return (end - start) * pct + start

    def _values_at(self, t):
        if t > self.total_steps:
            raise ValueError(f"Tried to step {t} times. The specified number of total steps is "
                             f"{self.total_steps}")
        start_step = 0.0
        for i, (end_step, lr0, lr1, m0, m1) in enumerate(self._phases):
            if t <= end_step or i == len(self._phases) - 1:
                pct = (t - start_step) / (end_step - start_step)
                lr = self._anneal(getattr(self, lr0), getattr(self, lr1), pct)
                mom = (self._anneal(getattr(self, m0), getattr(self, m1), pct)
                       if self.cycle_momentum else None)
                return lr, mom
            start_step = end_step

    def _lr_at(self, t):
        return self._values_at(t)[0]

    def step(self):
        t = self.last_epoch + 1
        lr, mom = self._values_at(t)
        self.last_epoch = t
        if mom is not None:
            self._set_momentum(self.optimizer, mom)
        # The lr past the last step of a linear anneal can dip below zero (torch sets it all the
        # same); it is never used for an update, so it bypasses the optimizer's lr >= 0 check.
        self.optimizer._hyper["lr"] = lr
        self._last_lr = [lr]

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if self.cycle_momentum:
            mom = self._values_at(self.last_epoch)[1]
            self._set_momentum(self.optimizer, mom)


class ReduceLROnPlateau(_Stateful):
    """Reduce the lr by ``factor`` when a metric has not improved for more than ``patience``
    steps (torch's ``ReduceLROnPlateau``; ``step(metric)`` once per evaluation)."""

    def __init__(self, optimizer, mode="min", factor=0.1, patience=10, threshold=1e-4,
                 threshold_mode="rel", cooldown=0, min_lr=0, eps=1e-8):
        self.optimizer = _optimizer(optimizer)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max', got {mode!r}")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.factor = _number(factor, "factor")
        if not 0 <= self.factor < 1:
            raise ValueError(f"factor must be in [0, 1), got {self.factor}")
        self.mode = mode
        self.threshold_mode = threshold_mode
        self.threshold = _non_negative(threshold, "threshold")
        self.patience = _int(patience, "patience", 0)
        self.cooldown = _int(cooldown, "cooldown", 0)
        self.min_lr = _non_negative(min_lr, "min_lr")
        self.eps = _non_negative(eps, "eps")
        self.last_epoch = 0
        self._last_lr = [optimizer.lr]
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0

    def _is_better(self, a, best):
        if self.mode == "min":
            return a < (best * (1.0 - self.threshold) if self.threshold_mode == "rel"
                        else best - self.threshold)
        return a > (best * (self.threshold + 1.0) if self.threshold_mode == "rel"
                    else best + self.threshold)

    def step(self, metric):
        """Record one evaluation of the monitored metric (a number; NaN counts as no better)."""
        if isinstance(metric, (bool, np.bool_)):
            raise TypeError(f"metric must be a number, got {metric!r}")
        try:
            current = float(metric)
        except (TypeError, ValueError) as exc:
            raise TypeError(f"metric must be a number, got {metric!r} "
                            f"({type(metric).__name__})") from exc
        self.last_epoch += 1
        if self._is_better(current, self.best):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0  # bad steps during cooldown do not count
        if self.num_bad_epochs > self.patience:
            old = self.optimizer.lr
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        self._last_lr = [self.optimizer.lr]
