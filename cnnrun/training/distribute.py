"""One run over several devices and hosts: `distribute=data_parallel` (keras.distribution.DataParallel, JAX).

trainer.batch_size stays the global batch: every device holds the whole model and takes an equal part of each
batch, the gradients are averaged over all of them (and batch norm's statistics too: JAX computes them over
the global batch), so the run trains as one device would on the same batch, to float rounding.

A run of several processes (hosts, or one process per GPU):
- every process is started with the same command (by Slurm or the submitit launcher's tasks, or by hand with
  distribute.coordinator, num_processes and process_id: cnnrun/config/cluster.py) and joins the others
  before JAX starts (`join`, called by the CLI);
- each reads the data, builds the same model from the same seed and feeds only its own share of every batch
  (`share`): an epoch's order comes from (seed, epoch), the same everywhere, and process p takes the p-th
  part of each batch, so no image is seen twice in an epoch;
- an epoch whose last batch the devices cannot split evenly loses those few images from that epoch, said
  in the log (a different few each epoch, as the order changes), never silently;
- process 0 alone owns the run directory (record.Follower for the others): it decides about an earlier run
  and tells the others; after training it evaluates and writes everything on one of its devices, while the
  others wait for its word and end with its status. A process that dies ends the others: JAX's coordination
  service stops hearing its heartbeat after distribute.timeout seconds (or a collective fails sooner).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from cnnrun import CnnrunError, backend, record
from cnnrun.record import outcome
from cnnrun.config import cluster
from cnnrun.config.extras import pip
from cnnrun.config.cluster import process_index, several  # noqa: F401 - what the CLI asks of a run

log = logging.getLogger("cnnrun")


@dataclass(frozen=True)
class Placement:
    """Where a run trains, and all that changes with it: this class is one device in one process, the default;
    DataParallel, several devices and processes. train() and the loop ask it, never which one it is:
    set-up (apply), the steps and this process's share of each epoch and of validation, the run's record (run:
    who owns the directory), its hooks and checkpoints, training together, the end of training and who goes on."""
    processes: int = 1
    process: int = 0           # this process's index; 0 owns the run directory
    devices: int = 1           # devices in all, every process's
    batch: int = 1             # the global batch (trainer.batch_size)

    @property
    def owner(self) -> bool:
        return self.process == 0

    @property
    def per_device(self) -> int:
        return self.batch // self.devices

    @property
    def per_process(self) -> int:
        return self.batch // self.processes

    def recorded(self, run: record.Run) -> None:
        """What the run's record says of where it trained: on one device, nothing."""

    def apply(self) -> None:
        """Sets Keras' distribution: before any layer is built. One device: nothing to set."""

    def steps(self, n: int) -> int:
        """Optimizer steps in an epoch of `n` images."""
        return -(-n // self.batch)

    def share(self, order: np.ndarray) -> tuple[np.ndarray, int]:
        """This process's part of an epoch's `order` and how many images the epoch leaves out: all of it, none."""
        return order, 0

    def validation(self, n: int, batch: int) -> tuple[np.ndarray | None, int]:
        """The validation images this process evaluates (None: all n) and its batch for them."""
        return None, batch

    @contextmanager
    def together(self, run: record.Run):
        """Training, and what a failure during it means: on one device, what it is."""
        yield

    def end(self, *models) -> None:
        """After training: the weights where evaluation and saving run."""
        backend.no_distribution()

    def run(self, run_dir, cfg, hooks) -> record.Run:
        """The record of this process's part of the run: on one process, the run itself."""
        return record.Run(run_dir, cfg, hooks=hooks)

    def hooks(self, cfg):
        """The run's hooks (trackers, probes, the user's own): where the run's record is written."""
        from cnnrun import hooks

        return hooks.build(cfg)

    def checkpoints(self, run: record.Run) -> Path | None:
        """Where this process writes its checkpoints (None: nowhere)."""
        return run.dir

    def trained(self, run: record.Run, fitted) -> dict | None:
        """Training has ended: None goes on to the evaluation; a record ends this process's part here."""
        return None


@dataclass(frozen=True)
class DataParallel(Placement):
    """distribute=data_parallel: every device holds the model and takes an equal part of each batch (the
    module's docstring); process 0 owns the run (Owner), the others train their share and wait (Follower)."""

    def recorded(self, run: record.Run) -> None:
        run.update(distribute={**asdict(self), "per_device_batch": self.per_device})  # metrics.json's `distribute`

    def apply(self) -> None:
        backend.data_parallel(self.devices // self.processes)
        log.info("distribute: data parallel over %d device(s) in %d process(es): batch %d = %d per device",
                 self.devices, self.processes, self.batch, self.per_device)

    def steps(self, n: int) -> int:
        kept = n - (n % self.batch) % self.devices  # the last batch cut to a multiple of the devices
        return -(-kept // self.batch)

    def share(self, order: np.ndarray) -> tuple[np.ndarray, int]:
        """Batch by batch, this process's part; the epoch's last batch cut to a multiple of the devices."""
        n, b = len(order), self.batch
        cut = (n % b) % self.devices
        order = order[:n - cut]
        parts = []
        for start in range(0, len(order), b):
            batch = order[start:start + b]
            size = len(batch) // self.processes
            parts.append(batch[self.process * size:(self.process + 1) * size])
        return (np.concatenate(parts) if parts else order), cut

    def validation(self, n: int, batch: int) -> tuple[np.ndarray, int]:
        """An equal, contiguous part of the first n - (n mod devices) images (the few left over said once), and
        a per-process batch, a multiple of the local devices."""
        kept = n - n % self.devices
        size = kept // self.processes
        idx = np.arange(self.process * size, (self.process + 1) * size)
        if n - kept:
            log.info("distribute: validation on %d of %d images (a multiple of the %d devices)", kept, n, self.devices)
        local = self.devices // self.processes
        return idx, max(local, batch // self.processes // local * local)

    @contextmanager
    def together(self, run: record.Run):
        """The error a lost process causes in this one (a collective that fails, the coordination service gone)
        is said as what it is, a failed run that can be resumed."""
        try:
            yield
        except Exception as e:
            if self.processes == 1 or isinstance(e, CnnrunError):
                raise
            first = (str(e).splitlines() or [type(e).__name__])[0]
            reason = first.rsplit("Error dispatching computation: ", 1)[-1][:200]
            raise record.RunFailed(f"distribute: another process of the run stopped during training ({reason}); "
                                   f"its log says why; continue from the last epoch with: cnnrun resume {run.home}") from e

    def end(self, *models) -> None:
        """The weights come off the distribution onto one device of this process, where evaluation and saving
        run (process 0's; the others only wait)."""
        backend.localize(models)
        backend.no_distribution()

    def run(self, run_dir, cfg, hooks) -> record.Run:
        if self.processes == 1:
            return record.Run(run_dir, cfg, hooks=hooks)
        return Owner(run_dir, cfg, hooks=hooks) if self.owner else Follower(run_dir, cfg)

    def hooks(self, cfg):
        from cnnrun import hooks

        return hooks.build(cfg) if self.owner else hooks.Hooks([])

    def checkpoints(self, run: record.Run) -> Path | None:
        return run.dir if self.owner else None

    def trained(self, run: record.Run, fitted) -> dict | None:
        if self.owner or fitted.signum is not None:
            return None
        return run.end("ok", trained=True, process=self.process)  # process 0 evaluates and writes


def join(d) -> None:
    """Joins the other processes of a run, before the backend starts (the CLI calls it); else nothing."""
    if not several(d):
        return
    check_backend()
    where = cluster.place(d)
    backend.join_processes(where.coordinator, where.num_processes, where.process_id, d.timeout)
    count, index = backend.processes()
    log.info("distribute: process %d of %d joined (coordinator %s, from %s)", index, count,
             where.coordinator or "Slurm's", where.source)
    address = backend.coordinator()
    if index != 0 and address:
        from cnnrun.console import error

        global watchdog
        watchdog = Watchdog(address, error).start()


class Watchdog:
    """In a process other than 0: process 0 hosts JAX's coordination service, and when it dies JAX aborts the
    others (a native stack, exit 134) once their heartbeat misses it. This thread sees it first, from the
    service's port refusing connections, and ends the process with one line and exit code 1 (a failed run)."""

    def __init__(self, address: str, say, every: float = 0.5):
        import threading

        self.address, self.say, self.every = address, say, every
        self.stopped = threading.Event()
        self.run_dir: str | None = None
        self.thread = threading.Thread(target=self._watch, name="cnnrun-process-0-watchdog", daemon=True)

    def start(self) -> Watchdog:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopped.set()

    def _gone(self) -> bool:
        import socket

        host, _, port = self.address.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
                return False
        except ConnectionRefusedError:
            return True
        except OSError:
            return False  # slow or unreachable for a moment: JAX's own heartbeat decides that case

    def _watch(self) -> None:
        misses = 0
        while not self.stopped.wait(self.every):
            misses = misses + 1 if self._gone() else 0
            if misses >= 2 and not self.stopped.is_set():
                where = f"; continue from the last epoch with: cnnrun resume {self.run_dir}" if self.run_dir else ""
                self.say(f"distribute: process 0 (the coordinator at {self.address}) is gone, so this process stops too; "
                         f"process 0's log says why{where}")
                logging.shutdown()
                os._exit(outcome.EXIT_FAILED)  # now: JAX would abort the process at its next heartbeat


watchdog: Watchdog | None = None


def check_backend() -> None:
    name = os.environ.get("KERAS_BACKEND", "") or backend.name()
    if name != "jax":
        raise CnnrunError(
            f"distribute=data_parallel trains on JAX, but the backend is {name}; start with KERAS_BACKEND=jax "
            f"({pip('jax')}); TensorFlow's MirroredStrategy keeps batch-norm statistics per device, "
            "so it would not train as one device does")


def plan(d, batch_size: int) -> Placement:
    """The run's placement from cfg.distribute and the devices there are; refuses, before any work, a backend
    other than JAX, more devices than there are, or a batch the devices cannot split evenly."""
    count, index = backend.processes()
    if d is None or d.name != "data_parallel":
        return Placement(processes=count, process=index, batch=batch_size)
    check_backend()
    local = backend.local_device_count()
    if d.devices is not None and d.devices > local:
        raise CnnrunError(f"distribute.devices={d.devices} but this process has {local} device(s); "
                          f"set distribute.devices={local} or fewer, or null for all")
    devices = count * (d.devices or local)
    if batch_size % devices:
        lower, upper = batch_size // devices * devices, -(-batch_size // devices) * devices
        raise CnnrunError(f"trainer.batch_size={batch_size} does not split evenly over {devices} devices; "
                          f"choose a multiple of {devices}, e.g. trainer.batch_size={upper}"
                          + (f" or {lower}" if lower else ""))
    placed = DataParallel(processes=count, process=index, devices=devices, batch=batch_size)
    return placed if placed.devices > 1 or placed.processes > 1 else Placement(batch=batch_size)


# --- who owns the run directory ------------------------------------------------------------------------

WAIT = 7 * 24 * 3600.0  # waiting for process 0's word: bounded by its heartbeat (distribute.timeout), not this


def _key(run: record.Run, what: str) -> str:
    where = run.home.name  # one run dir, one config: the same key in every process
    return f"cnnrun/{run.fingerprint}/{where}/{what}"


class Owner(record.Run):
    """Process 0 of a run of several: the run as on one process (the lock, the decision about an earlier run,
    every file), and it tells the others its decision and, at the end, the run's status."""

    def __enter__(self) -> Owner:
        try:
            super().__enter__()
        except BaseException as e:
            backend.publish(_key(self, "action"), "refused:" + (str(e).splitlines() or ["refused"])[0])
            raise
        backend.publish(_key(self, "action"), self.action)
        return self

    def __exit__(self, kind, error, tb) -> bool:
        try:
            return super().__exit__(kind, error, tb)
        finally:
            status = self.metrics.get("status") or ("failed" if error is not None else "ok")
            backend.publish(_key(self, "status"), status if status != "running" else "failed")


class Follower(record.Run):
    """A process other than 0: it writes nothing in the run directory. It takes process 0's decision (skip,
    continue from the checkpoint there, or start), trains its share, and ends with process 0's status; what
    train() writes on the way goes to a scratch directory, removed at the end."""

    def __enter__(self) -> Follower:
        self.dir = Path(tempfile.mkdtemp(prefix="cnnrun-process-"))
        action = backend.wait_for(_key(self, "action"), WAIT)
        if action.startswith("refused:"):
            shutil.rmtree(self.dir, ignore_errors=True)
            raise record.RunRefused(f"process 0 refused the run: {action[len('refused:'):]}")
        self.action, self.earlier = action, record.read(self.home)
        return self

    def __exit__(self, kind, error, tb) -> bool:
        shutil.rmtree(self.dir, ignore_errors=True)
        return False

    def start(self, **fields) -> None:
        self.metrics = {"status": "running", **fields}

    def save(self) -> None:
        pass

    def end(self, status: str, **fields) -> dict:
        """Waits for process 0, which evaluates and writes the run, and ends with its status."""
        fields.setdefault("process", backend.processes()[1])
        if status == "ok" and fields.get("trained"):
            log.info("distribute: process %s trained its share; process 0 evaluates and writes %s",
                     fields.get("process"), self.home)
            status = backend.wait_for(_key(self, "status"), WAIT)
        self.metrics.update(status=status, follower=fields.get("process"),
                            **{k: v for k, v in fields.items() if k not in ("trained", "process")})
        if status != "ok":
            self.metrics.setdefault("error", f"process 0 ended the run as {status}; its record: {self.home}")
        return self.metrics
