"""Optimizers, learning-rate schedules and the loss, as the `optimizer` and `trainer` groups describe them."""

from __future__ import annotations

import keras
import numpy as np

from cnnrun.config import plugins, schema


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


def build_optimizer(cfg, total_steps: int = 1, ema: float | None = None) -> keras.optimizers.Optimizer:
    """The optimizer with its learning-rate schedule over `total_steps` gradient steps; with `ema`, it also
    keeps an exponential moving average of the weights (see average_weights)."""
    optimizer = _optimizer(cfg, total_steps, ema)
    if ema:
        # Keras swaps the average into the model at the end of every fit(); cnnrun calls fit() once per epoch,
        # so that would restart training from the average each epoch. The swap is done once, by average_weights.
        optimizer.finalize_variable_values = lambda var_list: None
    return optimizer


def average_weights(model: keras.Model) -> bool:
    """Puts the optimizer's moving average of the weights into `model` (trainer.ema); False when there is none."""
    optimizer = model.optimizer
    if not getattr(optimizer, "use_ema", False):
        return False
    type(optimizer).finalize_variable_values(optimizer, model.trainable_weights)
    return True


def _optimizer(cfg, total_steps: int, ema: float | None) -> keras.optimizers.Optimizer:
    """The Keras optimizer class the option names (schema.OPTIONS), given the schedule and the option's own keys."""
    warmup = int(float(cfg.warmup) * total_steps)
    if cfg.schedule == "constant":
        lr = cfg.lr
    elif cfg.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else cfg.lr, max(1, total_steps - warmup), warmup_target=cfg.lr if warmup else None,
            warmup_steps=warmup)
    else:  # onecycle
        lr = OneCycle(cfg.lr, total_steps, warmup or int(0.3 * total_steps))
    option = schema.option("optimizer", cfg)
    shared = schema.Optimizer.__dataclass_fields__
    own = {k: v for k, v in cfg.items() if k in option.schema.__dataclass_fields__ and k not in shared}
    average = {"use_ema": bool(ema), "ema_momentum": float(ema or 0.99)}  # updated inside the compiled step
    return plugins.locate(option.target, "optimizer.name")(lr, weight_decay=cfg.weight_decay, **own, **average)


def build_loss(label_smoothing: float, num_classes: int, mixed: bool = False, logits: bool = False):
    """Cross-entropy on integer labels; with smoothing, on softened one-hot targets. `mixed` (mixup / cutmix):
    the model outputs [predictions | mixed targets] and the loss reads its targets from there. `logits`: the
    network ends in logits, not probabilities (Keras' from_logits: softmax and log in one stable step)."""
    if mixed:
        def mixed_crossentropy(y_true, y_pred):
            probs, targets = y_pred[:, :num_classes], y_pred[:, num_classes:]
            return keras.losses.categorical_crossentropy(targets, probs, label_smoothing=label_smoothing,
                                                         from_logits=logits)

        return mixed_crossentropy
    if not label_smoothing:
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True) if logits else \
            "sparse_categorical_crossentropy"

    def smoothed_crossentropy(y_true, y_pred):
        labels = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), num_classes)
        return keras.losses.categorical_crossentropy(labels, y_pred, label_smoothing=label_smoothing,
                                                     from_logits=logits)

    return smoothed_crossentropy


def accuracy(num_classes: int, mixed: bool = False):
    """The `accuracy` metric; with mixed targets, of the predictions against the batch's own labels."""
    if not mixed:
        return "accuracy"

    def mixed_accuracy(y_true, y_pred):
        return keras.metrics.sparse_categorical_accuracy(y_true, y_pred[:, :num_classes])

    return keras.metrics.MeanMetricWrapper(mixed_accuracy, name="accuracy")


def build_before_tracing(model: keras.Model) -> None:
    """Builds, on a one-image batch of symbolic tensors, what a compiled model's first training step would build:
    the optimizer's slots and the compiled metrics' and loss's state.

    On TensorFlow (with no distribution strategy) Keras leaves that to the first trace of the train step, and a
    tf.function whose first trace creates variables is traced a second time: half of the first fit()'s seconds
    (bench/first_fit.py: mnist_cnn 0.80 -> 0.47 s, MobileNetV3Small 11.4 -> 6.0 s). JAX's fit() builds this way itself
    before tracing; here it comes first on every backend. Keras' own step (`Trainer._symbolic_build`, what its JAX
    and PyTorch fit() call); without it (another Keras) the first step builds, as before."""
    build = getattr(model, "_symbolic_build", None)
    if build is None:
        return
    x = [np.zeros((1, *tensor.shape[1:]), tensor.dtype) for tensor in model.inputs]
    build(data_batch=(x[0] if len(x) == 1 else x, np.zeros((1,), "int32"), None))  # y: the labels, as fit() gets them
