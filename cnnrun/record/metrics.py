"""metrics.json: its fields, typed once (Metrics), the one reader and the one writer."""

from __future__ import annotations

import json
import logging
import types
import typing
from pathlib import Path
from typing import TypedDict


from cnnrun.config.redact import redact_data
from cnnrun.record import files
from cnnrun.record.layout import (
    METRICS,
)

log = logging.getLogger("cnnrun")


class Metrics(TypedDict, total=False):
    """metrics.json: the one record of a run's results, every field it may hold (write() refuses others).
    A run writes it at start (status running), after each stage, and at its end."""
    # identity and state
    status: str                     # running | ok | failed | interrupted | nan (outcome.py); readers add unreadable
    error: str                      # one line, when not ok
    warning: str                    # ok, but the figures mean little (near chance: artifacts.near_chance)
    exit_code: int                  # an interrupted run's: 130 / 143
    dataset: str
    model: str
    backend: str
    seed: int
    started: str                    # ISO 8601, UTC
    finished: str
    reference_accuracy: float | None  # the article's figure (reference.accuracy)
    shortened: str                  # why this run is not comparable with that figure (shortened())
    config_hash: str                # fingerprint(cfg): what decides the numbers
    data_digest: str | None         # data.digest: the data read
    code_digest: dict[str, str]     # the user's own targets: a digest of each one's source
    epochs_planned: int
    resumed_from_epoch: int
    # the model and the machine
    params: int
    device: str
    jit: bool
    steps_per_execution: int        # training steps per compiled call (trainer.steps_per_execution; auto resolved)
    distribute: dict                # several devices: processes, process, devices, batch, per_device_batch
    # training (loop.history_metrics)
    epochs: int
    train_seconds: float
    images_per_second: float
    train_images: int
    val_images: int
    test_images: int
    final_train_accuracy: float | None
    best_val_accuracy: float | None
    best_epoch: int | None
    last_val_accuracy: float | None
    stopped_early_after: int
    evaluated_weights: str          # last | best | average
    precise_bn: str | None          # how batch-norm statistics were recomputed, if they were
    # evaluation (artifacts.write_evaluation)
    test_accuracy: float
    test_loss: float
    misclassified: int
    weakest_class: str
    class_names: list[str]
    # what cnnrun's debug and explain hooks add; any hook (a tracker, the user's own) may add fields of its own
    explained: dict
    overfit: dict
    profile: dict


FIELDS = frozenset(Metrics.__annotations__)  # cnnrun's own; a hook of the user's may add fields of its own
TYPES = typing.get_type_hints(Metrics)


def _typed(value, hint) -> bool:
    """Whether `value` fits a Metrics annotation (numbers of any numeric type: numpy's too)."""
    import numbers

    if hint is typing.Any:
        return True
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        kind = typing.get_origin(option) or option
        if option is type(None) and value is None:
            return True
        if kind is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
            return True
        if kind is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return True
        if kind in (str, bool, dict, list) and isinstance(value, kind):
            return True
    return False


def read(run_dir: Path) -> Metrics | None:
    """metrics.json of `run_dir`: None when there is none; `status: unreadable` when it cannot be parsed."""
    path = Path(run_dir) / METRICS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {"status": "unreadable", "error": f"{path} is unreadable: {e}"}
    return data if isinstance(data, dict) else {"status": "unreadable", "error": f"{path} holds no JSON object"}


def write(run_dir: Path, metrics: Metrics) -> None:
    wrong = [f"{k}={v!r} (declared {getattr(TYPES[k], '__name__', TYPES[k])})"
             for k, v in metrics.items() if k in TYPES and not _typed(v, TYPES[k])]
    if wrong:  # a programming error: cnnrun's fields and their types are declared once, in Metrics
        raise TypeError(f"metrics.json field {'; '.join(wrong)} does not match cnnrun.record.Metrics")
    files.write_json(Path(run_dir) / METRICS, redact_data(metrics))  # no secret ever reaches the record
