"""Files written whole or not at all: a failure (a full disk, Ctrl-C) leaves the earlier file untouched.

Needs no plotting library: the run record, checkpoints and summaries are written through here.
"""

from __future__ import annotations

import csv
import io
import json
import math
import numbers
import os
import stat
import tempfile
from pathlib import Path

from cnnrun import CnnrunError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write(path: Path, write) -> Path:
    """Calls write(tmp_path) and renames tmp_path to path; a failure leaves path untouched. Only a regular file
    (or a symbolic link, which is replaced, never written through) is ever replaced: a device, a FIFO or a folder
    at `path` is refused, before anything is written."""
    path = Path(path)
    try:
        st = os.lstat(path)
    except OSError:
        st = None
    if st is not None and not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        kind = "a folder" if stat.S_ISDIR(st.st_mode) else "a device or other special file"
        raise CnnrunError(f"cannot write {path}: it is {kind}, not a file cnnrun writes; give the path of a file "
                          "(e.g. predictions.csv) or a new one")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)  # keep the extension: savers check it
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give them the usual permissions
        os.replace(tmp, path)
    except OSError as e:
        raise CnnrunError(
            f"cannot write {path}: {e.strerror or e}; free some disk space or choose another output directory"
        ) from None
    finally:
        if tmp and os.path.exists(tmp):
            os.unlink(tmp)
    return path


def write_text(path: Path, text: str) -> Path:
    def write(tmp):
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    return atomic_write(path, write)


def write_json(path: Path, data) -> Path:
    """Strict JSON (what every parser reads): NaN and infinities are written as null."""
    return write_text(path, json.dumps(_finite(data), indent=2, default=_jsonable, allow_nan=False) + "\n")


def _finite(data):
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(v) for v in data]
    if isinstance(data, numbers.Real) and not math.isfinite(data):  # numpy's scalars are numbers.Real too
        return None
    return data


def _jsonable(value):
    """numpy scalars and arrays as plain numbers and lists; anything else as its text."""
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def write_csv(path: Path, header: list[str], rows) -> Path:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buf.getvalue())
