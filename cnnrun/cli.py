"""The `cnnrun` command: `train` (Hydra), `compare` and `predict`."""

from __future__ import annotations

import logging
import os
import secrets
import sys
from pathlib import Path

USAGE = """usage: cnnrun COMMAND [ARGS]

commands:
  train [KEY=VALUE ...]         train, evaluate and report one experiment; -m for a sweep
                                (cnnrun train --help lists the config groups)
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

    from cnnrun import CnnrunError, console
    from cnnrun.train import mark_failed, train

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    try:
        metrics = train(cfg, run_dir)
    except CnnrunError as e:
        mark_failed(run_dir, str(e))
        console.error(str(e))
        if multirun:
            return None  # the sweep goes on; its summary shows this job as failed
        raise SystemExit(2) from None
    except Exception as e:
        mark_failed(run_dir, f"{type(e).__name__}: {e}")
        if multirun:
            log.exception("job %s failed", hc.job.num)
            return None
        raise
    if multirun:
        acc = metrics.get("test_accuracy")
        log.info("job %s: %s, test accuracy %s", hc.job.num, metrics["status"], f"{acc:.4f}" if acc is not None else "—")
    else:
        console.results_table(metrics, run_dir)
        if metrics["status"] != "ok":
            console.error(metrics.get("error", metrics["status"]))
            raise SystemExit(3)
    return metrics.get("best_val_accuracy") or metrics.get("test_accuracy")


def train_main(args: list[str]) -> None:
    import hydra

    register_resolvers()
    sys.argv = ["cnnrun train", *args]
    hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")(run_job)()


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    _quiet_backends()
    command, rest = argv[0], argv[1:]
    if command == "train":
        train_main(rest)
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
