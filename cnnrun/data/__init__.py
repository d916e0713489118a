"""Datasets: find the files, read and check them, split them.

Every loader hands back uint8 images (N, H, W, C) and int32 labels; scaling to [0, 1] happens on the
device, in the model's first layer, so host memory and transfers stay 4x smaller than float32.
"""

from __future__ import annotations

import gzip
import os
import struct
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnrun import CnnrunError
from cnnrun.config import plugins, schema
from cnnrun.data.paths import holds_runs, is_image

# The four files of the original MNIST / Fashion-MNIST releases (optionally gzipped).
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
# Where Keras' own downloaders keep each data set under ~/.keras/datasets, and its .npz name.
KERAS_CACHE = {"fashion": "fashion-mnist", "mnist": "mnist"}
NPZ_NAMES = {"fashion": ["fashion-mnist.npz", "fashion_mnist.npz"], "mnist": ["mnist.npz"]}
SYSTEM_DIRS = {"fashion": ["/usr/share/datasets/fashion-mnist"], "mnist": ["/usr/share/datasets/mnist"]}
PRETTY = {"fashion": "Fashion-MNIST", "mnist": "MNIST"}


@dataclass
class Dataset:
    """Images (uint8, NHWC) and integer labels, split into train / validation / test."""

    name: str
    class_names: list[str]
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str = ""
    test_files: list[str] | None = None  # original files of the test images (folder datasets)
    notes: list[str] = field(default_factory=list)  # warnings worth showing the user

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])


# ---------------------------------------------------------------------------------------------
# Readers


_decoded: dict[tuple, np.ndarray] = {}  # IDX files read in this process, by what each file is now (_as_it_is)


def _as_it_is(path: Path) -> tuple:
    """A file as it is now: its place, size, modification time and inode (a file written anew has others)."""
    st = path.stat()
    return str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ino


def read_idx(path: Path) -> np.ndarray:
    """Reads one IDX file of unsigned bytes (optionally .gz), checking its header against its size. The (read-only)
    array is kept for this process while the file stays as it is: a sweep's jobs and a notebook's runs decode
    Fashion-MNIST once (0.3 s a job), and a file changed in between is read again."""
    try:
        key = _as_it_is(path)
    except OSError:
        key = None  # not there: the read below says so
    if key in _decoded:
        return _decoded[key]
    array = _decode_idx(path)
    if len(_decoded) >= 8:  # two data sets' four files at most
        _decoded.clear()
    if key is not None:
        _decoded[key] = array
    return array


def _decode_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # gzip.BadGzipFile is an OSError; a cut .gz ends in EOFError
        raise CnnrunError(
            f"cannot read {path}: {e or type(e).__name__} (truncated or not an IDX file); "
            "download it again or point dataset.path at a good copy"
        ) from None
    if len(raw) < 4 or raw[:2] != b"\x00\x00" or raw[2] != 0x08:
        raise CnnrunError(f"{path} is not an IDX file of unsigned bytes; expected the original MNIST-format files")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise CnnrunError(f"{path} is truncated inside its header; download it again")
    dims = struct.unpack(">" + "I" * ndim, raw[4:header])
    expected = int(np.prod(dims))
    if len(raw) - header != expected:
        raise CnnrunError(
            f"{path} holds {len(raw) - header} bytes of data but its header promises {expected} "
            f"(shape {dims}): the file is truncated or corrupt; download it again"
        )
    return np.frombuffer(raw, np.uint8, offset=header).reshape(dims)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Reads a Keras-style .npz with x_train, y_train, x_test, y_test."""
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in IDX_FILES if k not in f.files]
            if missing:
                raise CnnrunError(
                    f"{path} lacks the arrays {missing} (has {f.files}); "
                    "expected x_train, y_train, x_test, y_test as in Keras' mnist.npz"
                )
            return {k: f[k] for k in IDX_FILES}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CnnrunError(f"cannot read {path}: {e} (truncated or not an .npz); download it again") from None


def _idx_set(folder: Path) -> dict[str, Path] | None:
    """The four IDX files in `folder` (plain or .gz), or None when any is missing."""
    found = {}
    for key, stem in IDX_FILES.items():
        for candidate in (folder / f"{stem}.gz", folder / stem):
            if candidate.is_file():
                found[key] = candidate
                break
    return found if len(found) == len(IDX_FILES) else None


def _source_in(folder: Path, name: str) -> Path | dict[str, Path] | None:
    """An IDX set or a known .npz inside `folder`, if there is one."""
    if not folder.is_dir():
        return None
    idx = _idx_set(folder)
    if idx:
        return idx
    for npz in NPZ_NAMES[name]:
        if (folder / npz).is_file():
            return folder / npz
    return None


def keras_cache_dir() -> Path:
    """Keras' dataset cache (honours $KERAS_HOME like Keras itself)."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return Path(home) / "datasets"


def search_places(name: str) -> list[Path]:
    """Where an MNIST-style data set is looked for when dataset.path is not given, in order."""
    places = []
    if os.environ.get("CNNRUN_DATA"):
        env = Path(os.environ["CNNRUN_DATA"]).expanduser()
        places += [env / KERAS_CACHE[name], env]
    cache = keras_cache_dir()
    places += [cache / KERAS_CACHE[name], cache]
    places += [Path(p) for p in SYSTEM_DIRS[name]]
    return places


def _read_source(src: Path | dict[str, Path]) -> tuple[dict[str, np.ndarray], str]:
    if isinstance(src, dict):
        return {k: read_idx(p) for k, p in src.items()}, str(src["x_train"].parent)
    return read_npz(src), str(src)


def given_source(name: str, path: str) -> Path | dict[str, Path]:
    """dataset.path of Fashion-MNIST or MNIST: an .npz file, or a folder holding the four IDX files (or a known
    .npz); else one line saying what is missing. Looks at names only, nothing is read."""
    pretty = PRETTY[name]
    p = Path(path).expanduser()
    if p.is_file():
        if p.suffix != ".npz":
            raise CnnrunError(f"dataset.path={path} is a file but not an .npz; give the folder holding the four IDX "
                              "files instead")
        return p
    if not p.is_dir():
        raise CnnrunError(f"dataset.path={path} does not exist; give a folder with the {pretty} IDX files or an .npz")
    src = _source_in(p, name)
    if src is None:
        missing = [s for s in IDX_FILES.values() if not (p / s).exists() and not (p / f"{s}.gz").exists()]
        raise CnnrunError(
            f"dataset.path={path} lacks {', '.join(m + '[.gz]' for m in missing)} (and has no "
            f"{' or '.join(NPZ_NAMES[name])}); put the four {pretty} IDX files there or fix the path"
        )
    return src


def check_idx(cfg) -> None:
    """Before any work (schema.Option.check): a dataset.path given for Fashion-MNIST or MNIST holds the data."""
    if cfg.get("path"):
        given_source(cfg.name, str(cfg.path))


def load_mnist_like(name: str, path: str | None) -> tuple[dict[str, np.ndarray], str]:
    """Finds and reads Fashion-MNIST or MNIST: dataset.path, $CNNRUN_DATA, Keras' cache, system dirs, download."""
    if path:
        return _read_source(given_source(name, path))

    places = search_places(name)
    for folder in places:
        src = _source_in(folder, name)
        if src is not None:
            return _read_source(src)

    # Last resort, for users with a network: Keras' own downloader.
    import keras

    module = keras.datasets.fashion_mnist if name == "fashion" else keras.datasets.mnist
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data()
    except Exception as e:  # noqa: BLE001 - any download failure ends in the same advice
        hint = "apt-get install dataset-fashion-mnist, or " if name == "fashion" else ""
        raise CnnrunError(
            f"{PRETTY[name]} not found in {', '.join(str(p) for p in places)} and the download failed "
            f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); get it with {hint}"
            f"the four IDX files in a folder passed as dataset.path=DIR (or $CNNRUN_DATA=DIR)"
        ) from None
    arrays = {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}
    return arrays, f"keras.datasets ({keras_cache_dir()})"


# --- what the data is: a digest in each run's identity -------------------------------------------------

_digests: dict[tuple, str | None] = {}


def check_source(cfg) -> None:
    """The data a run of `cfg` (the dataset group) reads is there, as far as can be told without reading it
    (the option's check in schema.OPTIONS; the user's own loader has none): one line, before the backend starts."""
    from omegaconf import OmegaConf

    if "path" in cfg.keys() and OmegaConf.is_missing(cfg, "path"):
        return  # a folder not given at all: the config's check says so, or (debug=smoke) it is that job's failed row
    spec = schema.option("dataset", cfg).check
    if spec is not None:
        plugins.locate(spec, "dataset.name")(cfg)


def digest(cfg) -> str | None:
    """A short hash of the data a run of `cfg` (the dataset group) reads, without decoding it: the contents of
    the IDX / .npz files; a folder's file list with sizes and modification times; the bundled digits. Paths
    are left out, so a moved data set is the same data. None when it cannot be told (a download to come).
    Kept per process: a run asks twice (before Hydra writes, and when it starts)."""
    import hashlib

    key = (cfg.name, str(cfg.get("path")), str(cfg.get("image_size")), str(cfg.get("_target_")))
    if key in _digests:
        return _digests[key]
    h = hashlib.sha256(cfg.name.encode())
    spec = schema.option("dataset", cfg).digest
    try:
        if spec is None or not plugins.locate(spec, "dataset.name")(cfg, h):
            return None
    except OSError:
        return None
    _digests[key] = h.hexdigest()[:16]
    return _digests[key]


def digest_idx(cfg, h) -> bool:
    """Fashion-MNIST / MNIST: the bytes of the four IDX files (or the .npz); False while they are still to come."""
    src = _find_mnist_like(cfg.name, cfg.get("path"))
    if src is None:
        return False
    for f in [src[k] for k in IDX_FILES] if isinstance(src, dict) else [src]:
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return True


def digest_digits(cfg, h) -> bool:
    from sklearn.datasets import load_digits

    h.update(np.ascontiguousarray(load_digits().images).tobytes())
    return True


def digest_folder(cfg, h) -> bool:
    """A folder: each image file's path below it, size and modification time (no decoding)."""
    root = Path(str(cfg.path)).expanduser()
    if not root.is_dir():
        return False
    for dirpath, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not holds_runs(Path(dirpath, d)))  # as read
        for name in sorted(names):
            if is_image(name):
                st = os.stat(os.path.join(dirpath, name))
                rel = os.path.relpath(os.path.join(dirpath, name), root)
                h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
    return True


def forget_digests() -> None:
    """The next digest() reads the data again (each job of a sweep in one process)."""
    _digests.clear()




def _find_mnist_like(name: str, path: str | None):
    """The IDX set or .npz that load_mnist_like would read, or None (not there: it would download or refuse)."""
    if path:
        p = Path(path).expanduser()
        return p if p.is_file() else _source_in(p, name)
    for folder in search_places(name):
        src = _source_in(folder, name)
        if src is not None:
            return src
    return None


def load_idx(cfg, batch_size: int = 32):
    """dataset=fashion / mnist: (arrays, source, class_names, test_files, notes) as every loader returns."""
    arrays, source = load_mnist_like(cfg.name, cfg.path)
    return arrays, source, [], None, []


def load_digits(cfg, batch_size: int = 32):
    """dataset=digits (scikit-learn's, bundled): as every loader returns."""
    arrays = load_digits_arrays(int(cfg.image_size), cfg.test_split, cfg.split_seed, batch_size)
    return arrays, "sklearn.datasets.load_digits", [], None, []


DIGITS = 1797  # images in scikit-learn's bundled digits
_digits: dict[tuple, dict[str, np.ndarray]] = {}  # load_digits_arrays' results in this process (read-only arrays)


def load_digits_arrays(image_size: int, test_split: float, split_seed: int, batch_size: int = 32) -> dict[str, np.ndarray]:
    """scikit-learn's 8x8 digits, upscaled to image_size and split into train / test; kept for this process (the
    data never changes: a sweep's jobs upscale them once)."""
    from cnnrun.data.memory import check_fits

    check_fits(DIGITS, (int(image_size), int(image_size)), 1, batch_size, in_memory=True)  # before any upscaling
    key = (int(image_size), float(test_split), int(split_seed))
    if key not in _digits:
        _digits.clear()  # one size kept
        _digits[key] = _upscaled_digits(*key)
    return dict(_digits[key])


def _upscaled_digits(image_size: int, test_split: float, split_seed: int) -> dict[str, np.ndarray]:
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    small = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    big = np.stack(
        [np.asarray(Image.fromarray(im).resize((image_size, image_size), Image.BILINEAR)) for im in small]
    )
    labels = digits.target.astype(np.int32)
    tr, te = train_test_split(
        np.arange(len(labels)), test_size=float(test_split), stratify=labels, random_state=int(split_seed)
    )
    arrays = {"x_train": big[tr], "y_train": labels[tr], "x_test": big[te], "y_test": labels[te]}
    for array in arrays.values():
        array.setflags(write=False)  # shared by the runs of this process: none may change another's
    return arrays


# ---------------------------------------------------------------------------------------------
# Checks and splits


def to_uint8_images(x: np.ndarray, what: str) -> np.ndarray:
    """Checks shape and values, returns (N, H, W, C) uint8."""
    x = np.asarray(x)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise CnnrunError(f"{what} has shape {x.shape}; expected (N, H, W) or (N, H, W, 1|3) images")
    if x.shape[0] == 0:
        raise CnnrunError(f"{what} holds no images; check the data files")
    if x.dtype == np.uint8:
        return x
    if not np.issubdtype(x.dtype, np.number):
        raise CnnrunError(f"{what} has dtype {x.dtype}; expected numeric pixels")
    bad = ~np.isfinite(x) if np.issubdtype(x.dtype, np.floating) else None
    if bad is not None and bad.any():
        first = int(np.argwhere(bad.reshape(len(x), -1).any(axis=1))[0][0])
        raise CnnrunError(f"{what} holds NaN or inf pixels ({int(bad.sum())} of them, first in image {first}); clean the data")
    lo, hi = float(x.min()), float(x.max())
    if lo < 0 or hi > 255:
        raise CnnrunError(f"{what} has pixel values in [{lo:g}, {hi:g}]; expected [0, 255] (or [0, 1] floats)")
    scale = 255.0 if hi <= 1.0 and np.issubdtype(x.dtype, np.floating) else 1.0
    return np.round(x * scale).astype(np.uint8)


def check_labels(y: np.ndarray, n_images: int, num_classes: int, what: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise CnnrunError(f"{what} has shape {y.shape}; expected one integer label per image")
    if len(y) != n_images:
        raise CnnrunError(f"{what}: {len(y)} labels for {n_images} images; the label and image files do not match")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(np.equal(np.mod(y, 1), 0)):
            raise CnnrunError(f"{what} holds non-integer labels; expected class indices 0..{num_classes - 1}")
    bad = (y < 0) | (y >= num_classes)
    if bad.any():
        raise CnnrunError(
            f"{what} has label {y[bad][0]} (in {int(bad.sum())} images) outside 0..{num_classes - 1}; "
            f"fix the labels or dataset.class_names ({num_classes} names)"
        )
    return y.astype(np.int32)


def check_classes(y_train: np.ndarray, y_test: np.ndarray, class_names: list[str], where: str) -> None:
    """Every route refuses what the folder and CSV routes refuse: fewer than two classes to learn, or test images of
    a class no training image has (its accuracy would be 0 % by construction, or 100 % of one class)."""
    trained = set(np.unique(y_train).tolist())
    if len(trained) < 2:
        only = ", ".join(class_names[k] for k in sorted(trained)) or "none"
        raise CnnrunError(f"{where}: the training images hold {len(trained)} class ({only}); a classifier needs at least "
                          "two: check the labels the data returns")
    unseen = sorted(set(np.unique(y_test).tolist()) - trained)
    if unseen:
        raise CnnrunError(f"{where}: test images of class {', '.join(repr(class_names[k]) for k in unseen[:3])} have "
                          "no training image; add training images of it, or drop it from the test set")


def subsample(x: np.ndarray, y: np.ndarray, limit: int | None, seed: int, files=None):
    """At most `limit` images, chosen by a seeded draw (order kept), so small runs still see every class."""
    if limit is None or limit >= len(x):
        return x, y, files
    keep = np.sort(np.random.default_rng(seed).choice(len(x), size=int(limit), replace=False))
    return x[keep], y[keep], ([files[i] for i in keep] if files is not None else None)


def split_validation(x, y, val_split: float, seed: int):
    """Stratified, seeded hold-out of `val_split` of the training set."""
    if not val_split:
        return x, y, x[:0], y[:0]
    from sklearn.model_selection import train_test_split

    try:
        tr, va = train_test_split(np.arange(len(y)), test_size=float(val_split), stratify=y, random_state=int(seed))
    except ValueError as e:
        raise CnnrunError(
            f"trainer.val_split={val_split} cannot hold out a stratified validation set from {len(y)} images "
            f"in {len(np.unique(y))} classes ({e}); raise val_split, use more data, or set trainer.val_split=0"
        ) from None
    return x[tr], y[tr], x[va], y[va]


_preloaded: dict[str, Dataset] = {}  # a user's loader called before the run (preflight): its result, once


def _preload_key(cfg, seed, val_split, batch_size) -> str:
    import json

    from omegaconf import OmegaConf

    node = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    return json.dumps([node, seed, val_split, batch_size], sort_keys=True, default=str)


def preload(cfg, seed: int = 0, val_split: float = 0.0, batch_size: int = 32) -> Dataset:
    """load_dataset, before the run (the command line's check of the user's own loader, so that what it returns
    is refused before any run directory exists); the run then takes this very result instead of calling it again."""
    data = load_dataset(cfg, seed, val_split, batch_size)
    _preloaded.clear()  # one kept at most: a sweep's other jobs call their loader again
    _preloaded[_preload_key(cfg, seed, val_split, batch_size)] = data
    return data


def input_of(cfg) -> tuple[tuple[int, int, int], int] | None:
    """(image shape, number of classes) a dataset config gives, told without decoding any image (a user's loader is
    called: preload); None when it cannot be told that way."""
    if cfg.get("_target_") is not None:
        return None
    if cfg.name in ("fashion", "mnist"):
        return (28, 28, 1), 10
    if cfg.name == "digits":
        return (int(cfg.image_size), int(cfg.image_size), 1), 10
    from cnnrun.data.folder import image_options

    (height, width), channels, _, _ = image_options(cfg)
    names = [str(c) for c in cfg.get("class_names") or []]
    try:
        if not names and cfg.name == "folder":
            root = Path(str(cfg.path)).expanduser()
            root = root / "train" if (root / "train").is_dir() and (root / "test").is_dir() else root
            names = [d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith(".") and not holds_runs(d)]
        elif not names and cfg.name == "csv":
            from cnnrun.data.manifest import read_csv

            names = sorted({str(label) for _, label, _ in read_csv(cfg)[1]})
    except (OSError, CnnrunError):
        return None
    return ((height, width, channels), len(names)) if len(names) >= 2 else None


def load_dataset(cfg, seed: int = 0, val_split: float = 0.0, batch_size: int = 32) -> Dataset:
    """Reads the data set named by cfg.name, checks it, applies limit, validation split and mirroring."""
    if _preloaded:
        data = _preloaded.pop(_preload_key(cfg, seed, val_split, batch_size), None)
        _preloaded.clear()
        if data is not None:
            return data
    name = cfg.name
    loader = plugins.locate(schema.option("dataset", cfg).target, "dataset.name")  # the registry (schema.OPTIONS)
    arrays, source, class_names, test_files, notes = loader(cfg, batch_size)
    class_names = class_names or [str(c) for c in cfg.class_names or []]  # a folder's own, else the config's

    x_train, x_test = arrays["x_train"], arrays["x_test"]
    if isinstance(x_train, np.ndarray):  # folder datasets streamed from disk are checked file by file
        x_train = to_uint8_images(x_train, f"{name} training images ({source})")
        x_test = to_uint8_images(x_test, f"{name} test images ({source})")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise CnnrunError(f"{name}: training images are {x_train.shape[1:]} but test images {x_test.shape[1:]}; they must match")
    if not class_names:
        class_names = [str(i) for i in range(int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1)]
    y_train = check_labels(arrays["y_train"], len(x_train), len(class_names), f"{name} training labels ({source})")
    y_test = check_labels(arrays["y_test"], len(x_test), len(class_names), f"{name} test labels ({source})")
    check_classes(y_train, y_test, class_names, f"{name} ({source})")

    limit = cfg.limit
    x_train, y_train, _ = subsample(x_train, y_train, limit, seed)
    x_test, y_test, test_files = subsample(x_test, y_test, limit, seed + 1, test_files)
    x_train, y_train, x_val, y_val = split_validation(x_train, y_train, val_split, seed)
    if cfg.get("balance") not in (None, "none"):  # folder-like datasets have the key
        from cnnrun.data.folder import balance

        before = np.bincount(y_train, minlength=len(class_names)).tolist()
        x_train, y_train = balance(x_train, y_train, cfg.balance, seed)
        notes.append(f"balance={cfg.balance}: training images per class {before} -> "
                     f"{np.bincount(y_train, minlength=len(class_names)).tolist()}")
    if cfg.mirror:  # article 001: the training set plus its left-right mirror image
        if not isinstance(x_train, np.ndarray):
            raise CnnrunError("dataset.mirror=true needs the images in memory; use augment=flip for a streamed folder")
        x_train = np.concatenate([x_train, x_train[:, :, ::-1, :]])
        y_train = np.concatenate([y_train, y_train])
    if len(x_train) < batch_size:
        notes.append(f"only {len(x_train)} training images, fewer than trainer.batch_size={batch_size}: every epoch "
                     "is one step; lower trainer.batch_size for more updates")
    return Dataset(name, class_names, x_train, y_train, x_val, y_val, x_test, y_test, source, test_files, notes)
