"""The layout of a run directory and of a sweep directory: every name cnnrun (and Hydra for it) writes there.

The one place these names are spelled; every module that reads or writes a run's files takes them from here.
A directory holding anything not listed is not cnnrun's: it is never set aside or written into
(`hydra.run.dir=.` in a project, `~`, `/`). Imports nothing, so anything may import it.
"""

from __future__ import annotations

from pathlib import Path

# --- a run ---------------------------------------------------------------------------------------------
METRICS = "metrics.json"                # the record: status, figures, identity (record.Metrics)
LOCK = ".lock"                          # held (flock) while a process owns the directory
CHECKPOINT = "checkpoint.npz"           # the last whole epoch, while the run is unfinished
HYDRA = ".hydra"                        # Hydra's copy of the config: config.yaml, overrides.yaml, hydra.yaml
LOG = "train.log"                       # Hydra's log file of the job
HISTORY = "history.csv"                 # one row per epoch
CURVES = "curves.png"
REPORT_TXT = "classification_report.txt"
REPORT_JSON = "classification_report.json"
CONFUSION_CSV = "confusion_matrix.csv"
CONFUSION_PNG = "confusion_matrix.png"
MISCLASSIFIED = "misclassified"         # a folder of the wrongly classified test images
MISCLASSIFIED_CSV = "misclassified.csv"
PREDICTIONS_PNG = "predictions.png"
AUGMENT_PREVIEW = "augment_preview.png"
SUMMARY = "summary.txt"                 # the model's layer table
MODEL = "model.keras"
EXPORT = "export"                       # cnnrun export: a folder, with export.json in it
EXPORT_REPORT = "export.json"
TENSORBOARD = "tensorboard"
EXPLAIN = "explain"
PROFILE, PROFILE_TXT, PROFILE_JSON = "profile", "profile.txt", "profile.json"
REPRODUCE_LOG, REPRODUCE_JSON = "reproduce.log", "reproduce.json"
PREDICTIONS_CSV = "predictions.csv"

# --- what `cnnrun explain` writes into its folder (RUN_DIR/explain or --out) ---------------------------------
EXPLAIN_FILES = ("gradcam.png", "embedding.csv", "embedding.png")  # and gradcam/, one picture an image
EXPLAIN_MANIFEST = ".cnnrun-explain.json"  # the pictures in gradcam/ explain wrote: the only ones it ever removes
# --- what `cnnrun export` writes into its folder (RUN_DIR/export or --out) -----------------------------------
EXPORT_FILES = ("labels.txt", EXPORT_REPORT, "savedmodel", "model.onnx", "model.tflite")
SAVEDMODEL_FILES = ("saved_model.pb", "fingerprint.pb", "variables", "assets", "keras_metadata.pb")


def explain_written(out) -> list[str]:
    """The pictures an earlier explain listed as its own in `out`/gradcam ([] when none or unreadable)."""
    import json

    try:
        names = json.loads((Path(out) / EXPLAIN_MANIFEST).read_text(encoding="utf-8")).get("gradcam", [])
    except (OSError, ValueError, AttributeError):
        return []
    return [n for n in names if isinstance(n, str) and "/" not in n and "\\" not in n and n not in ("", ".", "..")]


HYDRA_FILES = (HYDRA, LOG)  # written by Hydra itself before a sweep job's task function starts
RUN_FILES = {METRICS, LOCK, CHECKPOINT, *HYDRA_FILES, HISTORY, CURVES, REPORT_TXT, REPORT_JSON, CONFUSION_CSV,
             CONFUSION_PNG, MISCLASSIFIED, MISCLASSIFIED_CSV, PREDICTIONS_PNG,
             AUGMENT_PREVIEW, SUMMARY, MODEL, EXPORT, TENSORBOARD, EXPLAIN, PROFILE, PROFILE_TXT, PROFILE_JSON,
             REPRODUCE_LOG, REPRODUCE_JSON, PREDICTIONS_CSV}
FIGURES = (CURVES, CONFUSION_PNG, PREDICTIONS_PNG)  # what trackers show as images

# --- a sweep -------------------------------------------------------------------------------------------
MULTIRUN = "multirun.yaml"              # Hydra's record of the sweep's overrides
SUMMARY_CSV, SUMMARY_MD = "summary.csv", "summary.md"
MLFLOW_PARENT, MLFLOW_LOCK = "mlflow.json", ".mlflow.lock"
GPUS = ".gpus"                          # which job holds which GPU (parallel launchers)
REFUSED = ".refused"                    # jobs refused their directory, for the summary
SWEEP_FILES = {LOCK, MULTIRUN, SUMMARY_CSV, SUMMARY_MD, MLFLOW_PARENT, MLFLOW_LOCK, GPUS, REFUSED}


def config(run_dir) -> Path:
    """The run's composed config, as Hydra saved it."""
    return Path(run_dir) / HYDRA / "config.yaml"


def overrides(run_dir) -> Path:
    """The run's command-line overrides, as Hydra saved them."""
    return Path(run_dir) / HYDRA / "overrides.yaml"


def sweep_of(run_dir) -> Path | None:
    """The sweep's multirun.yaml when `run_dir` is a job of a sweep, else None."""
    file = Path(run_dir).parent / MULTIRUN
    return file if file.is_file() else None
