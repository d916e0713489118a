"""A user's own code, named in the config by `_target_`: what it is, whether it can be called, and what it is.

A target is either a dotted import path (`my_pkg.nets.build`, found from the working directory too, as
`python -m` would) or a file and a name in it (`nets.py:build`, a path relative to the working directory).
Every problem is one line that names the key, the value and what is needed, raised before any work.
A target's identity is its name and a digest of the source file that defines it, so an edited function
is never taken for the run it made before.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path

from cnnrun import CnnrunError

_located: dict[str, object] = {}


def _import_file(key: str, path: str):
    file = Path(path).expanduser()
    if not file.is_file():
        raise CnnrunError(f"{key}={path}: there is no file {file.resolve()}; give FILE.py:FUNCTION with a path "
                          "relative to the working directory, or a dotted import path like my_pkg.nets.build")
    resolved = file.resolve()
    name = f"cnnrun_user_{resolved.stem}_{hashlib.sha256(str(resolved).encode()).hexdigest()[:8]}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:
        raise CnnrunError(f"{key}: {file} is not a Python file; give FILE.py:FUNCTION")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # before it runs: dataclasses and pickling look their module up there
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's file: any error it raises is reported in one line
        del sys.modules[name]
        raise CnnrunError(f"{key}: importing {file} failed ({why(e)}); fix that file") from None
    return module


def import_named(names, flag: str = "--import") -> list[str]:
    """Imports the modules the user names on a command line (`--import my_pkg.layers`, or `layers.py`), so that
    what they register (Keras layers and models of their own, with @keras.saving.register_keras_serializable)
    is known before a run's model.keras is loaded. Returns the names imported; one line for any that fails."""
    done = []
    for name in names or []:
        if name.endswith(".py") or os.sep in name or "/" in name:
            _import_file(f"{flag} {name}", name)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.append(os.getcwd())
            try:
                importlib.import_module(name)
            except ModuleNotFoundError as e:
                where = f"no module {e.name!r} on the path (working directory {os.getcwd()})"
                raise CnnrunError(f"{flag} {name}: {where}; give a dotted module like my_pkg.layers, or FILE.py") from None
            except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's module raised while importing
                raise CnnrunError(f"{flag} {name}: importing it failed ({why(e)}); fix that module") from None
        done.append(name)
    return done


def why(e: BaseException) -> str:
    if isinstance(e, SystemExit):  # sys.exit() in the user's code ends their function, not cnnrun
        return f"SystemExit: sys.exit({e.code!r}) was called"
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def locate(target, key: str):
    """The callable `target` names (see the module's docstring); `key` (e.g. model._target_) is named in errors."""
    if not isinstance(target, str) or not target.strip():
        raise CnnrunError(f"{key}={target!r} must name a function: a dotted import path like my_pkg.nets.build or "
                          "FILE.py:FUNCTION")
    if target in _located:
        return _located[target]
    if ":" in target:
        path, _, attr = target.rpartition(":")
        owner, parts = _import_file(key, path), attr.split(".")
    else:
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.append(os.getcwd())  # the user's package beside them, as `python -m` finds it
        parts = target.split(".")
        owner, parts = _import_longest(key, target, parts)
    obj = owner
    for i, part in enumerate(parts):
        if not part or not hasattr(obj, part):
            where = getattr(owner, "__file__", None) or getattr(owner, "__name__", "")
            raise CnnrunError(f"{key}={target}: {'.'.join(parts[:i + 1]) or '(empty)'} is not defined in {where}; "
                              "check the name")
        obj = getattr(obj, part)
    if not callable(obj):
        raise CnnrunError(f"{key}={target} is {_a(type(obj).__name__)}, not something to call; name a function "
                          "(or a class) that builds it")
    _located[target] = obj
    return obj


def _import_longest(key: str, target: str, parts: list[str]):
    """The longest importable module prefix of `parts`, and the attribute names after it."""
    for cut in range(len(parts) - 1, 0, -1):
        name = ".".join(parts[:cut])
        try:
            return importlib.import_module(name), parts[cut:]
        except ModuleNotFoundError as e:
            if e.name and not (name == e.name or name.startswith(e.name + ".")):  # it exists, a dependency does not
                raise CnnrunError(f"{key}={target}: importing {name} needs {e.name}, which is not installed "
                                  f"(pip install {e.name.split('.')[0]})") from None
        except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's module raised while importing
            raise CnnrunError(f"{key}={target}: importing {name} failed ({why(e)}); fix that module") from None
    raise CnnrunError(f"{key}={target} cannot be imported: no module {parts[0]!r} on the path (working directory "
                      f"{os.getcwd()}); give a dotted path to a function like my_pkg.nets.build, or FILE.py:FUNCTION")


def source_digest(target: str, key: str) -> str:
    """A short hash of the target's name and of the source file that defines it (its name only where it has
    none, e.g. a compiled library's function)."""
    obj = locate(target, key)
    h = hashlib.sha256(target.encode())
    try:
        file = inspect.getsourcefile(inspect.unwrap(obj)) or inspect.getfile(obj)
        h.update(Path(file).read_bytes())
    except (TypeError, OSError):
        pass
    return h.hexdigest()[:16]


def call(target: str, key: str, what: str, *args, **kwargs):
    """Calls the target; whatever it raises becomes one line naming it."""
    fn = locate(target, key)
    try:
        return fn(*args, **kwargs)
    except CnnrunError:
        raise
    except (Exception, SystemExit) as e:  # noqa: BLE001 - the user's function: its error is reported, not re-raised as ours
        raise CnnrunError(f"{key}={target} raised {why(e)} while {what}; fix the function or its arguments") from None


def accepts(target: str, key: str) -> set[str] | None:
    """The keyword arguments the target takes (None: any, it has **kwargs or no signature to read)."""
    fn = locate(target, key)
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def arguments(node, owned) -> dict:
    """The keyword arguments a target gets from its config node: every key but those cnnrun owns (`owned`)."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else dict(node)
    return {k: v for k, v in plain.items() if k not in owned}


def check_arguments(target: str, key: str, given, group: str, needs=()) -> None:
    """Refuses a target that lacks an argument cnnrun passes (`needs`: alternatives per argument) or one that the
    config gives it (`given`, the keys of `group`)."""
    takes = accepts(target, key)
    if takes is None:
        return
    for names in needs:
        if not set(names) & takes:
            wanted = ", ".join(" or ".join(n) for n in needs)
            raise CnnrunError(f"{key}={target} takes ({', '.join(sorted(takes)) or 'nothing'}) but cnnrun calls it "
                              f"with {wanted}; give the function those arguments")
    unknown = sorted(set(given) - takes)
    if unknown:
        passed = {n for names in needs for n in names}
        rest = sorted(takes - passed)
        raise CnnrunError(f"{group}.{unknown[0]} is not an argument of {target} (it takes "
                          f"{', '.join(rest) or 'no other'}); drop it or add it to the function")


def check_values(target: str, key: str, given: dict, prefix: str) -> None:
    """Each value the config gives a target against the annotation of its argument: `bool`, `int`, `float`,
    `str`, `X | None`, and `Annotated[X, (ok, expected)]` for a rule a type cannot say. A wrong one is a line
    "PREFIX.NAME=VALUE must be EXPECTED" before any work. An argument without such an annotation is the
    target's own to check."""
    import typing

    fn = locate(target, key)
    try:
        hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn, include_extras=True)
    except Exception:  # noqa: BLE001 - annotations this cannot read (a forward reference, a C function): unchecked
        return
    for name, value in given.items():
        kind, rules = hints.get(name), []
        if typing.get_origin(kind) is typing.Annotated:
            kind, *rules = typing.get_args(kind)
        kinds = [k for k in (typing.get_args(kind) or (kind,)) if k is not None]
        if value is None and type(None) in kinds:
            continue
        simple = {bool: "true or false", int: "a whole number", float: "a number", str: "text"}
        plain = [k for k in kinds if k in simple]
        if plain and not any(_is(value, k) for k in plain):
            raise CnnrunError(f"{prefix}.{name}={shown(value)} must be {' or '.join(simple[k] for k in plain)}"
                              + (" or null" if type(None) in kinds else ""))
        for ok, expected in (r for r in rules if isinstance(r, tuple) and len(r) == 2):
            if not ok(value):
                raise CnnrunError(f"{prefix}.{name}={shown(value)} must be {expected}")


def _is(value, kind) -> bool:
    if kind is bool:
        return isinstance(value, bool)
    if kind in (float, str):  # a number where text is expected is text to OmegaConf too (experiment=2024)
        return isinstance(value, (int, float, kind)) and not isinstance(value, bool)
    return isinstance(value, kind) and not isinstance(value, bool)


def shown(value) -> str:
    """A value as KEY=VALUE writes it on the command line: true, null, 'two words', [0.1,0.2]."""
    if isinstance(value, bool) or value is None:
        return {True: "true", False: "false", None: "null"}[value]
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(shown(v) for v in value) + "]"
    if isinstance(value, str) and (not value or any(c in value for c in " ,[]{}'=")):
        return f"'{value}'"
    return str(value)


def _a(noun: str) -> str:
    return f"{'an' if noun[:1].lower() in 'aeiou' else 'a'} {noun}"
