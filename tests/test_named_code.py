"""Your code is named by you, never by a directory (issue 31): a run directory that names code gets none of it run
by any command that reads it; what you name (--import, --loader, your own config) works in every command; a
command writes only what is its own; data is told apart by the file, not by its path's text; your code is judged
before the run, and every run ends one way."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from tests.conftest import TINY, cli, read_metrics, run_cli


def received(finished: Path, where: Path, **saved) -> Path:
    """A copy of the finished run as it might arrive from someone else, its saved config's groups replaced."""
    run = where / "received"
    shutil.copytree(finished, run)
    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    config.update(saved)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    return run


def hostile_dataset(marker: Path) -> dict:
    return {"name": "custom", "_target_": "subprocess.call", "shell": True, "args": f"touch {marker}"}


# --- a run directory never gets code run --------------------------------------------------------------------------

def test_export_of_a_received_run_runs_none_of_its_code(finished, tmp_path):
    marker = tmp_path / "ran"
    run = received(finished, tmp_path, dataset=hostile_dataset(marker))
    r = cli("export", run, "--format", "savedmodel")
    assert r.returncode == 0, r.stderr[-2000:]
    assert not marker.exists()
    report = json.loads((run / "export" / "export.json").read_text())
    assert report["verified_on"].startswith("64 random images (its test set came from your own loader "
                                            "(dataset._target_=subprocess.call), which cnnrun never runs")
    assert "--loader subprocess.call" in report["verified_on"]


def test_explain_of_a_received_run_runs_none_of_its_code(finished, tmp_path):
    marker = tmp_path / "ran"
    run = received(finished, tmp_path, dataset=hostile_dataset(marker),
                   hooks={"evil": {"_target_": "os.system", "command": f"touch {marker}"}})
    r = cli("explain", run, "--embedding", "none")
    assert r.returncode == 2 and not marker.exists()
    assert "never runs because a directory names it; name your loader yourself: --loader subprocess.call" in r.stderr
    picture = tmp_path / "seven.png"
    Image.fromarray(np.full((28, 28), 200, np.uint8)).save(picture)
    r = cli("explain", run, picture, "--embedding", "none")  # the images given, without the test set, said so
    assert r.returncode == 0, r.stderr[-2000:]
    assert "the test set is left out" in r.stdout and not marker.exists()
    assert (run / "explain" / "gradcam.png").is_file()


def test_resume_never_imports_the_model_file_a_directory_names(finished, tmp_path):
    marker = tmp_path / "imported"
    run = received(finished, tmp_path, model={"name": "custom", "_target_": ".hydra/evil.py:build"})
    (run / ".hydra" / "evil.py").write_text(f"open({str(marker)!r}, 'w').close()\ndef build(input_shape, num_classes):\n"
                                            "    raise SystemExit(0)\n")
    metrics = read_metrics(run)
    metrics.pop("code_digest", None)
    (run / "metrics.json").write_text(json.dumps(metrics))
    r = cli("resume", run, "trainer.resume=true")  # the record's model is not this command's: refused, by its record
    assert not marker.exists(), r.stderr
    r = cli("train", *TINY, "model=dense", f"hydra.run.dir={run}")
    assert r.returncode == 2 and "holds a finished run of another config" in r.stderr and not marker.exists()


def test_reproduce_reads_a_runs_identity_from_its_record_not_its_code(tmp_path):
    from cnnrun.commands import reproduce

    run = tmp_path / "article001_dense" / "seed0"
    (run / ".hydra").mkdir(parents=True)
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"model": {"_target_": "evil.py:build"}}))
    (run / "metrics.json").write_text(json.dumps({"status": "ok", "config_hash": "0", "epochs_planned": 5}))
    assert reproduce.is_current("article001_dense", 0, run) is False  # and nothing was imported to tell


def test_resume_replays_no_tracker_and_says_what_it_replays(finished, tmp_path):
    run = received(finished, tmp_path)
    saved = yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text())
    stolen = [*saved, "logger=mlflow", "logger.mlflow.tracking_uri=http://elsewhere:5000", "+hooks.x._target_=os.system",
              f"dataset.limit={300}"]
    (run / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(stolen))
    r = cli("resume", run)
    first = r.stdout.splitlines()[0]
    assert first.startswith(f"resume: replaying from {run}/.hydra/overrides.yaml: ") and "dataset=digits" in first
    assert "dataset.limit=300" in first.split("; not replayed")[0]
    assert "not replayed (a directory never names trackers, hooks or code" in first
    assert "logger=mlflow logger.mlflow.tracking_uri=http://elsewhere:5000 +hooks.x._target_=os.system" in first
    assert r.returncode == 0, r.stderr[-2000:]  # finished, same config: nothing to do, and no tracker reached


def test_the_replayed_groups_are_the_configs_own_but_trackers_and_hooks():
    from cnnrun.commands.resume import replayable, replayed_groups

    assert {"dataset", "model", "trainer", "distribute", "augment", "experiment"} <= set(replayed_groups())
    assert replayable("distribute=data_parallel") and replayable("distribute.devices=2")
    assert not replayable("logger=mlflow") and not replayable("logger.mlflow.tracking_uri=http://x")
    assert not replayable("+hooks.n.every=2")


def test_resume_takes_a_config_dir_and_the_directory_in_either_order(finished, tmp_path):
    run = received(finished, tmp_path)
    (tmp_path / "conf" / "model").mkdir(parents=True)
    for args in ([run, "--config-dir", tmp_path / "conf"], ["--config-dir", tmp_path / "conf", run],
                 ["--config-dir", tmp_path / "conf", run, "trainer.verbose=0"]):
        r = cli("resume", *args)
        assert r.returncode == 0 and "unrecognized arguments" not in r.stderr, r.stderr[-1500:]
    r = cli("resume", "--config-dir", tmp_path / "conf")
    assert r.returncode == 2 and "resume needs a run or sweep directory" in r.stderr


def test_hydras_rerun_which_unpickles_a_file_is_refused(tmp_path):
    r = cli("train", "--experimental-rerun", tmp_path / "config.pickle")
    assert r.returncode == 2 and "unpickles a saved file, which runs any code the file holds" in r.stderr


# --- what you name works in every command ---------------------------------------------------------------------

LAYERS = '''
import keras


@keras.saving.register_keras_serializable(package="my_layers")
class Brighten(keras.layers.Layer):
    def __init__(self, by=0.1, **kwargs):
        super().__init__(**kwargs)
        self.by = by

    def call(self, x):
        return x + self.by

    def get_config(self):
        return {**super().get_config(), "by": self.by}


def build(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = Brighten(name="brighten")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))
'''


@pytest.fixture(scope="module")
def own_layers(tmp_path_factory) -> Path:
    """A user's project whose model has a layer of its own, registered as Keras asks, trained as users train."""
    project = tmp_path_factory.mktemp("own_layers")
    (project / "my_layers.py").write_text(LAYERS)
    r = cli("train", *TINY, "model=custom", "model._target_=my_layers.build", "hydra.run.dir=run", cwd=project)
    assert r.returncode == 0, r.stderr[-2000:]
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(project / "x.png")  # an image to predict
    return project


def test_a_model_with_its_own_layers_needs_only_its_module_named(own_layers):
    r = run_cli("predict", "run", "x.png", cwd=own_layers, process=True)  # nothing of the user's is imported there
    assert r.returncode == 2
    line = r.stderr.strip().splitlines()[-1]
    assert line.endswith("uses my_layers>Brighten, your own code, which is not registered here; name the module that "
                         "registers it: --import my_layers (a dotted module or FILE.py), as in: cnnrun predict RUN IMAGE "
                         "--import my_layers"), line
    r = run_cli("predict", "run", "x.png", "--import", "my_layers", cwd=own_layers)
    assert r.returncode == 0, r.stderr[-1500:]
    assert (own_layers / "run" / "predictions.csv").read_text().startswith("file,class_1,confidence_1\n")


def test_export_and_explain_take_the_module_too(own_layers):
    r = cli("export", "run", "--format", "savedmodel", "--import", "my_layers", cwd=own_layers)
    assert r.returncode == 0, r.stderr[-1500:]
    assert json.loads((own_layers / "run" / "export" / "export.json").read_text())["formats"]["savedmodel"]["verified"]
    r = cli("explain", "run", "--embedding", "pca", "--max", "2", "--import", "my_layers", cwd=own_layers)
    assert r.returncode == 0, r.stderr[-1500:]
    assert (own_layers / "run" / "explain" / "embedding.png").is_file()
    r = cli("predict", "run", "x.png", "--import", "no_such_module", cwd=own_layers)
    assert r.returncode == 2 and "--import no_such_module: no module 'no_such_module' on the path" in r.stderr


def test_a_loader_named_by_the_user_reads_the_test_set_again(tmp_path, monkeypatch):
    (tmp_path / "my_data.py").write_text(textwrap.dedent('''
        import numpy as np

        def load(n=60):
            rng = np.random.default_rng(0)
            y = np.arange(n) % 3
            x = (rng.integers(0, 60, (n, 12, 12)) + 60 * y[:, None, None]).astype("uint8")
            return {"x_train": x, "y_train": y, "x_test": x[:30], "y_test": y[:30]}
        '''))
    r = cli("train", "trainer.epochs=1", "trainer.verbose=0", "trainer.batch_size=16", "model=dense",
            "dataset=custom", "dataset._target_=my_data.load", "+dataset.n=60", "hydra.run.dir=run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-1500:]
    r = cli("export", "run", "--format", "savedmodel", "--loader", "my_data.load", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-1500:]
    assert json.loads((tmp_path / "run" / "export" / "export.json").read_text())["verified_on"] == \
        "30 of the run's test images"
    r = cli("export", "run", "--format", "savedmodel", "--loader", "my_data.load", cwd=tmp_path)  # again: its own
    assert r.returncode == 0, r.stderr[-1500:]


# --- a command writes only what is its own ----------------------------------------------------------------------

def test_out_never_replaces_a_device_a_fifo_or_a_folder(finished, tmp_path):
    from cnnrun import CnnrunError
    from cnnrun.record.files import write_text

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    picture = tmp_path / "x.png"
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(picture)
    for out in (fifo, Path("/dev/null")):
        r = cli("predict", finished, picture, "--out", out)
        assert r.returncode == 2 and "it is a device or other special file" in r.stderr
    assert fifo.is_fifo() and Path("/dev/null").is_char_device()
    with pytest.raises(CnnrunError, match="it is a device or other special file"):
        write_text(fifo, "x")
    with pytest.raises(CnnrunError, match="it is a folder"):
        write_text(tmp_path, "x")


def test_export_and_explain_leave_a_users_files_alone(finished, tmp_path):
    run = received(finished, tmp_path)
    mine = tmp_path / "mine"
    (mine / "savedmodel").mkdir(parents=True)
    (mine / "labels.txt").write_text("my labels\n")
    (mine / "savedmodel" / "keep.txt").write_text("keep")
    r = cli("export", run, "--format", "savedmodel", "--out", mine)
    assert r.returncode == 2 and "holds files that cnnrun did not write there" in r.stderr
    assert (mine / "labels.txt").read_text() == "my labels\n" and (mine / "savedmodel" / "keep.txt").exists()
    (mine / "gradcam").mkdir()
    (mine / "gradcam" / "mine.png").write_bytes(b"png")
    r = cli("explain", run, "--out", mine, "--embedding", "none", "--max", "1")
    assert r.returncode == 2 and "gradcam/mine.png" in r.stderr and (mine / "gradcam" / "mine.png").exists()
    ours = tmp_path / "ours"
    for _ in range(2):  # its own folder, written again: no refusal
        r = cli("explain", run, "--out", ours, "--embedding", "none", "--max", "2")
        assert r.returncode == 0, r.stderr[-1500:]


def test_nothing_is_written_or_deleted_through_a_link_in_a_run_directory(finished, tmp_path):
    run = received(finished, tmp_path)
    victim = tmp_path / "victim"
    (victim / "gradcam").mkdir(parents=True)
    (victim / "gradcam" / "precious.png").write_bytes(b"png")
    (victim / "gradcam.png").write_bytes(b"png")
    shutil.rmtree(run / "explain", ignore_errors=True)
    (run / "explain").symlink_to(victim)
    r = cli("explain", run, "--embedding", "none", "--max", "1")
    assert r.returncode == 2 and "is a symbolic link" in r.stderr
    assert (victim / "gradcam" / "precious.png").exists() and (victim / "gradcam.png").exists()
    r = cli("train", *TINY, "model=mnist_cnn", f"hydra.run.dir={run}", "trainer.resume=false")
    assert r.returncode == 2 and "explain (a symbolic link)" in r.stderr


# --- data is the file, not its path's text ---------------------------------------------------------------------

def two_classes(root: Path, n: int = 12) -> None:
    for k, level in (("a", 40), ("b", 210)):
        (root / k).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            Image.fromarray(np.full((16, 16), level + i, np.uint8)).save(root / k / f"{i}.png")


FOLDER = ["dataset=folder", "dataset.image_size=16", "model=dense", "trainer.epochs=1", "trainer.verbose=0",
          "trainer.batch_size=8"]


def test_a_manifest_listing_one_image_twice_through_a_link_is_refused(tmp_path):
    two_classes(tmp_path / "images")
    (tmp_path / "alias").symlink_to(tmp_path / "images")
    rows = [f"images/{k}/{i}.png,{k},train" for k in "ab" for i in range(10)] + ["alias/a/0.png,a,test",
                                                                                  "images/b/11.png,b,test"]
    (tmp_path / "labels.csv").write_text("path,label,split\n" + "\n".join(rows) + "\n")
    r = cli("train", *FOLDER[1:], "dataset=csv", "dataset.path=labels.csv", "hydra.run.dir=run", cwd=tmp_path)
    assert r.returncode == 2 and "are the same image file (a link or a linked folder), in train and in test" in r.stderr


def test_a_class_folder_linked_to_the_root_is_refused(tmp_path):
    two_classes(tmp_path / "images")
    (tmp_path / "images" / "c").symlink_to(tmp_path / "images")
    r = cli("train", *FOLDER, "dataset.path=images", "hydra.run.dir=run", cwd=tmp_path)
    assert r.returncode == 2 and "are the same image file" in r.stderr and "under two labels" in r.stderr


def test_an_earlier_runs_outputs_inside_the_image_folder_is_no_class(tmp_path):
    two_classes(tmp_path / "images")
    earlier = tmp_path / "images" / "outputs" / "2026-12-01" / "10-00-00_cnn4"
    (earlier / ".hydra").mkdir(parents=True)
    (earlier / "metrics.json").write_text("{}")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(earlier / "curves.png")
    r = cli("train", *FOLDER, "dataset.path=images", "hydra.run.dir=run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-1500:]
    assert read_metrics(tmp_path / "run")["class_names"] == ["a", "b"]
    assert "it holds cnnrun runs (their plots and pictures), not images of a class" in r.stdout + r.stderr


# --- your code is judged before the run ---------------------------------------------------------------------

BUILDERS = '''
import sys

import keras


def with_lambda(input_shape, num_classes):
    inputs = keras.Input(input_shape)
    x = keras.layers.Lambda(lambda t: t * 2.0)(inputs)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


class Net(keras.Model):
    def __init__(self, num_classes):
        super().__init__()
        self.flat = keras.layers.Flatten()
        self.out = keras.layers.Dense(num_classes, activation="softmax")

    def call(self, x):
        return self.out(self.flat(x))


def subclassed(input_shape, num_classes):
    return Net(num_classes)


def exits(input_shape, num_classes):
    sys.exit(0)


def one_class(n=40):
    import numpy as np
    x = np.zeros((n, 8, 8), "uint8")
    return {"x_train": x, "y_train": np.zeros(n, int), "x_test": x, "y_test": np.zeros(n, int)}


def unseen(n=40):
    import numpy as np
    x = np.zeros((n, 8, 8), "uint8")
    y = np.arange(n) % 2
    return {"x_train": x, "y_train": y, "x_test": x[:4], "y_test": np.array([0, 1, 2, 2])}


def not_a_dict():
    return [1, 2]
'''


@pytest.mark.parametrize("target, expected", [
    ("builders.with_lambda", "a Lambda layer runs code when loaded, which cnnrun refuses"),
    ("builders.subclassed", "builds a model that Keras cannot save and load again"),
    ("builders.exits", "raised SystemExit: sys.exit(0) was called while building the model"),
])
def test_a_model_is_judged_before_any_run_directory_exists(tmp_path, target, expected):
    (tmp_path / "builders.py").write_text(BUILDERS)
    r = cli("train", *TINY, "model=custom", f"model._target_={target}", "hydra.run.dir=run", cwd=tmp_path)
    assert r.returncode == 2 and expected in r.stderr, r.stderr[-1500:]
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / "run").exists()


@pytest.mark.parametrize("target, expected", [
    ("builders.one_class", "the training images hold 1 class (0); a classifier needs at least two"),
    ("builders.unseen", "test images of class 'c' have no training image"),
    ("builders.not_a_dict", "returned list; return a dict of x_train"),
])
def test_a_loader_is_judged_before_any_run_directory_exists(tmp_path, target, expected):
    (tmp_path / "builders.py").write_text(BUILDERS)
    args = ["trainer.epochs=1", "model=dense", "dataset=custom", f"dataset._target_={target}", "hydra.run.dir=run"]
    r = cli("train", *args, *(["+dataset.class_names=[a,b,c]"] if target.endswith("unseen") else []), cwd=tmp_path)
    assert r.returncode == 2 and expected in r.stderr, r.stderr[-1500:]
    assert not (tmp_path / "run").exists()


def test_a_hook_failing_at_the_end_is_a_warning_and_the_run_ends_ok(tmp_path):
    (tmp_path / "end_hooks.py").write_text(textwrap.dedent('''
        class Bad:
            def end(self, run):
                run.update(test_accuracy="not a number")

        class Exits:
            def end(self, run):
                raise SystemExit(3)
        '''))
    r = cli("train", *TINY, "model=dense", "+hooks.bad._target_=end_hooks.Bad", "+hooks.exits._target_=end_hooks.Exits",
            "hydra.run.dir=run", cwd=tmp_path)
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "hook exits failed in end: SystemExit" in r.stdout + r.stderr
    assert read_metrics(tmp_path / "run")["status"] == "ok"
    assert isinstance(read_metrics(tmp_path / "run")["test_accuracy"], float)


def test_a_sweep_rerun_after_the_users_yaml_changed_is_refused_before_hydra_writes(tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mine.yaml").write_text("defaults:\n  - mnist_cnn\n  - _self_\ndropout: 0.1\n")
    args = ["train", "-m", "--config-dir", "conf", *TINY, "model=mine,dense", "hydra.sweep.dir=sweep"]
    assert cli(*args, cwd=tmp_path).returncode == 0
    before = (tmp_path / "sweep" / "0" / ".hydra" / "config.yaml").read_text()
    (tmp_path / "conf" / "model" / "mine.yaml").write_text("defaults:\n  - mnist_cnn\n  - _self_\ndropout: 0.3\n")
    r = cli(*args, cwd=tmp_path)
    assert r.returncode == 2 and "holds another sweep: its job 0 ran another config (differs in model.dropout: 0.1 -> 0.3)" in r.stderr
    assert (tmp_path / "sweep" / "0" / ".hydra" / "config.yaml").read_text() == before


def test_a_hooks_secrets_are_masked_like_a_trackers(tmp_path):
    (tmp_path / "secret_hooks.py").write_text("class Notify:\n    def __init__(self, api_token, password):\n"
                                       "        self.token = api_token\n    def end(self, run):\n        pass\n")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    r = cli("train", *TINY, "model=dense", "+hooks.n._target_=secret_hooks.Notify", "+hooks.n.api_token=tok-12345678",
            "+hooks.n.password=hunter2-pw", "logger=mlflow", f"logger.mlflow.tracking_uri={store}",
            "logger.mlflow.log_model=false", "hydra.run.dir=run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-1500:]
    from mlflow.tracking import MlflowClient

    params = MlflowClient(store).get_run(read_metrics(tmp_path / "run")["mlflow_run_id"]).data.params
    assert params["hooks.n.api_token"] == "***" and params["hooks.n.password"] == "***"
    for f in [*(tmp_path / "run" / ".hydra").glob("*.yaml"), tmp_path / "run" / "train.log",
              tmp_path / "run" / "metrics.json"]:
        text = f.read_text()
        assert "tok-12345678" not in text and "hunter2-pw" not in text, f
    assert "api_token: '***'" in (tmp_path / "run" / ".hydra" / "config.yaml").read_text() or \
        "api_token: ***" in (tmp_path / "run" / ".hydra" / "config.yaml").read_text()


def test_a_run_stopped_during_its_evaluation_resumes_without_training_again(tmp_path):
    (tmp_path / "ctrl_c.py").write_text(textwrap.dedent('''
        import os, signal

        class CtrlC:
            def fitted(self, run, fitted):
                if not os.path.exists("stopped"):
                    open("stopped", "w").close()
                    os.kill(os.getpid(), signal.SIGINT)  # a real Ctrl-C, after the last epoch
        '''))
    args = [*TINY, "model=dense", "trainer.epochs=2", "+hooks.c._target_=ctrl_c.CtrlC", "hydra.run.dir=run"]
    r = cli("train", *args, cwd=tmp_path)
    assert r.returncode == 130, r.stderr[-1500:]
    m = read_metrics(tmp_path / "run")
    assert m["status"] == "interrupted" and m["error"].startswith("interrupted during evaluation, after training "
                                                                  "ended; evaluate it with: cnnrun resume")
    assert "nothing is trained again" in r.stderr
    r = cli("resume", tmp_path / "run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-1500:]
    m = read_metrics(tmp_path / "run")
    assert m["status"] == "ok" and m["resumed_from_epoch"] == 2 and m["epochs"] == 2 and m["images_per_second"] == 0
    assert "training had ended after epoch 2: evaluating its weights, nothing is trained again" in r.stdout


# --- the JAX cache and the processes of a distributed run ---------------------------------------------------------

def test_the_jax_cache_is_off_for_any_no_and_made_by_no_command_that_needs_none(tmp_path):
    env = {"XDG_CACHE_HOME": str(tmp_path / "cache"), "JAX_COMPILATION_CACHE_DIR": ""}
    code = ("import os, sys; os.environ.pop('JAX_COMPILATION_CACHE_DIR'); from cnnrun.cli import main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "print('DIR', os.environ.get('JAX_COMPILATION_CACHE_DIR'))")
    for args in (["--version"], ["compare", str(tmp_path)]):
        r = subprocess.run([sys.executable, "-c", code, *args], env={**os.environ, **env}, capture_output=True,
                           text=True)
        assert "DIR None" in r.stdout and not (tmp_path / "cache" / "cnnrun").exists(), r.stdout + r.stderr
    for off in ("0", "false", "off", "no", "OFF"):
        r = subprocess.run([sys.executable, "-c", "import os; os.environ.pop('JAX_COMPILATION_CACHE_DIR', None)\n"
                            "from cnnrun.commands import jax_compilation_cache; jax_compilation_cache(); "
                            "print('DIR', os.environ.get('JAX_COMPILATION_CACHE_DIR'))"],
                           env={**os.environ, **env, "CNNRUN_JAX_CACHE": off}, capture_output=True, text=True)
        assert "DIR None" in r.stdout, (off, r.stdout, r.stderr)


def test_unreadable_cache_entries_are_said_once(tmp_path, caplog):
    import warnings

    from cnnrun.commands import _say_once_about_broken_entries

    shown = warnings.showwarning
    try:
        _say_once_about_broken_entries(str(tmp_path))
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            for i in range(9):
                warnings.warn(f"Error reading persistent compilation cache entry for 'jit_{i}': EOFError")
    finally:
        warnings.showwarning = shown
    said = [r for r in caplog.records if "cannot read (compiled again instead)" in r.getMessage()]
    assert len(said) == 1 and f"rm -rf {tmp_path}" in said[0].getMessage()


def test_a_process_whose_process_0_is_gone_ends_with_one_line_and_exit_1(tmp_path):
    """The watchdog of a process other than 0, against a real listening socket that then goes away (what process
    0's coordination service does when it dies), in a real process."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    code = (f"import time; from cnnrun.training.distribute import Watchdog; from cnnrun.console import error\n"
            f"w = Watchdog('127.0.0.1:{port}', error, every=0.1); w.run_dir = 'outputs/run'; w.start()\n"
            "print('watching', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "watching"
    server.close()  # process 0 is gone
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "Traceback" not in err
    assert err.strip().splitlines()[-1] == (f"cnnrun: error: distribute: process 0 (the coordinator at 127.0.0.1:{port}) is gone, so "
                           "this process stops too; process 0's log says why; continue from the last epoch with: "
                           "cnnrun resume outputs/run")


def test_resume_of_a_sweep_takes_a_config_dir_in_either_order(tmp_path):
    (tmp_path / "conf" / "model").mkdir(parents=True)
    (tmp_path / "conf" / "model" / "mine.yaml").write_text("defaults:\n  - mnist_cnn\n  - _self_\ndropout: 0.2\n")
    r = cli("train", "-m", "--config-dir", "conf", *TINY, "model=mine,dense", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-1500:]
    for args in (["sweep", "--config-dir", "conf"], ["--config-dir", "conf", "sweep"]):
        r = cli("resume", *args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr[-1500:]
        assert r.stdout.startswith("resume: replaying from sweep/multirun.yaml: ") and "model=mine,dense" in r.stdout
    r = cli("resume", "sweep", cwd=tmp_path)  # without the folder, its option is unknown: said in one line
    assert r.returncode == 2 and "mine" in r.stderr
