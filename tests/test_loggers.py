"""The logger group: a real MLflow store (and a real `mlflow server` on 127.0.0.1), TensorBoard event files read
back with TensorBoard's own reader, loggers that fail without failing the run, and a quiet backend start."""

import csv
import errno
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types
import urllib.request
from pathlib import Path

import pytest

from cnnrun import hooks
from cnnrun.hooks import loggers
from cnnrun.training.train import train
from tests.conftest import TINY, cli, make_config, read_metrics, refusal, run_cli
from tests.test_resume import interrupt_at

mlflow = pytest.importorskip("mlflow", reason="the mlflow extra is not installed")
pytest.importorskip("tensorboard", reason="the tensorboard extra is not installed")

from mlflow import MlflowClient  # noqa: E402
from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer  # noqa: E402

RUN_FILES = {"metrics.json", "history.csv", "curves.png", "confusion_matrix.png",
             "classification_report.txt", "summary.txt"}


def history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def tensorboard_runs(logdir: Path) -> EventMultiplexer:
    m = EventMultiplexer()
    m.AddRunsFromDirectory(str(logdir))
    m.Reload()
    return m


def artifact_paths(client, run_id: str, path: str | None = None) -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out |= artifact_paths(client, run_id, item.path) if item.is_dir else {item.path}
    return out


@pytest.mark.slow  # a sweep with two trackers (33 s): `make test-full`
def test_a_sweep_is_a_parent_run_with_a_child_per_job_and_tensorboard_compares_them(tmp_path):
    store = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    sweep = tmp_path / "sweep"
    r = run_cli("train", "-m", "dataset=digits", "dataset.limit=300", "model=dense", "trainer.seed=0,1",
                "trainer.epochs=2", "trainer.verbose=0", "logger=[csv,tensorboard,mlflow]",
                f"logger.mlflow.tracking_uri={store}", "logger.mlflow.experiment=sweeps", f"hydra.sweep.dir={sweep}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "logger" not in r.stderr and "Traceback" not in r.stderr  # no logger warned

    client = MlflowClient(store)
    experiment = client.get_experiment_by_name("sweeps")
    runs = client.search_runs([experiment.experiment_id])
    parents = [x for x in runs if "mlflow.parentRunId" not in x.data.tags]
    children = [x for x in runs if "mlflow.parentRunId" in x.data.tags]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED" and parent.info.run_name == sweep.name
    assert json.loads((sweep / "mlflow.json").read_text())["parent_run_id"] == parent.info.run_id

    accs = []
    for child in children:
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id and child.info.status == "FINISHED"
        job = Path(child.data.tags["cnnrun.run_dir"])
        m = read_metrics(job)
        accs.append(m["test_accuracy"])
        assert m["mlflow_run_id"] == child.info.run_id
        assert child.info.run_name == f"trainer.seed={m['seed']}"  # what tells the jobs apart
        params, metrics, tags = child.data.params, child.data.metrics, child.data.tags
        assert params["trainer.epochs"] == "2" and params["model.name"] == "dense"
        assert params["trainer.seed"] == str(m["seed"]) and params["dataset.limit"] == "300"
        assert tags["model"] == "dense" and tags["dataset"] == "digits" and tags["status"] == "ok"
        assert tags["backend"] == m["backend"] and tags["device"] == "cpu"
        assert metrics["test_accuracy"] == pytest.approx(m["test_accuracy"])
        rows = history(job)
        loss = client.get_metric_history(child.info.run_id, "loss")
        assert [p.step for p in sorted(loss, key=lambda p: p.step)] == [1, 2]  # one point per epoch, at its epoch
        assert [p.value for p in sorted(loss, key=lambda p: p.step)] == pytest.approx([float(x["loss"]) for x in rows])
        assert RUN_FILES <= artifact_paths(client, child.info.run_id)
        assert ".lock" not in artifact_paths(client, child.info.run_id)

        # TensorBoard: per-epoch curves in train/, the test metrics, the plots and the HPARAMS session at the root
        tb = tensorboard_runs(job / "tensorboard" / f"trainer.seed={m['seed']}")  # named for what the job was
        assert [e.step for e in tb.Scalars("train", "epoch_loss")] == [1, 2]
        assert [e.value for e in tb.Scalars("train", "epoch_loss")] == pytest.approx([float(x["loss"]) for x in rows])
        assert tb.Scalars(".", "test/accuracy")[0].value == pytest.approx(m["test_accuracy"])
        assert {"plots/curves", "plots/confusion_matrix"} <= set(tb.Runs()["."]["images"])
        assert "_hparams_/session_start_info" in tb.Runs()["."]["tensors"]

    # compare-style mean ± std over the seeds on the parent, and the sweep's summary among its files
    mean = parent.data.metrics["test_acc_mean/_all_"]
    assert mean == pytest.approx(sum(accs) / 2, abs=1e-4) and parent.data.metrics["jobs_ok"] == 2
    assert {"summary.md", "summary.csv", "multirun.yaml"} <= artifact_paths(client, parent.info.run_id)
    assert parent.data.params["trainer.seed"] == "0,1" and parent.data.params["model"] == "dense"  # the sweep's own
    runs_seen = tensorboard_runs(sweep).Runs()  # `tensorboard --logdir SWEEP` sees every job
    assert {"0/tensorboard/trainer.seed=0/train", "1/tensorboard/trainer.seed=1/train"} <= set(runs_seen)
    session = tb.PluginRunToTagToContent("hparams")["."]  # HPARAMS names the trial the same way
    assert any("trainer.seed=" in str(content) for content in session.values())


def test_a_resumed_run_continues_its_own_mlflow_run(tmp_path, monkeypatch, caplog):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["model=dense", "trainer.epochs=3", "logger=[csv,mlflow]", f"logger.mlflow.tracking_uri={store}"]
    interrupt_at(monkeypatch, 1)
    with caplog.at_level("INFO", logger="cnnrun"):
        cut = train(make_config(*args), tmp_path / "run")
    monkeypatch.undo()
    assert cut["status"] == "interrupted"
    client = MlflowClient(store)
    first = client.get_run(cut["mlflow_run_id"])
    # MLflow 3's UI shows the experiment's runs in its Model training mode: the log line links there
    experiment = client.get_experiment(first.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    link = f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}?workflowType=machine_learning"
    assert f"view: mlflow ui --backend-store-uri {store}, then {link}" in caplog.text
    assert first.info.status == "KILLED" and len(client.get_metric_history(first.info.run_id, "loss")) == 1

    done = train(make_config(*args, "trainer.resume=true"), tmp_path / "run")
    assert done["status"] == "ok" and done["mlflow_run_id"] == cut["mlflow_run_id"]
    runs = client.search_runs([first.info.experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"  # one MLflow run, not a second one
    assert [p.step for p in client.get_metric_history(first.info.run_id, "loss")] == [1, 2, 3]


@pytest.mark.parametrize("where", ["unwritable store", "no server"])
def test_a_failing_logger_warns_once_and_the_run_is_complete(tmp_path, caplog, monkeypatch, where):
    (tmp_path / "a_file").write_text("")
    uri = f"sqlite:///{tmp_path / 'a_file' / 'mlflow.db'}" if where == "unwritable store" else "http://127.0.0.1:9"
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    def disk_full(self, event):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(EventFileWriter, "add_event", disk_full)  # the TensorBoard logger's disk fills
    with caplog.at_level(logging.WARNING, logger="cnnrun"):
        m = train(make_config("model=dense", "trainer.epochs=2", "logger=[csv,tensorboard,mlflow]",
                              f"logger.mlflow.tracking_uri={uri}"), tmp_path / "run")
    assert m["status"] == "ok" and "mlflow_run_id" not in m
    warnings = [r.getMessage() for r in caplog.records if "logger" in r.getMessage()]
    assert len(warnings) == 2, warnings  # one each, not one per epoch
    assert any(w.startswith("logger mlflow failed in start: cannot use the tracking store " + uri) for w in warnings)
    assert any(w.startswith("logger tensorboard failed") for w in warnings)
    assert all("\n" not in w for w in warnings)
    files = {p.name for p in (tmp_path / "run").iterdir()}
    assert {f for f in RUN_FILES if not f.endswith(".png")} <= files and len(history(tmp_path / "run")) == 2  # TINY: no plots


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, data: dict | None = None) -> dict:
    request = urllib.request.Request(url, data=json.dumps(data).encode() if data is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read() or b"{}")


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """A real `mlflow server` on 127.0.0.1 with a SQLite store, shared by this module's tests (it takes seconds to
    start); yields its URL once /health answers, and the folder of its store."""
    store = tmp_path_factory.mktemp("mlflow-server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(store / "server.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
         "--backend-store-uri", f"sqlite:///{store / 'server.db'}",
         "--artifacts-destination", str(store / "server-artifacts")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        assert proc.poll() is None, (store / "server.log").read_text()[-2000:]
        assert time.monotonic() < deadline, "mlflow server did not answer /health in 120 s"
        time.sleep(0.5)  # polling a server that is starting, not racing a result
    yield url, store
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    log.close()


def test_a_team_server_over_its_rest_api_and_a_server_that_goes_away(tmp_path, mlflow_server, caplog):
    url, store = mlflow_server
    m = train(make_config("model=dense", "trainer.epochs=2", "logger=[tensorboard,mlflow]", "output.plots=true",
                          f"logger.mlflow.tracking_uri={url}", "logger.mlflow.experiment=team"), tmp_path / "run")
    assert m["status"] == "ok"
    experiment = _get(f"{url}/api/2.0/mlflow/experiments/get-by-name?experiment_name=team")["experiment"]
    found = _get(f"{url}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment["experiment_id"]]})["runs"]
    assert [r["info"]["run_id"] for r in found] == [m["mlflow_run_id"]]
    assert found[0]["info"]["status"] == "FINISHED"
    history_ = _get(f"{url}/api/2.0/mlflow/metrics/get-history?run_id={m['mlflow_run_id']}&metric_key=val_loss"
                    if m["val_images"] else
                    f"{url}/api/2.0/mlflow/metrics/get-history?run_id={m['mlflow_run_id']}&metric_key=loss")["metrics"]
    assert sorted(p["step"] for p in history_) == [1, 2]
    listed = _get(f"{url}/api/2.0/mlflow/artifacts/list?run_id={m['mlflow_run_id']}")["files"]
    assert {"metrics.json", "history.csv", "curves.png", "confusion_matrix.png"} <= {f["path"] for f in listed}
    assert (store / "server-artifacts").is_dir()  # the files went through the server, to its store (model.keras: the MLflow model)
    tb = tensorboard_runs(tmp_path / "run" / "tensorboard" / "run")  # the plots as TensorBoard images too
    assert {"plots/curves", "plots/confusion_matrix"} <= set(tb.Runs()["."]["images"])

    gone = f"http://127.0.0.1:{_free_port()}"  # a server gone away: nothing listens on its port any more
    with caplog.at_level(logging.WARNING, logger="cnnrun"):
        m2 = train(make_config("model=dense", "logger=mlflow", f"logger.mlflow.tracking_uri={gone}"), tmp_path / "run2")
    assert m2["status"] == "ok" and (tmp_path / "run2" / "model.keras").is_file()
    warned = [r.getMessage() for r in caplog.records if "logger" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith(f"logger mlflow failed in start: cannot use the tracking store {gone}")


def test_credentials_are_never_written_or_shown(tmp_path, mlflow_server, monkeypatch):
    """The password in $MLFLOW_TRACKING_URI for one run and in logger.mlflow.tracking_uri for another, on a real
    `mlflow server`: not one file of the runs or of the server's store, nor the console, holds either password
    (or the token in a secret variable)."""
    url, store = mlflow_server
    port = url.rsplit(":", 1)[1]
    secrets_ = {"Pw4lice-SECRET", "Pw8ob-SECRET", "tok-SECRET-123456"}
    with monkeypatch.context() as env:
        env.setenv("MLFLOW_TRACKING_URI", f"http://alice:Pw4lice-SECRET@127.0.0.1:{port}")
        env.setenv("MY_SERVICE_TOKEN", "tok-SECRET-123456")
        a = cli("train", *TINY, "model=dense", "logger=mlflow", f"hydra.run.dir={tmp_path / 'a'}")
    assert a.returncode == 0, a.stderr[-3000:]
    b = cli("train", *TINY, "model=dense", "logger=mlflow", f"hydra.run.dir={tmp_path / 'b'}",
            f"logger.mlflow.tracking_uri=http://bob:Pw8ob-SECRET@127.0.0.1:{port}")
    assert b.returncode == 0, b.stderr[-3000:]
    assert read_metrics(tmp_path / "b")["mlflow_tracking_uri"] == url
    found = []
    for out in (a, b):
        found += [s for s in secrets_ if s in out.stdout + out.stderr]
    for root in (tmp_path / "a", tmp_path / "b", store):
        for f in root.rglob("*"):
            if f.is_file():
                data = f.read_bytes()
                found += [f"{f}: {s}" for s in secrets_ if s.encode() in data]
    assert not found, found
    for run in ("a", "b"):  # each run's artifacts did reach the server's store (which other tests' runs share)
        run_id = read_metrics(tmp_path / run)["mlflow_run_id"]
        assert any(run_id in f.parts for f in (store / "server-artifacts").rglob("train.log")), run


def test_csv_logger_appends_each_epoch_as_it_ends(tmp_path):
    node = make_config("logger=csv").logger.csv
    csv_logger = hooks.attach("logger.csv", node)  # made from its YAML node, as every hook is
    run = types.SimpleNamespace(dir=tmp_path)
    csv_logger.epoch(run, {"epoch": 1, "seconds": 1.0, "loss": 2.0, "accuracy": 0.5, "lr": 1e-3})
    assert [r["loss"] for r in history(tmp_path)] == ["2.0"]
    csv_logger.epoch(run, {"epoch": 2, "seconds": 1.0, "loss": 1.0, "accuracy": 0.7, "lr": 1e-3})
    assert [r["epoch"] for r in history(tmp_path)] == ["1", "2"]


def test_logger_options_compose_and_bad_ones_are_refused():
    cfg = make_config("logger=[tensorboard,mlflow]")
    assert "csv" not in cfg.logger and cfg.logger.tensorboard.images is True and cfg.logger.mlflow.timeout == 10
    assert make_config().logger.csv.live is True and "mlflow" not in make_config().logger  # csv is the default
    assert refusal("logger=mlflow", "logger.mlflow.timeout=0") == (
        "logger.mlflow.timeout=0 must be a whole number of seconds >= 1")  # the class's annotation says so
    assert refusal("logger=mlflow", "logger.mlflow.artifacts=maybe") == "logger.mlflow.artifacts=maybe must be true or false"
    assert refusal("logger=mlflow", "logger.mlflow.retries=11") == "logger.mlflow.retries=11 must be a whole number in [0, 10]"
    assert "wandb" in refusal("logger=wandb")
    assert "logger.mlflow.experiment" in refusal("logger=mlflow", "logger.mlflow.experiment=' '")


def test_the_default_store_is_sqlite_under_outputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert loggers.tracking_uri(None) == f"sqlite:///{tmp_path / 'outputs' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://team:5000")
    assert loggers.tracking_uri(None) == "http://team:5000" and loggers.tracking_uri("sqlite:///x.db") == "sqlite:///x.db"


NOISE = re.compile(r"^[IWE]\d{4} \d\d:\d\d:\d\d|cuInit|absl::InitializeLog|rebuild TensorFlow|DT_INT64|retracing", re.M)


@pytest.mark.skipif(os.path.exists("/dev/nvidia0"), reason="on a GPU machine the CUDA lines are shown, as they should be")
def test_a_first_run_prints_no_backend_boilerplate(tmp_path):
    r = run_cli("train", "dataset=digits", "dataset.limit=200", "model=dense", "trainer.epochs=1",
                "augment=article004", f"hydra.run.dir={tmp_path / 'run'}",  # augmented: its first integer op too
                process=True)  # a first run: the backend starts in this process, printing below Python
    assert r.returncode == 0, r.stderr[-2000:]
    assert not NOISE.search(r.stderr + r.stdout), (r.stderr + r.stdout)[:2000]


def test_filtered_stderr_drops_only_the_noise():
    code = """if True:
        import os, re, sys
        from cnnrun.console import filtered_stderr
        with filtered_stderr(re.compile("^I0000 ")):
            os.write(2, b"I0000 00:00:1.0 1 port.cc:153] oneDNN custom operations are on\\n")
            os.write(2, b"a real warning\\n")
            print("from python", file=sys.stderr)
            os.write(2, b"I0000 00:00:1.0 1 port.cc:153] more\\n")
        print("after", file=sys.stderr)
    """
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stderr == "a real warning\nfrom python\nafter\n", r.stderr


def test_the_model_is_an_mlflow_model_that_mlflow_serves_and_registers(tmp_path):
    """model.keras goes up as an MLflow model: the registry takes it, and `mlflow models serve` answers a request
    with each class's probability under its name and the class `cnnrun predict` gives the same image."""
    import numpy as np
    from PIL import Image

    from cnnrun.commands.predict import predict_files
    from cnnrun.data import load_dataset
    from cnnrun.data.folder import decode

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    m = train(make_config("model=dense", "logger=mlflow", f"logger.mlflow.tracking_uri={store}"), tmp_path / "run")
    assert m["status"] == "ok", m.get("error")
    uri = f"runs:/{m['mlflow_run_id']}/model"
    client = MlflowClient(store)
    assert "model.keras" not in artifact_paths(client, m["mlflow_run_id"])  # the model is the MLflow model, not a file
    mlflow.set_tracking_uri(store)
    assert str(mlflow.register_model(uri, "digits-dense").version) == "1"  # the registry takes it

    data = load_dataset(make_config().dataset, batch_size=64)
    files = []
    for i in range(4):
        files.append(tmp_path / f"test{i}.png")
        Image.fromarray(data.x_test[i, ..., 0]).save(files[-1])
    ours = [top[0][0] for _, top in predict_files(tmp_path / "run", files)[0]]

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bindir = str(Path(sys.executable).parent)
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PATH": bindir + os.pathsep + os.environ.get("PATH", "")}
    server = subprocess.Popen([str(Path(bindir) / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
                               "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:  # polled until it answers, or the server ends, or the deadline passes
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, server.stderr.read().decode()[-2000:]
                assert time.monotonic() < deadline, "mlflow models serve did not start in 180 s"
                time.sleep(0.5)
        pixels = np.stack([decode(str(f), (28, 28), 1) for f in files])  # as cnnrun predict reads them
        body = json.dumps({"inputs": pixels.tolist()}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", body,
                                         {"Content-Type": "application/json"})
        served = json.loads(urllib.request.urlopen(request, timeout=60).read())["predictions"]
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
    names = read_metrics(tmp_path / "run")["class_names"]
    assert len(served) == 4 and all(set(row) == {*names, "class"} for row in served)  # named, beside a class
    assert [row["class"] for row in served] == ours
    assert all(abs(sum(row[n] for n in names) - 1) < 1e-5 and row["class"] == max(names, key=row.get) for row in served)
