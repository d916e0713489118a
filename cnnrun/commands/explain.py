"""`cnnrun explain RUN_DIR [IMAGE ...]`: Grad-CAM heat-maps and an embedding map of a finished run's model
(the work is cnnrun/hooks/explain.py's, which also runs at the end of training with output.explain=true).
This module imports no Keras: its arguments are checked before the backend starts."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnrun import CnnrunError
from cnnrun.console import console, error, start_backend
from cnnrun.data.paths import image_files
from cnnrun.record import layout, writable_folder
from cnnrun.record.saved import class_names, finished_model, load_model


def explain_main(args: list[str]) -> None:
    ap = argparse.ArgumentParser(prog="cnnrun explain",
                                 description="Grad-CAM heat-maps and an embedding map of a finished run's model.")
    ap.add_argument("run_dir", type=Path, help="a run directory (holds model.keras)")
    ap.add_argument("inputs", nargs="*", type=Path, help="image files or folders to explain besides the test set")
    ap.add_argument("--max", type=int, default=16, help="misclassified test images to explain (default 16; 0: none)")
    ap.add_argument("--layer", default=None, help="the feature map for Grad-CAM (default: the last convolutional one)")
    ap.add_argument("--cam", choices=["hirescam", "gradcam"], default="hirescam",
                    help="hirescam (default: gradient x activation place by place) or classic gradcam (channel weights)")
    ap.add_argument("--embedding", choices=["tsne", "pca", "none"], default="tsne", help="the 2-D map of the test set")
    ap.add_argument("--out", type=Path, default=None, help="where to write (default: RUN_DIR/explain)")
    ns = ap.parse_args(args)
    if ns.max < 0:
        ap.error(f"--max {ns.max} must be 0 or more")
    missing = [str(p) for p in ns.inputs if not p.exists()]
    if missing:
        ap.error(f"no such file or folder: {', '.join(missing)}")
    try:
        model_file, metrics = finished_model(ns.run_dir)
        out = ns.out or ns.run_dir / layout.EXPLAIN
        writable_folder(out, "--out")  # before any work: not after minutes of Grad-CAM
        start_backend()  # only now (seconds): every refusal above comes at once
        from cnnrun.hooks.explain import cut, explain

        model = load_model(model_file, compile=False)
        if ns.layer:
            cut(model, ns.layer)  # a wrong layer name is refused before the test set is loaded
        say = lambda text: console.print(text, highlight=False, markup=False)  # noqa: E731 - a line in a log too
        if ns.max > 0 or ns.embedding != "none":
            say(f"explain: loading the test set of {ns.run_dir}")
        data = run_test_set(ns.run_dir) if ns.max > 0 or ns.embedding != "none" else None
        names = class_names(metrics, model) if metrics.get("class_names") or not data else data.class_names
        with console.status("explaining: Grad-CAM, then the embedding map of the test set"):
            done = explain(out, model, names, *((data.x_test, data.y_test) if data else (None, None)),
                           files=image_files(ns.inputs) if ns.inputs else None, max_images=ns.max, layer=ns.layer,
                           method=ns.embedding, seed=int(metrics.get("seed") or 0), cam=ns.cam, say=say)
    except CnnrunError as e:
        error(str(e))
        raise SystemExit(2) from None
    console.print(f"{ns.cam} at layer {done['layer']}: {done.get('gradcam', 0)} images; embedding map: "
                  f"{done.get('embedding', 0)} test images; written: {out}")


def run_test_set(run_dir: Path):
    """The run's own test set, loaded again from its saved config."""
    from omegaconf import OmegaConf

    from cnnrun.config import schema
    from cnnrun.data import load_dataset

    saved = layout.config(Path(run_dir))
    if not saved.is_file():
        raise CnnrunError(f"{run_dir} has no .hydra/config.yaml to load its test set from; pass --max 0 "
                          "--embedding none and image files instead")
    cfg = schema.validate(OmegaConf.load(saved))
    t = cfg.trainer
    return load_dataset(cfg.dataset, seed=t.seed, val_split=t.val_split, batch_size=t.batch_size)
