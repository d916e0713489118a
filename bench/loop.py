"""cnnrun's loop (one `fit()` per epoch on that epoch's order) against Keras running every epoch in one `fit()`.

Issue 33 asks whether Keras should run the epochs. cnnrun calls `fit()` once per epoch, each on the order
(seed, epoch) gives, so a stopped run resumes on exactly the batches it would have seen; Keras' own
`shuffle=True` draws its order from the backend's global RNG, which a checkpoint does not hold. Three arms,
the same model, data, batch and steps per call, alternated in one process in a rotating order:

- `keras`: one `fit(epochs=N, shuffle=True)` on the arrays: Keras runs the epochs (not resumable exactly);
- `per_epoch`: N `fit(initial_epoch=e, epochs=e+1)` calls on `x[order_e]` (cnnrun's loop.fit);
- `dataset`: one `fit(epochs=N)` on a keras.utils.PyDataset that serves epoch e's order (the exact alternative).

Each arm's time is the whole `fit` work of N epochs after the first (tracing is paid once per model, before the
clock starts); the figures are the medians of per-round ratios against `keras`.

    python bench/loop.py                                  # cnn4 at 256 and mnist_cnn at 32, 3 rounds
    python bench/loop.py --models dense:32 --rounds 5 --images 12000 --epochs 4
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402

from throughput import plain_model  # noqa: E402


def order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng((seed, epoch)).permutation(n)


class Ordered(keras.utils.PyDataset):
    """Batches of (x, y) in epoch e's order; on_epoch_end moves to the next epoch's."""

    def __init__(self, x, y, batch, seed):
        super().__init__()
        self.x, self.y, self.batch, self.seed, self.epoch = x, y, batch, seed, 0
        self.idx = order(len(x), seed, 0)

    def __len__(self):
        return -(-len(self.x) // self.batch)

    def __getitem__(self, i):
        take = self.idx[i * self.batch:(i + 1) * self.batch]
        return self.x[take], self.y[take]

    def on_epoch_end(self):
        self.epoch += 1
        self.idx = order(len(self.x), self.seed, self.epoch)


def compiled(name: str, per_call: int) -> keras.Model:
    keras.utils.set_random_seed(0)
    model = plain_model(name)
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=per_call)
    return model


def arm(kind: str, model: keras.Model, x, y, batch: int, epochs: int) -> float:
    start = time.perf_counter()
    if kind == "keras":
        model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    elif kind == "per_epoch":
        for e in range(epochs):
            o = order(len(x), 0, e)
            model.fit(x[o], y[o], batch_size=batch, initial_epoch=e, epochs=e + 1, shuffle=False, verbose=0)
    else:
        model.fit(Ordered(x, y, batch, 0), epochs=epochs, verbose=0)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["cnn4:256", "mnist_cnn:32"], help="NAME:BATCH")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=8000)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (args.images, 28, 28, 1)).astype("float32") / 255
    y = rng.integers(0, 10, args.images).astype("int32")
    kinds = ["keras", "per_epoch", "dataset"]
    print(f"keras {keras.__version__}, backend {keras.backend.backend()}, {args.images} images, "
          f"{args.epochs} epochs an arm, {args.rounds} rounds")
    print("| model | batch | steps per call | keras s | per_epoch / keras | dataset / keras |")
    print("|---|---|---|---|---|---|")
    for spec in args.models:
        name, batch = spec.split(":")
        batch = int(batch)
        steps = -(-args.images // batch)
        per_call = max(1, min(8, steps // 4))  # cnnrun's trainer.steps_per_execution=auto
        models = {k: compiled(name, per_call) for k in kinds}
        for k in kinds:  # tracing (and the PyDataset's first workers) before any clock
            arm(k, models[k], x[:batch * per_call * 2], y[:batch * per_call * 2], batch, 1)
        times = {k: [] for k in kinds}
        for r in range(args.rounds):
            for k in kinds[r % 3:] + kinds[:r % 3]:
                times[k].append(arm(k, models[k], x, y, batch, args.epochs))
        ratio = lambda k: statistics.median(a / b for a, b in zip(times[k], times["keras"]))  # noqa: E731
        rounds = lambda k: ", ".join(f"{a / b:.2f}" for a, b in zip(times[k], times["keras"]))  # noqa: E731
        print(f"| {name} | {batch} | {per_call} | {statistics.median(times['keras']):.2f} | "
              f"{ratio('per_epoch'):.3f} ({rounds('per_epoch')}) | {ratio('dataset'):.3f} ({rounds('dataset')}) |",
              flush=True)


if __name__ == "__main__":
    main()
