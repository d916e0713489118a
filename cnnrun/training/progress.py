"""The progress display while a run trains: a rich progress bar per epoch, or a line per epoch."""

from __future__ import annotations

import logging
import time

import keras
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cnnrun.console import console


def _fmt(logs: dict, keys=("loss", "accuracy", "val_loss", "val_accuracy")) -> str:
    """Each metric's name and value, one space apart: a line of them fits 80 columns (history.csv keeps every digit)."""
    return " ".join(f"{k} {float(logs[k]):.3f}" for k in keys if k in logs and logs[k] is not None)


log = logging.getLogger("cnnrun")


LOG_EVERY = 30.0  # seconds between progress lines in a log (verbose=1 without a terminal)


class RichProgress(keras.callbacks.Callback):
    """One progress bar per epoch (verbose=1) or one line per epoch (verbose=2).

    Without a terminal (a log, CI), verbose=1 prints a line per epoch and, within a long epoch, one every
    LOG_EVERY seconds. On JAX that would need a batch hook, which costs Keras its asynchronous training loop,
    so there (and with verbose 0/2) there is no batch hook at all and the line comes once an epoch. With a
    terminal, the bar is redrawn at most ~8 times a second.
    """

    def __init__(self, epochs: int, steps: int, verbose: int = 1, refresh: float = 0.125):
        from cnnrun import backend

        super().__init__()
        self.epochs, self.steps, self.verbose, self.refresh = epochs, steps, verbose, refresh
        self.progress = None
        self.task = None
        self._last = 0.0
        self._epoch_start = 0.0
        self._epoch = self._done = 0
        self.lines = verbose == 1 and not console.is_terminal and backend.name() != "jax"
        if verbose != 1 or not (console.is_terminal or self.lines):
            self.on_train_batch_end = super().on_train_batch_end  # Keras sees the default: no batch hook

    def on_train_begin(self, logs=None):
        if self.verbose == 1 and self.progress is None:  # once, though fit() runs once per epoch
            self.progress = Progress(
                TextColumn("[bold]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[metrics]}"),
                console=console,
                refresh_per_second=8,
                disable=not console.is_terminal,  # logs and CI get the per-epoch lines only
            )
            self.progress.start()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start = time.perf_counter()
        self._epoch, self._done = epoch, 0
        if self.progress is not None:
            self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.epochs}", total=self.steps, metrics="")

    def on_train_batch_end(self, batch, logs=None):
        self._done = batch + 1
        now = time.perf_counter()
        if self.lines:  # a log: a steady line, not a bar
            if now - max(self._last, self._epoch_start) >= LOG_EVERY and batch + 1 < self.steps:
                self._last = now
                log.info("epoch %d/%d step %d/%d %.0fs %s", self._epoch + 1, self.epochs, batch + 1, self.steps,
                         now - self._epoch_start, _fmt(logs or {}, ("loss", "accuracy")))
            return
        if self.progress is None:
            return
        if now - self._last >= self.refresh or batch + 1 == self.steps:
            self._last = now
            self.progress.update(self.task, completed=batch + 1, metrics=_fmt(logs or {}, ("loss", "accuracy")))

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._epoch_start
        bars = self.progress is not None and not self.progress.disable
        if bars and self._done < self.steps:  # broken off (Ctrl-C): the bar stays where it stopped, marked as not kept
            self.progress.update(self.task, completed=self._done, metrics="stopped: this epoch is discarded",
                                 description=f"epoch {epoch + 1}/{self.epochs} (stopped)")
            return
        line = f"epoch {epoch + 1}/{self.epochs} {seconds:.1f}s {_fmt(logs or {})}"
        if bars:  # the epoch's bar gives way to its line (within 80 columns), printed above the next epoch's bar
            self.progress.remove_task(self.task)
            self.progress.console.print(line, highlight=False, markup=False)
        # Every epoch's row is in train.log; the console shows it as a line unless a bar did (or verbose=0).
        log.info("%s", line, extra={"log_only": bars or not self.verbose})

    def close(self) -> None:
        """Stops the live display (after the last epoch; fit() ends once per epoch, so not on_train_end)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
