"""cnnrun's optional extras (pyproject.toml's [project.optional-dependencies]): what each brings, and the one line a
user is told when a feature needs one that is not installed. The one place a `pip install 'cnnrun[...]'` is spelled.
Imports nothing of cnnrun's, so every part may tell its user."""

from __future__ import annotations

EXTRAS = {  # extra: what needs it
    "jax": "KERAS_BACKEND=jax and distribute=data_parallel",
    "mlflow": "logger=mlflow",
    "tensorboard": "logger=tensorboard",
    "export": "cnnrun export --format onnx / litert",
    "hub": "model=backbone model.preset=... (KerasHub)",
    "optuna": "hydra/sweeper=optuna (hparams_search=optuna_fashion)",
    "joblib": "hydra/launcher=joblib",
    "slurm": "hydra/launcher=submitit_slurm / submitit_local",
    "ray": "hydra/launcher=ray",
}


def pip(extra: str) -> str:
    """The command that installs `extra`, as every message gives it."""
    if extra not in EXTRAS:
        raise KeyError(extra)  # a programming error: an extra pyproject.toml does not have
    return f"pip install 'cnnrun[{extra}]'"
