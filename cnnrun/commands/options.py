"""`cnnrun options [GROUP[=NAME]]`: what can be set, and what each key does. Every fact is read from where it
is stated once: an option's values from its YAML composed over its schema (conf/, cnnrun/config/schema.py), each
key's help from its schema's docstring (`Attributes:`), or, for a hook such as a tracker, from its class's
(`Args:`). Nothing here imports Keras.

    cnnrun options                  the groups, and the keys outside them
    cnnrun options model            the options of a group, a line each
    cnnrun options model=cnn4       every key of one option: KEY=VALUE as it is set, then what it does
    cnnrun options trainer          the keys of a group with one option (trainer, output, reference)
"""

from __future__ import annotations

import argparse
import inspect
import re
import shutil
import textwrap
import typing
from importlib import resources

from cnnrun import CnnrunError
from cnnrun.record.outcome import EXIT_CONFIG

GROUPS = ("dataset", "model", "optimizer", "augment", "trainer", "logger", "debug", "distribute")
SECTIONS = ("output", "reference")  # keys of the root config, outside any group


def help_of(cls) -> dict[str, str]:
    """{key: help} from the `Attributes:` or `Args:` sections of `cls`'s docstrings, its own before its bases'."""
    found: dict[str, str] = {}
    for klass in getattr(cls, "__mro__", (cls,)):
        doc = inspect.cleandoc(klass.__dict__.get("__doc__") or "")
        for section in re.findall(r"^(?:Attributes|Args):\n((?:(?: {4}.*)?\n?)+)", doc, re.M):
            for key, text in re.findall(r"^ {4}(\w+): (.*(?:\n {8}.*)*)", section, re.M):
                found.setdefault(key, " ".join(text.split()))
    return found


def options(group: str) -> dict[str, str]:
    """{option: its YAML's first comment line} for a config group, from cnnrun's conf/."""
    folder = resources.files("cnnrun.conf") / group
    out = {}
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            head = []  # the YAML's opening comment, up to its first example command
            for line in entry.read_text().splitlines():
                if not line.startswith("#") or line.startswith("#  ") or "@package" in line:
                    if head or not line.startswith("#"):
                        break
                    continue
                head.append(line[1:].strip())
            text = " ".join(head)
            out[entry.name[:-5]] = re.split(r"(?<=\.)(?<!al\.)\s(?=[A-Z])", text, maxsplit=1)[0]  # "et al." goes on
    return out


def _composed(overrides: list[str]):
    from hydra import compose, initialize_config_module

    from cnnrun.config.schema import register_resolvers

    register_resolvers()
    with initialize_config_module("cnnrun.conf", version_base="1.3"):
        return compose("config", overrides=overrides)


def _shown(value) -> str:
    """A key's value as an override writes it (KEY=VALUE can be copied onto the command line)."""
    from omegaconf import OmegaConf

    from cnnrun.config.plugins import shown

    if OmegaConf.is_config(value):
        value = OmegaConf.to_container(value, resolve=False)
    return shown(getattr(value, "value", value))  # an enum: its value


def keys(group: str, name: str | None) -> tuple[str, list[tuple[str, str, str]]]:
    """(what the option is, [(KEY, VALUE, help)]) of `group=name` (a section or a one-option group: name None)."""
    from omegaconf import OmegaConf

    from cnnrun.config import checks, plugins, schema

    if group in SECTIONS:
        cfg, about = _composed([]), ""
        nodes = [(group, cfg[group], getattr(schema, group.capitalize()))]
    else:
        cfg = _composed([f"{group}={name}"] if name else [])
        about = options(group).get(name or "default", "")
        node = cfg[group]
        if group == "augment":  # each augmentation the option turns on is a node of its own
            hints = typing.get_type_hints(schema.Augment)
            nodes = [(f"augment.{k}", v, typing.get_args(hints[k])[0]) for k, v in node.items() if v is not None]
        elif group in ("logger",):  # hooks: their class says what each argument does
            nodes = [(f"logger.{k}", v, plugins.locate(v._target_, f"logger.{k}._target_")) for k, v in node.items()]
        elif group == "debug":
            nodes = [(f"hooks.{k}", v, plugins.locate(v._target_, f"hooks.{k}._target_")) for k, v in cfg.hooks.items()
                     if k != "explain"]
            nodes.insert(0, ("debug", node, schema.Debug))
        elif group in schema.SCHEMAS:
            nodes = [(group, node, checks._schema_for(group, node))]
        else:
            nodes = [(group, node, OmegaConf.get_type(node))]
    rows = []
    for prefix, node, cls in nodes:
        said = help_of(cls) if cls is not None else {}
        for key in node.keys():
            if key in ("_target_",) and prefix.startswith(("logger.", "hooks.")):
                continue
            value = "???" if OmegaConf.is_missing(node, key) else _shown(node[key])
            rows.append((f"{prefix}.{key}", value, said.get(key, "")))
    return about, rows


def options_main(args: list[str]) -> None:
    try:
        _options(args)
    except BrokenPipeError:  # `cnnrun options model | head`: the reader has what it wanted
        import os
        import sys

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


def _options(args: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="cnnrun options", description="What can be set, and what each key does.")
    parser.add_argument("what", nargs="?", default=None, metavar="GROUP[=NAME]",
                        help="a config group (model), one of its options (model=cnn4), or output / reference")
    ns = parser.parse_args(args)
    width = min(100, shutil.get_terminal_size((80, 24)).columns)
    wrap = lambda text, indent, more=0: textwrap.fill(text, width, initial_indent=indent,  # noqa: E731
                                                      subsequent_indent=indent + " " * more)
    if ns.what is None:
        print("config groups (cnnrun options GROUP lists its options; GROUP=NAME their keys):")
        for group in GROUPS:
            print(wrap(f"{group}: {', '.join(options(group))}", "  ", 4))
        print(wrap("keys outside the groups: " + ", ".join(SECTIONS) + " (cnnrun options output); experiment= picks a "
                   "preset (cnnrun options experiment); hooks.NAME attaches code of your own", ""))
        return
    group, _, name = ns.what.partition("=")
    known = (*GROUPS, *SECTIONS, "experiment", "hparams_search")
    if group not in known:
        parser.error(f"{group!r} is not a config group; expected one of {', '.join(known)}, e.g. cnnrun options model")
    listed = {} if group in SECTIONS else options(group)
    if name and name not in listed:
        parser.error(f"{group}={name} is not an option; expected one of {', '.join(listed)}")
    if not name and len(listed) != 1 and group not in SECTIONS:
        print(f"{group} (conf/{group}/NAME.yaml says what each sets):" if group in ("experiment", "hparams_search")
              else f"{group} (cnnrun options {group}=NAME lists an option's keys):")
        for option, first in listed.items():
            print(wrap(f"{option}: {first}", "  ", 4))
        return
    if group in ("experiment", "hparams_search"):
        parser.error(f"cnnrun options {group}={name}: a preset sets keys of several groups; its YAML says which "
                     f"(conf/{group}/{name}.yaml), and cnnrun train {group}={name} --cfg job shows the whole config")
    try:
        about, rows = keys(group, name or next(iter(listed), None))
    except CnnrunError as e:
        parser.exit(EXIT_CONFIG, f"cnnrun options: error: {e}\n")
    print(wrap(f"{ns.what}{': ' + about if about else ''}", "", 4))
    for key, value, said in rows:
        print(f"  {key}={value}")
        if said:
            print(wrap(said, "      "))
