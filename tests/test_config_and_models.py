"""Every config option composes, and every model is the article's exact stack (checked by parameter count)."""

import re
from pathlib import Path

import keras
import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf

from cnnrun import CnnrunError
from cnnrun.models import build_model
from cnnrun.config import checks, schema
from tests.conftest import make_config, refusal

CONF = Path(__file__).resolve().parents[1] / "conf"

# Parameters on 28x28x1 inputs with 10 classes, worked out by hand from the articles' layer stacks.
EXPECTED_PARAMS = {
    "dense": 784 * 128 + 128 + 128 * 10 + 10,
    "mnist_cnn": 320 + 18_496 + (12 * 12 * 64) * 128 + 128 + 1_290,
    "cnn3": 320 + 18_496 + 73_856 + (11 * 11 * 128) * 128 + 128 + 1_290,
    "cnn3pad": 320 + 18_496 + 73_856 + (13 * 13 * 128) * 128 + 128 + 1_290,
    "tf_cnn": 320 + 18_496 + 36_928 + 576 * 64 + 64 + 650,  # TensorFlow's tutorial prints 93,322
    "cnn4": 320 + 128 + 9_248 + 128 + 18_496 + 256 + 73_856 + 512 + 2048 * 512 + 512 + 2_048 + 65_664 + 512 + 1_290,
}


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize("group", ["dataset", "model", "optimizer", "augment", "trainer"])
def test_every_group_option_composes(cfg_factory, group):
    for option in options(group):
        required = {"folder": ["dataset.path=photos"], "csv": ["dataset.path=labels.csv"],  # what an option asks of you
                    "custom": [f"{group}._target_=" + ("cnnrun.models.dense" if group == "model" else
                                                       "cnnrun.data.load_digits_arrays")]}
        cfg = cfg_factory(f"{group}={option}", *required.get(option, []), tiny=False)
        checks.validate(cfg)
        if group == "augment":  # the option's own sub-node is set, the others stay None
            assert option == "none" or any(cfg.augment[k] is not None for k in cfg.augment), option
        else:
            node = OmegaConf.select(cfg, group)  # named as the option, or (a backbone) as the network it builds
            assert node.get("name", group) in (option, group, "cnn3") or schema.option_name(group, node) == option, option


def test_defaults_are_fashion_and_cnn4(cfg_factory):
    cfg = cfg_factory(tiny=False)
    assert (cfg.dataset.name, cfg.model.name, cfg.optimizer.name) == ("fashion", "cnn4", "adam")
    assert cfg.trainer.epochs >= 1 and cfg.trainer.val_split == 0.0 and cfg.dataset.limit is None


def test_several_augment_options_merge(cfg_factory):
    cfg = cfg_factory("augment=[flip,shift,erasing]")
    assert {k for k, v in cfg.augment.items() if v is not None} == {"flip", "shift", "erasing"}


@pytest.mark.parametrize("model", sorted(EXPECTED_PARAMS))
def test_model_stack_matches_article(cfg_factory, model):
    cfg = cfg_factory(f"model={model}")
    net = build_model(cfg.model, (28, 28, 1), 10)
    assert net.count_params() == EXPECTED_PARAMS[model]
    out = net(np.zeros((2, 28, 28, 1), "float32"))
    assert tuple(out.shape) == (2, 10)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(keras.ops.sum(out, axis=1)), 1.0, rtol=1e-5)


def test_cnn3_variants_change_the_stack(cfg_factory):
    base = build_model(cfg_factory("model=cnn3").model, (28, 28, 1), 10)
    names = lambda m: [layer.name for layer in m.layers]  # noqa: E731
    variants = {
        "model.extra_conv=true": lambda m: "conv4" in names(m) and m.get_layer("conv4").filters == 256,
        "model.dropout=false": lambda m: not any(isinstance(layer, keras.layers.Dropout) for layer in m.layers),
        "model.extra_dense=true": lambda m: "fc2" in names(m),
        "model.pad=2": lambda m: "pad" in names(m) and m.get_layer("pad").padding == ((2, 2), (2, 2)),
    }
    for override, holds in variants.items():
        net = build_model(cfg_factory("model=cnn3", override).model, (28, 28, 1), 10)
        assert holds(net), override
        assert not holds(base), override


@pytest.mark.parametrize(
    "override, culprit",
    [
        ("trainer.val_split=1.5", "trainer.val_split=1.5"),
        ("trainer.val_split=-0.1", "trainer.val_split=-0.1"),
        ("trainer.epochs=0", "trainer.epochs=0"),
        ("trainer.epochs=abc", "trainer.epochs=abc must be a whole number"),
        ("trainer.batch_size=2.5", "trainer.batch_size=2.5"),
        ("optimizer.lr=-1", "optimizer.lr=-1"),
        ("trainer.precision=fp8", "trainer.precision=fp8 is not one of float32"),
        ("+model.width=3", "model.width is not a setting"),
        ("augment=erasing augment.erasing.p=2", "augment.erasing.p=2"),
        ("trainer.seed=-1", "trainer.seed=-1"),
        ("model=cnn3 model.pad=-1", "model.pad=-1"),
        ("augment=rotate augment.rotate.degrees=abc", "augment.rotate.degrees=abc must be a number"),
        ("+trainer.epoch=1", "did you mean trainer.epochs?"),
        ("trainer.epoch=3", "did you mean trainer.epochs?"),
        ("+optimizer.momentum=0.9", "momentum belongs to optimizer=sgd"),
        ("model=resnet model.depth=21", "model.depth=21 must be 6n + 2"),
        ("optimizer.schedule=linear", "optimizer.schedule=linear is not one of constant, cosine, onecycle"),
        ("optimizer.weight_decay=-1", "optimizer.weight_decay=-1"),
        ("model=nope", "model=nope is not an option; expected one of backbone, cnn3,"),
        ("dataset=folder", "dataset=folder needs dataset.path"),
        ("trainer.tta=flip dataset=folder dataset.path=x dataset.cache=false", "trainer.tta=flip needs the test images"),
        ("augment=flip trainer.augment_after=1", "leaves no augmented epoch"),
        ("trainer.epochs=[1", "trainer.epochs=[1: "),
        ("model=dense,cnn3", "add -m"),
    ],
)
def test_bad_values_get_one_line_naming_the_culprit(override, culprit):
    assert culprit in refusal(*override.split())


def test_a_sweep_is_checked_whole_before_any_job_runs():
    message = refusal("model=dense,cnn3", "trainer.seed=0,-1", multirun=True)
    assert message.startswith("job 1 of 4 (") and "trainer.seed=-1" in message and "nothing was run" in message
    assert checks.check_jobs(["dataset=digits", "model=dense,cnn3", "trainer.seed=0,1"], multirun=True) == 4
    assert checks.check_jobs(["dataset=digits", "experiment=glob(article001_*)"], multirun=True) >= 9


def test_values_added_without_hydra_are_checked_too(cfg_factory):
    """A config made or edited in Python (not composed by Hydra) meets the same schema."""
    plain = OmegaConf.to_container(cfg_factory())
    plain["trainer"]["epoch"] = 3
    with pytest.raises(CnnrunError, match="trainer.epoch is not a setting .* did you mean trainer.epochs"):
        checks.validate(OmegaConf.create(plain))
    del plain["trainer"]["epoch"]
    plain["trainer"]["precision"] = "fp8"
    with pytest.raises(CnnrunError, match="trainer.precision=fp8 is not one of"):
        checks.validate(OmegaConf.create(plain))
    plain["trainer"]["precision"] = "float32"
    del plain["trainer"]["augment_after"], plain["debug"]  # as saved by a cnnrun that had no such keys
    typed = checks.validate(OmegaConf.create(plain))
    assert typed.trainer.augment_after == 0 and "smoke" not in typed.hooks  # defaults filled in


@pytest.mark.parametrize("preset", options("experiment"))
def test_every_experiment_preset_composes_and_checks(cfg_factory, preset):
    cfg = cfg_factory(f"experiment={preset}", tiny=False)
    if preset.startswith(("article002", "article004")):  # photo folders: the user names one
        assert "needs dataset.path" in refusal(f"experiment={preset}", tiny=False)
        cfg = cfg_factory(f"experiment={preset}", "dataset.path=photos", tiny=False)
    checks.validate(cfg)
    assert cfg.reference.source and (cfg.reference.accuracy is None or 0.5 < cfg.reference.accuracy < 1)
    assert preset.startswith(("article0", "fast_", "best_"))


def test_article001_presets_match_the_article(cfg_factory):
    cfg = cfg_factory("experiment=article001_cnn3pad_mirror", tiny=False)
    assert (cfg.model.name, cfg.model.pad, cfg.dataset.mirror, cfg.trainer.epochs, cfg.trainer.batch_size) == \
        ("cnn3", 2, True, 5, 32)
    assert cfg.reference.accuracy == 0.9336
    tiny = cfg_factory("experiment=article001_cnn3pad_mirror", "dataset=digits")  # the command line still wins
    assert tiny.dataset.name == "digits" and tiny.reference.accuracy == 0.9336


# What an option states on purpose, unlike its schema's default: the option's own facts. Every other value an
# option's YAML restates (with its comment) must equal the schema's, so the two can never drift apart.
OWN_FACTS = {("dataset/digits", "class_names"), ("dataset/fashion", "class_names"), ("dataset/mnist", "class_names"),
             ("model/cnn3pad", "pad"),
             ("augment/article000", "rotate.degrees"), ("augment/article000", "shift.width"),
             ("augment/article000", "shift.height"), ("augment/article000", "zoom.amount"),
             ("augment/article004", "erasing.area")}


def _restated():
    """(option, key, value in its YAML, the schema's default) for every schema key an option's YAML sets."""
    import dataclasses
    import typing

    import yaml

    def default(f):
        d = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "???")
        return getattr(d, "value", d)  # an enum's value

    found = []
    root = yaml.safe_load((CONF / "config.yaml").read_text())
    nested = {"augment": schema.Augment}  # a logger's values are stated once, in its YAML (its class has no defaults)
    sources = [("config", "output", root.get("output") or {}, schema.Output),
               ("config", "reference", root.get("reference") or {}, schema.Reference)]
    for group in ("model", "optimizer", "dataset", "trainer", "augment"):
        for path in sorted((CONF / group).glob("*.yaml")):
            data = yaml.safe_load(path.read_text()) or {}
            parents = [d for d in data.pop("defaults", []) if isinstance(d, str) and not d.startswith(("/", "_"))]
            option = f"{group}/{path.stem}"
            if group in nested:
                hints = typing.get_type_hints(nested[group])
                sources += [(option, key, sub, typing.get_args(hints[key])[0]) for key, sub in data.items()]
            elif group == "trainer":
                sources.append((option, "", data, schema.Trainer))
            else:
                name = data.get("name") or (parents[0] if parents else path.stem)
                sources.append((option, "", data, schema.SCHEMAS[group].get(schema.option_name(group, {**data, "name": name}))))
    for option, prefix, data, cls in sources:
        assert cls is not None, option
        for key, value in data.items():
            if key in cls.__dataclass_fields__:
                found.append((option, f"{prefix}.{key}".strip("."), value, default(cls.__dataclass_fields__[key])))
    return found


def test_the_registry_is_the_one_list_of_options():
    """schema.OPTIONS names each option of the model, dataset and optimizer groups once: each has its YAML
    (and no YAML lacks an entry), and the code each names is found as a user's own `_target_` is."""
    from cnnrun.config import plugins

    for group, registered in schema.OPTIONS.items():
        variants = {o for o in options(group) if o not in registered}  # e.g. cnn3pad: cnn3 with other values
        for variant in variants:
            assert re.search(rf"^  - ({'|'.join(registered)})\b", (CONF / group / f"{variant}.yaml").read_text(), re.M), \
                (group, variant, "a YAML option that is not registered must extend one that is")
        for name, option in registered.items():
            text = (CONF / group / f"{name}.yaml").read_text()
            assert f"/schema/{group}/{name}" in text or "_target_: ???" in text, (group, name)  # typed, or your own
            for target in (option.target, option.digest):
                assert target is None or callable(plugins.locate(target, f"{group}={name}")), (group, name, target)


def _ruled():
    """(key, field) of every field that carries a rule, in every schema."""
    import dataclasses

    roots = [(schema.Config, "")] + [(o.schema, g) for g, opts in schema.OPTIONS.items() for o in opts.values()]
    for cls, prefix in roots:
        for key, f in checks._fields(cls, prefix):
            if "ok" in f.metadata:
                yield key, f, (f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)


def test_each_rule_takes_its_default_and_its_example_and_refuses_in_one_line():
    from omegaconf import MISSING
    from omegaconf._utils import get_yaml_loader

    seen = 0
    for key, f, default in _ruled():
        ok, example = f.metadata["ok"], f.metadata["example"]
        assert default == MISSING or ok(default), (key, default)
        if example is not None:
            assert ok(yaml.load(example, Loader=get_yaml_loader())), (key, example)  # as OmegaConf reads it
        assert not (ok(-1.5) and ok("x y")), key  # every rule refuses something a typo could give
        seen += 1
    assert seen >= 60
    assert refusal("model=resnet", "model.depth=21") == ("model.depth=21 must be 6n + 2 with n >= 1: 8, 14, 20, 32 ..., "
                                                         "e.g. model.depth=20")
    assert refusal("trainer.ema=1") == "trainer.ema=1.0 must be null (off) or a decay in (0, 1), e.g. trainer.ema=0.999"


def test_a_feature_whose_extra_is_missing_names_the_pip_line(monkeypatch):
    import importlib.util

    from hydra.errors import MissingConfigException

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorboard" else real(name, *a))
    assert refusal("logger=tensorboard") == ("logger=tensorboard needs tensorboard, which is not installed: "
                                             "pip install 'cnnrun[tensorboard]'")
    missing = MissingConfigException("not found", missing_cfg_file="hydra/sweeper/optuna", options=["basic"])
    assert str(checks.composition_error(missing)) == ("hydra/sweeper=optuna needs its Hydra plugin, which is not "
                                                      "installed: pip install 'cnnrun[optuna]'")


def test_every_builtin_hook_is_a_class_its_yaml_names_with_each_argument_once():
    """cnnrun's own hooks attach as a user's do: a `_target_` and its arguments in a YAML; the class states the
    arguments' types and no defaults, so each value is stated once, in the YAML."""
    import inspect

    import yaml

    from cnnrun.config import plugins
    from cnnrun.hooks import Hook

    nodes = [("config", "hooks", k, v) for k, v in yaml.safe_load((CONF / "config.yaml").read_text())["hooks"].items()]
    for path in sorted((CONF / "logger").glob("*.yaml")) + sorted((CONF / "debug").glob("*.yaml")):
        data = yaml.safe_load(path.read_text()) or {}
        place = data if path.parent.name == "logger" else data.get("hooks") or {}
        nodes += [(path.stem, path.parent.name, k, v) for k, v in place.items()]
    assert {k for _, _, k, _ in nodes} == {"explain", "csv", "tensorboard", "mlflow", "overfit", "profile", "smoke"}
    for option, where, key, node in nodes:
        cls = plugins.locate(node["_target_"], key)
        assert issubclass(cls, Hook), (option, key)
        params = inspect.signature(cls).parameters.values()
        assert {p.name for p in params} == set(node) - {"_target_"}, (option, key)
        assert all(p.default is p.empty and p.annotation is not p.empty for p in params), (option, key)


def test_a_builders_arguments_are_its_schemas_keys_with_no_second_default():
    """Each built-in model's keys and their defaults are stated once, in its schema: its builder takes each key
    as a keyword without a default, so a default written there too cannot drift."""
    import dataclasses
    import inspect

    from cnnrun.config import plugins

    for name, option in schema.OPTIONS["model"].items():
        if option.target is None:
            continue  # model=custom: the user's own function
        params = inspect.signature(plugins.locate(option.target, "model.name")).parameters
        keys = {f.name for f in dataclasses.fields(option.schema)}  # name too: the option's, or a backbone's network
        takes = {p for p, v in params.items() if v.kind is v.KEYWORD_ONLY}
        extra = any(v.kind is v.VAR_KEYWORD for v in params.values())
        assert keys <= takes or extra and keys - takes <= {"unfreeze_after", "unfreeze_lr"}, (name, keys - takes)
        assert all(params[k].default is inspect.Parameter.empty for k in keys & takes), name


def test_an_options_name_is_stated_once_its_registry_key():
    """A built-in option's name is its key in schema.OPTIONS, which its YAML's file name matches: its schema has no
    name default (register() gives it), its YAML no `name:`, its builder no name of its own (it names the keras.Model
    what it is handed). A backbone's name is the network it tunes, its schema's one default."""
    import dataclasses

    from omegaconf import MISSING

    for group, options in schema.OPTIONS.items():
        files = {p.stem for p in (CONF / group).glob("*.yaml")}
        assert set(options) <= files, (group, set(options) - files)
        for name, option in options.items():
            default = next(f.default for f in dataclasses.fields(option.schema) if f.name == "name")
            # a backbone's default is the network it tunes; custom's types any node with a _target_, named or not
            assert (default is MISSING) == (name not in ("backbone", "custom")), (group, name)
            if name != "custom":  # model=custom has no schema while composing: its YAML says its keys
                assert "name" not in (yaml.safe_load((CONF / group / f"{name}.yaml").read_text()) or {}), name
            if group == "optimizer" or name in ("custom", "backbone", "vgg16"):
                continue
            cfg = make_config(f"{group}={name}")
            if group == "model":  # the keras.Model is called what the option is (resnet with its depth: resnet20)
                assert build_model(cfg.model, (28, 28, 1), 3).name.startswith(name), name
            else:
                assert cfg.dataset.name == name


def _another(f):
    """A valid value of schema field `f` other than its default."""
    from enum import Enum

    d = f.default
    if isinstance(d, bool):
        return not d
    if isinstance(d, Enum):
        return next(m.value for m in type(d) if m is not d)
    if d == "auto":
        return True
    if f.metadata.get("example") is not None:
        return yaml.safe_load(f.metadata["example"])
    return d + 1


def test_a_runs_identity_is_each_fields_flag():
    """What makes two configs the same run is stated once, as each schema field's `identity` flag: changing a trainer
    key changes the fingerprint exactly when its field says it is part of the identity, and a data set's location,
    feeding and bad-file policy never do (its data's digest is recorded beside)."""
    import dataclasses

    from cnnrun import record

    base = make_config(tiny=False)
    before = record.fingerprint(base)
    flags = {}
    for f in dataclasses.fields(schema.Trainer):
        changed = OmegaConf.merge(base, {"trainer": {f.name: _another(f)}})
        flags[f.name] = record.fingerprint(changed) != before
        assert flags[f.name] == bool(f.metadata.get("identity", True)), f.name
    assert not flags["epochs"] and not flags["verbose"] and flags["seed"] and flags["ema"]  # the flags as meant
    folder = make_config("dataset=folder", "dataset.path=/photos", tiny=False)
    for k, v in (("path", "/elsewhere"), ("cache", False), ("cache_max_mb", 1), ("bad_files", "error")):
        assert record.fingerprint(OmegaConf.merge(folder, {"dataset": {k: v}})) == record.fingerprint(folder), k
    assert record.fingerprint(OmegaConf.merge(folder, {"dataset": {"image_size": 64}})) != record.fingerprint(folder)


def test_a_users_own_model_node_without_a_name_is_called_by_its_function(tmp_path, monkeypatch):
    """A model YAML of the user's that names only its `_target_` is typed by the custom schema, whose name ("custom")
    makes the run show the function's name, as before names left the built-in schemas."""
    (tmp_path / "my_nets.py").write_text("import keras\n\ndef build(input_shape, num_classes):\n"
                                         "    i = keras.Input(input_shape)\n"
                                         "    return keras.Model(i, keras.layers.Dense(num_classes)(keras.layers.Flatten()(i)))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = make_config()
    cfg.model = OmegaConf.create({"_target_": "my_nets.build"})
    checked = checks.validate(cfg)
    assert checked.model.name == "custom" and schema.display_name("model", checked.model) == "build"
