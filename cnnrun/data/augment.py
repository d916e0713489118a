"""Training-time augmentation as one backend-neutral, jit-able Keras layer.

Keras 3's RandomTranslation / RandomRotation / RandomZoom / RandomShear declare `supports_jit = False`,
which silently turns `jit_compile="auto"` off for the whole model (on JAX: no `jax.jit` at all). Here
rotation, shift, shear and zoom are folded into one random affine matrix per image and applied by one
bilinear warp written with `keras.ops` gathers (TensorFlow's own projective-transform kernel has no XLA
version), flip and random erasing are `keras.ops.where` masks, and the layer keeps `supports_jit = True`. It runs on the device inside the train step and is the identity at
evaluation and prediction time.
"""

from __future__ import annotations

import math

import keras
import numpy as np
from keras import ops


# Keys each augment/*.yaml option may hold; anything else is refused before training.
ERASE_TRIES = 64  # candidate patches per image; the first that fits is used (the article's rejection loop)


@keras.saving.register_keras_serializable(package="cnnrun")
class Augment(keras.layers.Layer):
    """Random flip, affine transform (rotation, shift, shear, zoom) and erasing of [0, 1] images, NHWC.

    Args:
        flip_horizontal: mirror left-right with probability 0.5.
        flip_vertical: mirror top-bottom with probability 0.5.
        rotate: rotation range in degrees, uniform in [-rotate, rotate].
        shift_width: horizontal shift range as a fraction of the width.
        shift_height: vertical shift range as a fraction of the height.
        shear: shear angle range in degrees (ImageDataGenerator's unit).
        zoom: each axis scaled by a factor uniform in [1 - zoom, 1 + zoom].
        erase_p: probability that an image gets a random patch erased (0 = off).
        erase_area: (min, max) patch area as a fraction of the image.
        erase_aspect: (min, max) patch height / width ratio.
        erase_fill: "pixel" (noise per pixel) or "patch" (one random value per patch).
        erase_value_range: (low, high) of the random fill values.
        fill_mode: how the affine transform fills pixels from outside the image: "nearest" (the edge
            pixel, as ImageDataGenerator does) or "constant" (zeros).
        gated: give the layer an on/off switch, the non-trainable scalar `active` (starts off; see
            `AugmentFrom`). A variable, not a Python flag, so flipping it needs no retracing.
        seed: seed of the layer's own random stream.
    """

    def __init__(
        self,
        flip_horizontal=False,
        flip_vertical=False,
        rotate=0.0,
        shift_width=0.0,
        shift_height=0.0,
        shear=0.0,
        zoom=0.0,
        erase_p=0.0,
        erase_area=(0.02, 0.4),
        erase_aspect=(0.3, 1 / 0.3),
        erase_fill="pixel",
        erase_value_range=(0.0, 1.0),
        fill_mode="nearest",
        gated=False,
        seed=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.flip_horizontal = bool(flip_horizontal)
        self.flip_vertical = bool(flip_vertical)
        self.rotate = float(rotate)
        self.shift_width = float(shift_width)
        self.shift_height = float(shift_height)
        self.shear = float(shear)
        self.zoom = float(zoom)
        self.erase_p = float(erase_p)
        self.erase_area = tuple(float(v) for v in erase_area)
        self.erase_aspect = tuple(float(v) for v in erase_aspect)
        self.erase_fill = erase_fill
        self.erase_value_range = tuple(float(v) for v in erase_value_range)
        self.fill_mode = fill_mode
        self.gated = bool(gated)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_jit = True
        if self.gated:
            self.active = self.add_weight(shape=(), initializer="zeros", dtype="float32", trainable=False, name="active")

    @property
    def has_affine(self) -> bool:
        return any((self.rotate, self.shift_width, self.shift_height, self.shear, self.zoom))

    def call(self, images, training=None):
        if not training:
            return images
        dtype = images.dtype
        x = ops.cast(images, "float32")
        batch = ops.shape(x)[0]
        if self.flip_horizontal:
            x = self._maybe(x, ops.flip(x, axis=2), batch)
        if self.flip_vertical:
            x = self._maybe(x, ops.flip(x, axis=1), batch)
        if self.has_affine:
            x = warp(x, self._affine_matrices(x), self.fill_mode)
        if self.erase_p > 0:
            x = self._erase(x)
        if self.gated:  # computed either way (same random stream), kept only while switched on
            x = ops.where(self.active > 0.5, x, ops.cast(images, "float32"))
        return ops.cast(x, dtype)

    def _uniform(self, shape, low, high):
        return keras.random.uniform(shape, minval=low, maxval=high, seed=self.seed_generator)

    def _maybe(self, x, changed, batch):
        """`changed` for a random half of the batch, `x` for the rest."""
        take = self._uniform((batch, 1, 1, 1), 0.0, 1.0) < 0.5
        return ops.where(take, changed, x)

    def _affine_matrices(self, x):
        """One (batch, 8) projective transform mapping output to input pixels, about the image centre.

        M = rotation . shear . zoom, as ImageDataGenerator composes them, plus a shift in pixels.
        """
        batch, height, width = ops.shape(x)[0], x.shape[1], x.shape[2]
        zeros = ops.zeros((batch,))
        theta = self._uniform((batch,), -1.0, 1.0) * math.radians(self.rotate) if self.rotate else zeros
        shear = self._uniform((batch,), -1.0, 1.0) * math.radians(self.shear) if self.shear else zeros
        if self.zoom:
            zx = self._uniform((batch,), 1.0 - self.zoom, 1.0 + self.zoom)
            zy = self._uniform((batch,), 1.0 - self.zoom, 1.0 + self.zoom)
        else:
            zx = zy = ops.ones((batch,))
        tx = self._uniform((batch,), -1.0, 1.0) * (self.shift_width * width) if self.shift_width else zeros
        ty = self._uniform((batch,), -1.0, 1.0) * (self.shift_height * height) if self.shift_height else zeros
        cos, sin = ops.cos(theta), ops.sin(theta)
        # rotation [[c, -s], [s, c]] . shear [[1, -sin(sh)], [0, cos(sh)]] . zoom diag(zx, zy)
        m00 = cos * zx
        m01 = (-cos * ops.sin(shear) - sin * ops.cos(shear)) * zy
        m10 = sin * zx
        m11 = (-sin * ops.sin(shear) + cos * ops.cos(shear)) * zy
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        a2 = cx - m00 * cx - m01 * cy + tx
        b2 = cy - m10 * cx - m11 * cy + ty
        return ops.stack([m00, m01, a2, m10, m11, b2, zeros, zeros], axis=1)

    def _erase(self, x):
        """Random erasing with the article's rejection loop, done for ERASE_TRIES candidates at once."""
        batch, height, width, channels = ops.shape(x)[0], x.shape[1], x.shape[2], x.shape[3]
        shape = (batch, ERASE_TRIES)
        area = self._uniform(shape, *self.erase_area) * (height * width)
        aspect = self._uniform(shape, *self.erase_aspect)
        w = ops.floor(ops.sqrt(area / aspect))
        h = ops.floor(ops.sqrt(area * aspect))
        left = ops.floor(self._uniform(shape, 0.0, float(width)))
        top = ops.floor(self._uniform(shape, 0.0, float(height)))
        fits = (left + w <= width) & (top + h <= height)
        first = ops.argmax(ops.cast(fits, "int32"), axis=1)  # first candidate that fits, as the loop would take
        pick = ops.one_hot(first, ERASE_TRIES)

        def chosen(v):
            return ops.sum(v * pick, axis=1)[:, None, None, None]

        apply = (self._uniform((batch, 1, 1, 1), 0.0, 1.0) < self.erase_p) & (chosen(ops.cast(fits, "float32")) > 0)
        rows = ops.arange(height, dtype="float32")[None, :, None, None]
        cols = ops.arange(width, dtype="float32")[None, None, :, None]
        t, l_ = chosen(top), chosen(left)
        inside = (rows >= t) & (rows < t + chosen(h)) & (cols >= l_) & (cols < l_ + chosen(w))
        low, high = self.erase_value_range
        if self.erase_fill == "pixel":
            fill = self._uniform((batch, height, width, channels), low, high)
        else:
            fill = self._uniform((batch, 1, 1, 1), low, high)
        return ops.where(inside & apply, fill, x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update(
            flip_horizontal=self.flip_horizontal,
            flip_vertical=self.flip_vertical,
            rotate=self.rotate,
            shift_width=self.shift_width,
            shift_height=self.shift_height,
            shear=self.shear,
            zoom=self.zoom,
            erase_p=self.erase_p,
            erase_area=self.erase_area,
            erase_aspect=self.erase_aspect,
            erase_fill=self.erase_fill,
            erase_value_range=self.erase_value_range,
            fill_mode=self.fill_mode,
            gated=self.gated,
            seed=self.seed,
        )
        return config


class AugmentFrom(keras.callbacks.Callback):
    """Switches a gated `Augment` layer on from epoch `after` + 1: the first `after` epochs see plain images.

    Article 000 trained cnn4 for 10 epochs, then went on training the same model (and optimizer) on
    augmented batches; this is that schedule in one run. Set at the start of every epoch, so a
    resumed run gets it right too.
    """

    def __init__(self, layer: Augment, after: int):
        super().__init__()
        self.layer, self.after = layer, int(after)

    def on_epoch_begin(self, epoch, logs=None):
        self.layer.active.assign(1.0 if epoch >= self.after else 0.0)


def warp(images, transforms, fill_mode="nearest"):
    """Bilinear resampling of NHWC `images` by per-image (batch, 8) projective transforms.

    Row i of `transforms` is [a0, a1, a2, b0, b1, b2, 0, 0]: output pixel (x, y) reads input point
    (a0 x + a1 y + a2, b0 x + b1 y + b2), as in tf.raw_ops.ImageProjectiveTransformV3. Written with
    flat gathers so that it compiles under XLA on every backend.
    """
    height, width, channels = images.shape[1], images.shape[2], images.shape[3]
    ys, xs = ops.meshgrid(ops.arange(height, dtype="float32"), ops.arange(width, dtype="float32"), indexing="ij")
    t = [transforms[:, i][:, None, None] for i in range(6)]
    sx = t[0] * xs + t[1] * ys + t[2]  # (batch, H, W) source coordinates
    sy = t[3] * xs + t[4] * ys + t[5]
    inside = (sx > -1) & (sx < width) & (sy > -1) & (sy < height)
    sx = ops.clip(sx, 0.0, width - 1.0)  # clipping the point = repeating the edge pixel ("nearest")
    sy = ops.clip(sy, 0.0, height - 1.0)
    x0, y0 = ops.floor(sx), ops.floor(sy)
    wx, wy = (sx - x0)[..., None], (sy - y0)[..., None]
    x1, y1 = ops.minimum(x0 + 1, width - 1.0), ops.minimum(y0 + 1, height - 1.0)
    flat = ops.reshape(images, (-1, height * width, channels))

    def at(yy, xx):
        index = ops.cast(ops.reshape(yy * width + xx, (-1, height * width, 1)), "int32")
        return ops.reshape(ops.take_along_axis(flat, ops.repeat(index, channels, axis=2), axis=1), ops.shape(images))

    top = at(y0, x0) * (1 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1 - wx) + at(y1, x1) * wx
    out = top * (1 - wy) + bottom * wy
    if fill_mode == "constant":
        out = ops.where(inside[..., None], out, 0.0)
    return out


def build_augment(cfg, seed: int, gated: bool = False) -> Augment | None:
    """The Augment layer for the validated `augment` config node (schema.Augment: every option, unset = None,
    each set one complete and in range), or None when it asks for nothing.

    `gated` adds the on/off switch that `AugmentFrom` drives (trainer.augment_after > 0).
    """
    on = {k: v for k, v in dict(cfg or {}).items() if v is not None and k not in MIXING}  # mixup / cutmix: build_mix
    if not on:
        return None
    get = lambda option, key, off: on[option][key] if option in on else off  # noqa: E731
    kwargs = dict(
        flip_horizontal=get("flip", "horizontal", False),
        flip_vertical=get("flip", "vertical", False),
        rotate=get("rotate", "degrees", 0.0),
        shift_width=get("shift", "width", 0.0),
        shift_height=get("shift", "height", 0.0),
        shear=get("shear", "degrees", 0.0),
        zoom=get("zoom", "amount", 0.0),
    )
    if "erasing" in on:
        e = on["erasing"]
        kwargs.update(erase_p=float(e.p), erase_area=tuple(e.area), erase_aspect=tuple(e.aspect), erase_fill=str(e.fill),
                      erase_value_range=tuple(e.value_range))
    layer = Augment(seed=seed, gated=gated, name="augment", **kwargs)
    return layer if (layer.flip_horizontal or layer.flip_vertical or layer.has_affine or layer.erase_p) else None


MIXING = ("mixup", "cutmix")
GAMMA_TRIES = 16  # Marsaglia-Tsang candidates drawn at once; each is accepted with probability > 0.95


def beta_sample(alpha: float, generator):
    """One draw from Beta(alpha, alpha), as two Gamma(alpha) draws by Marsaglia and Tsang's method with a fixed
    number of candidates (the first accepted is used). keras.random.beta compiles to a gamma kernel that
    XLA lacks on TensorFlow; this is plain arithmetic, so the step stays compiled on every backend."""

    def gamma():
        d = alpha + 1.0 - 1.0 / 3.0  # Gamma(alpha + 1), then the boost U ** (1 / alpha) gives Gamma(alpha)
        c = 1.0 / math.sqrt(9.0 * d)
        x = keras.random.normal((GAMMA_TRIES,), seed=generator)
        v = (1.0 + c * x) ** 3
        u = keras.random.uniform((GAMMA_TRIES,), seed=generator)
        ok = (v > 0) & (ops.log(u) < 0.5 * x * x + d - d * v + d * ops.log(ops.maximum(v, 1e-12)))
        first = ops.argmax(ops.cast(ok, "int32"))
        value = ops.where(ops.any(ok), d * ops.take(v, first), d)
        boost = keras.random.uniform((), minval=1e-7, maxval=1.0, seed=generator) ** (1.0 / alpha)
        return value * boost

    a, b = gamma(), gamma()
    return a / (a + b)


@keras.saving.register_keras_serializable(package="cnnrun")
class Mix(keras.layers.Layer):
    """Mixup (Zhang et al. 2018) and CutMix (Yun et al. 2019) of a batch and its labels, inside the train step.

    Called on [images in [0, 1], integer labels]; returns [images, soft targets]. In training each batch is
    paired with itself reversed (as timm does) and, with probability `p`, mixed: mixup blends whole images
    with a weight lam ~ Beta(alpha, alpha); cutmix pastes one box of the partner into every image, its area
    1 - lam, and lam is then the area actually kept. With both on, each batch takes one of them at even odds.
    The targets are the same blend of one-hot labels, so they sum to 1. Outside training: the images as they
    are and one-hot targets. Seeded, `keras.ops` only: it compiles with the step on every backend.
    """

    def __init__(self, num_classes, mixup_alpha=None, mixup_p=1.0, cutmix_alpha=None, cutmix_p=1.0, seed=None,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.mixup_alpha, self.mixup_p = mixup_alpha, float(mixup_p)
        self.cutmix_alpha, self.cutmix_p = cutmix_alpha, float(cutmix_p)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)
        self.supports_jit = True

    def _box(self, height, width):
        """(a (height, width) map, 1 inside one random box whose area is 1 - lam, the fraction of it kept)."""
        lam = beta_sample(self.cutmix_alpha, self.generator)
        ratio = ops.sqrt(1.0 - lam)
        cy = keras.random.uniform((), 0.0, float(height), seed=self.generator)
        cx = keras.random.uniform((), 0.0, float(width), seed=self.generator)
        y1, y2 = ops.clip(cy - ratio * height / 2, 0, height), ops.clip(cy + ratio * height / 2, 0, height)
        x1, x2 = ops.clip(cx - ratio * width / 2, 0, width), ops.clip(cx + ratio * width / 2, 0, width)
        ys, xs = ops.meshgrid(ops.arange(height, dtype="float32") + 0.5, ops.arange(width, dtype="float32") + 0.5,
                              indexing="ij")
        box = ops.cast((ys >= y1) & (ys < y2) & (xs >= x1) & (xs < x2), "float32")
        return box, 1.0 - ops.mean(box)

    def call(self, inputs, training=False):
        images, labels = inputs
        targets = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), self.num_classes)
        if not training:
            return [images, targets]
        partner, partner_targets = ops.flip(images, axis=0), ops.flip(targets, axis=0)
        # Both recipes are one blend, images * own + partner * (1 - own), with `own` a per-pixel map (a box of
        # zeros for CutMix, the weight everywhere for mixup, ones for an unmixed batch): the per-batch choices
        # are made on that small map, so the batch itself is touched once (bench/recipes.py).
        height, width = images.shape[1], images.shape[2]
        own, lam = ops.ones((height, width), "float32"), ops.convert_to_tensor(1.0)
        use_cut = None
        if self.cutmix_alpha:
            box, kept = self._box(height, width)
            use_cut = keras.random.uniform((), seed=self.generator) < self.cutmix_p
            if self.mixup_alpha:  # both: one or the other per batch
                use_cut = use_cut & (keras.random.uniform((), seed=self.generator) < 0.5)
            own, lam = ops.where(use_cut, 1.0 - box, own), ops.where(use_cut, kept, lam)
        if self.mixup_alpha:
            weight = beta_sample(self.mixup_alpha, self.generator)
            use_mix = keras.random.uniform((), seed=self.generator) < self.mixup_p
            if use_cut is not None:
                use_mix = use_mix & ops.logical_not(use_cut)
            own, lam = ops.where(use_mix, weight, own), ops.where(use_mix, weight, lam)
        own = ops.cast(own[None, :, :, None], images.dtype)
        lam = ops.cast(lam, targets.dtype)
        return [images * own + partner * (1.0 - own), lam * targets + (1.0 - lam) * partner_targets]

    def compute_output_shape(self, input_shape):
        return [input_shape[0], (input_shape[1][0], self.num_classes)]

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "mixup_alpha": self.mixup_alpha,
                "mixup_p": self.mixup_p, "cutmix_alpha": self.cutmix_alpha, "cutmix_p": self.cutmix_p,
                "seed": self.seed}


def build_mix(cfg, num_classes: int, seed: int) -> Mix | None:
    """The Mix layer for augment.mixup / augment.cutmix, or None when neither is on."""
    mixup, cutmix = (cfg or {}).get("mixup"), (cfg or {}).get("cutmix")
    if mixup is None and cutmix is None:
        return None
    return Mix(num_classes, mixup_alpha=float(mixup.alpha) if mixup is not None else None,
               mixup_p=float(mixup.p) if mixup is not None else 1.0,
               cutmix_alpha=float(cutmix.alpha) if cutmix is not None else None,
               cutmix_p=float(cutmix.p) if cutmix is not None else 1.0, seed=seed + 1, name="mix")


def preview(layer: Augment, images: np.ndarray, copies: int = 3) -> np.ndarray:
    """`copies` augmented versions of each image (uint8 in, float [0, 1] out), shape (copies, N, H, W, C)."""
    x = ops.convert_to_tensor(images.astype("float32") / 255.0)
    was = float(ops.convert_to_numpy(layer.active)) if layer.gated else None
    if layer.gated:
        layer.active.assign(1.0)  # show what the augmentation does once it is on
    try:
        return np.stack([ops.convert_to_numpy(layer(x, training=True)) for _ in range(copies)])
    finally:
        if layer.gated:
            layer.active.assign(was)
