"""Runs you can trust: one owner per run directory, earlier results never lost or mixed, exit codes a
script can rely on, no finished epoch lost, a model that loads without cnnrun, images and names as
people have them. Each test asserts the message, the exit code and that earlier results are untouched."""

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import make_config, read_metrics, refusal, run_cli
from PIL import Image
from test_resume import history

from cnnrun import CnnrunError, record
from cnnrun.training import resume
from cnnrun.training.loop import EpochLog
from cnnrun.training.train import train

CLI_TINY = ["dataset=digits", "dataset.limit=200", "trainer.epochs=1", "trainer.verbose=0", "model=dense"]


def snapshot(folder: Path) -> dict[str, str]:
    """Every file below `folder` (but the lock) and a hash of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != record.LOCK}


def error_line(proc) -> str:
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("cnnrun: error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    return lines[0]


# --- one owner per run directory -------------------------------------------------------------------------

def test_another_config_into_a_finished_run_is_refused_and_resume_false_keeps_it(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", *CLI_TINY, f"hydra.run.dir={run}").returncode == 0
    before = snapshot(run)

    other = run_cli("train", *CLI_TINY, "optimizer.lr=0.01", f"hydra.run.dir={run}")
    assert other.returncode == 2
    line = error_line(other)
    assert "holds a finished run of another config" in line and "optimizer.lr: 0.001 -> 0.01" in line
    assert "trainer.resume=false" in line
    assert snapshot(run) == before  # not a byte changed, .hydra/ and train.log included

    again = run_cli("train", *CLI_TINY, "optimizer.lr=0.01", "output.misclassified_max=2", "trainer.resume=false",
                    f"hydra.run.dir={run}")
    assert again.returncode == 0, again.stderr[-2000:]
    assert snapshot(tmp_path / "run.earlier-1") == before  # the earlier run, whole, beside the new one
    listed = {r["file"] for r in csv.DictReader(open(run / "misclassified.csv")) if r["file"]}
    assert {f"misclassified/{p.name}" for p in (run / "misclassified").iterdir()} == listed  # nothing stale
    assert len(listed) == 2
    assert read_metrics(run)["config_hash"] != read_metrics(tmp_path / "run.earlier-1")["config_hash"]


def test_a_second_process_is_refused_naming_the_holder(tmp_path):
    run = tmp_path / "run"
    record.claim(run)  # this test process holds the OS lock, as a running cnnrun would
    try:
        second = run_cli("train", *CLI_TINY, f"hydra.run.dir={run}", process=True)  # another process
    finally:
        record.release(run)
    assert second.returncode == 2
    line = error_line(second)
    assert f"process {os.getpid()}" in line and "in use by" in line
    assert sorted(p.name for p in run.iterdir()) == []  # Hydra wrote nothing either; the lock left with its holder


def test_a_broken_run_of_the_same_config_is_set_aside_not_mixed(tmp_path):
    run = tmp_path / "run"
    cfg = make_config("model=dense")
    train(cfg, run)
    metrics = read_metrics(run)
    (run / "metrics.json").write_text(json.dumps({**metrics, "status": "failed", "error": "disk full"}))
    before = snapshot(run)
    again = train(cfg, run)  # resume=auto: nothing to continue from, so it starts over
    assert again["status"] == "ok" and "resumed_from_epoch" not in again
    assert snapshot(tmp_path / "run.earlier-1") == before
    assert read_metrics(run)["started"] == again["started"]


def test_resume_never_dead_ends(tmp_path):
    """A run interrupted before its first checkpoint: `cnnrun resume` starts it over with its own config."""
    run = tmp_path / "run"
    assert run_cli("train", *CLI_TINY, f"hydra.run.dir={run}").returncode == 0
    m = read_metrics(run)
    (run / "metrics.json").write_text(json.dumps({**m, "status": "interrupted"}))
    (run / "model.keras").unlink()
    resumed = run_cli("resume", str(run))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "no checkpoint to continue from: starting the run over with its own config" in resumed.stdout
    assert read_metrics(run)["status"] == "ok" and (run / "model.keras").is_file()
    assert read_metrics(tmp_path / "run.earlier-1")["status"] == "interrupted"


# --- exit codes ------------------------------------------------------------------------------------------

def test_exit_codes(tmp_path):
    usage = run_cli()
    assert usage.returncode == 2 and "usage: cnnrun" in usage.stderr and "a command is needed" in usage.stderr
    refused = run_cli("train", "trainer.seed=-1", f"hydra.run.dir={tmp_path / 'never'}")
    assert refused.returncode == 2 and "trainer.seed=-1" in error_line(refused)
    assert not (tmp_path / "never").exists()
    # A sweep whose every job fails (its class folder holds no image: found only on reading it) still writes
    # its summary, then exits 1.
    sweep, photos = tmp_path / "sweep", tmp_path / "photos"
    for name in ("cat", "dog"):
        (photos / name).mkdir(parents=True)
    (photos / "cat" / "notes.txt").write_text("not an image")
    failed = run_cli("train", "-m", "dataset=folder", f"dataset.path={photos}", "model=dense,tf_cnn",
                     "trainer.epochs=1", f"hydra.sweep.dir={sweep}")
    assert failed.returncode == 1, failed.stderr[-2000:]
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert [r["status"] for r in rows] == ["failed", "failed"] and "holds no readable images" in rows[0]["error"]


def test_a_sweep_with_one_bad_job_runs_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli("train", "-m", *CLI_TINY, "trainer.seed=0,-3", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 2
    line = error_line(r)
    assert "job 1 of 2" in line and "trainer.seed=-3" in line and "nothing was run" in line
    assert not sweep.exists()


def test_another_sweep_into_a_sweep_directory_is_refused(tmp_path):
    sweep = tmp_path / "sweep"
    assert run_cli("train", "-m", *CLI_TINY, "trainer.seed=0,1", f"hydra.sweep.dir={sweep}").returncode == 0
    before = snapshot(sweep)
    other = run_cli("train", "-m", *CLI_TINY, "optimizer.lr=0.01,0.1", f"hydra.sweep.dir={sweep}")
    assert other.returncode == 2 and "holds another sweep" in error_line(other)
    assert snapshot(sweep) == before


# --- no finished epoch is lost ---------------------------------------------------------------------------

def signal_after_epoch(monkeypatch, epoch: int) -> None:
    """A real SIGINT to this process just after `epoch` (1-based) ended: its last batch and validation ran."""
    real = EpochLog.on_epoch_end

    def end(self, e, logs=None):
        real(self, e, logs)
        if e + 1 == epoch:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(EpochLog, "on_epoch_end", end)


@pytest.mark.parametrize("epoch", [2, 3])  # mid-run, and after the very last epoch
def test_a_signal_after_an_epochs_last_batch_keeps_that_epoch(tmp_path, monkeypatch, epoch):
    args = ["model=mnist_cnn", "augment=flip", "trainer.epochs=3", "trainer.val_split=0.2", "trainer.seed=4"]
    whole = train(make_config(*args), tmp_path / "whole")
    signal_after_epoch(monkeypatch, epoch)
    cut = train(make_config(*args), tmp_path / "cut")
    monkeypatch.undo()
    assert cut["status"] == "interrupted" and f"after {epoch} of 3 epochs" in cut["error"]
    assert len(history(tmp_path / "cut")) == epoch
    assert resume.load(tmp_path / "cut")["meta"]["epoch"] == epoch
    done = train(make_config(*args), tmp_path / "cut")
    assert done["status"] == "ok" and done["resumed_from_epoch"] == epoch
    assert history(tmp_path / "cut") == history(tmp_path / "whole")
    assert done["test_accuracy"] == whole["test_accuracy"]


def test_a_truncated_checkpoint_is_one_line(tmp_path):
    cfg = make_config("model=dense", "trainer.epochs=2")
    run = tmp_path / "run"
    (run).mkdir()
    (run / "metrics.json").write_text(json.dumps({"status": "interrupted", "config_hash": record.fingerprint(cfg)}))
    (run / resume.CHECKPOINT).write_bytes(b"PK\x03\x04 cut short")
    with pytest.raises(CnnrunError, match=r"checkpoint .*checkpoint.npz is unreadable .*trainer.resume=false") as e:
        train(cfg, run)
    assert "\n" not in str(e.value)


# --- a model that loads anywhere -------------------------------------------------------------------------

LOAD_WITHOUT_CNNRUN = """
import sys
sys.modules["cnnrun"] = None  # cnnrun is not importable here, as on a colleague's or a serving machine
import numpy as np, keras
model = keras.models.load_model(sys.argv[1])
probs = model.predict(np.load(sys.argv[2]), verbose=0)
np.save(sys.argv[3], probs)
print(keras.backend.backend(), sorted({type(l).__module__.split(".")[0] for l in model._flatten_layers()}))
"""


@pytest.fixture(scope="module")
def cnn4_run(tmp_path_factory):
    """A finished cnn4 run (BatchNorm in training), its metrics and its test images: one for both backends."""
    cfg = make_config("model=cnn4", "trainer.epochs=1", "dataset.limit=200")
    run = tmp_path_factory.mktemp("cnn4") / "run"
    m = train(cfg, run)
    from cnnrun.data import load_dataset

    return run, m, load_dataset(cfg.dataset, seed=cfg.trainer.seed)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_model_keras_loads_without_cnnrun_and_predicts_the_same(tmp_path, backend, cnn4_run):
    run, m, data = cnn4_run
    np.save(tmp_path / "x.npy", data.x_test)
    (tmp_path / "load.py").write_text(LOAD_WITHOUT_CNNRUN)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"KERAS_BACKEND": backend}
    out = subprocess.run([sys.executable, str(tmp_path / "load.py"), str(run / "model.keras"),
                          str(tmp_path / "x.npy"), str(tmp_path / "p.npy")], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == f"{backend} ['keras']"
    predicted = np.load(tmp_path / "p.npy").argmax(axis=1)
    assert np.mean(predicted == data.y_test) == m["test_accuracy"]
    wrong = {int(r["index"]): r["predicted"] for r in csv.DictReader(open(run / "misclassified.csv"))}
    assert {i for i in range(len(predicted)) if predicted[i] != data.y_test[i]} == set(wrong)


# --- images and names as people have them ----------------------------------------------------------------

def test_16_bit_images_and_exif_orientation(tmp_path):
    from cnnrun.data.folder import decode

    ramp = (np.arange(16, dtype=np.uint16)[None, :].repeat(16, 0) * 4369)  # 0 .. 65535
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I")
    got = decode(str(tmp_path / "deep.png"), (16, 16), 1)[..., 0]
    assert got[0, 0] == 0 and got[0, -1] == 255 and abs(int(got[0, 8]) - 136) <= 1  # scaled, not clipped

    img = np.zeros((20, 40, 3), np.uint8)
    img[:, :20] = 255  # white on the left as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # the camera was turned: view rotated 90 degrees clockwise
    Image.fromarray(img).save(tmp_path / "turned.jpg", exif=exif, quality=95)
    upright = decode(str(tmp_path / "turned.jpg"), (40, 20), 1)[..., 0]
    assert upright[:15].mean() > 200 and upright[25:].mean() < 50  # the white half is now on top


def test_cjk_class_names_in_plots_and_file_names(tmp_path):
    root = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 3)):
        for k, name in enumerate(["桜", "コスモス", "벚꽃"]):
            for sub in ("a", "b"):  # the same file names in two sub-folders of one class
                (root / split / name / sub).mkdir(parents=True)
                for i in range(n):
                    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
                        root / split / name / sub / f"img{i}.png")
    cfg = make_config("dataset=folder", f"dataset.path={root}", "dataset.image_size=16", "model=dense",
                      "trainer.epochs=1", "trainer.batch_size=8")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        m = train(cfg, tmp_path / "run")
    assert m["status"] == "ok" and m["class_names"] == sorted(["桜", "コスモス", "벚꽃"])
    missing = [str(w.message) for w in caught if "missing from font" in str(w.message)]
    assert not missing, missing[:3]  # every glyph found: no empty boxes
    wrong = [r for r in csv.DictReader(open(tmp_path / "run" / "misclassified.csv", encoding="utf-8"))]
    files = [r["file"] for r in wrong if r["file"]]
    assert files and len(set(files)) == len(files) == len(list((tmp_path / "run" / "misclassified").iterdir()))
    assert all(Path(f).name.split("_to_")[0] in ("桜", "コスモス", "벚꽃") for f in files)


def test_predict_refuses_a_run_that_did_not_end_ok(tmp_path):
    run = tmp_path / "run"
    train(make_config("model=dense"), run)
    m = read_metrics(run)
    (run / "metrics.json").write_text(json.dumps({**m, "status": "nan", "error": "loss became NaN in epoch 1"}))
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    r = run_cli("predict", str(run), str(img), "--out", str(tmp_path / "p.csv"))
    assert r.returncode == 2 and "did not end ok (status nan" in error_line(r) and "--allow-unfinished" in r.stderr
    assert not (tmp_path / "p.csv").exists()
    ok = run_cli("predict", str(run), str(img), "--out", str(tmp_path / "p.csv"), "--allow-unfinished")
    assert ok.returncode == 0 and (tmp_path / "p.csv").is_file()


# --- input that used to end in a traceback ---------------------------------------------------------------

def test_truncated_jpeg_is_skipped_streamed_or_not(tmp_path):
    from test_folder import make_photos

    photos = make_photos(tmp_path / "photos", fmt="jpg")
    good = (photos / "red" / "red00.jpg").read_bytes()
    (photos / "red" / "red00.jpg").write_bytes(good[: len(good) // 2])
    for cache in ("true", "false"):
        cfg = make_config("dataset=folder", f"dataset.path={photos}", "dataset.image_size=32", "model=dense",
                          f"dataset.cache={cache}", "trainer.batch_size=8")
        m = train(cfg, tmp_path / f"run-{cache}")
        assert m["status"] == "ok", cache
        assert m["train_images"] + m["test_images"] == 23  # the cut file is skipped, the 23 others are used
    with pytest.raises(CnnrunError, match=r"unusable image file.*red00.jpg"):
        train(make_config("dataset=folder", f"dataset.path={photos}", "dataset.image_size=32",
                          "dataset.bad_files=error"), tmp_path / "strict")


def test_image_sizes_are_judged_against_memory_before_decoding(tmp_path):
    with pytest.raises(CnnrunError, match=r"dataset.image_size=5000x5000 needs .* GB .* is free") as e:
        train(make_config("dataset.image_size=5000"), tmp_path / "run")
    assert "\n" not in str(e.value)


def test_unwritable_out_paths_are_one_line(tmp_path):
    run = tmp_path / "run"
    train(make_config("model=dense"), run)
    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(img)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    p = run_cli("predict", str(run), str(img), "--out", str(blocker / "p.csv"))
    assert p.returncode == 2 and "--out" in error_line(p)
    c = run_cli("compare", str(run), "--out", str(blocker / "dir"))
    assert c.returncode == 2 and "--out" in error_line(c)


def test_refusals_name_the_key_the_value_and_the_fix():
    assert refusal("+trainer.epoch=1").endswith("did you mean trainer.epochs?")
    assert "momentum belongs to optimizer=sgd" in refusal("+optimizer.momentum=0.9")


def test_how_a_run_ends_has_one_table():
    """cnnrun/record/outcome.py: each ending's status and exit code, and a fresh-process job's code read back as it."""
    from cnnrun import CnnrunError
    from cnnrun.record import outcome

    cases = [(None, "ok", 0), (outcome.RunRefused("x"), None, 2), (CnnrunError("x"), "failed", 2),
             (outcome.RunFailed("x"), "failed", 1), (ValueError("x"), "failed", 1)]
    for error, status, code in cases:
        ended = outcome.of(error)
        assert (ended.status, outcome.exit_code(ended)) == (status, code), error
        if ended is not outcome.OK:
            assert outcome.from_child(ended.child_code) is ended
    assert outcome.of(CnnrunError("x"), working=True) is outcome.FAILED  # after work began: exit 1, not 2
    assert outcome.of(KeyboardInterrupt()).status == "interrupted"
    assert outcome.from_child(0) is None and outcome.from_child(130) is None  # read from the record instead


def test_a_run_decides_about_its_directory_once(tmp_path, monkeypatch):
    """The decision about an earlier run is made before Hydra writes (the callback) and taken by the run."""
    from cnnrun.record import decision

    from tests.conftest import cli

    calls, real = [], decision._decide
    monkeypatch.setattr(decision, "_decide", lambda *a, **k: calls.append(1) or real(*a, **k))
    args = ["train", *CLI_TINY, f"hydra.run.dir={tmp_path / 'run'}"]
    for expected in ("ok", "skip"):  # a new run, then the same command again: skipped, still one decision
        calls.clear()
        r = cli(*args)
        assert r.returncode == 0, r.stderr[-2000:]
        assert len(calls) == 1, (expected, r.stderr[-2000:])
        assert not (tmp_path / "run" / record.LOCK).exists()  # the lock lives as long as the run, no longer
    assert "already holds a finished run of this config" in r.stdout + r.stderr  # the second was skipped
