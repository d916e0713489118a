"""Pretrained backbones (`model=backbone`): any image classifier of `keras.applications`, or a KerasHub preset, with a
new head for the run's classes, fed exactly the input it was trained on.

Every cnnrun network receives images scaled to [0, 1] (the classifier's first layer divides the uint8 pixels by
255). A backbone was trained on its own input: 0-255 pixels it scales itself (EfficientNet, ConvNeXt, MobileNetV3),
[-1, 1] ("tf": Inception, Xception, MobileNet, ResNetV2), ImageNet-normalised ("torch": DenseNet), or 0-255 BGR minus
the channel means ("caffe": VGG, ResNet). `FAMILIES` says which for each; `adapter()` turns [0, 1] into exactly that,
once, with Keras' own layers, so model.keras still takes raw 0-255 pixels and loads in plain Keras.
tests/test_backbone.py holds each family's adapter against its own `preprocess_input`.

The head is article 004's, its options VGG16's: pooling (avg, max, or flatten), an optional hidden dense layer,
dropout, and a dense layer per class. The backbone runs in inference mode (`training=False`): frozen or not, its
batch norms keep their ImageNet statistics (Keras' transfer-learning guide), and `freeze` keeps N leading layers
(or `all`) fixed; `unfreeze_after` (training/loop.py) lets them train from that epoch on at `unfreeze_lr`.
"""

from __future__ import annotations

import os
from pathlib import Path

import keras
import numpy as np
from keras import layers

from cnnrun import CnnrunError
from cnnrun.config.extras import pip
from cnnrun.config.families import FAMILIES, IMAGENET_BGR_MEAN, IMAGENET_RGB_MEAN, IMAGENET_RGB_STD, Family, canonical




def family(name: str) -> Family:
    found = FAMILIES.get(canonical(name) or "")
    if found is None:
        raise CnnrunError(f"model.name={name} is not a keras.applications image classifier cnnrun knows; expected "
                          f"one of {', '.join(sorted(FAMILIES))}, or model.preset=NAME_OR_FOLDER for KerasHub")
    return found


def caffe_layer(name: str = "vgg_preprocess") -> layers.Layer:
    """[0, 1] RGB -> 0-255 BGR minus the ImageNet channel means, as one frozen 1x1 convolution (Keras' own layer):
    its kernel is 255 times a channel permutation, its bias the negated means."""
    kernel = np.zeros((1, 1, 3, 3), dtype="float32")
    for out_channel in range(3):
        kernel[0, 0, 2 - out_channel, out_channel] = 255.0  # BGR: output channel 0 reads input channel 2
    bias = -np.asarray(IMAGENET_BGR_MEAN, dtype="float32")
    return layers.Conv2D(3, 1, name=name, trainable=False, kernel_initializer=keras.initializers.Constant(kernel),
                         bias_initializer=keras.initializers.Constant(bias))


def adapter(mode: str, scale=None, offset=None) -> layers.Layer:
    """The layer from cnnrun's [0, 1] images to what a backbone of `mode` takes (see the module's docstring);
    `scale` and `offset` (on 0-255 pixels, per channel or one number) for a KerasHub preset's image converter."""
    if mode == "raw":
        return layers.Rescaling(255.0, name="to_0_255")
    if mode == "tf":
        return layers.Rescaling(2.0, offset=-1.0, name="to_minus1_1")
    if mode == "torch":
        return layers.Normalization(mean=list(IMAGENET_RGB_MEAN), variance=[s * s for s in IMAGENET_RGB_STD],
                                    name="imagenet_normalize")
    if mode == "caffe":
        return caffe_layer()
    if mode == "preset":  # x255 * scale + offset = x01 * (255 scale) + offset
        s = np.asarray(1.0 if scale is None else scale, dtype="float32") * 255.0
        o = np.asarray(0.0 if offset is None else offset, dtype="float32")
        return layers.Rescaling(s.tolist() if s.ndim else float(s), offset=o.tolist() if o.ndim else float(o),
                                name="preset_preprocess")
    raise ValueError(mode)


def _weights(weights, name: str, module: str):
    """(what to give the constructor, the cache file a download would fill, a user's file to load after)."""
    if weights in (None, "null", "none"):
        return None, None, None
    if weights == "imagenet":
        home = Path(os.environ.get("KERAS_HOME") or Path("~/.keras").expanduser())
        return "imagenet", home / "models", None
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        raise CnnrunError(f"model.weights={weights} is not a file; give imagenet, null, or the path of a {name} "
                          "weights file (.weights.h5, as keras.applications.X(include_top=False).save_weights writes)")
    return None, None, path


def application(name: str, shape: tuple, weights) -> keras.Model:
    """keras.applications.<name> without its top, on images of `shape`, with `weights`; one line when they cannot
    be had (offline: the cache folder to fill)."""
    fam = family(name)
    given, cache, file = _weights(weights, name, fam.module)
    kwargs = {"include_preprocessing": False} if fam.preprocessing_flag else {}  # cnnrun's adapter scales, once
    build = getattr(keras.applications, name)
    try:
        base = build(include_top=False, weights=given, input_shape=shape, **kwargs)
    except Exception as e:  # noqa: BLE001 - an offline download fails in many ways
        if given == "imagenet":
            raise CnnrunError(f"{name}'s ImageNet weights are not in Keras' cache ({cache}) and could not be "
                              f"downloaded ({type(e).__name__}); on a machine with internet, run once: python -c "
                              f"\"import keras; keras.applications.{name}(include_top=False)\" and copy {cache} "
                              "here, or give model.weights=PATH (or null to train from scratch)") from None
        raise CnnrunError(f"keras.applications.{name} cannot be built on {shape} images: "
                          f"{str(e).splitlines()[0][:200]}") from None
    if file is not None:
        try:
            base.load_weights(str(file))
        except Exception as e:  # noqa: BLE001 - a file of another network, or cut short
            raise CnnrunError(f"model.weights={file} does not fit {name} without its top ({type(e).__name__}: "
                              f"{str(e).splitlines()[0][:160]}); save them from keras.applications.{name}("
                              "include_top=False)") from None
    return base


def _preset(preset: str, shape: tuple):
    """A KerasHub backbone and its image converter's scale and offset, from KerasHub's cache or a local folder."""
    try:
        import keras_hub
    except ImportError:
        raise CnnrunError(f"model.preset needs KerasHub: {pip('hub')}") from None
    where = Path(preset).expanduser()
    source = str(where) if where.is_dir() else preset
    try:
        backbone = keras_hub.models.Backbone.from_preset(source)
    except Exception as e:  # noqa: BLE001 - KerasHub's loader: missing files, no network, another kind of model
        raise CnnrunError(f"model.preset={preset} cannot be loaded ({type(e).__name__}: "
                          f"{(str(e).splitlines() or [''])[0][:200]}); give a KerasHub preset in its cache, or a "
                          "folder written by save_to_preset") from None
    try:
        converter = keras_hub.layers.ImageConverter.from_preset(source)
        scale, offset, size = converter.scale, converter.offset, converter.image_size
    except Exception:  # noqa: BLE001 - a preset without an image converter: its backbone takes [0, 1]
        scale, offset, size = 1 / 255.0, None, None
    return backbone, scale, offset, (tuple(size) if size else None)


def backbone(input_shape, num_classes, *, name, preset, weights, freeze, input_size, pooling, dense, dropout, logits,
             **training):
    """A pretrained network without its top, fed its own input, with a new head for `num_classes`.

    Args:
        name: a keras.applications image classifier (FAMILIES), e.g. EfficientNetV2B0.
        preset: a KerasHub preset (its name, in KerasHub's cache, or a folder written by save_to_preset), in place
            of `name`.
        weights: "imagenet" (Keras' cache, or a download), None (random), or a weights file (keras.applications).
        freeze: the number of leading layers of the backbone kept fixed, or "all".
        input_size: the side the images are resized to (bilinear) before the backbone; None keeps the data's.
        pooling: avg | max | flatten, from the last feature map to the head.
        dense: units of a hidden layer in the head (None: none); dropout: the rate before the class layer.
        training: unfreeze_after and unfreeze_lr, read by the training loop (two-stage fine-tuning), not here.
        logits: end in logits rather than probabilities (the loss is told; the saved classifier adds a softmax).
    """
    h, w, c = input_shape
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if c == 1:  # grayscale: the backbone's three channels, each the same
        x = layers.Concatenate(name="to_rgb")([x, x, x])
    hub = _preset(str(preset), (h, w, 3)) if preset is not None else None
    if input_size is None and hub is not None and hub[3]:  # a preset's converter resizes to the size it knows
        input_size = hub[3][0] if hub[3][0] == hub[3][1] else None
        if input_size is None:
            x = layers.Resizing(*hub[3], interpolation="bilinear", name="resize")(x)
    if input_size is not None and (int(input_size), int(input_size)) != (h, w):
        x = layers.Resizing(int(input_size), int(input_size), interpolation="bilinear", name="resize")(x)
    side = min(int(x.shape[1]), int(x.shape[2]))
    if hub is not None:
        base, scale, offset, _ = hub
        x = adapter("preset", scale, offset)(x)
        label = Path(str(preset)).name
    else:
        fam = family(name)
        if side < fam.min_side:
            raise CnnrunError(f"model.name={name} needs images of at least {fam.min_side}x{fam.min_side}, but these are "
                              f"{h}x{w}; resize them with model.input_size={max(fam.min_side, 32)} (or more), or pick "
                              "a larger dataset.image_size")
        x = adapter(fam.mode)(x)
        base = application(canonical(name), tuple(x.shape[1:]), weights)
        label = canonical(name).lower()
    if freeze == "all":
        base.trainable = False
    else:
        for layer in base.layers[: int(freeze)]:
            layer.trainable = False
    x = base(x, training=False)  # its batch norms keep their statistics, frozen or fine-tuned
    if isinstance(x, dict):  # a KerasHub backbone's outputs by name
        x = next(iter(x.values()))
    if len(x.shape) == 4:
        x = {"avg": layers.GlobalAveragePooling2D, "max": layers.GlobalMaxPooling2D,
             "flatten": layers.Flatten}[pooling](name="pool" if pooling != "flatten" else "flatten")(x)
    elif len(x.shape) == 3:  # a transformer's tokens
        x = layers.GlobalAveragePooling1D(name="pool")(x)
    if dense:
        x = layers.Dense(int(dense), activation="relu", name="fc1")(x)
    if dropout:
        x = layers.Dropout(float(dropout), name="drop_fc")(x)
    outputs = layers.Dense(num_classes, activation=None if logits else "softmax", dtype="float32",
                           name="logits" if logits else "predictions")(x)
    return keras.Model(inputs, outputs, name=label)
