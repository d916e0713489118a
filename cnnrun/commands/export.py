"""`cnnrun export RUN_DIR --format savedmodel|onnx|litert`: a finished run's model in serving formats.

Each export takes the same raw 0-255 uint8 pixels as model.keras (scaling is inside), is written with
the class names beside it (labels.txt), and is verified before the command says so: loaded in its own
runtime (TensorFlow, onnxruntime, the LiteRT interpreter) and run on the run's test images, its class
probabilities compared with model.keras's. export.json records each format's agreement.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import warnings
from pathlib import Path

import numpy as np

from cnnrun import CnnrunError
from cnnrun.commands import add_user_code
from cnnrun.config.extras import pip
from cnnrun.config.plugins import import_named
from cnnrun.record import layout
from cnnrun.console import console, error, show, start_backend
from cnnrun import signals
from cnnrun.record.outcome import EXIT_CONFIG

TOLERANCE = 1e-4  # largest allowed difference in any class probability; the predicted classes must all agree
FORMATS = {  # cnnrun name: (Keras' format, file or folder, modules the converter and runtime need)
    "savedmodel": ("tf_saved_model", "savedmodel", ("tensorflow",)),
    "onnx": ("onnx", "model.onnx", ("tensorflow", "tf2onnx", "onnx", "onnxruntime")),
    "litert": ("litert", "model.tflite", ("tensorflow", "ai_edge_litert")),
}


def check_available(fmt: str) -> None:
    missing = [m for m in FORMATS[fmt][2] if importlib.util.find_spec(m) is None]
    if missing:
        raise CnnrunError(f"--format {fmt} needs {', '.join(missing)}, which is not installed; "
                          f"{pip('export')}")


def reference_images(run_dir: Path, input_shape, n: int = 256, loader: str | None = None) -> tuple[np.ndarray, str]:
    """Up to n of the run's own test images (record.saved.test_set: nothing the directory names is run), else
    seeded random pixels, with why."""
    from cnnrun.record.saved import test_set

    try:
        data, why = test_set(run_dir, loader, limit=n)
    except CnnrunError as e:
        data, why = None, str(e)
    except Exception as e:  # noqa: BLE001 - the data may live elsewhere now; random pixels still compare the maths
        data, why = None, f"its data was not found ({type(e).__name__}: {(str(e).splitlines() or [''])[0][:120]})"
    if data is not None:
        return np.asarray(data.x_test[:n]), f"{min(n, len(data.x_test))} of the run's test images"
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (64, *input_shape), dtype=np.uint8), f"64 random images ({why})"


def run_export(fmt: str, path: Path, x: np.ndarray) -> np.ndarray:
    """Class probabilities of the exported model at `path`, computed by the format's own runtime."""
    if fmt == "savedmodel":
        from cnnrun.backend import saved_model_predict

        return saved_model_predict(path, x)
    if fmt == "onnx":
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        return session.run(None, {session.get_inputs()[0].name: x})[0]
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], x)
    interpreter.invoke()
    return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])


def export(run_dir: Path, formats: list[str], out: Path, allow_unfinished: bool = False, loader: str | None = None,
           imports: list[str] | None = None) -> dict:
    """Exports and verifies; returns export.json's content. Refuses before any work what it cannot do."""
    from cnnrun.record.saved import finished_model
    from cnnrun.record import writable_folder

    model_file, metrics = finished_model(run_dir, allow_unfinished)
    for fmt in formats:
        check_available(fmt)
    from cnnrun import record

    record.claim(run_dir)  # the run's directory is written into: not while a run (or another export) owns it
    try:  # the user's files there are never replaced or deleted; nothing is written through a link in a run directory
        record.own_folder(out, {**dict.fromkeys(layout.EXPORT_FILES),
                                "savedmodel": lambda name: name in layout.SAVEDMODEL_FILES},
                          "--out", inside=run_dir if out == run_dir / layout.EXPORT else None)
        writable_folder(out, "--out")  # before any work: an existing file or a read-only place
        _start_tensorflow()  # only now (seconds): every refusal above comes at once
        import_named(imports or [])  # the user's own layers, registered before model.keras is loaded
        return _export(run_dir, model_file, metrics, formats, out, loader)
    finally:
        record.release(run_dir)


def _start_tensorflow() -> None:
    """The converters are TensorFlow's: a fresh process (the command line) starts Keras on TensorFlow whatever
    KERAS_BACKEND says; where Keras already runs (a test, a notebook), its backend stays as it is."""
    if "keras" not in sys.modules and importlib.util.find_spec("tensorflow") is not None:
        os.environ["KERAS_BACKEND"] = "tensorflow"
    start_backend()
    # Keras' tf2onnx shim probes np.object, and NumPy answers with a FutureWarning on every ONNX export:
    # nothing a user can act on.
    warnings.filterwarnings("ignore", message="In the future `np.object`", category=FutureWarning)


def _export(run_dir: Path, model_file: Path, metrics: dict, formats: list[str], out: Path, loader=None) -> dict:
    from cnnrun.record.files import write_json, write_text
    from cnnrun.record.saved import class_names, load_model

    model = load_model(model_file, command="export")
    names = class_names(metrics, model)
    x, source = reference_images(run_dir, model.input_shape[1:], loader=loader)
    expected = model.predict(x, verbose=0)
    write_text(out / "labels.txt", "".join(f"{n}\n" for n in names))
    channels = model.input_shape[-1]
    report = {"run": str(run_dir), "input": {"dtype": "uint8", "shape": [None, *model.input_shape[1:]],
                                            "pixels": "raw 0-255; scaling is inside the model",
                                            "color": "L (grayscale)" if channels == 1 else "RGB",
                                            "resize": f"to {model.input_shape[1]}x{model.input_shape[2]} (height x "
                                                      "width) with bilinear interpolation (PIL Image.BILINEAR, not "
                                                      "its bicubic default), after the EXIF orientation is applied: "
                                                      "as cnnrun prepared the training images"},
              "class_names": names, "verified_on": source, "tolerance": TOLERANCE,
              "formats": _earlier_formats(out, names, model.input_shape[1:])}
    for fmt in formats:
        keras_format, name, _ = FORMATS[fmt]
        target = out / name
        # While a format is being made, export.json does not list it: an interrupted or failed export never
        # looks verified. The new export is made beside the old one and takes its place only once verified.
        report["formats"].pop(fmt, None)
        write_json(out / layout.EXPORT_REPORT, report)
        partial = out / f".partial-{name}"  # the suffix kept: exporters check it
        _remove(partial)
        try:
            with console.status(f"exporting {fmt} ..."):
                model.export(str(partial), format=keras_format, verbose=False)
                got = np.asarray(run_export(fmt, partial, x))
            diff = float(np.abs(got - expected).max())
            agree = float(np.mean(got.argmax(1) == expected.argmax(1)))
            if not (diff <= TOLERANCE and agree == 1.0):
                raise CnnrunError(f"the {fmt} export disagrees with model.keras on {source} (largest difference "
                                  f"{diff:.2e}, same class for {100 * agree:.1f} %); nothing was kept")
            _remove(target)
            partial.replace(target)
        except OSError as e:
            raise CnnrunError(f"cannot write the {fmt} export into {out}: {e.strerror or e}; free some disk space "
                              "or give another --out") from None
        except CnnrunError:
            raise
        except Exception as e:  # noqa: BLE001 - a converter's own failure (TensorFlow reports a full disk its way)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise CnnrunError(f"the {fmt} export failed ({type(e).__name__}: {first}); nothing of it was kept; "
                              "check the free disk space, or export another format") from None
        finally:
            _remove(partial)
            _remove(Path(str(partial) + "_temp"))  # TensorFlow's own scratch folder beside a SavedModel
            for scratch in out.glob("variables_temp*"):
                _remove(scratch)
        report["formats"][fmt] = {"path": str(target), "max_abs_difference": diff, "same_class": agree,
                                  "verified": True}
        write_json(out / layout.EXPORT_REPORT, report)
    return report


def _remove(path: Path) -> None:
    import shutil

    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _earlier_formats(out: Path, names: list[str], shape) -> dict:
    """Formats an earlier `cnnrun export` of this same model verified, whose files are still there."""
    import json

    try:
        earlier = json.loads((out / layout.EXPORT_REPORT).read_text(encoding="utf-8"))
        if earlier.get("class_names") != names or earlier.get("input", {}).get("shape", [None])[1:] != list(shape):
            return {}
        return {f: r for f, r in earlier.get("formats", {}).items()
                if f in FORMATS and r.get("verified") is True and (out / FORMATS[f][1]).exists()}
    except (OSError, ValueError, AttributeError, TypeError):
        return {}


def export_main(args: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="cnnrun export", description="A finished run's model in serving formats.")
    ap.add_argument("run_dir", type=Path, help="a run directory that ended ok (holds model.keras)")
    ap.add_argument("--format", dest="formats", action="append", choices=sorted(FORMATS),
                    help="savedmodel, onnx or litert; repeat for several (default: all three)")
    ap.add_argument("--out", type=Path, help="where the exports go (default: RUN_DIR/export)")
    ap.add_argument("--allow-unfinished", action="store_true", help="export the model of a run that did not end ok")
    add_user_code(ap, loader=True)
    ns = ap.parse_args(args)
    formats = list(dict.fromkeys(ns.formats or sorted(FORMATS)))
    try:
        report = export(ns.run_dir, formats, ns.out or ns.run_dir / layout.EXPORT, ns.allow_unfinished, ns.loader,
                        ns.imports)
    except CnnrunError as e:
        error(str(e))
        raise SystemExit(EXIT_CONFIG) from None
    except KeyboardInterrupt:
        error("interrupted; the format being exported was not kept, and export.json lists only verified ones")
        raise SystemExit(signals.exit_code()) from None
    from rich.table import Table

    table = Table(title=f"export · {ns.run_dir} · verified on {report['verified_on']}")
    for column in ("format", "path", "largest difference", "same class"):
        table.add_column(column)
    for fmt, r in report["formats"].items():
        table.add_row(fmt, r["path"], f"{r['max_abs_difference']:.1e}", f"{100 * r['same_class']:.1f} %")
    show(table)
    console.print(f"class names in {Path(report['formats'][formats[0]]['path']).parent / 'labels.txt'}; "
                  f"details in export.json (tolerance {TOLERANCE})")
