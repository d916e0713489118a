"""Training recipes: an exponential moving average of the weights, early stopping, the best epoch's weights."""

import csv

import keras
import numpy as np
import pytest

from cnnrun.data import load_dataset
from cnnrun.training.loop import ValidateTheAverage
from cnnrun.training.optim import average_weights, build_optimizer
from cnnrun.training.train import train
from tests.conftest import make_config, refusal
from tests.test_resume import interrupt_at


def test_ema_equals_the_closed_form_average_and_training_goes_on_from_its_own_weights():
    cfg = make_config("optimizer=sgd", "optimizer.lr=0.1", "optimizer.momentum=0")
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="zeros")])
    model.compile(optimizer=build_optimizer(cfg.optimizer, total_steps=6, ema=0.9),
                  loss=lambda y, p: keras.ops.mean(p))  # d loss / d w = mean(x) = 1: w_t = -0.1 t exactly
    x, y = np.ones((8, 1), "float32"), np.zeros((8, 1), "float32")
    val_losses = []
    for epoch in range(3):  # cnnrun's loop: one fit() per epoch, two steps each, validation on the average
        h = model.fit(x, y, batch_size=4, epochs=epoch + 1, initial_epoch=epoch, shuffle=False, verbose=0,
                      validation_data=(x, y), callbacks=[ValidateTheAverage()])
        val_losses += h.history["val_loss"]
    w = float(model.weights[0].numpy()[0, 0])
    assert w == pytest.approx(-0.6, abs=1e-6)  # not reset to the average after each epoch or validation
    average, averages = 0.0, []
    for t in range(1, 7):  # Keras' rule: the first step copies the weights, then a = 0.9 a + 0.1 w_t
        average = -0.1 if t == 1 else 0.9 * average + 0.1 * (-0.1 * t)
        averages.append(average)
    assert val_losses == pytest.approx(averages[1::2], abs=1e-6)  # each epoch's validation saw the average
    assert average_weights(model)
    assert float(model.weights[0].numpy()[0, 0]) == pytest.approx(average, abs=1e-6)


def history(run_dir) -> list[dict]:
    with open(run_dir / "history.csv", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


# Without dropout mnist_cnn overfits 450 images within 12 epochs whatever the rounding (with dropout, whether its
# validation loss turned up by epoch 12 depended on the CPU and the optimizer's kernels)
RECIPE = ["model=mnist_cnn", "model.dropout=false", "dataset.limit=600", "trainer.epochs=12", "trainer.val_split=0.25",
          "trainer.patience=2", "trainer.monitor=val_loss", "trainer.restore_best=true", "optimizer.lr=0.003",
          "trainer.seed=3"]


def test_early_stopping_stops_where_it_should_and_the_best_epoch_is_what_is_evaluated(tmp_path):
    cfg = make_config(*RECIPE)
    m = train(cfg, tmp_path / "run")
    assert m["status"] == "ok"
    rows = history(tmp_path / "run")
    losses = [r["val_loss"] for r in rows]
    best, stop = 0, None
    for e in range(len(losses)):  # the rule, over the recorded validation losses
        if losses[e] < losses[best]:
            best = e
        if e - best >= 2:
            stop = e + 1
            break
    assert stop is not None, losses  # this recipe overfits 450 images: the rule fires
    assert m.get("stopped_early_after") == stop and len(rows) == stop
    assert m["evaluated_weights"] == f"epoch {best + 1} (best val_loss {losses[best]:.4f})"
    # model.keras holds that epoch's weights: its loss on the validation set is the one recorded then
    data = load_dataset(cfg.dataset, seed=3, val_split=0.25, batch_size=32)
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    probs = model.predict(data.x_val, verbose=0)
    val_loss = float(np.mean(-np.log(probs[np.arange(len(probs)), data.y_val] + 1e-12)))
    assert val_loss == pytest.approx(losses[best], rel=2e-3)
    if stop:
        assert val_loss != pytest.approx(losses[-1], rel=2e-3)  # and not the last epoch's


@pytest.mark.slow  # three full runs (40 s): `make test-full`
def test_a_resumed_run_keeps_the_early_stopping_state(tmp_path, monkeypatch):
    whole = train(make_config(*RECIPE, "trainer.ema=0.9"), tmp_path / "whole")
    interrupt_at(monkeypatch, 2)
    cut = train(make_config(*RECIPE, "trainer.ema=0.9"), tmp_path / "cut")
    monkeypatch.undo()
    assert cut["status"] == "interrupted"
    done = train(make_config(*RECIPE, "trainer.ema=0.9", "trainer.resume=true"), tmp_path / "cut")
    assert done["status"] == "ok" and done["resumed_from_epoch"] == 2
    for key in ("test_accuracy", "test_loss", "evaluated_weights", "epochs"):
        assert done[key] == whole[key], key
    assert done.get("stopped_early_after") == whole.get("stopped_early_after")
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731 - wall clock
    assert strip(history(tmp_path / "cut")) == strip(history(tmp_path / "whole"))


def test_recipe_settings_are_checked():
    assert "trainer.val_split=0" in refusal("trainer.patience=3", "trainer.val_split=0")
    assert "trainer.ema=1.5" in refusal("trainer.ema=1.5")
    assert "trainer.patience=0" in refusal("trainer.patience=0", "trainer.val_split=0.2")
    assert "val_acc" in refusal("trainer.monitor=val_acc", "trainer.val_split=0.2")


def test_runs_recorded_before_these_settings_keep_their_identity():
    from cnnrun import record

    ident = record.identity(make_config())["trainer"]
    assert not {"ema", "patience", "monitor", "restore_best"} & set(ident)  # off: left out, as before they existed
    assert record.identity(make_config("trainer.ema=0.99"))["trainer"]["ema"] == 0.99


def _mix(**kwargs):
    from cnnrun.data.augment import Mix

    return Mix(4, seed=7, **kwargs)


def _batch():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 1, (8, 12, 12, 1)).astype("float32"), np.array([0, 1, 2, 3, 0, 1, 2, 3], "int32")


def test_mixup_blends_images_and_labels_alike():
    x, y = _batch()
    layer = _mix(mixup_alpha=0.4)
    for _ in range(5):
        images, targets = (keras.ops.convert_to_numpy(t) for t in layer([x, y], training=True))
        onehot = np.eye(4)[y]
        lam = float(np.linalg.lstsq((onehot - onehot[::-1]).reshape(-1, 1), (targets - onehot[::-1]).reshape(-1),
                                    rcond=None)[0][0])
        np.testing.assert_allclose(targets, lam * onehot + (1 - lam) * onehot[::-1], atol=1e-6)
        np.testing.assert_allclose(images, lam * x + (1 - lam) * x[::-1], atol=1e-5)
        np.testing.assert_allclose(targets.sum(axis=1), 1, atol=1e-6)
        assert 0 <= images.min() and images.max() <= 1 and 0 <= lam <= 1


def test_cutmix_pastes_one_box_and_weighs_the_labels_by_area():
    x, y = _batch()
    seen = set()
    layer = _mix(cutmix_alpha=1.0)
    for _ in range(6):
        images, targets = (keras.ops.convert_to_numpy(t) for t in layer([x, y], training=True))
        own = np.isclose(images, x).all(axis=-1)
        other = np.isclose(images, x[::-1]).all(axis=-1)
        assert (own | other).all()  # every pixel is its own or its partner's
        taken = (~own[0]).mean()
        kept = targets[0, y[0]]  # image 0's partner has another label (y[-1] = 3)
        assert kept == pytest.approx(1 - taken, abs=1e-6)
        np.testing.assert_allclose(targets.sum(axis=1), 1, atol=1e-6)
        seen.add(round(float(taken), 3))
    assert len(seen) > 1  # a new box each batch


def test_mix_is_the_identity_outside_training_and_beta_draws_are_right():
    x, y = _batch()
    images, targets = _mix(mixup_alpha=0.2, cutmix_alpha=1.0)([x, y], training=False)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(images), x)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(targets), np.eye(4)[y])
    from cnnrun.data.augment import beta_sample

    from scipy import stats

    generator = keras.random.SeedGenerator(0)
    draws = np.array([float(beta_sample(0.5, generator)) for _ in range(500)])  # eager draws: ~7 ms each
    assert draws.min() >= 0 and draws.max() <= 1
    assert draws.mean() == pytest.approx(0.5, abs=0.05) and draws.var() == pytest.approx(1 / 8, abs=0.015)
    assert stats.kstest(draws, "beta", args=(0.5, 0.5)).pvalue > 0.01  # the whole distribution, not two moments


def test_a_mixup_cutmix_run_stays_compiled_and_saves_a_plain_classifier(tmp_path):
    m = train(make_config("model=dense", "augment=[flip,mixup,cutmix]", "trainer.jit=true",
                          "trainer.val_split=0.2", "trainer.label_smoothing=0.1", "trainer.epochs=2"), tmp_path / "run")
    assert m["status"] == "ok" and m["jit"] is True and m["test_accuracy"] > 0.3
    rows = history(tmp_path / "run")
    assert {"loss", "accuracy", "val_loss", "val_accuracy"} <= set(rows[0]) and len(rows) == 2
    model = keras.models.load_model(tmp_path / "run" / "model.keras")
    assert "mix" not in {layer.name for layer in model.layers} and len(model.inputs) == 1
    assert "augment=cutmix mixes labels" in refusal("dataset=folder", "dataset.path=/tmp", "dataset.cache=false",
                                                    "augment=cutmix")
