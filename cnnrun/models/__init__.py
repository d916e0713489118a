"""Model builders: the articles' layer stacks as small functional Keras 3 builders.

Each builder takes images already scaled to [0, 1] (shape `input_shape`) and returns a `keras.Model`
ending in a softmax over `num_classes`. Variants are arguments, not copies. The softmax layer is
float32 even under mixed precision, so losses stay stable.
"""

from __future__ import annotations

import logging
from enum import Enum

import keras
from keras import layers

from cnnrun import CnnrunError
from cnnrun.backend import BatchNorm
from cnnrun.config import plugins, schema
from cnnrun.models.blocks import classifier_head

log = logging.getLogger("cnnrun")


def _conv(x, filters, name, **kwargs):
    return layers.Conv2D(filters, 3, activation="relu", name=name, **kwargs)(x)


def dropout_rates(dropout, conv=0.25, head=0.5) -> tuple[float, float]:
    """(after-convolution, head) dropout rates. True = the articles' 0.25 / 0.5, False = none,
    a number r in [0, 1) = r in the head and r / 2 after the convolutions (the articles' ratio)."""
    if dropout is True:
        return conv, head
    if dropout is False or dropout is None:
        return 0.0, 0.0
    return dropout / 2, float(dropout)  # its range is the schema's rule (schema.DROPOUT), checked with the config


def _drop(x, rate, name):
    return layers.Dropout(rate, name=name)(x) if rate > 0 else x


def dense(input_shape, num_classes, *, name, units):
    """Flatten -> Dense(units) -> softmax (TensorFlow's basic classification tutorial; article 003: 64 units)."""
    inputs = keras.Input(input_shape, name="image")
    x = layers.Flatten(name="flatten")(inputs)
    x = layers.Dense(units, activation="relu", name="fc1")(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name=name)


def mnist_cnn(input_shape, num_classes, *, name, dropout):
    """Keras' mnist_cnn example: Conv 32 -> Conv 64 -> MaxPool -> Dropout .25 -> Dense 128 -> Dropout .5."""
    return cnn3(input_shape, num_classes, name=name, pad=0, extra_conv=False, dropout=dropout, extra_dense=False,
                third_conv=False)


def cnn3(input_shape, num_classes, *, name, pad, extra_conv, dropout, extra_dense, third_conv=True):
    """Article 001's three-convolution net (Conv 32 -> 64 -> 128 -> MaxPool -> Dense 128) and its variants.

    Args:
        name: the keras.Model's name (the option's: cnn3, or mnist_cnn, which is cnn3 without its third convolution).
        pad: pixels of ZeroPadding2D before the first convolution (2 = the "padded 3-conv").
        extra_conv: add a fourth convolution with 256 filters.
        dropout: True keeps Dropout(0.25) after pooling and Dropout(0.5) before the classifier;
            False drops both; a rate r puts r before the classifier and r / 2 after pooling.
        extra_dense: add a second Dense 128 layer.
        third_conv: the 128-filter convolution; False gives Keras' mnist_cnn.
    """
    inputs = keras.Input(input_shape, name="image")
    x = layers.ZeroPadding2D(int(pad), name="pad")(inputs) if pad else inputs
    x = _conv(x, 32, "conv1")
    x = _conv(x, 64, "conv2")
    if third_conv:
        x = _conv(x, 128, "conv3")
    if extra_conv:
        x = _conv(x, 256, "conv4")
    conv_rate, head_rate = dropout_rates(dropout)
    x = layers.MaxPooling2D(2, name="pool")(x)
    x = _drop(x, conv_rate, "drop_conv")
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="fc1")(x)
    if extra_dense:
        x = layers.Dense(128, activation="relu", name="fc2")(x)
    x = _drop(x, head_rate, "drop_fc")
    return keras.Model(inputs, classifier_head(x, num_classes), name=name)


def cnn4(input_shape, num_classes, *, name, dropout):
    """Article 000's four-convolution net with BatchNorm after every layer and a Dense 512 -> 128 head.

    `dropout` as in cnn3: True = 0.25 after the convolution blocks and 0.5 in the head.
    """
    conv_rate, head_rate = dropout_rates(dropout)

    def drop(x, rate, name):
        return _drop(x, conv_rate if rate < 0.5 else head_rate, name)

    inputs = keras.Input(input_shape, name="image")
    x = _conv(inputs, 32, "conv1")
    x = BatchNorm(name="bn1")(x)
    x = _conv(x, 32, "conv2")
    x = BatchNorm(name="bn2")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = drop(x, 0.25, "drop1")
    x = _conv(x, 64, "conv3")
    x = BatchNorm(name="bn3")(x)
    x = drop(x, 0.25, "drop2")
    x = _conv(x, 128, "conv4")
    x = BatchNorm(name="bn4")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = drop(x, 0.25, "drop3")
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(512, activation="relu", name="fc1")(x)
    x = BatchNorm(name="bn5")(x)
    x = drop(x, 0.5, "drop4")
    x = layers.Dense(128, activation="relu", name="fc2")(x)
    x = BatchNorm(name="bn6")(x)
    x = drop(x, 0.5, "drop5")
    return keras.Model(inputs, classifier_head(x, num_classes), name=name)


def tf_cnn(input_shape, num_classes, *, name):
    """TensorFlow's CNN tutorial (article 003): Conv 32 -> pool -> Conv 64 -> pool -> Conv 64 -> Dense 64."""
    inputs = keras.Input(input_shape, name="image")
    x = _conv(inputs, 32, "conv1")
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = _conv(x, 64, "conv2")
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = _conv(x, 64, "conv3")
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(64, activation="relu", name="fc1")(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name=name)


def build_model(cfg, input_shape, num_classes) -> keras.Model:
    """Builds the model cfg names: a built-in's builder (schema.OPTIONS) with the rest of cfg as keyword
    arguments, found as a user's own `_target_` is; a config with a `_target_` is the user's own (build_custom).
    A builder's arguments have no defaults: the schema's are the only ones (a test holds it)."""
    if cfg.get("_target_") is not None:
        return build_custom(cfg, tuple(input_shape), int(num_classes))
    builder = plugins.locate(schema.option("model", cfg).target, "model.name")
    keys = {k: (str(v) if isinstance(v, Enum) else v) for k, v in cfg.items()}  # name: the option's, or a backbone's network
    return builder(tuple(input_shape), int(num_classes), **keys)


TARGET_KEY = "model._target_"


def build_custom(cfg, input_shape: tuple, num_classes: int) -> keras.Model:
    """The user's own network: `cfg._target_` called with the run's input_shape and num_classes and the config's
    other keys, then checked as cnnrun's own builders are made: a keras.Model that takes `input_shape` images
    in [0, 1] and returns one value per class (probabilities, or logits: the loss is told), saved and loaded again;
    refused in one line otherwise. A model that scales its pixels itself is named in a warning."""
    import numpy as np

    target = cfg._target_  # importable, callable, taking these arguments: checked with the config (schema.py)
    takes = plugins.accepts(target, TARGET_KEY)
    classes = "classes" if takes is not None and "num_classes" not in takes else "num_classes"
    model = plugins.call(target, TARGET_KEY, "building the model", input_shape=input_shape,
                         **{classes: num_classes}, **plugins.arguments(cfg, ("name", "_target_")))
    if not isinstance(model, keras.Model):
        raise CnnrunError(f"{TARGET_KEY}={target} returned {type(model).__name__}, not a keras.Model; return "
                          "keras.Model(inputs, outputs) (or a keras.Sequential)")
    shown = lambda shape: "(" + ", ".join("batch" if d is None else str(d) for d in shape) + ")"  # noqa: E731
    try:
        outputs = model(np.zeros((2, *input_shape), "float32"), training=False)
    except Exception as e:  # noqa: BLE001 - the user's layers: the first error tells what does not fit
        raise CnnrunError(f"{TARGET_KEY}={target} cannot take this data's images {shown((None, *input_shape))}: "
                          f"{plugins.why(e)}; build the model on the input_shape argument it is given") from None
    if isinstance(outputs, (list, tuple, dict)):
        raise CnnrunError(f"{TARGET_KEY}={target} has {len(outputs)} outputs; a classifier returns one, of shape "
                          f"(batch, {num_classes})")
    probs = keras.ops.convert_to_numpy(outputs).astype("float64")
    if probs.shape != (2, num_classes):
        raise CnnrunError(f"{TARGET_KEY}={target} outputs shape {shown((None, *probs.shape[1:]))} but this data has "
                          f"{num_classes} classes; end the model with keras.layers.Dense(num_classes, "
                          "activation='softmax')")
    if not np.all(np.isfinite(probs)):
        raise CnnrunError(f"{TARGET_KEY}={target} outputs NaN or inf on blank images; check its layers")
    check_saveable(model, f"{TARGET_KEY}={target}")
    scaling = rescales(model)
    if scaling:  # the newcomer's keras.applications model through model=custom: its pixels scaled twice
        log.warning("%s=%s scales its input itself (%s), but cnnrun gives every network images already scaled to "
                    "[0, 1]: it sees them scaled twice. Drop that layer, or fine-tune a keras.applications network "
                    "with model=backbone model.name=..., which feeds it its own input", TARGET_KEY, target, scaling)
    return model


def rescales(model: keras.Model, depth: int = 4) -> str | None:
    """The first of a model's leading layers (nested models' too) that scales pixels (Rescaling, Normalization),
    said as `layer name (Class)`; None when none does."""
    seen = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, (keras.layers.Rescaling, keras.layers.Normalization)):
            return f"{layer.name} ({type(layer).__name__})"
        if isinstance(layer, keras.Model):
            found = rescales(layer, depth - seen)
            if found:
                return found
        seen += 1
        if seen >= depth:
            return None
    return None


def ends_in_logits(network: keras.Model, input_shape) -> bool:
    """Whether a network's outputs are logits rather than class probabilities: a row of probabilities is never
    negative and sums to 1 (cnnrun's networks end in a softmax; a user's, a backbone's with model.logits=true,
    or a PyTorch-minded one may not)."""
    import numpy as np

    x = np.random.default_rng(0).uniform(0, 1, (2, *input_shape)).astype("float32")
    out = keras.ops.convert_to_numpy(network(x, training=False)).astype("float64")
    return not (np.all(out >= -1e-6) and np.allclose(out.sum(axis=1), 1.0, atol=1e-3))


def check_saveable(model: keras.Model, what: str) -> None:
    """Refuses, before any training, a model that Keras could not save into model.keras and load back in its safe
    mode (the way predict, export and explain load it): a Lambda layer, a subclassed Model without get_config, a
    layer class that is not registered. Its config is written and read again; no weights, so it takes little."""
    try:
        config = keras.saving.serialize_keras_object(model)
        keras.saving.deserialize_keras_object(config, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - each of Keras' savers fails its own way; the first line tells which
        text = plugins.why(e)
        hint = ("a Lambda layer runs code when loaded, which cnnrun refuses: write it as a layer class with "
                "@keras.saving.register_keras_serializable()" if "lambda" in text.lower() or "safe_mode" in text else
                "give each layer or model class of your own get_config() (and from_config when its __init__ takes "
                "objects), registered with @keras.saving.register_keras_serializable(), or build the model with "
                "keras.Model(inputs, outputs)")
        raise CnnrunError(f"{what} builds a model that Keras cannot save and load again ({text[:200]}), so its "
                          f"model.keras would be lost after training; {hint}") from None


def check_user_code(cfg) -> None:
    """Before the run directory exists (the command line's pre-flight): the user's own loader is called and what it
    returns checked (the run then takes that result), and the user's own model is built on the data's images and
    checked, its save and load included. One line for the first problem; nothing for a config naming no code."""
    from cnnrun.data import input_of, preload

    own_model, own_data = cfg.model.get("_target_") is not None, cfg.dataset.get("_target_") is not None
    if not own_model and not own_data:
        return
    t = cfg.trainer
    if own_data:
        data = preload(cfg.dataset, seed=t.seed, val_split=t.val_split, batch_size=t.batch_size)
        shape = (data.input_shape, data.num_classes)
    else:
        shape = input_of(cfg.dataset)
    if own_model and shape is not None:
        keras.utils.set_random_seed(t.seed)
        build_custom(cfg.model, *shape)
        keras.backend.clear_session()


def portable(model: keras.Model) -> keras.Model:
    """A copy of `model` built from Keras' own layers only, sharing no state with it: what model.keras
    holds, so that `keras.models.load_model` reads it in any Python with Keras, without cnnrun. cnnrun's
    fused-kernel BatchNorm (training speed on TensorFlow) becomes Keras' BatchNormalization, which
    computes the same inference, and its fused-update Adam or SGD in the compile config Keras' own."""

    def clone(layer):
        if isinstance(layer, BatchNorm):
            return keras.layers.BatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    copy = keras.models.clone_model(model, clone_function=clone, recursive=True)  # compiled as `model` is
    if copy.compiled:
        copy.compile_from_config(_keras_optimizer(model.get_compile_config()))
    copy.set_weights(model.get_weights())
    return copy


def _keras_optimizer(compile_config: dict) -> dict:
    """`compile_config` with Keras' own optimizer class in place of cnnrun's fused-update subclass (same
    config), so that model.keras names no cnnrun class."""
    optimizer = compile_config.get("optimizer")
    if isinstance(optimizer, dict) and str(optimizer.get("registered_name") or "").startswith("cnnrun>"):
        optimizer = {"module": "keras.optimizers", "class_name": optimizer["class_name"],
                     "config": optimizer["config"], "registered_name": None}
        return {**compile_config, "optimizer": optimizer}
    return compile_config
