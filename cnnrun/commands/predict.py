"""`cnnrun predict RUN_DIR IMAGE_OR_DIR...`: classify image files with a finished run's model."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from cnnrun import CnnrunError
from cnnrun.commands import add_user_code, import_user_code
from cnnrun.console import console, error, show, start_backend
from cnnrun.data.paths import EXTENSIONS, image_files
from cnnrun.record import layout
from cnnrun.record.saved import class_names, finished_model, load_model
from cnnrun.record.outcome import EXIT_CONFIG


def check_writable(out: Path) -> None:
    """Refuses an --out file that cannot be written, before any work."""
    import stat

    if out.exists() and not out.is_dir() and not stat.S_ISREG(out.stat().st_mode):  # /dev/null, /dev/full, a FIFO
        raise CnnrunError(f"cannot write --out {out}: it is a device or other special file, not a file cnnrun writes; "
                          "give the path of a CSV file, e.g. --out predictions.csv")
    parent = out.resolve().parent
    if out.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise CnnrunError(f"cannot write --out {out}: {'it is a folder' if out.is_dir() else 'its folder is missing or not writable'}; "
                          "give a file in a writable folder, e.g. --out predictions.csv")


def predict_files(run_dir: Path, files: list[Path], top: int = 1, allow_unfinished: bool = False):
    """(rows, unreadable): rows are (file, [(class, probability)] * top) for each readable image."""
    from cnnrun.data.folder import decode  # Keras: after the arguments are checked

    model_file, metrics = finished_model(run_dir, allow_unfinished)
    model = load_model(model_file)
    height, width, channels = model.input_shape[1:]
    names = class_names(metrics, model)
    images, readable, unreadable = [], [], []
    for f in files:
        try:
            images.append(decode(str(f), (height, width), channels))  # the preprocessing training used
            readable.append(f)
        except Exception as e:  # noqa: BLE001 - any decoder failure means "cannot read this file"
            unreadable.append((f, f"{type(e).__name__}: {e}".splitlines()[0]))
    rows = []
    if images:
        probs = model.predict(np.stack(images), batch_size=256, verbose=0)
        for f, p in zip(readable, probs):
            best = np.argsort(p)[::-1][:top]
            rows.append((f, [(names[k], float(p[k])) for k in best]))
    return rows, unreadable


def predict_main(args: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="cnnrun predict", description="Classify images with a finished run's model.")
    ap.add_argument("run_dir", type=Path, help="a run directory (holds model.keras)")
    ap.add_argument("inputs", nargs="+", type=Path, help="image files or folders of images")
    ap.add_argument("--top", type=int, default=1, help="show the K most likely classes")
    ap.add_argument("--out", type=Path, default=None, help="CSV to write (default: RUN_DIR/predictions.csv)")
    ap.add_argument("--allow-unfinished", action="store_true",
                    help="use the model of a run that did not end ok (nan, failed, interrupted)")
    add_user_code(ap)
    ns = ap.parse_args(args)
    if ns.top < 1:
        error(f"--top {ns.top} must be 1 or more (the K most likely classes), e.g. --top 3")
        raise SystemExit(EXIT_CONFIG)
    missing = [str(p) for p in ns.inputs if not p.exists()]
    if missing:
        ap.error(f"no such file or folder: {', '.join(missing)}")
    files = image_files(ns.inputs)
    ns.out = ns.out or ns.run_dir / layout.PREDICTIONS_CSV  # beside the model, not wherever the shell happens to be
    if not files:
        ap.error(f"no images ({', '.join(sorted(EXTENSIONS))}) in {', '.join(map(str, ns.inputs))}")
    try:
        finished_model(ns.run_dir, ns.allow_unfinished)  # before any work, and before the backend starts (seconds)
        check_writable(ns.out)
        start_backend()
        import_user_code(ns)
        rows, unreadable = predict_files(ns.run_dir, files, ns.top, ns.allow_unfinished)
    except CnnrunError as e:
        error(str(e))
        raise SystemExit(EXIT_CONFIG) from None
    from rich.table import Table

    from cnnrun.record.files import write_csv

    table = Table(title=f"predictions · {ns.run_dir}")
    table.add_column("file", overflow="fold")
    for k in range(ns.top):
        table.add_column("class" if k == 0 else f"#{k + 1}")
        table.add_column("confidence", justify="right")
    header = ["file"] + [c for k in range(ns.top) for c in (f"class_{k + 1}", f"confidence_{k + 1}")]
    csv_rows = []
    for f, top in rows:
        table.add_row(str(f), *[c for name, p in top for c in (name, f"{100 * p:.1f} %")])
        csv_rows.append([str(f)] + [c for name, p in top for c in (name, f"{p:.6f}")])
    show(table)
    try:
        write_csv(ns.out, header, csv_rows)
    except CnnrunError as e:
        error(str(e))
        raise SystemExit(EXIT_CONFIG) from None
    console.print(f"written: {ns.out}")
    for f, why in unreadable:
        error(f"cannot read {f} as an image ({why}); skipped")
    if unreadable:
        sys.exit(EXIT_CONFIG)
