"""Your own model, data and configs: the README's example run verbatim in a user project the test makes, and
every way a target, a manifest or a loader can be wrong refused in one line."""

import json
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from cnnrun import CnnrunError, models, record
from cnnrun.data import manifest
from cnnrun.config import plugins
from cnnrun.training.train import train
from tests.conftest import ROOT, make_config, read_metrics, refusal, run_cli

SHRINK = ["trainer.epochs=1", "trainer.verbose=0", "trainer.batch_size=16"]


def readme_example() -> tuple[dict[str, str], list[str]]:
    """The files (first line `# PATH`) and the commands of the README's "Bring your own model and data"."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Bring your own model and data", 1)[1].split("\n## ", 1)[0]
    files, commands = {}, []
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", section, re.S):
        first = body.splitlines()[0]
        if lang == "bash":
            commands += [line for line in body.splitlines() if line.startswith("cnnrun ")]
        elif first.startswith("# "):
            files[first[2:].strip()] = body
    return files, commands


def make_images(root: Path, per_class: int = 24, seed: int = 0) -> list[str]:
    """Two classes of 20x20 PNGs, dark cats and bright dogs, under root/images; returns their paths."""
    rng = np.random.default_rng(seed)
    paths = []
    for name, level in (("cat", 50), ("dog", 200)):
        (root / "images" / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(rng.normal(level, 25, (20, 20, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / "images" / name / f"{i}.png")
            paths.append(f"images/{name}/{i}.png")
    return paths


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A user's project: the README's files, labelled images and their manifest."""
    root = tmp_path_factory.mktemp("project")
    files, _ = readme_example()
    assert {"my_pkg/nets.py", "my_pkg/data.py", "conf/model/mynet.yaml", "conf/dataset/pets.yaml"} <= set(files)
    for path, body in files.items():
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_text(body)
    (root / "my_pkg" / "__init__.py").write_text("")
    paths = make_images(root)
    (root / "labels.csv").write_text("path,label\n" + "".join(f"{p},{p.split('/')[1]}\n" for p in paths))
    return root


def test_the_readme_example_trains_end_to_end(project):
    _, commands = readme_example()
    assert len(commands) == 6
    for i, command in enumerate(commands):
        args = shlex.split(command)[1:]
        where = f"hydra.sweep.dir=runs/{i}" if "-m" in args else f"hydra.run.dir=runs/{i}"
        shrink = SHRINK if "dataset=digits" not in args else [f"trainer.epochs={4 if '+hooks.log.max_epochs=2' in args else 2}",
                                                              "trainer.verbose=0", "dataset.limit=300"]
        r = run_cli(*args, *shrink, where, cwd=project)
        assert r.returncode == 0, f"{command}\n{r.stdout[-1500:]}\n{r.stderr[-1500:]}"
        runs = [project / "runs" / str(i)] if "-m" not in args else sorted((project / "runs" / str(i)).glob("[0-9]"))
        assert len(runs) == (2 if "-m" in args else 1)
        for run in runs:
            m = read_metrics(run)
            assert m["status"] == "ok" and 0 <= m["test_accuracy"] <= 1
            report = json.loads((run / "classification_report.json").read_text())
            assert {"cat", "dog"} <= set(report) or "dataset=digits" in command
            assert (run / "model.keras").is_file() and (run / "confusion_matrix.png").is_file()
            overrides = (run / ".hydra" / "overrides.yaml").read_text()
            if "model._target_" in overrides or "model=mynet" in overrides:  # the user's model: its code is recorded
                assert "model" in m["code_digest"], run
    first = read_metrics(project / "runs" / "0")
    assert first["model"] == "build" and first["dataset"] == "labels" and first["params"] == 5154  # width 16
    assert read_metrics(project / "runs" / "2")["model"] == "mynet"
    assert "dataset" in read_metrics(project / "runs" / "1")["code_digest"]  # the loader is code too
    hooked = read_metrics(project / "runs" / "4")  # the hook stopped fitting after two of four epochs
    assert hooked["epochs"] == 2 and hooked["epoch_log"] == "epochs.jsonl"
    tracked = read_metrics(project / "runs" / "5")  # the same class as a tracker of the user's: logger=[csv,mine]
    assert tracked["epochs"] == 2 and {"csv", "mine"} <= set(tracked["hook_seconds"])
    logged = [json.loads(line) for line in (project / "epochs.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in logged] == [1, 2, 1, 2] and all(row["loss"] > 0 for row in logged)


def test_a_custom_model_resumes_exactly(project, tmp_path, monkeypatch):
    from tests.test_resume import history, interrupt_at

    monkeypatch.chdir(project)
    args = ["model=custom", "model._target_=my_pkg.nets.build", "+model.width=4", "trainer.epochs=3",
            "trainer.batch_size=32"]
    whole = train(make_config(*args), tmp_path / "whole")
    interrupt_at(monkeypatch, 2)
    cut = train(make_config(*args), tmp_path / "cut")
    monkeypatch.undo()
    monkeypatch.chdir(project)
    assert cut["status"] == "interrupted"
    done = train(make_config(*args, "trainer.resume=true"), tmp_path / "cut")
    assert done["status"] == "ok" and done["resumed_from_epoch"] == 2
    assert history(tmp_path / "cut") == history(tmp_path / "whole")
    assert done["test_accuracy"] == whole["test_accuracy"]


def test_editing_the_function_changes_the_runs_identity(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "edited_nets.py").write_text("def build(input_shape, num_classes):\n    return None\n")
    cfg = make_config("model=custom", "model._target_=edited_nets.py:build")
    before, digest = record.fingerprint(cfg), record.code_digests(cfg)["model"]
    (tmp_path / "edited_nets.py").write_text("def build(input_shape, num_classes):\n    return 1\n")
    assert record.fingerprint(cfg) != before and record.code_digests(cfg)["model"] != digest
    other = make_config("model=custom", "model._target_=edited_nets.py:build", "+model.width=2")
    assert record.fingerprint(other) != record.fingerprint(cfg)  # the arguments are part of it too


BAD = '''
import keras
from keras import layers
NOT_CALLABLE = 3
def raises(input_shape, num_classes):
    raise ValueError("boom")
def not_a_model(input_shape, num_classes):
    return 42
def three_classes(input_shape, num_classes):
    i = keras.Input(input_shape)
    return keras.Model(i, layers.Dense(3, activation="softmax")(layers.Flatten()(i)))
def logits(input_shape, num_classes):
    i = keras.Input(input_shape)
    return keras.Model(i, layers.Dense(num_classes)(layers.Flatten()(i)))
def fixed_input(input_shape, num_classes):
    i = keras.Input((32, 32, 3))
    return keras.Model(i, layers.Dense(num_classes, activation="softmax")(layers.Flatten()(i)))
def no_arguments():
    pass
def applications_style(input_shape, classes, weights=None):
    i = keras.Input(input_shape)
    return keras.Model(i, layers.Dense(classes, activation="softmax")(layers.Flatten()(i)))
'''


@pytest.fixture
def bad(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.py").write_text(BAD)
    return tmp_path


@pytest.mark.parametrize("target, expected", [
    ("nosuch_pkg.nets.build", "cannot be imported: no module 'nosuch_pkg'"),
    ("bad.py:nothere", "nothere is not defined in"),
    ("bad.py:NOT_CALLABLE", "is an int, not something to call"),
    ("missing.py:build", "there is no file"),
    ("bad.py:no_arguments", "takes (nothing) but cnnrun calls it with input_shape, num_classes or classes"),
    ("???", "model=custom needs model._target_=FUNCTION"),
])
def test_a_target_that_cannot_be_called_is_refused_before_any_work(bad, target, expected):
    message = refusal("model=custom", f"model._target_={target}")
    assert expected in message and "model" in message


def test_an_argument_the_function_does_not_take_is_refused(bad):
    message = refusal("model=custom", "model._target_=bad.py:applications_style", "+model.depth=3")
    assert message.startswith("model.depth is not an argument of bad.py:applications_style (it takes weights)")
    message = refusal("model=custom", "model._target_=bad.py:nope,bad.py:applications_style", multirun=True)
    assert message.startswith("job 0 of 2") and "nothing was run" in message  # every job's target, first


@pytest.mark.parametrize("target, expected", [
    ("raises", "raised ValueError: boom while building the model"),
    ("not_a_model", "returned int, not a keras.Model"),
    ("three_classes", "outputs shape (batch, 3) but this data has 10 classes"),
    ("fixed_input", "cannot take this data's images (batch, 28, 28, 1)"),
])
def test_a_builder_that_returns_the_wrong_thing_is_refused_in_one_line(bad, target, expected):
    cfg = OmegaConf.create({"name": "custom", "_target_": f"bad.py:{target}"})
    with pytest.raises(CnnrunError) as err:
        models.build_model(cfg, (28, 28, 1), 10)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_keras_applications_style_builders_get_classes(bad):
    cfg = OmegaConf.create({"name": "custom", "_target_": "bad.py:applications_style", "weights": None})
    assert models.build_model(cfg, (12, 12, 1), 4).output_shape == (None, 4)


def test_a_run_refused_by_its_builder_exits_2_and_names_it(bad):
    r = run_cli("train", "model=custom", "model._target_=bad.py:three_classes", "dataset=digits", "trainer.epochs=1",
                f"hydra.run.dir={bad / 'run'}", cwd=bad)
    assert r.returncode == 2 and "outputs shape (batch, 3) but this data has 10 classes" in r.stderr.strip().splitlines()[-1]
    assert not (bad / "run").exists()  # refused before the run directory was made


# --- manifests and loaders ---------------------------------------------------------------------------

def _csv(tmp_path, text, *overrides):
    (tmp_path / "m.csv").write_text(text)
    return make_config("dataset=csv", f"dataset.path={tmp_path / 'm.csv'}", "dataset.image_size=16", *overrides).dataset


def test_a_manifest_with_a_split_column_keeps_its_split_and_skips_missing_files(tmp_path):
    paths = make_images(tmp_path, per_class=6)
    rows = [f"{p},{p.split('/')[1]},{'test' if i % 3 == 0 else 'train'}" for i, p in enumerate(paths)]
    cfg = _csv(tmp_path, "path,label,split\n" + "\n".join(rows + ["images/cat/gone.png,cat,train"]) + "\n")
    arrays, source, names, test_files, notes = manifest.load_csv(cfg)
    assert names == ["cat", "dog"] and len(test_files) == 4 and arrays["x_train"].shape == (8, 16, 16, 3)
    assert all(f.endswith(("0.png", "3.png")) for f in test_files)
    assert "skipped 1 unusable image file(s)" in notes[0] and "gone.png" in notes[0]
    with pytest.raises(CnnrunError, match="gone.png"):
        manifest.load_csv(_csv(tmp_path, "path,label,split\n" + "\n".join(rows + ["images/cat/gone.png,cat,train"]),
                               "dataset.bad_files=error"))


@pytest.mark.parametrize("text, expected", [
    ("file,label\na.png,cat\n", "has no 'path' column (its header: file, label)"),
    ("path,label\nimages/cat/0.png,cat\nimages/cat/0.png,dog\n", "is listed twice (entries 1 and 2)"),
    ("path,label,split\nimages/cat/0.png,cat,val\n", "line 2: split='val'; expected train or test"),
    ("path,label\nimages/cat/0.png,\n", "line 2: no label"),
    ("path,label\n", "lists no images"),
    ("path,label\nimages/cat/0.png,cat\nimages/dog/0.png,bird\n", "label 'bird' is not one of dataset.class_names"),
])
def test_a_bad_manifest_is_refused_naming_the_line(tmp_path, text, expected):
    make_images(tmp_path, per_class=2)
    with pytest.raises(CnnrunError) as err:
        manifest.load_csv(_csv(tmp_path, text, "dataset.class_names=[cat,dog]"))
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_numeric_labels_are_ordered_as_numbers():
    assert manifest._classes(["10", "2", "1"], None, "x")[0] == ["1", "2", "10"]
    assert manifest._classes([0, 2, 1], None, "x") == (["0", "1", "2"], [0, 2, 1])


LOADERS = '''
import numpy as np
def arrays(n=60, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = (rng.random((n, 12, 12)) * 100 + 100 * y[:, None, None]).astype("uint8")
    return {"x_train": x[:40], "y_train": y[:40], "x_test": x[40:], "y_test": y[40:], "class_names": ["dark", "bright"]}
def a_list():
    return [1, 2]
def bad_split():
    return {"files": ["a.png"], "labels": ["cat"], "split": ["validation"]}
def uneven():
    return {"files": ["a.png", "b.png"], "labels": ["cat"]}
'''


def test_a_loader_of_arrays_trains_and_wrong_returns_are_one_line(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "loaders.py").write_text(LOADERS)
    cfg = make_config("dataset=custom", "dataset._target_=loaders.py:arrays", "+dataset.n=80", "model=dense",
                      "dataset.limit=null")
    m = train(cfg, tmp_path / "run")
    assert m["status"] == "ok" and m["dataset"] == "arrays"  # named by the user's function
    report = json.loads((tmp_path / "run" / "classification_report.json").read_text())
    assert {"dark", "bright"} <= set(report) and report["dark"]["support"] + report["bright"]["support"] == 40
    for target, expected in [("a_list", "returned list; return a dict"),
                             ("bad_split", "returned split 'validation'; expected train or test"),
                             ("uneven", "returned 2 files, 1 labels and 2 splits")]:
        with pytest.raises(CnnrunError, match=re.escape(expected)):
            manifest.load_custom(make_config("dataset=custom", f"dataset._target_=loaders.py:{target}").dataset)
    assert "dataset.nope is not an argument of loaders.py:arrays (it takes n, seed)" in \
        refusal("dataset=custom", "dataset._target_=loaders.py:arrays", "+dataset.nope=1")


def test_a_config_dir_of_ones_own_is_checked_like_cnnruns(project, monkeypatch):
    monkeypatch.chdir(project)
    from cnnrun.config import checks

    assert checks.check_jobs(["model=mynet,dense", "dataset=pets"], multirun=True, config_dir="conf") == 2
    with pytest.raises(CnnrunError, match="--config-dir nowhere is not a folder"):
        checks.check_jobs(["model=mynet"], config_dir="nowhere")
    with pytest.raises(CnnrunError, match="model=mynet is not an option"):
        checks.check_jobs(["model=mynet"])  # without the folder, cnnrun's own options only
    (project / "conf" / "dataset" / "renamed.yaml").write_text("defaults:\n  - csv\n  - _self_\nname: renamed\n"
                                                                "path: labels.csv\n")
    with pytest.raises(CnnrunError, match="extends dataset=csv keeps its name: csv"):
        checks.check_jobs(["dataset=renamed"], config_dir="conf")


def test_locate_finds_a_package_in_the_working_directory_and_keeps_the_path_order(project, monkeypatch):
    import sys

    monkeypatch.chdir(project)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", str(project))])
    plugins._located.pop("my_pkg.data.load", None)
    assert plugins.locate("my_pkg.data.load", "dataset._target_").__name__ == "load"
    assert sys.path[-1] == str(project)  # appended: the user's folder never shadows an installed package


HOOKS = '''
from cnnrun.hooks import Hook
class Broken(Hook):
    def epoch(self, run, row):
        raise OSError("disk gone")
class Judge(Hook):
    def __init__(self, floor=2.0):
        self.floor = floor
    def fitted(self, run, fitted):
        if fitted.history[-1]["accuracy"] < self.floor:
            run.update(error=f"accuracy under {self.floor}")
            return "failed"
class Callbacks(Hook):
    def callbacks(self, run, data, others):
        import keras
        self.seen = []
        return others + [keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: self.seen.append(e))]
    def end(self, run):
        run.update(callback_epochs=self.seen)
class Nothing:
    pass
'''


def test_hooks_listen_take_part_and_fail_as_documented(tmp_path, monkeypatch, caplog):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hk.py").write_text(HOOKS)
    tiny = ["model=dense", "trainer.epochs=2"]
    m = train(make_config(*tiny, "+hooks.b._target_=hk.py:Broken", "+hooks.c._target_=hk.py:Callbacks"),
              tmp_path / "listen")
    assert m["status"] == "ok" and m["callback_epochs"] == [0, 1]  # its Keras callback ran in fit
    assert "hook b failed in epoch: OSError: disk gone; it is off for the rest of this run" in caplog.text
    assert caplog.text.count("disk gone") == 1
    m = train(make_config(*tiny, "+hooks.j._target_=hk.py:Judge"), tmp_path / "judged")
    assert m["status"] == "failed" and m["error"] == "accuracy under 2.0"
    assert not (tmp_path / "judged" / "model.keras").exists()  # it ended before the evaluation
    with pytest.raises(CnnrunError, match="made Nothing, which has none of a hook's methods"):
        train(make_config(*tiny, "+hooks.n._target_=hk.py:Nothing"), tmp_path / "nothing")
    assert "hooks.j.x is not an argument of hk.py:Judge (it takes floor)" in \
        refusal("+hooks.j._target_=hk.py:Judge", "+hooks.j.x=1")


TRACKER = '''
from typing import Annotated
from cnnrun.hooks import Hook
class Lines(Hook):
    """A tracker of the user's own: a line per epoch in a file of theirs."""
    def __init__(self, path: str, every: Annotated[int, (lambda v: v >= 1, "a whole number of epochs >= 1")]):
        self.path, self.every = path, every
    def epoch(self, run, row):
        if row["epoch"] % self.every == 0:
            with open(self.path, "a") as f:
                f.write(f"{row['epoch']} {row['loss']:.4f}\\n")
'''


def test_a_new_tracker_is_one_class_and_one_yaml(tmp_path, monkeypatch):
    """The README's promise: a logger is attached as cnnrun's own are, its class named in its YAML."""
    from cnnrun.config import checks
    from tests.conftest import TINY

    monkeypatch.chdir(tmp_path)
    (tmp_path / "trackers.py").write_text(TRACKER)
    (tmp_path / "conf" / "logger").mkdir(parents=True)
    (tmp_path / "conf" / "logger" / "lines.yaml").write_text(
        "lines:\n  _target_: trackers.Lines\n  path: epochs.txt\n  every: 1\n")
    r = run_cli("train", "--config-dir", "conf", "logger=[csv,lines]", *TINY, "model=dense", "trainer.epochs=2",
                "hydra.run.dir=run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [line.split()[0] for line in (tmp_path / "epochs.txt").read_text().splitlines()] == ["1", "2"]
    assert {"csv", "lines", "explain"} <= set(read_metrics(tmp_path / "run")["hook_seconds"])
    with pytest.raises(CnnrunError, match="^logger.lines.every=0 must be a whole number of epochs >= 1$"):
        checks.check_jobs(["logger=lines", "logger.lines.every=0"], config_dir="conf")
    with pytest.raises(CnnrunError, match="^logger.lines.every=often must be a whole number$"):
        checks.check_jobs(["logger=lines", "logger.lines.every=often"], config_dir="conf")


def test_train_imports_no_edge_and_the_record_knows_no_tracker():
    import ast

    tree = ast.parse((ROOT / "cnnrun" / "training" / "train.py").read_text())
    imported = {f"{node.module}.{alias.name}" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("cnnrun") for alias in node.names}
    edges = ("loggers", "debug", "explain", "export", "predict", "cli", "sweep", "commands")
    assert not {m for m in imported if set(m.split(".")) & set(edges)}, imported
    assert "cnnrun.hooks" in imported  # the interface, and only it
    record_source = "".join(p.read_text() for p in (ROOT / "cnnrun" / "record").glob("*.py"))
    assert "logger" not in record_source.lower().replace("getlogger", "")
