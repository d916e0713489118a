"""Folder-of-photos datasets: DIR/<class>/*.jpg, or DIR/train/<class> + DIR/test/<class>.

Small folders are decoded once into memory; large ones stay on disk as `FileImages`, a lazy array
that decodes only the images a batch asks for, and are fed to Keras through `Batches` (a
`keras.utils.PyDataset` with worker threads).
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import keras
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnrun import CnnrunError
from cnnrun.data.paths import EXTENSIONS, folder_root, holds_runs, is_image, same_files

log = logging.getLogger("cnnrun")


def image_size(value) -> tuple[int, int]:
    """(height, width) from dataset.image_size: a side or a [height, width] pair (schema.SIZE)."""
    return (int(value), int(value)) if isinstance(value, int) else (int(value[0]), int(value[1]))


def to_8bit(im: Image.Image) -> Image.Image:
    """16- and 32-bit integer images (16-bit PNG/TIFF scans open as mode I;16 or I) scaled to 8 bits:
    PIL's own convert() would clip every value above 255 to white."""
    if not im.mode.startswith("I"):
        return im
    a = np.asarray(im, dtype=np.float64)
    full = 65535.0 if im.mode.startswith("I;16") or a.max(initial=0) > 255 else 255.0
    return Image.fromarray(np.clip(np.round(a * (255.0 / full)), 0, 255).astype(np.uint8), mode="L")


def decode(path: str, size: tuple[int, int], channels: int) -> np.ndarray:
    """One image file as uint8 (H, W, C), upright (EXIF orientation applied), resized to `size`."""
    try:
        return _decode(path, size, channels)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise CnnrunError(f"cannot decode {path} ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                          "it changed or broke since the folder was scanned: remove it and start again") from None


def _decode(path: str, size: tuple[int, int], channels: int) -> np.ndarray:
    mode = "RGB" if channels == 3 else "L"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # huge photos are fine: we shrink them
        with Image.open(path) as im:
            orientation = (im.getexif() or {}).get(0x0112, 1)
            turned = orientation in (5, 6, 7, 8)  # EXIF orientation swaps the sides
            im.draft(mode, (size[0], size[1]) if turned else (size[1], size[0]))  # JPEG: decode at 1/2, 1/4, 1/8
            if orientation in (2, 3, 4, 5, 6, 7, 8):  # else exif_transpose would only copy the image
                im = ImageOps.exif_transpose(im)
            im = to_8bit(im)
            if im.mode != mode:
                im = im.convert(mode)
            arr = np.asarray(im.resize((size[1], size[0]), Image.BILINEAR), dtype=np.uint8)
    return arr[..., None] if channels == 1 else arr


class FileImages:
    """A lazy (N, H, W, C) uint8 array over image files: an int index decodes one image, a slice or an
    index array gives a lazy subset, and np.asarray() decodes everything it holds."""

    def __init__(self, files: list[str], size: tuple[int, int], channels: int):
        self.files, self.size, self.channels = list(files), size, channels

    def __len__(self):
        return len(self.files)

    @property
    def shape(self):
        return (len(self.files), *self.size, self.channels)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return decode(self.files[index], self.size, self.channels)
        picked = self.files[index] if isinstance(index, slice) else [self.files[i] for i in np.asarray(index)]
        return FileImages(picked, self.size, self.channels)

    def __array__(self, dtype=None, copy=None):
        return load_all(self.files, self.size, self.channels)


_pool: tuple[int, ThreadPoolExecutor] | None = None


def decoders() -> ThreadPoolExecutor:
    """One pool of decoding threads per process, a thread per core this process may use, kept for the
    process's life: PIL lets go of the GIL while it decodes and resizes, so the threads run in parallel, and
    a pool made per batch would cost more than a small image's decode. A forked child makes its own."""
    global _pool
    if _pool is None or _pool[0] != os.getpid():
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 2
        _pool = (os.getpid(), ThreadPoolExecutor(max_workers=max(2, cores), thread_name_prefix="cnnrun-decode"))
    return _pool[1]


def load_all(files, size, channels) -> np.ndarray:
    """The images of `files`, decoded in parallel into one (N, H, W, C) uint8 array."""
    out = np.empty((len(files), *size, channels), dtype=np.uint8)

    def put(i):
        out[i] = decode(files[i], size, channels)

    for _ in decoders().map(put, range(len(files))):
        pass  # re-raises a worker's error here
    return out


class Batches(keras.utils.PyDataset):
    """Batches of (images, labels) from any indexable images (array or FileImages), in a given order.

    `order` is the epoch's permutation (training draws one per epoch from its seed); None keeps the
    images in turn. `shuffle=True` reshuffles after every epoch from `seed` instead. A batch of files is
    decoded by every core at once (decoders()), so Keras reads the batches in one worker: on TensorFlow
    its tf.data prefetch overlaps the next batch's decoding with the step, on JAX the step's asynchronous
    dispatch does (bench/feed.py: more workers each with its own threads only contend).
    """

    def __init__(self, x, y=None, batch_size=32, order=None, shuffle=False, seed=0, workers=1):
        super().__init__(workers=workers, use_multiprocessing=False)
        self.x, self.y, self.batch_size, self.shuffle = x, y, batch_size, shuffle
        self.rng = np.random.default_rng(seed)
        if order is None:
            order = self.rng.permutation(len(x)) if shuffle else np.arange(len(x))
        self.order = np.asarray(order)

    def __len__(self):
        return math.ceil(len(self.order) / self.batch_size)  # the order may be a share of the images (distribute)

    def __getitem__(self, i):
        idx = self.order[i * self.batch_size:(i + 1) * self.batch_size]
        images = np.asarray(self.x[idx])
        return (images,) if self.y is None else (images, self.y[idx])

    def on_epoch_end(self):
        if self.shuffle:
            self.order = self.rng.permutation(len(self.x))


def _utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes the file system's encoding could not decode (surrogate escapes)
        return False
    return True


def _shown(path) -> str:
    """A path as printable text, whatever bytes its name holds."""
    return str(path).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _class_folders(root: Path, notes: list[str] | None = None) -> dict[str, list[Path]]:
    classes = {}
    for d in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if holds_runs(d):  # an earlier run's outputs/ inside the image folder: results, not a class
            if notes is not None:
                notes.append(f"skipped {_shown(d)}: it holds cnnrun runs (their plots and pictures), not images of a "
                             "class; keep runs outside the image folder")
            continue
        if not _utf8(d.name):  # a class name goes into reports, plots and file names: it must be text
            raise CnnrunError(f"class folder '{_shown(d.name)}' in {_shown(root)} has a name that is not UTF-8; rename it to UTF-8 "
                              "(e.g. convmv -f latin1 -t utf8 -r --notest DIR) and run again")
        classes[d.name] = sorted(f for f in d.rglob("*") if is_image(f.name) and f.is_file())
    return classes


def _check_files(files: list[Path], policy: str, notes: list[str], limits: tuple[int, int]) -> list[Path]:
    """Drops (policy 'warn') or refuses (policy 'error') files PIL cannot read, and images too small
    to hold a picture or too large to decode safely (their size comes from the header, nothing is decoded)."""
    min_side, max_pixels = limits
    bad = []
    for f in files:
        if not _utf8(str(f)):
            bad.append((f, "its name is not UTF-8; rename it"))
            continue
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # we apply our own limit below
                with Image.open(f) as im:
                    w, h = im.size
                    if min(w, h) >= min_side and w * h <= max_pixels:
                        im.draft(im.mode, (min_side, min_side))  # JPEG: a fast reduced decode ...
                        im.load()  # ... that still reads every byte, so a truncated file fails here
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError) as e:
            bad.append((f, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'unreadable'}"))
            continue
        if min(w, h) < min_side:
            bad.append((f, f"{w}x{h} px, a side under dataset.min_side={min_side}"))
        elif w * h > max_pixels:
            bad.append((f, f"{w}x{h} px, over dataset.max_pixels={max_pixels}"))
    if bad and policy == "error":
        listed = ", ".join(f"{_shown(f)} ({why})" for f, why in bad[:5])
        raise CnnrunError(
            f"{len(bad)} unusable image file(s): {listed}{' ...' if len(bad) > 5 else ''}; "
            "remove them or set dataset.bad_files=warn to skip them"
        )
    if bad:
        notes.append(f"skipped {len(bad)} unusable image file(s): " + ", ".join(f"{_shown(f)} ({why})" for f, why in bad[:5])
                     + (" ..." if len(bad) > 5 else ""))
    bad_set = {f for f, _ in bad}
    return [f for f in files if f not in bad_set]


def _scan(root: Path, policy: str, notes: list[str], where: str, limits: tuple[int, int]) -> dict[str, list[Path]]:
    classes = _class_folders(root, notes)
    if len(classes) < 2:
        raise CnnrunError(
            f"{where} has {len(classes)} class folder(s) ({', '.join(classes) or 'none'}); "
            "a classifier needs at least two, one sub-folder of images per class"
        )
    for name, files in classes.items():
        classes[name] = _check_files(files, policy, notes, limits)
        if not classes[name]:
            raise CnnrunError(
                f"class folder {root / name} holds no readable images ({', '.join(sorted(EXTENSIONS))}); "
                "add images or remove the folder"
            )
    return classes


def image_options(cfg) -> tuple[tuple[int, int], int, str, tuple[int, int]]:
    """(size, channels, bad-file policy, (min_side, max_pixels)) of a dataset read from image files; the
    config is validated (schema.Folder), so each value is in range."""
    return (image_size(cfg.image_size), 3 if cfg.color == "rgb" else 1, str(cfg.bad_files),
            (int(cfg.min_side), int(cfg.max_pixels)))


def load_folder(cfg, batch_size: int = 32):
    """Reads a folder dataset. Returns (arrays, source, class_names, test_files, notes)."""
    root = folder_root(cfg)
    _, _, policy, limits = image_options(cfg)
    notes: list[str] = []

    if (root / "train").is_dir() and (root / "test").is_dir():
        train = _scan(root / "train", policy, notes, f"{root / 'train'}", limits)
        test = _scan(root / "test", policy, notes, f"{root / 'test'}", limits)
        unseen = sorted(set(test) - set(train))
        if unseen:
            raise CnnrunError(
                f"test classes {unseen} in {root / 'test'} have no training folder in {root / 'train'}; "
                "add training images for them or remove them from test/"
            )
        class_names = sorted(train)
        pairs = lambda d: [(str(f), class_names.index(c)) for c in class_names for f in d.get(c, [])]  # noqa: E731
        train_pairs, test_pairs = pairs(train), pairs(test)
    else:
        classes = _scan(root, policy, notes, str(root), limits)
        class_names = sorted(classes)
        every = [(str(f), k) for k, c in enumerate(class_names) for f in classes[c]]
        train_pairs, test_pairs = split_pairs(every, cfg, "the folder's images")
    return load_listed(cfg, train_pairs, test_pairs, class_names, str(root), notes, batch_size)


def split_pairs(every: list[tuple[str, int]], cfg, what: str):
    """A stratified, seeded train / test split of (file, label) pairs by dataset.test_split and split_seed."""
    from sklearn.model_selection import train_test_split

    split = float(cfg.test_split)
    labels = [k for _, k in every]
    try:
        train_idx, test_idx = train_test_split(
            np.arange(len(every)), test_size=split, stratify=labels, random_state=int(cfg.split_seed)
        )
    except ValueError as e:
        raise CnnrunError(f"cannot split {len(every)} images ({what}) into train/test with dataset.test_split={split} "
                          f"({e}); add images or change the split") from None
    return [every[i] for i in sorted(train_idx)], [every[i] for i in sorted(test_idx)]


def check_listed(pairs: list[tuple[str, int]], cfg, notes: list[str]) -> list[tuple[str, int]]:
    """(file, label) pairs named by a manifest or a loader, with the unusable files dropped or refused as a
    folder's are (dataset.bad_files): missing, unreadable, too small, too large."""
    _, _, policy, limits = image_options(cfg)
    kept = set(map(str, _check_files([Path(f) for f, _ in pairs], policy, notes, limits)))
    return [(f, k) for f, k in pairs if str(Path(f)) in kept]


def load_listed(cfg, train_pairs, test_pairs, class_names, where: str, notes: list[str], batch_size: int = 32):
    """Image files with their labels, already split, as a dataset: decoded into memory when they fit
    dataset.cache_max_mb (or cache=true), else streamed from disk. Returns what load_folder returns."""
    size, channels, _, _ = image_options(cfg)
    same_files([(f, class_names[k], "train") for f, k in train_pairs] +
               [(f, class_names[k], "test") for f, k in test_pairs], where)  # by the file, not its path's text
    n = len(train_pairs) + len(test_pairs)
    megabytes = n * size[0] * size[1] * channels / 2**20
    in_memory = cfg.cache is True or (cfg.cache == "auto" and megabytes <= float(cfg.cache_max_mb))
    from cnnrun.data.memory import check_fits  # nothing is decoded yet: refuse what memory cannot take

    check_fits(n, size, channels, batch_size, in_memory, stream_hint=", or stream them with dataset.cache=false")
    arrays = {}
    for split_name, split_pairs in (("train", train_pairs), ("test", test_pairs)):
        files = [f for f, _ in split_pairs]
        images = FileImages(files, size, channels)
        arrays[f"x_{split_name}"] = np.asarray(images) if in_memory else images
        arrays[f"y_{split_name}"] = np.array([k for _, k in split_pairs], dtype=np.int32)
    how = "decoded into memory" if in_memory else "streamed from disk"
    source = f"{where} ({n} images, {megabytes:.0f} MB at {size[0]}x{size[1]}x{channels}, {how})"
    return arrays, source, class_names, [f for f, _ in test_pairs], notes


def balance(x, y, how: str, seed: int):
    """Article 004's class balancing of the training set: 'oversample' tops small classes up with
    copies to the largest class's count, 'undersample' cuts large ones down to the smallest's."""
    if how in (None, "none"):
        return x, y
    rng = np.random.default_rng(seed)
    counts = np.bincount(y)
    present = np.flatnonzero(counts)
    target = counts[present].max() if how == "oversample" else counts[present].min()
    keep = []
    for k in present:
        members = np.flatnonzero(y == k)
        if len(members) >= target:
            keep.append(rng.choice(members, target, replace=False) if how == "undersample" else members)
        else:
            keep.append(np.concatenate([members, rng.choice(members, target - len(members), replace=True)]))
    keep = np.sort(np.concatenate(keep))
    return x[keep], y[keep]
