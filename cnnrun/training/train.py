"""One experiment, top to bottom: check → seed → data → augment → model → fit → evaluate → artifacts."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import keras
import numpy as np
from omegaconf import DictConfig, OmegaConf

from cnnrun import backend, hooks, record, signals
from cnnrun.config import checks, schema
from cnnrun.console import quiet_backend
from cnnrun.data import Dataset, load_dataset
from cnnrun.data.augment import build_augment, build_mix, preview
from cnnrun.data.memory import check_model_fits
from cnnrun.data.resident import ResidentImages, resident_layer
from cnnrun.models import build_model, ends_in_logits
from cnnrun.record import artifacts
from cnnrun.record import layout as files
from cnnrun.training import distribute, loop, resume
from cnnrun.training.optim import accuracy, build_before_tracing, build_loss, build_optimizer

log = logging.getLogger("cnnrun")


def assemble(cfg_model, data: Dataset, augment, images: ResidentImages | None = None,
             mix=None) -> tuple[keras.Model, keras.Model]:
    """(classifier, trainer): they share every weight.

    The classifier (uint8 pixels → scale → network) is what gets saved and predicts. The trainer
    model adds the augmentation between scaling and network, so it runs on the device and only in
    training; with device-resident `images` it takes image indices instead of pixels. With `mix`
    (mixup / cutmix) it takes the labels too and outputs [predictions | mixed targets] for the loss. A network
    that ends in logits gets a softmax in the classifier only.
    """
    network = build_model(cfg_model, data.input_shape, data.num_classes)
    scale = keras.layers.Rescaling(1.0 / 255, name="scale")
    pixels = keras.Input(data.input_shape, dtype="uint8", name="pixels")
    outputs = network(scale(pixels))
    logits = ends_in_logits(network, data.input_shape)
    if logits:  # the saved classifier still gives probabilities; the trainer trains on the logits (from_logits)
        classifier = keras.Model(pixels, keras.layers.Softmax(name="probabilities", dtype="float32")(outputs),
                                 name=network.name)
    else:
        classifier = keras.Model(pixels, outputs, name=network.name)
    if augment is None and images is None and mix is None:
        return classifier, classifier if not logits else keras.Model(pixels, outputs, name=f"{network.name}_train")
    inputs = pixels if images is None else keras.Input((), dtype="int32", name="index")
    x = scale(inputs if images is None else images(inputs))
    x = x if augment is None else augment(x)
    if mix is None:
        return classifier, keras.Model(inputs, network(x), name=f"{network.name}_train")
    labels = keras.Input((), dtype="int32", name="labels")
    x, targets = mix([x, labels])
    outputs = keras.layers.Concatenate(name="with_targets", dtype="float32")([network(x), targets])
    return classifier, keras.Model([inputs, labels], outputs, name=f"{network.name}_train")


def read_data(cfg, run, placement) -> Dataset:
    """The run's data, said in the log (what it holds, where it came from, its notes as warnings)."""
    t = cfg.trainer
    data = load_dataset(cfg.dataset, seed=t.seed, val_split=t.val_split, batch_size=t.batch_size)
    log.info("data: %d train / %d validation / %d test images, %s", len(data.x_train), len(data.x_val),
             len(data.x_test), "x".join(map(str, data.input_shape)))
    log.info("data from: %s", data.source)  # a line of its own: a long path is the only long line
    for note in data.notes:
        log.warning(note)
    placement.recorded(run)  # several devices: how the batch is split, in metrics.json
    return data


def make_models(cfg, run, data: Dataset, augment, images, mix, placement):
    """(classifier, trainer, compile_trainer): the two models (assemble), checked to fit in memory and compiled;
    compile_trainer(optimizer) compiles the trainer again (a backbone's second stage)."""
    t = cfg.trainer
    classifier, trainer = assemble(cfg.model, data, augment, images, mix)
    check_model_fits(classifier.count_params(), cfg.optimizer.name, run.metrics["model"])  # before any step
    logits = classifier.layers[-1].name == "probabilities"  # the network's own outputs are logits

    steps = placement.steps(len(data.x_train))
    per_call = loop.steps_per_call(t.steps_per_execution, steps)

    def compile_trainer(optimizer) -> None:
        trainer.compile(
            optimizer=optimizer,
            loss=build_loss(t.label_smoothing, data.num_classes, mixed=mix is not None, logits=logits),
            metrics=[accuracy(data.num_classes, mixed=mix is not None)], jit_compile=t.jit,
            steps_per_execution=per_call,  # >1: several steps per call, less Python per step, the same numbers
        )
        build_before_tracing(trainer)  # the optimizer's and metrics' variables now: the first step is traced once

    compile_trainer(build_optimizer(cfg.optimizer, total_steps=steps * t.epochs, ema=t.ema))
    artifacts.write_summary(run.dir / files.SUMMARY, classifier)
    run.update(params=int(classifier.count_params()), device=backend.device(), jit=bool(trainer.jit_compile),
               steps_per_execution=per_call)
    log.info("model: %s, %s parameters, jit_compile=%s, %d step%s per call", run.metrics["model"],
             f"{run.metrics['params']:,}", trainer.jit_compile, per_call, "s" if per_call > 1 else "")
    return classifier, trainer, compile_trainer


def evaluate(cfg, run, data: Dataset, classifier, trainer, fitted) -> np.ndarray:
    """The test set's class probabilities, once, with the weights to evaluate; then the reports, plots and the model.
    A model that learned nothing usable is said so, never a quiet "ok"."""
    t = cfg.trainer
    run.update(evaluated_weights=loop.finish(trainer, fitted))  # the best epoch's, the average, or the last
    run.update(precise_bn=loop.precise_batch_norm(classifier, data, t, loop.steps_done(trainer)))
    log.info("evaluating %d test images%s", len(data.x_test), " and their mirror images" if t.tta == "flip" else "")
    probs = loop.evaluate(classifier, data, t)
    what = ["the reports"] + ["plots"] * cfg.output.plots + ["the model"] * cfg.output.save_model
    log.info("writing %s", " and ".join([", ".join(what[:-1]), what[-1]] if len(what) > 1 else what))
    run.update(**artifacts.write_evaluation(run.dir, data, probs, cfg.output, classifier))
    warning = artifacts.near_chance(run.metrics["test_accuracy"], run.metrics["final_train_accuracy"], data.y_test)
    if warning:
        log.warning(warning)
        run.update(warning=warning)
    return probs


def unfreezing(cfg, trainer: keras.Model, compile_trainer):
    """model.unfreeze_after (a backbone fine-tuned in two stages, as Keras' transfer-learning guide does): the epoch,
    and what makes the second stage: every layer of the backbone trains too, with the run's optimizer at a constant
    model.unfreeze_lr; else None."""
    after = cfg.model.get("unfreeze_after")
    if not after:
        return None

    def second_stage() -> None:
        for network in (layer for layer in trainer.layers if isinstance(layer, keras.Model)):
            for base in (layer for layer in network.layers if isinstance(layer, keras.Model)):
                base.trainable = True  # the backbone, whole; its input adapter (a fixed layer) stays as it is
        slow = OmegaConf.merge(cfg.optimizer, {"lr": float(cfg.model.unfreeze_lr), "schedule": "constant", "warmup": 0.0})
        compile_trainer(build_optimizer(slow, ema=cfg.trainer.ema))
        log.info("epoch %d on: the whole backbone trains, at lr %g", int(after) + 1, cfg.model.unfreeze_lr)

    return int(after), second_stage


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Runs one experiment described by `cfg`, writing every artifact into `run_dir`. Returns metrics."""
    cfg = checks.validate(cfg)  # types, ranges, rules between keys, refused before anything is touched; defaults filled
    t, run_dir = cfg.trainer, Path(run_dir)
    record.refuse_inside_data(run_dir, cfg)  # a run directory inside the image folder would become a class
    placement = distribute.plan(cfg.distribute, t.batch_size)  # one device, or several (distribute=data_parallel)
    attached = placement.hooks(cfg)  # trackers, probes, explain, the smoke check, yours: where the record is written
    # From here the run names its directories: run.dir, where this process writes; run.home, the run's own (the same
    # but on a process other than 0 of a distributed run), read for a checkpoint and named in messages.
    with placement.run(run_dir, cfg, attached) as run:  # the lock; an earlier run skipped, continued or set aside
        if run.action == "skip":
            log.info("%s already holds a finished run of this config; nothing to do (trainer.resume=false reruns it)",
                     run.home)
            return {**run.earlier, "skipped": True}
        run.start(**{g: schema.display_name(g, cfg[g]) for g in ("dataset", "model")}, backend=backend.name())

        # Seed everything, then fix the numeric policy: both must precede any layer creation.
        keras.backend.clear_session()  # a sweep's jobs share one process: start each from a clean slate
        signals.check()  # a Ctrl-C that landed in the backend's gc callback above was swallowed there
        backend.configure(t.threads, t.deterministic)
        placement.apply()  # several devices: every variable is replicated on each, so before any layer
        keras.utils.set_random_seed(t.seed)
        keras.config.set_dtype_policy(str(t.precision))
        try:
            data = read_data(cfg, run, placement)

            # trainer.augment_after > 0: plain images first, then augmented ones (article 000's schedule).
            augment = build_augment(cfg.augment, seed=t.seed, gated=t.augment_after > 0)
            mix = build_mix(cfg.augment, data.num_classes, seed=t.seed)  # mixup / cutmix: labels mixed in the step
            if augment is not None and cfg.output.plots:
                sample = np.asarray(data.x_train[:8])
                with quiet_backend():  # the first integer op may print oneDNN's "DT_INT64 ... AVX-512" line
                    artifacts.plot_augment_preview(run.dir / files.AUGMENT_PREVIEW, sample, preview(augment, sample))

            # With trainer.device_data the pixels go to the device once; fit() then feeds indices and labels.
            images = resident_layer(data.x_train, data.x_val) if t.device_data else None
            classifier, trainer, compile_trainer = make_models(cfg, run, data, augment, images, mix, placement)

            # Fit, an epoch per fit() call, a checkpoint after each (loop.py): a stopped run resumes exactly.
            checkpoint = resume.load(run.home) if run.action == "continue" else None
            if checkpoint is not None:
                run.update(resumed_from_epoch=checkpoint["meta"]["epoch"])
                log.info("resuming %s after epoch %d of %d", run.home, checkpoint["meta"]["epoch"], t.epochs)
            run.begin_work()  # data and model are in place: what fails from here is a failed run, not a refusal
            with placement.together(run):  # a lost process: a failed run to resume, said so
                fitted = loop.fit(trainer, data, t, placement.checkpoints(run), run.fingerprint, augment,
                                  images, checkpoint, on_epoch=run.epoch, placement=placement,
                                  unfreeze=unfreezing(cfg, trainer, compile_trainer),
                                  extend=lambda callbacks: attached.callbacks(run, data, callbacks),
                                  stop_when=lambda rows: attached.stop(run, rows))
            run.stage = "evaluation"  # a signal from here on stops the evaluation; resume evaluates, trains nothing
            placement.end(trainer, classifier)  # several devices: the weights onto one, for what follows
            ended = placement.trained(run, fitted)  # a process other than 0 ends here: process 0 evaluates, writes
            if ended is not None:
                return ended
            run.update(**loop.history_metrics(fitted, data))
            artifacts.write_history(run.dir / files.HISTORY, fitted.history)
            if fitted.history and cfg.output.plots:
                artifacts.plot_curves(run.dir / files.CURVES, fitted.history, f"{run.metrics['dataset']} · {run.metrics['model']}")
            if fitted.signum is not None:
                return run.end("interrupted", exit_code=fitted.exit_code, error=(
                    f"{signal.Signals(fitted.signum).name} after {len(fitted.history)} of {t.epochs} epochs; "
                    f"continue with: cnnrun resume {run.home}"))

            status = attached.fitted(run, fitted)  # debug=overfit / profile judge here; a status ends the run
            if status is not None:
                return run.end(status)

            probs = evaluate(cfg, run, data, classifier, trainer, fitted)  # once; then the reports, plots, model
            status = attached.evaluated(run, hooks.Evaluation(classifier, data, probs, augmented=augment is not None))
            if status is not None:  # output.explain has run; debug=smoke checked every file
                return run.end(status)
            if fitted.nan_epoch is not None:
                return run.end("nan", error=f"loss became NaN or inf in epoch {fitted.nan_epoch}; lower optimizer.lr")
            (run.dir / resume.CHECKPOINT).unlink(missing_ok=True)  # model.keras is the result; the checkpoint is spent
            return run.end("ok")
        finally:
            keras.config.set_dtype_policy("float32")  # the next job in this process starts from the default
            backend.no_distribution()  # and on one device
