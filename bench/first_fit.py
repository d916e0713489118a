"""The first `fit()` of a compiled model: plain Keras 3 against cnnrun's `build_before_tracing` first.

On TensorFlow with no distribution strategy, Keras builds the optimizer's slots and the compiled metrics inside the
first trace of the train step, and TensorFlow traces a function whose first trace made variables once more. cnnrun
builds them first (`cnnrun.training.optim.build_before_tracing`, Keras' own `_symbolic_build`, which its JAX fit()
calls), so the step is traced once. Two arms, the same model, data and batch, each round a new model, alternated:

- `keras`: compile, then one `fit()` of one epoch (what a plain Keras 3 script does);
- `built`: compile, `build_before_tracing`, then the same `fit()`.

Each time is compile + (build) + the first epoch, tracing included: a run's start. The figures are the medians over
rounds, and the median of the per-round ratios built / keras.

    python bench/first_fit.py                                   # dense, mnist_cnn, cnn4, MobileNetV3Small; 3 rounds
    python bench/first_fit.py --models cnn4 --rounds 5 --images 512
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from cnnrun.training.optim import build_before_tracing  # noqa: E402


def model(name: str) -> tuple[keras.Model, tuple]:
    """A network by cnnrun's name (28x28x1, 10 classes), or a keras.applications one (32x32x3, random weights)."""
    if hasattr(keras.applications, name):
        base = getattr(keras.applications, name)(include_top=False, weights=None, input_shape=(32, 32, 3))
        inputs = keras.Input((32, 32, 3))
        x = keras.layers.GlobalAveragePooling2D()(base(inputs))
        return keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)), (32, 32, 3)
    from hydra import compose, initialize_config_module

    from cnnrun.config.schema import register_resolvers
    from cnnrun.models import build_model

    register_resolvers()
    with initialize_config_module("cnnrun.conf", version_base="1.3"):
        cfg = compose("config", overrides=[f"model={name}"])
    return build_model(cfg.model, (28, 28, 1), 10), (28, 28, 1)


def first_fit(name: str, arm: str, images: int, batch: int) -> float:
    keras.backend.clear_session()
    net, shape = model(name)
    x = np.random.default_rng(0).random((images, *shape), dtype=np.float32)
    y = np.arange(images) % 10
    start = time.perf_counter()
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    if arm == "built":
        build_before_tracing(net)
    net.fit(x, y, batch_size=batch, epochs=1, verbose=0)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["dense", "mnist_cnn", "cnn4", "MobileNetV3Small"])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--batch", type=int, default=64)
    a = p.parse_args()
    print(f"backend {keras.backend.backend()}, {a.images} images, batch {a.batch}, {a.rounds} rounds (medians)\n")
    print("| model | Keras' first fit() (s) | built first (s) | ratio built / keras |")
    print("|---|---|---|---|")
    for name in a.models:
        first_fit(name, "keras", a.images, a.batch)  # warm: imports, kernels, the first model of its kind
        times = {"keras": [], "built": []}
        for r in range(a.rounds):
            for arm in (("keras", "built") if r % 2 == 0 else ("built", "keras")):
                times[arm].append(first_fit(name, arm, a.images, a.batch))
        ratio = statistics.median(b / k for b, k in zip(times["built"], times["keras"]))
        print(f"| {name} | {statistics.median(times['keras']):.2f} | {statistics.median(times['built']):.2f} "
              f"| {ratio:.2f} |", flush=True)


if __name__ == "__main__":
    main()
