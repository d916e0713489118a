"""debug=smoke: every preset in seconds, every artifact written and checked (the CI smoke run)."""

import csv
import json
from pathlib import Path

import pytest
from conftest import FASHION_DIR, make_config, read_metrics, refusal, run_cli

from cnnrun.record import artifacts
from cnnrun.training.train import train

PRESETS = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "conf" / "experiment").glob("*.yaml"))


def check_smoke_sweep(sweep: Path, r) -> None:
    """What the README promises of `cnnrun train -m 'experiment=glob(*)' debug=smoke` (tests/test_readme.py runs it
    as written): a row per preset; a preset whose data this machine lacks is a failed row saying what is missing;
    the others ok at the smoke size; exit 1 exactly when a row failed."""
    rows = {row["experiment"]: row for row in csv.DictReader(open(sweep / "summary.csv", encoding="utf-8"))}
    assert sorted(rows) == PRESETS
    for name, row in rows.items():
        m = read_metrics(sweep / row["run"])
        if m["dataset"] == "folder":  # article 002 / 004: a photo folder only the user has
            assert row["status"] == "failed" and row["error"].startswith("dataset=folder needs dataset.path"), name
        elif m["dataset"] == "mnist" and row["status"] != "ok":  # MNIST cannot be downloaded offline
            assert "MNIST" in row["error"] or "mnist" in row["error"], (name, row["error"])
        elif FASHION_DIR.is_dir():
            assert row["status"] == "ok", (name, row["error"])
            assert m["epochs"] == 1 and m["train_images"] <= 128 and m["test_images"] == 64, name
            assert m["train_seconds"] < 30, (name, m["train_seconds"])  # a smoke run is quick, ResNet-20 too
    assert r.returncode == (1 if any(row["status"] != "ok" for row in rows.values()) else 0)
    summary = r.stdout.strip().splitlines()
    assert summary[-1].startswith(f"written: {sweep / 'summary.csv'}") and " runs: " in summary[-2]


def test_the_artifact_check_finds_a_broken_file(tmp_path):
    cfg = make_config("model=dense", "debug=smoke", "output.plots=true")  # TINY's plots=false came after smoke's
    m = train(cfg, tmp_path / "run")
    assert m["status"] == "ok" and "smoke" in cfg.hooks
    assert artifacts.verify(tmp_path / "run", m, cfg.output, augmented=False) == []
    (tmp_path / "run" / "history.csv").write_text("epoch\n")
    (tmp_path / "run" / "curves.png").write_bytes(b"not a png")
    problems = artifacts.verify(tmp_path / "run", m, cfg.output, augmented=False)
    assert problems[0] == "history.csv is wrong" and problems[1].startswith("curves.png: UnidentifiedImageError")
    assert len(problems) == 2


def test_overfit_passes_for_a_model_that_learns(tmp_path):
    m = train(make_config("dataset=digits", "model=dense", "trainer.verbose=0", "debug=overfit", tiny=False),
              tmp_path / "run")
    o = m["overfit"]
    assert m["status"] == "ok" and o["passed"] and o["end_loss"] <= 0.1 * o["start_loss"]
    assert o["epochs"] == m["epochs"] < 100  # stopped as soon as the loss was low enough
    assert m["train_images"] == 64 and m["final_train_accuracy"] >= 0.9


def test_overfit_fails_clearly_when_the_loss_does_not_fall(tmp_path):
    r = run_cli("train", "dataset=digits", "model=dense", "debug=overfit", "optimizer.lr=1e-9", "trainer.epochs=5",
                f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    error = [line for line in r.stderr.splitlines() if line.startswith("cnnrun: error:")]
    assert len(error) == 1 and "debug=overfit: the training loss went from" in error[0] and "optimizer.lr" in error[0]
    m = read_metrics(tmp_path / "run")
    assert m["status"] == "failed" and m["overfit"]["passed"] is False and m["epochs"] == 5


def test_profile_times_the_steps_and_writes_a_trace(tmp_path):
    m = train(make_config("model=cnn4", "debug=profile", "hooks.profile.warmup=2", "hooks.profile.steps=5",
                          "hooks.profile.trace=2", "trainer.epochs=3"), tmp_path / "run")
    assert m["status"] == "ok"
    p = m["profile"]
    assert p["timed_steps"] == 5 and p["backend"] in ("tensorflow", "jax")
    assert p["median_ms"]["step"] > 0 and p["median_ms"]["input"] >= 0 and p["input_alone_ms"] > 0
    assert sum(p["share"].values()) == pytest.approx(1, abs=1e-3)
    assert json.loads((tmp_path / "run" / "profile.json").read_text()) == p
    text = (tmp_path / "run" / "profile.txt").read_text()
    assert "step" in text and "input" in text and "callbacks" in text
    traces = list((tmp_path / "run" / "profile").rglob("*.xplane.pb"))
    assert traces and traces[0].stat().st_size > 1000  # the backend's own trace, for TensorBoard's profile tab
    if p["backend"] == "jax":
        assert list((tmp_path / "run" / "profile").rglob("perfetto_trace.json.gz"))
    assert not (tmp_path / "run" / "model.keras").exists()  # a timing run, not a result


def test_debug_options_are_checked():
    assert "hooks.profile.steps=0" in refusal("debug=profile", "hooks.profile.steps=0")
    assert "hooks.overfit.ratio=2" in refusal("debug=overfit", "hooks.overfit.ratio=2")
