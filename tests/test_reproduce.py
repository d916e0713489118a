"""`python -m cnnrun.commands.reproduce`: the RESULTS table from finished runs, stale runs kept apart."""

import json

from omegaconf import OmegaConf

from cnnrun import record
from cnnrun.commands import reproduce
from tests.conftest import make_config


def _finished_run(out, name, seed, accuracy, **overrides):
    """A run directory as `cnnrun train` leaves it: the config it ran and its metrics."""
    run_dir = out / name / f"seed{seed}"
    (run_dir / ".hydra").mkdir(parents=True)
    cfg = make_config(f"experiment={name}", f"trainer.seed={seed}", "trainer.verbose=2",
                      *(f"{k}={v}" for k, v in overrides.items()), tiny=False)
    OmegaConf.save(cfg, run_dir / ".hydra" / "config.yaml")
    metrics = {"status": "ok", "test_accuracy": accuracy, "epochs": int(cfg.trainer.epochs), "train_seconds": 10.0,
               "images_per_second": 100.0, "device": "cpu", "backend": "tensorflow",
               "config_hash": record.fingerprint(cfg), "epochs_planned": int(cfg.trainer.epochs)}  # as a run records
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def _row(report, name):
    return next(line for line in report.read_text().splitlines() if line.startswith(f"| {name} |"))


def test_table_covers_every_preset_and_every_current_seed(tmp_path):
    out, report = tmp_path / "runs", tmp_path / "RESULTS.md"
    report.write_text("# Results\n\nintro\n\n" + reproduce.BEGIN + "\nold table\n" + reproduce.END + "\n\nmy discussion\n")
    _finished_run(out, "article001_dense", 0, 0.87)
    _finished_run(out, "article001_dense", 1, 0.86)
    _finished_run(out, "article001_dense", 7, 0.10, **{"trainer.epochs": 2})  # the preset has 5 epochs now
    _finished_run(out, "article000_cnn4", 13, 0.99, **{"optimizer.lr": 0.5})  # the preset has been edited since

    reproduce.main(["--report-only", "--seeds", "1", "--only", "article001_dense", "--out", str(out),
                    "--report", str(report)])

    text = report.read_text()
    assert "old table" not in text and "intro" in text and "my discussion" in text  # only the table is rewritten
    dense = _row(report, "article001_dense").split(" | ")
    assert dense[2] == "86.50 ± 0.71"  # seeds 0 and 1 (seed 1 found on disk although --seeds 1), not the stale 7
    assert dense[3] == "0, 1"
    assert dense[4] == f"{86.5 - 87.75:+.2f}"
    assert "preset changed" in _row(report, "article000_cnn4")
    assert "not run yet" in _row(report, "article001_cnn3")  # --only does not shrink the table


def test_a_stale_run_is_moved_aside_not_overwritten(tmp_path, monkeypatch):
    out, report = tmp_path / "runs", tmp_path / "RESULTS.md"
    current = _finished_run(out, "article001_dense", 0, 0.87)
    stale = _finished_run(out, "article001_dense", 1, 0.50, **{"optimizer.lr": 0.5})
    ran = []
    monkeypatch.setattr(reproduce, "run_one", lambda name, seed, run_dir: ran.append((name, seed)) or {"status": "ok"})

    reproduce.main(["--seeds", "2", "--only", "article001_dense", "--out", str(out), "--report", str(report)])

    assert ran == [("article001_dense", 1)]  # seed 0 is current and reused; seed 1 runs again
    assert (current / "metrics.json").exists()
    kept = list(out.glob("article001_dense/seed1.stale-*"))
    assert len(kept) == 1 and json.loads((kept[0] / "metrics.json").read_text())["test_accuracy"] == 0.5
    assert not stale.exists()

    _finished_run(out, "article001_dense", 1, 0.40, **{"optimizer.lr": 0.5})  # the same stale run once more
    reproduce.main(["--seeds", "2", "--only", "article001_dense", "--out", str(out), "--report", str(report)])
    kept = sorted(out.glob("article001_dense/seed1.stale-*"))
    assert [json.loads((k / "metrics.json").read_text())["test_accuracy"] for k in kept] == [0.5, 0.4]
