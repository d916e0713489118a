"""A config checked before any work: against its schemas (types, unknown keys, each field's rule), the rules
between keys, the user's own code and every hook's arguments; each problem one line naming the key, the value,
what is expected and an example. Hydra's and OmegaConf's own errors are turned into such lines here too, and
`check_jobs` composes and checks every job of a command (a sweep's included) before the first one starts.
The types themselves, and which options each group has, are cnnrun/config/schema.py."""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from typing import Callable

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from cnnrun import CnnrunError
from cnnrun.config import plugins
from cnnrun.config.extras import pip
from cnnrun.config.families import FAMILIES
from cnnrun.config.schema import (HOOK_PLACES, SCHEMAS, TARGETED, Config, option_name,
                                  register_resolvers)


def _fields(cls, prefix: str):
    """(key, field) of a dataclass and, through its dataclass-typed fields, of everything below it."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        yield key, f
        kind = hints[f.name]
        kind = next((a for a in typing.get_args(kind) if a is not type(None)), kind)  # Optional[X] -> X
        if dataclasses.is_dataclass(kind):
            yield from _fields(kind, key)


def _rule(key: str):
    """The metadata of the field at `key` (dataset.limit, augment.mixup.p ...) in any schema, or None."""
    group = key.partition(".")[0]
    roots = [(s, group) for s in dict.fromkeys(SCHEMAS[group].values())] if group in SCHEMAS else [(Config, "")]
    for cls, prefix in roots:
        for k, f in _fields(cls, prefix):
            if k == key and "ok" in f.metadata:
                return f
    return None


def _example(key: str) -> str | None:
    f = _rule(key)
    if f is None:
        return None
    shown = f.metadata["example"]
    if shown is None:
        shown = plugins.shown(f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default)
    return f"{key}={shown}"


def _cross_rules(cfg) -> None:
    """Rules between keys."""
    t = cfg.trainer
    smoke = (cfg.get("debug") or {}).get("mode") == "smoke"  # then a missing folder is the job's failed row
    if OmegaConf.is_missing(cfg.dataset, "path") and not smoke:
        raise CnnrunError(missing_path(cfg.dataset.name))
    augmented = any(v is not None for v in (cfg.get("augment") or {}).values())
    if augmented and t.augment_after >= t.epochs:
        raise CnnrunError(f"trainer.augment_after={t.augment_after} leaves no augmented epoch in "
                          f"trainer.epochs={t.epochs}; raise trainer.epochs above {t.augment_after} or lower augment_after")
    if t.device_data and cfg.dataset.get("cache") is False:
        raise CnnrunError("trainer.device_data=true needs the images in memory but dataset.cache=false streams them; "
                          "set dataset.cache=auto or trainer.device_data=false")
    if (t.patience is not None or t.restore_best) and not t.val_split:
        what = f"trainer.patience={t.patience}" if t.patience is not None else "trainer.restore_best=true"
        raise CnnrunError(f"{what} watches {t.monitor} on the validation set, but trainer.val_split=0 holds none out; "
                          "set trainer.val_split=0.1 (or more)")
    mixing = [k for k in ("mixup", "cutmix") if (cfg.get("augment") or {}).get(k) is not None]
    if mixing and cfg.dataset.get("cache") is False:
        raise CnnrunError(f"augment={mixing[0]} mixes labels inside the train step, which needs the images in memory, "
                          "but dataset.cache=false streams them; set dataset.cache=auto")
    _distribute_rules(cfg.get("distribute"))
    if t.tta == "flip" and cfg.dataset.get("cache") is False:
        raise CnnrunError("trainer.tta=flip needs the test images in memory but dataset.cache=false streams them; "
                          "set dataset.cache=auto or trainer.tta=none")


def missing_path(name: str) -> str:
    """What a dataset given no dataset.path is told (before any work; under debug=smoke, as the job's failed row)."""
    if name == "csv":
        return ("dataset=csv needs dataset.path=labels.csv, the manifest: a header row with path and label columns, "
                "then a row per image")
    return f"dataset={name} needs dataset.path, the folder of images: e.g. dataset.path=photos (with photos/<class>/*.jpg)"


def _distribute_rules(d) -> None:
    if d is None:
        return
    given = {k: d.get(k) for k in ("coordinator", "num_processes", "process_id")}
    if d.name == "none":
        stray = [k for k, v in {**given, "devices": d.get("devices")}.items() if v is not None]
        if stray:
            raise CnnrunError(f"distribute.{stray[0]}={d.get(stray[0])} needs distribute=data_parallel; add it, "
                              f"or drop distribute.{stray[0]}")
        return
    if any(v is not None for v in given.values()) and any(v is None for v in given.values()):
        missing = [k for k, v in given.items() if v is None]
        raise CnnrunError(f"several processes need distribute.coordinator, num_processes and process_id together, "
                          f"but distribute.{missing[0]} is not set: give all three (e.g. distribute.coordinator="
                          "10.0.0.1:12321 distribute.num_processes=2 distribute.process_id=0), or none under Slurm")
    if given["process_id"] is not None and given["process_id"] >= given["num_processes"]:
        raise CnnrunError(f"distribute.process_id={given['process_id']} is not below distribute.num_processes="
                          f"{given['num_processes']}; processes are numbered 0 to {given['num_processes'] - 1}")


# --- turning composition errors into one line ---------------------------------------------------------

def _unknown_key(key: str, known: list[str]) -> CnnrunError:
    parent, _, leaf = key.rpartition(".")
    close = difflib.get_close_matches(leaf, known, n=1)
    hint = f"did you mean {parent + '.' if parent else ''}{close[0]}?" if close else "check the spelling"
    owners = [name for name, s in SCHEMAS.get(parent, {}).items() if leaf in s.__dataclass_fields__]
    if owners and not close:
        hint = f"{leaf} belongs to {' and '.join(f'{parent}={o}' for o in owners)}"
    where = f"{parent} takes {', '.join(known)}" if parent else f"the top-level keys are {', '.join(known)}"
    return CnnrunError(f"{key} is not a setting of this config ({where}); {hint}")


def _schema_for(group: str, node) -> type | None:
    if isinstance(node, DictConfig) and group in TARGETED and "_target_" in node.keys():
        return TARGETED[group]
    name = option_name(group, node) if isinstance(node, DictConfig) else None
    return SCHEMAS[group].get(name) if name is not None else None


def check_types(cfg: DictConfig) -> DictConfig:
    """The config against its schemas; returns it typed and complete (every key, defaults filled in).
    Catches keys added with `+key=value`, which Hydra lets through even on a typed node, and anything
    made without Hydra (OmegaConf.create in a script, a config saved by an older cnnrun)."""
    plain = OmegaConf.to_container(cfg, resolve=False)
    plain.pop("hydra", None)
    groups = {}
    for group in SCHEMAS:
        node = cfg.get(group)
        schema = _schema_for(group, node)
        if node is None or schema is None:
            kind = {s: n for n, s in SCHEMAS[group].items()}.get(OmegaConf.get_type(node)) if node is not None else None
            if kind == "backbone":  # model=backbone model.name=X: X is not one of keras.applications' classifiers
                close = difflib.get_close_matches(str(node.get("name")), list(FAMILIES), n=1, cutoff=0.5)
                raise CnnrunError(f"model.name={node.get('name')} is not a keras.applications image classifier cnnrun "
                                  f"knows; {'did you mean ' + close[0] + '? ' if close else ''}expected one of "
                                  f"{', '.join(sorted(FAMILIES))}, or model.preset=NAME_OR_FOLDER for KerasHub")
            hint = (f"; an option of your own that extends {group}={kind} keeps its name: {kind}" if kind else
                    f"; your own {group} names its code with {group}._target_" if group in TARGETED else "")
            raise CnnrunError(f"{group}.name={None if node is None else node.get('name')!r} is unknown; "
                              f"expected one of {', '.join(SCHEMAS[group])}, e.g. {group}={next(iter(SCHEMAS[group]))}"
                              + hint)
        data = plain.pop(group)
        if schema in TARGETED.values():  # the user's keys beyond the schema's are the target's own arguments
            extras = {k: v for k, v in data.items() if k not in schema.__dataclass_fields__}
            groups[group] = _merge_checked(OmegaConf.structured(schema), {k: v for k, v in data.items()
                                                                          if k not in extras}, group)
            with open_dict(groups[group]):
                for k, v in extras.items():
                    groups[group][k] = v
        else:
            groups[group] = _merge_checked(OmegaConf.structured(schema), data, group)
    typed = _merge_checked(OmegaConf.structured(Config), {k: v for k, v in plain.items() if k not in SCHEMAS}, "")
    for group, node in groups.items():
        typed[group] = node
    return typed


def _merge_checked(schema, data, prefix: str) -> DictConfig:
    try:
        return OmegaConf.merge(schema, data)
    except OmegaConfBaseException as e:
        raise one_line(e, schema, prefix) from None


def one_line(e: Exception, schema=None, prefix: str = "") -> CnnrunError:
    """An OmegaConf error as one line naming the key, the value and what is expected."""
    full_key = getattr(e, "full_key", None) or ""
    key = ".".join(k for k in (prefix, full_key) if k)
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    if schema is not None and key and re.search(r"Key '.*' not in|not in struct|Key '.*' is not in", msg):
        parent = full_key.rpartition(".")[0]
        node = OmegaConf.select(schema, parent) if parent else schema
        return _unknown_key(key, list(node.keys()) if isinstance(node, DictConfig) else [])
    m = re.search(r"Value '(.*?)' (?:of type '\w+' )?could not be converted to (\w+)", msg)
    if m and key:
        kind = {"Integer": "a whole number", "Float": "a number", "Boolean": "true or false",
                "String": "text"}.get(m.group(2), m.group(2))
        example = _example(key)
        return CnnrunError(f"{key}={m.group(1)} must be {kind}{f', e.g. {example}' if example else ''}")
    m = re.search(r"Value '(.*?)' is not a valid bool", msg)
    if m and key:
        return CnnrunError(f"{key}={m.group(1)} must be true or false, e.g. {key}=true")
    m = re.search(r"Invalid value '(.*?)', expected one of \[(.*?)\]", msg)
    if m and key:
        return CnnrunError(f"{key}={m.group(1)} is not one of {m.group(2)}; e.g. {key}={m.group(2).split(',')[0]}")
    return CnnrunError(f"{key + ': ' if key else ''}{msg}")


def _non_finite(node, prefix: str = ""):
    """(key, value) of the first NaN or infinity among the leaves of `node`, else None."""
    import math

    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        key = f"{prefix}.{k}" if prefix and isinstance(k, str) else f"{prefix}[{k}]" if prefix else str(k)
        if isinstance(v, float) and not math.isfinite(v):
            return key, v
        if isinstance(v, (dict, list)):
            found = _non_finite(v, key)
            if found:
                return found
    return None


def validate(cfg: DictConfig, user_code: bool = True) -> DictConfig:
    """Types, unknown keys, ranges and rules between keys: raises CnnrunError (one line) on the first
    problem; returns the config typed and complete (what a run then reads). With `user_code=False` (a config read
    from a run directory) the `_target_`s it names are typed but never imported."""
    try:
        return _validate(cfg, user_code)
    except OmegaConfBaseException as e:  # an interpolation that cannot resolve (${oc.env:UNSET}), and the like
        raise one_line(e) from None


def _validate(cfg: DictConfig, user_code: bool = True) -> DictConfig:
    cfg = check_types(cfg)
    found = _non_finite({k: v for k, v in OmegaConf.to_container(cfg, resolve=True).items() if k != "hydra"})
    if found:  # no setting takes NaN or an infinity: it would surface later as a NaN blamed on something else
        key, value = found
        raise CnnrunError(f"{key}={value} must be a finite number" + (f", e.g. {_example(key)}" if _example(key) else ""))
    if user_code:
        _targets(cfg)
    _check_rules(cfg, "")  # the user's own arguments have no field, so no rule: theirs to check
    _cross_rules(cfg)
    return cfg


def _targets(cfg) -> dict[str, set[str]]:
    """Checks each group that names the user's own code (`_target_`): it is given, it imports, it is callable,
    and it takes the arguments the config gives it. Returns, per such group, the keys that are its arguments."""
    own = {}
    for group, schema in TARGETED.items():
        node = cfg.get(group)
        if not isinstance(node, DictConfig) or "_target_" not in node.keys():
            continue
        key = f"{group}._target_"
        if OmegaConf.is_missing(node, "_target_"):
            example = "my_pkg.nets.build" if group == "model" else "my_pkg.data.load"
            raise CnnrunError(f"{group}={node.get('name')} needs {key}=FUNCTION, your own code: a dotted import path "
                              f"like {key}={example}, or FILE.py:FUNCTION")
        own[group] = {k for k in node if k not in schema.__dataclass_fields__}
        plugins.check_arguments(node._target_, key, own[group], group,
                                needs=[("input_shape",), ("num_classes", "classes")] if group == "model" else [])
    for place in HOOK_PLACES:  # every hook, cnnrun's (its YAML names the class) and the user's, checked alike
        for name, node in (cfg.get(place) or {}).items():
            if node is not None:
                _hook(f"{place}.{name}", node)
    return own


def _hook(at: str, node) -> None:
    """The hook at `at` (logger.mlflow, hooks.notify): a class that imports, takes the keys given with values of
    its arguments' types, and whose packages (its `requires`) are installed, before any work."""
    key = f"{at}._target_"
    if not isinstance(node, DictConfig) or "_target_" not in node.keys() or OmegaConf.is_missing(node, "_target_"):
        raise CnnrunError(f"{at} needs {key}=CLASS, a hook: a dotted import path like +{key}=my_pkg.hooks.Notify, "
                          "or FILE.py:CLASS")
    given = plugins.arguments(node, ("_target_",))
    plugins.check_arguments(node._target_, key, set(given), at)
    plugins.check_values(node._target_, key, given, at)
    needs = getattr(plugins.locate(node._target_, key), "requires", None)
    if needs:
        import importlib.util

        module, extra = needs
        if importlib.util.find_spec(module) is None:
            shown = f"{at.partition('.')[0]}={at.partition('.')[2]}" if at.startswith("logger.") else at
            raise CnnrunError(f"{shown} needs {module}, which is not installed: {pip(extra)}")


def _check_rules(node, prefix: str) -> None:
    """Each field's rule (its metadata), through the typed config; an absent or missing key is skipped."""
    kind = OmegaConf.get_type(node)
    if not dataclasses.is_dataclass(kind):
        return
    for f in dataclasses.fields(kind):
        if f.name not in node or OmegaConf.is_missing(node, f.name):
            continue
        key = f"{prefix}.{f.name}" if prefix else f.name
        value = node[f.name]
        if isinstance(value, DictConfig):
            _check_rules(value, key)
        if "ok" in f.metadata:
            plain = OmegaConf.to_container(value) if OmegaConf.is_config(value) else value
            if not f.metadata["ok"](plain):
                raise CnnrunError(f"{key}={plugins.shown(plain)} must be {f.metadata['expected']}, e.g. {_example(key)}")


def composition_error(e: Exception) -> CnnrunError:
    """Hydra's multi-line composition error as cnnrun's one line."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(e, MissingConfigException):
        missing = (e.missing_cfg_file or "").strip("/")
        group, _, option = missing.rpartition("/")
        extra = PLUGIN_EXTRAS.get((group, option))
        if extra:  # a Hydra plugin that comes with one of cnnrun's extras
            return CnnrunError(f"{group}={option} needs its Hydra plugin, which is not installed: "
                               f"{pip(extra)}")
        if e.options and group:
            return CnnrunError(f"{group}={option} is not an option; expected one of {', '.join(e.options)}, "
                               f"e.g. {group}={e.options[0]}")
    if isinstance(e, OverrideParseException):
        which = f"{e.override}: " if getattr(e, "override", None) else ""
        return CnnrunError(f"{which}{str(e).splitlines()[0]}; overrides are KEY=VALUE, e.g. trainer.epochs=5 "
                           "(quote values with spaces or commas)")
    source = re.match(r"In '(.+?)':", str(e))  # a preset's own key that the chosen options do not take
    prefix = f"{source.group(1)}.yaml sets " if source else ""
    cause = e
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__ or cause.__context__  # Hydra re-raises some without `from`
    if cause is not None:
        schema = getattr(cause, "object_type", None)
        node = OmegaConf.structured(schema) if schema is not None and hasattr(schema, "__dataclass_fields__") else None
        full_key = getattr(cause, "full_key", "") or ""
        if node is not None and re.search(r"Key '.*' not in|Key '.*' is not in", str(cause)):
            text = str(_unknown_key(full_key, list(node.keys())))
            return CnnrunError(prefix + text.replace(" is not a setting", ", which is not a setting", 1) if prefix else text)
        return CnnrunError(prefix + str(one_line(cause)))
    first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    m = re.search(r"Could not override '(.+?)'", str(e))
    if m:
        return CnnrunError(f"{m.group(1)} is not a setting of this config; check the spelling (cnnrun train --help "
                           "prints every key)")
    return CnnrunError(first)


# Options that exist once an extra is installed: Hydra's plugins bring their own config groups.
PLUGIN_EXTRAS = {("hydra/sweeper", "optuna"): "optuna", ("hydra/launcher", "joblib"): "joblib",
                 ("hydra/launcher", "submitit_slurm"): "slurm", ("hydra/launcher", "submitit_local"): "slurm",
                 ("hydra/launcher", "ray"): "ray"}


def _ends(override) -> list:
    """The values of a sweep override worth checking: each choice, or both ends of an interval or range."""
    from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, RangeSweep

    value = override.value()
    if isinstance(value, IntervalSweep):
        return [value.start, value.end]
    if isinstance(value, (ChoiceSweep, RangeSweep)):
        return [v for v in override.sweep_string_iterator()]
    return []


def _without_hydra(base: DictConfig) -> DictConfig:
    """The job config that compose() would return for the overrides `base` was composed with: `base` without its
    `hydra` node (what Hydra's compose does), so a single run is composed once here, not twice. `base` is read
    before the jobs are, and never after."""
    with open_dict(base):
        del base["hydra"]
    return base


def check_jobs(overrides: list[str], multirun: bool = False, config_dir: str | None = None,
               each: Callable[[DictConfig], None] | None = None, plan: list | None = None,
               mode: list | None = None) -> int:
    """Composes the config of every job that `cnnrun train [-m] OVERRIDES` would run and validates each,
    before any runs; returns the number of jobs. The first bad one raises CnnrunError, naming the job's
    overrides when it is one of a sweep. `config_dir` (--config-dir) adds the user's own options, found
    after cnnrun's as Hydra finds them. `each(cfg)`, when given, checks each validated job config further
    (the command line: that its data is there). `plan`, when given, gets each job's validated config in the order
    Hydra numbers the jobs (left empty for a sweeper that draws its jobs, Optuna's). `mode`, when given, gets the
    hydra.mode the config sets (None where it sets none), which Hydra would compose the config once more to read."""
    from hydra import compose, initialize_config_module
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    register_resolvers()
    overrides = list(overrides)
    if config_dir is not None:
        import os

        where = os.path.abspath(os.path.expanduser(config_dir))
        if not os.path.isdir(where):
            raise CnnrunError(f"--config-dir {config_dir} is not a folder; give the folder that holds your own "
                              "model/, dataset/ or experiment/ options")
        if not any(o.lstrip("+").startswith("hydra.searchpath=") for o in overrides):
            quoted = where.replace("\\", "\\\\").replace("'", "\\'")
            overrides.append(f"hydra.searchpath=['file://{quoted}']")  # where Hydra's --config-dir puts it too
    with initialize_config_module("cnnrun.conf", version_base="1.3"):
        try:
            parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
            parsed = parser.parse_overrides(list(overrides))
        except (HydraException, OmegaConfBaseException) as e:
            raise composition_error(e) from None
        sweeps = [o for o in parsed if o.is_sweep_override()]
        plain = [o.input_line for o in parsed if not o.is_sweep_override()]
        try:
            base = compose("config", overrides=plain, return_hydra_config=True)
        except (HydraException, OmegaConfBaseException) as e:
            raise composition_error(e) from None
        sweeper = str(OmegaConf.select(base, "hydra.sweeper._target_", default="") or "")
        searching = bool(sweeper) and not sweeper.endswith("BasicSweeper")  # Optuna & co: they optimise what jobs return
        if mode is not None:
            mode.append(OmegaConf.select(base, "hydra.mode", default=None))
        multirun = multirun or str(OmegaConf.select(base, "hydra.mode", default="")) == "RunMode.MULTIRUN"
        if sweeps and not multirun:
            raise CnnrunError(f"{sweeps[0].input_line} gives several values: add -m to run one job per value "
                              f"(cnnrun train -m {' '.join(overrides)})")
        if searching:  # a search space (interval, tag ...) is the sweeper's to draw from: each end of it is checked
            space = OmegaConf.select(base, "hydra.sweeper.params", default=None) or {}
            given = {o.get_key_element() for o in sweeps}
            try:  # the preset's own search space too, unless the command line replaced a key of it
                sweeps += [o for o in parser.parse_overrides([f"{k}={v}" for k, v in space.items() if k not in given])
                           if o.is_sweep_override()]
            except (HydraException, OmegaConfBaseException) as e:
                raise composition_error(e) from None
            jobs = [plain] + [[*plain, f"{o.get_key_element()}={v}"] for o in sweeps for v in _ends(o)]
        elif sweeps:
            try:
                jobs = BasicSweeper.split_arguments(parsed, None)[0]
            except HydraException:  # interval(...): a space to search, not values to list
                raise CnnrunError(f"{sweeps[0].input_line} is a search space; a plain sweep (-m) takes values "
                                  "(a,b or range(...) or choice(...)), a search draws from it: add "
                                  "hparams_search=optuna_fashion or hydra/sweeper=optuna") from None
            if not jobs:
                raise CnnrunError(f"{' '.join(o.input_line for o in sweeps)} gives no value to run; list at least "
                                  "one, e.g. model=cnn3,cnn4")
        else:
            jobs = [list(overrides)]
        for i, job in enumerate(jobs):
            try:
                try:
                    cfg = _without_hydra(base) if job == plain else compose("config", overrides=job)
                except (HydraException, OmegaConfBaseException) as e:
                    raise composition_error(e) from None
                cfg = validate(cfg)
                if each is not None:
                    each(cfg)
                if plan is not None and not searching:
                    plan.append(cfg)
                if searching and not cfg.trainer.val_split:
                    raise CnnrunError(f"{sweeper.rpartition('.')[2]} optimises what each job returns, its validation "
                                      "accuracy, but trainer.val_split=0 holds no validation set out (tuning on the "
                                      "test set would overrate the result); set trainer.val_split=0.1")
            except CnnrunError as e:
                if not multirun:
                    raise
                shown = " ".join(o for o in job if not o.lstrip("+~").startswith("hydra")) or "defaults"
                which = f"job {i} of {len(jobs)}" if not searching else "the search"
                raise CnnrunError(f"{which} ({shown}): {e}; nothing was run") from None
    return len(jobs)
