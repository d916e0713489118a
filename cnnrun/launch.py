"""One GPU per parallel job: what a worker process of a parallel launcher does before the backend starts.

Under `hydra/launcher=joblib` (or submitit/ray on one machine) several worker processes train at
once; left alone, every one of them would take GPU 0 (TensorFlow even grabs all GPUs' memory).
Each worker therefore claims a free GPU slot by locking a file in the sweep directory, and keeps it
for its lifetime. Nothing here imports the backend: CUDA_VISIBLE_DEVICES only counts before it starts.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from pathlib import Path

_claimed: dict[str, object] = {}  # the open lock file that holds this process's slot


def visible_gpus() -> list[str]:
    """GPU ids this process may use: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi lists (none without it)."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]


def claim_gpu(lock_dir: Path, gpus: list[str] | None = None) -> str | None:
    """Gives this process one GPU of its own (the first free slot) and returns its id; None with <= 1 GPU."""
    if "gpu" in _claimed:
        return os.environ.get("CUDA_VISIBLE_DEVICES")
    gpus = visible_gpus() if gpus is None else gpus
    if len(gpus) <= 1:
        return None
    lock_dir = Path(lock_dir)
    lock_dir.mkdir(parents=True, exist_ok=True)
    chosen = None
    for i, gpu in enumerate(gpus):
        f = open(lock_dir / f"gpu{i}.lock", "w")  # noqa: SIM115 - held open for the life of the process
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.close()
            continue
        _claimed["gpu"], chosen = f, gpu
        break
    if chosen is None:  # more workers than GPUs: share, spread by process id
        chosen = gpus[os.getpid() % len(gpus)]
        _claimed["gpu"] = None
    os.environ["CUDA_VISIBLE_DEVICES"] = chosen
    return chosen
