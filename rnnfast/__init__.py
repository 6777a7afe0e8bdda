"""rnnfast: a fast CPU engine for recurrent neural networks (Elman RNN, LSTM, GRU).

Inference and full backpropagation through time with PyTorch's semantics and parameter layout,
numpy arrays in and out. See README.md.
"""
import os as _os
import warnings as _warnings

from . import _core
from ._rnn import GRU, LSTM, RNN, Tape
from ._threads import build_info, default_num_threads, get_num_threads, set_num_threads, threads
from . import init, losses, optim, sampling
from .clip import clip_grad_norm, clip_grad_value
from .layers import Embedding, Linear
from .model import SequenceModel
from .stream import Stream
from .interop import from_torch, to_torch
from .io import load, save
from .onnx_io import load_onnx, save_onnx
from . import keras

__version__ = "0.1.0"
__all__ = ["RNN", "LSTM", "GRU", "Tape", "set_num_threads", "get_num_threads", "build_info",
           "Embedding", "Linear", "SequenceModel", "losses", "init", "sampling", "optim",
           "clip_grad_norm", "clip_grad_value", "Stream", "from_torch", "to_torch", "keras",
           "save", "load", "load_onnx", "save_onnx"]

set_num_threads(default_num_threads())

_isa = _os.environ.get("RNNFAST_ISA")
if _isa and not _core.core_select_isa(_isa):
    _warnings.warn(f"RNNFAST_ISA={_isa!r} is not available on this CPU or build (choose from "
                   f"'avx512', 'avx2', 'generic'); using {_core.core_isa_name()!r}", RuntimeWarning)
