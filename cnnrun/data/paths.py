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


def folder_root(cfg) -> Path:
    """dataset=folder's dataset.path, a folder (else one line; schema.Option.check before any work too)."""
    root = Path(str(cfg.path)).expanduser()
    if not root.is_dir():
        raise CnnrunError(f"dataset.path={cfg.path} is not a folder; give DIR with DIR/<class>/*.jpg")
    return root
