"""The `cnnrun` command: `train` (Hydra), `compare` and `predict`."""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
import re
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from cnnrun.record import layout

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

# Exit codes (README: "Exit codes"; the table in cnnrun/record/outcome.py). 130 / 143: Ctrl-C / SIGTERM.
from cnnrun.record.outcome import EXIT_CONFIG, EXIT_FAILED, EXIT_OK  # noqa: E402,F401

CONFIG_PATH = "pkg://cnnrun.conf"  # conf/ ships inside the package, so installed copies find it too
log = logging.getLogger("cnnrun")


def register_resolvers() -> None:
    """${cnnrun_uid:} (schema.register_resolvers), imported when needed: `cnnrun --help` stays quick."""
    from cnnrun.config.schema import register_resolvers as register

    register()


def start_backend() -> None:
    """Keras and its backend, started quietly (console.start_backend)."""
    from cnnrun.console import start_backend as start

    start()


def _quiet_backends() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    jax_compilation_cache()


def jax_compilation_cache() -> None:
    """JAX compiles every train step, and every eager op of a new shape (each layer's initializer), afresh in
    each process; its persistent cache keeps the programs between processes, so the next run of a model, a
    sweep's next job, a resumed run and every process of a distributed run skip them (a second tiny ResNet
    run on CPU: 31 s -> 13 s). Set here, as environment variables, because JAX reads them when it first
    compiles, which Keras' import already does. The cache is ~/.cache/cnnrun/jax (under $XDG_CACHE_HOME when
    set), kept to 1 GiB, least recently used out first (JAX needs `filelock` for that: cnnrun[jax] has it).
    JAX_COMPILATION_CACHE_DIR, when set, is the user's own choice; CNNRUN_JAX_CACHE=0 turns the cache off.
    TensorFlow ignores all of it."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ or \
            os.environ.get("CNNRUN_JAX_CACHE", "").strip().lower() in ("0", "false", "off", "no"):
        return
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    where = os.path.join(home, "cnnrun", "jax")
    try:
        os.makedirs(where, exist_ok=True)
    except OSError:
        return  # a read-only home: compile as before
    if os.access(where, os.W_OK):
        os.environ["JAX_COMPILATION_CACHE_DIR"] = where
        _say_once_about_broken_entries(where)
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # many small compiles add up
        if importlib.util.find_spec("filelock") is not None:  # JAX needs it to keep the cache to a size
            os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(1 << 30))


def _say_once_about_broken_entries(where: str) -> None:
    """JAX warns once per unreadable cache entry (a cut write, another JAX version), on every run that meets
    them: one line says it instead, once a process, with how to clear the cache; JAX recompiles them either way."""
    import warnings

    shown = warnings.showwarning
    said = []

    def show(message, category, filename, lineno, file=None, line=None):
        if str(message).startswith("Error reading persistent compilation cache entry"):
            if not said:
                said.append(True)
                log.warning("JAX's compilation cache in %s holds entries it cannot read (compiled again instead); "
                            "clear it with: rm -rf %s", where, where)
            return
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


def join_processes(cfg, run_dir: Path | None = None) -> None:
    """Joins the other processes of a distributed run (training/distribute.py), or says in one line why not."""
    from cnnrun import CnnrunError, console

    d = cfg.get("distribute")
    try:
        with console.quiet_backend():  # distribute imports Keras: its start-up lines are held back as start_backend's
            from cnnrun.training import distribute
        distribute.join(d)
        if distribute.watchdog is not None:
            distribute.watchdog.run_dir = str(run_dir) if run_dir else None
    except CnnrunError as e:
        console.error(str(e))
        raise SystemExit(EXIT_CONFIG) from None
    except Exception as e:  # noqa: BLE001 - JAX's own error: the first line says what went wrong
        from cnnrun.config.cluster import place

        where = place(d).coordinator or "the coordinator Slurm names"
        console.error(f"distribute: could not join the other processes at {where} within {5 * int(d.timeout)} s "
                      f"({str(e).splitlines()[0][:200]}); start every process, with the same coordinator and "
                      "distribute.num_processes, and distinct distribute.process_id")
        raise SystemExit(EXIT_FAILED) from None


def run_job(cfg) -> float | None:
    """Hydra's task function: one job of a run or a sweep. Returns validation (else test) accuracy."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    multirun = hc.mode == RunMode.MULTIRUN
    if hc.job.chdir:  # set in a config file (the command line is refused earlier): see preflight
        from cnnrun import console

        console.error("hydra.job.chdir=true is not supported: cnnrun passes each run its directory and keeps the "
                      "working directory; set hydra.job.chdir=false in your config")
        raise SystemExit(EXIT_CONFIG)
    if multirun:
        from cnnrun.data import forget_digests

        forget_digests()  # each job of a sweep reads its data's digest afresh
    gpu = None
    if multirun and multiprocessing.parent_process() is not None:  # a parallel launcher's worker
        from cnnrun.commands.launch import claim_gpu

        gpu = claim_gpu(Path(hc.sweep.dir) / layout.GPUS)  # before anything imports the backend

    from cnnrun import console
    from cnnrun.record import outcome
    from cnnrun.record import mark_failed

    fresh = multirun and cfg.trainer.fresh_process
    several = _several(cfg)
    if not fresh:  # a fresh-process job keeps the backend out of this (long-lived) process
        join_processes(cfg, run_dir)  # distribute=data_parallel over several processes: before the backend starts
        start_backend()
        from cnnrun.training.train import train

    if gpu is not None:
        log.info("job %s: GPU %s", hc.job.num, gpu)
    try:
        if fresh:
            from cnnrun.commands.launch import train_in_fresh_process

            metrics = train_in_fresh_process(cfg, run_dir)
        else:
            metrics = train(cfg, run_dir)
    except (Exception, KeyboardInterrupt) as e:  # how it ended: status and exit code from cnnrun/record/outcome.py
        ended, text = outcome.of(e), outcome.message(e, run_dir)
        if ended.status and not _follower(cfg):  # train() recorded it when it got that far; else a record is made
            mark_failed(run_dir, text, status=ended.status)
        if ended is outcome.CRASHED:  # a bug: its traceback is what helps
            if not multirun and not several:
                raise
            log.exception("job %s failed", hc.job.num if multirun else "")
        else:
            console.error(text)
        if ended is outcome.REFUSED and multirun:  # the sweep's summary counts it, and its exit code says so
            from cnnrun.commands.sweep import note_refused

            note_refused(Path(hc.sweep.dir), run_dir.name, text)
        if several:  # the other processes must hear of it now, not after JAX's shutdown barrier times out
            _leave(outcome.exit_code(ended))
        if multirun and ended is not outcome.INTERRUPTED:
            return None  # the sweep goes on; its summary shows this job as failed or refused
        raise SystemExit(outcome.exit_code(ended)) from None
    status = metrics["status"]
    _stop_watchdog()  # the run has ended: process 0 going away now is its normal end
    if metrics.get("follower") is not None:  # a process other than 0 of a distributed run: it wrote nothing
        log.info("process %s: the run ended %s; its record is %s", metrics["follower"], status, run_dir)
        if status != "ok":
            _leave(EXIT_FAILED if status != "interrupted" else metrics.get("exit_code", 130))
        return None
    if status == "interrupted":
        console.error(metrics["error"] if not multirun else
                      f"{metrics['error'].split(';')[0]}; continue the sweep with: cnnrun resume {run_dir.parent}")
        if several:  # the others stop at their next collective, rather than this one waiting for them at exit
            _leave(metrics.get("exit_code", 130))
        raise SystemExit(metrics.get("exit_code", 130))  # stop the sweep too: the user asked to stop
    if metrics.get("skipped"):
        log.info("job %s: already finished in %s, skipped", hc.job.num if multirun else "", run_dir)
    if multirun:
        acc = metrics.get("test_accuracy")
        log.info("job %s: %s, test accuracy %s", hc.job.num, status, f"{acc:.4f}" if acc is not None else "—")
    else:
        console.results_table(metrics, run_dir)
        acc = metrics.get("test_accuracy")
        log.info("result: %s, test accuracy %s, %s epochs, %.1f s of training; run directory %s", status,
                 "—" if acc is None else f"{100 * acc:.2f} %", metrics.get("epochs"), metrics.get("train_seconds") or 0,
                 run_dir, extra={"log_only": True})  # the console has the table; train.log this line
        if status != "ok":
            console.error(metrics.get("error", status))
            raise SystemExit(EXIT_FAILED)
    # What a sweeper that optimises (Optuna) reads: validation accuracy only, never the test set's (preflight
    # refuses such a search without a validation split).
    return metrics.get("best_val_accuracy")


class CheckOutputDir(Callback):
    """Hydra callback, before Hydra writes anything into the output directory: refuses one that cannot be
    written, takes its lock, and settles what an earlier run there means (cnnrun/record/__init__.py), in one line."""

    def _refuse_foreign(self, path, config, sweep: bool = False) -> None:
        from cnnrun import CnnrunError, console, record

        try:
            record.refuse_inside_data(path, config)
            record.refuse_foreign(path, sweep)
        except CnnrunError as e:
            console.error(str(e))
            raise SystemExit(EXIT_CONFIG) from None

    def _check(self, path) -> None:
        from cnnrun import CnnrunError, console, record

        try:
            record.writable_folder(path, "the output directory", "choose a writable place with hydra.run.dir=DIR "
                                   "(or hydra.sweep.dir=DIR for -m)")
        except CnnrunError as e:
            console.error(str(e))
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
        if _follower(config):  # a process other than 0 of a distributed run: process 0 owns the directory (Hydra's
            return             # copies and train.log too: ${cnnrun_owned:} in conf/config.yaml)
        self._refuse_foreign(run_dir, config)
        self._check(run_dir)
        self._own(run_dir, lambda: record.decide(run_dir, config))  # Hydra's .hydra/ and train.log come next

    def on_job_start(self, config, **kwargs) -> None:
        """Hydra has saved the job's config: secrets a config file carried are blanked in those copies, and
        the run's log handlers get the redacting filter (cnnrun/config/redact.py)."""
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from cnnrun.config.redact import guard_logging, redact

        guard_logging()
        if _follower(config):  # process 0 writes, and redacts, the run's copies
            return
        hc = HydraConfig.get()
        files = list((Path(hc.runtime.output_dir) / str(hc.output_subdir or layout.HYDRA)).glob("*.yaml"))
        if hc.mode == RunMode.MULTIRUN:
            files.append(Path(str(hc.sweep.dir)) / layout.MULTIRUN)
        for file in files:
            try:
                text = file.read_text(encoding="utf-8")
            except OSError:
                continue
            if redact(text) != text:
                file.write_text(redact(text), encoding="utf-8")

    def on_multirun_start(self, config, **kwargs) -> None:
        from hydra.core.hydra_config import HydraConfig

        HydraConfig.instance().set_config(config)
        sweep_dir = Path(str(config.hydra.sweep.dir))
        self._refuse_foreign(sweep_dir, config, sweep=True)
        self._check(sweep_dir)
        self._own(sweep_dir, lambda: own_sweep(sweep_dir, config))


def _follower(config) -> bool:
    """Whether this process is one of a distributed run's others (not process 0), from its config or Slurm's."""
    from cnnrun.config.cluster import follower

    return follower(config)


def _several(config) -> bool:
    """Whether this run is one of several processes (distribute=data_parallel over hosts)."""
    from cnnrun.config.cluster import several

    return several(config.get("distribute"))


def _stop_watchdog() -> None:
    distribute = sys.modules.get("cnnrun.training.distribute")
    if distribute is not None and distribute.watchdog is not None:
        distribute.watchdog.stop()


def _leave(code: int) -> None:
    """Ends a process of a distributed run that failed, at once: JAX's exit would first wait at its shutdown
    barrier for processes that may be gone. The others learn of it from their next collective or heartbeat."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def own_sweep(sweep_dir: Path, config) -> None:
    """A sweep directory holds one sweep: relaunching the same one (or `cnnrun resume`) continues it; a sweep whose
    jobs are other runs is refused before anything is written there, job by job, by each job's identity (the run's
    own, record.IDENTITY: the one definition of "the same run") against what its finished run recorded;
    trainer.resume=false sets the earlier sweep aside whole."""
    from cnnrun import record

    if not (sweep_dir / layout.MULTIRUN).is_file():
        return
    if config.trainer.resume is False:
        record.log.warning("trainer.resume=false: the earlier sweep in %s is kept in %s", sweep_dir,
                           record.set_aside(sweep_dir))
        return
    for job, cfg in enumerate(PLANNED):  # before Hydra writes a byte there
        done = record.read(sweep_dir / str(job)) or {}
        if done.get("status") == "ok" and \
                (done.get("config_hash"), done.get("epochs_planned")) != (record.fingerprint(cfg), int(cfg.trainer.epochs)):
            why = record.differences(sweep_dir / str(job), cfg) or \
                f" (it ran {done.get('epochs_planned')} epochs, this asks for {cfg.trainer.epochs})"
            raise record.RunRefused(
                f"{sweep_dir} holds another sweep: its job {job} ran another config{why}; choose a new "
                f"hydra.sweep.dir, continue that one with: cnnrun resume {sweep_dir}, or add trainer.resume=false to "
                f"keep it as {sweep_dir.name}.earlier-N")


PLANNED: list = []  # each job's validated config, in Hydra's order (preflight): own_sweep
RESUMING = "CNNRUN_RESUMING"  # set by `cnnrun resume`: the sweep's own overrides, plus whatever it was given


def preflight(args: list[str]) -> None:
    """Composes and checks the config of every job before any job starts: one line and exit 2 on the first
    bad one. Hydra's own flags (--help, --cfg ...) are left to Hydra."""
    from hydra._internal.utils import get_args_parser

    from cnnrun import CnnrunError, console
    from cnnrun.config import schema

    ns, unknown = get_args_parser().parse_known_args(args)  # -m, --cfg ... as Hydra reads them
    chdir = [o for o in ns.overrides if re.fullmatch(r"\+*hydra\.job\.chdir=(?i:true|yes|on|1)", o)]
    if chdir:  # the run's files, relative dataset paths and the trackers all assume the working directory stays
        console.error(f"{chdir[0]} is not supported: cnnrun passes each run its directory and keeps the working "
                      "directory where you started it; drop the override (relative paths then keep working)")
        raise SystemExit(EXIT_CONFIG)
    if ns.experimental_rerun:  # it unpickles a file, which runs whatever code the file holds
        console.error(f"--experimental-rerun {ns.experimental_rerun} is not supported: it unpickles a saved file, which "
                      "runs any code the file holds; continue a run with: cnnrun resume RUN_DIR")
        raise SystemExit(EXIT_CONFIG)
    if unknown or ns.help or ns.hydra_help or ns.cfg or ns.info or ns.shell_completion \
            or ns.config_name or ns.config_path:
        return  # Hydra's own business: it prints, or refuses, in its own way
    try:
        from cnnrun.console import quiet_backend
        from cnnrun.data import check_source

        # The data is looked for too (a mistyped dataset.path: at once, not after the backend's start), unless the
        # jobs run on other machines (Slurm, Ray), where the path may be theirs alone.
        elsewhere = any(re.fullmatch(r"\+*hydra/launcher=(?!basic$|joblib$|submitit_local$).*", o) for o in ns.overrides)

        def each(cfg) -> None:
            if elsewhere:
                return
            check_source(cfg.dataset)
            if (cfg.model.get("_target_") or cfg.dataset.get("_target_")) and not _several(cfg):
                from cnnrun.models import check_user_code  # Keras: only for a config naming the user's own code

                check_user_code(cfg)  # their loader's result and their model (saved and loaded), before any directory

        plan: list = []
        with quiet_backend():  # a config naming the user's own code imports it, and it may import Keras
            schema.check_jobs(ns.overrides, ns.multirun, config_dir=ns.config_dir, each=each, plan=plan)
            PLANNED[:] = plan
    except CnnrunError as e:
        console.error(str(e))
        raise SystemExit(EXIT_CONFIG) from None


def _hide_schema_groups() -> None:
    """`cnnrun train --help` lists the groups a user picks options from. The `schema/*` groups (the types in
    cnnrun/config/schema.py, which every option extends) are not among them, and Hydra has no switch to hide a group,
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
    from cnnrun.commands.sweep import SweepSummary

    SweepSummary.not_ok = 0  # this command's sweep only (the CLI called again in one process: tests, notebooks)
    sys.argv = ["cnnrun train", *args]
    hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")(run_job)()

    if SweepSummary.not_ok:  # a sweep ran to its end, but not every job ended ok: say so to scripts
        raise SystemExit(EXIT_FAILED)


# What `cnnrun resume` takes from a run or sweep directory (README: "What resume replays"). A directory is data:
# it may come from anyone (a CI artifact, a colleague), so only cnnrun's own settings with plain values are replayed,
# and never what chooses where results are sent or what code runs: the trackers (`logger`, whose destinations a
# directory must not pick), the hooks, Hydra's keys (callbacks, searchpath, run.dir ...), `_target_`-like keys and
# interpolations (${oc.env:...}). What must run, or where results go, is named by the user on the command line or in
# their own config files. The groups are the config's own (schema.Config), so a new group is replayed unless
# it is listed here as never replayed.
NEVER_REPLAYED = ("logger", "hooks")
REPLAYED_LAUNCHER_KEYS = ("hydra.launcher.n_jobs", "hydra.launcher.timeout_min", "hydra.launcher.cpus_per_task",
                          "hydra.launcher.gpus_per_node", "hydra.launcher.tasks_per_node", "hydra.launcher.mem_gb",
                          "hydra.launcher.nodes", "hydra.launcher.partition", "hydra.sweeper.n_trials",
                          "hydra.sweeper.n_jobs")
_PLAIN = re.compile(r"^[A-Za-z0-9_.\-]+$")
_CHOICE = re.compile(r"^[\[\]()A-Za-z0-9_,/.\- *]*$")


def replayed_groups() -> tuple[str, ...]:
    """The config groups resume replays: every field of the config's type, and the presets' groups, but those
    never replayed (NEVER_REPLAYED)."""
    import dataclasses

    from cnnrun.config.schema import Config

    fields = [f.name for f in dataclasses.fields(Config)]
    return tuple(g for g in (*fields, "experiment", "hparams_search") if g not in NEVER_REPLAYED)


def replayable(override: str, launcher: bool = False) -> bool:
    """Whether `cnnrun resume` may replay `override`, read from a run or sweep directory."""
    key, eq, value = str(override).partition("=")
    key = key.lstrip("+~")
    parts = re.split(r"[./@]", key)
    if not eq or "${" in value or any(p.startswith("_") for p in parts if p):
        return False
    if launcher:
        return (key in ("hydra/launcher", "hydra/sweeper") and bool(_PLAIN.match(value))) or \
            (key in REPLAYED_LAUNCHER_KEYS and bool(_PLAIN.match(value)))
    if parts[0] not in replayed_groups():
        return False
    if "." not in key and "/" not in key:  # a group's option: a name (or a list of names), never a path out
        return bool(_CHOICE.match(value)) and ".." not in value
    return True


def _replay(overrides, source: Path, launcher: bool = False) -> tuple[list[str], list[str]]:
    """(replayed, left out) of a directory's saved overrides."""
    kept = [str(o) for o in overrides or [] if replayable(o, launcher)]
    dropped = [str(o) for o in overrides or [] if not replayable(o, launcher)]
    return kept, dropped


def _say_replay(source: Path, kept: list[str], dropped: list[str], given: list[str]) -> None:
    """resume's first line: what it takes from the directory (data paths included), what it leaves out, and why."""
    from cnnrun import console

    line = f"resume: replaying from {source}: {' '.join(kept) or '(the defaults)'}"
    if given:
        line += f"; from your command: {' '.join(given)}"
    if dropped:
        line += (f"; not replayed (a directory never names trackers, hooks or code: give any you mean on the command "
                 f"line): {' '.join(dropped)}")
    console.console.print(line, soft_wrap=True, markup=False, highlight=False)


def _resume_arguments(args: list[str]) -> tuple[Path, list[str], list[str]]:
    """(directory, Hydra's flags and overrides, modules to import): the directory may come anywhere among them, and
    Hydra's flags that take a value (--config-dir conf, -cd conf) keep it."""
    from cnnrun import console

    takes_value = ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp")
    path, rest, imports, i = None, [], [], 0
    while i < len(args):
        arg = args[i]
        if arg in ("--import",) and i + 1 < len(args):
            imports.append(args[i + 1])
            i += 2
            continue
        if arg.startswith("--import="):
            imports.append(arg.partition("=")[2])
        elif arg in takes_value and i + 1 < len(args):
            rest += [arg, args[i + 1]]
            i += 2
            continue
        elif path is None and not arg.startswith("-") and "=" not in arg:
            path = Path(arg)
        else:
            rest.append(arg)
        i += 1
    if path is None:
        console.error("resume needs a run or sweep directory: cnnrun resume outputs/2026-11-24/10-00-00_cnn4_ab12cd")
        raise SystemExit(EXIT_CONFIG)
    return path, rest, imports


def resume_main(args: list[str]) -> None:
    """`cnnrun resume PATH [KEY=VALUE ...] [--config-dir DIR] [--import MODULE]`: the original command again,
    pointed at the same directory."""
    import yaml

    from cnnrun import CnnrunError, console

    path, extra, imports = _resume_arguments(args)
    flags = []  # Hydra's flags (--config-dir DIR ...) before every override, where its parser wants them
    for i, arg in enumerate(extra):
        if arg.startswith("-") and arg not in flags:
            flags.append(arg)
            if i + 1 < len(extra) and "=" not in arg and not extra[i + 1].startswith("-") and \
                    arg in ("--config-dir", "-cd", "--config-name", "-cn", "--config-path", "-cp"):
                flags.append(extra[i + 1])
    extra = [a for a in extra if a not in flags]
    given_resume = [o for o in extra if o.lstrip("+~").startswith("trainer.resume=")]  # the user's word wins
    given = [o for o in extra if not o.startswith("-")]

    def load(file: Path):
        try:
            return yaml.safe_load(file.read_text(encoding="utf-8"))
        except (OSError, ValueError, yaml.YAMLError) as e:
            console.error(f"{file} is unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__}); "
                          "resume needs the directory a run or sweep wrote")
            raise SystemExit(EXIT_CONFIG) from None

    if imports:  # the user's own modules (their layers, registered with Keras), before anything is composed
        try:
            from cnnrun.config.plugins import import_named

            with console.quiet_backend():
                import_named(imports)
        except CnnrunError as e:
            console.error(str(e))
            raise SystemExit(EXIT_CONFIG) from None
    if (layout.overrides(path)).is_file():  # one run
        saved = load(layout.overrides(path))
        overrides, dropped = _replay([o for o in (saved if isinstance(saved, list) else [])
                                      if not str(o).startswith("trainer.resume=")], layout.overrides(path))
        _say_replay(layout.overrides(path), overrides, dropped, given)
        from cnnrun import record

        resume = "true" if (path / record.CHECKPOINT).is_file() else "auto"
        if resume == "auto" and not given_resume and (record.read(path) or {}).get("status") != "ok":
            console.console.print(f"{path} has no checkpoint to continue from: starting the run over with its own config "
                          f"(the earlier files are kept in {path.name}.earlier-N)", soft_wrap=True, markup=False)
        own = [] if given_resume else [f"trainer.resume={resume}"]
        train_main([*flags, *overrides, *extra, *own, f"hydra.run.dir={path}"])
    elif (path / layout.MULTIRUN).is_file():  # a sweep: each finished job is skipped, each broken-off one resumed
        saved = load(path / layout.MULTIRUN)
        try:
            task, hydra_overrides = saved["hydra"]["overrides"]["task"], saved["hydra"]["overrides"]["hydra"]
        except (TypeError, KeyError):
            console.error(f"{path / 'multirun.yaml'} holds no sweep's overrides; resume needs the directory a sweep wrote")
            raise SystemExit(EXIT_CONFIG) from None
        overrides, dropped = _replay(task, path / layout.MULTIRUN)
        launcher, dropped_launcher = _replay(hydra_overrides, path / layout.MULTIRUN, launcher=True)
        dropped_launcher = [o for o in dropped_launcher if not o.startswith("hydra.sweep.dir=")]  # resume sets it
        _say_replay(path / layout.MULTIRUN, [*launcher, *overrides], [*dropped_launcher, *dropped], given)
        os.environ[RESUMING] = "1"
        train_main(["-m", *flags, *launcher, *overrides, *extra, f"hydra.sweep.dir={path}"])
    else:
        console.error(f"{path} is not a cnnrun run or sweep directory (no .hydra/overrides.yaml or multirun.yaml); "
                      "give the directory a run or sweep wrote")
        raise SystemExit(EXIT_CONFIG)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv:
        print(USAGE, file=sys.stderr)
        print("cnnrun: error: a command is needed (train, resume, compare, predict, export, explain)", file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
    if argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    if argv[0] in ("train", "resume", "predict", "explain", "export"):  # they run Keras; compare and --version do not
        _quiet_backends()
    from cnnrun import signals
    from cnnrun.config.redact import take_credentials

    signals.clear()  # this command's signals only (the CLI called again in one process)
    signals.install()  # Ctrl-C and SIGTERM from the first moment on, never lost (cnnrun/signals.py)

    command, rest = argv[0], take_credentials(argv[1:])  # a tracking URI's password goes to MLflow's variables only
    try:
        _dispatch(command, rest)
    except KeyboardInterrupt:  # a signal outside any run (composing, loading a model): nothing to record
        print("cnnrun: interrupted", file=sys.stderr, flush=True)
        raise SystemExit(signals.exit_code()) from None


BACKENDS = {"tensorflow": "tensorflow", "jax": "jax"}  # KERAS_BACKEND: the module each needs


def check_backend(command: str) -> None:
    """$KERAS_BACKEND names a backend cnnrun runs on, and it is installed: else one line, before any work."""
    import importlib.util

    if command not in ("train", "resume", "predict", "explain"):
        return  # compare needs no backend; export picks TensorFlow itself
    name = os.environ.get("KERAS_BACKEND", "").strip()
    if not name:
        return
    if name not in BACKENDS:
        from cnnrun import console

        console.error(f"KERAS_BACKEND={name} is not a backend cnnrun runs on; expected tensorflow (the default) or "
                      "jax, e.g. KERAS_BACKEND=jax, or unset it")
        raise SystemExit(EXIT_CONFIG)
    if importlib.util.find_spec(BACKENDS[name]) is None:
        from cnnrun import console

        from cnnrun.config.extras import pip

        console.error(f"KERAS_BACKEND={name} but {BACKENDS[name]} is not installed; {pip('jax')} "
                      "(or unset KERAS_BACKEND for TensorFlow)")
        raise SystemExit(EXIT_CONFIG)


def _dispatch(command: str, rest: list[str]) -> None:
    check_backend(command)
    if command == "train":
        train_main(rest)
    elif command == "resume":
        resume_main(rest)
    elif command == "compare":
        from cnnrun.commands.sweep import compare_main

        compare_main(rest)
    elif command == "predict":  # each command starts the backend itself once its arguments are checked
        from cnnrun.commands.predict import predict_main

        predict_main(rest)
    elif command == "explain":
        from cnnrun.commands.explain import explain_main

        explain_main(rest)
    elif command == "export":  # on TensorFlow, whose converters these are (export._start_tensorflow)
        from cnnrun.commands.export import export_main

        export_main(rest)
    elif command in ("-V", "--version", "version"):
        from cnnrun import __version__

        print(f"cnnrun {__version__}")
    else:
        print(f"cnnrun: error: unknown command {command!r}; expected train, resume, compare, predict, export or explain (cnnrun --help)",
              file=sys.stderr)
        raise SystemExit(EXIT_CONFIG)
