"""Fine-tuning a pretrained backbone (issue 34): cnnrun's `model=backbone` against the same network written by hand
in plain Keras 3, images per second side by side.

Article 004's kind of data: a folder of synthetic 160x120 JPEGs in 8 classes (bench/speed.py writes them), read at
128 px. Random weights (ImageNet's cannot be downloaded here; the arithmetic is the same), no augmentation, batch
32, 2 epochs; the figure is epoch 2's images/s (steady state, no tracing) and its images per CPU-second. The plain
arm is what a user writes: keras.applications.X(include_top=False, weights=None) with its own preprocessing, global
average pooling, dropout 0.2, a softmax layer, fit() on the decoded images as float32 0-255. The arms alternate in
one process, a rotating order per round.

    python bench/backbone.py                                          # MobileNetV3Small and EfficientNetV2B0
    python bench/backbone.py --models MobileNetV3Small --photos 512 --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402

import keras2  # noqa: E402
from cnnrun import backend  # noqa: E402
from cnnrun.config.schema import register_resolvers  # noqa: E402
from cnnrun.config.families import FAMILIES  # noqa: E402
from cnnrun.data import load_dataset  # noqa: E402
from keras2 import run_cnnrun  # noqa: E402
from speed import fig, photo_folder  # noqa: E402


def plain(name: str, shape, classes: int):
    """The same network as a user's own Keras 3 script: the application scales 0-255 pixels itself."""
    flag = {"include_preprocessing": True} if FAMILIES[name].preprocessing_flag else {}
    base = getattr(keras.applications, name)(include_top=False, weights=None, input_shape=shape, **flag)
    inputs = keras.Input(shape)
    x = keras.layers.GlobalAveragePooling2D()(base(inputs, training=False))
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(inputs, keras.layers.Dense(classes, activation="softmax")(x))


def run_plain(name, x, y, batch) -> float:
    keras.backend.clear_session()
    model = plain(name, x.shape[1:], int(y.max()) + 1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x.astype("float32"), y, batch_size=batch, epochs=2, verbose=0, shuffle=True,
              callbacks=[clock := keras2.epoch_clock(keras.callbacks.Callback)])
    wall, cpu = clock.last
    keras2.CPU_RATE[:] = [len(x) / cpu]
    return len(x) / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["MobileNetV3Small", "EfficientNetV2B0"])
    ap.add_argument("--photos", type=int, default=256, help="training images")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    register_resolvers()
    tmp = tempfile.TemporaryDirectory()
    folder = photo_folder(tmp.name, -(-args.photos * 3 // 16))  # the 0.33 test split leaves `photos` to train on
    rows = []
    for name in args.models:
        with initialize_config_module("cnnrun.conf", version_base="1.3"):
            cfg = compose("config", overrides=[
                "model=backbone", f"model.name={name}", "model.weights=null", "dataset=folder",
                f"dataset.path={folder}", "dataset.image_size=128", f"dataset.limit={args.photos}", "augment=none",
                f"trainer.batch_size={args.batch}", "trainer.epochs=2", "trainer.verbose=0", "trainer.val_split=0",
                "output.save_model=false", "output.misclassified_max=0", "+hooks.clock._target_=keras2.CpuClock"])
        data = load_dataset(cfg.dataset)
        x, y = data.x_train, data.y_train
        arms = {"keras3": lambda: run_plain(name, x, y, args.batch), "cnnrun": lambda: run_cnnrun(cfg)}
        got, cpu = {a: [] for a in arms}, {a: [] for a in arms}
        for r in range(args.rounds):
            for a in (list(arms) if r % 2 == 0 else list(arms)[::-1]):
                got[a].append(arms[a]())
                cpu[a].append(keras2.CPU_RATE[0])
            print(f"  {name} round {r + 1}: " + "  ".join(f"{a} {fig(got[a][-1])} ({fig(cpu[a][-1])}/cpu-s)"
                                                      for a in arms), flush=True)
        ratios = [c / k for k, c in zip(got["keras3"], got["cnnrun"])]
        cpu_ratios = [c / k for k, c in zip(cpu["keras3"], cpu["cnnrun"])]
        rows.append((name, statistics.median(got["keras3"]), statistics.median(got["cnnrun"]), ratios,
                     statistics.median(cpu["keras3"]), statistics.median(cpu["cnnrun"]), cpu_ratios))
    print(f"\nbackend {keras.backend.backend()} · {backend.device()} · {len(os.sched_getaffinity(0))} cores · "
          f"{args.photos} photos at 128 px · batch {args.batch} · epoch 2 of 2 · {args.rounds} rounds\n")
    print("| backbone | plain Keras 3 img/s | cnnrun img/s | cnnrun / plain, per round | per CPU-second: plain / cnnrun "
          "| ratio |\n|---|---|---|---|---|---|")
    for name, k, c, ratios, kc, cc, cpu_ratios in rows:
        print(f"| {name} | {fig(k)} | {fig(c)} | **{statistics.median(ratios):.2f}** "
              f"({', '.join(f'{r:.2f}' for r in ratios)}) | {fig(kc)} / {fig(cc)} | **{statistics.median(cpu_ratios):.2f}** |")


if __name__ == "__main__":
    main()
