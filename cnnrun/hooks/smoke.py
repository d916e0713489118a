"""debug=smoke's check (conf/debug/smoke.yaml attaches it as hooks.smoke): every file of the evaluated run is
checked by content (record.artifacts.verify); a missing or broken one fails the run, naming it."""

from __future__ import annotations

from cnnrun.hooks import Hook


class CheckArtifacts(Hook):
    """Fails the run when a file it should have written is missing or wrong."""

    name = "smoke"

    def evaluated(self, run, result) -> str | None:
        from cnnrun.record.artifacts import verify  # matplotlib: not for checking the config

        problems = verify(run.dir, run.metrics, run.cfg.output, augmented=result.augmented)
        if problems:
            run.update(error="artifact check: " + "; ".join(problems))
            return "failed"
        return None
