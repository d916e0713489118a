"""Which process of a distributed run this is, from the config and the environment, without the backend.

A run of several processes (`distribute=data_parallel` over hosts, cnnrun/training/distribute.py) learns
its place in this order:
1. `distribute.coordinator`, `num_processes` and `process_id`, given by hand;
2. the submitit launcher's own tasks (`hydra/launcher=submitit_local` with `tasks_per_node`): submitit
   names the task count and this task's rank; the coordinator is process 0 on this host, on a port
   drawn from the job id (as JAX does for Slurm), so two jobs of a sweep never meet;
3. Slurm's tasks (`hydra/launcher=submitit_slurm` with `nodes`/`tasks_per_node`, or `srun`): JAX reads
   the coordinator, task count and rank from Slurm's environment itself.

Hydra's config resolves `${cnnrun_owned:...}` with it (schema.register_resolvers), so the processes other
than 0 write neither Hydra's copies of the config nor train.log into the run directory that process 0 owns.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

_SUBMITIT_TASKS, _SUBMITIT_RANK, _SUBMITIT_JOB = "SUBMITIT_LOCAL_NTASKS", "SUBMITIT_LOCAL_GLOBALID", "SUBMITIT_LOCAL_JOB_ID"


@dataclass(frozen=True)
class Place:
    """How this process joins the others: all three None lets JAX read them from Slurm's environment."""
    coordinator: str | None
    num_processes: int | None
    process_id: int | None
    source: str             # "config", "submitit" or "Slurm": said in the log and in errors


def _int(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def _submitit_local() -> bool:
    return _int(_SUBMITIT_TASKS, 1) > 1 and _SUBMITIT_RANK in os.environ


def _slurm() -> bool:
    return _int("SLURM_NTASKS", 1) > 1 and "SLURM_STEP_NODELIST" in os.environ


def _data_parallel(d) -> bool:
    return d is not None and d.get("name") == "data_parallel"


def several(d) -> bool:
    """Whether `d` (cfg.distribute) makes this a run of several processes: given, or started as several tasks."""
    if not _data_parallel(d):
        return False
    if d.get("num_processes") is not None:
        return int(d.num_processes) > 1
    return _submitit_local() or _slurm()


def place(d) -> Place:
    """Where this process stands among the run's processes (call only when `several(d)`)."""
    if d.get("num_processes") is not None:
        return Place(d.coordinator, int(d.num_processes), int(d.process_id), "config")
    if _submitit_local():
        port = _int(_SUBMITIT_JOB, 0) % 4096 + 61440  # the same in every task of the job, as JAX's for Slurm
        return Place(f"127.0.0.1:{port}", _int(_SUBMITIT_TASKS, 1), _int(_SUBMITIT_RANK, 0), "submitit")
    return Place(None, None, None, "Slurm")


def process_index(d) -> int:
    """This process's index: distribute.process_id, else submitit's task rank, else SLURM_PROCID, else 0."""
    if d.get("process_id") is not None:
        return int(d.process_id)
    if _submitit_local():
        return _int(_SUBMITIT_RANK, 0)
    return _int("SLURM_PROCID", 0)


def follower(cfg) -> bool:
    """Whether this process is one of a distributed run's others (not process 0): it writes nothing there."""
    d = cfg.get("distribute")
    return several(d) and process_index(d) != 0
