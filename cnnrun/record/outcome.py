"""How a run ends, in one table: what metrics.json records and what exit code the command returns.

Every place a run can end (commands.train.run_job, record.Run, a fresh-process job and its parent) asks `of(error)`
which outcome an exception is and reads the rest from here, so the same ending always gets the same
status, message and exit code:

| outcome     | raised as                      | metrics.json status | `cnnrun train` exit          |
|-------------|--------------------------------|---------------------|------------------------------|
| ok          | (nothing)                      | ok                  | 0                            |
| refused     | RunRefused: not this run's dir | (untouched)         | 2                            |
| invalid     | CnnrunError before any work    | failed              | 2                            |
| failed      | RunFailed: after work began    | failed              | 1                            |
| crashed     | any other exception (a bug)    | failed              | 1 (with the traceback)       |
| interrupted | KeyboardInterrupt (SIGINT/TERM)| interrupted         | 128 + the signal: 130 / 143  |

A sweep records each job the same way, goes on past all but `interrupted`, and exits 1 when any job did
not end ok. A fresh-process job's child exits with `child_code` so that its parent raises the same outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnrun import CnnrunError, signals

EXIT_OK = 0          # every run ended ok (or was already finished)
EXIT_FAILED = 1      # a run, or some jobs of a sweep, did not end ok (failed, nan); the summary is written
EXIT_CONFIG = 2      # refused before any work: config, data, paths, usage


class RunFailed(CnnrunError):
    """A run that failed after its work began (exit code 1, not 2): recorded as failed in metrics.json."""


class RunRefused(CnnrunError):
    """The directory belongs to someone else (a live process, or a finished run of another config):
    nothing in it is touched, and the run is not marked failed."""


@dataclass(frozen=True)
class Outcome:
    name: str
    status: str | None        # what metrics.json records; None: nothing (the directory is not this run's)
    exit_code: int | None     # None: the signal's (signals.exit_code())
    child_code: int           # a fresh-process job's exit code, read back by its parent


OK = Outcome("ok", "ok", EXIT_OK, 0)
REFUSED = Outcome("refused", None, EXIT_CONFIG, 3)
INVALID = Outcome("invalid", "failed", EXIT_CONFIG, 2)
FAILED = Outcome("failed", "failed", EXIT_FAILED, 4)
CRASHED = Outcome("crashed", "failed", EXIT_FAILED, 1)
INTERRUPTED = Outcome("interrupted", "interrupted", None, 130)
OUTCOMES = (OK, REFUSED, INVALID, FAILED, CRASHED, INTERRUPTED)


def of(error: BaseException | None, working: bool = False) -> Outcome:
    """The outcome an exception means; `working`: the run's work had begun, so a CnnrunError is `failed`."""
    if error is None:
        return OK
    if isinstance(error, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(error, RunRefused):
        return REFUSED
    if isinstance(error, RunFailed) or (working and isinstance(error, CnnrunError)):
        return FAILED
    if isinstance(error, CnnrunError):
        return INVALID
    return CRASHED


def message(error: BaseException, run_dir) -> str:
    """The one line a run's record and the console show for `error`."""
    if getattr(error, "cnnrun_message", None):  # said where it happened (record.Run: "during evaluation")
        return error.cnnrun_message
    if isinstance(error, KeyboardInterrupt):
        return f"interrupted before training finished; start again with: cnnrun resume {run_dir}"
    text = str(error) if isinstance(error, CnnrunError) else f"{type(error).__name__}: {error}"
    return text.splitlines()[0] if text.strip() else type(error).__name__


def exit_code(outcome: Outcome) -> int:
    if outcome.exit_code is not None:
        return outcome.exit_code
    return signals.exit_code()


def from_child(code: int | None) -> Outcome | None:
    """The outcome a fresh-process job's exit code says (None: it ended ok, or by a signal: read its record)."""
    return next((o for o in (REFUSED, INVALID, FAILED, CRASHED) if o.child_code == code), None)


def raise_as(outcome: Outcome, text: str) -> None:
    """Raises `outcome` again in this process (a fresh-process job's parent): the exception it is raised as."""
    kind = {REFUSED: RunRefused, INVALID: CnnrunError, FAILED: RunFailed}.get(outcome, RuntimeError)
    raise kind(text)
