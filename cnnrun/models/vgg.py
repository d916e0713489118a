"""VGG16 fine-tuning (article 004): ImageNet's VGG16 without its top, plus a small new head."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
from keras import layers, ops

from cnnrun import CnnrunError

NOTOP_FILE = "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"  # the file Keras caches for include_top=False
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)


@keras.saving.register_keras_serializable(package="cnnrun")
class VGGPreprocess(layers.Layer):
    """[0, 1] RGB -> VGG's own input: 0-255 BGR minus the ImageNet channel means ("caffe" mode).
    Kept only so that models saved before `vgg_preprocess()` replaced it still load."""

    def call(self, x):
        x = ops.flip(ops.cast(x, self.compute_dtype) * 255.0, axis=-1)
        return x - ops.convert_to_tensor(IMAGENET_BGR_MEAN, dtype=self.compute_dtype)


def vgg_preprocess(name="vgg_preprocess") -> layers.Layer:
    """[0, 1] RGB -> 0-255 BGR minus the ImageNet channel means ("caffe" mode), as one frozen 1x1
    convolution (Keras' own layer, so the saved model needs no cnnrun to load). Its kernel is 255 times a
    channel permutation and its bias the negated means: each output is one product plus zeros, exactly
    the arithmetic of `x * 255 - mean`."""
    kernel = np.zeros((1, 1, 3, 3), dtype="float32")
    for out_channel in range(3):
        kernel[0, 0, 2 - out_channel, out_channel] = 255.0  # BGR: output channel 0 reads input channel 2
    bias = -np.asarray(IMAGENET_BGR_MEAN, dtype="float32")
    return layers.Conv2D(3, 1, name=name, trainable=False, kernel_initializer=keras.initializers.Constant(kernel),
                         bias_initializer=keras.initializers.Constant(bias))


def _weights(weights):
    if weights in (None, "null", "none"):
        return None
    if weights == "imagenet":
        import os

        home = Path(os.environ.get("KERAS_HOME") or Path("~/.keras").expanduser())
        return "imagenet", home / "models" / NOTOP_FILE
    path = Path(str(weights)).expanduser()
    if not path.is_file():
        raise CnnrunError(f"model.weights={weights} is not a file; give imagenet, null, or the path of a VGG16 .h5/.weights.h5")
    return str(path)


def vgg16(input_shape, num_classes, weights="imagenet", freeze=0, dense=512, dropout=0.5):
    """VGG16 (include_top=False) -> Flatten -> Dense 512 -> Dropout 0.5 -> softmax (article 004).

    Args:
        weights: "imagenet" (Keras' cache or download), None for random initialisation, or a file path.
        freeze: how many leading layers of VGG16 (its input layer counted, as in the article's
            `model.layers[:15]`) are frozen.
        dense: units of the new hidden layer.
        dropout: dropout rate before the classifier.
    """
    h, w, c = input_shape
    inputs = keras.Input(input_shape, name="image")
    x = inputs
    if c == 1:  # grayscale (Fashion-MNIST): repeat to the three channels VGG expects
        x = layers.Concatenate(name="to_rgb")([x, x, x])
    if h < 32 or w < 32:  # VGG16's five poolings need at least 32x32
        x = layers.Resizing(max(h, 32), max(w, 32), name="resize")(x)
    x = vgg_preprocess()(x)
    spec = _weights(weights)
    source = spec[0] if isinstance(spec, tuple) else spec
    try:
        base = keras.applications.VGG16(include_top=False, weights=source, input_shape=tuple(x.shape[1:]))
    except Exception as e:  # noqa: BLE001 - offline download failures come in many types
        if isinstance(spec, tuple):
            raise CnnrunError(
                f"VGG16 ImageNet weights are not in Keras' cache ({spec[1]}) and could not be downloaded "
                f"({type(e).__name__}); put {NOTOP_FILE} there, pass model.weights=PATH, or train from scratch "
                "with model.weights=null"
            ) from None
        raise CnnrunError(f"cannot load VGG16 weights from {source}: {e}") from None
    for layer in base.layers[: int(freeze)]:
        layer.trainable = False
    x = base(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(dense, activation="relu", name="fc1")(x)
    x = layers.Dropout(dropout, name="drop_fc")(x)
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
    return keras.Model(inputs, outputs, name="vgg16")
