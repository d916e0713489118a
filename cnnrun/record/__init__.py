"""A run's record: who owns its directory, what an earlier run there means, and metrics.json.

One process at a time owns a run directory: it holds an OS lock (`flock`) on `RUN_DIR/.lock` for as
long as it runs, and a second process is refused in one line naming the holder. What an earlier run
in the directory means is decided once per run, here (`decide`):

| earlier run in the directory          | trainer.resume=auto          | true              | false          |
|---------------------------------------|------------------------------|-------------------|----------------|
| none                                  | start                        | refused           | start          |
| same config, finished ok              | skip (nothing to do)         | skip              | set aside, start |
| same config, checkpoint               | continue from it             | continue          | set aside, start |
| same config, no checkpoint (broken)   | set aside, start over        | set aside, start  | set aside, start |
| other config, finished ok             | **refused** (say resume=false) | refused         | set aside, start |
| other config, unfinished              | set aside, start over        | refused           | set aside, start |

"Set aside" renames every file of the earlier run into the sibling `RUN_DIR.earlier-N` (nothing is
deleted), so the directory never holds files of two runs. `read()` is the one reader of metrics.json
that compare, sweeps, reproduce, predict and the fresh-process launcher share.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

from omegaconf import DictConfig

from cnnrun import CnnrunError
from cnnrun.record import outcome
from cnnrun.record.layout import CHECKPOINT, LOCK  # noqa: F401 - named by record.LOCK, record.CHECKPOINT
from cnnrun.record.outcome import RunFailed, RunRefused  # noqa: F401 - where a run's endings are defined

log = logging.getLogger("cnnrun")

# The record's parts, a module each; their names are the record's API (record.read, record.claim ...).
from cnnrun.record import decision  # noqa: E402 - Run decides through it (a test counts its decisions there)
from cnnrun.record.decision import (  # noqa: E402, F401 - _decided: the tests forget a process's decisions
    _decided, decide, differences, has_run, mark_failed, set_aside, settled, shortened,
)
from cnnrun.record.fingerprints import (  # noqa: E402
    code_digests, data_digest, fingerprint, identity, same_data,
)
from cnnrun.record.folders import (  # noqa: E402
    foreign_entries, own_folder, refuse_foreign, refuse_inside_data, writable_folder,
)
from cnnrun.record.lock import claim, holds, live, release, release_all  # noqa: E402
from cnnrun.record.metrics import FIELDS, TYPES, Metrics, _typed, read, write  # noqa: E402, F401

__all__ = ["CHECKPOINT", "FIELDS", "LOCK", "TYPES", "Metrics", "Run", "RunFailed", "RunRefused", "claim", "code_digests",
           "data_digest", "decide", "differences", "fingerprint", "foreign_entries", "has_run", "holds", "identity",
           "live", "mark_failed", "own_folder", "read", "refuse_foreign", "refuse_inside_data", "release",
           "release_all", "same_data", "set_aside", "settled", "shortened", "write", "writable_folder"]


class Run:
    """One run's record for as long as it runs: the directory's lock, the decision about an earlier run
    there, and metrics.json from `running` to its end. Used as a context manager by train():

        with Run(run_dir, cfg) as run:          # lock; skip / continue / start (earlier runs set aside)
            run.start(model=...)                # metrics.json says running: a run that dies never looks finished
            run.update(params=...)
            return run.end("ok")                # written once more, with its end time

    Leaving the block by an exception records `failed` (or `interrupted` for Ctrl-C) with its error.
    `hooks` (anything with start(run), epoch(run, row) and end(run): hooks.Hooks) hear of the start, each
    whole epoch and the end, after metrics.json is written.
    """

    def __init__(self, run_dir, cfg: DictConfig, keep_hydra: bool = True, hooks=None):
        # home: the run's directory as the user names it (its checkpoint, its messages); dir: where this process
        # writes. The same directory, but on a process other than 0 of a distributed run (a scratch folder there).
        self.home = self.dir = Path(run_dir)
        self.cfg, self.keep_hydra = cfg, keep_hydra
        self.hooks = hooks
        self.fingerprint = fingerprint(cfg)
        self.action = ""
        self.working = False
        self.stage = "training"  # "evaluation" once training has ended: what an interruption is said to have cut
        self.metrics: dict = {}
        self.earlier: dict | None = None

    def __enter__(self) -> Run:
        claim(self.dir)
        try:
            self.action = decision.settled(self.dir, self.cfg) or decision._decide(self.dir, self.cfg, self.keep_hydra)
        except BaseException:
            release(self.dir)
            raise
        self.earlier = read(self.dir)
        return self

    def __exit__(self, kind, error, tb) -> bool:
        working = self.metrics.get("status") == "running" and self.working
        ended = outcome.of(error, working)
        if ended is outcome.INTERRUPTED and self.stage == "evaluation":
            try:  # the message the record and the console give: training is done, resume only evaluates
                error.cnnrun_message = (f"interrupted during evaluation, after training ended; evaluate it with: cnnrun "
                                        f"resume {self.dir} (nothing is trained again)")
            except AttributeError:
                pass
        try:
            if error is not None and ended.status and self.metrics.get("status") == "running":
                self.end(ended.status, error=outcome.message(error, self.dir),
                         **({"exit_code": outcome.exit_code(ended)} if ended is outcome.INTERRUPTED else {}))
        finally:
            release(self.dir)
        if ended is outcome.FAILED and not isinstance(error, RunFailed):
            raise RunFailed(str(error)) from None  # it failed mid-run: exit 1, not "refused before any work"
        return False

    def begin_work(self) -> None:
        """Training starts: from here on, an error is a failed run (exit 1), no longer a refusal (exit 2)."""
        self.working = True

    def start(self, **fields) -> None:
        t, code = self.cfg.trainer, code_digests(self.cfg)
        self.metrics = {
            "status": "running", **fields, "seed": t.seed,
            "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "reference_accuracy": (self.cfg.get("reference") or {}).get("accuracy"),
            **({"shortened": short} if (short := shortened(self.cfg)) else {}),
            "config_hash": self.fingerprint, "data_digest": data_digest(self.cfg),
            **({"code_digest": code} if code else {}), "epochs_planned": int(t.epochs),
        }
        write(self.dir, self.metrics)
        if self.hooks is not None:
            self.hooks.start(self)

    def epoch(self, row: dict) -> None:
        """An epoch ended whole (and is checkpointed): the hooks get its history row."""
        if self.hooks is not None:
            self.hooks.epoch(self, row)

    def save(self) -> None:
        write(self.dir, self.metrics)

    def update(self, **fields) -> None:
        self.metrics.update(fields)

    def end(self, status: str, **fields) -> dict:
        self.metrics.update(fields, status=status, finished=datetime.now(timezone.utc).isoformat(timespec="seconds"))
        write(self.dir, self.metrics)
        if self.hooks is not None:  # after metrics.json: the record is complete first
            before = dict(self.metrics)
            self.hooks.end(self)
            if self.metrics != before:  # what the hooks found at the end (e.g. what the trackers cost)
                try:
                    write(self.dir, self.metrics)
                except (TypeError, ValueError, CnnrunError) as e:  # a hook's field of the wrong type: warned, left out
                    log.warning("a hook's fields at the end of the run were not recorded (%s); metrics.json keeps "
                                "the run's own", str(e).splitlines()[0][:300])
                    self.metrics = before
        return self.metrics
