"""debug=smoke: every preset in seconds, every artifact written and checked (the CI smoke run)."""

import csv
from pathlib import Path

import pytest
from conftest import FASHION_DIR, make_config, read_metrics, run_cli

from cnnrun import artifacts
from cnnrun.train import train

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml"))


def test_smoke_sweep_runs_every_preset_and_names_what_is_missing(tmp_path):
    sweep = tmp_path / "smoke"
    r = run_cli("train", "-m", "experiment=glob(*)", "debug=smoke", f"hydra.sweep.dir={sweep}", timeout=900)
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr[-3000:]
    rows = {row["experiment"]: row for row in csv.DictReader(open(sweep / "summary.csv", encoding="utf-8"))}
    assert sorted(rows) == PRESETS
    for name, row in rows.items():
        m = read_metrics(sweep / row["run"])
        if m["dataset"] == "folder":  # article 002 / 004: a photo folder only the user has
            assert row["status"] == "failed" and "needs dataset.path" in row["error"], name
        elif m["dataset"] == "mnist" and row["status"] != "ok":  # MNIST cannot be downloaded offline
            assert "MNIST" in row["error"] or "mnist" in row["error"], (name, row["error"])
        elif FASHION_DIR.is_dir():
            assert row["status"] == "ok", (name, row["error"])
            assert m["epochs"] == 1 and m["train_images"] <= 128 and m["test_images"] == 64, name
    assert r.returncode == (1 if any(row["status"] != "ok" for row in rows.values()) else 0)


def test_the_artifact_check_finds_a_broken_file(tmp_path):
    cfg = make_config("model=dense", "debug=smoke")
    m = train(cfg, tmp_path / "run")
    assert m["status"] == "ok" and cfg.debug.check_artifacts
    assert artifacts.verify(tmp_path / "run", m, cfg.output, augmented=False) == []
    (tmp_path / "run" / "history.csv").write_text("epoch\n")
    (tmp_path / "run" / "curves.png").write_bytes(b"not a png")
    problems = artifacts.verify(tmp_path / "run", m, cfg.output, augmented=False)
    assert problems[0] == "history.csv is wrong" and problems[1].startswith("curves.png: UnidentifiedImageError")
    assert len(problems) == 2


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
def test_one_preset_smoke_run_is_quick(tmp_path):
    r = run_cli("train", "experiment=best_fashion", "debug=smoke", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr[-2000:]
    m = read_metrics(tmp_path / "run")
    assert m["status"] == "ok" and m["model"] == "resnet" and m["train_seconds"] < 30
