"""Moving recurrent models between PyTorch and rnnfast: ``from_torch`` and ``to_torch``.

rnnfast keeps PyTorch's parameter names, shapes and gate order, so a conversion is the
architecture flags plus a copy of every named tensor. PyTorch is never imported at module level:
rnnfast's only runtime dependency is numpy, and ``from_torch`` is only reachable with a module in
hand (so torch is already importable).
"""
import numpy as np

from . import _validate as V
from ._rnn import GRU, LSTM, RNN, _RNNBase

__all__ = ["from_torch", "to_torch"]

_DTYPE_NAMES = {"torch.float32": "float32", "torch.float64": "float64"}


def _import_torch(what):
    try:
        import torch
    except ImportError as exc:
        raise ImportError(f"{what} needs PyTorch, which is not installed: "
                          f"pip install torch") from exc
    return torch


def _torch_class(torch, module):
    """(rnnfast class, torch base class) for a torch.nn.RNN/LSTM/GRU, else raise TypeError."""
    for base, cls in ((torch.nn.LSTM, LSTM), (torch.nn.GRU, GRU), (torch.nn.RNN, RNN)):
        if isinstance(module, base):
            return cls, base
    raise TypeError(f"from_torch converts torch.nn.RNN, torch.nn.LSTM and torch.nn.GRU, got "
                    f"{type(module).__module__}.{type(module).__name__}")


def _refuse_unsupported(module, base):
    """Raise for the things a torch module can do that an rnnfast model cannot reproduce."""
    kind = base.__name__
    if kind == "LSTM" and getattr(module, "proj_size", 0) != 0:
        raise ValueError(f"from_torch: LSTM with proj_size={module.proj_size} is not supported by "
                         f"rnnfast (only proj_size=0: no projection of the hidden state)")
    if type(module).forward is not base.forward:
        raise ValueError(f"from_torch: {type(module).__name__} overrides forward() of "
                         f"torch.nn.{kind}; only the weights could be copied, not that behaviour")
    # Hooks change inputs, weights (the old torch.nn.utils.weight_norm is a pre-hook) or outputs
    # at call time; copying the current tensors would silently drop them.
    hooks = [n for n in ("_forward_pre_hooks", "_forward_hooks") if getattr(module, n, None)]
    if hooks:
        raise ValueError(f"from_torch: the module has {' and '.join(h.strip('_') for h in hooks)} "
                         f"registered, which rnnfast cannot reproduce; remove them first")
    if module.mode not in ("RNN_TANH", "RNN_RELU", "LSTM", "GRU"):
        raise ValueError(f"from_torch: unsupported mode {module.mode!r} (rnnfast has RNN_TANH, "
                         f"RNN_RELU, LSTM, GRU)")


def _module_dtype(module, names):
    """The common dtype of the module's recurrent weights as 'float32'/'float64', else raise."""
    found = sorted({str(getattr(module, n).dtype) for n in names})
    if len(found) != 1:
        raise ValueError(f"from_torch: the module's parameters have mixed dtypes {found}; pass "
                         f"dtype='float32' or dtype='float64' to convert them all")
    if found[0] not in _DTYPE_NAMES:
        raise ValueError(f"from_torch: the module's parameters are {found[0]}, which rnnfast does "
                         f"not compute in; pass dtype='float32' or dtype='float64' to convert")
    return _DTYPE_NAMES[found[0]]


def from_torch(module, dtype=None, *, seed=None):
    """An rnnfast model equivalent to a ``torch.nn.RNN``, ``LSTM`` or ``GRU``, weights copied.

    Every architecture flag carries over: ``input_size``, ``hidden_size``, ``num_layers``,
    ``bias``, ``batch_first``, ``dropout``, ``bidirectional`` and, for ``RNN``, the nonlinearity.
    dtype: ``'float32'`` or ``'float64'``; ``None`` takes the module's own (its parameters must
        then all be float32 or all float64; other precisions need an explicit ``dtype``).
    seed: seeds the new model's generator (used only for dropout masks when training).

    The module's training/eval mode is not carried: rnnfast applies dropout only in
    ``forward(..., train=True)``. Refused (``ValueError`` naming the reason): LSTM ``proj_size``
    other than 0, subclasses that override ``forward``, modules with forward hooks, parameters on
    the ``meta`` device.
    """
    torch = _import_torch("rnnfast.from_torch")
    cls, base = _torch_class(torch, module)
    _refuse_unsupported(module, base)
    D = 2 if module.bidirectional else 1
    names = [f"{w}_l{layer}{'_reverse' if d else ''}"
             for layer in range(module.num_layers) for d in range(D)
             for w in (("weight_ih", "weight_hh", "bias_ih", "bias_hh") if module.bias
                       else ("weight_ih", "weight_hh"))]
    for n in names:
        if getattr(module, n).is_meta:
            raise ValueError(f"from_torch: parameter {n} is on the 'meta' device and holds no "
                             f"values; materialise the module first")
    dtype = _module_dtype(module, names) if dtype is None else V.model_dtype(dtype).name

    kw = dict(num_layers=module.num_layers, bias=bool(module.bias),
              batch_first=bool(module.batch_first), dropout=float(module.dropout),
              bidirectional=bool(module.bidirectional), dtype=dtype, seed=seed)
    if cls is RNN:
        kw["nonlinearity"] = "tanh" if module.mode == "RNN_TANH" else "relu"
    model = cls(module.input_size, module.hidden_size, **kw)

    target = torch.float32 if dtype == "float32" else torch.float64
    with torch.no_grad():
        # getattr (not state_dict) so parametrized weights come out as the values forward uses
        state = {n: getattr(module, n).detach().to("cpu", target).numpy() for n in names}
    model.load_state_dict(state)
    return model


def to_torch(model):
    """A ``torch.nn.RNN``, ``LSTM`` or ``GRU`` (on the CPU) equivalent to an rnnfast model.

    Same flags and dtype, weights copied (the torch module owns its own memory). The module is in
    PyTorch's default training mode; call ``.eval()`` on it for inference when ``dropout > 0``.
    Raises ``ImportError`` if PyTorch is not installed.
    """
    if not isinstance(model, _RNNBase):
        raise TypeError(f"to_torch converts rnnfast RNN, LSTM and GRU models, got "
                        f"{type(model).__name__}"
                        + ("; convert its .rnn part" if hasattr(model, "rnn") else ""))
    variants = [k for k in ("peephole", "input_forget", "clip")
                if getattr(model, k) not in (False, None)]
    if variants:
        name = type(model).__name__
        raise ValueError(f"to_torch: this {name} uses {', '.join(variants)}, which torch.nn.{name} "
                         f"does not have (rnnfast.save_onnx exports such a model)")
    if model._mode == "GRU" and not model.linear_before_reset:
        raise ValueError("to_torch: this GRU has linear_before_reset=False (the reset gate scales "
                         "the state before W_hn, ONNX's default form); torch.nn.GRU only computes "
                         "linear_before_reset=True, so no torch module reproduces it (save_onnx "
                         "exports it)")
    torch = _import_torch("rnnfast.to_torch")
    kw = dict(num_layers=model.num_layers, bias=model.bias, batch_first=model.batch_first,
              dropout=model.dropout, bidirectional=model.bidirectional,
              dtype=torch.float32 if model.dtype == np.float32 else torch.float64)
    if model._mode == "LSTM":
        module = torch.nn.LSTM(model.input_size, model.hidden_size, **kw)
    elif model._mode == "GRU":
        module = torch.nn.GRU(model.input_size, model.hidden_size, **kw)
    else:
        module = torch.nn.RNN(model.input_size, model.hidden_size,
                              nonlinearity=model.nonlinearity, **kw)
    # strict: every name must exist on both sides with the same shape
    module.load_state_dict({n: torch.from_numpy(v) for n, v in model.state_dict().items()},
                           strict=True)
    return module
