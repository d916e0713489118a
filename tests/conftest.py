"""Shared fixtures: real configs composed with Hydra's compose API, shrunk to tiny sizes."""

import gzip
import json
import os
import struct
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402

from cnnrun.commands import jax_compilation_cache  # noqa: E402
from cnnrun.config.schema import register_resolvers  # noqa: E402

jax_compilation_cache()  # in-process runs share compiled programs as the CLI's do (before Keras imports JAX)

ROOT = Path(__file__).resolve().parents[1]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# Small and fast, but every real code path: sklearn's digits, one epoch, a few hundred images. Without the plots (0.7 s
# of a tiny run's 2 s): the tests of the plots, the README's first run and the smoke sweep draw and check them.
TINY = ["dataset=digits", "trainer.epochs=1", "trainer.batch_size=64", "trainer.verbose=0", "dataset.limit=300",
        "output.plots=false"]


def make_config(*overrides, tiny=True, hydra=False):
    register_resolvers()
    with initialize_config_module("cnnrun.conf", version_base="1.3"):
        return compose("config", overrides=[*(TINY if tiny else []), *overrides], return_hydra_config=hydra)


def refusal(*overrides, tiny=True, multirun=False) -> str:
    """The one-line message `cnnrun train OVERRIDES` refuses with before any work (fails if it is accepted)."""
    from cnnrun import CnnrunError
    from cnnrun.config import checks

    with pytest.raises(CnnrunError) as err:
        checks.check_jobs([*(TINY if tiny else []), *overrides], multirun)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.fixture
def cfg_factory():
    return make_config


def run_cli(*args, cwd=None, env=None, timeout=300, process=False):
    """Runs `cnnrun ARGS` as a user does. In this process (cli) unless the test needs a process of its own: an
    environment of its own (`env`: the backend, XLA's devices, import timing) or `process=True` (signals, locks held
    by another process, what the process prints below Python)."""
    if env is None and not process and not _needs_tensorflow(args):
        return cli(*args, cwd=cwd)
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "cnnrun", *map(str, args)], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def _needs_tensorflow(args) -> bool:
    """`cnnrun export` starts TensorFlow, whose converters it uses, in a process of its own: in this process, where
    Keras may already run on JAX (the JAX suite), it cannot; it runs as its own process there, as a user's does."""
    if not args or str(args[0]) != "export" or "keras" not in sys.modules:
        return False
    return sys.modules["keras"].backend.backend() != "tensorflow"


@dataclass
class Ran:
    """What a command did: its exit code and what it printed (as subprocess.CompletedProcess has them)."""
    returncode: int
    stdout: str
    stderr: str


def cli(*args, cwd=None) -> Ran:
    """Runs `cnnrun ARGS` in this process (cnnrun.cli.main, as the console script calls it): seconds faster than a
    process, for every test of a message, an exit code or a command's files. What a process would start afresh is
    put back afterwards: the working directory, the environment, signal handlers, logging, the user's modules.
    `export` on another backend than TensorFlow runs as a process (run_cli), as it would for a user."""
    if _needs_tensorflow(args):
        return run_cli(*args, cwd=cwd, process=True)
    import contextlib
    import io
    import logging
    import signal

    from hydra.core.global_hydra import GlobalHydra

    from cnnrun import cli as command
    from cnnrun import record
    from cnnrun.config import plugins
    from cnnrun.data import _preloaded, forget_digests

    out, err, code = io.StringIO(), io.StringIO(), 0
    here, argv, environ = os.getcwd(), sys.argv[:], dict(os.environ)
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    root = logging.getLogger()
    logged = (root.handlers[:], root.level)
    modules = set(sys.modules)
    if "absl.logging" in sys.modules:  # Hydra's logging set-up closes every handler's stream that is not the process's
        handler = sys.modules["absl.logging"].get_absl_handler().python_handler  # own: absl's holds pytest's capture
        handler.stream = sys.__stderr__
    try:
        if cwd is not None:
            os.chdir(cwd)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                command.main([str(a) for a in args])
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        os.chdir(here)
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
        for s, h in handlers.items():
            signal.signal(s, h)
        for h in root.handlers:
            if h not in logged[0]:
                h.close()
        root.handlers[:], root.level = logged
        GlobalHydra.instance().clear()
        record.release_all()  # what a process lets go of as it exits: its locks (atexit), its caches
        record._decided.clear()
        forget_digests()
        _preloaded.clear()
        plugins._located.clear()  # the user's code of this command: the next one imports its own afresh
        installed = (str(ROOT), sys.prefix, sys.base_prefix)  # a checkout or venv under /tmp is not a test's own
        for name in set(sys.modules) - modules:
            file = str(getattr(sys.modules[name], "__file__", None) or "")
            if name.startswith("cnnrun_user_") or (file.startswith(tempfile.gettempdir())
                                                   and not file.startswith(installed)):  # a test's own modules
                del sys.modules[name]
    return Ran(code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="session")
def finished(tmp_path_factory) -> Path:
    """One tiny finished run (mnist_cnn on digits), made by the command line as a user makes it, shared by every
    module of this test process that reads a finished run (a test that changes one copies it first: copy_run)."""
    run = tmp_path_factory.mktemp("finished") / "run"
    r = cli("train", *TINY, "model=mnist_cnn", "output.plots=true", f"hydra.run.dir={run}")
    assert r.returncode == 0, r.stderr[-2000:]
    return run


def started_keras(proc) -> bool:
    """Whether a process run with PYTHONPROFILEIMPORTTIME=1 imported Keras or a backend (Python lists every
    import on stderr): a refusal that comes before any work never does."""
    return any(line.startswith("import time:") and line.rsplit("|", 1)[-1].strip() in ("keras", "tensorflow", "jax")
               for line in proc.stderr.splitlines())


def read_metrics(run_dir) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())


def write_idx(path: Path, array: np.ndarray, gz: bool = True, truncate: int = 0) -> Path:
    """Writes an IDX file of unsigned bytes, as the MNIST releases do (optionally cut short)."""
    array = np.asarray(array, dtype=np.uint8)
    raw = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape) + array.tobytes()
    if truncate:
        raw = raw[:-truncate]
    path = path.with_suffix(path.suffix + ".gz") if gz else path
    opener = gzip.open if gz else open
    with opener(path, "wb") as f:
        f.write(raw)
    return path


def make_mnist_like(folder: Path, n_train=120, n_test=40, classes=10, gz=True, seed=0) -> dict:
    """A tiny MNIST-format data set: class k is a bright square at a k-dependent place, plus noise."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        y = np.arange(n) % classes
        rng.shuffle(y)
        x = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
        for i, k in enumerate(y):
            r, c = 2 + 2 * (k // 4) * 3, 2 + (k % 4) * 6
            x[i, r:r + 6, c:c + 6] = 230
        write_idx(folder / f"{split}-images-idx3-ubyte", x, gz=gz)
        write_idx(folder / f"{split}-labels-idx1-ubyte", y, gz=gz)
        out[split] = (x, y)
    return out


# Tests that are each a unit of work of their own for pytest-xdist (every other test goes with its module's): the
# README's commands, each a run or a sweep, the longest tests of the suite.
UNITS_OF_THEIR_OWN = ("tests/test_readme.py::",)


def pytest_xdist_make_scheduler(config, log):
    """How pytest-xdist shares the suite out under the Makefile's `--dist loadscope --no-loadscope-reorder`: a test
    module's tests go to one process, so its module-scoped runs are made once, but each test of UNITS_OF_THEIR_OWN goes
    alone; units are handed out in collection order, the longest first (pytest_collection_modifyitems). Scheduling
    by `xdist_group` marks cannot do this under pytest 9: pytest-xdist 3.8 writes the group into a test id pytest
    no longer reads, so every test was a unit of its own and a module's fixtures were made again in each process."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return nodeid if nodeid.startswith(UNITS_OF_THEIR_OWN) else nodeid.split("::", 1)[0]

    return ByModule(config, log)


# The modules by their measured time (`pytest --durations`, TensorFlow, 2026-12-05: test_trust's tests took 105
# worker-seconds, test_backbone's 87 ...): handed out longest first, as a scheduler packs jobs, so the last units are short
# ones and both processes end together. A module not listed comes after these, in collection order.
LONGEST_MODULES = ["test_trust", "test_backbone", "test_loggers", "test_distribute", "test_output", "test_train",
                   "test_plugins", "test_named_code", "test_resume", "test_hostile", "test_recipes", "test_resident",
                   "test_cli", "test_export", "test_sweeps", "test_explain", "test_augment", "test_debug", "test_kernels",
                   "test_presets_beyond"]


def pytest_collection_modifyitems(config, items):
    """The longest tests (marked `long`: the README's commands) come first, then the modules longest first
    (LONGEST_MODULES), so that xdist hands them out in that order and no process is left with a long one at the end
    while the other idles."""
    rank = {name: i for i, name in enumerate(LONGEST_MODULES)}
    items.sort(key=lambda item: (item.get_closest_marker("long") is None,
                                 rank.get(item.module.__name__.rpartition(".")[2], len(rank))))  # stable within each
