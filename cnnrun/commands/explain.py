"""`cnnrun explain RUN_DIR [IMAGE ...]`: Grad-CAM heat-maps and an embedding map of a finished run's model
(the work is cnnrun/record/explain.py's, which also runs at the end of training with output.explain=true).
This module imports no Keras: its arguments are checked before the backend starts."""

from __future__ import annotations

import argparse
from pathlib import Path

from cnnrun import CnnrunError
from cnnrun.console import console, error, start_backend
from cnnrun.data.paths import image_files
from cnnrun.record import layout, own_folder, writable_folder
from cnnrun.commands import add_user_code, import_user_code
from cnnrun.record.saved import class_names, finished_model, load_model, test_set, unreadable_test_set
from cnnrun.record.outcome import EXIT_CONFIG


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
    add_user_code(ap, loader=True)
    ns = ap.parse_args(args)
    if ns.max < 0:
        ap.error(f"--max {ns.max} must be 0 or more")
    missing = [str(p) for p in ns.inputs if not p.exists()]
    if missing:
        ap.error(f"no such file or folder: {', '.join(missing)}")
    try:
        model_file, metrics = finished_model(ns.run_dir)
        out = ns.out or ns.run_dir / layout.EXPLAIN
        listed = set(layout.explain_written(out))
        own_folder(out, {**dict.fromkeys(layout.EXPLAIN_FILES), "gradcam": lambda name: name in listed}, "--out",
                   inside=None if ns.out else ns.run_dir)  # the user's files there are never replaced or deleted
        writable_folder(out, "--out")  # before any work: not after minutes of Grad-CAM
        wanted = ns.max > 0 or ns.embedding != "none"  # the test set: misclassified images, the embedding map
        why = unreadable_test_set(ns.run_dir, ns.loader) if wanted else None
        if why and not ns.inputs:
            raise CnnrunError(f"explain: {why}; or explain images you give: cnnrun explain {ns.run_dir} IMAGE ...")
        start_backend()  # only now (seconds): every refusal above comes at once
        import_user_code(ns)  # the model's own layers, named by the user
        from cnnrun.record.explain import cut, explain

        model = load_model(model_file, compile=False, command="explain")
        if ns.layer:
            cut(model, ns.layer)  # a wrong layer name is refused before the test set is loaded
        say = lambda text: console.print(text, highlight=False, markup=False)  # noqa: E731 - a line in a log too
        data = None
        if why:
            say(f"explain: the test set is left out ({why}); explaining the images given only")
        elif wanted:
            say(f"explain: loading the test set of {ns.run_dir}")
            data, _ = test_set(ns.run_dir, ns.loader)
        names = class_names(metrics, model) if metrics.get("class_names") or not data else data.class_names
        with console.status("explaining: Grad-CAM, then the embedding map of the test set"):
            done = explain(out, model, names, *((data.x_test, data.y_test) if data else (None, None)),
                           files=image_files(ns.inputs) if ns.inputs else None, max_images=ns.max, layer=ns.layer,
                           method=ns.embedding, seed=int(metrics.get("seed") or 0), cam=ns.cam, say=say)
    except CnnrunError as e:
        error(str(e))
        raise SystemExit(EXIT_CONFIG) from None
    console.print(f"{ns.cam} at layer {done['layer']}: {done.get('gradcam', 0)} images; embedding map: "
                  f"{done.get('embedding', 0)} test images; written: {out}")
