"""The config's types (Hydra structured configs), each field with its own range, and the registry of options.

Every YAML option extends a schema stored here in Hydra's ConfigStore, so a wrong type, an unknown
key or a value outside an enumerated set is refused while Hydra composes the config. What a type
cannot say (a range, "auto or a number") is the field's rule, stated where the field is declared:
`epochs: int = rule(5, *AT_LEAST_1)`. Rules between keys are `_cross_rules`. `validate(cfg)` runs all of
them, and is what `cnnrun train` runs for every job of a sweep before the first job starts. Every refusal is
one line: the key, the value, what is expected, an example.

`OPTIONS` is the one registry of the model, dataset and optimizer groups: each option's schema and the
code it runs, named by import path exactly as a user's own `_target_` is (cnnrun/config/plugins.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from enum import StrEnum
from typing import Any, Callable, Optional

from omegaconf import MISSING, DictConfig, OmegaConf

from cnnrun import CnnrunError
from cnnrun.config.families import FAMILIES, canonical

# --- rules: what a type cannot say, kept with the field ------------------------------------------------

def _int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# A key's part in a run's identity (record/fingerprints.py: what decides a run's numbers, so two runs that differ in
# it are two runs): every key is part of it unless its field says otherwise, with `identity=`
NOT_IDENTITY = False      # the same run whatever its value: where the data lies, how it is fed, printed, checkpointed
WHEN_SET = "when set"     # part of it only when not its default: a key added after runs were recorded without it


def rule(default, ok: Callable[[Any], bool], expected: str, example: str | None = None, *, factory=None,
         identity: bool | str = True):
    """A dataclass field whose value must pass `ok`; else "KEY=VALUE must be EXPECTED, e.g. KEY=EXAMPLE"
    (the example is the default unless given). `identity`: the key's part in a run's identity (above)."""
    meta = {"ok": ok, "expected": expected, "example": example, "identity": identity}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def key(default, *, identity: bool | str):
    """A dataclass field with no rule beyond its type, whose part in a run's identity is not the usual (above)."""
    return field(default=default, metadata={"identity": identity})


def _whole_at_least(lo: int, what: str = "a whole number"):
    return (lambda v: _int(v) and v >= lo), f"{what} >= {lo}"


AT_LEAST_1 = _whole_at_least(1)
AT_LEAST_0 = _whole_at_least(0)
POSITIVE = (lambda v: _num(v) and v > 0), "a positive number"
FRACTION = (lambda v: _num(v) and 0 <= v < 1), "in [0, 1)"
PROBABILITY = (lambda v: _num(v) and 0 <= v <= 1), "a probability in [0, 1]"
AUTO_OR_BOOL = (lambda v: v == "auto" or isinstance(v, bool)), "auto, true or false"
DROPOUT = ((lambda v: isinstance(v, bool) or (_num(v) and 0 <= v < 1)),
           "true (the article's rates), false, or a rate in [0, 1)")
SPLIT = (lambda v: _num(v) and 0 < v < 1), "in (0, 1)"


def _size(v):
    if _int(v):
        return v >= 8
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_int(s) and s >= 8 for s in v)


SIZE = _size, "a side of at least 8 pixels or [height, width]"


def _pair(v):
    return isinstance(v, (list, tuple)) and len(v) == 2 and all(_num(x) for x in v) and v[0] <= v[1]


# --- enumerated sets ------------------------------------------------------------------------------

class Precision(StrEnum):
    float32 = "float32"
    mixed_bfloat16 = "mixed_bfloat16"
    mixed_float16 = "mixed_float16"


class TTA(StrEnum):
    none = "none"
    flip = "flip"


class Schedule(StrEnum):
    constant = "constant"
    cosine = "cosine"
    onecycle = "onecycle"


class Color(StrEnum):
    rgb = "rgb"
    grayscale = "grayscale"


class Balance(StrEnum):
    none = "none"
    oversample = "oversample"
    undersample = "undersample"


class BadFiles(StrEnum):
    warn = "warn"
    error = "error"


class Fill(StrEnum):
    pixel = "pixel"
    patch = "patch"


class Monitor(StrEnum):
    val_accuracy = "val_accuracy"
    val_loss = "val_loss"


# --- groups ---------------------------------------------------------------------------------------

@dataclass
class Trainer:
    """How one model is fitted (conf/trainer/default.yaml).

    Attributes:
        epochs: passes over the training set (>= 1)
        batch_size: images per gradient step (Keras' default, as in articles 001 and 003)
        seed: seeds Python, NumPy and the backend: same seed + config + backend on CPU = same metrics
        val_split: fraction of the training set held out for validation, stratified and seeded; 0 = none
        eval_batch_size: batch size for evaluation and prediction (does not change results)
        verbose: 0 = quiet, 1 = a progress bar per epoch, 2 = one line per epoch
        threads: CPU threads for the backend; auto = the backend's own choice
        precision: float32 | mixed_bfloat16 | mixed_float16
        device_data: copy all training images to the device once and feed fit() indices (in-memory data)
        steps_per_execution: train steps per compiled call: auto = 8 (at most a quarter of an epoch); the same
            numbers, less Python per step
        jit: XLA compilation of the train step: auto | true | false (on 2 CPU cores TF is faster without)
        deterministic: TF only: force deterministic kernels (slower; CPU runs are repeatable without it)
        checkpoint: save weights, optimizer and RNG state after every epoch (removed once the run ends ok)
        resume: auto = continue this run dir's checkpoint / skip it if already finished; true = must; false = start
            over
        augment_after: epochs trained on plain images before the augmentation starts (article 000: 10)
        label_smoothing: soften the one-hot targets by this much (0.1 is common for long runs)
        tta: test-time augmentation: none | flip (average with the left-right mirror; in-memory data)
        fresh_process: sweeps (-m): run each job in a new process, so memory cannot grow from job to job (costs a
            start-up per job)
        ema: decay of a moving average of the weights (e.g. 0.999): what is validated, evaluated and saved; null =
            off
        patience: stop after this many epochs without a better `monitor` (needs val_split > 0); null = never
        monitor: val_accuracy | val_loss: what patience and restore_best judge epochs by
        restore_best: evaluate and save the best epoch's weights by `monitor` (needs val_split > 0)
        precise_bn: batch-norm statistics recomputed over training batches before evaluating: auto (short runs, ema)
            | true | false
    """
    epochs: int = rule(5, *AT_LEAST_1, identity=NOT_IDENTITY)  # more epochs continue the same run (resume)
    batch_size: int = rule(32, *AT_LEAST_1)
    seed: int = rule(0, lambda v: _int(v) and 0 <= v < 2**32, "a whole number in [0, 2**32)")
    val_split: float = rule(0.0, FRACTION[0], "in [0, 1): 0.2 holds out 20 %, 0 none", "0.2")
    eval_batch_size: int = rule(1024, *AT_LEAST_1, identity=NOT_IDENTITY)
    verbose: int = rule(1, lambda v: _int(v) and v in (0, 1, 2), "0 (quiet), 1 (progress bars) or 2 (a line per epoch)",
                        identity=NOT_IDENTITY)
    threads: Any = rule("auto", lambda v: v == "auto" or (_int(v) and v >= 1), "auto or a whole number >= 1", "2",
                        identity=NOT_IDENTITY)
    precision: Precision = Precision.float32
    device_data: bool = key(False, identity=NOT_IDENTITY)
    steps_per_execution: Any = rule("auto", lambda v: v == "auto" or (_int(v) and v >= 1),
                                    "auto or a whole number of steps >= 1", "8", identity=NOT_IDENTITY)
    jit: Any = rule("auto", *AUTO_OR_BOOL)
    deterministic: bool = False
    checkpoint: bool = key(True, identity=NOT_IDENTITY)
    resume: Any = rule("auto", AUTO_OR_BOOL[0], "auto (continue or skip a run of this config), true (must continue) "
                       "or false (set the earlier run aside)", identity=NOT_IDENTITY)
    augment_after: int = rule(0, *_whole_at_least(0, "a whole number of plain epochs"), "10")
    label_smoothing: float = rule(0.0, *FRACTION, "0.1")
    tta: TTA = TTA.none
    fresh_process: bool = key(False, identity=NOT_IDENTITY)
    # decay of an exponential moving average of the weights; null: off
    ema: Optional[float] = rule(None, lambda v: v is None or (_num(v) and 0 < v < 1), "null (off) or a decay in (0, 1)",
                                "0.999", identity=WHEN_SET)
    # stop after this many epochs without a better `monitor`; null: off
    patience: Optional[int] = rule(None, lambda v: v is None or (_int(v) and v >= 1),
                                   "null (off) or a whole number of epochs >= 1", "5", identity=WHEN_SET)
    monitor: Monitor = key(Monitor.val_accuracy, identity=WHEN_SET)
    restore_best: bool = key(False, identity=WHEN_SET)  # evaluate and save the weights of the best epoch by `monitor`
    # recompute batch-norm statistics before evaluating
    precise_bn: Any = rule("auto", AUTO_OR_BOOL[0], "auto (when the run is too short for batch-norm statistics to "
                           "settle, or with trainer.ema), true or false", identity=WHEN_SET)


@dataclass
class Optimizer:
    """The fields every optimizer has; a subclass's own fields are its Keras class's keyword arguments.

    Attributes:
        lr: learning rate
        weight_decay: decoupled weight decay (AdamW-style for adam), e.g. 5.0e-4; null = none
        schedule: learning rate over the run: constant | cosine (to 0) | onecycle (linear up, then down to 0)
        warmup: fraction of all steps spent warming up linearly from 0 (cosine; onecycle peaks here, 0 = 0.3)
    """
    name: str = MISSING
    lr: float = rule(0.001, *POSITIVE)
    weight_decay: Optional[float] = rule(None, lambda v: v is None or (_num(v) and v >= 0), "null or a number >= 0",
                                         "5e-4")
    schedule: Schedule = Schedule.constant
    warmup: float = rule(0.0, FRACTION[0], "a fraction of the run in [0, 1)", "0.1")


@dataclass
class Adam(Optimizer):
    """Adam, Keras' defaults.

    Attributes:
        beta_1: decay of the first-moment estimate
        beta_2: decay of the second-moment estimate
        epsilon: numerical stability term (Keras' default)
    """
    beta_1: float = rule(0.9, *FRACTION)
    beta_2: float = rule(0.999, *FRACTION)
    epsilon: float = rule(1e-7, *POSITIVE, "1e-7")


@dataclass
class SGD(Optimizer):
    """SGD with momentum.

    Attributes:
        lr: learning rate
        momentum: heavy-ball momentum; 0.9 is a common stronger choice
        nesterov: Nesterov momentum (only matters when momentum > 0)
    """
    lr: float = rule(0.01, *POSITIVE)
    momentum: float = rule(0.0, *FRACTION, "0.9")
    nesterov: bool = False


@dataclass
class Model:
    """The field every model has. A built-in's name is its key in OPTIONS (its YAML's file name), set when its
    schema is stored (register): stated nowhere else, its builder is handed it to name the keras.Model.

    Attributes:
        name: the option (cnn4, resnet ...), or the network a backbone fine-tunes
    """
    name: str = MISSING


@dataclass
class Dense(Model):
    """Flatten -> Dense -> classes (article 001's dense net).

    Attributes:
        units: hidden units (article 003 used 64)
    """
    units: int = rule(128, *AT_LEAST_1)


@dataclass
class MnistCnn(Model):
    """Keras' mnist_cnn example.

    Attributes:
        dropout: true = the 0.25 / 0.5 dropout layers, false = none, a rate r = r in the head, r/2 after pooling
    """
    dropout: Any = rule(True, *DROPOUT, "0.4")


@dataclass
class Cnn3(Model):
    """Article 001's three-convolution net and its variants.

    Attributes:
        pad: ZeroPadding2D before the first convolution (article 001's "padded 3-conv": 2)
        extra_conv: add a fourth convolution with 256 filters
        dropout: true = the 0.25 / 0.5 dropout layers, false = none, a rate r = r in the head, r/2 after pooling
        extra_dense: add a second Dense 128 layer
    """
    pad: int = rule(0, lambda v: _int(v) and 0 <= v <= 64, "a whole number of pixels in [0, 64]", "2")
    extra_conv: bool = False
    dropout: Any = rule(True, *DROPOUT, "0.4")
    extra_dense: bool = False


@dataclass
class Cnn4(Model):
    """Article 000's four-convolution net with BatchNorm.

    Attributes:
        dropout: true = 0.25 after conv blocks and 0.5 in the head, false = none, a rate r = r in the head, r/2
            elsewhere
    """
    dropout: Any = rule(True, *DROPOUT, "0.4")


@dataclass
class TfCnn(Model):
    """TensorFlow's CNN tutorial (article 003): no keys of its own."""


@dataclass
class Vgg16(Model):
    """VGG16 fine-tuned as article 004 does: a backbone (model=backbone) with the article's head.

    Attributes:
        weights: imagenet (Keras' cache or download) | null (random init) | PATH to a weights file
        freeze: leading VGG16 layers kept frozen (article 004 tried 15: the first four blocks)
        dense: units of the new hidden layer
        dropout: dropout before the classifier
    """
    weights: Optional[str] = "imagenet"
    freeze: int = rule(0, lambda v: _int(v) and 0 <= v <= 19, "a number of VGG16 layers in [0, 19]", "15")
    dense: int = rule(512, *AT_LEAST_1)
    dropout: float = rule(0.5, FRACTION[0], "a rate in [0, 1)")


class Pooling(StrEnum):
    avg = "avg"
    max = "max"
    flatten = "flatten"


@dataclass
class Backbone:
    """A pretrained network (cnnrun/models/backbone.py): a keras.applications classifier by name, or a KerasHub
    preset, with a new head; fed exactly the input it was trained on.

    Attributes:
        name: a keras.applications image classifier: EfficientNetV2B0, ConvNeXtTiny, ResNet50V2, VGG16 ...
        preset: or a KerasHub preset (in its cache, or a folder): takes the place of name
        weights: imagenet (Keras' cache or download) | null (random init) | PATH to a .weights.h5 file
        freeze: leading layers of the backbone kept fixed, or all (only the new head trains)
        input_size: resize the images to this side first (bilinear); null keeps the data's size
        pooling: avg | max | flatten: from the last feature map to the head
        dense: units of a hidden layer in the head (null: none)
        dropout: dropout before the class layer
        unfreeze_after: with freeze: after this many epochs the backbone trains too
        unfreeze_lr: the learning rate of that second stage (Keras' transfer-learning guide: two stages)
        logits: end in logits (trained with from_logits; the saved classifier adds a softmax)
    """
    name: str = rule("MobileNetV3Small", lambda v: isinstance(v, str) and canonical(v) is not None,
                     "a keras.applications image classifier: " + ", ".join(sorted(FAMILIES)), "EfficientNetV2B0")
    preset: Optional[str] = None    # a KerasHub preset (a name in its cache, or a folder save_to_preset wrote)
    weights: Optional[str] = "imagenet"
    freeze: Any = rule(0, lambda v: v == "all" or (_int(v) and v >= 0), "a number of leading layers >= 0, or all",
                       "all")
    input_size: Optional[int] = rule(None, lambda v: v is None or (_int(v) and v >= 8),
                                     "null (the data's side) or a side of at least 8 pixels", "224")
    pooling: Pooling = Pooling.avg
    dense: Optional[int] = rule(None, lambda v: v is None or (_int(v) and v >= 1), "null or a number of units", "256")
    dropout: float = rule(0.2, FRACTION[0], "a rate in [0, 1)")
    unfreeze_after: Optional[int] = rule(None, lambda v: v is None or (_int(v) and v >= 1),
                                         "null or a number of epochs >= 1", "5")
    unfreeze_lr: float = rule(1e-5, *POSITIVE, "1e-5")
    logits: bool = False            # end in logits (the loss is told; the saved classifier adds a softmax)


@dataclass
class ResNet(Model):
    """CIFAR-style ResNet (He et al. 2016): 3 stages of basic blocks, global average pooling.

    Attributes:
        depth: 6n + 2 layers: 20, 32, 44, 56
        width: filters in the first stage (then 2x, 4x); 16 = 0.27 M params, 32 = 1.1 M
        dropout: dropout rate before the classifier
        l2: L2 penalty on convolution kernels (or use optimizer.weight_decay)
    """
    depth: int = rule(20, lambda v: _int(v) and v >= 8 and (v - 2) % 6 == 0, "6n + 2 with n >= 1: 8, 14, 20, 32 ...")
    width: int = rule(16, *_whole_at_least(1, "a whole number of filters"))
    dropout: float = rule(0.0, FRACTION[0], "a rate in [0, 1)", "0.2")
    l2: float = rule(0.0, lambda v: _num(v) and v >= 0, "a number >= 0", "1e-4")


@dataclass
class CustomModel(Model):
    """Your own network: `_target_` names a function called as f(input_shape=..., num_classes=..., **other keys)
    that returns a keras.Model (models.build_custom). Other keys are the function's own (`+model.width=64`).

    Attributes:
        _target_: a dotted import path (my_pkg.nets.build) or FILE.py:FUNCTION (required)
    """
    name: str = "custom"  # a node of the user's naming no name (their own YAML): shown by its function's name
    _target_: str = MISSING


@dataclass
class Dataset:
    """A data set of IDX files (fashion, mnist): the keys every data set has.

    Attributes:
        limit: use at most this many train and this many test images (null = all)
        mirror: append a mirrored copy of every training image (in-memory data only)
        class_names: the classes in order (null: the labels found, sorted); labels must be among them
        path: a folder with the four IDX .gz files, or a Keras-style .npz; null = search $CNNRUN_DATA,
            ~/.keras/datasets, /usr/share/datasets (Debian: dataset-fashion-mnist), then download (digits: unused,
            its images ship inside scikit-learn)
    """
    name: str = MISSING
    path: Optional[str] = key(None, identity=NOT_IDENTITY)  # the data's digest is its identity, not where it lies
    limit: Optional[int] = rule(None, lambda v: v is None or (_int(v) and v >= 1), "null (all) or a whole number >= 1",
                                "1000")
    mirror: bool = False
    class_names: Optional[list[str]] = rule(
        None, lambda v: v is None or (isinstance(v, list) and all(isinstance(n, str) and n.strip() for n in v)
                                      and len(set(v)) == len(v)),
        "null (the data's own) or a list of distinct, non-empty names, one per class", "[cat,dog]")


@dataclass
class Digits(Dataset):
    """scikit-learn's 8x8 digits, upscaled: no download.

    Attributes:
        image_size: upscaled side in pixels (>= 8)
        test_split: fraction held out as the test set, stratified
        split_seed: seed of that split (fixed, so the test set does not move with trainer.seed)
    """
    image_size: int = rule(28, *SIZE)
    test_split: float = rule(0.2, *SPLIT)
    split_seed: int = rule(0, *AT_LEAST_0)


@dataclass
class Folder(Dataset):
    """A folder of photos: DIR/<class>/*.jpg (split here), or DIR/train/<class> + DIR/test/<class>.

    Attributes:
        path: the folder (required): dataset.path=DIR (csv: the manifest, dataset.path=labels.csv)
        image_size: resize every image to this many pixels square, or [height, width]
        color: rgb | grayscale
        test_split: fraction held out as the test set when the data has no split of its own (no test/ folder, no
            split column)
        split_seed: seed of that stratified split
        balance: none | oversample | undersample: even out the training classes
        bad_files: missing, unreadable, too small or too large files: warn (skip and list them) | error
        min_side: images with a side under this many pixels count as bad files
        max_pixels: images over this many pixels count as bad files
        cache: decode into memory: auto (when it fits cache_max_mb) | true | false (stream from disk)
        cache_max_mb: size limit for cache=auto, in MB of decoded pixels
    """
    path: str = rule(MISSING, lambda v: isinstance(v, str) and v.strip() != "",
                     "a folder (with one sub-folder of images per class) or a file", "photos", identity=NOT_IDENTITY)
    image_size: Any = rule(128, *SIZE)  # a side in pixels or [height, width]
    color: Color = Color.rgb
    test_split: float = rule(0.33, *SPLIT)
    split_seed: int = rule(3, *AT_LEAST_0)
    balance: Balance = Balance.none
    bad_files: BadFiles = key(BadFiles.warn, identity=NOT_IDENTITY)
    min_side: int = rule(8, *_whole_at_least(1, "a whole number of pixels"))
    max_pixels: int = rule(50_000_000, *_whole_at_least(64, "a whole number of pixels"))
    cache: Any = rule("auto", *AUTO_OR_BOOL, identity=NOT_IDENTITY)
    cache_max_mb: int = rule(2048, *_whole_at_least(0, "a whole number of MB"), identity=NOT_IDENTITY)


@dataclass
class Csv(Folder):
    """A CSV manifest: one row per image, its path (relative to the file) and its label, optionally its split.

    Attributes:
        path_column: the column of image paths
        label_column: the column of labels: class names (or numbers); classes are ordered by name
        split_column: train | test per row; without this column, test_split holds out the test set
    """
    path_column: str = "path"
    label_column: str = "label"
    split_column: str = "split"        # train | test per row; a manifest without the column is split by test_split


@dataclass
class CustomDataset(Folder):
    """Your own loader: `_target_` names a function called with the config's other keys (`+dataset.root=...`),
    returning arrays or image files with labels (cnnrun/data/manifest.py says what it may return).

    Attributes:
        _target_: a dotted import path (my_pkg.data.load) or FILE.py:FUNCTION (required)
    """
    name: str = "custom"  # a node of the user's naming no name (their own YAML): shown by its function's name
    path: Optional[str] = None
    _target_: str = MISSING


@dataclass
class Flip:
    """augment=flip: a random mirror, on the device, in training only.

    Attributes:
        horizontal: mirror left-right with probability 0.5
        vertical: mirror top-bottom with probability 0.5
    """
    horizontal: bool = True
    vertical: bool = False


@dataclass
class Rotate:
    """augment=rotate: a random rotation.

    Attributes:
        degrees: uniform in [-degrees, +degrees]
    """
    degrees: float = rule(20.0, lambda v: _num(v) and 0 <= v <= 180, "degrees in [0, 180]", "20")


@dataclass
class Shift:
    """augment=shift: a random shift.

    Attributes:
        width: up to this fraction of the width, left or right
        height: up to this fraction of the height, up or down
    """
    width: float = rule(0.1, FRACTION[0], "a fraction of the width in [0, 1)")
    height: float = rule(0.1, FRACTION[0], "a fraction of the height in [0, 1)")


@dataclass
class Shear:
    """augment=shear: a random shear.

    Attributes:
        degrees: shear angle uniform in [-degrees, +degrees]
    """
    degrees: float = rule(0.3, lambda v: _num(v) and 0 <= v < 90, "degrees in [0, 90)")


@dataclass
class Zoom:
    """augment=zoom: a random zoom.

    Attributes:
        amount: each axis scaled by a factor in [1 - amount, 1 + amount] (article 000: 0.08)
    """
    amount: float = rule(0.1, *FRACTION)


@dataclass
class Erasing:
    """augment=erasing: random erasing (Zhong et al. 2017).

    Attributes:
        p: probability that an image gets a patch erased
        area: patch area as a fraction of the image, uniform in this range (article 004 ran 0.2-0.4)
        aspect: patch height/width ratio, uniform in this range
        fill: pixel: uniform random noise per pixel; patch: one random value per patch
        value_range: range of the random fill values (images are scaled to [0, 1])
    """
    p: float = rule(0.5, *PROBABILITY)
    area: list[float] = rule(None, lambda v: _pair(v) and 0 < v[0] and v[1] <= 1, "[low, high] within (0, 1]",
                             "[0.02,0.4]", factory=lambda: [0.02, 0.4])
    aspect: list[float] = rule(None, lambda v: _pair(v) and v[0] > 0, "[low, high], both positive", "[0.3,3.3]",
                               factory=lambda: [0.3, 3.3333])
    fill: Fill = Fill.pixel
    value_range: list[float] = rule(None, _pair, "[low, high]", "[0,1]", factory=lambda: [0.0, 1.0])


@dataclass
class Mixup:
    """augment=mixup: pairs of images and their labels blended.

    Attributes:
        alpha: the blend weight is drawn from Beta(alpha, alpha): small alpha, mostly one image
        p: probability that a batch is mixed
    """
    alpha: float = rule(0.2, POSITIVE[0], "a positive Beta parameter, e.g. 0.2")
    p: float = rule(1.0, *PROBABILITY)


@dataclass
class CutMix:
    """augment=cutmix: a patch of another image, labels mixed by area.

    Attributes:
        alpha: the kept area is drawn from Beta(alpha, alpha): 1.0 = uniform
        p: probability that a batch is cut and mixed
    """
    alpha: float = rule(1.0, POSITIVE[0], "a positive Beta parameter, e.g. 1.0")
    p: float = rule(1.0, *PROBABILITY)


@dataclass
class Augment:
    mixup: Optional[Mixup] = None
    cutmix: Optional[CutMix] = None
    flip: Optional[Flip] = None
    rotate: Optional[Rotate] = None
    shift: Optional[Shift] = None
    shear: Optional[Shear] = None
    zoom: Optional[Zoom] = None
    erasing: Optional[Erasing] = None


class Cam(StrEnum):
    hirescam = "hirescam"
    gradcam = "gradcam"


class Embedding(StrEnum):
    tsne = "tsne"
    pca = "pca"
    none = "none"


@dataclass
class Output:
    """What a run writes besides its metrics.

    Attributes:
        misclassified_max: cap on misclassified test images written to misclassified/ (0 = none)
        predictions_grid: test images shown in predictions.png (0 = no predictions.png)
        plots: the PNG plots (curves, confusion matrix, predictions, augmentation preview); false keeps their CSVs
            only, for searches of many short jobs, where the plots take most of a second a job
        save_model: write model.keras
        explain: at the end: Grad-CAM of misclassified test images and an embedding map (explain/)
        explain_max: misclassified test images explained with Grad-CAM
        explain_embedding: tsne | pca | none: how the test set's features are mapped to 2-D
        explain_cam: hirescam (gradient x activation per place) | gradcam (a weight per channel)
    """
    misclassified_max: int = rule(100, *AT_LEAST_0)
    predictions_grid: int = rule(30, *AT_LEAST_0)
    plots: bool = True
    save_model: bool = True
    explain: bool = False
    explain_max: int = rule(16, *_whole_at_least(0, "a whole number of images"))
    explain_embedding: Embedding = Embedding.tsne
    explain_cam: Cam = Cam.hirescam


@dataclass
class Reference:
    """The article's (or the goal's) figure a preset is compared with, and what run it is from.

    Attributes:
        accuracy: the test accuracy the source article reported, as a fraction
        source: where that figure comes from
        epochs: the epochs of the run it is from: a run of fewer (or on fewer images) is marked shortened
    """
    accuracy: Optional[float] = None
    source: Optional[str] = None
    epochs: Optional[int] = rule(None, lambda v: v is None or (_int(v) and v >= 1),
                                 "null or the whole number of epochs the figure is from", "15")


class DebugMode(StrEnum):
    none = "none"
    smoke = "smoke"
    overfit = "overfit"
    profile = "profile"


@dataclass
class Debug:
    """Which debug option a run is (conf/debug/): its hooks (the overfit and profile probes, the smoke check)
    are attached by that option's YAML under `hooks`, as every hook is."""
    mode: DebugMode = DebugMode.none


class DistributeMode(StrEnum):
    none = "none"
    data_parallel = "data_parallel"


PORT = (lambda v: _int(v) and 1 <= v <= 65535), "a port number in [1, 65535]"


@dataclass
class Distribute:
    """One run over several devices and hosts (cnnrun/training/distribute.py)."""
    name: DistributeMode = DistributeMode.none
    devices: Optional[int] = rule(None, lambda v: v is None or (_int(v) and v >= 1),
                                  "null (every local device) or a whole number >= 1", "2")
    coordinator: Optional[str] = rule(None, lambda v: v is None or (isinstance(v, str) and re.fullmatch(
        r"[^\s:]+:\d{1,5}", v) is not None), "null or host:port of process 0", "10.0.0.1:12321")
    num_processes: Optional[int] = rule(None, lambda v: v is None or (_int(v) and v >= 1),
                                        "null (one, or Slurm's task count) or a whole number >= 1", "2")
    process_id: Optional[int] = rule(None, lambda v: v is None or (_int(v) and v >= 0),
                                     "null (Slurm's task index) or a whole number >= 0", "0")
    timeout: int = rule(60, *_whole_at_least(5, "a whole number of seconds >= 5"))


@dataclass
class Config:
    """The root: typed groups here; dataset, model and optimizer are typed by the option chosen (OPTIONS)."""
    dataset: Any = MISSING
    model: Any = MISSING
    optimizer: Any = MISSING
    augment: Augment = field(default_factory=Augment)
    trainer: Trainer = field(default_factory=Trainer)
    output: Output = field(default_factory=Output)
    reference: Reference = field(default_factory=Reference)
    debug: Debug = field(default_factory=Debug)
    logger: dict[str, Any] = field(default_factory=dict)  # trackers: logger.NAME._target_ (conf/logger/)
    distribute: Distribute = field(default_factory=Distribute)
    hooks: dict[str, Any] = field(default_factory=dict)  # hooks.NAME._target_: cnnrun's and yours (cnnrun/hooks/)


HOOK_PLACES = ("logger", "hooks")  # where a config attaches hooks, in the order they run (cnnrun/hooks/__init__.py)


# --- the registry: one place that says which options each group has and what code each runs ------------

@dataclass(frozen=True)
class Option:
    """An option of a group: the schema that types it, and the code it runs, named as a user's own `_target_`
    is (None: the node's own `_target_`). A model's builder is called as f(input_shape, num_classes, **keys);
    a dataset's loader as f(cfg, batch_size) -> (arrays, source, class_names, test_files, notes), its
    digest as f(cfg, hash) -> bool and its check as f(cfg), which raises CnnrunError when the data is surely not
    there (it runs before the backend starts, so it imports no Keras); an optimizer's class as
    cls(learning_rate, **its schema's own keys)."""
    schema: type
    target: str | None
    digest: str | None = None
    check: str | None = None


# conf/GROUP/NAME.yaml is each option's YAML: its comments, what differs from the schema, and `- /schema/GROUP/NAME`.
OPTIONS: dict[str, dict[str, Option]] = {
    "model": {
        "dense": Option(Dense, "cnnrun.models.dense"),
        "mnist_cnn": Option(MnistCnn, "cnnrun.models.mnist_cnn"),
        "cnn3": Option(Cnn3, "cnnrun.models.cnn3"),
        "cnn4": Option(Cnn4, "cnnrun.models.cnn4"),
        "tf_cnn": Option(TfCnn, "cnnrun.models.tf_cnn"),
        "vgg16": Option(Vgg16, "cnnrun.models.vgg.vgg16"),
        "resnet": Option(ResNet, "cnnrun.models.resnet.resnet"),
        "backbone": Option(Backbone, "cnnrun.models.backbone.backbone"),  # any keras.applications name, or a preset
        "custom": Option(CustomModel, None),
    },
    "optimizer": {
        "adam": Option(Adam, "cnnrun.backend.Adam"),  # Keras' Adam, its update fused on TensorFlow
        "sgd": Option(SGD, "cnnrun.backend.SGD"),     # Keras' SGD, likewise
    },
    "dataset": {
        "fashion": Option(Dataset, "cnnrun.data.load_idx", "cnnrun.data.digest_idx", "cnnrun.data.check_idx"),
        "mnist": Option(Dataset, "cnnrun.data.load_idx", "cnnrun.data.digest_idx", "cnnrun.data.check_idx"),
        "digits": Option(Digits, "cnnrun.data.load_digits", "cnnrun.data.digest_digits"),
        "folder": Option(Folder, "cnnrun.data.folder.load_folder", "cnnrun.data.digest_folder",
                         "cnnrun.data.paths.folder_root"),
        "csv": Option(Csv, "cnnrun.data.manifest.load_csv", "cnnrun.data.manifest.digest",
                      "cnnrun.data.manifest.manifest_file"),
        "custom": Option(CustomDataset, "cnnrun.data.manifest.load_custom", "cnnrun.data.manifest.digest"),
    },
}
SCHEMAS = {group: {name: option.schema for name, option in options.items()} for group, options in OPTIONS.items()}
# A group's node with a `_target_` is the user's own code, whatever its name: typed by these, its other keys
# passed to the target as keyword arguments.
TARGETED = {"model": CustomModel, "dataset": CustomDataset}


def option_name(group: str, node) -> str | None:
    """The registry's name of the option a group node is: a node with a `_target_` is `custom`, whatever its name;
    a model named like a keras.applications classifier (or given a preset) is a `backbone`."""
    if not isinstance(node, (dict, DictConfig)):
        return None
    if node.get("_target_") is not None:
        return "custom"
    name = node.get("name")
    if group == "model" and name not in OPTIONS["model"] and (node.get("preset") or canonical(name or "")):
        return "backbone"
    return name


def display_name(group: str, node) -> str:
    """What a run of this model or dataset is called in tables, directory names and records, unless `name` is
    given: the user's own function by its name (`build`, `tiny_resnet`), a backbone by its network
    (`efficientnetv2b0`) or preset, a CSV manifest by its file (`labels`); else the option's name."""
    from pathlib import PurePath

    name = str(node.get("name"))
    target = node.get("_target_")
    if target and not OmegaConf.is_missing(node, "_target_") and name == "custom":
        return str(target).rpartition(":")[2].rpartition(".")[2] or name
    if group == "model" and option_name(group, node) == "backbone":
        return PurePath(str(node.get("preset"))).name if node.get("preset") else (canonical(name) or name).lower()
    if group == "dataset" and name == "csv" and "path" in node.keys() and not OmegaConf.is_missing(node, "path") \
            and node.get("path"):
        return PurePath(str(node.get("path"))).stem or name
    return name


def option(group: str, node) -> Option:
    """The registered option a (validated) group node is (option_name)."""
    found = OPTIONS[group].get(option_name(group, node))
    if found is None:
        raise CnnrunError(f"{group}.name={node.get('name')} is unknown; expected one of {', '.join(OPTIONS[group])}")
    return found


IDENTITY_GROUPS = ("model", "optimizer", "augment", "dataset", "trainer")  # the config's parts a run's identity reads


def identity_flags(group: str) -> dict[str, tuple[bool | str, Any]]:
    """{key: (its identity flag, its default)} over the schemas of a group's options (the first option's, where
    two state a key): a key not named here (the user's own code's arguments) is part of the identity."""
    classes = {"trainer": [Trainer], "augment": [Augment]}.get(group) or list(dict.fromkeys(SCHEMAS[group].values()))
    flags: dict[str, tuple[bool | str, Any]] = {}
    for cls in classes:
        for f in fields(cls):
            flags.setdefault(f.name, (f.metadata.get("identity", True), f.default))
    return flags


def register() -> None:
    """Stores the schemas in Hydra's ConfigStore (idempotent): `schema/config` and `schema/GROUP/NAME`."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(group="schema", name="config", node=Config)
    for group, options in SCHEMAS.items():
        for name, schema in options.items():
            own = next(f.default for f in fields(schema) if f.name == "name")  # a backbone's network, custom's "custom"
            cs.store(group=f"schema/{group}", name=name, node=schema() if own is not MISSING else schema(name=name))


def register_resolvers() -> None:
    """`${cnnrun_uid:}`: a random suffix, drawn once per config, so two runs never share a directory;
    `${cnnrun_owned:...}`: see _owned; `${cnnrun_name:GROUP}`: the model's or dataset's display_name."""
    import secrets

    if not OmegaConf.has_resolver("cnnrun_uid"):
        OmegaConf.register_new_resolver("cnnrun_uid", lambda: secrets.token_hex(3), use_cache=True)
    if not OmegaConf.has_resolver("cnnrun_owned"):
        OmegaConf.register_new_resolver("cnnrun_owned", _owned)
    if not OmegaConf.has_resolver("cnnrun_name"):  # ${cnnrun_name:model}: display_name, for run directories
        OmegaConf.register_new_resolver("cnnrun_name", lambda group, *, _root_: display_name(group, _root_[group]))


def _owned(value, otherwise=None, *, _root_):
    """`${cnnrun_owned:VALUE[,OTHERWISE]}`: VALUE in the process that owns the run directory, OTHERWISE (None)
    in the other processes of a distributed run (config/cluster.py), so only process 0 writes there."""
    from cnnrun.config.cluster import follower

    return otherwise if follower(_root_) else value
