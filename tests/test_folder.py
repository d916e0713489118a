"""Folder datasets built from real PNG / JPEG files in tmp_path."""

import numpy as np
import pytest
from PIL import Image

from cnnrun import CnnrunError
from cnnrun.data import load_dataset
from cnnrun.data.folder import FileImages
from cnnrun.training.train import train


def make_photos(root, counts=None, size=40, fmt="png", seed=0):
    """Class 'red' has a red disc, class 'blue' a blue square, on noise: easy to learn, real files."""
    rng = np.random.default_rng(seed)
    counts = counts or {"red": 12, "blue": 12}
    for name, n in counts.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img = rng.integers(0, 60, (size, size, 3)).astype(np.uint8)
            yy, xx = np.mgrid[:size, :size]
            c = rng.integers(12, size - 12, 2)
            if name == "red":
                img[(yy - c[0]) ** 2 + (xx - c[1]) ** 2 < 64] = [230, 30, 30]
            else:
                img[c[0] - 8:c[0] + 8, c[1] - 8:c[1] + 8] = [30, 30, 230]
            Image.fromarray(img).save(root / name / f"{name}{i:02d}.{fmt}")
    return root


@pytest.fixture
def photos(tmp_path):
    return make_photos(tmp_path / "photos")


def folder(cfg_factory, path, *more):
    return cfg_factory("dataset=folder", f"dataset.path={path}", "dataset.image_size=32", *more)


def test_split_is_stratified_and_sized(cfg_factory, photos):
    ds = load_dataset(folder(cfg_factory, photos).dataset)
    assert ds.class_names == ["blue", "red"] and ds.input_shape == (32, 32, 3)
    assert len(ds.x_test) == 8 and np.bincount(ds.y_test).tolist() == [4, 4]  # 33 % of 24, per class
    assert all(f.endswith(".png") for f in ds.test_files)
    red = ds.x_train[ds.y_train == 1]
    assert red[..., 0].max() > 200 and red[..., 2].max() < 120


def test_train_test_folders_and_grayscale(cfg_factory, tmp_path):
    make_photos(tmp_path / "d" / "train", fmt="jpg")
    make_photos(tmp_path / "d" / "test", counts={"red": 3, "blue": 2}, fmt="jpg", seed=1)
    ds = load_dataset(folder(cfg_factory, tmp_path / "d", "dataset.color=grayscale").dataset)
    assert len(ds.x_train) == 24 and len(ds.x_test) == 5 and ds.input_shape == (32, 32, 1)


def test_end_to_end_copies_misclassified_with_original_names(cfg_factory, photos, tmp_path):
    cfg = folder(cfg_factory, photos, "model=tf_cnn", "trainer.batch_size=8", "dataset.limit=null")
    metrics = train(cfg, tmp_path / "run")
    assert metrics["status"] == "ok" and metrics["test_images"] == 8
    for f in (tmp_path / "run" / "misclassified").glob("*"):
        true, _, rest = f.name.partition("_to_")
        pred, _, rest = rest.partition("_")
        index, _, original = rest.partition("_")  # the test index keeps equal file names apart
        assert true != pred and index.isdigit() and (photos / true / original).read_bytes() == f.read_bytes()


def test_streamed_from_disk_gives_the_same_run(cfg_factory, photos, tmp_path):
    base = ["model=dense", "trainer.batch_size=8", "dataset.limit=null"]
    cached = train(folder(cfg_factory, photos, *base, "dataset.cache=true"), tmp_path / "a")
    streamed_cfg = folder(cfg_factory, photos, *base, "dataset.cache=false")
    assert isinstance(load_dataset(streamed_cfg.dataset).x_train, FileImages)
    streamed = train(streamed_cfg, tmp_path / "b")
    assert streamed["status"] == "ok" and streamed["test_images"] == cached["test_images"]
    assert "streamed from disk" in load_dataset(streamed_cfg.dataset).source


def test_balance(cfg_factory, tmp_path):
    make_photos(tmp_path / "p", counts={"red": 20, "blue": 8})
    over = load_dataset(folder(cfg_factory, tmp_path / "p", "dataset.balance=oversample").dataset)
    under = load_dataset(folder(cfg_factory, tmp_path / "p", "dataset.balance=undersample").dataset)
    assert np.bincount(over.y_train).tolist() == [13, 13]
    assert np.bincount(under.y_train).tolist() == [5, 5]


def test_bad_files_skipped_with_warning_or_refused(cfg_factory, photos):
    (photos / "red" / "not_an_image.png").write_text("hello")
    Image.new("RGB", (1, 1)).save(photos / "blue" / "tiny.png")
    Image.new("L", (10000, 10000)).save(photos / "blue" / "huge.png")  # 100 Mpx: PIL itself only warns
    ds = load_dataset(folder(cfg_factory, photos).dataset)
    notes = " ".join(ds.notes)
    assert "not_an_image.png (UnidentifiedImageError: cannot identify image file" in notes
    assert "tiny.png (1x1 px, a side under dataset.min_side=8)" in notes
    assert "huge.png (10000x10000 px, over dataset.max_pixels=50000000)" in notes
    assert len(ds.x_train) + len(ds.x_test) == 24  # the good ones are all there
    with pytest.raises(CnnrunError, match="unusable image file.*huge.png.*tiny.png.*dataset.bad_files=warn"):
        load_dataset(folder(cfg_factory, photos, "dataset.bad_files=error").dataset)
    # Raising the limits lets them in, on purpose.
    ds = load_dataset(folder(cfg_factory, photos, "dataset.min_side=1", "dataset.max_pixels=200000000").dataset)
    assert len(ds.x_train) + len(ds.x_test) == 26


@pytest.mark.parametrize(
    "setup, message",
    [
        (lambda p: None, "not a folder"),
        (lambda p: make_photos(p, counts={"red": 5}), "at least two"),
        (lambda p: (make_photos(p), (p / "green").mkdir()), "green holds no readable images"),
        (lambda p: (make_photos(p / "train"), make_photos(p / "test", counts={"red": 2, "pink": 2})), "pink"),
    ],
)
def test_bad_folders_get_clear_errors(cfg_factory, tmp_path, setup, message):
    setup(tmp_path / "x")
    with pytest.raises(CnnrunError, match=message) as err:
        load_dataset(folder(cfg_factory, tmp_path / "x").dataset)
    assert "\n" not in str(err.value)


def test_missing_path(cfg_factory):
    from cnnrun.config import checks

    with pytest.raises(CnnrunError, match="dataset=folder needs dataset.path"):
        checks.validate(cfg_factory("dataset=folder", tiny=False))
    with pytest.raises(CnnrunError, match="dataset.path='' must be a folder"):
        checks.validate(cfg_factory("dataset=folder", "dataset.path=", tiny=False))


@pytest.mark.parametrize("mode", ["RGB", "L", "P", "RGBA", "I;16"])
def test_every_orientation_and_mode_decodes_as_pil_shows_it(tmp_path, mode):
    """The feed's decode skips PIL's no-op steps (a transpose of an upright photo, a conversion to the mode it
    has): what it gives must still be the photo as PIL shows it upright, converted, then resized. Streamed
    batches, decoded by the shared threads, equal image-by-image decoding."""
    from PIL import ImageOps

    from cnnrun.data.folder import Batches, decode, load_all

    rng = np.random.default_rng(1)
    files = []
    for orientation in range(1, 9):
        a = np.zeros((48, 80, 3), np.uint8)
        a[:12, :30] = [250, 20, 20]  # a red corner, top left, so every turn and mirror shows
        a[30:] = rng.integers(0, 255, (18, 80, 3))
        im = Image.fromarray(a)
        im = {"I;16": lambda i: Image.fromarray(np.asarray(i.convert("L")).astype(np.uint16) * 257)}.get(
            mode, lambda i: i.convert(mode))(im)
        path = tmp_path / f"o{orientation}.{'jpg' if mode in ('RGB', 'L') else 'png'}"
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(path, exif=exif)
        files.append(str(path))
        for channels in (3, 1):
            want = "RGB" if channels == 3 else "L"
            with Image.open(path) as ref:  # every step done, no-op or not, as PIL's documentation has them
                turned = orientation in (5, 6, 7, 8)
                ref.draft(want, (32, 24) if turned else (24, 32))
                ref = ImageOps.exif_transpose(ref)
                if ref.mode.startswith("I"):
                    ref = Image.fromarray((np.asarray(ref, np.float64) / 257).round().astype(np.uint8), mode="L")
                ref = np.asarray(ref.convert(want).resize((24, 32), Image.BILINEAR))
            got = decode(str(path), (32, 24), channels)
            assert got.shape == (32, 24, channels)
            assert np.array_equal(got.reshape(ref.shape), ref), (orientation, mode, channels)
    every = load_all(files, (32, 24), 3)
    assert np.array_equal(every, np.stack([decode(f, (32, 24), 3) for f in files]))
    batches = Batches(FileImages(files, (32, 24), 3), np.arange(8), batch_size=3, order=np.arange(8)[::-1])
    assert np.array_equal(np.concatenate([batches[i][0] for i in range(len(batches))]), every[::-1])
