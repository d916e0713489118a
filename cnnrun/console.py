"""What the user sees: the console, the end-of-run results table and one-line errors (no Keras import:
sweep parents and `cnnrun compare` stay light; the progress bar lives in progress.py)."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile

from rich.console import Console
from rich.table import Table

from cnnrun.redact import redact


class _Console(Console):
    """rich's Console, with secrets blanked from every text it prints (cnnrun/redact.py)."""

    def print(self, *objects, **kwargs) -> None:
        super().print(*(redact(o) if isinstance(o, str) else o for o in objects), **kwargs)


console = _Console(stderr=False, highlight=False)


def results_table(metrics: dict, run_dir) -> None:
    """The end-of-run summary: the numbers that matter and where everything was written."""
    table = Table(title=f"cnnrun · {metrics.get('dataset')} · {metrics.get('model')}", show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")

    def pct(v):
        return "—" if v is None else f"{100 * v:.2f} %"

    rows = [
        ("status", metrics.get("status")),
        ("test accuracy", pct(metrics.get("test_accuracy"))),
        ("article's accuracy", pct(metrics.get("reference_accuracy")) if metrics.get("reference_accuracy") else None),
        ("test loss", f"{metrics['test_loss']:.4f}" if metrics.get("test_loss") is not None else "—"),
        ("best val accuracy", pct(metrics.get("best_val_accuracy"))),
        ("epochs", metrics.get("epochs")),
        ("train seconds", f"{metrics.get('train_seconds', 0):.1f}"),
        ("images / second", f"{metrics.get('images_per_second', 0):,.0f}"),
        ("parameters", f"{metrics.get('params', 0):,}"),
        ("backend · device", f"{metrics.get('backend')} · {metrics.get('device')}"),
    ]
    for key, value in rows:
        if value is not None:
            table.add_row(key, redact(str(value)))
    console.print(table)
    console.print(f"run directory: [bold]{run_dir}[/bold]")


def error(message: str) -> None:
    """One line on stderr, no traceback: for mistakes the user can fix."""
    print(f"cnnrun: error: {redact(message)}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def filtered_stderr(noise: re.Pattern):
    """Holds back what is written to stderr (fd 2, so C++ libraries too) inside the block, then writes
    it out without the lines `noise` matches. Everything else comes out, in order, even on an error."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines(keepends=True)
                    if not noise.search(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
