"""`cnnrun train [KEY=VALUE ...]` (-m for a sweep): Hydra's entry and task function. Before any work, the
pre-flight check composes and validates every job (and checks the data is there and the user's code runs);
a sweep rerun into its own directory is checked job by job; Hydra's callback refuses an unwritable output
directory; then each job is one run (training/train.py), in this process, a fresh one, or as one process
of a data-parallel run, joined here."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import re
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

from cnnrun.record import layout
from cnnrun.record.outcome import EXIT_CONFIG, EXIT_FAILED

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
    gpu = _sweep_job(hc) if multirun else None
    fresh = multirun and cfg.trainer.fresh_process
    if not fresh:  # a fresh-process job keeps the backend out of this (long-lived) process
        join_processes(cfg, run_dir)  # distribute=data_parallel over several processes: before the backend starts
        start_backend()
    if gpu is not None:
        log.info("job %s: GPU %s", hc.job.num, gpu)
    try:
        if fresh:
            from cnnrun.training.launch import train_in_fresh_process

            metrics = train_in_fresh_process(cfg, run_dir)
        else:
            from cnnrun.training.train import train

            metrics = train(cfg, run_dir)
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 - every ending recorded; a bug re-raised there
        # how it ended: status and exit code from cnnrun/record/outcome.py
        return _ended_early(e, cfg, hc, run_dir, multirun)
    return _ended(metrics, cfg, hc, run_dir, multirun)


def _sweep_job(hc) -> str | None:
    """A sweep's job starts afresh: its data's digest is read again; a parallel launcher's worker claims a GPU
    (before anything imports the backend). Returns that GPU, if any."""
    from cnnrun.data import forget_digests

    forget_digests()
    if multiprocessing.parent_process() is None:
        return None
    from cnnrun.training.launch import claim_gpu

    return claim_gpu(Path(hc.sweep.dir) / layout.GPUS)


def _ended_early(e: BaseException, cfg, hc, run_dir: Path, multirun: bool) -> None:
    """A job that raised: its record says how it ended (made here when train() did not get that far), one line
    (a traceback for a bug) says why; a sweep goes on unless the user asked to stop."""
    from cnnrun import console
    from cnnrun.config.cluster import process
    from cnnrun.record import mark_failed, outcome

    me, ended, text = process(cfg), outcome.of(e), outcome.message(e, run_dir)
    if ended.status and me.writes:
        mark_failed(run_dir, text, status=ended.status)
    if ended is outcome.CRASHED:  # a bug: its traceback is what helps
        me.crashed(e, multirun, lambda: log.exception("job %s failed", hc.job.num if multirun else "", exc_info=e))
    else:
        console.error(text)
    if ended is outcome.REFUSED and multirun:  # the sweep's summary counts it, and its exit code says so
        from cnnrun.commands.sweep import note_refused

        note_refused(Path(hc.sweep.dir), run_dir.name, text)
    me.leave(outcome.exit_code(ended))  # one of several: now, so that the others hear of it (cluster.OneOfSeveral)
    if multirun and ended is not outcome.INTERRUPTED:
        return None  # the sweep goes on; its summary shows this job as failed or refused
    raise SystemExit(outcome.exit_code(ended)) from None


def _ended(metrics: dict, cfg, hc, run_dir: Path, multirun: bool) -> float | None:
    """A job that ran to an end: what the console and train.log say of it, and the exit code where not ok."""
    from cnnrun import console, signals
    from cnnrun.config.cluster import process

    status, me = metrics["status"], process(cfg)
    code = metrics.get("exit_code") or signals.exit_code() if status == "interrupted" else EXIT_FAILED  # when not ok
    _stop_watchdog()  # the run has ended: process 0 going away now is its normal end
    if me.ends_here(metrics, run_dir, code):  # a process other than 0 of a distributed run: it wrote nothing
        return None
    if status == "interrupted":
        console.error(metrics["error"] if not multirun else
                      f"{metrics['error'].split(';')[0]}; continue the sweep with: cnnrun resume {run_dir.parent}")
        me.leave(code)  # one of several: the others stop at their next collective, not waiting for this one at exit
        raise SystemExit(code)  # stop the sweep too: the user asked to stop
    if metrics.get("skipped"):
        log.info("job %s: already finished in %s, skipped", hc.job.num if multirun else "", run_dir)
    acc = metrics.get("test_accuracy")
    if multirun:
        log.info("job %s: %s, test accuracy %s", hc.job.num, status, f"{acc:.4f}" if acc is not None else "—")
    else:
        console.results_table(metrics, run_dir)
        log.info("result: %s, test accuracy %s, %s epochs, %.1f s of training; run directory %s", status,
                 "—" if acc is None else f"{100 * acc:.2f} %", metrics.get("epochs"), metrics.get("train_seconds") or 0,
                 run_dir, extra={"log_only": True})  # the console has the table; train.log this line
        if status != "ok":
            console.error(metrics.get("error", status))
            raise SystemExit(code)
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


def _stop_watchdog() -> None:
    distribute = sys.modules.get("cnnrun.training.distribute")
    if distribute is not None and distribute.watchdog is not None:
        distribute.watchdog.stop()


def own_sweep(sweep_dir: Path, config) -> None:
    """A sweep directory holds one sweep: relaunching the same one (or `cnnrun resume`) continues it; a sweep whose
    jobs are other runs is refused before anything is written there, job by job, by each job's identity (the run's
    own, record.identity(): the one definition of "the same run") against what its finished run recorded;
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
MODE: list = []  # the hydra.mode the config sets, as preflight read it (empty when preflight left it to Hydra)
RESUMING = "CNNRUN_RESUMING"  # set by `cnnrun resume`: the sweep's own overrides, plus whatever it was given


def preflight(args: list[str]) -> None:
    """Composes and checks the config of every job before any job starts: one line and exit 2 on the first
    bad one. Hydra's own flags (--help, --cfg ...) are left to Hydra."""
    from hydra._internal.utils import get_args_parser

    from cnnrun import CnnrunError, console
    from cnnrun.config import checks

    MODE.clear()
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
        from cnnrun.config.cluster import several
        from cnnrun.console import quiet_backend
        from cnnrun.data import check_source

        # The data is looked for too (a mistyped dataset.path: at once, not after the backend's start), unless the
        # jobs run on other machines (Slurm, Ray), where the path may be theirs alone.
        elsewhere = any(re.fullmatch(r"\+*hydra/launcher=(?!basic$|joblib$|submitit_local$).*", o) for o in ns.overrides)

        def each(cfg) -> None:
            if elsewhere:
                return
            check_source(cfg.dataset)
            if (cfg.model.get("_target_") or cfg.dataset.get("_target_")) and not several(cfg.get("distribute")):
                from cnnrun.models import check_user_code  # Keras: only for a config naming the user's own code

                check_user_code(cfg)  # their loader's result and their model (saved and loaded), before any directory

        plan: list = []
        mode: list = []
        with quiet_backend():  # a config naming the user's own code imports it, and it may import Keras
            checks.check_jobs(ns.overrides, ns.multirun, config_dir=ns.config_dir, each=each, plan=plan, mode=mode)
            PLANNED[:], MODE[:] = plan, mode
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


@contextlib.contextmanager
def _mode_known():
    """Hydra composes the config once only to read hydra.mode (Hydra.get_mode), then again to run it; preflight has
    read it already (MODE), so that first compose, 0.1 s of every command, is skipped. Hydra's own flags, which
    preflight leaves alone, keep Hydra's way."""
    from hydra._internal.hydra import Hydra

    if not MODE:
        yield
        return
    get_mode = Hydra.get_mode
    Hydra.get_mode = lambda self, config_name, overrides: MODE[0]
    try:
        yield
    finally:
        Hydra.get_mode = get_mode


def train_main(args: list[str]) -> None:
    import hydra

    register_resolvers()
    preflight(args)
    if "--help" in args or "-h" in args:
        _hide_schema_groups()
    from cnnrun.commands.sweep import SweepSummary

    SweepSummary.not_ok = 0  # this command's sweep only (the CLI called again in one process: tests, notebooks)
    sys.argv = ["cnnrun train", *args]
    with _mode_known():
        hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="config")(run_job)()

    if SweepSummary.not_ok:  # a sweep ran to its end, but not every job ended ok: say so to scripts
        raise SystemExit(EXIT_FAILED)


