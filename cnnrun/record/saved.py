"""A finished run's model: found, checked against its record, and loaded in Keras' safe mode only."""

from __future__ import annotations

from pathlib import Path

from cnnrun import CnnrunError, record
from cnnrun.record import layout


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
    import cnnrun.models.vgg  # noqa: F401 - and VGGPreprocess, for the same older models

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
