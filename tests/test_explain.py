"""cnnrun explain: Grad-CAM / HiResCAM heat-maps that point where the evidence is, and the embedding map."""

import csv

import keras
import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from cnnrun.record import explain
from cnnrun.data import load_dataset
from cnnrun.models import build_model
from cnnrun.training.train import train
from tests.conftest import make_config, make_mnist_like, read_metrics, run_cli


def patch_box(k: int) -> tuple[int, int]:
    """Top-left corner of class k's 6x6 bright square in make_mnist_like."""
    return 2 + 2 * (k // 4) * 3, 2 + (k % 4) * 6


@pytest.fixture(scope="module")
def patch_run(tmp_path_factory):
    """mnist_cnn trained on images whose class is the place of a bright square (and nothing else)."""
    tmp = tmp_path_factory.mktemp("patch")
    make_mnist_like(tmp / "data", n_train=600, n_test=100)
    cfg = make_config("dataset=mnist", f"dataset.path={tmp / 'data'}", "model=mnist_cnn", "trainer.epochs=3",
                      "trainer.batch_size=32", "trainer.val_split=0", "trainer.verbose=0", tiny=False)
    m = train(cfg, tmp / "run")
    assert m["status"] == "ok" and m["test_accuracy"] >= 0.95
    (tmp / "run" / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp / "run" / ".hydra" / "config.yaml")  # as `cnnrun train` leaves it (Hydra writes it)
    return tmp / "run", load_dataset(cfg.dataset, seed=0)


def test_the_heat_map_peaks_on_the_patch_that_decides_the_class(patch_run):
    run_dir, data = patch_run
    parts = explain.cut(keras.models.load_model(run_dir / "model.keras"))
    assert parts.layer == "conv2"  # the last convolution; pooling and dropout after it are skipped
    heat = explain.gradcam(parts, data.x_test, data.y_test)
    assert heat.shape == data.x_test.shape[:3] and heat.min() >= 0 and heat.max() <= 1
    hits = 0
    for h, k in zip(heat, data.y_test):
        r, c = np.unravel_index(h.argmax(), h.shape)
        r0, c0 = patch_box(k)
        hits += r0 - 3 <= r < r0 + 9 and c0 - 3 <= c < c0 + 9  # the 6x6 square, give or take the 24->28 resize
    assert hits >= 80, hits  # a random peak would land there about 14 % of the time
    # and the map follows the evidence: the same image scored for another class does not peak on its square
    other = explain.gradcam(parts, data.x_test[:20], (data.y_test[:20] + 1) % 10)
    assert sum(np.unravel_index(h.argmax(), h.shape)[0] in range(patch_box(k)[0] - 3, patch_box(k)[0] + 9)
               and np.unravel_index(h.argmax(), h.shape)[1] in range(patch_box(k)[1] - 3, patch_box(k)[1] + 9)
               for h, k in zip(other, data.y_test[:20])) < 20


def test_vgg16_is_cut_at_its_last_convolution():
    network = build_model(make_config("model=vgg16", "model.weights=null").model, (32, 32, 1), 10)
    pixels = keras.Input((32, 32, 1), dtype="uint8")
    model = keras.Model(pixels, network(keras.layers.Rescaling(1 / 255, name="scale")(pixels)))
    parts = explain.cut(model)
    assert parts.layer == "vgg16/block5_conv3"  # inside Keras' VGG16; block5_pool after it is skipped
    x = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 1)).astype("uint8")
    heat = explain.gradcam(parts, x, np.array([0, 1, 2]))
    assert heat.shape == (3, 32, 32) and np.isfinite(heat).all() and heat.max() <= 1


def test_gradcam_and_hirescam_agree_behind_global_pooling():
    cfg = make_config("model=resnet", "model.depth=8")
    network = build_model(cfg.model, (28, 28, 1), 10)
    pixels = keras.Input((28, 28, 1), dtype="uint8")
    model = keras.Model(pixels, network(keras.layers.Rescaling(1 / 255, name="scale")(pixels)))
    parts = explain.cut(model)
    assert parts.layer.endswith("_out")  # the last block's output, before the pooling head
    x = np.random.default_rng(0).integers(0, 255, (6, 28, 28, 1)).astype("uint8")
    classes = np.arange(6)
    a, b = explain.gradcam(parts, x, classes, "gradcam"), explain.gradcam(parts, x, classes, "hirescam")
    np.testing.assert_allclose(a, b, atol=1e-4)  # the gradient is the same at every place there


def test_explain_command_writes_pictures_and_one_embedding_row_per_test_image(patch_run, tmp_path):
    run_dir, data = patch_run
    image = tmp_path / "mine.png"
    Image.fromarray(data.x_test[0, ..., 0]).save(image)
    r = run_cli("explain", str(run_dir), str(image), "--max", "4", "--embedding", "pca", "--out", str(tmp_path / "ex"))
    assert r.returncode == 0, r.stderr[-2000:]
    out = tmp_path / "ex"
    rows = list(csv.DictReader(open(out / "embedding.csv", encoding="utf-8")))
    assert len(rows) == len(data.x_test) and [int(r["index"]) for r in rows] == list(range(len(data.x_test)))
    probs = keras.models.load_model(run_dir / "model.keras").predict(data.x_test, verbose=0)
    assert [int(r["correct"]) for r in rows] == [int(p == t) for p, t in zip(probs.argmax(1), data.y_test)]
    for name in ("gradcam.png", "embedding.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 300
    singles = sorted(p.name for p in (out / "gradcam").iterdir())
    wrong = int((probs.argmax(1) != data.y_test).sum())
    assert len(singles) == min(4, wrong) + 1 and any(n.startswith("mine_") for n in singles)
    assert "explain: PCA map of" in r.stdout  # each stage is a line, also in a log
    again = run_cli("explain", str(run_dir), "--max", "0", "--embedding", "none", "--out", str(out))
    assert again.returncode == 0, again.stderr[-2000:]
    assert not (out / "embedding.png").exists() and not list((out / "gradcam").iterdir())  # nothing of the first run


def test_explain_at_the_end_of_training_and_its_refusals(tmp_path):
    m = train(make_config("model=mnist_cnn", "output.explain=true", "output.explain_max=3",
                          "output.explain_embedding=pca"), tmp_path / "run")
    assert m["status"] == "ok" and m["explained"]["layer"] == "conv2"
    assert m["explained"]["embedding"] == m["test_images"] == read_metrics(tmp_path / "run")["test_images"]
    assert (tmp_path / "run" / "explain" / "embedding.png").is_file()
    r = run_cli("explain", str(tmp_path / "run"), "--layer", "fc1")  # made in-process: no saved config
    assert r.returncode == 2 and "has no .hydra/config.yaml to load its test set from" in r.stderr
    assert "or explain images you give" in r.stderr
    r = run_cli("explain", str(tmp_path / "run"), "--layer", "fc1", "--max", "0", "--embedding", "none")
    assert r.returncode == 2 and "--layer fc1 is not a feature map of mnist_cnn" in r.stderr
    r = run_cli("explain", str(tmp_path / "nothing"))
    assert r.returncode == 2 and "holds no run" in r.stderr and "Traceback" not in r.stderr
    dense = train(make_config("model=dense", "output.explain=true", "output.explain_embedding=pca"), tmp_path / "d")
    assert dense["status"] == "ok" and "gradcam" not in dense["explained"] and dense["explained"]["embedding"] > 0
