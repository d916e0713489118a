"""Runs that survive: checkpoints, Ctrl-C / SIGTERM, resume, skipping finished work, unwritable disks."""

import csv
import errno
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cnnrun import CnnrunError, record
from cnnrun.record import artifacts
from cnnrun.training import resume
from cnnrun.training.train import train
from tests.conftest import make_config, read_metrics, run_cli

# Enough epochs that a signal lands mid-run; dropout, BatchNorm and augmentation all carry RNG state.
RESUMABLE = ["model=cnn4", "augment=[flip,erasing]", "trainer.epochs=4", "trainer.val_split=0.2", "trainer.seed=5"]


def history(run_dir) -> list[dict]:
    """history.csv without its wall-clock column."""
    with open(run_dir / "history.csv") as f:
        return [{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(f)]


def interrupt_at(monkeypatch, epoch: int) -> None:
    """Delivers a real SIGINT to this process just before `epoch` starts."""
    real = resume.epoch_order

    def order(n, seed, e):
        if e == epoch:
            os.kill(os.getpid(), signal.SIGINT)
        return real(n, seed, e)

    monkeypatch.setattr(resume, "epoch_order", order)


def test_interrupted_then_resumed_run_equals_uninterrupted(tmp_path, monkeypatch):
    cfg = make_config(*RESUMABLE)
    whole = train(cfg, tmp_path / "whole")
    assert whole["status"] == "ok" and not (tmp_path / "whole" / resume.CHECKPOINT).exists()

    interrupt_at(monkeypatch, 2)
    cut = train(cfg, tmp_path / "cut")
    monkeypatch.undo()
    assert cut["status"] == "interrupted" and cut["exit_code"] == 130
    assert "cnnrun resume" in cut["error"]
    assert read_metrics(tmp_path / "cut")["status"] == "interrupted"
    assert len(history(tmp_path / "cut")) == 2  # the broken-off epoch is not kept
    assert resume.load(tmp_path / "cut")["meta"]["epoch"] == 2
    assert not (tmp_path / "cut" / "model.keras").exists()  # nothing that looks finished

    done = train(make_config(*RESUMABLE, "trainer.resume=true"), tmp_path / "cut")
    assert done["status"] == "ok" and done["resumed_from_epoch"] == 2
    assert history(tmp_path / "cut") == history(tmp_path / "whole")
    assert done["test_accuracy"] == whole["test_accuracy"]
    assert not (tmp_path / "cut" / resume.CHECKPOINT).exists()


def test_finished_run_is_skipped_and_resume_refuses_what_it_cannot_continue(tmp_path):
    run = tmp_path / "run"
    first = train(make_config(), run)
    stamp = (run / "model.keras").stat().st_mtime_ns
    again = train(make_config(), run)
    assert again["skipped"] and again["started"] == first["started"]
    assert (run / "model.keras").stat().st_mtime_ns == stamp

    with pytest.raises(record.RunRefused, match="holds no run to continue"):
        train(make_config("trainer.resume=true"), tmp_path / "empty")
    # A checkpoint made by another config is not silently continued.
    interrupted = make_config("trainer.epochs=3", "trainer.seed=1")
    (tmp_path / "other").mkdir()
    resume.save(tmp_path / "other", _compiled_model(interrupted), 1, [], record.fingerprint(interrupted))
    with pytest.raises(record.RunRefused, match="holds an unfinished run of another config"):
        train(make_config("trainer.epochs=3", "trainer.seed=2", "trainer.resume=true"), tmp_path / "other")
    assert (tmp_path / "other" / resume.CHECKPOINT).exists()


def _compiled_model(cfg):
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam", loss="mse")
    return model


@pytest.mark.slow  # a real CLI run, signalled, then resumed (85 s); test_hostile signals real processes too
def test_real_sigint_to_a_cli_run_then_cnnrun_resume(tmp_path):
    run = tmp_path / "run"
    args = ["dataset=digits", "dataset.limit=600", "model=mnist_cnn", "augment=flip", "trainer.epochs=12",
            "trainer.batch_size=32", "trainer.verbose=2", "trainer.seed=3"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.Popen([sys.executable, "-m", "cnnrun", "train", *args, f"hydra.run.dir={run}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.time() + 240
    while not (run / resume.CHECKPOINT).exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 130, out
    m = read_metrics(run)
    assert m["status"] == "interrupted" and "cnnrun resume" in m["error"]
    done_epochs = resume.load(run)["meta"]["epoch"]
    assert 0 < done_epochs < 12 and len(history(run)) == done_epochs

    resumed = run_cli("resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert read_metrics(run)["status"] == "ok" and read_metrics(run)["resumed_from_epoch"] == done_epochs

    reference = tmp_path / "reference"
    train(make_config(*args, "trainer.verbose=0", tiny=False), reference)
    assert history(run) == history(reference)
    assert read_metrics(run)["test_accuracy"] == read_metrics(reference)["test_accuracy"]


def test_relaunched_sweep_skips_finished_jobs(tmp_path):
    sweep = tmp_path / "sweep"
    args = ["train", "-m", "dataset=digits", "dataset.limit=200", "trainer.epochs=1", "trainer.verbose=0",
            "model=dense,mnist_cnn", f"hydra.sweep.dir={sweep}"]
    first = run_cli(*args)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {j: read_metrics(sweep / str(j)) for j in (0, 1)}
    # Job 1 "crashed": its run never finished.
    (sweep / "1" / "metrics.json").write_text(json.dumps({**before[1], "status": "running"}))

    again = run_cli("resume", str(sweep))
    assert again.returncode == 0, again.stderr[-2000:]
    after = {j: read_metrics(sweep / str(j)) for j in (0, 1)}
    assert after[0]["started"] == before[0]["started"]  # skipped, not retrained
    assert after[1]["status"] == "ok"
    rows = (sweep / "summary.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",ok," in r for r in rows[1:])


def test_resume_command_refuses_a_path_that_is_not_a_run(tmp_path):
    r = run_cli("resume", str(tmp_path))
    assert r.returncode == 2
    assert "not a cnnrun run or sweep directory" in r.stderr and str(tmp_path) in r.stderr


def test_atomic_write_keeps_the_old_file_when_the_disk_fills(tmp_path):
    target = tmp_path / "metrics.json"
    artifacts.write_json(target, {"status": "ok"})

    def half_then_full(tmp):
        with open(tmp, "w") as f:
            f.write('{"status": "runn')
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(CnnrunError, match=r"cannot write .*metrics.json: No space left on device; free some disk space"):
        artifacts.atomic_write(target, half_then_full)
    assert json.loads(target.read_text()) == {"status": "ok"}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left behind


def test_full_disk_during_a_run_fails_it_clearly(tmp_path, monkeypatch):
    real = artifacts.atomic_write

    def full_for_models(path, write):
        if str(path).endswith("model.keras"):
            raise CnnrunError(f"cannot write {path}: No space left on device; free some disk space")
        return real(path, write)

    monkeypatch.setattr(artifacts, "atomic_write", full_for_models)
    with pytest.raises(CnnrunError, match="No space left"):
        train(make_config(), tmp_path)
    m = read_metrics(tmp_path)
    assert m["status"] == "failed" and "No space left" in m["error"]  # never "ok"
    assert not (tmp_path / "model.keras").exists()


def test_unwritable_output_directory_is_one_clear_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    r = run_cli("train", "dataset=digits", "trainer.epochs=1", f"hydra.run.dir={blocker}/run")
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("cnnrun: error")]
    assert lines and str(blocker) in lines[0] and "output directory" in lines[0], r.stderr[-2000:]
    assert "Traceback" not in r.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories anyway")
def test_read_only_output_directory(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    r = run_cli("train", "dataset=digits", "trainer.epochs=1", f"hydra.run.dir={ro}/run")
    assert r.returncode == 2 and "cnnrun: error" in r.stderr and "Traceback" not in r.stderr


def test_epoch_order_depends_only_on_seed_and_epoch():
    a = resume.epoch_order(100, 3, 7)
    assert np.array_equal(a, resume.epoch_order(100, 3, 7))
    assert not np.array_equal(a, resume.epoch_order(100, 3, 8))
    assert sorted(a) == list(range(100))


def test_fingerprint_is_what_changes_the_numbers():
    """A run's identity is a whitelist: model, optimizer, augmentation, the data set but its path and cache,
    and the trainer keys that change results. Display, feed, paths and the article's figure are not in it."""
    base = record.fingerprint(make_config("model=dense"))
    for same in ("trainer.verbose=2", "trainer.steps_per_execution=4", "trainer.device_data=true",
                 "trainer.eval_batch_size=7", "trainer.epochs=9", "dataset.path=/elsewhere", "trainer.threads=1",
                 "output.misclassified_max=3", "reference.accuracy=0.5", "trainer.resume=false"):
        assert record.fingerprint(make_config("model=dense", same)) == base, same
    for other in ("trainer.seed=1", "trainer.batch_size=16", "optimizer.lr=0.01", "augment=flip", "model.units=64",
                  "dataset.limit=200", "trainer.augment_after=1", "trainer.label_smoothing=0.1", "trainer.tta=flip"):
        assert record.fingerprint(make_config("model=dense", other)) != base, other
