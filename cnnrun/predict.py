"""`cnnrun predict RUN_DIR IMAGE_OR_DIR...`: classify image files with a finished run's model."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from cnnrun import CnnrunError
from cnnrun.console import console, error
from cnnrun.folder import EXTENSIONS, decode


def collect(paths: list[Path]) -> list[Path]:
    files = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix.lower() in EXTENSIONS)
        else:
            files.append(p)
    return files


def predict_files(run_dir: Path, files: list[Path], top: int = 1):
    """(rows, unreadable): rows are (file, [(class, probability)] * top) for each readable image."""
    import keras

    import cnnrun.backend  # noqa: F401 - registers cnnrun's layers (BatchNorm) for loading
    import cnnrun.vgg  # noqa: F401 - and VGGPreprocess

    model_file = run_dir / "model.keras"
    if not model_file.is_file():
        raise CnnrunError(f"{run_dir} has no model.keras; give the directory of a finished run (output.save_model=true)")
    metrics = json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    model = keras.models.load_model(model_file)
    height, width, channels = model.input_shape[1:]
    names = metrics.get("class_names") or [str(i) for i in range(model.output_shape[-1])]
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
    ns = ap.parse_args(args)
    missing = [str(p) for p in ns.inputs if not p.exists()]
    if missing:
        ap.error(f"no such file or folder: {', '.join(missing)}")
    files = collect(ns.inputs)
    if not files:
        ap.error(f"no images ({', '.join(sorted(EXTENSIONS))}) in {', '.join(map(str, ns.inputs))}")
    try:
        rows, unreadable = predict_files(ns.run_dir, files, max(1, ns.top))
    except CnnrunError as e:
        error(str(e))
        raise SystemExit(2) from None
    from rich.table import Table

    from cnnrun.artifacts import write_csv

    table = Table(title=f"predictions · {ns.run_dir}")
    table.add_column("file", overflow="fold")
    for k in range(max(1, ns.top)):
        table.add_column("class" if k == 0 else f"#{k + 1}")
        table.add_column("confidence", justify="right")
    header = ["file"] + [c for k in range(max(1, ns.top)) for c in (f"class_{k + 1}", f"confidence_{k + 1}")]
    csv_rows = []
    for f, top in rows:
        table.add_row(str(f), *[c for name, p in top for c in (name, f"{100 * p:.1f} %")])
        csv_rows.append([str(f)] + [c for name, p in top for c in (name, f"{p:.6f}")])
    console.print(table)
    write_csv(ns.out, header, csv_rows)
    console.print(f"written: {ns.out}")
    for f, why in unreadable:
        error(f"cannot read {f} as an image ({why}); skipped")
    if unreadable:
        sys.exit(2)
