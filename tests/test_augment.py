"""The augmentation layer: article semantics, training-only, seeded, and compiled-step friendly."""

import keras
import numpy as np
import pytest
from keras import ops

from cnnrun import CnnrunError
from cnnrun.data.augment import Augment, build_augment
from cnnrun.training.train import assemble


def images(n=16, size=28, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.2, 0.8, size=(n, size, size, 1)).astype("float32")


def run(layer, x, training=True):
    return ops.convert_to_numpy(layer(ops.convert_to_tensor(x), training=training))


def test_identity_when_not_training():
    layer = Augment(flip_horizontal=True, rotate=20, shift_width=0.1, erase_p=1.0, seed=1)
    x = images()
    np.testing.assert_array_equal(run(layer, x, training=False), x)


def test_flip_gives_original_or_mirror_both_seen():
    x = images(64)
    out = run(Augment(flip_horizontal=True, seed=3), x)
    same = [np.array_equal(o, i) for o, i in zip(out, x)]
    mirrored = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, x)]
    assert all(s or m for s, m in zip(same, mirrored))
    assert 10 < sum(mirrored) < 54  # about half


def test_zero_affine_is_identity_and_shift_moves_pixels():
    x = np.zeros((1, 28, 28, 1), "float32")
    x[0, 10:14, 10:14] = 1.0
    layer = Augment(shift_width=0.3, shift_height=0.3, fill_mode="constant", seed=5)
    outs = [run(layer, x) for _ in range(5)]
    centres = [np.argwhere(o[0, ..., 0] > 0.5).mean(axis=0) for o in outs]
    assert any(np.abs(c - [11.5, 11.5]).max() > 1 for c in centres)  # it moved
    assert all(np.abs(c - [11.5, 11.5]).max() <= 0.3 * 28 + 1 for c in centres)  # within the range
    assert all(o.sum() == pytest.approx(16, abs=1.5) for o in outs)  # a shift keeps the square whole


def test_warp_matches_keras_affine_transform():
    from cnnrun.data.augment import warp

    x = images(6)
    layer = Augment(rotate=30, shear=10, zoom=0.2, shift_width=0.1, shift_height=0.1, seed=4)
    m = layer._affine_matrices(ops.convert_to_tensor(x))
    # Compare where the source point lies inside the image; outside, fill conventions differ at the edge.
    a = ops.convert_to_numpy(m)[:, :6, None, None]
    ys, xs = np.mgrid[0:28, 0:28].astype("float32")
    sx, sy = a[:, 0] * xs + a[:, 1] * ys + a[:, 2], a[:, 3] * xs + a[:, 4] * ys + a[:, 5]
    inside = (sx >= 0) & (sx <= 27) & (sy >= 0) & (sy <= 27)
    assert inside.mean() > 0.6
    ours = ops.convert_to_numpy(warp(ops.convert_to_tensor(x), m, "nearest"))[..., 0]
    ref = ops.convert_to_numpy(ops.image.affine_transform(x, m, interpolation="bilinear"))[..., 0]
    np.testing.assert_allclose(ours[inside], ref[inside], atol=2e-3)
    zeros = ops.convert_to_numpy(warp(ops.convert_to_tensor(x), m, "constant"))[..., 0]
    assert np.all(zeros[(sx < -1) | (sx > 28) | (sy < -1) | (sy > 28)] == 0)


def test_rotation_by_90_degrees_matches_numpy():
    x = images(4)
    layer = Augment(rotate=90, seed=0)
    layer._uniform = lambda shape, low, high: ops.ones(shape)  # always the top of the range: +90 degrees
    out = run(layer, x)
    assert any(np.allclose(out[0], np.rot90(x[0], k, axes=(0, 1)), atol=1e-4) for k in (1, 3))


def test_erasing_matches_the_article_ranges():
    x = np.zeros((400, 32, 32, 1), "float32")
    layer = Augment(erase_p=1.0, erase_area=(0.2, 0.4), erase_aspect=(0.3, 1 / 0.3), erase_fill="patch",
                    erase_value_range=(0.5, 1.0), seed=7)
    out = run(layer, x)[..., 0]
    erased = out > 0
    fractions = erased.reshape(400, -1).mean(axis=1)
    assert (fractions > 0).mean() > 0.97  # p = 1: (nearly) every image; 64 tries rarely all miss
    hit = fractions[fractions > 0]
    # floor() of the patch sides makes areas a little smaller than the drawn area
    assert hit.min() >= 0.2 * 0.75 and hit.max() <= 0.4 + 1e-6
    for img in out[fractions > 0][:50]:
        rows, cols = np.nonzero(img)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert h * w == (img > 0).sum()  # one solid rectangle
        assert 0.3 * 0.6 <= h / w <= (1 / 0.3) / 0.6
        assert np.unique(img[img > 0]).size == 1  # "patch": one value per patch
    pixel = run(Augment(erase_p=1.0, erase_fill="pixel", erase_value_range=(0.5, 1.0), seed=7), x)[..., 0]
    assert np.unique(pixel[0][pixel[0] > 0]).size > 10  # "pixel": noise per pixel


def test_erasing_probability():
    x = np.zeros((1000, 16, 16, 1), "float32")
    out = run(Augment(erase_p=0.5, erase_area=(0.02, 0.1), seed=2), x)
    assert 0.42 < (out.reshape(1000, -1).max(axis=1) > 0).mean() < 0.58


def test_seeded():
    x = images()
    a = run(Augment(rotate=20, erase_p=0.5, seed=11), x)
    b = run(Augment(rotate=20, erase_p=0.5, seed=11), x)
    np.testing.assert_array_equal(a, b)


def test_article_presets(cfg_factory):
    a4 = build_augment(cfg_factory("augment=article004").augment, seed=0)
    assert (a4.flip_horizontal, a4.shift_width, a4.rotate, a4.erase_p, a4.erase_area, a4.erase_fill) == \
        (True, 0.1, 20.0, 0.5, (0.2, 0.4), "pixel")
    a0 = build_augment(cfg_factory("augment=article000").augment, seed=0)
    assert (a0.rotate, a0.shift_width, a0.shift_height, a0.shear, a0.zoom, a0.erase_p) == (8.0, 0.08, 0.08, 0.3, 0.08, 0)
    assert build_augment(cfg_factory("augment=none").augment, seed=0) is None


class _Data:
    input_shape, num_classes = (28, 28, 1), 10


def _compiled(model, jit="auto"):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit)
    x = np.random.default_rng(0).integers(0, 255, (64, 28, 28, 1)).astype("uint8")
    model.fit(x, np.arange(64) % 10, batch_size=32, epochs=1, verbose=0)
    return model.jit_compile


def test_augmentation_keeps_the_train_step_compiled(cfg_factory):
    """With every geometric op on, the step stays XLA-compiled; Keras' own RandomRotation would turn it off."""
    cfg = cfg_factory("model=dense", "augment=[flip,shift,rotate,shear,zoom,erasing]")
    _, trainer = assemble(cfg.model, _Data, build_augment(cfg.augment, seed=0))
    assert all(layer.supports_jit for layer in trainer._flatten_layers())
    assert _compiled(trainer, True) is True  # XLA really compiles it (TensorFlow and JAX alike)
    if keras.backend.backend() == "jax":
        _, trainer = assemble(cfg.model, _Data, build_augment(cfg.augment, seed=0))
        assert _compiled(trainer, "auto") is True  # on JAX "auto" means jax.jit unless a layer opts out
    # The control: the same model around Keras' RandomRotation loses compilation even when asked for it.
    inputs = keras.Input((28, 28, 1), dtype="uint8")
    x = keras.layers.RandomRotation(0.05)(keras.layers.Rescaling(1 / 255)(inputs))
    outputs = keras.layers.Dense(10, activation="softmax")(keras.layers.Flatten()(x))
    assert not all(layer.supports_jit for layer in keras.Model(inputs, outputs)._flatten_layers())


def _history(run_dir):
    import csv

    with open(run_dir / "history.csv") as f:
        return [{k: float(v) for k, v in row.items() if k in ("accuracy", "loss")} for row in csv.DictReader(f)]


def test_augment_after_trains_plain_epochs_first(cfg_factory, tmp_path):
    """trainer.augment_after=1: epoch 1 is exactly the unaugmented run's, epoch 2 is not, and the layer is on after."""
    from cnnrun.training.train import train

    base = ("model=dense", "trainer.epochs=2", "trainer.seed=3", "trainer.checkpoint=false")
    plain = tmp_path / "plain"
    train(cfg_factory(*base, "augment=none"), plain)
    gated = tmp_path / "gated"
    m = train(cfg_factory(*base, "augment=[shift,rotate]", "trainer.augment_after=1", "output.plots=true"), gated)
    always = tmp_path / "always"
    train(cfg_factory(*base, "augment=[shift,rotate]"), always)
    assert m["status"] == "ok"
    p, g, a = _history(plain), _history(gated), _history(always)
    assert g[0] == p[0]  # the first epoch saw the plain images
    assert g[0] != a[0]  # (and augmentation does change an epoch)
    assert g[1] != p[1]  # the second did not
    from PIL import Image

    preview = Image.open(gated / "augment_preview.png").convert("L")
    assert preview.size[1] > 300 and np.asarray(preview).std() > 20  # four rows of images, not a blank page


def test_augment_after_is_checked_before_training(cfg_factory, tmp_path):
    from cnnrun.training.train import train

    from tests.conftest import refusal

    for value, words in (("-1", "whole number of plain epochs >= 0"), ("1.5", "must be a whole number")):
        assert words in refusal("augment=flip", "trainer.epochs=3", f"trainer.augment_after={value}")
    with pytest.raises(CnnrunError, match="no augmented epoch"):
        train(cfg_factory("augment=flip", "trainer.epochs=3", "trainer.augment_after=3"), tmp_path)
    assert list(tmp_path.iterdir()) == []  # refused before the run touched its directory


def test_gated_layer_switch(cfg_factory):
    from cnnrun.data.augment import AugmentFrom

    layer = build_augment(cfg_factory("augment=flip").augment, seed=0, gated=True)
    x = images()
    np.testing.assert_array_equal(run(layer, x), x)  # starts off
    switch = AugmentFrom(layer, after=2)
    switch.on_epoch_begin(1)
    np.testing.assert_array_equal(run(layer, x), x)
    switch.on_epoch_begin(2)
    assert not np.array_equal(run(layer, x), x)
    again = Augment.from_config(layer.get_config())  # the flag survives serialisation
    assert again.gated
