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
run, as their work is the run's.

The built-ins are hooks of this kind, in this order: the trackers (logger=), debug=overfit / profile,
output.explain, debug=smoke's artifact check; then the user's own, from the config:

    cnnrun train +hooks.notify._target_=my_pkg.hooks.Notify +hooks.notify.every=2
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from cnnrun import CnnrunError
from cnnrun.config import plugins

log = logging.getLogger("cnnrun")

MOMENTS = ("start", "callbacks", "epoch", "stop", "fitted", "evaluated", "end")
OBSERVING = ("start", "epoch", "end")  # guarded: a failure there warns once and switches the hook off


class Hook:
    """A base for your own hook: override the moments you need (see the module's docstring)."""

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

    def _name(self, hook) -> str:
        return getattr(hook, "name", None) or type(hook).__name__

    def _each(self, moment: str, *args):
        for i, hook in enumerate(self.hooks):
            method = getattr(hook, moment, None)
            if method is None or i in self.off:
                continue
            if moment not in OBSERVING:
                yield method(*args)
                continue
            try:
                yield method(*args)
            except (Exception, SystemExit) as e:  # noqa: BLE001 - an observer never fails the training, nor ends it
                self.off.add(i)
                text = (str(e).strip().splitlines() or [""])[0][:300]
                log.warning("hook %s failed in %s: %s: %s; it is off for the rest of this run", self._name(hook),
                            moment, type(e).__name__, text)

    def start(self, run) -> None:
        list(self._each("start", run))

    def epoch(self, run, row: dict) -> None:
        list(self._each("epoch", run, row))

    def end(self, run) -> None:
        list(self._each("end", run))

    def callbacks(self, run, data, others: list) -> list:
        for i, hook in enumerate(self.hooks):
            if getattr(hook, "callbacks", None) is not None and i not in self.off:
                others = list(hook.callbacks(run, data, others))
        return others

    def stop(self, run, rows: list[dict]) -> bool:
        return any([bool(s) for s in self._each("stop", run, rows)])  # every hook hears of every epoch

    def fitted(self, run, fitted) -> str | None:
        return next((s for s in self._each("fitted", run, fitted) if s), None)

    def evaluated(self, run, result: Evaluation) -> str | None:
        return next((s for s in self._each("evaluated", run, result) if s), None)


def build(cfg, run_dir) -> Hooks:
    """The hooks a run's config attaches: the built-ins it asks for, then its own (`hooks.NAME._target_`)."""
    from cnnrun.hooks import loggers

    out: list = [loggers.build(cfg.logger, run_dir)]
    if cfg.debug.mode in ("overfit", "profile"):
        from cnnrun.hooks.debug import Probe

        out.append(Probe(cfg.debug, cfg.trainer))
    if cfg.output.explain:
        from cnnrun.hooks.explain import ExplainAtEnd

        out.append(ExplainAtEnd(cfg.output, cfg.trainer.seed))
    if cfg.debug.check_artifacts:
        from cnnrun.record.artifacts import CheckArtifacts

        out.append(CheckArtifacts(cfg.output))
    out += [own(name, node) for name, node in (cfg.get("hooks") or {}).items()]
    return Hooks(out)


def own(name: str, node):
    """The user's hook `hooks.NAME`: its `_target_` called with the node's other keys."""
    key = f"hooks.{name}._target_"
    hook = plugins.call(node._target_, key, "creating the hook", **plugins.arguments(node, ("_target_",)))
    if not any(callable(getattr(hook, m, None)) for m in MOMENTS):
        raise CnnrunError(f"{key}={node._target_} made {type(hook).__name__}, which has none of a hook's methods "
                          f"({', '.join(MOMENTS)}); subclass cnnrun.hooks.Hook")
    hook.name = getattr(hook, "name", None) or name
    return hook
