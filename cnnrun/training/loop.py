"""The training loop of one run: an epoch per fit() call, a checkpoint after each, Ctrl-C kept clean.

Each epoch's shuffle comes from (seed, epoch) and the checkpoint after each epoch holds weights,
optimizer and RNG state, so an interrupted run resumes exactly. A signal stops training after the
current batch; an epoch whose every batch ran is kept (history and checkpoint) even when the signal
came during its last batch or its validation, and only an epoch that was broken off is dropped.

Why not one fit() for every epoch, with Keras' own callbacks (measured: bench/loop.py, docs/BENCHMARKS.md)? One
fit() per epoch is within this machine's noise of Keras running the epochs itself with shuffle=True (1.00 and 1.07
of its time for cnn4 at batch 256 and mnist_cnn at 32), a one-fit() feed in (seed, epoch) order gains nothing
beyond that noise either, and a backbone's two stages compile again between epochs. Each epoch's order comes from
(seed, epoch), not from the backend's global RNG, which no checkpoint holds. Over
per-epoch calls Keras' EarlyStopping would start afresh each epoch (on_train_begin resets it), and its state is not
in the checkpoint; TerminateOnNaN adds a batch hook, which makes JAX's loop wait for every step, and does not say
which epoch failed; SwapEMAWeights swaps by adding and subtracting on TensorFlow, which rounds the weights training
goes on from. So Best, EpochLog and ValidateTheAverage below do those jobs, exactly and resumably.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import keras
import numpy as np

from cnnrun import CnnrunError
from cnnrun import backend
from cnnrun.training import distribute, resume
from cnnrun.data.augment import AugmentFrom
from cnnrun.training.optim import average_weights
from cnnrun.training.progress import RichProgress
from cnnrun.data.resident import train_feed, validation_feed

log = logging.getLogger("cnnrun")


def feed(x, y, batch_size, order=None) -> tuple:
    """fit()'s data arguments, in `order` if given: arrays as they are (Keras slices them fastest),
    on-disk images as a PyDataset that decodes batches in worker threads."""
    if isinstance(x, np.ndarray):
        return (x, y) if order is None else (x[order], y[order])
    from cnnrun.data.folder import Batches

    return (Batches(x, y, batch_size, order=order),)


def _one(args: tuple):
    return args if len(args) == 2 else args[0]


def _with_labels(args: tuple) -> tuple:
    """(x, y) -> ([x, y], y): the trainer of a mixup / cutmix run reads the labels as an input too."""
    x, y = args
    return [x, y], y


def predict(model: keras.Model, x, batch_size: int) -> np.ndarray:
    """Class probabilities (float64) for arrays or on-disk images."""
    return model.predict(*feed(x, None, batch_size)[:1], batch_size=batch_size if isinstance(x, np.ndarray) else None,
                         verbose=0).astype("float64")


class EpochLog(keras.callbacks.Callback):
    """Per-epoch records for history.csv; stops training when the loss turns NaN or inf.

    On TensorFlow the NaN check runs after every batch (Keras converts the batch logs there anyway).
    On JAX, Keras keeps the training loop asynchronous only while no callback has a batch hook, so
    the hook is dropped there and the check runs at the end of each epoch.
    """

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []
        self.nan_epoch = None
        self._start = 0.0
        if backend.name() == "jax":
            self.on_train_batch_end = super().on_train_batch_end  # Keras sees the default: no batch hook

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and self.nan_epoch is None and not np.isfinite(float(loss)):
            self.nan_epoch = len(self.rows) + 1
            self.model.stop_training = True

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and self.nan_epoch is None and not np.isfinite(float(loss)):
            self.nan_epoch = epoch + 1
            self.model.stop_training = True
        row = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - self._start, 3)}
        row.update({k: float(v) for k, v in (logs or {}).items()})
        row["lr"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        self.rows.append(row)


def _snapshot(model) -> list[np.ndarray]:
    return [np.array(v.numpy()) for v in resume.state_variables(model)]


def _assign(model, values: list[np.ndarray]) -> None:
    for v, value in zip(resume.state_variables(model), values):
        v.assign(value)


def evaluation_weights(model) -> list[np.ndarray]:
    """The model's state as it would be evaluated now: with trainer.ema, the moving average of the weights."""
    raw = _snapshot(model)
    if not average_weights(model):
        return raw
    evaluated = _snapshot(model)
    _assign(model, raw)  # training goes on from its own weights
    return evaluated


class ValidateTheAverage(keras.callbacks.Callback):
    """trainer.ema: each epoch's validation measures the moving average of the weights, which is what will be
    evaluated, saved and (with restore_best) chosen; training then goes on from its own weights."""

    def __init__(self):
        super().__init__()
        self._raw: list[np.ndarray] | None = None

    def on_test_begin(self, logs=None):
        self._raw = _snapshot(self.model)
        _assign(self.model, evaluation_weights(self.model))  # copies: JAX's step donates the average's own buffer

    def on_test_end(self, logs=None):
        _assign(self.model, self._raw)
        self._raw = None


class Best:
    """trainer.patience / trainer.restore_best: the best epoch by trainer.monitor on the validation set, the
    weights it would be evaluated with, and whether training has gone `patience` epochs without beating it."""

    def __init__(self, t):
        self.monitor, self.patience, self.keep = str(t.monitor), t.patience, bool(t.restore_best)
        self.epoch: int | None = None
        self.value: float | None = None
        self.weights: list[np.ndarray] | None = None

    @property
    def active(self) -> bool:
        return self.patience is not None or self.keep

    def see(self, row: dict, model) -> bool:
        """Takes an epoch's row; True when training should stop."""
        value = row.get(self.monitor)
        if value is None or not np.isfinite(value):
            return False
        higher = self.monitor.endswith("accuracy")
        if self.value is None or (value > self.value if higher else value < self.value):
            self.epoch, self.value = int(row["epoch"]), float(value)
            if self.keep:
                self.weights = evaluation_weights(model)
        return self.patience is not None and int(row["epoch"]) - self.epoch >= self.patience

    def restore_from(self, checkpoint: dict) -> None:
        saved = checkpoint["meta"].get("best") or {}
        self.epoch, self.value = saved.get("epoch"), saved.get("value")
        arrays = checkpoint["arrays"]
        n = sum(1 for k in arrays if k.startswith("b"))
        self.weights = [arrays[f"b{i}"] for i in range(n)] if n else None


def finish(model, fitted) -> str:
    """Puts the weights to evaluate and save into `model`; says which they are."""
    best = fitted.best
    if best is not None and best.keep and best.weights is not None:
        _assign(model, best.weights)
        return f"epoch {best.epoch} (best {best.monitor} {best.value:.4f})"
    if average_weights(model):
        return "moving average (trainer.ema)"
    return "last epoch"


def _batch_norms(model) -> list:
    """The trainable BatchNormalization layers of `model`, nested models included."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable:
            found.append(layer)
        elif hasattr(layer, "layers"):
            found += _batch_norms(layer)
    return found


PRECISE_BN_IMAGES = 8192  # training images the population statistics are recomputed from (pycls' default)
PRECISE_BN_BATCH = 256  # images per batch of statistics (the training batch when larger): larger batches, closer to
                        # the population's variance, and fewer eager forward passes (the cost of the whole step)
SETTLED = 10  # time constants of the moving averages (1 / (1 - momentum) steps each) after which they have settled


def precise_batch_norm(classifier, data, t, steps: int) -> str | None:
    """Recomputes every batch norm's population statistics (moving mean and variance) for the weights about to be
    evaluated, as the average over training batches of their batch statistics: what pycls' precise BN and
    torch.optim.swa_utils.update_bn do. trainer.precise_bn=auto does it when the moving averages cannot be
    trusted: a run too short for them to settle (a few hundred steps: at momentum 0.99 the statistics of the
    first weights still weigh in, and those of the last are not yet in), or EMA weights (the moving statistics
    belong to the raw weights). Returns what was done, for metrics.json, or None."""
    norms = _batch_norms(classifier)
    if not norms or t.precise_bn is False:
        return None
    short = steps < min(SETTLED / (1.0 - float(bn.momentum)) for bn in norms)
    averaged = t.ema is not None
    if t.precise_bn == "auto" and not (short or averaged):
        return None
    rng = np.random.default_rng(t.seed + 7919)  # its own stream: the training order is not disturbed
    n = min(len(data.x_train), PRECISE_BN_IMAGES)
    log.info("precise BN: the statistics of %d batch norms over %d training images", len(norms), n)
    picked = np.sort(rng.choice(len(data.x_train), size=n, replace=False))
    size = max(t.batch_size, min(PRECISE_BN_BATCH, t.eval_batch_size))  # few calls: each is an eager forward pass
    batches = [picked[i:i + size] for i in range(0, n, size)]
    momenta = [bn.momentum for bn in norms]
    try:
        for k, idx in enumerate(batches, start=1):
            for bn in norms:
                bn.momentum = (k - 1) / k  # the k-th batch's statistics weigh 1/k: the running mean of all k
            classifier(np.asarray(data.x_train[idx]), training=True)
    finally:
        for bn, m in zip(norms, momenta):
            bn.momentum = m
    why = "trainer.precise_bn=true" if t.precise_bn is True else (
        "EMA weights" if averaged else f"{steps} steps, too few for momentum {norms[0].momentum:g} to settle")
    return f"{len(norms)} batch norms from {n} training images ({why})"


@dataclass
class Fitted:
    """What the loop did: the whole history (earlier epochs of a resumed run included) and how it ended."""
    history: list[dict] = field(default_factory=list)
    first_epoch: int = 0         # epochs done before this process started (resume)
    seconds: float = 0.0         # training time, earlier epochs included
    new_seconds: float = 0.0     # of which this process
    nan_epoch: int | None = None
    signum: int | None = None    # the signal that stopped it
    exit_code: int = 0
    best: Best | None = None     # trainer.patience / restore_best
    stopped_early: int | None = None  # the epoch after which trainer.patience stopped training


def steps_done(model) -> int:
    """Optimizer steps taken so far (a resumed run's earlier ones included)."""
    return int(keras.ops.convert_to_numpy(model.optimizer.iterations))


AUTO_STEPS_PER_CALL = 8  # bench/speed.py: the articles' models at batch 32-256 gain 5-50 % over one step per call


def steps_per_call(chosen, steps_per_epoch: int) -> int:
    """trainer.steps_per_execution as Keras gets it. `auto`: 8 training steps per compiled call, so the Python and
    dispatch between steps are paid once per 8, and at most a quarter of an epoch's steps, so a short epoch still
    reports progress a few times and no call runs past its end. The numbers are the same either way
    (tests/test_resident.py); only the time per step changes."""
    if chosen != "auto":
        return int(chosen)
    return max(1, min(AUTO_STEPS_PER_CALL, steps_per_epoch // 4))


def _validation(data, t, placement, images):
    """fit()'s validation_data and batch size: this process's share of the images (all of them on one device)."""
    offset = len(data.x_train)
    idx, batch = placement.validation(len(data.y_val), t.eval_batch_size)
    if images is not None:
        x, y = validation_feed(data.y_val, offset=offset)
        return ((x, y) if idx is None else (x[idx], y[idx])), batch
    return _one(feed(data.x_val, data.y_val, batch, order=idx)), batch


def _resume(trainer, checkpoint: dict, out: Fitted, epoch_log: EpochLog, best: Best, unfreeze) -> bool:
    """Puts a run back as its checkpoint left it: weights, optimizer and RNG state, the best epoch, the history and
    the training time so far (a checkpoint of a backbone's second stage restored into that stage's model and
    optimizer). Returns whether the second stage is on."""
    staged = unfreeze is not None and checkpoint["meta"]["epoch"] >= unfreeze[0]
    if staged:
        unfreeze[1]()  # the checkpoint is of the second stage: its variables and optimizer
    resume.restore(trainer, checkpoint)
    best.restore_from(checkpoint)
    out.first_epoch, out.seconds = checkpoint["meta"]["epoch"], checkpoint["meta"].get("train_seconds", 0.0)
    epoch_log.rows = list(checkpoint["meta"]["history"])
    if checkpoint["meta"].get("trained"):  # training had ended when the run stopped (during its evaluation)
        out.stopped_early = checkpoint["meta"].get("stopped_early")
        out.history, out.first_epoch = epoch_log.rows, len(epoch_log.rows)
        log.info("training had ended after epoch %d: evaluating its weights, nothing is trained again", out.first_epoch)
    return staged


def fit(trainer: keras.Model, data, t, run_dir, config_hash: str, augment=None, images=None,
        checkpoint: dict | None = None, on_epoch=None, extend=None, stop_when=None,
        placement: distribute.Placement | None = None, unfreeze=None) -> Fitted:
    """Trains `trainer` on `data` for trainer.epochs epochs (the rest of them when `checkpoint` is given).
    `on_epoch(row)` hears of each epoch that ran whole, after its checkpoint; `extend(callbacks)` returns the
    Keras callbacks to fit with, and `stop_when(rows)` may end training after an epoch (the run's hooks).
    On a `placement` of several devices this process feeds its share of each batch (Placement.share); with
    run_dir None no checkpoint is written (a process other than 0 of a distributed run). `unfreeze`: (epoch, second
    stage), a backbone's two-stage fine-tune: from that epoch on the second stage's model and optimizer train (a
    checkpoint from then is restored into them)."""
    placement = placement or distribute.Placement(batch=t.batch_size)
    out = Fitted()
    epoch_log = EpochLog()
    best = Best(t)
    out.best = best if best.active else None
    staged = checkpoint is not None and _resume(trainer, checkpoint, out, epoch_log, best, unfreeze)
    if checkpoint is not None and checkpoint["meta"].get("trained"):  # it stopped during its evaluation
        return out
    steps = placement.steps(len(data.x_train))
    has_val = len(data.x_val) > 0
    validation, val_batch = _validation(data, t, placement, images) if has_val else (None, None)
    batch = placement.per_process  # this process's part of each batch (the whole batch on one device)
    labelled = len(trainer.inputs) == 2  # mixup / cutmix: the trainer takes the labels as an input too
    if labelled and validation is not None:
        validation = _with_labels(validation)
    callbacks = [epoch_log, progress := RichProgress(t.epochs, steps, t.verbose)]
    if has_val and t.ema is not None:
        callbacks.append(ValidateTheAverage())
    if augment is not None and augment.gated:
        callbacks.append(AugmentFrom(augment, t.augment_after))
    if extend is not None:
        callbacks = extend(callbacks)
    start = time.perf_counter()
    with resume.StopOnSignal(trainer, say=log.warning) as stop:
        try:
            for epoch in range(out.first_epoch, t.epochs):
                if stop.signum is not None:
                    break
                order, cut = placement.share(resume.epoch_order(len(data.x_train), t.seed, epoch))
                if cut and epoch == out.first_epoch:
                    log.info("distribute: %d of %d training images sit out each epoch (the last batch cut to a "
                             "multiple of %d devices), a different %d each epoch", cut, len(data.x_train),
                             placement.devices, cut)
                if stop.signum is not None:  # fit() would clear the stop request and run a whole epoch
                    break
                if unfreeze is not None and epoch >= unfreeze[0] and not staged:
                    unfreeze[1]()
                    staged = True
                before = steps_done(trainer)
                args = (feed(data.x_train, data.y_train, batch, order) if images is None
                        else train_feed(data.y_train, order))
                trainer.fit(
                    *(_with_labels(args) if labelled else args),
                    batch_size=batch if isinstance(data.x_train, np.ndarray) else None,
                    initial_epoch=epoch, epochs=epoch + 1, validation_data=validation,
                    validation_batch_size=val_batch if isinstance(data.x_val, np.ndarray) else None,
                    shuffle=False,  # already in this epoch's order
                    verbose=0, callbacks=callbacks,
                )
                whole = steps_done(trainer) - before >= steps  # every batch ran: the epoch is a result
                if not whole:
                    del epoch_log.rows[epoch:]  # broken off by a signal (or debug=profile): not a result
                    break
                finite = epoch_log.nan_epoch is None  # NaN weights are not worth a checkpoint
                patience_out = out.best is not None and best.see(epoch_log.rows[-1], trainer)
                if finite and t.checkpoint and run_dir is not None:  # the last epoch too: a stop during the
                    seconds = out.seconds + time.perf_counter() - start  # evaluation resumes without training again
                    trained = epoch + 1 >= t.epochs or patience_out
                    resume.save(run_dir, trainer, epoch + 1, epoch_log.rows, config_hash, seconds, out.best,
                                trained=trained, stopped_early=epoch + 1 if patience_out else None)
                if on_epoch is not None:
                    on_epoch(epoch_log.rows[-1])
                if patience_out:
                    out.stopped_early = epoch + 1
                    log.info("no better %s for %d epochs (best: epoch %d, %.4f): stopping after epoch %d",
                             best.monitor, best.patience, best.epoch, best.value, epoch + 1)
                if not finite or patience_out or (stop_when is not None and stop_when(epoch_log.rows)):
                    break
        finally:
            progress.close()
    out.new_seconds = time.perf_counter() - start
    out.seconds += out.new_seconds
    out.history, out.nan_epoch = epoch_log.rows, epoch_log.nan_epoch
    if stop.signum is not None:  # the user asked to stop: even after the last epoch, evaluation waits for resume
        out.signum, out.exit_code = stop.signum, stop.exit_code
    return out


def evaluate(classifier: keras.Model, data, t) -> np.ndarray:
    """Test-set class probabilities, once, with the classifier (no augmentation); mirror TTA if asked."""
    probs = predict(classifier, data.x_test, t.eval_batch_size)
    if t.tta == "flip":  # average with the mirror image: what the model sees either way round
        if not isinstance(data.x_test, np.ndarray):
            raise CnnrunError("trainer.tta=flip needs the test images in memory; set dataset.cache=true or tta=none")
        probs = (probs + predict(classifier, data.x_test[:, :, ::-1], t.eval_batch_size)) / 2
    return probs


def history_metrics(fitted: Fitted, data) -> dict:
    """The metrics.json fields that come from training."""
    history, new_epochs = fitted.history, len(fitted.history) - fitted.first_epoch
    metrics = dict(
        epochs=len(history),
        train_seconds=round(fitted.seconds, 3),
        images_per_second=round(len(data.x_train) * new_epochs / fitted.new_seconds, 1) if new_epochs > 0 else 0.0,
        train_images=len(data.x_train), val_images=len(data.x_val), test_images=len(data.x_test),
        final_train_accuracy=history[-1].get("accuracy") if history else None,
        best_val_accuracy=None, best_epoch=None, last_val_accuracy=None,
    )
    if fitted.stopped_early is not None:
        metrics["stopped_early_after"] = fitted.stopped_early
    if len(data.x_val) and history:
        val = [row["val_accuracy"] for row in history]
        metrics.update(best_val_accuracy=max(val), best_epoch=int(np.argmax(val)) + 1, last_val_accuracy=val[-1])
    return metrics
