"""Where a run's results go besides its own directory: the `logger` config group.

    logger=csv                    history.csv grows a row as each epoch ends (the default)
    logger=tensorboard            event files in RUN_DIR/tensorboard/: `tensorboard --logdir SWEEP_DIR`
    logger=mlflow                 one MLflow run per cnnrun run; a sweep is a parent run with a child per job
    logger=[tensorboard,mlflow]   several at once

The run's own files are the record (record.py); a logger mirrors them. Each is a hook (cnnrun/hooks/):
its YAML in conf/logger/ names its class here (`_target_`) with its arguments, and it hears of the run's
start, each whole epoch and its end. One that fails (no server, a full disk in its store, a missing
package) says so in one warning line and is switched off for the rest of the run: training goes on and
the run directory is complete. Nothing here imports Keras or a backend, and mlflow/tensorboard are
imported only when their logger is chosen.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import re
import time
from pathlib import Path
from typing import Annotated

from omegaconf import OmegaConf

from cnnrun.config import schema
from cnnrun.config.extras import pip
from cnnrun.config.redact import MASK, redact, secret_key, take_credentials
from cnnrun.hooks import Hook
from cnnrun.record import identity, layout

log = logging.getLogger("cnnrun")

# The run's files a tracker gets: everything a person looks at, not the lock or the spent checkpoint.
NOT_UPLOADED = {layout.LOCK, layout.CHECKPOINT, layout.TENSORBOARD}
SWEEP_RECORD = layout.MLFLOW_PARENT  # in a sweep directory: the parent run's id and where it lives


def flatten(cfg, prefix: str = "") -> dict[str, object]:
    """{'trainer.epochs': 5, ...}: every leaf of a config (lists as text)."""
    data = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else cfg
    out: dict[str, object] = {}
    for key, value in (data or {}).items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:  # a hook's api_token or password: masked, as every secret is before it reaches a tracker
            out[f"{prefix}{key}"] = MASK if secret_key(key) and value is not None else value
    return out


NOT_METRICS = {"seed", "epochs_planned", "exit_code", "resumed_from_epoch", "test_images", "train_images",
               "val_images", "steps_per_execution"}  # numbers in metrics.json that describe the run rather than measure it (params, tags)


def final_metrics(metrics: dict) -> dict[str, float]:
    """The numeric, finite measurements in metrics.json (test_accuracy, train_seconds, ...)."""
    return {k: float(v) for k, v in metrics.items() if k not in NOT_METRICS
            and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def run_name(run_dir: Path) -> str:
    """A sweep job's swept overrides ('model=cnn3 augment=flip'), else the run directory's name."""
    run_dir = Path(run_dir)
    try:
        import yaml

        job = yaml.safe_load((layout.overrides(run_dir)).read_text()) or []
        sweep = yaml.safe_load((run_dir.parent / layout.MULTIRUN).read_text())["hydra"]["overrides"]["task"]
    except Exception:  # noqa: BLE001 - not a sweep job (or an unreadable record): the directory names it
        return run_dir.name
    plain = lambda o: str(o).replace("\\", "")  # noqa: E731 - Hydra escapes ':' etc. in a job's own record
    fixed = set(map(plain, sweep))  # an override the sweep gave every job as it is: not what tells jobs apart
    items = [plain(o) for o in job if plain(o) not in fixed and not str(o).startswith("hydra.")]
    return " ".join(items)[:250] or run_dir.name


def file_name(label: str) -> str:
    """`label` as one directory name: no path separator, at most 200 bytes."""
    name = re.sub(r"[/\\\x00]", "_", label).strip(". ") or "run"
    return name.encode()[:200].decode(errors="ignore")


# --- csv -----------------------------------------------------------------------------------------------

class CsvLogger(Hook):
    """history.csv as the run goes: a row appended as each epoch ends, so `tail -f` follows a long run.
    train() rewrites the whole file at the end, from the full history, whichever loggers are chosen.

    Args:
        live: append each epoch's row as it ends (else only the rewrite at the end).
    """

    name = "csv"

    def __init__(self, live: bool):
        self.live = live

    def epoch(self, run, row: dict) -> None:
        if not self.live:
            return
        path = run.dir / layout.HISTORY
        import csv

        new = not path.is_file()
        with open(path, "a", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow(row)


# --- TensorBoard ---------------------------------------------------------------------------------------

class TensorBoardLogger(Hook):
    """Event files in RUN_DIR/tensorboard/NAME/, written with TensorBoard's own writer and protos (no TensorFlow,
    so JAX runs log too): train/ and validation/ hold the per-epoch curves under the same tags (one chart,
    two lines, as Keras' own callback does), NAME/ itself holds the test metrics, the plots as images and the
    run's config for the HPARAMS tab. NAME says what the run was (a sweep job's swept overrides, else the run
    directory's name), so `tensorboard --logdir SWEEP_DIR` lists `0/tensorboard/model=cnn3 augment=flip/train`,
    not a bare job number.

    Args:
        images: the run's plots as images too (the IMAGES tab).
    """

    name = "tensorboard"
    requires = ("tensorboard", "tensorboard")  # (module, extra): checked before any work

    def __init__(self, images: bool):
        self.images = images
        self.writers: dict = {}
        self.dir = None

    def _writer(self, sub: str):
        if sub not in self.writers:
            from tensorboard.summary.writer.event_file_writer import EventFileWriter

            self.writers[sub] = EventFileWriter(str(self.dir / sub if sub else self.dir), flush_secs=30)
        return self.writers[sub]

    def _write(self, sub: str, summary, step: int) -> None:
        from tensorboard.compat.proto import event_pb2

        self._writer(sub).add_event(event_pb2.Event(wall_time=time.time(), step=int(step), summary=summary))

    @staticmethod
    def _scalars(values: dict):
        from tensorboard.compat.proto import summary_pb2

        return summary_pb2.Summary(value=[summary_pb2.Summary.Value(tag=k, simple_value=float(v))
                                          for k, v in values.items()])

    def start(self, run) -> None:
        from tensorboard.plugins.hparams import summary_v2 as hp

        self.label = run_name(run.dir)
        self.dir = run.dir / layout.TENSORBOARD / file_name(self.label)
        if run.action == "continue" and any(self.dir.glob("events.*")):
            return  # the session was opened by the process that started this run
        self.dir.mkdir(parents=True, exist_ok=True)
        hparams = {k: v if isinstance(v, (bool, int, float, str)) else str(v)  # lists (erasing's area) as text
                   for k, v in flatten(_hparams(run.cfg)).items() if v is not None and k != "dataset.class_names"}
        self._write("", hp.hparams_pb(hparams, trial_id=self.label, start_time_secs=time.time()), 0)
        self._flush()

    def epoch(self, run, row: dict) -> None:
        step = int(row["epoch"])
        train = {f"epoch_{k}": v for k, v in row.items() if k in ("loss", "accuracy")}
        train.update(epoch_learning_rate=row["lr"], epoch_seconds=row["seconds"])
        self._write("train", self._scalars(train), step)
        val = {f"epoch_{k[4:]}": v for k, v in row.items() if k.startswith("val_")}
        if val:
            self._write("validation", self._scalars(val), step)
        self._flush()

    def end(self, run) -> None:
        from tensorboard.compat.proto import summary_pb2

        metrics = run.metrics
        step = int(metrics.get("epochs") or 0)
        test = {f"test/{k[5:]}": v for k, v in final_metrics(metrics).items() if k.startswith("test_")}
        if test:
            self._write("", self._scalars(test), step)
        if self.images:
            images = []
            for name in layout.FIGURES:
                path = run.dir / name
                if path.is_file():
                    from PIL import Image

                    with Image.open(path) as im:
                        width, height = im.size
                    images.append(summary_pb2.Summary.Value(tag=f"plots/{path.stem}", image=summary_pb2.Summary.Image(
                        height=height, width=width, colorspace=4, encoded_image_string=path.read_bytes())))
            if images:
                self._write("", summary_pb2.Summary(value=images), step)
        self._flush(close=True)

    def _flush(self, close: bool = False) -> None:
        for writer in self.writers.values():
            writer.close() if close else writer.flush()
        if close:
            self.writers.clear()


def _hparams(cfg) -> dict:
    """What the HPARAMS tab shows: the groups that change a run's numbers, and its length."""
    out = identity(cfg)
    out["trainer"]["epochs"] = int(cfg.trainer.epochs)
    return out


# --- MLflow --------------------------------------------------------------------------------------------

def tracking_uri(configured: str | None) -> str:
    """logger.mlflow.tracking_uri, else $MLFLOW_TRACKING_URI, else a SQLite store at outputs/mlflow.db."""
    if configured:  # user-info in a URI from a config file: into MLflow's own variables, out of every record
        return take_credentials([f"tracking_uri={configured}"])[0].partition("=")[2]
    if os.environ.get("MLFLOW_TRACKING_URI"):
        take_credentials([])
        return os.environ["MLFLOW_TRACKING_URI"]
    return f"sqlite:///{Path('outputs').resolve() / 'mlflow.db'}"


def _client(uri: str, timeout: int, retries: int):
    """An MlflowClient (no process-wide MLflow state: sweep jobs share a process), failing fast: a dead
    server costs `timeout` seconds once, not MLflow's default minutes of retries."""
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(int(retries))  # read per request
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(int(timeout))
    for name in ("alembic", "mlflow"):  # the store's schema migrations and MLflow's own chatter: not the user's news
        logging.getLogger(name).setLevel(logging.WARNING)
    try:
        from mlflow import MlflowClient
    except ImportError:
        raise ImportError(f"logger=mlflow needs MLflow: {pip('mlflow')}") from None
    if uri.startswith("sqlite:///"):
        Path(uri[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return MlflowClient(tracking_uri=uri)


EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # MLflow 3's UI: runs, not GenAI traces


def _experiment(client, uri: str, name: str) -> str:
    """The experiment's id, made if it does not exist. One cnnrun makes is marked as model training, so
    MLflow 3's UI opens it on its training runs (an unmarked one opens on an empty GenAI traces overview)."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if uri.startswith("sqlite:///"):  # artifacts beside the database, not in ./mlruns of wherever we stand
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags=EXPERIMENT_KIND)
    except Exception:  # noqa: BLE001 - another job of the sweep created it first
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _log(client, run_id: str, metrics: dict | None = None, step: int = 0, params: dict | None = None,
         tags: dict | None = None) -> None:
    from mlflow.entities import Metric, Param, RunTag

    now = int(time.time() * 1000)
    m = [Metric(k, float(v), now, step) for k, v in (metrics or {}).items()]
    p = [Param(k[:250], redact(str(v))[:6000]) for k, v in (params or {}).items()]  # no secret reaches the tracker
    t = [RunTag(k, redact(str(v))[:5000]) for k, v in (tags or {}).items()]
    for i in range(0, max(len(m), len(p), len(t), 1), 100):  # MLflow takes 100 params per batch
        client.log_batch(run_id, metrics=m[i:i + 100], params=p[i:i + 100], tags=t[i:i + 100])


_MLFLOW_STATUS = {"ok": "FINISHED", "interrupted": "KILLED"}  # failed, nan: FAILED


NAMED = (lambda v: v.strip() != ""), "a non-empty name, e.g. logger.mlflow.experiment=fashion"
SECONDS = (lambda v: v >= 1), "a whole number of seconds >= 1"
RETRIES = (lambda v: 0 <= v <= 10), "a whole number in [0, 10]"


class MlflowLogger(Hook):
    """One MLflow run per cnnrun run: the flattened config as params, per-epoch metrics at their epoch,
    the final metrics, tags (model, dataset, backend, device, status) and the run's files as artifacts.
    In a sweep, every job is a child of one parent run (its id kept in SWEEP_DIR/mlflow.json); a resumed
    run continues its own MLflow run (its id kept in metrics.json as mlflow_run_id).

    Args:
        tracking_uri: None: $MLFLOW_TRACKING_URI, else sqlite:///outputs/mlflow.db; or http://host:5000.
        experiment: the MLflow experiment the runs go into.
        artifacts: upload the run's files (plots, reports, history, config, misclassified images).
        log_model: upload model.keras as an MLflow model.
        timeout: seconds per request to a tracking server before the logger gives up (and warns).
        retries: retries per request; a run never waits long on a dead server.
    """

    name = "mlflow"
    requires = ("mlflow", "mlflow")  # (module, extra): checked before any work

    def __init__(self, tracking_uri: str | None, experiment: Annotated[str, NAMED], artifacts: bool, log_model: bool,
                 timeout: Annotated[int, SECONDS], retries: Annotated[int, RETRIES]):
        self.tracking_uri, self.experiment, self.artifacts, self.log_model_too = tracking_uri, experiment, artifacts, log_model
        self.timeout, self.retries = timeout, retries
        self.client = self.run_id = self.dir = None

    def start(self, run) -> None:
        cfg, self.dir = run.cfg, run.dir
        uri = tracking_uri(self.tracking_uri)
        try:
            self.client = _client(uri, self.timeout, self.retries)
            experiment = _experiment(self.client, uri, str(self.experiment))
        except ImportError:
            raise
        except Exception as e:  # noqa: BLE001 - the first contact: say where, briefly
            reason = re.sub(r"\s+", " ", str(e).split(" (Caused by")[0])[:160]
            raise RuntimeError(f"cannot use the tracking store {uri} ({reason}); check logger.mlflow.tracking_uri "
                               "or MLFLOW_TRACKING_URI") from None
        earlier = run.earlier or {}
        if run.action == "continue" and earlier.get("mlflow_run_id") and earlier.get("mlflow_tracking_uri") == uri:
            self.run_id = earlier["mlflow_run_id"]  # the same MLflow run goes on: its curves continue at their epochs
            self.client.update_run(self.run_id, status="RUNNING")
            run.update(mlflow_run_id=self.run_id, mlflow_tracking_uri=uri)
            run.save()
            log.info("mlflow: continuing run %s in %s", self.run_id, uri)
            return
        tags = {"mlflow.source.name": "cnnrun train", "mlflow.source.type": "LOCAL", "cnnrun.run_dir": str(run.dir),
                "cnnrun.config_hash": run.fingerprint, "model": schema.display_name("model", cfg.model),
                "dataset": schema.display_name("dataset", cfg.dataset),
                "status": "running"}
        parent = sweep_parent(self.client, uri, experiment, self.dir.parent) if _in_sweep(self.dir) else None
        if parent:
            tags["mlflow.parentRunId"] = parent
        self.run_id = self.client.create_run(experiment, run_name=run_name(self.dir), tags=tags).info.run_id
        run.update(mlflow_run_id=self.run_id, mlflow_tracking_uri=uri)
        run.save()  # the id is on disk before training: a resumed run finds it
        params = {k: v for k, v in flatten(cfg).items() if not k.startswith("hydra.")}
        _log(self.client, self.run_id, params=params)
        view = ("" if uri.startswith("http") else f"mlflow ui --backend-store-uri {uri}, then ") + (
            f"{uri if uri.startswith('http') else 'http://127.0.0.1:5000'}/#/experiments/{experiment}"
            "?workflowType=machine_learning")  # MLflow 3's UI opens in GenAI mode, which shows no runs
        log.info("mlflow: run %s in %s (view: %s)", self.run_id, uri, view)

    def epoch(self, run, row: dict) -> None:
        values = {k: v for k, v in row.items() if k != "epoch"}
        _log(self.client, self.run_id, metrics=values, step=int(row["epoch"]))

    def end(self, run) -> None:
        if self.client is None or self.run_id is None:
            return
        m = run.metrics
        tags = {"status": m.get("status"), "backend": m.get("backend"), "device": m.get("device")}
        if m.get("error"):
            tags["cnnrun.error"] = m["error"]
        _log(self.client, self.run_id, metrics=final_metrics(m), step=int(m.get("epochs") or 0),
             tags={k: v for k, v in tags.items() if v is not None})
        if self.log_model_too and m.get("status") == "ok" and (run.dir / layout.MODEL).is_file():
            self.log_model(run.dir / layout.MODEL, [str(n) for n in m.get("class_names") or []])
        if self.artifacts:
            for path in sorted(run.dir.iterdir()):  # a folder (misclassified/, .hydra/) in one call, not a file each
                if path.name in NOT_UPLOADED or path.name.startswith(".cnnrun") or path.suffix == ".keras":
                    continue  # model.keras goes up as the MLflow model (log_model), not as a plain file
                if path.is_dir():
                    self.client.log_artifacts(self.run_id, str(path), path.name)
                elif path.is_file():
                    self.client.log_artifact(self.run_id, str(path))
        self.client.set_terminated(self.run_id, status=_MLFLOW_STATUS.get(m.get("status"), "FAILED"))


    def log_model(self, model_file: Path, class_names: list[str]) -> None:
        """model.keras as an MLflow model, named `model` on this run: a pyfunc (cnnrun/hooks/mlflow_model.py) that
        `mlflow models serve -m runs:/RUN_ID/model` runs and the registry takes. Its signature: uint8 images of the
        run's shape in; out, a row per image with each class's probability under its name and `class`, the most
        likely one."""
        import tempfile

        import keras
        import mlflow
        import numpy as np
        import pandas as pd
        from mlflow.models import infer_signature

        from cnnrun import backend
        from cnnrun.record.saved import load_model

        model = load_model(model_file, compile=False)
        example = np.zeros((1, *model.input_shape[1:]), "uint8")
        probs = np.asarray(model.predict(example, verbose=0), dtype="float64")
        answer = pd.DataFrame(probs, columns=class_names).assign(**{"class": [class_names[int(probs.argmax())]]})
        signature = infer_signature(example, answer)
        needs = [f"keras=={keras.__version__}", backend.requirement(), "pandas"]  # stated: inferring runs the model
        mlflow.set_tracking_uri(self.client.tracking_uri)
        with tempfile.TemporaryDirectory() as scratch, mlflow.start_run(run_id=self.run_id):
            names = Path(scratch) / "class_names.json"
            names.write_text(json.dumps(class_names), encoding="utf-8")
            mlflow.pyfunc.log_model(name="model", python_model=str(MLFLOW_MODEL), signature=signature,
                                    artifacts={"model": str(model_file), "class_names": str(names)},
                                    pip_requirements=needs)


MLFLOW_MODEL = Path(__file__).resolve().parent / "mlflow_model.py"  # loaded by MLflow, not imported


def _in_sweep(run_dir: Path) -> bool:
    return (Path(run_dir).parent / layout.MULTIRUN).is_file()


def sweep_parent(client, uri: str, experiment: str, sweep_dir: Path) -> str:
    """The sweep's parent run: made by its first job, found by the others (a file lock, for parallel jobs)."""
    record = Path(sweep_dir) / SWEEP_RECORD
    with open(Path(sweep_dir) / layout.MLFLOW_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if record.is_file():
            saved = json.loads(record.read_text())
            if saved.get("tracking_uri") == uri:
                client.update_run(saved["parent_run_id"], status="RUNNING")
                return saved["parent_run_id"]
        tags = {"mlflow.source.name": "cnnrun train -m", "cnnrun.sweep_dir": str(sweep_dir), "cnnrun.sweep": "parent"}
        parent = client.create_run(experiment, run_name=Path(sweep_dir).name, tags=tags).info.run_id
        _log(client, parent, params=sweep_params(sweep_dir))
        record.write_text(json.dumps({"parent_run_id": parent, "tracking_uri": uri, "experiment_id": experiment}))
        return parent


def sweep_params(sweep_dir: Path) -> dict[str, str]:
    """The sweep's own overrides as the parent run's params: each swept key with the values it takes
    (model: dense,cnn3), each fixed one with its value, as the command line gave them."""
    import yaml

    try:
        task = yaml.safe_load((Path(sweep_dir) / layout.MULTIRUN).read_text())["hydra"]["overrides"]["task"] or []
    except Exception:  # noqa: BLE001 - no record of the sweep: the parent keeps its tags only
        return {}
    params = {}
    for override in map(str, task):
        key, _, value = override.lstrip("+~").partition("=")
        if key and not key.startswith("hydra."):
            params[key] = value
    return params


def end_sweep(sweep_dir: Path, jobs: int, jobs_ok: int, groups: list, files: list[Path]) -> None:
    """After a multirun: the summary table and the mean ± std over seeds on the parent run, which then ends
    FINISHED (every job ok) or FAILED. Nothing to do when no job logged to MLflow; never raises."""
    record = Path(sweep_dir) / SWEEP_RECORD
    if not record.is_file():
        return
    try:
        saved = json.loads(record.read_text())
        from mlflow import MlflowClient

        client, parent = MlflowClient(tracking_uri=saved["tracking_uri"]), saved["parent_run_id"]
        metrics = {"jobs": jobs, "jobs_ok": jobs_ok}
        for g in groups:  # sweep.SeedGroup: compare's "across seeds" table, one metric pair per config
            key = _metric_key(g.config)
            metrics[f"test_acc_mean/{key}"] = g.mean  # fractions, as test_accuracy is
            metrics[f"test_acc_std/{key}"] = g.std
            metrics[f"seeds/{key}"] = float(g.seeds)
        _log(client, parent, metrics=metrics)
        for path in files:
            if Path(path).is_file():
                client.log_artifact(parent, str(path))
        client.set_terminated(parent, status="FINISHED" if jobs_ok == jobs else "FAILED")
    except Exception as e:  # noqa: BLE001 - the sweep's own summary is written; the tracker is a mirror
        log.warning("logger mlflow: could not finish the sweep's parent run (%s: %s)", type(e).__name__,
                    (str(e).strip().splitlines() or [""])[0][:300])


def _metric_key(text: str) -> str:
    """MLflow metric names allow letters, digits, _ - . / and spaces."""
    return re.sub(r"[^\w\-./ ]", "_", text)[:200] or "defaults"
