"""model=backbone (issue 34): any keras.applications classifier or KerasHub preset, fine-tuned with its own input.

ImageNet weights cannot be downloaded here: the tests write the weights they load (a random-init application's
weights without its top, as keras.applications.X(include_top=False).save_weights writes them) and check that they
are what the model holds."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest
from PIL import Image

from cnnrun import CnnrunError
from cnnrun.models import backbone as bb
from tests.conftest import cli, read_metrics, run_cli


def make_backbone(input_shape, num_classes, **keys):
    """The builder called as build_model calls it: every key, the schema's defaults where not given."""
    import dataclasses

    from cnnrun.config import schema

    defaults = {f.name: f.default for f in dataclasses.fields(schema.Backbone) if f.name != "name"}
    defaults["pooling"] = str(defaults["pooling"])
    return bb.backbone(input_shape, num_classes, **{"name": "MobileNetV3Small", **defaults, **keys})


@pytest.mark.parametrize("name", sorted(bb.FAMILIES))
def test_each_family_gets_exactly_its_own_preprocessing(name):
    """cnnrun's [0, 1] images through the family's adapter equal its own preprocess_input of the 0-255 pixels."""
    fam = bb.FAMILIES[name]
    pixels = np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3)).astype("float32")
    module = getattr(keras.applications, fam.module)
    expected = np.asarray(module.preprocess_input(pixels.copy()))
    layer = bb.adapter(fam.mode)
    got = keras.ops.convert_to_numpy(layer(pixels / 255.0))
    assert np.allclose(got, expected, atol=2e-4, rtol=1e-5), (name, fam.mode, float(np.abs(got - expected).max()))


def photos(root, n=12, side=40):
    """Two classes of small JPEGs, as article 004's photo folder but tiny: dark and bright."""
    rng = np.random.default_rng(0)
    for k, level in (("dark", 60), ("bright", 190)):
        (root / k).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            pixels = np.clip(rng.normal(level, 30, (side, side, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / k / f"{i}.jpg", quality=95)
    return root


FINE_TUNE = ["model=backbone", "model.weights=null", "dataset=folder", "dataset.image_size=32", "trainer.epochs=3",
             "trainer.batch_size=8", "trainer.verbose=0", "optimizer.lr=0.001"]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return photos(tmp_path_factory.mktemp("photos") / "images")


TUNED = ["MobileNetV3Small", "MobileNetV2"]  # preprocessing modes raw and tf

# model.keras in plain Keras (no cnnrun imported) on raw pixels: one process loads every fine-tuned model
PLAIN_KERAS = ("import sys, json, numpy as np, keras; x = np.load(sys.argv[1])[None]; "
               "print(json.dumps([keras.models.load_model(p).predict(x, verbose=0)[0].tolist() for p in sys.argv[2:]]))")


@pytest.fixture(scope="module")
def fine_tuned(folder, tmp_path_factory):
    """Each of TUNED fine-tuned by `cnnrun train` (its result, its run directory), and what plain Keras predicts
    with its model.keras for one raw photo."""
    where = tmp_path_factory.mktemp("fine_tuned")
    results = {name: cli("train", *FINE_TUNE, f"model.name={name}", f"dataset.path={folder}", f"hydra.run.dir={name}",
                         cwd=where) for name in TUNED}
    image = np.asarray(Image.open(next((folder / "bright").glob("*.jpg"))).convert("RGB").resize((32, 32),
                                                                                                  Image.BILINEAR))
    np.save(where / "x.npy", image)
    done = [name for name in TUNED if results[name].returncode == 0]
    out = subprocess.run([sys.executable, "-c", PLAIN_KERAS, str(where / "x.npy"),
                          *(str(where / name / "model.keras") for name in done)],
                         capture_output=True, text=True, timeout=300)
    predicted = dict(zip(done, json.loads(out.stdout.strip().splitlines()[-1]))) if out.returncode == 0 else out.stderr
    return where, results, predicted


@pytest.mark.parametrize("name", TUNED)
def test_a_short_fine_tune_learns_and_its_model_keras_takes_raw_pixels(fine_tuned, name):
    where, results, predicted = fine_tuned
    r = results[name]
    assert r.returncode == 0, r.stderr[-2000:]
    m = read_metrics(where / name)
    assert m["model"] == name.lower() and m["status"] == "ok"
    losses = [float(line.split(",")[2]) for line in (where / name / "history.csv").read_text().splitlines()[1:]]
    assert losses[-1] < losses[0], losses  # random weights: the pipeline trains, nothing more is claimed
    summary = (where / name / "summary.txt").read_text()
    assert summary.count("Rescaling") == 2  # cnnrun's 1/255, then the family's own scaling: once each
    assert isinstance(predicted, dict), predicted[-2000:]  # plain Keras loaded every model.keras
    probs = predicted[name]
    assert abs(sum(probs) - 1) < 1e-4 and len(probs) == 2


def test_weights_from_a_file_are_the_weights_loaded(tmp_path):
    keras.utils.set_random_seed(3)
    saved = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3),
                                                include_preprocessing=False)
    saved.save_weights(tmp_path / "mine.weights.h5")
    keras.utils.set_random_seed(4)  # another draw: only loading can make them equal
    model = make_backbone((32, 32, 3), 2, name="MobileNetV3Small", weights=str(tmp_path / "mine.weights.h5"))
    base = model.get_layer("MobileNetV3Small")
    assert all(np.array_equal(a, b) for a, b in zip(base.get_weights(), saved.get_weights()))


def test_missing_imagenet_weights_name_the_cache_folder(tmp_path, monkeypatch):
    from keras.src.utils import file_utils

    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(file_utils, "get_file", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    with pytest.raises(CnnrunError, match=r"ImageNet weights are not in Keras' cache \(.*keras/models\)"):
        bb.application("MobileNetV3Small", (32, 32, 3), "imagenet")


def test_grayscale_is_repeated_and_a_small_side_is_refused_in_one_line():
    model = make_backbone((32, 32, 1), 3, name="MobileNetV3Small", weights=None)
    assert model.get_layer("to_rgb") and model.output_shape == (None, 3)
    with pytest.raises(CnnrunError, match=r"needs images of at least 75x75, but these are 28x28; resize them with "
                                          r"model.input_size=75"):
        make_backbone((28, 28, 1), 10, name="InceptionV3", weights=None)
    resized = make_backbone((28, 28, 1), 10, name="MobileNetV3Small", weights=None, input_size=32)
    assert resized.get_layer("resize").output.shape[1:3] == (32, 32)


def test_freezing_all_or_the_leading_layers():
    frozen = make_backbone((32, 32, 3), 2, name="MobileNetV3Small", weights=None, freeze="all")
    base = frozen.get_layer("MobileNetV3Small")
    assert not base.trainable_weights and frozen.get_layer("predictions").trainable_weights
    some = make_backbone((32, 32, 3), 2, name="MobileNetV3Small", weights=None, freeze=5)
    inner = some.get_layer("MobileNetV3Small")
    assert all(not layer.trainable for layer in inner.layers[:5]) and any(layer.trainable for layer in inner.layers[5:])


def test_a_name_keras_does_not_have_is_one_line():
    with pytest.raises(CnnrunError, match="model.name=ResNet9000 is not a keras.applications image classifier"):
        make_backbone((32, 32, 3), 2, name="ResNet9000", weights=None)


def test_two_stages_train_the_head_then_everything_and_resume_into_the_second(folder, tmp_path):
    args = [*FINE_TUNE, "model.name=MobileNetV3Small", "model.freeze=all", "model.unfreeze_after=1",
            "model.unfreeze_lr=0.0001", f"dataset.path={folder}", "trainer.epochs=2", "hydra.run.dir=run"]
    r = cli("train", *args, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "epoch 2 on: the whole backbone trains, at lr 0.0001" in r.stdout + r.stderr
    history = (tmp_path / "run" / "history.csv").read_text().splitlines()
    header = history[0].split(",")
    lrs = [float(row.split(",")[header.index("lr")]) for row in history[1:]]
    assert lrs[1] == pytest.approx(1e-4) and lrs[0] != lrs[1]


def test_a_network_ending_in_logits_trains_as_its_softmax_twin_and_saves_probabilities(tmp_path):
    (tmp_path / "torchy.py").write_text(
        "import keras\n\ndef build(input_shape, num_classes, softmax=False):\n    inputs = keras.Input(input_shape)\n"
        "    x = keras.layers.Flatten()(inputs)\n"
        "    out = keras.layers.Dense(num_classes, activation='softmax' if softmax else None)(x)\n"
        "    return keras.Model(inputs, out)\n")
    args = ["dataset=digits", "dataset.limit=200", "trainer.epochs=2", "trainer.verbose=0", "model=custom",
            "model._target_=torchy.build"]
    r = cli("train", *args, "hydra.run.dir=logits", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert cli("train", *args, "+model.softmax=true", "hydra.run.dir=softmax", cwd=tmp_path).returncode == 0
    m, twin = read_metrics(tmp_path / "logits"), read_metrics(tmp_path / "softmax")
    assert m["model"] == "build"  # named by its function
    assert m["test_accuracy"] == twin["test_accuracy"] and m["test_loss"] == pytest.approx(twin["test_loss"], rel=1e-4)
    model = keras.models.load_model(tmp_path / "logits" / "model.keras")
    probs = model.predict(np.zeros((3, 28, 28, 1), "uint8"), verbose=0)
    assert np.allclose(probs.sum(axis=1), 1, atol=1e-5) and (probs >= 0).all()


def test_a_users_model_that_rescales_again_is_named_in_a_warning(tmp_path):
    (tmp_path / "twice.py").write_text(
        "import keras\n\ndef build(input_shape, num_classes):\n    inputs = keras.Input(input_shape)\n"
        "    x = keras.layers.Rescaling(1 / 255)(inputs)\n    x = keras.layers.Flatten()(x)\n"
        "    return keras.Model(inputs, keras.layers.Dense(num_classes, activation='softmax')(x))\n")
    r = cli("train", "dataset=digits", "dataset.limit=100", "trainer.epochs=1", "trainer.verbose=0", "model=custom",
            "model._target_=twice.build", "hydra.run.dir=run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    said = [line for line in (r.stdout + r.stderr).splitlines() if "scales its input itself" in line]
    assert len(said) == 1 and "rescaling (Rescaling)" in said[0] and "model=backbone" in said[0]


def test_a_csv_dataset_is_named_by_its_manifest(tmp_path):
    from cnnrun.config import schema
    from tests.conftest import make_config

    cfg = make_config("dataset=csv", "dataset.path=data/labels.csv", "model=backbone", "model.name=efficientnetv2b0")
    assert schema.display_name("dataset", cfg.dataset) == "labels"
    assert schema.display_name("model", cfg.model) == "efficientnetv2b0"
    custom = make_config("model=custom", "model._target_=my_pkg.nets.tiny_resnet")
    assert schema.display_name("model", custom.model) == "tiny_resnet"
    named = make_config("model=custom", "model._target_=my_pkg.nets.tiny_resnet", "model.name=mine")
    assert schema.display_name("model", named.model) == "mine"


def test_a_kerashub_preset_folder_is_fine_tuned_with_its_own_converter(folder, tmp_path):
    """A preset folder written with save_to_preset (a tiny ResNet and its image converter, random weights): its
    weights are the ones trained from, its converter's scale and offset the input, and model.keras loads (KerasHub
    imported for it) and predicts."""
    keras_hub = pytest.importorskip("keras_hub")
    keras.utils.set_random_seed(5)
    net = keras_hub.models.ResNetBackbone(input_conv_filters=[64], input_conv_kernel_sizes=[3],
                                         stackwise_num_filters=[64, 64], stackwise_num_blocks=[1, 1],
                                         stackwise_num_strides=[1, 2], block_type="basic_block",
                                         image_shape=(None, None, 3))
    scale, offset = [1 / (255 * s) for s in bb.IMAGENET_RGB_STD], [-m / s for m, s in zip(bb.IMAGENET_RGB_MEAN,
                                                                                         bb.IMAGENET_RGB_STD)]
    converter = keras_hub.layers.ResNetImageConverter(image_size=(32, 32), scale=scale, offset=offset)
    preset = tmp_path / "tiny_resnet"
    net.save_to_preset(str(preset))
    converter.save_to_preset(str(preset))
    model = make_backbone((40, 40, 3), 2, preset=str(preset))
    assert model.name == "tiny_resnet" and model.get_layer("resize").output.shape[1:3] == (32, 32)
    inner = next(layer for layer in model.layers if isinstance(layer, keras_hub.models.Backbone))
    assert all(np.array_equal(a, b) for a, b in zip(inner.get_weights(), net.get_weights()))
    pixels = np.random.default_rng(1).integers(0, 256, (2, 32, 32, 3)).astype("float32")
    ours = keras.ops.convert_to_numpy(model.get_layer("preset_preprocess")(pixels / 255.0))
    assert np.allclose(ours, keras.ops.convert_to_numpy(converter(pixels)), atol=1e-4)  # its converter, once
    r = cli("train", *FINE_TUNE, f"model.preset={preset}", f"dataset.path={folder}", "trainer.epochs=1",
            "hydra.run.dir=run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_metrics(tmp_path / "run")["model"] == "tiny_resnet"
    picture = next((folder / "dark").glob("*.jpg"))
    r = run_cli("predict", tmp_path / "run", picture, process=True)  # a fresh process: KerasHub imported to load it
    assert r.returncode == 0, r.stderr[-1500:]
    assert (tmp_path / "run" / "predictions.csv").read_text().splitlines()[1].split(",")[1] in ("dark", "bright")
