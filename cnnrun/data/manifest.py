"""Data named by the user rather than found: a CSV manifest (`dataset=csv`) and a loader of their own
(`dataset=custom dataset._target_=my_pkg.data.load`).

Both end where a folder of photos ends (folder.load_listed): the same bad-file checks, split, memory check,
in-memory or streamed images, reports and plots. A loader may also return arrays, which then take the
route Fashion-MNIST takes.

What a loader returns, as a dict:
    {"x_train": images, "y_train": labels, "x_test": images, "y_test": labels, "class_names": [...]}
        images (N, H, W[, C]) uint8 in [0, 255] or floats in [0, 1]; labels class indices. class_names optional.
    {"files": [path, ...], "labels": [label, ...], "split": ["train" | "test", ...], "class_names": [...]}
        labels are class names (or indices into class_names); split optional (then dataset.test_split
        splits them); relative paths are relative to the working directory.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
from collections.abc import Mapping
from pathlib import Path

from cnnrun import CnnrunError
from cnnrun.config import plugins
from cnnrun.config.plugins import arguments
from cnnrun.config.schema import CustomDataset

SPLITS = ("train", "test")
TARGET_KEY = "dataset._target_"


def _natural(names) -> list[str]:
    """Class names in order: numerically when every one is a whole number (2 before 10), else as text."""
    names = sorted(set(names))
    return sorted(names, key=int) if all(re.fullmatch(r"-?\d+", n) for n in names) else names


def _classes(labels: list, given, where: str) -> tuple[list[str], list[int]]:
    """(class names, label indices) from labels that are names (or indices, with given names)."""
    if labels and all(isinstance(v, int) and not isinstance(v, bool) for v in labels):
        names = [str(c) for c in given] if given else [str(i) for i in range(max(labels) + 1)]
        bad = [v for v in labels if not 0 <= v < len(names)]
        if bad:
            raise CnnrunError(f"{where}: label {bad[0]} is outside 0..{len(names) - 1} ({len(names)} class names); "
                              "fix the labels or dataset.class_names")
        return names, list(labels)
    labels = [str(v) for v in labels]
    names = [str(c) for c in given] if given else _natural(labels)
    index = {n: i for i, n in enumerate(names)}
    unknown = sorted({v for v in labels if v not in index})
    if unknown:
        raise CnnrunError(f"{where}: label {unknown[0]!r} is not one of dataset.class_names ({', '.join(names)}); "
                          "add it there or fix the label")
    return names, [index[v] for v in labels]


def _as_dataset(cfg, rows: list[tuple[str, object, str | None]], where: str, notes: list[str], batch_size: int,
                given_names=None):
    """(file, label, split or None) rows -> what folder.load_folder returns."""
    from cnnrun.data.folder import check_listed, load_listed, split_pairs

    seen: dict[str, int] = {}
    for i, (f, _, _) in enumerate(rows):
        key = os.path.normpath(f)
        if key in seen:  # one image twice could sit in train and in test: a leak, and a count that lies
            raise CnnrunError(f"{where}: {f} is listed twice (entries {seen[key] + 1} and {i + 1}); list each image once")
        seen[key] = i
    names, labels = _classes([label for _, label, _ in rows], given_names or cfg.get("class_names"), where)
    if len(names) < 2:
        raise CnnrunError(f"{where} has {len(names)} class ({', '.join(names) or 'none'}); a classifier needs at "
                          "least two")
    pairs = check_listed([(f, k) for (f, _, _), k in zip(rows, labels)], cfg, notes)
    split_of = {os.path.normpath(f): s for f, _, s in rows}
    if any(s is not None for _, _, s in rows):
        train = [(f, k) for f, k in pairs if split_of[os.path.normpath(f)] == "train"]
        test = [(f, k) for f, k in pairs if split_of[os.path.normpath(f)] == "test"]
        for part, what in ((train, "train"), (test, "test")):
            if not part:
                raise CnnrunError(f"{where} has no usable {what} image; mark some rows {what} in its split column")
    else:
        train, test = split_pairs(pairs, cfg, where)
    empty = [names[k] for k in range(len(names)) if not any(label == k for _, label in train)]
    if empty:
        raise CnnrunError(f"{where}: class {empty[0]!r} has no usable training image; add some or drop the class")
    return load_listed(cfg, train, test, names, where, notes, batch_size)


def manifest_file(cfg) -> Path:
    """dataset=csv's dataset.path, a file (else one line; schema.Option.check before any work too)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_missing(cfg, "path") or not cfg.get("path"):
        from cnnrun.config.checks import missing_path

        raise CnnrunError(missing_path("csv"))
    path = Path(str(cfg.path)).expanduser()
    if not path.is_file():
        raise CnnrunError(f"dataset.path={cfg.path} is not a file; give the CSV manifest (a header row, then one "
                          f"row per image with its {cfg.path_column} and {cfg.label_column})")
    return path


def read_csv(cfg) -> tuple[Path, list[tuple[str, str, str | None]]]:
    """The manifest's rows as (absolute-or-relative-to-it file, label, split or None)."""
    path = manifest_file(cfg)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            reader.fieldnames = header
            missing = [c for c in (cfg.path_column, cfg.label_column) if c not in header]
            if missing:
                raise CnnrunError(f"{path} has no {missing[0]!r} column (its header: {', '.join(header) or 'empty'}); "
                                  f"name the columns with dataset.path_column= and dataset.label_column=")
            has_split = cfg.split_column in header
            rows = []
            for line, row in enumerate(reader, start=2):
                file, label = (row.get(cfg.path_column) or "").strip(), (row.get(cfg.label_column) or "").strip()
                if not file and not label:
                    continue  # a blank line
                if not file or not label:
                    raise CnnrunError(f"{path}, line {line}: no {cfg.path_column if not file else cfg.label_column}; "
                                      "every row needs a path and a label")
                split = (row.get(cfg.split_column) or "").strip().lower() if has_split else None
                if has_split and split not in SPLITS:
                    raise CnnrunError(f"{path}, line {line}: {cfg.split_column}={split!r}; expected train or test "
                                      "(a validation set comes from trainer.val_split)")
                rows.append((str(Path(file) if Path(file).is_absolute() else path.parent / file), label, split))
    except UnicodeDecodeError as e:
        raise CnnrunError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save it as UTF-8") from None
    except csv.Error as e:
        raise CnnrunError(f"{path} is not a readable CSV ({e}); check its quoting") from None
    if not rows:
        raise CnnrunError(f"{path} lists no images; add one row per image under its header")
    return path, rows


def load_csv(cfg, batch_size: int = 32):
    """dataset=csv: the images and labels a manifest lists. Returns what folder.load_folder returns."""
    path, rows = read_csv(cfg)
    return _as_dataset(cfg, rows, str(path), [], batch_size)


def loader_arguments(cfg) -> dict:
    """The keyword arguments a user's loader gets: every key of its config that cnnrun's schema does not own."""
    return arguments(cfg, CustomDataset.__dataclass_fields__)


def load_custom(cfg, batch_size: int = 32):
    """dataset=custom: calls the user's loader and takes what it returns (see the module's docstring).
    Returns (arrays, source, class_names, test_files, notes) as the other loaders do."""
    import numpy as np

    target = cfg._target_  # importable, callable, taking these arguments: checked with the config (schema.py)
    out = plugins.call(target, TARGET_KEY, "loading the data", **loader_arguments(cfg))
    where = f"{TARGET_KEY}={target}"
    if not isinstance(out, Mapping):
        raise CnnrunError(f"{where} returned {type(out).__name__}; return a dict of x_train, y_train, x_test, y_test "
                          "(arrays) or of files and labels (cnnrun/data/manifest.py shows both)")
    names = out.get("class_names")
    if names is not None and (isinstance(names, str) or len(set(map(str, names))) != len(list(names))):
        raise CnnrunError(f"{where} returned class_names {names!r}; return a list of distinct names, one per class")
    arrays = {k: out.get(k) for k in ("x_train", "y_train", "x_test", "y_test")}
    if all(v is not None for v in arrays.values()):
        given = [str(c) for c in (cfg.get("class_names") or names or [])]
        return {k: np.asarray(v) for k, v in arrays.items()}, where, given, None, []
    if "files" in out and "labels" in out:
        files, labels, split = list(out["files"]), list(out["labels"]), out.get("split")
        split = list(split) if split is not None else [None] * len(files)
        if not len(files) == len(labels) == len(split):
            raise CnnrunError(f"{where} returned {len(files)} files, {len(labels)} labels and {len(split)} splits; "
                              "return one label (and split) per file")
        bad = [s for s in split if s is not None and s not in SPLITS]
        if bad:
            raise CnnrunError(f"{where} returned split {bad[0]!r}; expected train or test per file")
        labels = [int(v) if isinstance(v, np.integer) else v for v in labels]
        rows = [(str(Path(f).expanduser()), label, s) for f, label, s in zip(files, labels, split)]
        if not rows:
            raise CnnrunError(f"{where} returned no files; return at least two classes of images")
        return _as_dataset(cfg, rows, where, [], batch_size, given_names=cfg.get("class_names") or names)
    present = ", ".join(sorted(map(str, out))) or "nothing"
    raise CnnrunError(f"{where} returned a dict of {present}; return x_train, y_train, x_test, y_test (arrays) or "
                      "files and labels (cnnrun/data/manifest.py shows both)")


def digest(cfg, h: hashlib._Hash) -> bool:
    """Feeds what a csv or custom dataset reads into `h` without decoding: the manifest and the size and time
    of each file it lists; a loader's own name, source and arguments. False when it cannot be told."""
    if cfg.name == "csv" and cfg.get("_target_") is None:
        try:
            path, rows = read_csv(cfg)
        except CnnrunError:
            return False
        h.update(path.read_bytes())
        for file, _, _ in rows:
            try:
                st = os.stat(file)
                h.update(f"{st.st_size}\0{st.st_mtime_ns}\n".encode())
            except OSError:
                h.update(b"missing\n")
        return True
    if cfg.get("_target_") is not None:
        h.update(plugins.source_digest(cfg._target_, TARGET_KEY).encode())
        h.update(repr(sorted(loader_arguments(cfg).items())).encode())
        return True
    return False
