"""`cnnrun predict` gives the run's own evaluation back on its test images."""

import csv
from pathlib import Path

import numpy as np
from conftest import run_cli
from PIL import Image
from test_folder import make_photos

from cnnrun.data import load_dataset
from cnnrun.commands.predict import predict_files
from cnnrun.training.train import train


def test_predictions_match_the_runs_evaluation(cfg_factory, tmp_path):
    photos = make_photos(tmp_path / "photos")
    cfg = cfg_factory("dataset=folder", f"dataset.path={photos}", "dataset.image_size=32", "model=tf_cnn",
                      "trainer.batch_size=8", "trainer.epochs=2")
    metrics = train(cfg, tmp_path / "run")
    ds = load_dataset(cfg.dataset, seed=cfg.trainer.seed)
    rows, unreadable = predict_files(tmp_path / "run", [Path(f) for f in ds.test_files], top=2)
    assert not unreadable and len(rows) == len(ds.test_files)
    predicted = [top[0][0] for _, top in rows]
    accuracy = np.mean([p == ds.class_names[y] for p, y in zip(predicted, ds.y_test)])
    assert accuracy == metrics["test_accuracy"]
    wrong = {r["source"]: r["predicted"] for r in csv.DictReader(open(tmp_path / "run" / "misclassified.csv"))}
    for (f, top) in rows:
        if str(f) in wrong:
            assert top[0][0] == wrong[str(f)]
        assert top[0][1] >= top[1][1]


def test_cli_table_csv_and_unreadable_files(cfg_factory, tmp_path):
    cfg = cfg_factory("model=dense")
    train(cfg, tmp_path / "run")
    images = tmp_path / "imgs"
    images.mkdir()
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(images / "black.png")
    Image.fromarray(np.full((50, 40, 3), 200, np.uint8)).save(images / "big_rgb.jpg")  # resized, made gray
    (images / "fake.png").write_text("not an image")
    out = run_cli("predict", str(tmp_path / "run"), str(images), "--top", "3", "--out", str(tmp_path / "p.csv"))
    assert out.returncode == 2 and "fake.png" in out.stderr and "cannot read" in out.stderr
    rows = list(csv.DictReader(open(tmp_path / "p.csv")))
    assert sorted(r["file"].split("/")[-1] for r in rows) == ["big_rgb.jpg", "black.png"]
    assert all(r["class_3"] in [str(i) for i in range(10)] for r in rows)
    missing = run_cli("predict", str(tmp_path), str(images))
    assert missing.returncode == 2 and "model.keras" in missing.stderr
    here = tmp_path / "elsewhere"
    here.mkdir()
    default = run_cli("predict", str(tmp_path / "run"), str(images / "black.png"), cwd=here)
    assert default.returncode == 0, default.stderr
    assert (tmp_path / "run" / "predictions.csv").is_file() and not list(here.iterdir())  # beside the model
