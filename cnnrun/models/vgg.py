"""VGG16 fine-tuning (article 004): ImageNet's VGG16 without its top, plus article 004's head."""

from __future__ import annotations

import keras
from keras import layers, ops

from cnnrun.config.families import IMAGENET_BGR_MEAN


@keras.saving.register_keras_serializable(package="cnnrun")
class VGGPreprocess(layers.Layer):
    """[0, 1] RGB -> VGG's own input: 0-255 BGR minus the ImageNet channel means ("caffe" mode).
    Kept only so that models saved before `vgg_preprocess()` replaced it still load."""

    def call(self, x):
        x = ops.flip(ops.cast(x, self.compute_dtype) * 255.0, axis=-1)
        return x - ops.convert_to_tensor(IMAGENET_BGR_MEAN, dtype=self.compute_dtype)


def vgg16(input_shape, num_classes, *, name, weights, freeze, dense, dropout):
    """VGG16 (include_top=False) -> Flatten -> Dense 512 -> Dropout 0.5 -> softmax (article 004): one backbone among
    them (cnnrun/models/backbone.py), with article 004's head; images under 32x32 (Fashion-MNIST) are resized up.

    Args:
        name: the option's name, vgg16: keras.applications' VGG16 (its spelling is matched without case).
        weights: "imagenet" (Keras' cache or download), None for random initialisation, or a file path.
        freeze: how many leading layers of VGG16 (its input layer counted, as in the article's
            `model.layers[:15]`) are frozen.
        dense: units of the new hidden layer.
        dropout: dropout rate before the classifier.
    """
    from cnnrun.models.backbone import backbone

    h, w, _ = input_shape
    return backbone(input_shape, num_classes, name=name, preset=None, weights=weights, freeze=freeze, pooling="flatten",
                    dense=dense, dropout=dropout, input_size=32 if min(h, w) < 32 else None, logits=False)
