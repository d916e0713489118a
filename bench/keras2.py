"""The speed to beat: the articles' own Keras 2 (`tf_keras`) against `cnnrun train`, same model and batch.

The baseline is the article-000 way: a Sequential cnn4 in tf_keras (Keras 2 on TensorFlow), float32
inputs scaled on the host, model.fit with shuffle. cnnrun runs the same net through its own pipeline
(uint8 in, scaling on the device, per-epoch fit with checkpoints). They alternate in one process;
each figure is epoch 2's images/s (steady state, no tracing). Needs `pip install tf-keras`.

    python bench/keras2.py                       # cnn4, batch 256, 12 000 images, 3 pairs
    python bench/keras2.py --model mnist_cnn --batch 32
    python bench/keras2.py --set trainer.device_data=true trainer.steps_per_execution=16   # cnnrun's feed options
    python bench/keras2.py --accuracy dense --seeds 0 1 2   # article 001's dense run in Keras 2, full data
    python bench/keras2.py --accuracy cnn3 --seeds 0 1      # ... its cnn3 run (mnist_cnn and cnn4 work too)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402

from cnnrun.config.schema import register_resolvers  # noqa: E402
from cnnrun.data import load_dataset  # noqa: E402
from cnnrun.hooks import Hook  # noqa: E402
from cnnrun.training.train import train  # noqa: E402


def keras2_model(name: str, input_shape=(28, 28, 1), classes=10):
    """The article's Keras 2 model (tf_keras: the benchmark's baseline, not cnnrun code)."""
    import tf_keras as k2  # noqa: PLC0415

    L = k2.layers
    if name == "vgg16":  # article 004's tuning_vgg16(), random weights (ImageNet's cannot be downloaded here)
        inputs = k2.Input(input_shape)
        base = k2.applications.VGG16(weights=None, include_top=False, input_tensor=inputs)
        x = L.Dropout(0.5)(L.Dense(512, activation="relu")(L.Flatten()(base.output)))
        model = k2.Model(inputs, L.Dense(classes, activation="softmax")(x))
        for layer in model.layers[:15]:  # the article's freeze, as its preset has it
            layer.trainable = False
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model, k2
    conv = lambda f: L.Conv2D(f, (3, 3), activation="relu")  # noqa: E731
    if name == "cnn4":
        bn = L.BatchNormalization
        stack = [conv(32), bn(), conv(32), bn(), L.MaxPooling2D(), L.Dropout(0.25), conv(64), bn(), L.Dropout(0.25),
                 conv(128), bn(), L.MaxPooling2D(), L.Dropout(0.25), L.Flatten(), L.Dense(512, activation="relu"), bn(),
                 L.Dropout(0.5), L.Dense(128, activation="relu"), bn(), L.Dropout(0.5)]
    elif name == "dense":
        stack = [L.Flatten(), L.Dense(128, activation="relu")]
    elif name == "cnn3":
        stack = [conv(32), conv(64), conv(128), L.MaxPooling2D(), L.Dropout(0.25), L.Flatten(),
                 L.Dense(128, activation="relu"), L.Dropout(0.5)]
    elif name == "tf_cnn":
        stack = [conv(32), L.MaxPooling2D(), conv(64), L.MaxPooling2D(), conv(64), L.Flatten(),
                 L.Dense(64, activation="relu")]
    elif name == "mnist_cnn":
        stack = [conv(32), conv(64), L.MaxPooling2D(), L.Dropout(0.25), L.Flatten(), L.Dense(128, activation="relu"),
                 L.Dropout(0.5)]
    else:
        raise SystemExit(f"no Keras 2 version of {name}")
    model = k2.Sequential([k2.Input(input_shape), *stack, L.Dense(classes, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model, k2


# Epoch 2's images per CPU-second of the process (all its threads) in the last run measured: a second figure
# beside wall-clock images/s. On a shared VM the host sometimes leaves a run one core instead of two, which
# moves the wall figure by up to 1.7x (seen: 290 vs 500 img/s, cnn4); the CPU figure, the work a step costs,
# moved by under 10 % in the same runs.
CPU_RATE: list[float] = []


def last_epoch_rate(model, callback_base, x, y, batch) -> float:
    """Images/s of epoch 2 of model.fit on float inputs scaled on the host, as the articles feed it
    (`callback_base`: the Callback class of the model's own Keras, 2 or 3); its images per CPU-second go to
    CPU_RATE."""
    model.fit(x.astype("float32") / 255.0, y, batch_size=batch, epochs=2, verbose=0, shuffle=True,
              callbacks=[clock := epoch_clock(callback_base)])
    (wall, cpu), n = (clock.total, clock.epochs * len(x)) if WHOLE[0] else (clock.last, len(x))
    CPU_RATE[:] = [n / cpu]
    return n / wall


def epoch_clock(callback_base):
    """A callback keeping the last epoch's (wall, process CPU) seconds in `.last`, and every epoch's together in
    `.total` (WHOLE: the first epoch, tracing and compiling included, counts too)."""
    import time

    class Clock(callback_base):
        last = (float("nan"), float("nan"))

        def on_epoch_begin(self, e, logs=None):
            self.t = (time.perf_counter(), time.process_time())

        def on_epoch_end(self, e, logs=None):
            self.last = (time.perf_counter() - self.t[0], time.process_time() - self.t[1])
            self.total = tuple(a + b for a, b in zip(getattr(self, "total", (0.0, 0.0)), self.last))
            self.epochs = getattr(self, "epochs", 0) + 1

    return Clock()


WHOLE = [False]  # bench/speed.py --whole: rates over every epoch, the first one's tracing included


class CpuClock(Hook):
    """A cnnrun hook (`+hooks.clock._target_=keras2.CpuClock`) that measures cnnrun's epochs the same way."""

    def callbacks(self, run, data, others):
        import keras

        CpuClock.clock = epoch_clock(keras.callbacks.Callback)
        return [*others, CpuClock.clock]


def run_keras2(name, x, y, batch) -> float:
    model, k2 = keras2_model(name, x.shape[1:], int(y.max()) + 1)
    return last_epoch_rate(model, k2.callbacks.Callback, x, y, batch)


def run_cnnrun(cfg) -> float:
    """cnnrun's images/s of its last epoch (history.csv); with the CpuClock hook in cfg, CPU_RATE too."""
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, tmp)
        import csv

        with open(os.path.join(tmp, "history.csv")) as f:
            rows = list(csv.DictReader(f))
        if WHOLE[0]:
            clock = CpuClock.clock
            n = clock.epochs * cfg.dataset.limit
            CPU_RATE[:] = [n / clock.total[1]]
            return n / clock.total[0]
        if "clock" in (cfg.get("hooks") or {}):
            CPU_RATE[:] = [cfg.dataset.limit / CpuClock.clock.last[1]]
        return cfg.dataset.limit / float(rows[-1]["seconds"])


def keras2_accuracy(name: str, seeds: list[int], epochs: int) -> None:
    """Article 001's run in Keras 2 on all 60k images: the test accuracy it reaches, per seed."""
    import tf_keras as k2  # noqa: PLC0415

    from cnnrun.data import load_mnist_like

    arrays = load_mnist_like("fashion", None)[0]
    x, y = arrays["x_train"][..., None].astype("float32") / 255.0, arrays["y_train"]
    xt, yt = arrays["x_test"][..., None].astype("float32") / 255.0, arrays["y_test"]
    accs = []
    for seed in seeds:
        k2.utils.set_random_seed(seed)
        model, _ = keras2_model(name)
        model.fit(x, y, batch_size=32, epochs=epochs, verbose=0)
        accs.append(model.evaluate(xt, yt, verbose=0)[1])
        print(f"  Keras 2 (tf_keras) {name}, seed {seed}: test accuracy {100 * accs[-1]:.2f} %", flush=True)
    print(f"\n{name}, {epochs} epochs, batch 32, Keras 2: mean {100 * statistics.fmean(accs):.2f} %, "
          f"median {100 * statistics.median(accs):.2f} %, std {100 * statistics.pstdev(accs):.2f} over seeds {seeds}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="cnn4")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--images", type=int, default=12000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--accuracy", metavar="MODEL", help="instead: test accuracy of MODEL trained in Keras 2")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="extra cnnrun overrides (its side only)")
    args = ap.parse_args()
    if args.accuracy:
        keras2_accuracy(args.accuracy, args.seeds, args.epochs)
        return
    register_resolvers()
    with initialize_config_module("cnnrun.conf", version_base="1.3"):
        cfg = compose("config", overrides=[
            f"model={args.model}", f"dataset.limit={args.images}", f"trainer.batch_size={args.batch}", "trainer.epochs=2",
            "trainer.verbose=0", "output.save_model=false", "output.misclassified_max=0", *args.set])
    data = load_dataset(cfg.dataset)
    x, y = np.asarray(data.x_train), data.y_train
    k2s, ours = [], []
    for _ in range(args.repeats):
        k2s.append(run_keras2(args.model, x, y, args.batch))
        ours.append(run_cnnrun(cfg))
        print(f"  {args.model} batch {args.batch}: Keras 2 (tf_keras) {k2s[-1]:6.0f} img/s   cnnrun {ours[-1]:6.0f} img/s",
              flush=True)
    k, o = statistics.median(k2s), statistics.median(ours)
    print(f"\n| model | batch | cnnrun options | Keras 2 (tf_keras) img/s | cnnrun (Keras 3) img/s | ratio |\n"
          f"|---|---|---|---|---|---|\n| {args.model} | {args.batch} | {' '.join(args.set) or 'default'} | {k:.0f} | {o:.0f} | "
          f"{o / k:.2f} |")


if __name__ == "__main__":
    main()
