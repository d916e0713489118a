"""One experiment, top to bottom: check → seed → data → augment → model → fit → evaluate → artifacts."""

from __future__ import annotations

import json
import logging
import signal
import time
from datetime import datetime, timezone
from pathlib import Path

import keras
import numpy as np
from omegaconf import DictConfig

from cnnrun import CnnrunError, artifacts, backend, resume
from cnnrun.artifacts import mark_failed  # noqa: F401 - re-exported: callers know it from here
from cnnrun.augment import AugmentFrom, build_augment, preview
from cnnrun.progress import RichProgress
from cnnrun.data import Dataset, load_dataset
from cnnrun.models import build_model, check_model_config
from cnnrun.resident import ResidentImages, resident_layer, train_feed, validation_feed

log = logging.getLogger("cnnrun")

PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")


def check_config(cfg: DictConfig) -> None:
    """Refuses bad values with one line naming the key, the value and the fix — before any data is read."""
    t = cfg.trainer

    def positive_int(key, value):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CnnrunError(f"trainer.{key}={value!r} must be a whole number >= 1, e.g. trainer.{key}=5")

    positive_int("epochs", t.epochs)
    positive_int("batch_size", t.batch_size)
    positive_int("eval_batch_size", t.eval_batch_size)
    if isinstance(t.seed, bool) or not isinstance(t.seed, int):
        raise CnnrunError(f"trainer.seed={t.seed!r} must be a whole number, e.g. trainer.seed=0")
    if isinstance(t.val_split, bool) or not isinstance(t.val_split, (int, float)) or not 0 <= t.val_split < 1:
        raise CnnrunError(f"trainer.val_split={t.val_split!r} must lie in [0, 1), e.g. 0.2 to hold out 20 %, or 0 for none")
    if t.verbose not in (0, 1, 2):
        raise CnnrunError(f"trainer.verbose={t.verbose!r} must be 0 (quiet), 1 (progress bars) or 2 (a line per epoch)")
    if t.precision not in PRECISIONS:
        raise CnnrunError(f"trainer.precision={t.precision!r} is unknown; expected one of {', '.join(PRECISIONS)}")
    if t.jit not in ("auto", True, False):
        raise CnnrunError(f"trainer.jit={t.jit!r} must be auto, true or false")
    if t.threads != "auto" and (isinstance(t.threads, bool) or not isinstance(t.threads, int) or t.threads < 1):
        raise CnnrunError(f"trainer.threads={t.threads!r} must be auto or a whole number >= 1")
    if t.resume not in ("auto", True, False):
        raise CnnrunError(f"trainer.resume={t.resume!r} must be auto (continue a checkpoint if there is one), true or false")
    if not isinstance(t.get("fresh_process", False), bool):
        raise CnnrunError(f"trainer.fresh_process={t.fresh_process!r} must be true or false")
    if not isinstance(t.checkpoint, bool):
        raise CnnrunError(f"trainer.checkpoint={t.checkpoint!r} must be true or false")
    if isinstance(t.label_smoothing, bool) or not isinstance(t.label_smoothing, (int, float)) \
            or not 0 <= t.label_smoothing < 1:
        raise CnnrunError(f"trainer.label_smoothing={t.label_smoothing!r} must lie in [0, 1), e.g. 0.1")
    if not isinstance(t.get("device_data", False), bool):
        raise CnnrunError(f"trainer.device_data={t.device_data!r} must be true or false")
    spe = t.get("steps_per_execution", 1)
    if isinstance(spe, bool) or not isinstance(spe, int) or spe < 1:
        raise CnnrunError(f"trainer.steps_per_execution={spe!r} must be a whole number >= 1, e.g. 16")
    after = t.get("augment_after", 0)
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise CnnrunError(f"trainer.augment_after={after!r} must be a whole number >= 0 (epochs before augmentation "
                          "starts), e.g. 10")
    if t.tta not in ("none", "flip"):
        raise CnnrunError(f"trainer.tta={t.tta!r} is unknown; expected none or flip")
    o = cfg.optimizer
    if o.name not in ("adam", "sgd"):
        raise CnnrunError(f"optimizer.name={o.name!r} is unknown; expected adam or sgd")
    if o.get("schedule", "constant") not in ("constant", "cosine", "onecycle"):
        raise CnnrunError(f"optimizer.schedule={o.schedule!r} is unknown; expected constant, cosine or onecycle")
    warmup = o.get("warmup", 0.0)
    if isinstance(warmup, bool) or not isinstance(warmup, (int, float)) or not 0 <= warmup < 1:
        raise CnnrunError(f"optimizer.warmup={warmup!r} must be a fraction of the run in [0, 1), e.g. 0.1")
    decay = o.get("weight_decay")
    if decay is not None and (isinstance(decay, bool) or not isinstance(decay, (int, float)) or decay < 0):
        raise CnnrunError(f"optimizer.weight_decay={decay!r} must be null or a number >= 0, e.g. 5.0e-4")
    if isinstance(o.lr, bool) or not isinstance(o.lr, (int, float)) or not o.lr > 0:
        raise CnnrunError(f"optimizer.lr={o.lr!r} must be a positive number, e.g. optimizer.lr=0.001")
    check_model_config(cfg.model)
    augment = build_augment(cfg.augment, 0)  # validates the augment node
    if augment is not None and after >= t.epochs:
        raise CnnrunError(f"trainer.augment_after={after} leaves no augmented epoch in trainer.epochs={t.epochs}; "
                          f"raise trainer.epochs above {after} or lower augment_after")


class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from ~0 to `peak` over `warmup_steps`, then linear decay to 0 at `total_steps`."""

    def __init__(self, peak, total_steps, warmup_steps):
        self.peak, self.total, self.warmup = float(peak), int(total_steps), max(1, int(warmup_steps))

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        up = step / self.warmup
        down = (self.total - step) / max(1, self.total - self.warmup)
        return self.peak * keras.ops.clip(keras.ops.minimum(up, down), 0.0, 1.0)

    def get_config(self):
        return {"peak": self.peak, "total_steps": self.total, "warmup_steps": self.warmup}


def build_optimizer(cfg, total_steps: int = 1) -> keras.optimizers.Optimizer:
    """The optimizer with its learning-rate schedule over `total_steps` gradient steps."""
    schedule = cfg.get("schedule", "constant")
    warmup = int(float(cfg.get("warmup", 0.0)) * total_steps)
    if schedule == "constant":
        lr = cfg.lr
    elif schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else cfg.lr, max(1, total_steps - warmup), warmup_target=cfg.lr if warmup else None,
            warmup_steps=warmup)
    else:  # onecycle
        lr = OneCycle(cfg.lr, total_steps, warmup or int(0.3 * total_steps))
    decay = cfg.get("weight_decay")
    if cfg.name == "adam":
        return keras.optimizers.Adam(lr, beta_1=cfg.beta_1, beta_2=cfg.beta_2, epsilon=cfg.epsilon, weight_decay=decay)
    return keras.optimizers.SGD(lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=decay)


def build_loss(label_smoothing: float, num_classes: int):
    """Cross-entropy on integer labels; with smoothing, on softened one-hot targets."""
    if not label_smoothing:
        return "sparse_categorical_crossentropy"

    def smoothed_crossentropy(y_true, y_pred):
        labels = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), num_classes)
        return keras.losses.categorical_crossentropy(labels, y_pred, label_smoothing=label_smoothing)

    return smoothed_crossentropy


def assemble(cfg_model, data: Dataset, augment, images: ResidentImages | None = None) -> tuple[keras.Model, keras.Model]:
    """(classifier, trainer): they share every weight.

    The classifier (uint8 pixels → scale → network) is what gets saved and predicts. The trainer
    model adds the augmentation between scaling and network, so it runs on the device and only in
    training; with device-resident `images` it takes image indices instead of pixels.
    """
    network = build_model(cfg_model, data.input_shape, data.num_classes)
    scale = keras.layers.Rescaling(1.0 / 255, name="scale")
    pixels = keras.Input(data.input_shape, dtype="uint8", name="pixels")
    classifier = keras.Model(pixels, network(scale(pixels)), name=network.name)
    if augment is None and images is None:
        return classifier, classifier
    inputs = pixels if images is None else keras.Input((), dtype="int32", name="index")
    x = scale(inputs if images is None else images(inputs))
    x = x if augment is None else augment(x)
    return classifier, keras.Model(inputs, network(x), name=f"{network.name}_train")


def feed(x, y, batch_size, order=None) -> tuple:
    """fit()'s data arguments, in `order` if given: arrays as they are (Keras slices them fastest),
    on-disk images as a PyDataset that decodes batches in worker threads."""
    if isinstance(x, np.ndarray):
        return (x, y) if order is None else (x[order], y[order])
    from cnnrun.folder import Batches

    return (Batches(x, y, batch_size, order=order),)


def _one(args: tuple):
    return args if len(args) == 2 else args[0]


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


def _previous_run(run_dir: Path, cfg: DictConfig, config_hash: str) -> tuple[dict | None, dict | None]:
    """(finished metrics, checkpoint) this run directory already holds for this same config, per trainer.resume."""
    t = cfg.trainer
    if t.resume is False:
        return None, None
    try:
        old = json.loads((run_dir / "metrics.json").read_text())
    except (OSError, ValueError):
        old = {}
    if old.get("status") == "ok" and old.get("config_hash") == config_hash and old.get("epochs_planned") == t.epochs:
        return old, None
    checkpoint = resume.load(run_dir)
    if checkpoint is not None and checkpoint["meta"]["config_hash"] != config_hash:
        if t.resume is True:
            raise CnnrunError(
                f"{run_dir / resume.CHECKPOINT} was made with a different config; resume with the run's own config "
                f"(cnnrun resume {run_dir}) or set trainer.resume=false to start over"
            )
        log.warning("%s belongs to a different config; starting over", run_dir / resume.CHECKPOINT)
        checkpoint = None
    if checkpoint is None and t.resume is True:
        raise CnnrunError(f"trainer.resume=true but {run_dir} has no {resume.CHECKPOINT} to continue from; "
                          "drop trainer.resume to start a new run")
    if checkpoint is not None and checkpoint["meta"]["epoch"] > t.epochs:
        raise CnnrunError(f"the checkpoint in {run_dir} is at epoch {checkpoint['meta']['epoch']}, past "
                          f"trainer.epochs={t.epochs}; raise trainer.epochs or set trainer.resume=false")
    return None, checkpoint


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Runs one experiment described by `cfg`, writing every artifact into `run_dir`. Returns metrics."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t = cfg.trainer
    check_config(cfg)
    config_hash = resume.fingerprint(cfg)
    finished, checkpoint = _previous_run(run_dir, cfg, config_hash)
    if finished is not None:
        log.info("%s already holds a finished run of this config; nothing to do (trainer.resume=false reruns it)", run_dir)
        return {**finished, "skipped": True}
    metrics = {
        "status": "running",
        "dataset": cfg.dataset.name,
        "model": cfg.model.name,
        "seed": t.seed,
        "backend": backend.name(),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "reference_accuracy": cfg.get("reference", {}).get("accuracy"),
        "config_hash": config_hash,
        "epochs_planned": t.epochs,
    }
    artifacts.write_json(run_dir / "metrics.json", metrics)  # a run that dies early never looks finished

    # Seed everything, then fix the numeric policy: both must precede any layer creation.
    keras.backend.clear_session()  # a sweep's jobs share one process: start each from a clean slate
    backend.configure(t.threads, t.deterministic)
    keras.utils.set_random_seed(t.seed)
    keras.config.set_dtype_policy(t.precision)
    try:
        log.info("data: %s", cfg.dataset.name)
        data = load_dataset(cfg.dataset, seed=t.seed, val_split=t.val_split)
        log.info(
            "data: %d train / %d validation / %d test images %s from %s",
            len(data.x_train), len(data.x_val), len(data.x_test), data.input_shape, data.source,
        )
        for note in data.notes:
            log.warning(note)
        if len(data.x_train) < t.batch_size:
            log.warning("only %d training images, fewer than trainer.batch_size=%d: every epoch is one step; "
                        "lower trainer.batch_size for more updates", len(data.x_train), t.batch_size)

        # trainer.augment_after > 0: plain images first, then augmented ones (article 000's schedule).
        augment_after = t.get("augment_after", 0)
        augment = build_augment(cfg.augment, seed=t.seed, gated=augment_after > 0)
        if augment is None and augment_after:
            log.warning("trainer.augment_after=%d has no effect: this run has no augmentation", augment_after)
        if augment is not None:
            sample = np.asarray(data.x_train[:8])
            artifacts.plot_augment_preview(run_dir / "augment_preview.png", sample, preview(augment, sample))

        # With trainer.device_data the pixels go to the device once; fit() then feeds indices and labels.
        images = resident_layer(data.x_train, data.x_val) if t.get("device_data", False) else None
        classifier, trainer = assemble(cfg.model, data, augment, images)
        steps = -(-len(data.x_train) // t.batch_size)
        trainer.compile(
            optimizer=build_optimizer(cfg.optimizer, total_steps=steps * t.epochs),
            loss=build_loss(t.label_smoothing, data.num_classes),  # cross-entropy on integer labels
            metrics=["accuracy"],
            jit_compile=t.jit,
            steps_per_execution=t.get("steps_per_execution", 1),  # >1: several steps per call, less Python per step
        )
        summary = []
        classifier.summary(print_fn=lambda line, *a, **k: summary.append(line), expand_nested=True)
        artifacts.write_text(run_dir / "summary.txt", "\n".join(summary) + "\n")
        metrics.update(params=int(classifier.count_params()), device=backend.device(), jit=bool(trainer.jit_compile))
        log.info("model: %s, %s parameters, jit_compile=%s", cfg.model.name, f"{metrics['params']:,}", trainer.jit_compile)

        # Fit, one epoch per fit() call. Each epoch's shuffle comes from (seed, epoch) and a checkpoint
        # after each epoch holds weights, optimizer and RNG state, so an interrupted run resumes exactly.
        epoch_log = EpochLog()
        first_epoch, prior_seconds = 0, 0.0
        if checkpoint is not None:
            resume.restore(trainer, checkpoint)
            first_epoch, prior_seconds = checkpoint["meta"]["epoch"], checkpoint["meta"].get("train_seconds", 0.0)
            epoch_log.rows = list(checkpoint["meta"]["history"])
            metrics["resumed_from_epoch"] = first_epoch
            log.info("resuming %s after epoch %d of %d", run_dir, first_epoch, t.epochs)
        has_val = len(data.x_val) > 0
        progress = RichProgress(t.epochs, steps, t.verbose)
        batch_size = t.batch_size if isinstance(data.x_train, np.ndarray) else None
        validation = _one(feed(data.x_val, data.y_val, t.eval_batch_size)) if has_val else None
        if images is not None and has_val:
            validation = validation_feed(data.y_val, offset=len(data.x_train))
        start = time.perf_counter()
        with resume.StopOnSignal(trainer, say=log.warning) as stop:
            try:
                for epoch in range(first_epoch, t.epochs):
                    if stop.signum is not None:
                        break
                    order = resume.epoch_order(len(data.x_train), t.seed, epoch)
                    trainer.fit(
                        *(feed(data.x_train, data.y_train, t.batch_size, order) if images is None
                          else train_feed(data.y_train, order)),
                        batch_size=batch_size,
                        initial_epoch=epoch,
                        epochs=epoch + 1,
                        validation_data=validation,
                        validation_batch_size=t.eval_batch_size if isinstance(data.x_val, np.ndarray) else None,
                        shuffle=False,  # already in this epoch's order
                        verbose=0,
                        callbacks=[epoch_log, progress] + ([AugmentFrom(augment, augment_after)]
                                                           if augment is not None and augment.gated else []),
                    )
                    if stop.signum is not None:
                        del epoch_log.rows[epoch:]  # the epoch it broke off is not a result
                        break
                    if epoch_log.nan_epoch is not None:
                        break
                    if t.checkpoint and epoch + 1 < t.epochs:
                        seconds = prior_seconds + time.perf_counter() - start
                        resume.save(run_dir, trainer, epoch + 1, epoch_log.rows, config_hash, seconds)
            finally:
                progress.close()
        fit_seconds = time.perf_counter() - start
        history = epoch_log.rows
        new_epochs = len(history) - first_epoch
        metrics.update(
            epochs=len(history),
            train_seconds=round(prior_seconds + fit_seconds, 3),
            images_per_second=round(len(data.x_train) * new_epochs / fit_seconds, 1) if new_epochs > 0 else 0.0,
            train_images=len(data.x_train),
            val_images=len(data.x_val),
            test_images=len(data.x_test),
            final_train_accuracy=history[-1].get("accuracy") if history else None,
        )
        if has_val and history:
            val = [row["val_accuracy"] for row in history]
            metrics.update(best_val_accuracy=max(val), best_epoch=int(np.argmax(val)) + 1, last_val_accuracy=val[-1])
        else:
            metrics.update(best_val_accuracy=None, best_epoch=None, last_val_accuracy=None)
        artifacts.write_history(run_dir / "history.csv", history)
        if history:
            artifacts.plot_curves(run_dir / "curves.png", history, f"{cfg.dataset.name} · {cfg.model.name}")
        if stop.signum is not None:
            name = signal.Signals(stop.signum).name
            metrics.update(status="interrupted", exit_code=stop.exit_code,
                           error=f"{name} after {len(history)} of {t.epochs} epochs; continue with: cnnrun resume {run_dir}")
            return metrics

        # Evaluate on the test set, once, with the classifier (no augmentation).
        probs = predict(classifier, data.x_test, t.eval_batch_size)
        if t.tta == "flip":  # average with the mirror image: what the model sees either way round
            if not isinstance(data.x_test, np.ndarray):
                raise CnnrunError("trainer.tta=flip needs the test images in memory; set dataset.cache=true or tta=none")
            probs = (probs + predict(classifier, data.x_test[:, :, ::-1], t.eval_batch_size)) / 2
        y_pred = probs.argmax(axis=1)
        y_true = data.y_test
        p_true = np.clip(probs[np.arange(len(y_true)), y_true], 1e-7, 1.0)
        metrics.update(test_accuracy=float(np.mean(y_pred == y_true)), test_loss=float(-np.mean(np.log(p_true))))

        # Artifacts.
        out = cfg.output
        names = data.class_names
        report = artifacts.write_classification_report(run_dir, y_true, y_pred, names)
        artifacts.write_confusion(run_dir, artifacts.confusion_matrix(y_true, y_pred, len(names)), names)
        wrong = artifacts.write_misclassified(
            run_dir, data.x_test, y_true, y_pred, probs, names, out.misclassified_max, data.test_files
        )
        artifacts.plot_predictions(run_dir / "predictions.png", data.x_test, y_true, y_pred, names, out.predictions_grid)
        if out.save_model:
            artifacts.atomic_write(run_dir / "model.keras", classifier.save)
        weakest = min(names, key=lambda n: report[n]["f1-score"])
        metrics.update(misclassified=len(wrong), weakest_class=weakest, class_names=names)
        if epoch_log.nan_epoch is not None:
            metrics.update(status="nan", error=f"loss became NaN or inf in epoch {epoch_log.nan_epoch}; lower optimizer.lr")
        else:
            metrics["status"] = "ok"
            (run_dir / resume.CHECKPOINT).unlink(missing_ok=True)  # model.keras is the result; the checkpoint is spent
    finally:
        keras.config.set_dtype_policy("float32")  # the next job in this process starts from the default
        metrics["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        if metrics["status"] != "running":
            artifacts.write_json(run_dir / "metrics.json", metrics)
    return metrics
