"""What trainer.precision and trainer.jit do to training speed, measured with `cnnrun train` itself.

Each option runs in turn in this one process (alternating over the repeats); the figure is epoch 2's
images/s from history.csv (steady state: tracing and XLA compilation fall in epoch 1). Ratios are
against `trainer.precision=float32 trainer.jit=auto`, the default.

    python bench/options.py                              # cnn4, batch 256, 6 000 images
    KERAS_BACKEND=jax python bench/options.py --model resnet --batch 512
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402

from cnnrun import backend  # noqa: E402
from cnnrun.config.schema import register_resolvers  # noqa: E402
from cnnrun.training.train import train  # noqa: E402

OPTIONS = {
    "float32, jit auto (default)": ["trainer.precision=float32", "trainer.jit=auto"],
    "mixed_bfloat16": ["trainer.precision=mixed_bfloat16"],
    "mixed_float16": ["trainer.precision=mixed_float16"],
    "jit true (XLA)": ["trainer.jit=true"],
}


def epoch2_ips(overrides: list[str], images: int) -> float:
    with initialize_config_module("cnnrun.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, tmp)
        with open(os.path.join(tmp, "history.csv")) as f:
            return images / float(list(csv.DictReader(f))[-1]["seconds"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cnn4")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--only", nargs="+", choices=list(OPTIONS), help="a subset of the options")
    args = ap.parse_args()
    register_resolvers()
    base = [f"model={args.model}", f"trainer.batch_size={args.batch}", f"dataset.limit={args.images}",
            "trainer.epochs=2", "trainer.verbose=0", "output.save_model=false", "output.misclassified_max=0",
            "trainer.checkpoint=false"]
    chosen = {k: v for k, v in OPTIONS.items() if not args.only or k in args.only or k.startswith("float32")}
    print(f"backend {keras.backend.backend()} · device {backend.device()} · {args.model} batch {args.batch} · "
          f"{args.images} images", flush=True)
    results: dict[str, list[float]] = {k: [] for k in chosen}
    for _ in range(args.repeats):
        for name, extra in chosen.items():
            results[name].append(epoch2_ips(base + extra, args.images))
            print(f"  {name:28s} {results[name][-1]:7.0f} img/s", flush=True)
    ref = statistics.median(results["float32, jit auto (default)"])
    print("\n| option | img/s (median) | ratio to default |\n|---|---|---|")
    for name, values in results.items():
        m = statistics.median(values)
        print(f"| {name} | {m:.0f} | {m / ref:.2f} |")


if __name__ == "__main__":
    main()
