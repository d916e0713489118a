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

from cnnrun.config.redact import redact


class _Console(Console):
    """rich's Console, with secrets blanked from every text it prints (cnnrun/config/redact.py)."""

    def print(self, *objects, **kwargs) -> None:
        super().print(*(redact(o) if isinstance(o, str) else o for o in objects), **kwargs)


console = _Console(stderr=False, highlight=False)


def show(table: Table) -> None:
    """A table drawn as one on a terminal wide enough for it. Elsewhere (a CI log, a pipe, a narrow window) its
    plain form, lines that never break a number: `key: value` for a two-column table without a header, else
    CSV rows under a header row. Either way the title comes first."""
    import csv
    import io

    from rich.text import Text

    if console.is_terminal and console.measure(table).maximum <= console.width:
        console.print(table)
        return
    plain = lambda cell: cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain  # noqa: E731
    columns = [[plain(c) for c in column._cells] for column in table.columns]
    rows = [list(row) for row in zip(*columns)]
    lines = [str(table.title)] if table.title else []
    if not table.show_header and len(columns) == 2:
        lines += [f"{key}: {value}" for key, value in rows]
    else:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow([plain(c.header) for c in table.columns])
        writer.writerows(rows)
        lines += out.getvalue().splitlines()
    for line in lines:
        console.print(line, soft_wrap=True, markup=False, highlight=False)


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
        ("article's accuracy", (pct(metrics.get("reference_accuracy")) + (
            f" (of a full run; this one is shortened: {metrics['shortened']})" if metrics.get("shortened") else ""))
         if metrics.get("reference_accuracy") else None),
        ("test loss", f"{metrics['test_loss']:.4f}" if metrics.get("test_loss") is not None else "—"),
        ("best val accuracy", pct(metrics.get("best_val_accuracy"))),
        ("epochs", metrics.get("epochs")),
        ("train seconds", f"{metrics.get('train_seconds', 0):.1f}"),
        ("images / second", f"{metrics.get('images_per_second', 0):,.0f}"),
        ("parameters", f"{metrics.get('params', 0):,}"),
        ("backend · device", f"{metrics.get('backend')} · {metrics.get('device')}"),
    ]
    if metrics.get("warning"):
        rows.insert(1, ("warning", metrics["warning"]))
    for key, value in rows:
        if value is not None:
            table.add_row(key, redact(str(value)), style="bold yellow" if key == "warning" else None)
    show(table)
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


# What TensorFlow prints on every start through absl (TF_CPP_MIN_LOG_LEVEL does not reach these): facts about
# the build, not about the run. The CUDA lines are dropped only where the machine has no NVIDIA device, so a
# GPU machine whose driver fails still says so.
_NOISE = [r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
          r"^E\d{4} [\d:.]+\s+\d+ util\.cc:\d+\] oneDNN supports DT_INT64 only on platforms with AVX-512",  # the first
          # integer op on a CPU without AVX-512 says so (as an "error") and goes on with Eigen: nothing is wrong
          r"^I\d{4} [\d:.]+\s+\d+ (port|cpu_feature_guard)\.cc:\d+\] ",
          r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"]
_NO_GPU_NOISE = [r"^I\d{4} [\d:.]+\s+\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers",
                 r"^E\d{4} [\d:.]+\s+\d+ cuda_(platform|executor|driver)\.cc:\d+\] failed call to cuInit"]


def quiet_backend():
    """A context in which the backend's start-up boilerplate is held back from the terminal (everything else it
    prints comes through): Keras starting, or a user's module that imports it."""
    gpu_here = any(os.path.exists(p) for p in ("/dev/nvidia0", "/proc/driver/nvidia/version", "/dev/dxg"))
    return filtered_stderr(re.compile("|".join(_NOISE if gpu_here else _NOISE + _NO_GPU_NOISE)))


def start_backend() -> None:
    """Imports Keras and lets the backend find its devices, quietly (quiet_backend). Call before anything else
    imports Keras."""
    with quiet_backend():
        from cnnrun import backend

        backend.start()  # TensorFlow probes CUDA on the first device query
