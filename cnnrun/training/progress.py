"""The progress display while a run trains: a rich progress bar per epoch, or a line per epoch."""

from __future__ import annotations

import time

import keras
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from cnnrun.console import console


def _fmt(logs: dict, keys=("loss", "accuracy", "val_loss", "val_accuracy")) -> str:
    return "  ".join(f"{k} {float(logs[k]):.4f}" for k in keys if k in logs and logs[k] is not None)


class RichProgress(keras.callbacks.Callback):
    """One progress bar per epoch (verbose=1) or one line per epoch (verbose=2).

    Without a visible bar (no terminal, verbose 0/2) there is no batch hook at all, so on JAX Keras
    keeps its asynchronous training loop. With one, the bar is redrawn at most ~8 times a second.
    """

    def __init__(self, epochs: int, steps: int, verbose: int = 1, refresh: float = 0.125):
        super().__init__()
        self.epochs, self.steps, self.verbose, self.refresh = epochs, steps, verbose, refresh
        self.progress = None
        self.task = None
        self._last = 0.0
        self._epoch_start = 0.0
        if verbose != 1 or not console.is_terminal:
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
        if self.progress is not None:
            self.task = self.progress.add_task(f"epoch {epoch + 1}/{self.epochs}", total=self.steps, metrics="")

    def on_train_batch_end(self, batch, logs=None):
        if self.progress is None:
            return
        now = time.perf_counter()
        if now - self._last >= self.refresh or batch + 1 == self.steps:
            self._last = now
            self.progress.update(self.task, completed=batch + 1, metrics=_fmt(logs or {}))

    def on_epoch_end(self, epoch, logs=None):
        seconds = time.perf_counter() - self._epoch_start
        line = f"epoch {epoch + 1}/{self.epochs}  {seconds:.1f}s  {_fmt(logs or {})}"
        if self.progress is not None and not self.progress.disable:
            self.progress.update(self.task, completed=self.steps, metrics=f"{seconds:.1f}s  " + _fmt(logs or {}))
        elif self.verbose:
            console.print(line)

    def close(self) -> None:
        """Stops the live display (after the last epoch; fit() ends once per epoch, so not on_train_end)."""
        if self.progress is not None:
            self.progress.stop()
            self.progress = None
