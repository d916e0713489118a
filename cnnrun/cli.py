"""The `cnnrun` command: `train` (Hydra), `compare` and `predict`."""

from __future__ import annotations

import logging
import multiprocessing
import os
import secrets
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

USAGE = """usage: cnnrun COMMAND [ARGS]

commands:
  train [KEY=VALUE ...]         train, evaluate and report one experiment; -m for a sweep
                                (cnnrun train --help lists the config groups)
  resume RUN_DIR|SWEEP_DIR      continue an interrupted run from its checkpoint, or re-launch a
                                sweep: finished jobs are skipped, broken-off ones continue
  compare PATH [PATH ...]       one table for runs and sweep directories (mean ± std over seeds)
  predict RUN_DIR IMAGE|DIR ... classify images with a finished run's model

examples:
  cnnrun train dataset=fashion model=cnn4
  cnnrun train -m model=dense,mnist_cnn,cnn3 augment=none,flip
  cnnrun compare outputs/multirun/2026-11-24/10-00-00_ab12cd
"""

CONFIG_PATH = "pkg://cnnrun.conf"  # conf/ ships inside the package, so installed copies find it too
log = logging.getLogger("cnnrun")


def register_resolvers() -> None:
    """`${cnnrun_uid:}`: a random suffix, drawn once per config, so two runs never share a directory."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver("cnnrun_uid"):
        OmegaConf.register_new_resolver("cnnrun_uid", lambda: secrets.token_hex(3), use_cache=True)


def _quiet_backends() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")


def run_job(cfg) -> float | None:
    """Hydra's task function: one job of a run or a sweep. Returns validation (else test) accuracy."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    gpu = None
    if multirun and multiprocessing.parent_process() is not None:  # a parallel launcher's worker
        from cnnrun.launch import claim_gpu

        gpu = claim_gpu(Path(hc.sweep.dir) / ".gpus")  # before anything imports the backend

    from cnnrun import CnnrunError, console
    from cnnrun.artifacts import mark_failed

    fresh = multirun and cfg.trainer.get("fresh_process", False)
    if not fresh:  # a fresh-process job keeps the backend out of this (long-lived) process
        from cnnrun.train import train

    if gpu is not None:
        log.info("job %s: GPU %s", hc.job.num, gpu)
    try:
        if fresh:
            from cnnrun.launch import train_in_fresh_process

            metrics = train_in_fresh_process(cfg, run_dir)
        else:
            metrics = train(cfg, run_dir)
    except CnnrunError as e:
        mark_failed(run_dir, str(e))
        console.error(str(e))
        if multirun:
            return None  # the sweep goes on; its summary shows this job as failed
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # outside fit (e.g. while loading data); inside, fit stops after the batch
        mark_failed(run_dir, f"interrupted before training finished; start again with: cnnrun resume {run_dir}",
                    status="interrupted")
        console.error(f"interrupted; {run_dir} is marked interrupted")
        raise SystemExit(130) from None
    except Exception as e:
        mark_failed(run_dir, f"{type(e).__name__}: {e}")
        if multirun:
            log.exception("job %s failed", hc.job.num)
            return None
        raise
    status = metrics["status"]
    if status == "interrupted":
        console.error(metrics["error"] if not multirun else
                      f"{metrics['error'].split(';')[0]}; continue the sweep with: cnnrun resume {run_dir.parent}")
        raise SystemExit(metrics.get("exit_code", 130))  # stop the sweep too: the user asked to stop
    if metrics.get("skipped"):
        log.info("job %s: already finished in %s, skipped", hc.job.num if multirun else "", run_dir)
    if multirun:
        acc = metrics.get("test_accuracy")
        log.info("job %s: %s, test accuracy %s", hc.job.num, status, f"{acc:.4f}" if acc is not None else "—")
    else:
        console.results_table(metrics, run_dir)
        if status != "ok":
            console.error(metrics.get("error", status))
            raise SystemExit(3)
    return metrics.get("best_val_accuracy") or metrics.get("test_accuracy")


class CheckOutputDir(Callback):
    """Hydra callback: refuse an output directory that cannot be written, in one line, before any work."""

    def _check(self, path) -> None:
        from cnnrun import console

        path = Path(str(path))
        try:
            path.mkdir(parents=True, exist_ok=True)
            probe = path / f".cnnrun-write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            console.error(f"cannot write to output directory {path}: {e.strerror or e}; "
                          "choose a writable place with hydra.run.dir=DIR (or hydra.sweep.dir=DIR for -m)")
            raise SystemExit(2) from None

    def on_run_start(self, config, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)  # run.dir names ${hydra:runtime.choices.model}
        self._check(config.hydra.run.dir)

    def on_multirun_start(self, config, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)
        self._check(config.hydra.sweep.dir)


def train_main(args: list[str]) -> None:
    import hydra

    register_resolvers()
    sys.argv = ["cnnrun train", *args]
    hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")(run_job)()


def resume_main(args: list[str]) -> None:
    """`cnnrun resume PATH [KEY=VALUE ...]`: the original command again, pointed at the same directory."""
    import yaml

    from cnnrun import console

    if not args or args[0].startswith("-"):
        console.error("resume needs a run or sweep directory: cnnrun resume outputs/2026-11-24/10-00-00_cnn4_ab12cd")
        raise SystemExit(2)
    path, extra = Path(args[0]), args[1:]
    if (path / ".hydra" / "overrides.yaml").is_file():  # one run
        overrides = yaml.safe_load((path / ".hydra" / "overrides.yaml").read_text()) or []
        overrides = [o for o in overrides if not o.startswith(("trainer.resume=", "hydra.run.dir="))]
        train_main([*overrides, *extra, "trainer.resume=true", f"hydra.run.dir={path}"])
    elif (path / "multirun.yaml").is_file():  # a sweep: each finished job is skipped, each broken-off one resumed
        saved = yaml.safe_load((path / "multirun.yaml").read_text())
        overrides = [o for o in saved["hydra"]["overrides"]["task"] if not o.startswith("hydra.sweep.dir=")]
        launcher = [o for o in saved["hydra"]["overrides"]["hydra"]
                    if not o.startswith(("hydra.sweep.dir=", "hydra.run.dir=", "hydra.mode="))]
        train_main(["-m", *launcher, *overrides, *extra, f"hydra.sweep.dir={path}"])
    else:
        console.error(f"{path} is not a cnnrun run or sweep directory (no .hydra/overrides.yaml or multirun.yaml); "
                      "give the directory a run or sweep wrote")
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    _quiet_backends()
    command, rest = argv[0], argv[1:]
    if command == "train":
        train_main(rest)
    elif command == "resume":
        resume_main(rest)
    elif command == "compare":
        from cnnrun.sweep import compare_main

        compare_main(rest)
    elif command == "predict":
        from cnnrun.predict import predict_main

        predict_main(rest)
    elif command in ("-V", "--version", "version"):
        from cnnrun import __version__

        print(f"cnnrun {__version__}")
    else:
        print(f"cnnrun: error: unknown command {command!r}; expected train, compare or predict (cnnrun --help)", file=sys.stderr)
        raise SystemExit(2)
