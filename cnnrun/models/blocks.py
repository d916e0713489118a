"""Layer helpers shared by every model family (models.py, resnet.py, vgg.py); imports no model module."""

from __future__ import annotations

from keras import layers


def classifier_head(x, num_classes):
    """The softmax over `num_classes`, float32 even under mixed precision, so losses stay stable."""
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="predictions")(x)
