"""Runs that survive interruption: per-epoch checkpoints, Ctrl-C/SIGTERM handling, config fingerprints.

A checkpoint is one `.npz` holding every variable of the training model (weights, BatchNorm
statistics and the seed-generator states of dropout and augmentation), every optimizer variable
(step count, moments, loss scale), the epoch it ends and the history so far. Batches are shuffled
by a permutation drawn from (seed, epoch) alone, so together these are the whole state of a run:
a resumed run repeats the uninterrupted one exactly.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from cnnrun import CnnrunError, artifacts
from cnnrun.resident import LAYER as RESIDENT_DATA

CHECKPOINT = "checkpoint.npz"
# Keys that change how a run is shown, fed or how long it goes on, not what it computes (device_data and
# steps_per_execution give identical histories: tests/test_resident.py), so a run may resume with them changed.
NEUTRAL = ("trainer.resume", "trainer.verbose", "trainer.epochs", "trainer.fresh_process", "trainer.device_data",
           "trainer.steps_per_execution", "output")
# Options added after runs already existed, with the value that means "off": left out of the fingerprint
# while off, so a checkpoint or finished run made before the option existed keeps its identity.
ADDED_OFF = {"optimizer.weight_decay": None, "optimizer.schedule": "constant", "optimizer.warmup": 0.0,
             "trainer.label_smoothing": 0.0, "trainer.tta": "none", "trainer.augment_after": 0}


def fingerprint(cfg: DictConfig) -> str:
    """A short hash of everything in the config that changes the numbers a run produces."""
    data = OmegaConf.to_container(cfg, resolve=True)
    for dotted in (*NEUTRAL, *ADDED_OFF):
        *parents, leaf = dotted.split(".")
        node = data
        for p in parents:
            node = node.get(p, {})
        if dotted in NEUTRAL or (leaf in node and node[leaf] == ADDED_OFF[dotted]):
            node.pop(leaf, None)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffle for one epoch, from (seed, epoch) only: a resumed run draws the same batches."""
    return np.random.default_rng([seed, epoch]).permutation(n)


def state_variables(model) -> list:
    """The model's variables that make up its state: all but device-resident training data."""
    return [v for v in model.variables if not v.path.startswith(RESIDENT_DATA + "/")]


def save(run_dir: Path, model, epoch: int, history: list[dict], config_hash: str, train_seconds: float = 0.0) -> Path:
    """Writes the state after `epoch` completed epochs, atomically (the previous checkpoint survives a crash)."""
    variables = state_variables(model)
    arrays = {f"v{i}": np.asarray(v.numpy()) for i, v in enumerate(variables)}
    arrays.update({f"o{i}": np.asarray(v.numpy()) for i, v in enumerate(model.optimizer.variables)})
    meta = {"epoch": epoch, "history": history, "config_hash": config_hash, "train_seconds": round(train_seconds, 3),
            "n_variables": len(variables), "n_optimizer": len(model.optimizer.variables)}
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return artifacts.atomic_write(Path(run_dir) / CHECKPOINT, lambda tmp: np.savez(tmp, **arrays))


def load(run_dir: Path) -> dict | None:
    """The checkpoint in `run_dir` as {'meta': ..., 'arrays': ...}, or None if there is none."""
    path = Path(run_dir) / CHECKPOINT
    if not path.is_file():
        return None
    try:
        with np.load(path) as z:
            arrays = {k: z[k] for k in z.files}
        meta = json.loads(arrays.pop("meta").tobytes())
    except (OSError, ValueError, KeyError) as e:
        raise CnnrunError(f"checkpoint {path} is unreadable ({e}); delete it and set trainer.resume=false to start over") from None
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
        return self

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False

    @property
    def exit_code(self) -> int:
        return 128 + int(self.signum or signal.SIGINT)
