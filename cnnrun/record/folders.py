"""What is a run's own in a folder, and what a command may write into: a foreign file is never touched."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from cnnrun import CnnrunError
from cnnrun.record.layout import (
    RUN_FILES,
    SWEEP_FILES,
)
from cnnrun.record.outcome import (  # where a run's endings are defined (cnnrun/record/outcome.py)
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
