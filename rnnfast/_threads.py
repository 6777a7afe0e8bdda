"""Thread count of the core and a description of the build."""
import contextlib
import numbers
import os

from . import _core


def _available_cpus():
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_num_threads():
    """``OMP_NUM_THREADS`` (its first value) if set to a positive integer, else every CPU this
    process may run on (its affinity mask, which container CPU sets restrict)."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return _available_cpus()


def set_num_threads(n):
    """Use ``n`` threads in every compute call (``-1``: every CPU this process may run on).

    The default is :func:`default_num_threads`, fixed at import so that other libraries that
    change OpenMP's global setting (PyTorch does on import) do not change ours. Results are bitwise
    identical for any thread count.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"number of threads must be an integer, got {n!r}")
    n = int(n)
    if n == -1:
        n = _available_cpus()
    if n < 1 or n > 4096:
        raise ValueError(f"number of threads must be in 1..4096 (or -1 for all CPUs), got {n}")
    _core.core_set_num_threads(n)


def get_num_threads():
    """Number of threads the core uses for each call."""
    return _core.core_get_num_threads()


@contextlib.contextmanager
def threads(n):
    """Context manager: use ``n`` threads (as :func:`set_num_threads`) inside the block, then put
    back the count that was set before, also when the block raises.

    The setting is process-global, not per thread: while the block runs, every Python thread's
    rnnfast calls use ``n`` threads, and two threads that enter ``threads()`` blocks at the same
    time overwrite each other's setting. For a server with many Python threads, call
    ``set_num_threads(1)`` once at start-up instead.
    """
    before = get_num_threads()
    set_num_threads(n)  # validates n before the block runs
    try:
        yield get_num_threads()
    finally:
        set_num_threads(before)


def build_info():
    """How this copy of rnnfast was built and what it runs on."""
    from . import __version__

    return {
        "version": __version__,
        "openmp": bool(_core.core_has_openmp()),
        "isa": _core.core_isa_name(),
        # full-rate vector FMAs on this CPU (not AVX-512 on Zen 4, nor AVX2): picks how much work
        # a call needs before it runs on more than one thread
        "wide_fma": _core.core_wide_fma(),
        # without OpenMP the setting is kept but every call runs on the calling thread
        "num_threads": get_num_threads() if _core.core_has_openmp() else 1,
    }
