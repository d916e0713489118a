"""Shared fixtures: real configs composed with Hydra's compose API, shrunk to tiny sizes."""

import gzip
import json
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402

from cnnrun.cli import jax_compilation_cache, register_resolvers  # noqa: E402

jax_compilation_cache()  # in-process runs share compiled programs as the CLI's do (before Keras imports JAX)

ROOT = Path(__file__).resolve().parents[1]
FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
# Small and fast, but every real code path: sklearn's digits, one epoch, a few hundred images.
TINY = ["dataset=digits", "trainer.epochs=1", "trainer.batch_size=64", "trainer.verbose=0", "dataset.limit=300"]


def make_config(*overrides, tiny=True, hydra=False):
    register_resolvers()
    with initialize_config_module("cnnrun.conf", version_base="1.3"):
        return compose("config", overrides=[*(TINY if tiny else []), *overrides], return_hydra_config=hydra)


def refusal(*overrides, tiny=True, multirun=False) -> str:
    """The one-line message `cnnrun train OVERRIDES` refuses with before any work (fails if it is accepted)."""
    from cnnrun import CnnrunError
    from cnnrun.config import schema

    with pytest.raises(CnnrunError) as err:
        schema.check_jobs([*(TINY if tiny else []), *overrides], multirun)
    message = str(err.value)
    assert "\n" not in message
    return message


@pytest.fixture
def cfg_factory():
    return make_config


def run_cli(*args, cwd=None, env=None, timeout=300):
    """Runs `python -m cnnrun ARGS` in a subprocess (a real process, as users run it)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "cnnrun", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


@dataclass
class Ran:
    """What a command did: its exit code and what it printed (as subprocess.CompletedProcess has them)."""
    returncode: int
    stdout: str
    stderr: str


def cli(*args, cwd=None) -> Ran:
    """Runs `cnnrun ARGS` in this process (cnnrun.cli.main, as the console script calls it): seconds faster than a
    process, for every test of a message, an exit code or a command's files. Real processes (run_cli) stay for what
    needs one: signals, locks held by another process, the backend chosen by the environment, start-up time."""
    import contextlib
    import io

    from hydra.core.global_hydra import GlobalHydra

    from cnnrun import cli as command

    out, err, code = io.StringIO(), io.StringIO(), 0
    here = os.getcwd()
    if "absl.logging" in sys.modules:  # Hydra's logging set-up closes every handler's stream that is not the process's
        handler = sys.modules["absl.logging"].get_absl_handler().python_handler  # own: absl's holds pytest's capture
        handler.stream = sys.__stderr__
    argv = sys.argv[:]
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
        GlobalHydra.instance().clear()
    return Ran(code, out.getvalue(), err.getvalue())


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
