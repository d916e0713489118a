"""What the training recipes and `explain` cost.

1. trainer.ema, augment=mixup, augment=cutmix: cnn4 at batch 256 on 6 000 Fashion-MNIST images, epoch 3's
   time with the recipe against the plain step, alternated in this one process (ratio per pair).
2. explain: Grad-CAM (HiResCAM) of 16 misclassified images and the t-SNE embedding map of all 10 000
   Fashion-MNIST test images, for a cnn4 trained one epoch.

    python bench/recipes.py [--pairs 2] [--recipes ema,mixup,cutmix] [--no-explain]
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import keras  # noqa: E402

from cnnrun import backend  # noqa: E402
from cnnrun.record import explain  # noqa: E402
from cnnrun.data import load_dataset  # noqa: E402
from cnnrun.training.train import train  # noqa: E402
from conftest import make_config  # noqa: E402

BASE = ["dataset=fashion", "model=cnn4", "trainer.batch_size=256", "trainer.verbose=0", "output.misclassified_max=0",
        "trainer.checkpoint=false"]


RECIPES = {"plain": [], "ema": ["trainer.ema=0.999"], "mixup": ["augment=mixup"], "cutmix": ["augment=cutmix"]}


def epoch_seconds(run_dir: Path, epoch: int) -> float:
    with open(run_dir / "history.csv", encoding="utf-8") as f:
        return float(list(csv.DictReader(f))[epoch - 1]["seconds"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=2)
    ap.add_argument("--recipes", default="ema,mixup,cutmix", help="which recipes to time against the plain step")
    ap.add_argument("--no-explain", action="store_true", help="skip the explain timing")
    ns = ap.parse_args()
    print(f"backend {backend.name()}, keras {keras.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for recipe in ns.recipes.split(","):
            ratios = []
            for i in range(ns.pairs):
                times = {}
                for arm in (("plain", recipe) if i % 2 == 0 else (recipe, "plain")):
                    run = tmp / f"{recipe}-{i}-{arm}"
                    train(make_config(*BASE, "dataset.limit=6000", "trainer.epochs=3", *RECIPES[arm], tiny=False), run)
                    times[arm] = epoch_seconds(run, 3)
                ratios.append(times[recipe] / times["plain"])
                print(f"{recipe} pair {i}: epoch 3 plain {times['plain']:.2f} s, {recipe} {times[recipe]:.2f} s, "
                      f"ratio {ratios[-1]:.3f}", flush=True)
            print(f"{recipe} / plain, epoch time: {', '.join(f'{r:.3f}' for r in ratios)}", flush=True)
        if ns.no_explain:
            return

        cfg = make_config(*BASE, "trainer.epochs=1", tiny=False)
        run = tmp / "explain"
        train(cfg, run)
        model = keras.models.load_model(run / "model.keras")
        data = load_dataset(cfg.dataset, seed=0)
        start = time.perf_counter()
        probs = model.predict(data.x_test, batch_size=1024, verbose=0)
        done = explain.explain(run / "explain", model, data.class_names, data.x_test, data.y_test, probs,
                               max_images=16, method="none")
        cam_s = time.perf_counter() - start
        start = time.perf_counter()
        explain.explain(run / "explain", model, data.class_names, data.x_test, data.y_test, probs, max_images=0,
                        method="tsne")
        tsne_s = time.perf_counter() - start
        print(f"explain: HiResCAM of {done['gradcam']} images (predicted and true class) at {done['layer']}: "
              f"{cam_s:.1f} s (with the test-set prediction); t-SNE map of {len(data.x_test)} test images: "
              f"{tsne_s:.1f} s; together {cam_s + tsne_s:.1f} s")


if __name__ == "__main__":
    main()
