"""A progress bar for long work: tqdm when it is installed, else a small one of our own (numpy is
rnnfast's only runtime dependency)."""
import sys
import time


class _Bar:
    """Minimal stand-in for tqdm: a single line redrawn in place on stderr (a TTY) or printed
    every few seconds (a log)."""

    def __init__(self, total, desc="", unit="it"):
        self.total, self.desc, self.unit = total, desc, unit
        self.n, self.postfix = 0, ""
        self.t0 = self._last = time.perf_counter()
        self.tty = sys.stderr.isatty()

    def update(self, k=1):
        self.n += k
        now = time.perf_counter()
        if now - self._last >= (0.2 if self.tty else 5.0) or self.n == self.total:
            self._last = now
            self._draw(now)

    def set_postfix_str(self, s):
        self.postfix = s

    def _draw(self, now):
        frac = min(1.0, self.n / self.total) if self.total else 0.0
        width = 24
        bar = "#" * int(frac * width) + "-" * (width - int(frac * width))
        line = (f"{self.desc} [{bar}] {100 * frac:3.0f}% {self.n}/{self.total} {self.unit} "
                f"{now - self.t0:5.1f}s {self.postfix}")
        sys.stderr.write(("\r" + line) if self.tty else (line + "\n"))
        sys.stderr.flush()

    def close(self):
        self._draw(time.perf_counter())
        if self.tty:
            sys.stderr.write("\n")


def progress(total, desc="", unit="it", disable=False):
    """A bar with ``update(k)``, ``set_postfix_str(s)`` and ``close()``."""
    if disable:
        return _Null()
    try:
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True)
    except ImportError:
        return _Bar(total, desc, unit)


class _Null:
    total = 0

    def update(self, k=1):
        pass

    def set_postfix_str(self, s):
        pass

    def close(self):
        pass
