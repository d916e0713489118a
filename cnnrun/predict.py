"""`cnnrun predict RUN_DIR IMAGE_OR_DIR...`: classify image files with a finished run's model."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

from cnnrun import CnnrunError, layout, record
from cnnrun.console import console, error, show
from cnnrun.folder import EXTENSIONS, decode


def check_writable(out: Path) -> None:
    """Refuses an --out file that cannot be written, before any work."""
    parent = out.resolve().parent
    if out.is_dir() or not parent.is_dir() or not os.access(parent, os.W_OK):
        raise CnnrunError(f"cannot write --out {out}: {'it is a folder' if out.is_dir() else 'its folder is missing or not writable'}; "
                          "give a file in a writable folder, e.g. --out predictions.csv")


def collect(paths: list[Path]) -> list[Path]:
    files = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS)
        else:
            files.append(p)
    return files


def finished_model(run_dir: Path, allow_unfinished: bool = False) -> tuple[Path, dict]:
    """(model.keras, metrics) of a run that ended ok; refuses any other run unless `allow_unfinished`."""
    model_file = run_dir / layout.MODEL
    metrics = record.read(run_dir)
    if metrics is None:
        raise CnnrunError(f"{run_dir} holds no run (no metrics.json, no model.keras); give the directory a run wrote")
    status = metrics.get("status")
    if status != "ok" and not allow_unfinished:
        why = f": {metrics['error']}" if metrics.get("error") else ""
        raise CnnrunError(f"{run_dir} did not end ok (status {status}{why}); its model is not a result. Finish it "
                          f"(cnnrun resume {run_dir}) or pass --allow-unfinished to use it anyway")
    if not model_file.is_file():
        raise CnnrunError(f"{run_dir} has no model.keras; give the directory of a finished run (output.save_model=true)")
    return model_file, metrics


def load_model(model_file: Path, compile: bool = True):
    """A run's model.keras, in Keras' safe mode only: a file that would run code on loading (a Lambda layer,
    a TFSMLayer, a crafted config) is refused in one line. cnnrun never loads with safe_mode=False."""
    import keras

    import cnnrun.backend  # noqa: F401 - registers cnnrun's layers: models saved before model.keras was portable
    import cnnrun.vgg  # noqa: F401 - and VGGPreprocess, for the same older models

    try:
        return keras.models.load_model(model_file, compile=compile, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - zip, JSON, h5 and Keras' deserialisation each fail their own way
        text = " ".join(str(e).split())
        if "safe_mode" in text or "lambda" in text.lower() or "unsafe" in text.lower():
            why = "it would run code when loaded (a Lambda layer or a crafted config), which cnnrun refuses"
        else:
            why = f"it is not a Keras model cnnrun can read ({text[:160] or type(e).__name__})"
        raise CnnrunError(f"{model_file} cannot be loaded: {why}; use the model.keras of a run cnnrun made, "
                          "or retrain the run") from None


def class_names(metrics: dict, model) -> list[str]:
    """The run's class names, checked against the model's outputs (a record edited by hand, or another run's)."""
    units = int(model.output_shape[-1])
    names = metrics.get("class_names")
    if names is None:
        return [str(i) for i in range(units)]
    if not isinstance(names, list) or len(names) != units or len(set(map(str, names))) != len(names):
        shown = names if not isinstance(names, list) else f"{len(names)} names"
        raise CnnrunError(f"metrics.json's class_names ({str(shown)[:80]}) do not match the model's {units} distinct "
                          "outputs; the record does not belong to this model.keras: use the run directory as cnnrun wrote it")
    return [str(n) for n in names]


def predict_files(run_dir: Path, files: list[Path], top: int = 1, allow_unfinished: bool = False):
    """(rows, unreadable): rows are (file, [(class, probability)] * top) for each readable image."""
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
    ap.add_argument("--out", type=Path, default=Path("predictions.csv"), help="CSV to write (default: ./predictions.csv)")
    ap.add_argument("--allow-unfinished", action="store_true",
                    help="use the model of a run that did not end ok (nan, failed, interrupted)")
    ns = ap.parse_args(args)
    if ns.top < 1:
        error(f"--top {ns.top} must be 1 or more (the K most likely classes), e.g. --top 3")
        raise SystemExit(2)
    missing = [str(p) for p in ns.inputs if not p.exists()]
    if missing:
        ap.error(f"no such file or folder: {', '.join(missing)}")
    files = collect(ns.inputs)
    if not files:
        ap.error(f"no images ({', '.join(sorted(EXTENSIONS))}) in {', '.join(map(str, ns.inputs))}")
    try:
        check_writable(ns.out)  # before any work; predict_files refuses an unfinished run before decoding
        rows, unreadable = predict_files(ns.run_dir, files, ns.top, ns.allow_unfinished)
    except CnnrunError as e:
        error(str(e))
        raise SystemExit(2) from None
    from rich.table import Table

    from cnnrun.files import write_csv

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
        raise SystemExit(2) from None
    console.print(f"written: {ns.out}")
    for f, why in unreadable:
        error(f"cannot read {f} as an image ({why}); skipped")
    if unreadable:
        sys.exit(2)
