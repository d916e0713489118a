"""Runs that survive interruption: per-epoch checkpoints and Ctrl-C/SIGTERM handling.

A checkpoint is one `.npz` holding every variable of the training model (weights, BatchNorm
statistics and the seed-generator states of dropout and augmentation), every optimizer variable
(step count, moments, loss scale), the epoch it ends and the history so far. Batches are shuffled
by a permutation drawn from (seed, epoch) alone, so together these are the whole state of a run:
a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import json
import signal
import threading
from pathlib import Path

import numpy as np

from cnnrun import CnnrunError, signals
from cnnrun.data.resident import LAYER as RESIDENT_DATA
from cnnrun.record import files
from cnnrun.record.layout import CHECKPOINT


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffle for one epoch, from (seed, epoch) only: a resumed run draws the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def state_variables(model) -> list:
    """The model's variables that make up its state: all but device-resident training data."""
    return [v for v in model.variables if not v.path.startswith(RESIDENT_DATA + "/")]


def save(run_dir: Path, model, epoch: int, history: list[dict], config_hash: str, train_seconds: float = 0.0,
         best=None, trained: bool = False, stopped_early: int | None = None) -> Path:
    """Writes the state after `epoch` completed epochs, atomically (the previous checkpoint survives a crash).
    `best` (loop.Best) adds the best epoch so far and its weights: early stopping resumes where it was. `trained`:
    training has ended (its last epoch, or early stopping after `stopped_early`), so a run stopped during its
    evaluation resumes by evaluating these weights."""
    variables = state_variables(model)
    arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    arrays.update({f"o{i}": np.asarray(v.numpy()) for i, v in enumerate(model.optimizer.variables)})
    meta = {"epoch": epoch, "history": history, "config_hash": config_hash, "train_seconds": round(train_seconds, 3),
            "n_variables": len(variables), "n_optimizer": len(model.optimizer.variables)}
    if trained:
        meta.update(trained=True, stopped_early=stopped_early)
    if best is not None:
        meta["best"] = {"epoch": best.epoch, "value": best.value}
        arrays.update({f"b{i}": w for i, w in enumerate(best.weights or [])})
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return files.atomic_write(Path(run_dir) / CHECKPOINT, lambda tmp: np.savez(tmp, **arrays))


def load(run_dir: Path) -> dict | None:
    """The checkpoint in `run_dir` as {'meta': ..., 'arrays': ...}, or None if there is none."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("meta").tobytes())
        if not isinstance(meta, dict) or not {"epoch", "history", "n_variables", "n_optimizer"} <= set(meta):
            raise ValueError("its meta record is incomplete")
    except Exception as e:  # noqa: BLE001 - zipfile, zlib, numpy and json each fail their own way on a cut file
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CnnrunError(f"checkpoint {path} is unreadable ({why}); add trainer.resume=false to keep the earlier "
                          "run aside and start over") from None
    return {"meta": meta, "arrays": arrays}


def restore(model, checkpoint: dict) -> None:
    """Puts a checkpoint's weights, RNG and optimizer state back into a freshly built, compiled model."""
    meta, arrays = checkpoint["meta"], checkpoint["arrays"]
    optimizer = model.optimizer
    if not optimizer.built:
        optimizer.build(model.trainable_variables)
    variables = state_variables(model)
    if meta["n_variables"] != len(variables) or meta["n_optimizer"] != len(optimizer.variables):
        raise CnnrunError(
            f"the checkpoint holds {meta['n_variables']} model and {meta['n_optimizer']} optimizer variables but this "
            f"model has {len(variables)} and {len(optimizer.variables)}; set trainer.resume=false to start over"
        )
    for i, v in enumerate(variables):
        v.assign(arrays[f"v{i}"])
    for i, v in enumerate(optimizer.variables):
        v.assign(arrays[f"o{i}"])


class StopOnSignal:
    """While active, SIGINT and SIGTERM ask the model to stop after the current batch.

    Keras checks `model.stop_training` after every step, so no batch hook is needed (on JAX a batch
    hook would make the loop synchronous). A second Ctrl-C while stopping aborts at once.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, model, say=print):
        self.model, self.say = model, say
        self.signum: int | None = None
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt  # second signal: the user really wants out
        self.signum = signum
        self.model.stop_training = True
        self.say(f"{signal.Signals(signum).name}: stopping after this batch and saving a checkpoint (again to abort)")

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signal handlers live in the main thread only
            for s in self.SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        if signals.received() is not None:  # it came before training and was swallowed on its way: stop at once
            self.signum = signals.received()
            self.model.stop_training = True
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGINT)
