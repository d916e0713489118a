"""What an earlier run in a directory means (the table in cnnrun/record/__init__.py): skip, continue, set aside or refuse."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cnnrun import CnnrunError
from cnnrun.record import layout
from cnnrun.record.layout import (
    CHECKPOINT,
    HYDRA_FILES,
    LOCK,
)
from cnnrun.record.outcome import (  # where a run's endings are defined (cnnrun/record/outcome.py)
    RunRefused,
)

from cnnrun.record.fingerprints import data_digest, fingerprint, identity, same_data
from cnnrun.record.folders import refuse_foreign
from cnnrun.record.lock import holds
from cnnrun.record.metrics import read, write

log = logging.getLogger("cnnrun")


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
