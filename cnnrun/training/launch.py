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
import signal
import subprocess
import sys
from pathlib import Path

from cnnrun.record import layout

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


def _child(cfg_yaml: str, run_dir: str) -> None:
    """Entry point of a fresh process: one training run, its outcome left in metrics.json and the exit code."""
    import logging  # noqa: PLC0415

    from omegaconf import OmegaConf  # noqa: PLC0415

    from cnnrun.record import outcome  # noqa: PLC0415
    from cnnrun import signals  # noqa: PLC0415
    from cnnrun.console import start_backend  # noqa: PLC0415

    os.setpgrp()  # its own process group: a terminal's Ctrl-C reaches the parent, which passes it on once
    signals.install()
    start_backend()
    from cnnrun.training.train import train  # noqa: PLC0415

    fmt = logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s")
    handlers = [logging.StreamHandler(), logging.FileHandler(Path(run_dir) / layout.LOG)]
    for h in handlers:
        h.setFormatter(fmt)
        logging.getLogger().addHandler(h)
    logging.getLogger().setLevel(logging.INFO)
    from cnnrun.config.redact import guard_logging  # noqa: PLC0415

    guard_logging()  # no secret reaches this job's train.log either
    try:  # train() records its own failures in metrics.json
        train(OmegaConf.create(cfg_yaml), run_dir)
    except (Exception, KeyboardInterrupt) as e:  # the parent reads the outcome back from the exit code
        ended = outcome.of(e)
        if ended is outcome.CRASHED:
            raise  # its traceback, and Python's exit code 1 (= CRASHED.child_code)
        if ended is outcome.REFUSED:
            print(f"cnnrun: error: {e}", file=sys.stderr, flush=True)
        raise SystemExit(outcome.exit_code(ended) if ended is outcome.INTERRUPTED else ended.child_code) from None


def train_in_fresh_process(cfg, run_dir: Path) -> dict:
    """Runs train(cfg, run_dir) in a new process and returns its metrics (trainer.fresh_process=true).

    Costs a backend start-up per job (seconds), and in exchange every job starts from the same memory:
    whatever the backend keeps after a run (TensorFlow keeps each job's graphs) dies with the process.
    """
    import multiprocessing  # noqa: PLC0415

    from omegaconf import OmegaConf  # noqa: PLC0415

    from cnnrun import record, signals  # noqa: PLC0415
    from cnnrun.record import outcome

    child = multiprocessing.get_context("spawn").Process(
        target=_child, args=(OmegaConf.to_yaml(cfg, resolve=True), str(run_dir)), name="cnnrun-job")
    child.start()
    try:
        child.join()
    except KeyboardInterrupt:  # passed on to the child (its own process group): it stops after its batch and saves
        from cnnrun import signals  # noqa: PLC0415

        if child.exitcode is None:
            os.kill(child.pid, signals.received() or signal.SIGINT)
        child.join()
    metrics = record.read(run_dir)
    if metrics is None or metrics.get("status") == "unreadable":
        metrics = {"status": "failed", "error": f"the job's process exited with {child.exitcode} before writing metrics"}
    ended = outcome.from_child(child.exitcode)
    if ended is outcome.REFUSED:
        outcome.raise_as(ended, f"{run_dir} is not this job's to write (see the job's output)")
    if ended is not None:
        outcome.raise_as(ended, metrics.get("error", "the job failed"))
    # ok, or stopped by Ctrl-C or SIGTERM (either, whatever signal this process itself received)
    stopped = {outcome.EXIT_OK, signals.code_of(signal.SIGINT), signals.code_of(signal.SIGTERM)}
    if child.exitcode not in stopped and metrics.get("status") in ("failed", "running"):  # killed (-9 ...)
        raise RuntimeError(metrics.get("error", f"the job's process exited with {child.exitcode}"))
    return metrics
