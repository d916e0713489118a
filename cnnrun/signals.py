"""Ctrl-C and SIGTERM are honoured at any moment, never lost.

From the command line's first step, both signals are recorded here and raised as KeyboardInterrupt.
Python runs a signal handler between bytecodes, so a signal that lands inside a callback whose
exceptions are swallowed (JAX's garbage-collection hook during `keras.backend.clear_session()`, a
`__del__`) would be lost: `check()`, called at the points where a run changes stage, raises it again
from the record. Training itself uses resume.StopOnSignal, which stops after the current batch.
"""

from __future__ import annotations

import signal
import threading

HONOURED = (signal.SIGINT, signal.SIGTERM)
_received: list[int] = []


def _handle(signum, frame):
    _received.append(signum)
    raise KeyboardInterrupt


def install() -> None:
    """Records SIGINT and SIGTERM and raises KeyboardInterrupt (main thread only; idempotent)."""
    if threading.current_thread() is threading.main_thread():
        for s in HONOURED:
            signal.signal(s, _handle)


def received() -> int | None:
    """The first signal received since the start (or the last `clear()`), else None."""
    return _received[0] if _received else None


def clear() -> None:
    _received.clear()


def check() -> None:
    """Raises KeyboardInterrupt if a signal arrived and was swallowed on its way."""
    if _received:
        raise KeyboardInterrupt


def exit_code(default: int = signal.SIGINT) -> int:
    """128 + the signal received (else `default`): 130 for Ctrl-C, 143 for SIGTERM."""
    return code_of(received() or default)


def code_of(signum: int) -> int:
    """The exit status of a process that stopped on `signum`, as a shell reports it: 128 + the signal."""
    return 128 + int(signum)
