"""ResNet for small images (He et al. 2016, section 4.2: the CIFAR ResNet-20/32/56 family).

Three stages of `n` basic blocks (two 3x3 convolutions with BatchNorm and an identity shortcut),
`width`, 2x`width` and 4x`width` filters, stride-2 at each new stage with a 1x1 projection shortcut,
then global average pooling. depth = 6n + 2. At width 16 ResNet-20 has 0.27 M parameters; width 32
(used by `experiment=best_fashion`) has 1.1 M.
"""

from __future__ import annotations

import keras
from keras import layers

from cnnrun.backend import BatchNorm
from cnnrun.models.blocks import classifier_head


def _bn(x, name):
    return BatchNorm(momentum=0.9, epsilon=1.001e-5, name=name)(x)  # 1.001e-5: the fused kernel's minimum


def _block(x, filters, stride, name, l2):
    reg = keras.regularizers.L2(l2) if l2 else None
    conv = lambda f, k, s, n: layers.Conv2D(f, k, strides=s, padding="same", use_bias=False,  # noqa: E731
                                            kernel_initializer="he_normal", kernel_regularizer=reg, name=n)
    y = conv(filters, 3, stride, f"{name}_conv1")(x)
    y = layers.ReLU(name=f"{name}_relu1")(_bn(y, f"{name}_bn1"))
    y = _bn(conv(filters, 3, 1, f"{name}_conv2")(y), f"{name}_bn2")
    if stride != 1 or x.shape[-1] != filters:
        x = _bn(conv(filters, 1, stride, f"{name}_proj")(x), f"{name}_proj_bn")
    return layers.ReLU(name=f"{name}_out")(layers.Add(name=f"{name}_add")([x, y]))


def resnet(input_shape, num_classes, *, name, depth, width, dropout, l2):
    """A CIFAR-style ResNet of `depth` = 6n + 2 layers.

    Args:
        name: the start of the keras.Model's name, the depth appended (resnet20).
        depth: 20, 32, 44, 56 ... (6n + 2).
        width: filters of the first stage; the next two have 2x and 4x.
        dropout: rate before the classifier (0 = none).
        l2: L2 penalty on the convolution kernels (0 = none; optimizer.weight_decay is the other way).
    """
    n = (depth - 2) // 6  # 6n + 2 is the schema's rule for model.depth
    inputs = keras.Input(input_shape, name="image")
    x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer="he_normal", name="stem_conv")(inputs)
    x = layers.ReLU(name="stem_relu")(_bn(x, "stem_bn"))
    for stage, filters in enumerate((width, 2 * width, 4 * width)):
        for b in range(n):
            x = _block(x, filters, 2 if stage > 0 and b == 0 else 1, f"s{stage + 1}b{b + 1}", l2)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(float(dropout), name="drop_fc")(x)
    return keras.Model(inputs, classifier_head(x, num_classes), name=f"{name}{depth}")
