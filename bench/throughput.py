"""Training throughput: `cnnrun train` against a plain Keras 3 script, same model, data and batch size.

Both run in this one process, alternating (plain, cnnrun, plain, cnnrun, ...), and both are timed the
same way: wall time of model.fit over all epochs, first-epoch tracing included. The ratio is
cnnrun images/s over plain images/s (>= 1.0: cnnrun is no slower than the hand-written script).

    python bench/throughput.py                      # Fashion-MNIST if found, else sklearn digits
    python bench/throughput.py --images 6000 --repeats 3 --models mnist_cnn:32 cnn4:256
    python bench/throughput.py --models dense:32 mnist_cnn:32 --variants device_data spe16 device_data+spe16

--variants adds cnnrun runs with other ways of feeding fit() (trainer.device_data,
trainer.steps_per_execution), each alternating with the others and reported against the same plain run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402
from keras import layers  # noqa: E402

from cnnrun import backend  # noqa: E402
from cnnrun.config.schema import register_resolvers  # noqa: E402
from cnnrun.data import load_dataset  # noqa: E402
from cnnrun.training.train import train  # noqa: E402


VARIANTS = {
    "default": [],
    "device_data": ["trainer.device_data=true"],
    "spe16": ["trainer.steps_per_execution=16"],
    "device_data+spe16": ["trainer.device_data=true", "trainer.steps_per_execution=16"],
}


def plain_model(name: str, input_shape=(28, 28, 1), classes=10) -> keras.Model:
    """The articles' models written the way a user's own script would: Sequential, float inputs."""
    if name == "vgg16":  # article 004: VGG16 without its top (random weights here), a new head, 15 layers frozen
        base = keras.applications.VGG16(weights=None, include_top=False, input_shape=input_shape)
        x = layers.Dropout(0.5)(layers.Dense(512, activation="relu")(layers.Flatten()(base.output)))
        model = keras.Model(base.input, layers.Dense(classes, activation="softmax")(x))
        for layer in model.layers[:15]:
            layer.trainable = False
        return model
    conv = lambda f: layers.Conv2D(f, (3, 3), activation="relu")  # noqa: E731
    if name == "mnist_cnn":
        stack = [conv(32), conv(64), layers.MaxPooling2D(), layers.Dropout(0.25), layers.Flatten(),
                 layers.Dense(128, activation="relu"), layers.Dropout(0.5)]
    elif name == "cnn4":
        bn = layers.BatchNormalization
        stack = [conv(32), bn(), conv(32), bn(), layers.MaxPooling2D(), layers.Dropout(0.25), conv(64), bn(),
                 layers.Dropout(0.25), conv(128), bn(), layers.MaxPooling2D(), layers.Dropout(0.25), layers.Flatten(),
                 layers.Dense(512, activation="relu"), bn(), layers.Dropout(0.5), layers.Dense(128, activation="relu"),
                 bn(), layers.Dropout(0.5)]
    elif name == "cnn3":
        stack = [conv(32), conv(64), conv(128), layers.MaxPooling2D(), layers.Dropout(0.25), layers.Flatten(),
                 layers.Dense(128, activation="relu"), layers.Dropout(0.5)]
    elif name == "tf_cnn":
        stack = [conv(32), layers.MaxPooling2D(), conv(64), layers.MaxPooling2D(), conv(64), layers.Flatten(),
                 layers.Dense(64, activation="relu")]
    elif name == "dense":
        stack = [layers.Flatten(), layers.Dense(128, activation="relu")]
    else:
        raise SystemExit(f"no plain version of {name}")
    return keras.Sequential([keras.Input(input_shape), *stack, layers.Dense(classes, activation="softmax")])


def run_plain(name, x, y, batch, epochs, seed) -> float:
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = plain_model(name)
    model.compile(optimizer=keras.optimizers.Adam(), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    xf = x.astype("float32") / 255.0  # what every article does
    start = time.perf_counter()
    model.fit(xf, y, batch_size=batch, epochs=epochs, verbose=0, shuffle=True)
    return len(x) * epochs / (time.perf_counter() - start)


def run_cnnrun(cfg) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return train(cfg, tmp)["images_per_second"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=12000, help="training images per run")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2, help="alternating pairs per model")
    ap.add_argument("--models", nargs="+", default=["mnist_cnn:32", "cnn4:256"], help="MODEL:BATCH pairs")
    ap.add_argument("--threads", default="auto", help="trainer.threads for both (TF only)")
    ap.add_argument("--variants", nargs="+", default=[], choices=[v for v in VARIANTS if v != "default"],
                    help="cnnrun feed options to measure besides the default")
    args = ap.parse_args()

    register_resolvers()
    backend.configure(args.threads)
    dataset = "fashion"
    try:
        with initialize_config_module("cnnrun.conf", version_base="1.3"):
            probe = compose("config", overrides=["dataset=fashion", f"dataset.limit={args.images}"])
        data = load_dataset(probe.dataset)
    except Exception:  # noqa: BLE001 - no Fashion-MNIST here: fall back to the bundled digits
        dataset = "digits"
        with initialize_config_module("cnnrun.conf", version_base="1.3"):
            probe = compose("config", overrides=["dataset=digits"])
        data = load_dataset(probe.dataset)
    x, y = data.x_train, data.y_train
    print(f"backend {keras.backend.backend()} · device {backend.device()} · {dataset}: {len(x)} images · "
          f"{args.epochs} epochs · threads {args.threads} · {os.cpu_count()} CPUs", flush=True)

    rows = []
    for spec in args.models:
        name, batch = spec.split(":")
        batch = int(batch)
        cfgs = {}
        for variant in ["default", *args.variants]:
            with initialize_config_module("cnnrun.conf", version_base="1.3"):
                cfgs[variant] = compose("config", overrides=[
                    f"dataset={dataset}", f"dataset.limit={args.images}", f"model={name}",
                    f"trainer.batch_size={batch}", f"trainer.epochs={args.epochs}", "trainer.verbose=0",
                    f"trainer.threads={args.threads}", "output.save_model=false", "output.misclassified_max=0",
                    "trainer.checkpoint=false", *VARIANTS[variant],
                ])
        plain, ours = [], {v: [] for v in cfgs}
        for _ in range(args.repeats):
            plain.append(run_plain(name, x, y, batch, args.epochs, seed=0))
            for variant, cfg in cfgs.items():
                ours[variant].append(run_cnnrun(cfg))
            print(f"  {name} batch {batch}: plain {plain[-1]:7.0f} img/s   "
                  + "   ".join(f"{v} {ours[v][-1]:7.0f}" for v in cfgs), flush=True)
        p = statistics.median(plain)
        for variant in cfgs:
            o = statistics.median(ours[variant])
            rows.append((name, batch, variant, p, o, o / p))

    print("\n| model | batch | cnnrun feed | plain Keras img/s | cnnrun img/s | ratio |\n|---|---|---|---|---|---|")
    for name, batch, variant, p, o, r in rows:
        print(f"| {name} | {batch} | {variant} | {p:.0f} | {o:.0f} | {r:.2f} |")
    sys.exit(0)


if __name__ == "__main__":
    main()
