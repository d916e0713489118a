"""The commands, a module each: train, resume, sweeps (compare), reproduce, predict, export, explain, the demo.

What every command that reads a run directory shares: the way a user names their own code. A run directory
is data; it names code but never gets it run. The user names it on the command line instead, once per
command, and the same flag works in predict, export, explain and resume:

    --import my_pkg.layers   a module (or FILE.py) that registers the model's own layers with Keras
    --loader my_pkg.data.load  the loader that made the run's test set (export and explain reload it)
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os

log = logging.getLogger("cnnrun")


def add_user_code(parser: argparse.ArgumentParser, loader: bool = False) -> None:
    """The flags by which the user names their own code (see the module's docstring)."""
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="a module of yours (my_pkg.layers, or FILE.py) to import first: it registers the "
                             "model's own layers with Keras; repeat for several")
    if loader:
        parser.add_argument("--loader", default=None, metavar="FUNCTION",
                            help="your own data loader (my_pkg.data.load or FILE.py:load) to read the run's test set "
                                 "with, where the run used one; a run directory never gets its code run")


def import_user_code(ns: argparse.Namespace) -> None:
    """Imports what --import names (before any model.keras is loaded); one line for any that fails."""
    from cnnrun.config.plugins import import_named

    import_named(getattr(ns, "imports", None) or [])


# --- the backend's environment, set before Keras is imported (train, resume, predict, explain, export) ---

def quiet_backends() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's C++ start-up chatter
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
    jax_compilation_cache()


def jax_compilation_cache() -> None:
    """JAX compiles every train step, and every eager op of a new shape (each layer's initializer), afresh in
    each process; its persistent cache keeps the programs between processes, so the next run of a model, a
    sweep's next job, a resumed run and every process of a distributed run skip them (a second tiny ResNet
    run on CPU: 31 s -> 13 s). Set here, as environment variables, because JAX reads them when it first
    compiles, which Keras' import already does. The cache is ~/.cache/cnnrun/jax (under $XDG_CACHE_HOME when
    set), kept to 1 GiB, least recently used out first (JAX needs `filelock` for that: cnnrun[jax] has it).
    JAX_COMPILATION_CACHE_DIR, when set, is the user's own choice; CNNRUN_JAX_CACHE=0 turns the cache off.
    TensorFlow ignores all of it."""
    if "JAX_COMPILATION_CACHE_DIR" in os.environ or \
            os.environ.get("CNNRUN_JAX_CACHE", "").strip().lower() in ("0", "false", "off", "no"):
        return
    home = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    where = os.path.join(home, "cnnrun", "jax")
    try:
        os.makedirs(where, exist_ok=True)
    except OSError:
        return  # a read-only home: compile as before
    if os.access(where, os.W_OK):
        os.environ["JAX_COMPILATION_CACHE_DIR"] = where
        _say_once_about_broken_entries(where)
        os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # many small compiles add up
        if importlib.util.find_spec("filelock") is not None:  # JAX needs it to keep the cache to a size
            os.environ.setdefault("JAX_COMPILATION_CACHE_MAX_SIZE", str(1 << 30))


def _say_once_about_broken_entries(where: str) -> None:
    """JAX warns once per unreadable cache entry (a cut write, another JAX version), on every run that meets
    them: one line says it instead, once a process, with how to clear the cache; JAX recompiles them either way."""
    import warnings

    shown = warnings.showwarning
    said = []

    def show(message, category, filename, lineno, file=None, line=None):
        if str(message).startswith("Error reading persistent compilation cache entry"):
            if not said:
                said.append(True)
                log.warning("JAX's compilation cache in %s holds entries it cannot read (compiled again instead); "
                            "clear it with: rm -rf %s", where, where)
            return
        shown(message, category, filename, lineno, file, line)

    warnings.showwarning = show


