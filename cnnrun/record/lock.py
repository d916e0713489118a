"""The lock: one process at a time owns a run directory (flock on RUN_DIR/.lock, held while the run lives)."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path


from cnnrun.config.redact import redact
from cnnrun.record.layout import (
    LOCK,
)
from cnnrun.record.outcome import (  # where a run's endings are defined (cnnrun/record/outcome.py)
    RunRefused,
)

log = logging.getLogger("cnnrun")


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
