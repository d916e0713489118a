"""The debug options that watch the training itself, each a hook its YAML attaches (conf/debug/):
`overfit` (can this model learn at all?) and `profile` (where does a step's time go?). `smoke`'s check of
the finished run's files is cnnrun/hooks/smoke.py.

A probe adds its callback to fit, says when to stop, and gives its verdict once fitting ends (a status ends
the run before evaluation; None goes on), recording its findings in metrics.json. Nothing here imports Keras.
"""

from __future__ import annotations

import logging
from typing import Annotated

from cnnrun.hooks import Hook

log = logging.getLogger("cnnrun")

RATIO = (lambda v: 0 < v < 1), "a fraction of the first epoch's loss in (0, 1)"
STEPS = (lambda v: v >= 1), "a whole number of steps >= 1"
TRACE = (lambda v: v >= 0), "a whole number of steps >= 0 (0: no trace)"


class Overfit(Hook):
    """debug=overfit: a few batches (conf/debug/overfit.yaml keeps 64 images) trained over and over until the
    epoch loss falls below `ratio` times the first epoch's; the run fails, saying so, if it never does.

    Args:
        ratio: passes once an epoch's training loss is below ratio x the first epoch's.
    """

    name = "overfit"

    def __init__(self, ratio: Annotated[float, RATIO]):
        self.ratio = ratio

    def stop(self, run, rows: list[dict]) -> bool:
        return len(rows) > 1 and rows[-1]["loss"] <= rows[0]["loss"] * self.ratio

    def fitted(self, run, fitted) -> str | None:
        """None when the loss fell enough: the run goes on to its evaluation."""
        rows = fitted.history
        if not rows:
            return None
        start, end = rows[0]["loss"], min(r["loss"] for r in rows)
        found = {"start_loss": start, "end_loss": end, "epochs": len(rows), "ratio": self.ratio,
                 "passed": self.stop(run, rows) or end <= start * self.ratio}
        run.update(overfit=found)
        if found["passed"]:
            log.info("debug=overfit: the loss fell from %.4f to %.4f in %d epochs: this model can learn", start, end,
                     len(rows))
            return None
        run.update(error=(
            f"debug=overfit: the training loss went from {start:.4f} to {end:.4f} in {len(rows)} epochs on a few batches, "
            f"never below {self.ratio:g} of its start; the model cannot fit even these images: check the labels, "
            "optimizer.lr and the model (or raise trainer.epochs)"))
        return "failed"


class Profile(Hook):
    """debug=profile: times `steps` training steps after `warmup` ones (the first compile) and writes
    profile.json and profile.txt; training stops there (the epoch is broken off on purpose: not a result).

    Args:
        warmup: steps before timing starts: the first compiles the step.
        steps: steps timed; training stops after warm-up + these.
        trace: steps in the backend's profiler trace, right after the warm-up (0: no trace).
    """

    name = "profile"

    def __init__(self, warmup: Annotated[int, STEPS], steps: Annotated[int, STEPS], trace: Annotated[int, TRACE]):
        self.warmup, self.steps, self.trace = warmup, steps, trace
        self.timer = None

    def callbacks(self, run, data, others: list) -> list:
        from cnnrun.hooks.profiler import StepTimer  # Keras: only once a run trains

        self.timer = StepTimer(run.dir, data, run.cfg.trainer, self.warmup, self.steps, self.trace)
        return self.timer.callbacks(others)

    def stop(self, run, rows: list[dict]) -> bool:
        return self.timer is not None and self.timer.done(rows)

    def fitted(self, run, fitted) -> str | None:
        status, findings = self.timer.verdict(fitted)
        run.update(**findings)
        return status
