"""What the user sees: the console, the end-of-run results table and one-line errors (no Keras import:
sweep parents and `cnnrun compare` stay light; the progress bar lives in progress.py)."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import sys
import tempfile

from rich.console import Console
from rich.table import Table

from cnnrun.config.redact import redact


class _Console(Console):
    """rich's Console, with secrets blanked from every text it prints (cnnrun/config/redact.py). Without a terminal
    (a pipe, a log, CI) a line is never wrapped: `grep` and a log reader see each line whole."""

    def print(self, *objects, **kwargs) -> None:
        kwargs.setdefault("soft_wrap", not self.is_terminal)
        super().print(*(redact(o) if isinstance(o, str) else o for o in objects), **kwargs)


console = _Console(stderr=False, highlight=False)
errors = _Console(stderr=True, highlight=False)  # one-line errors: wrapped between words on a terminal only


def show(table: Table) -> None:
    """A table as a person reads it. Columns empty in every row are left out (the files keep them). On a terminal
    wide enough, drawn as a table; on a narrower one, a block of `name value` pairs per row, wrapped between
    pairs, never inside one. Elsewhere (a CI log, a pipe) its plain form, whole lines: `key: value` for a
    two-column table without a header, else CSV rows under a header row. The title comes first."""
    import csv
    import io

    from rich.text import Text

    plain = lambda cell: cell.plain if isinstance(cell, Text) else Text.from_markup(str(cell)).plain  # noqa: E731
    kept = [c for c in table.columns if any(plain(cell).strip() for cell in c._cells)] if table.row_count else []
    if table.show_header and len(kept) < len(table.columns):  # the same table without its empty columns
        table.columns[:] = kept or table.columns
    if console.is_terminal and natural_width(table) <= console.width:
        console.print(table)
        return
    columns = [[plain(c) for c in column._cells] for column in table.columns]
    rows = [list(row) for row in zip(*columns)]
    header = [plain(c.header) for c in table.columns]
    lines = [str(table.title)] if table.title else []
    if not table.show_header and len(columns) == 2:
        lines += [f"{key}: {value}" for key, value in rows]
    elif console.is_terminal:  # too narrow for the table: each row as name-value pairs that fit the width
        for row in rows:
            lines += pairs([f"{h} {v}" for h, v in zip(header[1:], row[1:]) if v], f"{header[0]} {row[0]}",
                           console.width)
    else:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
        lines += out.getvalue().splitlines()
    for line in lines:  # whole lines; on a terminal one longer than its width (a long error) wraps between words
        console.print(line, markup=False, highlight=False)


def natural_width(renderable) -> int:
    """The width `renderable` takes unsqueezed (rich's own measure stops at the console's width, so a table that
    does not fit would seem to)."""
    from rich.measure import Measurement

    return Measurement.get(console, console.options.update(max_width=100_000), renderable).maximum


def pairs(items: list[str], first: str, width: int) -> list[str]:
    """`first` then `items` (each "name value") packed into lines of at most `width` columns, broken between items
    only; the lines after the first indented."""
    lines, line = [], first
    for item in items:
        if len(line) + 3 + len(item) > width and line.strip():
            lines.append(line)
            line = "    " + item
        else:
            line = f"{line} · {item}" if line.strip() else item
    return [*lines, line]


class ConsoleFormatter(logging.Formatter):
    """The console's form of a log record: its message alone (a warning says so), so lines stay within a terminal's
    80 columns; the timestamped form goes to the run's train.log (Hydra's job_logging, conf/config.yaml)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record).strip()
        return f"warning: {text}" if record.levelno == logging.WARNING else \
            f"error: {text}" if record.levelno >= logging.ERROR else text


class LogOnly(logging.Filter):
    """On the console handler: leaves out records logged with extra={"log_only": True}, which the console shows in
    its own form already (the epoch a live progress bar ends on, the results table)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(record, "log_only", False)


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
    """One line on stderr, no traceback: for mistakes the user can fix (a terminal wraps it between words)."""
    errors.print(f"cnnrun: error: {message}", markup=False)
    errors.file.flush()


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
