"""`output.explain=true`: the hook that explains the evaluated test set at the end of a run (conf/config.yaml
attaches it as hooks.explain); the work is cnnrun/record/explain.py's, which `cnnrun explain` runs too."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from cnnrun.hooks import Hook
from cnnrun.record import layout

log = logging.getLogger("cnnrun")


class ExplainAtEnd(Hook):
    """Grad-CAM and the embedding map of the test set, already in memory, when output.explain=true (its keys:
    explain_max, explain_embedding, explain_cam)."""

    name = "explain"

    def evaluated(self, run, result) -> None:
        if run.cfg.output.explain:
            run.update(explained=explain_run(run.dir, result.classifier, result.data, result.probs, run.cfg.output,
                                             run.cfg.trainer.seed))


def explain_run(run_dir: Path, classifier, data, probs, cfg_output, seed: int) -> dict:
    """output.explain=true at the end of train(): the test set is in memory already. Returns a summary."""
    if not isinstance(data.x_test, np.ndarray):
        log.warning("output.explain: the test images are read from disk (dataset.cache=false); run "
                    "cnnrun explain %s afterwards", run_dir)
        return {}
    from cnnrun.record.explain import explain  # Keras: only when asked

    done = explain(Path(run_dir) / layout.EXPLAIN, classifier, data.class_names, data.x_test, data.y_test, probs,
                   max_images=cfg_output.explain_max, method=str(cfg_output.explain_embedding), seed=seed,
                   cam=str(cfg_output.explain_cam))
    return {k: done[k] for k in ("layer", "gradcam", "embedding") if k in done}


