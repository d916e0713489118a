"""One device, three ways: the articles' Keras 2 (`tf_keras`), a plain Keras 3 script, and `cnnrun train`.

Issue 22's bar: cnnrun at least as fast as the faster of the other two on every article model at its
batch. cnnrun runs the article's preset (8 steps per compiled call at batch 32, 4 for cnn4), without
validation. Each arm trains the same net on the same images (Fashion-MNIST, else digits) for 2 epochs;
VGG16 (article 004: 128x128 photos, 8 classes, 15 layers frozen) trains on a folder of synthetic JPEGs
the bench writes, from random weights (ImageNet's cannot be downloaded here; the arithmetic is the same),
without augmentation in all three arms (the article's ImageDataGenerator ran on the host);
the figure is epoch 2's images/s (steady state: no tracing), and its images per CPU-second of the process
(the work a step costs; the wall figure also moves with how many cores a shared host gives the run). The
arms alternate in one process, in a rotating order, so a drifting machine hits all three; the ratio is cnnrun over the faster baseline,
round by round, and its median. Needs `pip install 'cnnrun[bench]'` (tf-keras).

    python bench/speed.py                                   # every article model at its batch, 3 rounds
    python bench/speed.py --models vgg16:32 --photos 256    # article 004's fine-tune alone
    python bench/speed.py --models cnn4:256 --rounds 5
    python bench/speed.py --as-typed --whole                # `cnnrun train model=M` as typed, first epoch counted
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

from cnnrun import backend  # noqa: E402
from cnnrun.config.schema import register_resolvers  # noqa: E402
from cnnrun.data import load_dataset  # noqa: E402
import keras2  # noqa: E402
from keras2 import last_epoch_rate, run_cnnrun, run_keras2  # noqa: E402
from throughput import plain_model  # noqa: E402

# cnnrun trains each model as its article's preset does (the other two arms are the articles' own scripts)
PRESETS = {"dense": "article001_dense", "mnist_cnn": "article001_mnist_cnn", "cnn3": "article001_cnn3",
           "cnn4": "article000_cnn4", "tf_cnn": "article003_tf_cnn_mnist", "vgg16": "article004_vgg16"}


def photo_folder(root: str, per_class: int, classes: int = 8) -> str:
    """A folder of `classes` sub-folders of 160x120 JPEGs (smooth colour fields with noise, so that they
    compress and decode like photos), which the folder data set resizes to 128 px as article 004 did."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:120, 0:160] / 160.0
    for c in range(classes):
        os.makedirs(f"{root}/class{c}", exist_ok=True)
        for i in range(per_class):
            a, b, d = rng.uniform(0, 255, 3), rng.uniform(-200, 200, 3), rng.uniform(-200, 200, 3)
            img = a + b * xx[..., None] + d * yy[..., None] + rng.normal(0, 12, (120, 160, 3))
            Image.fromarray(np.clip(img, 0, 255).astype("uint8")).save(f"{root}/class{c}/{i:04d}.jpg", quality=90)
    return root


def data_overrides(name: str, images: int, photos: int, tmp: str) -> list[str]:
    """The data set (and for VGG16 the random weights and no augmentation) an arm trains on."""
    if name == "vgg16":  # 8 classes; the 0.33 test split leaves `photos` or more training images
        return [f"dataset.path={photo_folder(tmp, -(-photos * 3 // 16))}", f"dataset.limit={photos}",
                "model.weights=null", "augment=none"]
    fashion = os.path.isdir("/usr/share/datasets/fashion-mnist")
    return ["dataset=fashion" if fashion else "dataset=digits", f"dataset.limit={images}"]


def run_plain(name, x, y, batch) -> float:
    """Keras 3 as a user's own script writes it: Sequential, float inputs scaled on the host, fit()."""
    keras.backend.clear_session()
    model = plain_model(name, x.shape[1:], int(y.max()) + 1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return last_epoch_rate(model, keras.callbacks.Callback, x, y, batch)


def fig(rate: float) -> str:
    """A rate with the digits that matter: VGG16 trains about 10 images a second here, dense 10 000."""
    return f"{rate:.1f}" if rate < 100 else f"{rate:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+",
                    default=["dense:32", "mnist_cnn:32", "cnn3:32", "cnn4:256", "tf_cnn:32", "vgg16:32"])
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--photos", type=int, default=256, help="VGG16's training images (about 10 a second on 2 cores)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="extra cnnrun overrides (its arm only)")
    ap.add_argument("--as-typed", action="store_true", help="cnnrun's arm as `cnnrun train model=M` is typed: its "
                    "defaults, not the article's preset (still the same batch, data and epochs)")
    ap.add_argument("--whole", action="store_true", help="images/s over both epochs, the first one's tracing and "
                    "compiling included, in every arm (else epoch 2 alone)")
    args = ap.parse_args()
    keras2.WHOLE[0] = args.whole
    register_resolvers()
    rows = []
    tmp = tempfile.TemporaryDirectory()
    for spec in args.models:
        name, batch = spec.split(":")
        batch = int(batch)
        with initialize_config_module("cnnrun.conf", version_base="1.3"):
            cfg = compose("config", overrides=[
                *([f"experiment={PRESETS[name]}"] if name in PRESETS and not args.as_typed else []),
                *data_overrides(name, args.images, args.photos, tmp.name),
                f"model={name}", f"trainer.batch_size={batch}", "trainer.epochs=2",
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
            print(f"  {name}:{batch} round {r + 1}: " + "  ".join(f"{a} {fig(got[a][-1]):>6} ({fig(cpu[a][-1])}/cpu-s)"
                                                                  for a in arms), flush=True)
        ratios = [c / max(k2, k3) for k2, k3, c in zip(got["keras2"], got["keras3"], got["cnnrun"])]
        cpu_ratios = [c / max(k2, k3) for k2, k3, c in zip(cpu["keras2"], cpu["keras3"], cpu["cnnrun"])]
        rows.append((name, batch, *(statistics.median(got[a]) for a in arms), statistics.median(ratios), ratios,
                     *(statistics.median(cpu[a]) for a in arms), statistics.median(cpu_ratios), cpu_ratios))
    print(f"\nbackend {keras.backend.backend()} · {backend.device()} · {len(os.sched_getaffinity(0))} cores · "
          f"{args.images} images ({args.photos} for vgg16) · {'both epochs' if args.whole else 'epoch 2 of 2'} · "
          f"{args.rounds} rounds · cnnrun {'as typed' if args.as_typed else 'preset'}, options: {' '.join(args.set) or 'default'}")
    print("\nwall clock, images/s:\n\n| model | batch | Keras 2 (tf_keras) | plain Keras 3 | cnnrun | cnnrun / faster, "
          "per round |\n|---|---|---|---|---|---|")
    for name, batch, k2, k3, c, ratio, ratios, *_ in rows:
        print(f"| {name} | {batch} | {fig(k2)} | {fig(k3)} | {fig(c)} | **{ratio:.2f}** ({', '.join(f'{r:.2f}' for r in ratios)}) |")
    print("\nimages per CPU-second (all the process's threads: the work a step costs, steadier on a shared host):\n\n"
          "| model | batch | Keras 2 (tf_keras) | plain Keras 3 | cnnrun | cnnrun / faster, per round |\n|---|---|---|---|---|---|")
    for name, batch, *_, k2, k3, c, ratio, ratios in rows:
        print(f"| {name} | {batch} | {fig(k2)} | {fig(k3)} | {fig(c)} | **{ratio:.2f}** ({', '.join(f'{r:.2f}' for r in ratios)}) |")


if __name__ == "__main__":
    main()
