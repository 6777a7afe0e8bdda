"""Optimizers with ``torch.optim``'s semantics and defaults: ``SGD``, ``Adam``, ``AdamW``,
``RMSprop``, ``Adagrad``; and the learning-rate schedulers of :mod:`rnnfast.lr_scheduler`.

An optimizer updates one or more *models*: objects with flat numpy buffers ``params`` and
``grads`` of one size and dtype (float32 or float64). rnnfast models expose ``params`` read-only;
the optimizer writes through ``model._param_buffer()`` and then calls
``model._mark_params_changed()`` so that the model's cached packed weights are rebuilt. Every
optimizer state (momentum, moments, ...) is one flat array per model mirroring its parameter
buffer, and a step is one fused C++ loop per model (``csrc/optim.cpp``).

The per-step scalars (bias corrections, step sizes, decayed learning rates) are computed here in
Python floats, with the same expressions as torch's single-tensor (``foreach=False``)
implementations, so float64 results agree with torch to a few ulps and float32 results to float32
rounding.

Usage::

    opt = rnnfast.optim.Adam(model, lr=1e-3)
    for x, target in batches:
        opt.zero_grad()
        ...forward, loss, model.backward(...)...
        opt.step()
"""
import numbers

import numpy as np

from . import _validate as V

from . import _optim

_FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


# ------------------------------------------------------------------------------ argument checks
_number = V.real_number


def _flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool, got {value!r} ({type(value).__name__})")
    return bool(value)


def _at_least_zero(label):
    """Validator for a hyperparameter that must be >= 0; ``label`` is torch's wording."""
    def check(value, name):
        value = _number(value, name)
        if not value >= 0.0:
            raise ValueError(f"Invalid {label}: {name}={value} (must be >= 0)")
        return value
    return check


def _any_real(value, name):
    return _number(value, name)


def _betas(value, name):
    if not isinstance(value, (tuple, list)) or len(value) != 2:
        raise TypeError(f"{name} must be a pair (beta1, beta2), got {value!r}")
    out = []
    for i, b in enumerate(value):
        b = _number(b, f"{name}[{i}]")
        if not 0.0 <= b < 1.0:
            raise ValueError(f"Invalid beta parameter at index {i}: {b} (must be in [0, 1))")
        out.append(b)
    return tuple(out)


_lr = _at_least_zero("learning rate")
_eps = _at_least_zero("epsilon value")
_weight_decay = _at_least_zero("weight_decay value")
_momentum = _at_least_zero("momentum value")


# ------------------------------------------------------------------------------------ the models
def _buffers(model):
    """(writable flat param buffer, flat grad buffer) of a model, validated."""
    if isinstance(model, np.ndarray) or not hasattr(model, "grads") or not (
            hasattr(model, "_param_buffer") or hasattr(model, "params")):
        raise TypeError("an optimizer updates models: objects with flat numpy buffers 'params' and "
                        f"'grads'; got {type(model).__name__}")
    getter = getattr(model, "_param_buffer", None)
    params = getter() if callable(getter) else model.params
    grads = model.grads
    for arr, what in ((params, "params"), (grads, "grads")):
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"{type(model).__name__}.{what} must be a numpy array, "
                            f"got {type(arr).__name__}")
        if arr.dtype not in _FLOAT_DTYPES:
            raise TypeError(f"{type(model).__name__}.{what} must be float32 or float64, "
                            f"got {arr.dtype}")
        if not arr.flags.c_contiguous:
            raise ValueError(f"{type(model).__name__}.{what} must be one contiguous buffer")
    if params.dtype != grads.dtype or params.size != grads.size:
        raise ValueError(f"{type(model).__name__}: params and grads must have one dtype and size, "
                         f"got params {params.dtype}[{params.size}] and grads "
                         f"{grads.dtype}[{grads.size}]")
    if not params.flags.writeable:
        raise ValueError(f"{type(model).__name__}.params is read-only and the model has no "
                         "_param_buffer() giving the writable buffer")
    return params.reshape(-1), grads.reshape(-1)


def _model_list(params):
    models = list(params) if isinstance(params, (list, tuple)) else [params]
    if not models:
        raise ValueError("optimizer got an empty list of models")
    bufs = [_buffers(m)[0] for m in models]
    for i in range(len(bufs)):
        for j in range(i):
            if np.may_share_memory(bufs[i], bufs[j]):
                raise ValueError(f"models {j} and {i} share parameter memory (the same model "
                                 "listed twice?); each parameter must be updated once per step")
    return models


# ------------------------------------------------------------------------------------- the base
class Optimizer:
    """Base of the optimizers: models, hyperparameters, step count and flat state buffers.

    Subclasses declare ``_checks`` (hyperparameter name -> validator), ``_state_names`` and
    implement ``_update(params, grads, state, step)``.
    """

    _checks = {}
    _state_names = ()

    def __init__(self, params, **hyper):
        self._models = _model_list(params)
        self._hyper = {name: self._checks[name](value, name) for name, value in hyper.items()}
        self._check_combination(self._hyper)
        self._step_count = 0
        self._state = [{} for _ in self._models]
        # The lr a scheduler starts from (torch keeps it in the param group as 'initial_lr').
        self.initial_lr = None

    def _check_combination(self, hyper):
        """Checks that involve several hyperparameters (at construction and load)."""

    # ------------------------------------------------------------------------- hyperparameters
    def _set_hyper(self, name, value):
        self._hyper[name] = self._checks[name](value, name)

    @property
    def lr(self):
        """The learning rate (settable; schedulers set it every step)."""
        return self._hyper["lr"]

    @lr.setter
    def lr(self, value):
        self._set_hyper("lr", value)

    @property
    def hyperparams(self):
        """A copy of the hyperparameters, by torch's names."""
        return dict(self._hyper)

    @property
    def models(self):
        return list(self._models)

    @property
    def step_count(self):
        """Number of steps taken (torch's ``state['step']``)."""
        return self._step_count

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self._hyper.items())
        return f"{type(self).__name__}({args}; {len(self._models)} model(s))"

    # --------------------------------------------------------------------------------- stepping
    def zero_grad(self):
        """Set every model's gradients to zero."""
        for model in self._models:
            zero = getattr(model, "zero_grad", None)
            if callable(zero):
                zero()
            else:
                _buffers(model)[1].fill(0)

    def step(self):
        """One update of every model from its current gradients."""
        bufs = [_buffers(m) for m in self._models]
        for i, ((p, _), state) in enumerate(zip(bufs, self._state)):
            for name, arr in state.items():
                if arr.size != p.size or arr.dtype != p.dtype:
                    raise ValueError(f"model {i} changed its parameter buffer since the last step "
                                     f"(now {p.dtype}[{p.size}], state '{name}' is "
                                     f"{arr.dtype}[{arr.size}])")
        self._step_count += 1
        for model, (p, g), state in zip(self._models, bufs, self._state):
            self._update(p, g, state, self._step_count)
            mark = getattr(model, "_mark_params_changed", None)
            if callable(mark):
                mark()

    def _update(self, params, grads, state, step):
        raise NotImplementedError

    @staticmethod
    def _buffer(state, name, like, fill=0.0):
        """``state[name]``, created as a flat array like ``like`` filled with ``fill`` if absent."""
        arr = state.get(name)
        if arr is None:
            arr = np.full(like.size, fill, dtype=like.dtype)
            state[name] = arr
        return arr

    # --------------------------------------------------------------------------------- resuming
    def state_dict(self):
        """Everything needed to resume: hyperparameters, step count and state buffers (copies)."""
        return {
            "optimizer": type(self).__name__,
            "hyperparams": dict(self._hyper),
            "initial_lr": self.initial_lr,
            "step": self._step_count,
            "state": [{k: v.copy() for k, v in s.items()} for s in self._state],
        }

    def load_state_dict(self, state_dict):
        """Resume from :meth:`state_dict` (of the same optimizer type over the same models).

        Everything is checked before anything changes; the arrays are copied.
        """
        if not hasattr(state_dict, "keys"):
            raise TypeError(f"state_dict must be a mapping, got {type(state_dict).__name__}")
        expected = {"optimizer", "hyperparams", "initial_lr", "step", "state"}
        if set(state_dict.keys()) != expected:
            raise ValueError(f"state_dict must have keys {sorted(expected)}, "
                             f"got {sorted(state_dict.keys())}")
        kind = state_dict["optimizer"]
        if kind != type(self).__name__:
            raise ValueError(f"state_dict is of a {kind} optimizer, this is {type(self).__name__}")
        saved = state_dict["hyperparams"]
        if set(saved) != set(self._hyper):
            raise ValueError(f"state_dict hyperparameters {sorted(saved)} do not match "
                             f"{type(self).__name__}'s {sorted(self._hyper)}")
        hyper = {name: self._checks[name](saved[name], name) for name in self._hyper}
        self._check_combination(hyper)
        initial_lr = state_dict["initial_lr"]
        if initial_lr is not None:
            initial_lr = _number(initial_lr, "initial_lr")
        step = state_dict["step"]
        if isinstance(step, (bool, np.bool_)) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"state_dict step must be a non-negative integer, got {step!r}")
        states = state_dict["state"]
        if not isinstance(states, (list, tuple)) or len(states) != len(self._models):
            n = len(states) if isinstance(states, (list, tuple)) else type(states).__name__
            raise ValueError(f"state_dict holds state for {n} models, this optimizer has "
                             f"{len(self._models)}")
        new_states = []
        for i, (model, s) in enumerate(zip(self._models, states)):
            p, _ = _buffers(model)
            if not hasattr(s, "items"):
                raise TypeError(f"state_dict state[{i}] must be a mapping, got {type(s).__name__}")
            unknown = set(s) - set(self._state_names)
            if unknown:
                raise ValueError(f"state_dict state[{i}] has unknown buffers {sorted(unknown)} "
                                 f"({type(self).__name__} keeps {list(self._state_names)})")
            new = {}
            for name, arr in s.items():
                arr = np.asarray(arr)
                if arr.dtype != p.dtype or arr.size != p.size:
                    raise ValueError(f"state_dict state[{i}]['{name}'] is {arr.dtype}[{arr.size}], "
                                     f"model {i} has {p.dtype}[{p.size}] parameters")
                new[name] = np.array(arr, dtype=p.dtype, copy=True).reshape(-1)
            new_states.append(new)
        self._hyper = hyper
        self.initial_lr = initial_lr
        self._step_count = int(step)
        self._state = new_states


# ------------------------------------------------------------------------------- the optimizers
class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, dampening, Nesterov momentum and L2
    weight decay: torch.optim.SGD (including its first-step rule: the momentum buffer starts as
    the gradient)."""

    _checks = {"lr": _lr, "momentum": _momentum, "dampening": _any_real,
               "weight_decay": _weight_decay, "nesterov": _flag}
    _state_names = ("momentum_buffer",)

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False):
        super().__init__(params, lr=lr, momentum=momentum, dampening=dampening,
                         weight_decay=weight_decay, nesterov=nesterov)

    def _check_combination(self, h):
        if h["nesterov"] and (h["momentum"] <= 0 or h["dampening"] != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening, got "
                             f"momentum={h['momentum']}, dampening={h['dampening']}")

    @property
    def momentum(self):
        return self._hyper["momentum"]

    @momentum.setter
    def momentum(self, value):
        self._set_hyper("momentum", value)

    def _update(self, p, g, state, step):
        h = self._hyper
        buf, init = None, False
        if h["momentum"] != 0:
            init = "momentum_buffer" not in state
            buf = self._buffer(state, "momentum_buffer", p)
        _optim.sgd(p, g, buf, h["lr"], h["momentum"], h["dampening"], h["weight_decay"],
                   h["nesterov"], init)


class Adam(Optimizer):
    """Adam (torch.optim.Adam): L2 weight decay added to the gradient, optional AMSGrad."""

    _checks = {"lr": _lr, "betas": _betas, "eps": _eps, "weight_decay": _weight_decay,
               "amsgrad": _flag}
    _state_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0,
                 amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)

    @property
    def betas(self):
        return self._hyper["betas"]

    @betas.setter
    def betas(self, value):
        self._set_hyper("betas", value)

    def _update(self, p, g, state, step):
        h = self._hyper
        lr, (beta1, beta2), wd = h["lr"], h["betas"], h["weight_decay"]
        # The scalars of torch's _single_tensor_adam, in the same Python-float expressions.
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        if self._decoupled:
            decay_factor, l2 = (1 - lr * wd) if wd != 0 else 1.0, 0.0
        else:
            decay_factor, l2 = 1.0, wd
        m = self._buffer(state, "exp_avg", p)
        v = self._buffer(state, "exp_avg_sq", p)
        vmax = self._buffer(state, "max_exp_avg_sq", p) if h["amsgrad"] else None
        _optim.adam(p, g, m, v, vmax, decay_factor, l2, 1 - beta1, beta2, 1 - beta2, step_size,
                    bias_correction2_sqrt, h["eps"], h["amsgrad"])


class AdamW(Adam):
    """AdamW (torch.optim.AdamW): Adam with decoupled weight decay, p *= 1 - lr*weight_decay."""

    _decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 amsgrad=False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad)


class RMSprop(Optimizer):
    """RMSprop (torch.optim.RMSprop), optionally centered and with momentum."""

    _checks = {"lr": _lr, "alpha": _at_least_zero("alpha value"), "eps": _eps,
               "weight_decay": _weight_decay, "momentum": _momentum, "centered": _flag}
    _state_names = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0,
                 centered=False):
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                         momentum=momentum, centered=centered)

    @property
    def momentum(self):
        return self._hyper["momentum"]

    @momentum.setter
    def momentum(self, value):
        self._set_hyper("momentum", value)

    def _update(self, p, g, state, step):
        h = self._hyper
        sq = self._buffer(state, "square_avg", p)
        ga = self._buffer(state, "grad_avg", p) if h["centered"] else None
        buf = self._buffer(state, "momentum_buffer", p) if h["momentum"] > 0 else None
        _optim.rmsprop(p, g, sq, ga, buf, h["lr"], h["alpha"], 1 - h["alpha"], h["eps"],
                       h["weight_decay"], h["momentum"], h["centered"])


class Adagrad(Optimizer):
    """Adagrad (torch.optim.Adagrad) with learning-rate decay lr / (1 + (t-1)*lr_decay)."""

    _checks = {"lr": _lr, "lr_decay": _at_least_zero("lr_decay value"),
               "weight_decay": _weight_decay,
               "initial_accumulator_value": _at_least_zero("initial_accumulator_value value"),
               "eps": _eps}
    _state_names = ("sum",)

    def __init__(self, params, lr=1e-2, lr_decay=0, weight_decay=0, initial_accumulator_value=0,
                 eps=1e-10):
        super().__init__(params, lr=lr, lr_decay=lr_decay, weight_decay=weight_decay,
                         initial_accumulator_value=initial_accumulator_value, eps=eps)

    def _update(self, p, g, state, step):
        h = self._hyper
        clr = h["lr"] / (1 + (step - 1) * h["lr_decay"])
        acc = self._buffer(state, "sum", p, fill=h["initial_accumulator_value"])
        _optim.adagrad(p, g, acc, clr, h["weight_decay"], h["eps"])


from .lr_scheduler import (  # noqa: E402  (the schedulers need the classes above)
    CosineAnnealingLR, ExponentialLR, LinearWarmup, LRScheduler, OneCycleLR, ReduceLROnPlateau,
    StepLR)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "LRScheduler", "StepLR",
           "ExponentialLR", "CosineAnnealingLR", "LinearWarmup", "OneCycleLR", "ReduceLROnPlateau"]
