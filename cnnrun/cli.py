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
  export RUN_DIR [--format F]   the model as a TensorFlow SavedModel, ONNX, LiteRT; each verified
  explain RUN_DIR [IMAGE ...]   Grad-CAM heat-maps (misclassified test images, any images given) and
                                an embedding map of the test set (t-SNE), into RUN_DIR/explain

examples:
  cnnrun train dataset=fashion model=cnn4
  cnnrun train -m model=dense,mnist_cnn,cnn3 augment=none,flip
  cnnrun compare outputs/multirun/2026-11-24/10-00-00_ab12cd
"""

# Exit codes (README: "Exit codes"). 130 / 143: stopped by Ctrl-C / SIGTERM (128 + the signal).
EXIT_OK = 0          # every run ended ok (or was already finished)
EXIT_FAILED = 1      # a run, or some jobs of a sweep, did not end ok (failed, nan); the summary is written
EXIT_CONFIG = 2      # refused before any work: config, data, paths, usage

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


# What TensorFlow prints on every start through absl (TF_CPP_MIN_LOG_LEVEL does not reach these): facts about
# the build, not about the run. The CUDA lines are dropped only where the machine has no NVIDIA device, so a
# GPU machine whose driver fails still says so.
_NOISE = [r"^WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
          r"^I\d{4} [\d:.]+\s+\d+ (port|cpu_feature_guard)\.cc:\d+\] ",
          r"^To enable the following instructions: .* rebuild TensorFlow with the appropriate compiler flags"]
_NO_GPU_NOISE = [r"^I\d{4} [\d:.]+\s+\d+ cudart_stub\.cc:\d+\] Could not find cuda drivers",
                 r"^E\d{4} [\d:.]+\s+\d+ cuda_(platform|executor|driver)\.cc:\d+\] failed call to cuInit"]


def start_backend() -> None:
    """Imports Keras and lets the backend find its devices, with its start-up boilerplate held back from the
    terminal (everything else it prints comes through). Call before anything else imports Keras."""
    import re

    from cnnrun.console import filtered_stderr

    gpu_here = any(os.path.exists(p) for p in ("/dev/nvidia0", "/proc/driver/nvidia/version", "/dev/dxg"))
    noise = re.compile("|".join(_NOISE if gpu_here else _NOISE + _NO_GPU_NOISE))
    with filtered_stderr(noise):
        from cnnrun import backend

        backend.start()  # TensorFlow probes CUDA on the first device query


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
    from cnnrun.record import RunRefused, mark_failed

    fresh = multirun and cfg.trainer.get("fresh_process", False)
    if not fresh:  # a fresh-process job keeps the backend out of this (long-lived) process
        start_backend()
        from cnnrun.train import train

    if gpu is not None:
        log.info("job %s: GPU %s", hc.job.num, gpu)
    try:
        if fresh:
            from cnnrun.launch import train_in_fresh_process

            metrics = train_in_fresh_process(cfg, run_dir)
        else:
            metrics = train(cfg, run_dir)
    except RunRefused as e:  # another process's directory, or a finished run of another config: untouched
        console.error(str(e))
        if multirun:
            return None
        raise SystemExit(EXIT_CONFIG) from None
    except CnnrunError as e:
        mark_failed(run_dir, str(e))  # train() recorded it already when it got that far; else a record is made
        console.error(str(e))
        if multirun:
            return None  # the sweep goes on; its summary shows this job as failed
        raise SystemExit(EXIT_CONFIG) from None
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
            raise SystemExit(EXIT_FAILED)
    return metrics.get("best_val_accuracy") or metrics.get("test_accuracy")


class CheckOutputDir(Callback):
    """Hydra callback, before Hydra writes anything into the output directory: refuses one that cannot be
    written, takes its lock, and settles what an earlier run there means (cnnrun/record.py), in one line."""

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
            raise SystemExit(EXIT_CONFIG) from None

    def _own(self, path, decide) -> None:
        from cnnrun import CnnrunError, console, record

        try:
            record.claim(path)
            decide()
        except CnnrunError as e:
            console.error(str(e))
            raise SystemExit(EXIT_CONFIG) from None

    def on_run_start(self, config, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig

        from cnnrun import record

        HydraConfig.instance().set_config(config)  # run.dir names ${hydra:runtime.choices.model}
        run_dir = Path(str(config.hydra.run.dir))
        self._check(run_dir)
        self._own(run_dir, lambda: record.decide(run_dir, config))  # Hydra's .hydra/ and train.log come next

    def on_multirun_start(self, config, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        self._check(sweep_dir)
        self._own(sweep_dir, lambda: own_sweep(sweep_dir, config))


def own_sweep(sweep_dir: Path, config) -> None:
    """A sweep directory holds one sweep: relaunching the same one (or `cnnrun resume`) continues it; another
    sweep is refused; trainer.resume=false sets the earlier sweep aside whole."""
    import yaml

    from cnnrun import record

    saved = sweep_dir / "multirun.yaml"
    if not saved.is_file():
        return
    if config.trainer.resume is False:
        record.log.warning("trainer.resume=false: the earlier sweep in %s is kept in %s", sweep_dir,
                           record.set_aside(sweep_dir))
        return
    try:
        earlier = yaml.safe_load(saved.read_text())["hydra"]["overrides"]["task"]
    except Exception:  # noqa: BLE001 - an unreadable record is not a sweep to protect
        return
    now = list(config.hydra.overrides.task)
    same = {o for o in earlier if not o.startswith("trainer.resume=")} <= set(now) or os.environ.get(RESUMING)
    if not same and any(record.read(p.parent) for p in sweep_dir.glob("*/metrics.json")):
        raise record.RunRefused(
            f"{sweep_dir} holds another sweep ({' '.join(earlier)}); choose a new hydra.sweep.dir, continue that one "
            f"with: cnnrun resume {sweep_dir}, or add trainer.resume=false to keep it as {sweep_dir.name}.earlier-N")


RESUMING = "CNNRUN_RESUMING"  # set by `cnnrun resume`: the sweep's own overrides, plus whatever it was given


def preflight(args: list[str]) -> None:
    """Composes and checks the config of every job before any job starts: one line and exit 2 on the first
    bad one. Hydra's own flags (--help, --cfg ...) are left to Hydra."""
    from hydra._internal.utils import get_args_parser

    from cnnrun import CnnrunError, console, schema

    ns, unknown = get_args_parser().parse_known_args(args)  # -m, --cfg ... as Hydra reads them
    if unknown or ns.help or ns.hydra_help or ns.cfg or ns.info or ns.shell_completion \
            or ns.experimental_rerun or ns.config_name or ns.config_path or ns.config_dir:
        return  # Hydra's own business: it prints, or refuses, in its own way
    try:
        schema.check_jobs(ns.overrides, ns.multirun)
    except CnnrunError as e:
        console.error(str(e))
        raise SystemExit(EXIT_CONFIG) from None


def _hide_schema_groups() -> None:
    """`cnnrun train --help` lists the groups a user picks options from. The `schema/*` groups (the types in
    cnnrun/schema.py, which every option extends) are not among them, and Hydra has no switch to hide a group,
    so its group lister is wrapped for this one help call."""
    from hydra._internal.hydra import Hydra

    lister = Hydra.list_all_config_groups
    Hydra.list_all_config_groups = lambda self, parent="": [g for g in lister(self, parent)
                                                            if g.split("/")[0] != "schema"]


def train_main(args: list[str]) -> None:
    import hydra

    register_resolvers()
    preflight(args)
    if "--help" in args or "-h" in args:
        _hide_schema_groups()
    sys.argv = ["cnnrun train", *args]
    hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")(run_job)()
    from cnnrun.sweep import SweepSummary

    if SweepSummary.not_ok:  # a sweep ran to its end, but not every job ended ok: say so to scripts
        raise SystemExit(EXIT_FAILED)


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
        from cnnrun import record

        resume = "true" if (path / record.CHECKPOINT).is_file() else "auto"
        if resume == "auto" and (record.read(path) or {}).get("status") != "ok":  # nothing to continue from
            console.console.print(f"{path} has no checkpoint to continue from: starting the run over with its own config "
                          f"(the earlier files are kept in {path.name}.earlier-N)", soft_wrap=True)
        train_main([*overrides, *extra, f"trainer.resume={resume}", f"hydra.run.dir={path}"])
    elif (path / "multirun.yaml").is_file():  # a sweep: each finished job is skipped, each broken-off one resumed
        saved = yaml.safe_load((path / "multirun.yaml").read_text())
        overrides = [o for o in saved["hydra"]["overrides"]["task"] if not o.startswith("hydra.sweep.dir=")]
        launcher = [o for o in saved["hydra"]["overrides"]["hydra"]
                    if not o.startswith(("hydra.sweep.dir=", "hydra.run.dir=", "hydra.mode="))]
        os.environ[RESUMING] = "1"
        train_main(["-m", *launcher, *overrides, *extra, f"hydra.sweep.dir={path}"])
    else:
        console.error(f"{path} is not a cnnrun run or sweep directory (no .hydra/overrides.yaml or multirun.yaml); "
                      "give the directory a run or sweep wrote")
        raise SystemExit(2)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(USAGE, file=sys.stderr)
        print("cnnrun: error: a command is needed (train, resume, compare, predict, export, explain)", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    if argv[0] in ("-h", "--help", "help"):
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
        start_backend()
        from cnnrun.predict import predict_main

        predict_main(rest)
    elif command == "explain":
        start_backend()
        from cnnrun.explain import explain_main

        explain_main(rest)
    elif command == "export":
        import importlib.util

        if importlib.util.find_spec("tensorflow") is not None:  # the converters are TensorFlow's
            os.environ["KERAS_BACKEND"] = "tensorflow"
        start_backend()
        from cnnrun.export import export_main

        export_main(rest)
    elif command in ("-V", "--version", "version"):
        from cnnrun import __version__

        print(f"cnnrun {__version__}")
    else:
        print(f"cnnrun: error: unknown command {command!r}; expected train, resume, compare, predict, export or explain (cnnrun --help)",
              file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
