"""Training data resident on the device (`trainer.device_data=true`).

By default fit() gets NumPy arrays and every step copies one batch of pixels from host memory to
the device. With device data the whole image set (train and validation, uint8) is copied to the
device once, as a non-trainable variable of the training model, and fit() is fed only each batch's
indices and labels: the model's first layer gathers the images on the device. That is the layout
fast-training records use (no per-step host-to-device copy of pixels), in plain Keras 3, so it
works on both backends. The variable is left out of checkpoints and is not part of the saved
classifier, which still takes pixels.
"""

from __future__ import annotations

import keras
import numpy as np

from cnnrun import CnnrunError

LAYER = "resident_images"  # its variables are data, not state: resume.py leaves them out of checkpoints


class ResidentImages(keras.layers.Layer):
    """Holds an image set as one uint8 variable on the device; maps a batch of indices to its images.

    Args:
        images: uint8 array (N, H, W, C): every image the training model will be asked for.
    """

    def __init__(self, images: np.ndarray, **kwargs):
        super().__init__(name=LAYER, **kwargs)
        self.images = self.add_weight(
            shape=images.shape, dtype="uint8", trainable=False, name="images",
            initializer=lambda shape, dtype=None: keras.ops.convert_to_tensor(images, dtype="uint8"),
        )

    def call(self, index):
        return keras.ops.take(self.images, keras.ops.reshape(index, (-1,)), axis=0)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], *self.images.shape[1:])


def resident_layer(x_train, x_val) -> ResidentImages:
    """The layer holding train then validation images; refuses data that is not in memory."""
    if not isinstance(x_train, np.ndarray) or (len(x_val) and not isinstance(x_val, np.ndarray)):
        raise CnnrunError("trainer.device_data=true needs the images in memory, but this folder dataset streams "
                          "from disk; raise dataset.cache_max_mb so it fits, or set trainer.device_data=false")
    return ResidentImages(np.concatenate([x_train, x_val]) if len(x_val) else x_train)


def train_feed(y_train, order) -> tuple:
    """fit()'s (x, y) for one epoch in `order`: image indices and their labels."""
    return order.astype("int32"), y_train[order]


def validation_feed(y_val, offset: int) -> tuple:
    """validation_data for a model fed by ResidentImages: validation images follow the `offset` training images."""
    return np.arange(offset, offset + len(y_val), dtype="int32"), y_val
