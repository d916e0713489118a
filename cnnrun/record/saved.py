"""A finished run's model: found, checked against its record, and loaded in Keras' safe mode only."""

from __future__ import annotations

from pathlib import Path

from cnnrun import CnnrunError, record
from cnnrun.config.extras import pip
from cnnrun.record import layout


def finished_model(run_dir: Path, allow_unfinished: bool = False) -> tuple[Path, dict]:
    """(model.keras, metrics) of a run that ended ok; refuses any other run unless `allow_unfinished`."""
    model_file = run_dir / layout.MODEL
    metrics = record.read(run_dir)
    if metrics is None:
        raise CnnrunError(f"{run_dir} holds no run (no metrics.json, no model.keras); give the directory a run wrote")
    status = metrics.get("status")
    if status != "ok" and not allow_unfinished:
        why = f": {metrics['error']}" if metrics.get("error") else ""
        raise CnnrunError(f"{run_dir} did not end ok (status {status}{why}); its model is not a result. Finish it "
                          f"(cnnrun resume {run_dir}) or pass --allow-unfinished to use it anyway")
    if not model_file.is_file():
        raise CnnrunError(f"{run_dir} has no model.keras; give the directory of a finished run (output.save_model=true)")
    return model_file, metrics


LIBRARIES = {"keras_hub"}  # installed libraries a model.keras may name (cnnrun's extras), imported to load it


def load_model(model_file: Path, compile: bool = True, command: str = "predict"):
    """A run's model.keras, in Keras' safe mode only: a file that would run code on loading (a Lambda layer,
    a TFSMLayer, a crafted config) is refused in one line. cnnrun never loads with safe_mode=False."""
    import keras

    import cnnrun.backend  # noqa: F401 - registers cnnrun's layers: models saved before model.keras was portable
    import cnnrun.models.vgg  # noqa: F401 - and VGGPreprocess, for the same older models

    libraries = {name.partition(">")[0] for name in unregistered(model_file)} & LIBRARIES
    for library in sorted(libraries):  # a KerasHub backbone: the installed library registers its classes
        try:
            __import__(library)
        except ImportError:
            raise CnnrunError(f"{model_file} holds a {library} network; {pip('hub')} to load it") from None

    try:
        return keras.models.load_model(model_file, compile=compile, safe_mode=True)
    except Exception as e:  # noqa: BLE001 - zip, JSON, h5 and Keras' deserialisation each fail their own way
        text = " ".join(str(e).split())
        unknown = unregistered(model_file)
        if unknown:  # the user's own layers: they name the module that registers them, and it loads
            package = unknown[0].partition(">")[0] if ">" in unknown[0] else "my_pkg.layers"
            raise CnnrunError(f"{model_file} uses {', '.join(unknown[:3])}, your own code, which is not registered "
                              f"here; name the module that registers it: --import {package} (a dotted module or "
                              f"FILE.py), as in: cnnrun {command} RUN {'IMAGE ' if command == 'predict' else ''}"
                              f"--import {package}") from None
        if "safe_mode" in text or "lambda" in text.lower() or "unsafe" in text.lower():
            why = "it would run code when loaded (a Lambda layer or a crafted config), which cnnrun refuses"
        else:
            first = text[:200].rsplit(" ", 1)[0] + " ..." if len(text) > 200 else text
            why = f"it is not a Keras model cnnrun can read ({first or type(e).__name__})"
        raise CnnrunError(f"{model_file} cannot be loaded: {why}; use the model.keras of a run cnnrun made, "
                          "or retrain the run") from None


def unregistered(model_file: Path) -> list[str]:
    """The classes a model.keras names that are neither Keras' own nor registered in this process (read from its
    config.json as data: nothing of it runs), as `package>Name`; [] when it cannot be read."""
    import json
    import zipfile

    import keras

    try:
        with zipfile.ZipFile(model_file) as z:
            config = json.loads(z.read("config.json"))
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return []
    found: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            module, name = node.get("module"), node.get("registered_name") or node.get("class_name")
            if isinstance(name, str) and isinstance(module, str) and "class_name" in node and \
                    module.split(".")[0] != "keras" and not name.startswith("__") and \
                    keras.saving.get_registered_object(name) is None and name not in found:
                found.append(name)
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(config)
    return found


def saved_config(run_dir: Path) -> dict:
    """The run's composed config (.hydra/config.yaml) as plain data, read with a YAML parser that builds no
    objects; nothing it names is imported or called."""
    import yaml

    path = layout.config(Path(run_dir))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CnnrunError(f"{run_dir} has no {layout.HYDRA}/config.yaml to load its test set from") from None
    except (OSError, ValueError, yaml.YAMLError) as e:
        raise CnnrunError(f"{path} is unreadable ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(data, dict):
        raise CnnrunError(f"{path} holds no config")
    return data


def unreadable_test_set(run_dir: Path, loader: str | None = None) -> str | None:
    """Why the run's test set cannot be read again without running code the directory names (None: it can);
    CnnrunError for a --loader given to a run that had none. Reads the saved config only: no backend, no data."""
    if not layout.config(Path(run_dir)).is_file():
        return f"{run_dir} has no {layout.HYDRA}/config.yaml to load its test set from"
    saved = saved_config(run_dir)
    dataset, trainer = saved.get("dataset") or {}, saved.get("trainer") or {}
    if not isinstance(dataset, dict) or not isinstance(trainer, dict):
        return "its saved config holds no dataset settings"
    if "${" in str(dataset) or "${" in str(trainer):
        return "its saved dataset settings hold interpolations (${...}), which cnnrun does not resolve from a directory"
    target = dataset.get("_target_")
    if target is not None and loader is None:
        return (f"its test set came from your own loader (dataset._target_={target}), which cnnrun never runs "
                f"because a directory names it; name your loader yourself: --loader {target}")
    if target is None and loader is not None:
        raise CnnrunError(f"--loader {loader}: {run_dir} read the built-in dataset={dataset.get('name')}, not a "
                          "loader of your own; drop --loader")
    return None


def test_set(run_dir: Path, loader: str | None = None, limit: int | None = None):
    """The run's own test set, read again as its saved config describes it; (Dataset, None), or (None, why not).

    A run directory is data: it names code, it never gets it run. A test set that came from the user's own loader
    (`dataset._target_`) is read only through the loader the user names now (`loader`, from --loader), called with
    the saved config's other dataset keys; the built-in datasets are cnnrun's own code, read from their saved keys.
    The saved hooks, trackers and model are not looked at."""
    from omegaconf import OmegaConf

    from cnnrun.config import plugins, schema
    from cnnrun.config import checks
    from cnnrun.data import load_dataset

    why = unreadable_test_set(run_dir, loader)
    if why:
        return None, why
    saved = saved_config(run_dir)
    dataset = dict(saved.get("dataset") or {})
    trainer = {k: v for k, v in (saved.get("trainer") or {}).items() if k in ("seed", "val_split", "batch_size")}
    if loader is not None:
        dataset["_target_"] = loader
    if limit is not None:
        dataset["limit"] = limit
    cfg = checks.validate(OmegaConf.create({"dataset": dataset, "model": {"name": "dense"},
                                            "optimizer": {"name": "adam"}, "trainer": trainer}), user_code=False)
    if loader is not None:  # the user's own loader: checked as a run checks it
        own = {k for k in cfg.dataset if k not in schema.TARGETED["dataset"].__dataclass_fields__}
        plugins.check_arguments(loader, "--loader", own, "dataset")
    t = cfg.trainer
    return load_dataset(cfg.dataset, seed=t.seed, val_split=t.val_split, batch_size=t.batch_size), None


def class_names(metrics: dict, model) -> list[str]:
    """The run's class names, checked against the model's outputs (a record edited by hand, or another run's)."""
    units = int(model.output_shape[-1])
    names = metrics.get("class_names")
    if names is None:
        return [str(i) for i in range(units)]
    if not isinstance(names, list) or len(names) != units or len(set(map(str, names))) != len(names):
        shown = names if not isinstance(names, list) else f"{len(names)} names"
        raise CnnrunError(f"metrics.json's class_names ({str(shown)[:80]}) do not match the model's {units} distinct "
                          "outputs; the record does not belong to this model.keras: use the run directory as cnnrun wrote it")
    return [str(n) for n in names]
