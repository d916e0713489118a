"""Loaders on small IDX / NPZ files the tests write, the search order, and the checks on bad data."""

import numpy as np
import pytest
from conftest import make_config, make_mnist_like, run_cli, started_keras, write_idx
from omegaconf import OmegaConf

import cnnrun.data as data
from cnnrun import CnnrunError


@pytest.fixture
def no_default_places(tmp_path, monkeypatch):
    """Nothing in $CNNRUN_DATA, Keras' cache or the system folders, and no network."""
    monkeypatch.delenv("CNNRUN_DATA", raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras-home"))
    monkeypatch.setitem(data.SYSTEM_DIRS, "fashion", [str(tmp_path / "system")])
    monkeypatch.setitem(data.SYSTEM_DIRS, "mnist", [str(tmp_path / "system")])

    def offline(*a, **k):
        raise OSError("network unreachable")

    import keras

    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", offline)
    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    return tmp_path


def cfg(**kw):
    base = {"name": "fashion", "path": None, "limit": None, "mirror": False,
            "class_names": [str(i) for i in range(10)]}
    return OmegaConf.create({**base, **kw})


@pytest.mark.parametrize("gz", [True, False])
def test_idx_files_read_back_exactly(tmp_path, gz):
    written = make_mnist_like(tmp_path / "f", gz=gz)
    ds = data.load_dataset(cfg(path=str(tmp_path / "f")))
    np.testing.assert_array_equal(ds.x_train[..., 0], written["train"][0])
    np.testing.assert_array_equal(ds.y_test, written["t10k"][1])
    assert ds.x_train.dtype == np.uint8 and ds.input_shape == (28, 28, 1) and ds.num_classes == 10


def test_a_data_file_changed_between_runs_is_read_again(tmp_path):
    """Decoded files are kept per process (a sweep's jobs decode Fashion-MNIST once), while each file is as it was."""
    first = make_mnist_like(tmp_path / "f", gz=False, seed=0)
    a = data.load_dataset(cfg(path=str(tmp_path / "f")))
    assert data.load_dataset(cfg(path=str(tmp_path / "f"))).x_train.base is a.x_train.base  # the same bytes, kept
    second = make_mnist_like(tmp_path / "f", gz=False, seed=1)  # the same sizes, other images and labels
    b = data.load_dataset(cfg(path=str(tmp_path / "f")))
    np.testing.assert_array_equal(a.x_train[..., 0], first["train"][0])
    np.testing.assert_array_equal(b.x_train[..., 0], second["train"][0])
    np.testing.assert_array_equal(b.y_test, second["t10k"][1])
    assert not b.x_train.flags.writeable  # shared by this process's runs: none can change another's


def test_npz_in_keras_format(tmp_path):
    written = make_mnist_like(tmp_path / "f")
    np.savez(tmp_path / "mnist.npz", x_train=written["train"][0], y_train=written["train"][1],
             x_test=written["t10k"][0], y_test=written["t10k"][1])
    ds = data.load_dataset(cfg(name="mnist", path=str(tmp_path / "mnist.npz")))
    assert len(ds.x_train) == 120 and len(ds.x_test) == 40


def test_truncated_gz_names_the_file(tmp_path):
    make_mnist_like(tmp_path / "f")
    x = np.zeros((50, 28, 28), np.uint8)
    bad = write_idx(tmp_path / "f" / "train-images-idx3-ubyte", x, truncate=100)
    with pytest.raises(CnnrunError, match="truncated") as err:
        data.load_dataset(cfg(path=str(tmp_path / "f")))
    assert str(bad) in str(err.value) and "\n" not in str(err.value)


def test_cut_gzip_stream_is_reported(tmp_path):
    make_mnist_like(tmp_path / "f")
    path = tmp_path / "f" / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(CnnrunError, match="t10k-images"):
        data.load_dataset(cfg(path=str(tmp_path / "f")))


def test_missing_files_are_listed(tmp_path):
    make_mnist_like(tmp_path / "f")
    (tmp_path / "f" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(CnnrunError, match=r"dataset.path=.*lacks t10k-labels-idx1-ubyte"):
        data.load_dataset(cfg(path=str(tmp_path / "f")))


def test_labels_not_matching_images(tmp_path):
    make_mnist_like(tmp_path / "f")
    write_idx(tmp_path / "f" / "train-labels-idx1-ubyte", np.zeros(119, np.uint8))
    with pytest.raises(CnnrunError, match="119 labels for 120 images"):
        data.load_dataset(cfg(path=str(tmp_path / "f")))


def test_label_out_of_range(tmp_path):
    make_mnist_like(tmp_path / "f")
    write_idx(tmp_path / "f" / "t10k-labels-idx1-ubyte", np.full(40, 12, np.uint8))
    with pytest.raises(CnnrunError, match="label 12"):
        data.load_dataset(cfg(path=str(tmp_path / "f")))


def test_nan_images_are_refused():
    x = np.zeros((4, 28, 28), np.float32)
    x[2, 3, 3] = np.nan
    with pytest.raises(CnnrunError, match="NaN or inf pixels.*image 2"):
        data.to_uint8_images(x, "test images")


@pytest.mark.parametrize(
    "x_train, message",
    [
        (np.zeros((0, 28, 28), np.uint8), "holds no images"),
        (np.zeros((12, 784), np.uint8), r"has shape \(12, 784\); expected \(N, H, W\)"),
        (np.full((12, 28, 28), np.inf, np.float32), "NaN or inf pixels"),
        (np.full((12, 28, 28), 300.0, np.float32), r"pixel values in \[300, 300\]"),
    ],
    ids=["empty", "wrong-shape", "inf", "out-of-range"],
)
def test_broken_npz_names_the_file_and_the_fault(tmp_path, x_train, message):
    path = tmp_path / "broken.npz"
    y = np.arange(len(x_train)) % 10
    np.savez(path, x_train=x_train, y_train=y, x_test=np.zeros((4, 28, 28), np.uint8), y_test=np.arange(4))
    with pytest.raises(CnnrunError, match=message) as err:
        data.load_dataset(cfg(path=str(path)))
    assert "broken.npz" in str(err.value) and "\n" not in str(err.value)


def test_search_order_cnnrun_data_then_keras_cache(no_default_places, monkeypatch):
    tmp = no_default_places
    cache = make_mnist_like(tmp / "keras-home" / "datasets" / "fashion-mnist", seed=1)
    ds = data.load_dataset(cfg())
    np.testing.assert_array_equal(ds.y_train, cache["train"][1])
    env = make_mnist_like(tmp / "env", seed=2)
    monkeypatch.setenv("CNNRUN_DATA", str(tmp / "env"))
    ds = data.load_dataset(cfg())
    np.testing.assert_array_equal(ds.y_train, env["train"][1])  # $CNNRUN_DATA wins over the cache


def test_offline_and_nowhere_found_lists_places_and_fixes(no_default_places):
    with pytest.raises(CnnrunError) as err:
        data.load_dataset(cfg())
    message = str(err.value)
    assert "keras-home" in message and "system" in message and "network unreachable" in message
    assert "dataset-fashion-mnist" in message and "dataset.path" in message and "\n" not in message


def test_data_that_is_not_there_is_refused_before_any_work(tmp_path):
    """A mistyped dataset.path: one line and exit 2 at once, before the backend starts (seconds) and before a
    run or sweep directory exists; each built-in source says what it expected."""
    imports = {"PYTHONPROFILEIMPORTTIME": "1"}
    one = run_cli("train", "dataset=folder", f"dataset.path={tmp_path / 'photoz'}", f"hydra.run.dir={tmp_path / 'run'}",
                  env=imports)
    assert one.returncode == 2 and f"dataset.path={tmp_path / 'photoz'} is not a folder" in one.stderr
    assert not started_keras(one) and not (tmp_path / "run").exists()
    sweep = run_cli("train", "-m", "dataset=mnist", f"dataset.path={tmp_path / 'nowhere'}", "model=dense,tf_cnn",
                    f"hydra.sweep.dir={tmp_path / 'sweep'}", env=imports)
    line = [x for x in sweep.stderr.splitlines() if x.startswith("cnnrun: error:")]
    assert sweep.returncode == 2 and len(line) == 1 and not started_keras(sweep) and not (tmp_path / "sweep").exists()
    assert "job 0 of 2 (" in line[0] and "does not exist; give a folder with the MNIST IDX files" in line[0]
    (tmp_path / "labels.txt").write_text("x")
    for overrides, expected in ((["dataset=csv", f"dataset.path={tmp_path / 'labels.csv'}"], "is not a file; give the CSV"),
                                (["dataset=mnist", f"dataset.path={tmp_path / 'labels.txt'}"], "is a file but not an .npz"),
                                (["dataset=fashion", f"dataset.path={tmp_path / 'nope'}"], "does not exist"),
                                (["dataset=fashion", f"dataset.path={tmp_path}"], "lacks train-images-idx3-ubyte")):
        with pytest.raises(CnnrunError, match=expected):
            data.check_source(make_config(*overrides, tiny=False).dataset)
    for fine in (["dataset=digits"], ["dataset=fashion"], ["dataset=folder", f"dataset.path={tmp_path}"]):
        data.check_source(make_config(*fine, tiny=False).dataset)  # no path (the usual places), or one that is there


def test_data_on_other_machines_is_left_to_them(tmp_path):
    """Jobs that Slurm or Ray run elsewhere may read a path this machine lacks: the pre-flight does not look."""
    from cnnrun.commands import train as cli

    missing = ["-m", "dataset=folder", f"dataset.path={tmp_path / 'theirs'}"]
    cli.preflight([*missing, "hydra/launcher=submitit_slurm"])  # no refusal
    with pytest.raises(SystemExit) as refused:  # a launcher that runs the jobs here
        cli.preflight([*missing, "hydra/launcher=joblib"])
    assert refused.value.code == 2


def test_keras_download_is_the_last_resort(no_default_places, monkeypatch):
    import keras

    x = np.full((20, 28, 28), 7, np.uint8)
    y = np.arange(20) % 10
    monkeypatch.setattr(keras.datasets.mnist, "load_data", lambda: ((x, y), (x[:10], y[:10])))
    ds = data.load_dataset(cfg(name="mnist"))
    assert len(ds.x_train) == 20 and len(ds.x_test) == 10 and "keras.datasets" in ds.source


def test_digits_are_upscaled_and_split():
    ds = data.load_dataset(OmegaConf.create({"name": "digits", "image_size": 28, "test_split": 0.2,
                                             "split_seed": 0, "limit": None, "mirror": False,
                                             "class_names": [str(i) for i in range(10)]}))
    assert ds.input_shape == (28, 28, 1) and len(ds.x_train) + len(ds.x_test) == 1797
    assert ds.x_train.max() > 200  # scaled to the full 0-255 range
    assert not ds.x_train.flags.writeable  # kept for the process's later runs: read-only


def test_val_split_is_stratified_and_seeded(tmp_path):
    make_mnist_like(tmp_path / "f", n_train=200)
    a = data.load_dataset(cfg(path=str(tmp_path / "f")), seed=3, val_split=0.2)
    b = data.load_dataset(cfg(path=str(tmp_path / "f")), seed=3, val_split=0.2)
    assert len(a.x_val) == 40 and len(a.x_train) == 160
    assert np.bincount(a.y_val, minlength=10).tolist() == [4] * 10  # every class, equally
    np.testing.assert_array_equal(a.y_val, b.y_val)


def test_val_split_leaving_a_class_empty_is_refused(tmp_path):
    make_mnist_like(tmp_path / "f", n_train=200)
    with pytest.raises(CnnrunError, match="trainer.val_split=0.01"):
        data.load_dataset(cfg(path=str(tmp_path / "f")), val_split=0.01)


def test_limit_and_mirror(tmp_path):
    make_mnist_like(tmp_path / "f", n_train=100, n_test=50)
    ds = data.load_dataset(cfg(path=str(tmp_path / "f"), limit=30, mirror=True))
    assert len(ds.x_test) == 30 and len(ds.x_train) == 60
    np.testing.assert_array_equal(ds.x_train[30:], ds.x_train[:30, :, ::-1])
    from conftest import refusal  # a limit below 1 is the schema's to refuse, before any data is read

    assert refusal("dataset.limit=0").startswith("dataset.limit=0 must be null (all) or a whole number >= 1")
