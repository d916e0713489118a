"""The streamed folder feed against tf.data, on the same JPEG files, alternated in one run (issue 22).

At scale the input, not the model, is the usual bottleneck. This times one pass over a folder of
photo-like JPEGs at the training size, fed through `model.fit` to a model that does almost nothing
(rescale, global average pooling, a dense layer), so what is timed is the feed:

  cnnrun   folder.Batches over FileImages: the feed a streamed `dataset=folder` trains from (PIL:
           JPEG draft-mode decode, EXIF orientation, bilinear resize, batch, in worker threads)
  tf.data  keras.utils.image_dataset_from_directory + prefetch: what a Keras user writes (decode_image,
           resize, batch in a parallel map; it does not apply EXIF orientation, so it does less work)

Both run on every core of the machine; the figure to compare is images/s per core. Needs TensorFlow.

    python bench/feed.py                          # 1 200 images of 640x480, 128 px, batch 32, 3 pairs
    python bench/feed.py --photo 4032x3024 --images 200   # phone photos
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image, ImageDraw, ImageFilter  # noqa: E402

from cnnrun.data.folder import Batches, FileImages  # noqa: E402


def make_photos(root: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[str]:
    """`count` JPEGs (quality 90) in two class folders: smooth colour fields with shapes and a little grain,
    so they compress and decode like photos (noise would not); every fourth carries EXIF orientation 6."""
    rng = np.random.default_rng(seed)
    w, h = size
    files = []
    for i in range(count):
        top, bottom = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        ramp = np.linspace(0, 1, h)[:, None, None]
        a = (top * (1 - ramp) + bottom * ramp).repeat(w, axis=1).astype(np.uint8)
        im = Image.fromarray(a)
        draw = ImageDraw.Draw(im)
        for _ in range(6):
            x0, y0 = int(rng.integers(0, w)), int(rng.integers(0, h))
            box = [x0, y0, x0 + int(rng.integers(w // 10, w // 2)), y0 + int(rng.integers(h // 10, h // 2))]
            fill = tuple(int(c) for c in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
        im = im.filter(ImageFilter.GaussianBlur(2))
        grain = rng.normal(0, 4, (h, w, 3))
        im = Image.fromarray(np.clip(np.asarray(im) + grain, 0, 255).astype(np.uint8))
        path = root / ("a" if i % 2 else "b") / f"{i:05d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        exif = Image.Exif()
        if i % 4 == 0:
            exif[0x0112] = 6  # rotated 90 degrees: what a phone writes for a portrait shot
        im.save(path, quality=90, exif=exif)
        files.append(str(path))
    return sorted(files)


def sink(side: int) -> keras.Model:
    """A model that costs next to nothing, so fit() runs as fast as the feed delivers."""
    model = keras.Sequential([keras.Input((side, side, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2)])
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def cnnrun_feed(files: list[str], side: int, batch: int):
    labels = np.array([0 if "/b/" in f else 1 for f in files])
    return Batches(FileImages(files, (side, side), 3), labels, batch, order=np.arange(len(files)))


def tf_data_feed(root: Path, side: int, batch: int):
    import tensorflow as tf  # noqa: PLC0415 - the baseline, not cnnrun code

    ds = keras.utils.image_dataset_from_directory(root, image_size=(side, side), batch_size=batch, shuffle=False,
                                                  verbose=False)
    return ds.prefetch(tf.data.AUTOTUNE)


def fit_pass(model: keras.Model, data, count: int) -> float:
    """Images/s of one epoch of fit() on the sink model: the feed as training sees it (sharing the cores)."""
    start = time.perf_counter()
    model.fit(data, epochs=1, verbose=0, shuffle=False)
    return count / (time.perf_counter() - start)


def read_pass(data, count: int) -> float:
    """Images/s of reading every batch: the feed alone (a PyDataset's batches as Keras asks for them with
    one worker; a tf.data dataset iterated)."""
    start = time.perf_counter()
    if isinstance(data, keras.utils.PyDataset):
        for i in range(len(data)):
            data[i]
    else:
        for _ in data:
            pass
    return count / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1200)
    p.add_argument("--photo", default="640x480", help="the JPEGs' size, WxH")
    p.add_argument("--side", type=int, default=128, help="the training size")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--pairs", type=int, default=3)
    args = p.parse_args()
    cores = len(os.sched_getaffinity(0))
    w, h = (int(v) for v in args.photo.lower().split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        files = make_photos(root, args.images, (w, h))
        mb = sum(os.path.getsize(f) for f in files) / 2**20
        print(f"{args.images} JPEGs of {w}x{h} ({mb:.0f} MB), to {args.side} px, batch {args.batch}, {cores} cores, "
              f"Keras {keras.__version__} on {keras.backend.backend()}")
        feeds = {"cnnrun": lambda: cnnrun_feed(files, args.side, args.batch),
                 "tf.data": lambda: tf_data_feed(root, args.side, args.batch)}
        models = {name: sink(args.side) for name in feeds}
        ways = {"read": lambda name, data: read_pass(data, args.images),
                "fit": lambda name, data: fit_pass(models[name], data, args.images)}
        for name, make in feeds.items():
            for way in ways.values():
                way(name, make())  # warm-up: tracing, the page cache, the decoding threads
        rates = {(way, name): [] for way in ways for name in feeds}
        for i in range(args.pairs):
            for way, run in ways.items():
                for name, make in (feeds.items() if i % 2 == 0 else reversed(feeds.items())):
                    rates[way, name].append(run(name, make()))
            print(f"pair {i + 1}: " + ", ".join(f"{way} {name} {r[-1]:.0f}" for (way, name), r in rates.items()),
                  flush=True)
        print("\n| feed | read: images/s | per core | through fit(): images/s | per core |\n|---|---|---|---|---|")
        for name in feeds:
            med = [statistics.median(rates[way, name]) for way in ways]
            print(f"| {name} | {med[0]:.0f} | {med[0] / cores:.0f} | {med[1]:.0f} | {med[1] / cores:.0f} |")
        for way in ways:
            ratios = [a / b for a, b in zip(rates[way, "cnnrun"], rates[way, "tf.data"])]
            print(f"{way}: cnnrun / tf.data {statistics.median(ratios):.2f} (pairs {', '.join(f'{r:.2f}' for r in ratios)})")


if __name__ == "__main__":
    main()
