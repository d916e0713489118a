"""One device, three ways: the articles' Keras 2 (`tf_keras`), a plain Keras 3 script, and `cnnrun train`.

Issue 22's bar: cnnrun at least as fast as the faster of the other two on every article model at its
batch. cnnrun runs the article's preset (8 steps per compiled call at batch 32, 4 for cnn4), without
validation. Each arm trains the same net on the same images (Fashion-MNIST, else digits) for 2 epochs;
the figure is epoch 2's images/s (steady state: no tracing), and its images per CPU-second of the process
(the work a step costs; the wall figure also moves with how many cores a shared host gives the run). The
arms alternate in one process, in a rotating order, so a drifting machine hits all three; the ratio is cnnrun over the faster baseline,
round by round, and its median. Needs `pip install 'cnnrun[bench]'` (tf-keras).

    python bench/speed.py                                   # dense:32 mnist_cnn:32 cnn3:32 cnn4:256 tf_cnn:32, 3 rounds
    python bench/speed.py --models cnn4:256 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402

from cnnrun import backend  # noqa: E402
from cnnrun.cli import register_resolvers  # noqa: E402
from cnnrun.data import load_dataset  # noqa: E402
import keras2  # noqa: E402
from keras2 import last_epoch_rate, run_cnnrun, run_keras2  # noqa: E402
from throughput import plain_model  # noqa: E402

# cnnrun trains each model as its article's preset does (the other two arms are the articles' own scripts)
PRESETS = {"dense": "article001_dense", "mnist_cnn": "article001_mnist_cnn", "cnn3": "article001_cnn3",
           "cnn4": "article000_cnn4", "tf_cnn": "article003_tf_cnn_mnist"}


def run_plain(name, x, y, batch) -> float:
    """Keras 3 as a user's own script writes it: Sequential, float inputs scaled on the host, fit()."""
    keras.backend.clear_session()
    model = plain_model(name)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return last_epoch_rate(model, keras.callbacks.Callback, x, y, batch)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["dense:32", "mnist_cnn:32", "cnn3:32", "cnn4:256", "tf_cnn:32"])
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="extra cnnrun overrides (its arm only)")
    args = ap.parse_args()
    register_resolvers()
    rows = []
    for spec in args.models:
        name, batch = spec.split(":")
        batch = int(batch)
        with initialize_config_module("cnnrun.conf", version_base="1.3"):
            cfg = compose("config", overrides=[
                *([f"experiment={PRESETS[name]}"] if name in PRESETS else []),
                "dataset=fashion" if os.path.isdir("/usr/share/datasets/fashion-mnist") else "dataset=digits",
                f"model={name}", f"dataset.limit={args.images}", f"trainer.batch_size={batch}", "trainer.epochs=2",
                "trainer.verbose=0", "trainer.val_split=0", "output.save_model=false", "output.misclassified_max=0",
                "+hooks.clock._target_=keras2.CpuClock", *args.set])
        data = load_dataset(cfg.dataset)
        x, y = data.x_train, data.y_train
        arms = {"keras2": lambda: run_keras2(name, x, y, batch), "keras3": lambda: run_plain(name, x, y, batch),
                "cnnrun": lambda: run_cnnrun(cfg)}
        got = {a: [] for a in arms}
        cpu = {a: [] for a in arms}
        for r in range(args.rounds):
            order = list(arms)[r % 3:] + list(arms)[:r % 3]
            for a in order:
                got[a].append(arms[a]())
                cpu[a].append(keras2.CPU_RATE[0])
            print(f"  {name}:{batch} round {r + 1}: " + "  ".join(f"{a} {got[a][-1]:6.0f} ({cpu[a][-1]:.0f}/cpu-s)"
                                                                  for a in arms), flush=True)
        ratios = [c / max(k2, k3) for k2, k3, c in zip(got["keras2"], got["keras3"], got["cnnrun"])]
        cpu_ratios = [c / max(k2, k3) for k2, k3, c in zip(cpu["keras2"], cpu["keras3"], cpu["cnnrun"])]
        rows.append((name, batch, *(statistics.median(got[a]) for a in arms), statistics.median(ratios), ratios,
                     *(statistics.median(cpu[a]) for a in arms), statistics.median(cpu_ratios), cpu_ratios))
    print(f"\nbackend {keras.backend.backend()} · {backend.device()} · {len(os.sched_getaffinity(0))} cores · "
          f"{args.images} images · epoch 2 of 2 · {args.rounds} rounds · cnnrun options: {' '.join(args.set) or 'default'}")
    print("\nwall clock, images/s:\n\n| model | batch | Keras 2 (tf_keras) | plain Keras 3 | cnnrun | cnnrun / faster, "
          "per round |\n|---|---|---|---|---|---|")
    for name, batch, k2, k3, c, ratio, ratios, *_ in rows:
        print(f"| {name} | {batch} | {k2:.0f} | {k3:.0f} | {c:.0f} | **{ratio:.2f}** ({', '.join(f'{r:.2f}' for r in ratios)}) |")
    print("\nimages per CPU-second (all the process's threads: the work a step costs, steadier on a shared host):\n\n"
          "| model | batch | Keras 2 (tf_keras) | plain Keras 3 | cnnrun | cnnrun / faster, per round |\n|---|---|---|---|---|---|")
    for name, batch, *_, k2, k3, c, ratio, ratios in rows:
        print(f"| {name} | {batch} | {k2:.0f} | {k3:.0f} | {c:.0f} | **{ratio:.2f}** ({', '.join(f'{r:.2f}' for r in ratios)}) |")


if __name__ == "__main__":
    main()
