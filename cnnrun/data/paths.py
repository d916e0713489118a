"""Which files are images, by name alone, and where a folder data set is: no Keras, so commands can check
their arguments before the backend starts (several seconds) and refuse bad input at once."""

from __future__ import annotations

from pathlib import Path

from cnnrun import CnnrunError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")  # what PIL decodes and cnnrun reads as images


def is_image(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS)


def image_files(paths: list[Path]) -> list[Path]:
    """The files named, and the image files below each folder named, in order."""
    files = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and is_image(f.name))
        else:
            files.append(p)
    return files


def holds_runs(folder: Path) -> bool:
    """Whether `folder` is, or holds, a cnnrun run or sweep directory (an `outputs/` written inside an image
    folder): its pictures (curves, misclassified images) are results, never images of a class."""
    from cnnrun.record import layout

    markers = (layout.METRICS, layout.MULTIRUN)
    try:
        return any((folder / m).is_file() for m in markers) or \
            any(f.parent != folder and (f.parent / layout.HYDRA).is_dir() for f in folder.rglob(layout.METRICS)) or \
            any(True for _ in folder.rglob(layout.MULTIRUN))
    except OSError:
        return False


def same_files(pairs, where: str) -> None:
    """Refuses image files that are one file under two names (a link, a linked folder, `a/../a`): the same image
    under two labels, or in train and in test, would make figures that lie. `pairs` are (file, label, split)."""
    import os

    seen: dict[tuple[int, int], tuple[str, object, str]] = {}
    for f, label, split in pairs:
        try:
            st = os.stat(f)
        except OSError:
            continue  # a missing file is the bad-file check's to report
        key = (st.st_dev, st.st_ino)
        if key in seen:
            g, other_label, other_split = seen[key]
            what = (f"under two labels ({other_label} and {label})" if other_label != label else
                    "in train and in test" if other_split != split else "twice")
            raise CnnrunError(f"{where}: {g} and {f} are the same image file (a link or a linked folder), {what}; "
                              "list each image once, under one label")
        seen[key] = (str(f), label, split)


def folder_root(cfg) -> Path:
    """dataset=folder's dataset.path, a folder (else one line; schema.Option.check before any work too)."""
    from omegaconf import OmegaConf

    from cnnrun.config.checks import missing_path

    if OmegaConf.is_missing(cfg, "path") or not cfg.get("path"):
        raise CnnrunError(missing_path(cfg.name))
    root = Path(str(cfg.path)).expanduser()
    if not root.is_dir():
        raise CnnrunError(f"dataset.path={cfg.path} is not a folder; give DIR with DIR/<class>/*.jpg")
    return root
