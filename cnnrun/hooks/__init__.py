"""Code attached to a run. A hook hears what a run reports at its moments, and may add Keras callbacks,
end fitting early or end the run with a status. Every method is optional (a hook is any object with some
of them); `Hook` below documents them and is there to subclass:

    start(run)                       the run began (or continues): run.dir, run.cfg, run.metrics, run.action
    callbacks(run, data, others)     just before fitting: returns the Keras callbacks fit runs with
    epoch(run, row)                  an epoch ended whole and is checkpointed: its history row
    stop(run, rows) -> bool          after each epoch: True ends fitting there
    fitted(run, fitted) -> status    fitting ended: None goes on to the evaluation, a status ends the run
    evaluated(run, result) -> status the test set is evaluated (result.classifier, .data, .probs, .augmented)
    end(run)                         the run ended with run.metrics["status"]; metrics.json is written

Hooks record what they find with run.update(...) (metrics.json). What start, epoch and end raise is a
warning that switches the hook off (a tracker never fails a training); what the others raise fails the
run, as their work is the run's. What each hook costs the run is in metrics.json (hook_seconds).

Every hook, cnnrun's own and yours, is attached the same way: a config node with a `_target_` (the class)
and its arguments, under `logger` (the trackers, conf/logger/) or `hooks` (the rest), made by `attach` in
that order. cnnrun's own are in their YAML: conf/logger/*.yaml, conf/debug/*.yaml (overfit, profile, the
smoke check) and conf/config.yaml (explain). A new tracker is one class here and one YAML in conf/logger/;
one of your own is one class and one line:

    cnnrun train +hooks.notify._target_=my_pkg.hooks.Notify +hooks.notify.every=2

Its arguments are checked against its signature before any work (names; values against annotations:
bool, int, float, str, `X | None`, and `Annotated[X, (ok, "what is expected")]`); a class attribute
`requires = ("module", "extra")` names a package it needs (a missing one is one line before any work).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from cnnrun import CnnrunError
from cnnrun.config import plugins
from cnnrun.config.schema import HOOK_PLACES as PLACES

log = logging.getLogger("cnnrun")

MOMENTS = ("start", "callbacks", "epoch", "stop", "fitted", "evaluated", "end")
OBSERVING = ("start", "epoch", "end")  # guarded: a failure there warns once and switches the hook off


class Hook:
    """A base for your own hook: override the moments you need (see the module's docstring)."""

    name: str | None = None  # how warnings and hook_seconds name it; None: its key's last part (hooks.NAME)

    def start(self, run) -> None:
        """The run began (or continues: run.action == 'continue')."""

    def callbacks(self, run, data, others: list) -> list:
        """The Keras callbacks fit runs with: `others` plus yours."""
        return others

    def epoch(self, run, row: dict) -> None:
        """An epoch ended whole: epoch, loss, accuracy, val_*, lr, seconds."""

    def stop(self, run, rows: list[dict]) -> bool:
        """True ends fitting after this epoch."""
        return False

    def fitted(self, run, fitted) -> str | None:
        """Fitting ended (fitted.history); a status ("failed") ends the run before its evaluation."""
        return None

    def evaluated(self, run, result) -> str | None:
        """The test set is evaluated and its reports written; a status ends the run with it."""
        return None

    def end(self, run) -> None:
        """The run ended; run.metrics['status'] says how."""


@dataclass
class Evaluation:
    """What `evaluated` is given."""

    classifier: object
    data: object
    probs: object
    augmented: bool


class Hooks:
    """The hooks of one run, called in order at each moment."""

    def __init__(self, hooks: list):
        self.hooks = list(hooks)
        self.off: set[int] = set()
        self.seconds = [0.0] * len(self.hooks)  # what each costs the run: metrics.json's hook_seconds

    def _name(self, hook) -> str:
        return getattr(hook, "name", None) or type(hook).__name__

    def _said(self, hook) -> str:
        """How a warning names it: `logger mlflow`, `hook notify`."""
        place = getattr(hook, "key", "hooks.").partition(".")[0]
        return f"{'logger' if place == 'logger' else 'hook'} {self._name(hook)}"

    def _each(self, moment: str, *args):
        for i, hook in enumerate(self.hooks):
            method = getattr(hook, moment, None)
            if method is None or i in self.off:
                continue
            start = time.perf_counter()
            if moment not in OBSERVING:
                yield method(*args)
                self.seconds[i] += time.perf_counter() - start
                continue
            try:
                yield method(*args)
            except (Exception, SystemExit) as e:  # noqa: BLE001 - an observer never fails the training, nor ends it
                self.off.add(i)
                text = (str(e).strip().splitlines() or [""])[0][:300]
                if not isinstance(e, (RuntimeError, ImportError, CnnrunError)):  # those are whole sentences already
                    text = f"{type(e).__name__}: {text}"
                log.warning("%s failed in %s: %s; it is off for the rest of this run", self._said(hook), moment, text)
            self.seconds[i] += time.perf_counter() - start

    def start(self, run) -> None:
        list(self._each("start", run))

    def epoch(self, run, row: dict) -> None:
        list(self._each("epoch", run, row))

    def end(self, run) -> None:
        list(self._each("end", run))
        if self.hooks:  # after the trackers' copy: what they cost is the run's own news, not theirs
            run.update(hook_seconds={self._name(h): round(s, 3) for h, s in zip(self.hooks, self.seconds)})

    def callbacks(self, run, data, others: list) -> list:
        for i, hook in enumerate(self.hooks):
            if getattr(hook, "callbacks", None) is not None and i not in self.off:
                start = time.perf_counter()
                others = list(hook.callbacks(run, data, others))
                self.seconds[i] += time.perf_counter() - start
        return others

    def stop(self, run, rows: list[dict]) -> bool:
        return any([bool(s) for s in self._each("stop", run, rows)])  # every hook hears of every epoch

    def fitted(self, run, fitted) -> str | None:
        return next((s for s in self._each("fitted", run, fitted) if s), None)

    def evaluated(self, run, result: Evaluation) -> str | None:
        return next((s for s in self._each("evaluated", run, result) if s), None)


def nodes(cfg):
    """(key, node) of every hook a config attaches, in the order they run: `logger.NAME`, then `hooks.NAME`."""
    for place in PLACES:
        for name, node in (cfg.get(place) or {}).items():
            if node is not None:
                yield f"{place}.{name}", node


def build(cfg) -> Hooks:
    """The hooks a run's config attaches: cnnrun's and the user's alike, each made from its node."""
    return Hooks([attach(key, node) for key, node in nodes(cfg)])


def attach(key: str, node):
    """The hook at `key` (logger.mlflow, hooks.notify): its `_target_` called with the node's other keys."""
    target = f"{key}._target_"
    hook = plugins.call(node._target_, target, "creating the hook", **plugins.arguments(node, ("_target_",)))
    if not any(callable(getattr(hook, m, None)) for m in MOMENTS):
        raise CnnrunError(f"{target}={node._target_} made {type(hook).__name__}, which has none of a hook's methods "
                          f"({', '.join(MOMENTS)}); subclass cnnrun.hooks.Hook")
    if not getattr(hook, "name", None):
        hook.name = key.rpartition(".")[2]
    hook.key = key
    return hook
