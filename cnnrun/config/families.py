"""What cnnrun knows of keras.applications' image classifiers (model=backbone): for each, the input it was trained
on and the smallest side it takes. Plain data, no Keras: the config is checked against it before the backend
starts; cnnrun/models/backbone.py builds from it.

Each family's mode is what its own `preprocess_input` does to 0-255 pixels: raw (nothing: the network scales them
itself), tf ([-1, 1]), torch (ImageNet mean and standard deviation), caffe (BGR minus the ImageNet means).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    module: str                 # keras.applications.<module>: its preprocess_input and weight files
    mode: str                   # raw | tf | torch | caffe (see the module's docstring)
    min_side: int = 32          # the smallest image side it takes without its top
    preprocessing_flag: bool = False  # its constructor takes include_preprocessing (cnnrun passes False: it scales)

IMAGENET_RGB_MEAN = (0.485, 0.456, 0.406)  # "torch" mode, on [0, 1] pixels
IMAGENET_RGB_STD = (0.229, 0.224, 0.225)
IMAGENET_BGR_MEAN = (103.939, 116.779, 123.68)  # "caffe" mode, on 0-255 pixels


def _family(names: str, module: str, mode: str, min_side: int = 32, flag: bool = False) -> dict[str, Family]:
    return {name: Family(module, mode, min_side, flag) for name in names.split()}


FAMILIES: dict[str, Family] = {
    **_family("VGG16", "vgg16", "caffe"),
    **_family("VGG19", "vgg19", "caffe"),
    **_family("ResNet50 ResNet101 ResNet152", "resnet", "caffe"),
    **_family("ResNet50V2 ResNet101V2 ResNet152V2", "resnet_v2", "tf"),
    **_family("InceptionV3", "inception_v3", "tf", 75),
    **_family("InceptionResNetV2", "inception_resnet_v2", "tf", 75),
    **_family("Xception", "xception", "tf", 71),
    **_family("MobileNet", "mobilenet", "tf"),
    **_family("MobileNetV2", "mobilenet_v2", "tf"),
    **_family("MobileNetV3Small MobileNetV3Large", "mobilenet_v3", "raw", flag=True),
    **_family("DenseNet121 DenseNet169 DenseNet201", "densenet", "torch"),
    **_family("EfficientNetB0 EfficientNetB1 EfficientNetB2 EfficientNetB3 EfficientNetB4 EfficientNetB5 "
              "EfficientNetB6 EfficientNetB7", "efficientnet", "raw"),
    **_family("EfficientNetV2B0 EfficientNetV2B1 EfficientNetV2B2 EfficientNetV2B3 EfficientNetV2S EfficientNetV2M "
              "EfficientNetV2L", "efficientnet_v2", "raw", flag=True),
    **_family("ConvNeXtTiny ConvNeXtSmall ConvNeXtBase ConvNeXtLarge ConvNeXtXLarge", "convnext", "raw", flag=True),
}


def canonical(name) -> str | None:
    """keras.applications' spelling of `name` (efficientnetv2b0 -> EfficientNetV2B0), or None when it is none."""
    return next((n for n in FAMILIES if n.lower() == str(name).lower()), None)
