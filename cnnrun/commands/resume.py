"""`cnnrun resume RUN_DIR|SWEEP_DIR`: continue an interrupted run from its checkpoint, or re-launch a sweep
(finished jobs skipped, broken-off ones continued), by replaying the directory's own settings, as data, to
`cnnrun train` (commands/train.py)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from cnnrun.commands.train import RESUMING, train_main
from cnnrun.record import layout
from cnnrun.record.outcome import EXIT_CONFIG


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


