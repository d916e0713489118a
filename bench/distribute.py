"""What data-parallel training costs: one run on 2 devices against the same run on 1, alternated (issue 22).

On a CPU the two devices are JAX's host platform forced into two (XLA_FLAGS), sharing the same cores, so
there is no speed to gain: what shows is the machinery's cost (splitting every batch, the all-reduce of the
gradients, sharded variables). Each arm is a real `cnnrun train` process with KERAS_BACKEND=jax, and both
run under the same XLA_FLAGS, so they differ only in `distribute`. The figure is the median epoch time of
epochs 2..N (epoch 1 compiles) from each run's history.csv, and the ratio is taken pair by pair.

    python bench/distribute.py                                 # mnist_cnn:128 and cnn4:256, 6 000 images
    python bench/distribute.py --models cnn4:256 --pairs 5
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path


def epoch_seconds(model: str, batch: int, images: int, epochs: int, distribute: str, where: Path) -> float:
    dataset = "fashion" if Path("/usr/share/datasets/fashion-mnist").is_dir() else "digits"
    env = {**os.environ, "KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    run_dir = where / f"{model}-{distribute}-{len(list(where.iterdir()))}"
    r = subprocess.run([sys.executable, "-m", "cnnrun", "train", f"dataset={dataset}", f"dataset.limit={images}",
                        f"model={model}", f"trainer.batch_size={batch}", f"trainer.epochs={epochs}", "trainer.verbose=0",
                        f"distribute={distribute}", "output.save_model=false", "output.misclassified_max=0",
                        f"hydra.run.dir={run_dir}"], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{model} {distribute} failed:\n{r.stderr[-2000:]}")
    with open(run_dir / "history.csv") as f:
        rows = list(csv.DictReader(f))
    return statistics.median(float(row["seconds"]) for row in rows[1:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["mnist_cnn:128", "cnn4:256"], help="MODEL:BATCH (global batch)")
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.models:
            model, batch = spec.split(":")
            one, two = [], []
            for i in range(args.pairs):
                arms = [("none", one), ("data_parallel", two)]
                for distribute, got in (arms if i % 2 == 0 else arms[::-1]):
                    got.append(epoch_seconds(model, int(batch), args.images, args.epochs, distribute, Path(tmp)))
                print(f"  {model}:{batch} pair {i + 1}: 1 device {one[-1]:.2f} s/epoch, 2 devices {two[-1]:.2f} s/epoch",
                      flush=True)
            ratios = [b / a for a, b in zip(one, two)]
            rows.append((model, batch, statistics.median(one), statistics.median(two), statistics.median(ratios), ratios))
    print(f"\nJAX on CPU, 2 forced host devices sharing {len(os.sched_getaffinity(0))} cores · {args.images} images · "
          f"median of epochs 2..{args.epochs} · {args.pairs} alternated pairs")
    print("\n| model | global batch | 1 device s/epoch | 2 devices s/epoch | 2 / 1 |\n|---|---|---|---|---|")
    for model, batch, a, b, r, ratios in rows:
        print(f"| {model} | {batch} | {a:.2f} | {b:.2f} | **{r:.2f}** ({', '.join(f'{x:.2f}' for x in ratios)}) |")


if __name__ == "__main__":
    main()
