"""Where a `bench run` process spends its wall time: seconds per phase (start-up, load, train, encode, score,
write), so the time outside every phase (bookkeeping: fingerprints, locks, status files) is measured, not guessed.

Phases nest: a phase entered inside another pauses it (training inside `method.checkpoints`, which `load` times,
is charged to `train` only), so the phases add up to at most the wall time. Start-up is the time from the
process's creation (imports included) to the first run. Each process keeps its own totals; the launchers' job
processes print none (their runs' rows hold load, train, encode and scoring seconds).
"""

from __future__ import annotations

import functools
import time
from contextlib import contextmanager

PHASES = ("start-up", "load", "train", "encode", "score", "write")
_totals: dict[str, float] = {}
_stack: list[list] = []  # [name, seconds not yet charged since] of the phases entered and not left


def process_seconds() -> float:
    """Wall seconds since this process was created (interpreter start and imports included)."""
    try:
        import psutil

        return time.time() - psutil.Process().create_time()
    except (ImportError, OSError):  # psutil comes with mteb; without it, from this module's import
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def _charge_top(now: float) -> None:
    if _stack:
        name, since = _stack[-1]
        _totals[name] = _totals.get(name, 0.0) + now - since


@contextmanager
def phase(name: str):
    """Charge the time spent inside to `name` (minus the phases nested in it)."""
    now = time.perf_counter()
    _charge_top(now)
    _stack.append([name, now])
    try:
        yield
    finally:
        now = time.perf_counter()
        _charge_top(now)
        _stack.pop()
        if _stack:
            _stack[-1][1] = now


def timed(name: str):
    """Decorator: the function's time is charged to phase `name`."""
    def wrap(fn):
        @functools.wraps(fn)
        def inner(*args, **kwargs):
            with phase(name):
                return fn(*args, **kwargs)
        return inner
    return wrap


def add(name: str, seconds: float) -> None:
    _totals[name] = _totals.get(name, 0.0) + seconds


def totals() -> dict[str, float]:
    return dict(_totals)


def reset() -> None:
    _totals.clear()
    _stack.clear()


def format_profile(totals: dict[str, float], wall: float) -> str:
    """A header with the wall time, then one line per phase and one for the untimed rest: seconds and share."""
    lines = [f"profile of this process: {wall:.1f} s wall"]
    for name in PHASES:
        seconds = totals.get(name, 0.0)
        lines.append(f"  {name:<9} {seconds:8.1f} s  {100 * seconds / wall:5.1f}%")
    untimed = wall - sum(totals.get(name, 0.0) for name in PHASES)
    lines.append(f"  {'untimed':<9} {untimed:8.1f} s  {100 * untimed / wall:5.1f}%  (fingerprints, locks, status files, "
                 "comparisons)")
    return "\n".join(lines)
