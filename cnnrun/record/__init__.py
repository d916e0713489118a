"""A run's record: who owns its directory, what an earlier run there means, and metrics.json.

One process at a time owns a run directory: it holds an OS lock (`flock`) on `RUN_DIR/.lock` for as
long as it runs, and a second process is refused in one line naming the holder. What an earlier run
in the directory means is decided once per run, here (`decide`):

| earlier run in the directory          | trainer.resume=auto          | true              | false          |
|---------------------------------------|------------------------------|-------------------|----------------|
| none                                  | start                        | refused           | start          |
| same config, finished ok              | skip (nothing to do)         | skip              | set aside, start |
| same config, checkpoint               | continue from it             | continue          | set aside, start |
| same config, no checkpoint (broken)   | set aside, start over        | set aside, start  | set aside, start |
| other config, finished ok             | **refused** (say resume=false) | refused         | set aside, start |
| other config, unfinished              | set aside, start over        | refused           | set aside, start |

"Set aside" renames every file of the earlier run into the sibling `RUN_DIR.earlier-N` (nothing is
deleted), so the directory never holds files of two runs. `read()` is the one reader of metrics.json
that compare, sweeps, reproduce, predict and the fresh-process launcher share.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import re
import socket
import sys
import types
import typing
from datetime import datetime, timezone
from pathlib import Path
from typing import TypedDict

from omegaconf import DictConfig, OmegaConf

from cnnrun import CnnrunError
from cnnrun.config.plugins import source_digest
from cnnrun.config.redact import redact, redact_data
from cnnrun.record import files, layout, outcome
from cnnrun.record.layout import (
    CHECKPOINT,
    HYDRA_FILES,
    LOCK,
    METRICS,
    RUN_FILES,
    SWEEP_FILES,
)
from cnnrun.record.outcome import (  # where a run's endings are defined (cnnrun/record/outcome.py)
    RunFailed,
    RunRefused,
)

log = logging.getLogger("cnnrun")


def _own_entry(name: str, sweep: bool) -> bool:
    if name in (SWEEP_FILES if sweep else RUN_FILES) or name.startswith((".cnnrun-", ".partial-")):
        return True
    if re.fullmatch(r"\..+\.tmp(\.\w+)?", name):  # an atomic write cut short
        return True
    return sweep and re.fullmatch(r"\d+(\.earlier-\d+)?", name) is not None  # the jobs' directories


def foreign_entries(path: Path, sweep: bool = False) -> list[str]:
    """Names in `path` that no cnnrun run (or sweep) writes: [] for a missing, empty or cnnrun directory. A
    symbolic link is never cnnrun's, whatever its name: nothing is written or deleted through one."""
    path = Path(path)
    try:
        return sorted(f"{p.name} (a symbolic link)" if p.is_symlink() else p.name for p in path.iterdir()
                      if p.is_symlink() or not _own_entry(p.name, sweep)) if path.is_dir() else []
    except OSError:
        return []


def own_folder(out: Path, own: dict, flag: str, inside: Path | None = None) -> None:
    """Refuses (CnnrunError) an output folder of a command (export, explain) that holds anything that command does
    not write, before any work: `own` maps each name it writes to None (its own file or folder, any content) or to
    a test of the names inside that folder. Symbolic links are never its own, and with `inside` (the run directory
    the folder lies in, when the user did not name it) neither is the folder itself when it is one."""
    out = Path(out)
    if inside is not None and out.is_symlink():
        raise CnnrunError(f"{out} is a symbolic link ({os.readlink(out)}), which cnnrun never writes through inside a "
                          f"run directory; remove it, or write elsewhere with {flag} DIR")
    if not out.is_dir():
        return
    foreign = []
    for entry in sorted(out.iterdir()):
        name = entry.name
        if entry.is_symlink():
            foreign.append(f"{name} (a symbolic link)")
        elif name.startswith((".cnnrun-", ".partial-")) or re.fullmatch(r"\..+\.tmp(\.\w+)?", name):
            continue
        elif name not in own:
            foreign.append(name)
        elif own[name] is not None and entry.is_dir():
            foreign += [f"{name}/{c.name}" + (" (a symbolic link)" if c.is_symlink() else "")
                        for c in sorted(entry.iterdir()) if c.is_symlink() or not own[name](c.name)]
    if foreign:
        shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
        raise CnnrunError(f"{out} holds files that cnnrun did not write there ({shown}); it writes only into a new, "
                          f"empty or earlier {flag.lstrip('-')} folder of its own: choose another with {flag} DIR")


def writable_folder(path: Path, what: str, fix: str = "give a writable folder") -> None:
    """Makes `path` (a folder) or refuses in one line: an existing file, a read-only place, a full disk."""
    path = Path(str(path))
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".cnnrun-write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        why = "it is a file" if path.is_file() or isinstance(e, (FileExistsError, NotADirectoryError)) else e.strerror
        raise CnnrunError(f"cannot write into {what} {path}: {why or e}; {fix}") from None


def refuse_inside_data(path: Path, cfg: DictConfig) -> None:
    """Refuses an output directory inside the image folder a run reads: it would be read as a class of images."""
    dataset = cfg.get("dataset") or {}
    if dataset.get("name") != "folder" or OmegaConf.is_missing(dataset, "path") or not dataset.get("path"):
        return
    root = Path(str(dataset.path)).expanduser().resolve()
    where = Path(path).resolve()
    if where == root or root in where.parents:
        raise RunRefused(f"the output directory {where} lies inside dataset.path={dataset.path}, where it would be "
                         "read as a class of images; write runs elsewhere, e.g. hydra.run.dir=../outputs/run1 "
                         "(hydra.sweep.dir for -m), or move the images into a folder of their own")


def refuse_foreign(path: Path, sweep: bool = False) -> None:
    """Refuses (RunRefused) a directory that holds files no cnnrun run wrote: cnnrun moves only its own."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunRefused(f"output directory {path} is a file; choose a directory with "
                         f"{'hydra.sweep.dir' if sweep else 'hydra.run.dir'}=DIR")
    foreign = foreign_entries(path, sweep)
    if foreign:
        shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
        key = "hydra.sweep.dir" if sweep else "hydra.run.dir"
        raise RunRefused(f"{path.resolve()} holds files that are not a cnnrun {'sweep' if sweep else 'run'}'s ({shown}); "
                         f"cnnrun writes only into a new, empty or cnnrun directory: choose another with {key}=DIR")

# What changes the numbers a run produces: its identity. Everything else (display, feed, paths, caches,
# how long it goes on) may change between a run and its continuation.
IDENTITY = {
    "model": None,       # every key
    "optimizer": None,
    "augment": None,
    "dataset": {"exclude": ("path", "cache", "cache_max_mb", "bad_files")},
    "trainer": {"include": ("seed", "batch_size", "val_split", "precision", "jit", "deterministic",
                            "augment_after", "label_smoothing", "tta", "ema", "patience", "monitor",
                            "restore_best", "precise_bn"),
                # keys added after runs were recorded: left out while off, so those runs keep their identity
                "omit_when": {"ema": None, "patience": None, "monitor": "val_accuracy", "restore_best": False,
                              "precise_bn": "auto"}},
}


def identity(cfg: DictConfig, sources: dict | None = None, saved: bool = False) -> dict:
    """The whitelisted part of `cfg` that decides a run's numbers (plain containers). A group naming the user's
    own code (`_target_`) adds a digest of its source: `sources` (a run's record of them), else read now from the
    code. A `saved` config (read from a run directory) never has its code read: a directory names code, it does
    not get it run, so a digest it did not record is "unknown"."""
    out = {}
    for group, rule in IDENTITY.items():
        node = cfg.get(group)
        data = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node or {})
        if group == "augment":
            data = {k: v for k, v in data.items() if v is not None}
        if rule and "include" in rule:
            data = {k: data.get(k) for k in rule["include"]}
        if rule and "omit_when" in rule:
            data = {k: v for k, v in data.items() if k not in rule["omit_when"] or v != rule["omit_when"][k]}
        if rule and "exclude" in rule:
            data = {k: v for k, v in data.items() if k not in rule["exclude"]}
        if isinstance(data.get("_target_"), str):  # the user's own code: its source is part of what it does
            data["_source"] = (sources or {}).get(group) or \
                ("unknown" if saved else source_digest(data["_target_"], f"{group}._target_"))
        out[group] = data
    return out


def code_digests(cfg: DictConfig) -> dict:
    """{group: digest of its source} for the groups that name the user's own code: recorded in metrics.json."""
    return {group: part["_source"] for group, part in identity(cfg).items() if "_source" in part}


def fingerprint(cfg: DictConfig) -> str:
    """A short hash of the run's identity (see IDENTITY)."""
    return hashlib.sha256(json.dumps(identity(cfg), sort_keys=True, default=str).encode()).hexdigest()[:16]


def data_digest(cfg: DictConfig) -> str | None:
    """The digest of the data `cfg` reads (data.digest): part of a run's identity, beside the config's."""
    from cnnrun.data import digest

    try:
        return digest(cfg.dataset)
    except Exception:  # noqa: BLE001 - an unfinished config (no path yet): the data's own check says what is wrong
        return None


def same_data(earlier: dict, cfg: DictConfig) -> bool:
    """Whether an earlier run read the data `cfg` reads (runs recorded before digests existed: assumed so)."""
    before, now = earlier.get("data_digest"), data_digest(cfg)
    return before is None or now is None or before == now


class Metrics(TypedDict, total=False):
    """metrics.json: the one record of a run's results, every field it may hold (write() refuses others).
    A run writes it at start (status running), after each stage, and at its end."""
    # identity and state
    status: str                     # running | ok | failed | interrupted | nan (outcome.py); readers add unreadable
    error: str                      # one line, when not ok
    warning: str                    # ok, but the figures mean little (near chance: artifacts.near_chance)
    exit_code: int                  # an interrupted run's: 130 / 143
    dataset: str
    model: str
    backend: str
    seed: int
    started: str                    # ISO 8601, UTC
    finished: str
    reference_accuracy: float | None  # the article's figure (reference.accuracy)
    shortened: str                  # why this run is not comparable with that figure (shortened())
    config_hash: str                # fingerprint(cfg): what decides the numbers
    data_digest: str | None         # data.digest: the data read
    code_digest: dict[str, str]     # the user's own targets: a digest of each one's source
    epochs_planned: int
    resumed_from_epoch: int
    # the model and the machine
    params: int
    device: str
    jit: bool
    steps_per_execution: int        # training steps per compiled call (trainer.steps_per_execution; auto resolved)
    distribute: dict                # several devices: processes, process, devices, batch, per_device_batch
    # training (loop.history_metrics)
    epochs: int
    train_seconds: float
    images_per_second: float
    train_images: int
    val_images: int
    test_images: int
    final_train_accuracy: float | None
    best_val_accuracy: float | None
    best_epoch: int | None
    last_val_accuracy: float | None
    stopped_early_after: int
    evaluated_weights: str          # last | best | average
    precise_bn: str | None          # how batch-norm statistics were recomputed, if they were
    # evaluation (artifacts.write_evaluation)
    test_accuracy: float
    test_loss: float
    misclassified: int
    weakest_class: str
    class_names: list[str]
    # what cnnrun's debug and explain hooks add; any hook (a tracker, the user's own) may add fields of its own
    explained: dict
    overfit: dict
    profile: dict


FIELDS = frozenset(Metrics.__annotations__)  # cnnrun's own; a hook of the user's may add fields of its own
TYPES = typing.get_type_hints(Metrics)


def _typed(value, hint) -> bool:
    """Whether `value` fits a Metrics annotation (numbers of any numeric type: numpy's too)."""
    import numbers

    if hint is typing.Any:
        return True
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    for option in options:
        kind = typing.get_origin(option) or option
        if option is type(None) and value is None:
            return True
        if kind is float and isinstance(value, numbers.Real) and not isinstance(value, bool):
            return True
        if kind is int and isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return True
        if kind in (str, bool, dict, list) and isinstance(value, kind):
            return True
    return False


def read(run_dir: Path) -> Metrics | None:
    """metrics.json of `run_dir`: None when there is none; `status: unreadable` when it cannot be parsed."""
    path = Path(run_dir) / METRICS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        return {"status": "unreadable", "error": f"{path} is unreadable: {e}"}
    return data if isinstance(data, dict) else {"status": "unreadable", "error": f"{path} holds no JSON object"}


def write(run_dir: Path, metrics: Metrics) -> None:
    wrong = [f"{k}={v!r} (declared {getattr(TYPES[k], '__name__', TYPES[k])})"
             for k, v in metrics.items() if k in TYPES and not _typed(v, TYPES[k])]
    if wrong:  # a programming error: cnnrun's fields and their types are declared once, in Metrics
        raise TypeError(f"metrics.json field {'; '.join(wrong)} does not match cnnrun.record.Metrics")
    files.write_json(Path(run_dir) / METRICS, redact_data(metrics))  # no secret ever reaches the record


# --- the lock -------------------------------------------------------------------------------------------

_held: dict[str, list] = {}  # run dir -> [open lock file, claims]: one lock per directory per process


def claim(run_dir: Path) -> None:
    """Takes the directory's lock for this process (re-entrant within it), or refuses naming the holder."""
    run_dir = Path(run_dir).resolve()
    key = str(run_dir)
    if key in _held:
        _held[key][1] += 1
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    for _ in range(10):  # its holder removes the file as it lets go: a lock on a removed file is no lock, retry
        f = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held open while the run lives
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunRefused(f"{run_dir} is in use by {holder}; wait for it to end, or choose another directory "
                             "(hydra.run.dir=DIR)") from None
        try:
            if os.fstat(f.fileno()).st_ino == os.stat(path).st_ino:
                break
        except FileNotFoundError:
            pass
        f.close()
    else:
        raise RunRefused(f"{run_dir}: its lock file {LOCK} keeps being replaced; is another program removing it?")
    if not _held:
        import atexit

        atexit.register(release_all)  # every way out of the process lets go, and removes the files
    f.seek(0)
    f.truncate()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    f.write(redact(f"process {os.getpid()} on {socket.gethostname()} since {started} "
                   f"({' '.join(['cnnrun', *sys.argv[1:]])[:200]})") + "\n")
    f.flush()
    _held[key] = [f, 1]


def live(run_dir: Path) -> bool:
    """Whether another process holds `run_dir`'s lock now (a run still running there). Creates nothing."""
    path = Path(run_dir) / LOCK
    if holds(run_dir) or not path.is_file():
        return False
    try:
        with open(path, encoding="utf-8") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                return True
            fcntl.flock(f, fcntl.LOCK_UN)
    except OSError:
        return False
    return False


def release(run_dir: Path) -> None:
    key = str(Path(run_dir).resolve())
    entry = _held.get(key)
    if entry is None:
        return
    entry[1] -= 1
    if entry[1] <= 0:
        _let_go(key)


def _let_go(key: str) -> None:
    f, _ = _held.pop(key)
    try:  # removed while still held: the lock file exists exactly while a process owns the directory
        os.unlink(os.path.join(key, LOCK))
    except OSError:
        pass
    f.close()  # closing the file drops the lock


def release_all() -> None:
    """Lets go of every directory this process holds (at exit: a run that failed or was refused, too)."""
    for key in list(_held):
        _let_go(key)


def holds(run_dir: Path) -> bool:
    return str(Path(run_dir).resolve()) in _held


# --- an earlier run in the directory --------------------------------------------------------------------

def has_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds files of a run (beyond Hydra's own and the lock)."""
    run_dir = Path(run_dir)
    return run_dir.is_dir() and any(p.name not in (LOCK, *HYDRA_FILES) for p in run_dir.iterdir())


def set_aside(run_dir: Path, keep_hydra: bool = False) -> Path:
    """Moves every file of the earlier run into the sibling RUN_DIR.earlier-N; returns that directory.
    With `keep_hydra`, Hydra's files (already written for this run) stay."""
    run_dir = Path(run_dir)
    n = 1
    while (aside := run_dir.with_name(f"{run_dir.name}.earlier-{n}")).exists():
        n += 1
    aside.mkdir(parents=True)
    for p in sorted(run_dir.iterdir()):
        if p.name == LOCK or (keep_hydra and p.name in HYDRA_FILES):
            continue
        os.replace(p, aside / p.name)
    return aside


def differences(run_dir: Path, cfg: DictConfig, limit: int = 3) -> str:
    """A few keys in which the earlier run's saved config differs from `cfg` ('' when unknown)."""
    earlier = read(run_dir) or {}
    try:
        old = identity(OmegaConf.load(layout.config(Path(run_dir))), earlier.get("code_digest") or {}, saved=True)
    except Exception:  # noqa: BLE001 - a description only
        return ""
    new = identity(cfg)

    def flat(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from flat(v, f"{prefix}{k}.")
            else:
                yield f"{prefix}{k}", v

    a, b = dict(flat(old)), dict(flat(new))
    diffs = [f"{k}: {a.get(k)} -> {b.get(k)}".replace("._source:", " source:")
             for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
    if not same_data(earlier, cfg):
        diffs.insert(0, f"its data: {earlier.get('data_digest')} -> {data_digest(cfg)}")
    return " (differs in " + ", ".join(diffs[:limit]) + (" ..." if len(diffs) > limit else "") + ")" if diffs else ""


_decided: dict[str, tuple[str, str]] = {}  # run dir -> (action, config fingerprint) settled in this process


def decide(run_dir: Path, cfg: DictConfig, keep_hydra: bool = False) -> str:
    """What to do about an earlier run in `run_dir` for `cfg` (the table in this module's docstring):
    'start', 'skip' or 'continue'; sets an earlier run aside, or raises RunRefused. Decided once per run: a
    single run's is settled before Hydra writes there (commands.train.CheckOutputDir), and `Run` then takes it (settled)."""
    action = _decide(Path(run_dir), cfg, keep_hydra)
    _decided[str(Path(run_dir).resolve())] = (action, fingerprint(cfg))
    return action


def settled(run_dir: Path, cfg: DictConfig) -> str | None:
    """The decision already made in this process about `run_dir` for this very config, once; else None."""
    action, of = _decided.pop(str(Path(run_dir).resolve()), (None, None))
    return action if of == fingerprint(cfg) else None


def _decide(run_dir: Path, cfg: DictConfig, keep_hydra: bool) -> str:
    resume, epochs = cfg.trainer.resume, int(cfg.trainer.epochs)
    earlier = read(run_dir)
    checkpoint = run_dir / CHECKPOINT
    refuse_foreign(run_dir)  # nothing but a cnnrun run's files is ever set aside or written over
    if earlier is None and not checkpoint.exists():
        if resume is True:
            raise RunRefused(f"trainer.resume=true but {run_dir} holds no run to continue; drop trainer.resume "
                             "to start a new run")
        if has_run(run_dir):  # stray files (e.g. a crash before metrics.json): not this run's
            log.warning("%s held files of no recorded run; set them aside in %s", run_dir,
                        set_aside(run_dir, keep_hydra))
        return "start"
    earlier = earlier or {}
    same = earlier.get("config_hash") == fingerprint(cfg) and same_data(earlier, cfg)
    finished = earlier.get("status") == "ok"
    if resume is False:
        aside = set_aside(run_dir, keep_hydra)
        log.warning("trainer.resume=false: the earlier run in %s is kept in %s; starting over", run_dir, aside)
        return "start"
    if same and finished and earlier.get("epochs_planned") == epochs:
        return "skip"
    if same and not finished and checkpoint.exists():
        return "continue"
    if finished or (not same and resume is True):
        what = "a finished run" if finished else "an unfinished run"
        why = (f" (it ran {earlier.get('epochs_planned')} epochs, this asks for {epochs})" if same
               else differences(run_dir, cfg))
        raise RunRefused(f"{run_dir} holds {what} of another config{why}; choose a new directory "
                         f"(hydra.run.dir=DIR), or add trainer.resume=false to keep it as {run_dir.name}.earlier-N "
                         "and start this one")
    aside = set_aside(run_dir, keep_hydra)
    reason = "has no checkpoint to continue from" if same else "was made with another config"
    log.warning("the earlier run in %s %s; it is kept in %s and this run starts over", run_dir, reason, aside)
    return "start"


def mark_failed(run_dir: Path, error: str, status: str = "failed") -> None:
    """Records a run that died as `status: failed` (or `interrupted`) with its error, so it never looks
    finished. Only a run this process owns (or a directory with no record yet) is written."""
    run_dir = Path(run_dir)
    metrics = read(run_dir)
    if metrics is not None and not holds(run_dir):
        return  # another process's record, or a finished run this one was refused next to
    metrics = metrics or {}
    if metrics.get("status") in (None, "running"):
        metrics.update(status=status, error=error.splitlines()[0] if error else status)
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            write(run_dir, metrics)
        except (OSError, CnnrunError):
            pass  # an unwritable run directory was already the error being reported


def shortened(cfg: DictConfig) -> str | None:
    """Why a run of a preset with a reference figure cannot be set beside that figure: fewer images
    (dataset.limit), fewer epochs than the figure's run (reference.epochs), or a debug mode; None when it can."""
    ref = cfg.get("reference") or {}
    if ref.get("accuracy") is None:
        return None
    why = []
    if str((cfg.get("debug") or {}).get("mode", "none")) != "none":
        why.append(f"debug={cfg.debug.mode}")
    if cfg.dataset.get("limit") is not None:
        why.append(f"dataset.limit={cfg.dataset.limit}")
    if ref.get("epochs") and int(cfg.trainer.epochs) < int(ref.epochs):
        why.append(f"{cfg.trainer.epochs} of the figure's {ref.epochs} epochs")
    return ", ".join(why) or None


class Run:
    """One run's record for as long as it runs: the directory's lock, the decision about an earlier run
    there, and metrics.json from `running` to its end. Used as a context manager by train():

        with Run(run_dir, cfg) as run:          # lock; skip / continue / start (earlier runs set aside)
            run.start(model=...)                # metrics.json says running: a run that dies never looks finished
            run.update(params=...)
            return run.end("ok")                # written once more, with its end time

    Leaving the block by an exception records `failed` (or `interrupted` for Ctrl-C) with its error.
    `hooks` (anything with start(run), epoch(run, row) and end(run): hooks.Hooks) hear of the start, each
    whole epoch and the end, after metrics.json is written.
    """

    def __init__(self, run_dir, cfg: DictConfig, keep_hydra: bool = True, hooks=None):
        self.dir, self.cfg, self.keep_hydra = Path(run_dir), cfg, keep_hydra
        self.hooks = hooks
        self.fingerprint = fingerprint(cfg)
        self.action = ""
        self.working = False
        self.stage = "training"  # "evaluation" once training has ended: what an interruption is said to have cut
        self.metrics: dict = {}
        self.earlier: dict | None = None

    def __enter__(self) -> Run:
        claim(self.dir)
        try:
            self.action = settled(self.dir, self.cfg) or _decide(self.dir, self.cfg, self.keep_hydra)
        except BaseException:
            release(self.dir)
            raise
        self.earlier = read(self.dir)
        return self

    def __exit__(self, kind, error, tb) -> bool:
        working = self.metrics.get("status") == "running" and self.working
        ended = outcome.of(error, working)
        if ended is outcome.INTERRUPTED and self.stage == "evaluation":
            try:  # the message the record and the console give: training is done, resume only evaluates
                error.cnnrun_message = (f"interrupted during evaluation, after training ended; evaluate it with: cnnrun "
                                        f"resume {self.dir} (nothing is trained again)")
            except AttributeError:
                pass
        try:
            if error is not None and ended.status and self.metrics.get("status") == "running":
                self.end(ended.status, error=outcome.message(error, self.dir),
                         **({"exit_code": outcome.exit_code(ended)} if ended is outcome.INTERRUPTED else {}))
        finally:
            release(self.dir)
        if ended is outcome.FAILED and not isinstance(error, RunFailed):
            raise RunFailed(str(error)) from None  # it failed mid-run: exit 1, not "refused before any work"
        return False

    def begin_work(self) -> None:
        """Training starts: from here on, an error is a failed run (exit 1), no longer a refusal (exit 2)."""
        self.working = True

    def start(self, **fields) -> None:
        t, code = self.cfg.trainer, code_digests(self.cfg)
        self.metrics = {
            "status": "running", **fields, "seed": t.seed,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "reference_accuracy": (self.cfg.get("reference") or {}).get("accuracy"),
            **({"shortened": short} if (short := shortened(self.cfg)) else {}),
            "config_hash": self.fingerprint, "data_digest": data_digest(self.cfg),
            **({"code_digest": code} if code else {}), "epochs_planned": int(t.epochs),
        }
        write(self.dir, self.metrics)
        if self.hooks is not None:
            self.hooks.start(self)

    def epoch(self, row: dict) -> None:
        """An epoch ended whole (and is checkpointed): the hooks get its history row."""
        if self.hooks is not None:
            self.hooks.epoch(self, row)

    def save(self) -> None:
        write(self.dir, self.metrics)

    def update(self, **fields) -> None:
        self.metrics.update(fields)

    def end(self, status: str, **fields) -> dict:
        self.metrics.update(fields, status=status, finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        write(self.dir, self.metrics)
        if self.hooks is not None:  # after metrics.json: the record is complete first
            before = dict(self.metrics)
            self.hooks.end(self)
            if self.metrics != before:  # what the hooks found at the end (e.g. what the trackers cost)
                try:
                    write(self.dir, self.metrics)
                except (TypeError, ValueError, CnnrunError) as e:  # a hook's field of the wrong type: warned, left out
                    log.warning("a hook's fields at the end of the run were not recorded (%s); metrics.json keeps "
                                "the run's own", str(e).splitlines()[0][:300])
                    self.metrics = before
        return self.metrics
