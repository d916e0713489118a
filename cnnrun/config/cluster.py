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

import logging
import os
import sys
from dataclasses import dataclass

log = logging.getLogger("cnnrun")
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
    return not process(cfg).writes


def process(cfg) -> Alone:
    """This process's part in the run `cfg` describes: Alone, or OneOfSeveral (distribute=data_parallel over
    several processes). The task function's endings (commands/train.py) and Hydra's callback ask it, never which
    it is, as train() and the loop ask the training's Placement (training/distribute.py)."""
    d = cfg.get("distribute")
    return OneOfSeveral(process_index(d)) if several(d) else Alone()


class Alone:
    """A run in one process: it writes the run directory, a bug's traceback is Python's, its ending is the usual."""
    writes = True  # the run directory is this process's: its record, Hydra's copies, train.log

    def crashed(self, error: BaseException, multirun: bool, say) -> None:
        """A bug: outside a sweep, Python's own traceback and exit status; in one, `say` logs it and the sweep
        goes on."""
        if not multirun:
            raise error
        say()

    def ends_here(self, metrics: dict, run_dir, code: int) -> bool:
        """Whether a run that ended (`code`: its exit status when not ok) ends here, with a line, as a process
        that wrote nothing does: alone, no; the usual ending follows."""
        return False

    def leave(self, code: int) -> None:
        """A failed or stopped run: one process ends as usual (the caller's SystemExit)."""


@dataclass(frozen=True)
class OneOfSeveral(Alone):
    """Process `index` of a run of several: process 0 writes the run directory; every process ends at once
    when its part fails, so the others hear of it from their next collective rather than after JAX's
    shutdown barrier has waited for a process that is gone."""
    index: int

    @property
    def writes(self) -> bool:
        return self.index == 0

    def crashed(self, error: BaseException, multirun: bool, say) -> None:
        say()  # its traceback in the log; leave() ends the process

    def ends_here(self, metrics: dict, run_dir, code: int) -> bool:
        if self.writes:
            return False
        log.info("process %s: the run ended %s; its record is %s", self.index, metrics["status"], run_dir)
        if metrics["status"] != "ok":
            self.leave(code)
        return True

    def leave(self, code: int) -> None:
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
