"""Argument checks done once, at the public boundary. Messages name what was expected and what came."""
import math
import numbers

import numpy as np

_DTYPES = {"float32": np.dtype(np.float32), "float64": np.dtype(np.float64)}


# Largest size of any one dimension (the core indexes with 64-bit integers, and a model this large
# could not be allocated anyway); element counts beyond it are refused before numpy sees them.
MAX_SIZE = 2**31 - 1
MAX_ELEMENTS = 2**40


def positive_int(value, name, maximum=MAX_SIZE):
    """Return ``value`` as an int if it is an integer (not a bool) in 1..maximum, else raise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be a positive integer, got {value!r} ({type(value).__name__})")
    if value < 1 or value > maximum:
        raise ValueError(f"{name} must be a positive integer no larger than {maximum}, got {value}")
    return int(value)


def model_dtype(dtype):
    """Map 'float32'/'float64' (or the numpy equivalents) to a numpy dtype."""
    if dtype is None:
        raise TypeError("dtype must be 'float32' or 'float64', got None")
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from exc
    if dt.name not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64', got {dt.name!r}")
    return _DTYPES[dt.name]


def float_array(value, name, dtype):
    """Convert ``value`` to a C-contiguous array of ``dtype``; only real floating inputs are accepted.

    Integer, boolean, complex, object and string data are refused (a silent cast would hide a bug);
    other float precisions and non-contiguous or Fortran-ordered arrays are converted (copied).
    """
    if hasattr(value, "detach") and hasattr(value, "numpy"):  # a torch tensor
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value)
    except Exception as exc:  # ragged nested lists and the like
        raise TypeError(f"{name} must be a numeric array, got {type(value).__name__}: {exc}") from exc
    if arr.dtype.kind != "f":
        raise TypeError(
            f"{name} must be a floating-point array (float16/32/64), got dtype {arr.dtype}")
    return np.ascontiguousarray(arr, dtype=dtype)


def check_shape(arr, expected, name, meaning):
    """Raise ValueError unless ``arr.shape == expected``; ``meaning`` spells the axes out."""
    if arr.shape != tuple(expected):
        raise ValueError(f"{name} must have shape {tuple(expected)} {meaning}, got {arr.shape}")


def lengths_array(lengths, batch, seq_len):
    """Validate per-row sequence lengths: B integers in 1..T. Returns int64 or None."""
    if lengths is None:
        return None
    if hasattr(lengths, "detach") and hasattr(lengths, "numpy"):
        lengths = lengths.detach().cpu().numpy()
    try:
        arr = np.asarray(lengths)
    except (ValueError, TypeError) as exc:  # ragged nested lists and the like
        raise ValueError(f"lengths must be a 1-D sequence of {batch} integers, got {lengths!r}: "
                         f"{exc}") from exc
    if arr.dtype.kind == "b" or arr.dtype.kind not in "iuf":
        raise TypeError(f"lengths must be integers, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != batch:
        raise ValueError(f"lengths must be a 1-D array of {batch} lengths (one per batch row), "
                         f"got shape {arr.shape}")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            bad = arr[~np.isfinite(arr) | (arr != np.round(arr))][0]
            raise ValueError(f"lengths must be integers, got {bad}")
    if arr.dtype.kind in "uf" and arr.size and arr.max() > seq_len:  # before an int64 cast wraps
        raise ValueError(f"lengths must lie in 1..{seq_len} (the sequence length), got "
                         f"{arr.max()}")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    bad = (arr < 1) | (arr > seq_len)
    if bad.any():
        raise ValueError(f"lengths must lie in 1..{seq_len} (the sequence length), "
                         f"got {int(arr[bad][0])} at row {int(np.flatnonzero(bad)[0])}")
    return arr


def rng(seed):
    """A numpy Generator from an int seed (>= 0), None (fresh entropy) or a Generator (used as is)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None or (isinstance(seed, numbers.Integral) and not isinstance(seed, (bool, np.bool_))):
        if seed is not None and seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed}")
        return np.random.default_rng(seed)
    raise TypeError(f"seed must be an int, None or a numpy.random.Generator, got {seed!r}")


def real_number(value, name):
    """``value`` as a finite Python float, or TypeError/ValueError naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return value
