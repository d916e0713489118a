"""The presets that go past the articles (fast_fashion, best_fashion, best_mnist) and what they use:
ResNet, learning-rate schedules, weight decay, label smoothing and mirror test-time augmentation."""

import csv

import keras
import numpy as np
import pytest

from cnnrun.models import build_model
from cnnrun.training.optim import OneCycle, build_loss, build_optimizer
from cnnrun.training.train import train
from tests.conftest import read_metrics, refusal


@pytest.mark.parametrize("preset", ["fast_fashion", pytest.param("best_fashion_recipes", marks=pytest.mark.slow),
                                    pytest.param("best_mnist", marks=pytest.mark.slow)])  # best_fashion: in its
# variant and in the smoke sweep (test_debug.py); best_mnist (about 50 s): the ResNet path is fast_fashion's too
def test_preset_trains_at_tiny_size_on_cpu(cfg_factory, tmp_path, preset):
    cfg = cfg_factory(f"experiment={preset}", "dataset=digits", "dataset.limit=200", "trainer.epochs=2",
                      "trainer.batch_size=64", "trainer.verbose=0")
    m = train(cfg, tmp_path)
    assert m["status"] == "ok" and m["epochs"] == 2 and m["model"] == "resnet"
    assert read_metrics(tmp_path)["test_accuracy"] == m["test_accuracy"]
    with open(tmp_path / "history.csv") as f:
        lrs = [float(row["lr"]) for row in csv.DictReader(f)]
    assert lrs[-1] < cfg.optimizer.lr  # the schedule really moves the learning rate
    if preset == "best_fashion_recipes":  # EMA, mixup/cutmix and the best epoch's averaged weights
        assert cfg.trainer.ema and cfg.augment.mixup and cfg.augment.cutmix and m["val_images"] == 20
        assert m["evaluated_weights"].startswith("epoch ") and "val_accuracy" in m["evaluated_weights"]
        assert len(keras.saving.load_model(tmp_path / "model.keras").inputs) == 1  # a plain classifier


def test_best_fashion_stays_under_two_million_parameters(cfg_factory):
    cfg = cfg_factory("experiment=best_fashion", tiny=False)
    model = build_model(cfg.model, (28, 28, 1), 10)
    assert 1_000_000 < model.count_params() <= 2_000_000
    assert model.get_layer("s3b3_add") is not None  # three stages of three blocks: ResNet-20
    assert "model.depth=21 must be 6n + 2" in refusal("model=resnet", "model.depth=21")  # the schema's rule, once


def test_schedules_warm_up_and_decay(cfg_factory):
    one = OneCycle(0.4, total_steps=100, warmup_steps=25)
    values = [float(one(s)) for s in (0, 25, 62, 100)]
    assert values[0] == 0 and values[1] == pytest.approx(0.4) and 0 < values[2] < 0.4 and values[3] == 0
    cfg = cfg_factory("optimizer=sgd", "optimizer.schedule=cosine", "optimizer.warmup=0.1", "optimizer.lr=0.2")
    opt = build_optimizer(cfg.optimizer, total_steps=100)
    lr = opt.learning_rate  # Keras evaluates the schedule at the optimizer's step
    assert float(keras.ops.convert_to_numpy(lr)) == pytest.approx(0.0)


def test_label_smoothing_matches_its_definition():
    y_true = np.array([0, 2])
    y_pred = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], "float32")
    got = keras.ops.convert_to_numpy(build_loss(0.3, 3)(y_true, y_pred))
    targets = np.full((2, 3), 0.1)
    targets[[0, 1], y_true] += 0.7  # (1 - 0.3) one-hot + 0.3 / 3 everywhere
    assert np.allclose(got, -(targets * np.log(y_pred)).sum(axis=1), atol=1e-5)
    assert build_loss(0.0, 3) == "sparse_categorical_crossentropy"


def test_flip_tta_averages_with_the_mirror(cfg_factory, tmp_path, monkeypatch):
    import cnnrun.training.loop as T

    seen = []
    real = T.predict

    def spy(model, x, batch_size):
        seen.append(np.array(x))
        return real(model, x, batch_size)

    monkeypatch.setattr(T, "predict", spy)
    m = train(cfg_factory("model=dense", "trainer.tta=flip"), tmp_path)
    assert m["status"] == "ok" and len(seen) == 2
    assert np.array_equal(seen[1], seen[0][:, :, ::-1])  # the second pass is the mirror image
