"""What augmentation costs: epoch time with article 004's augmentation over epoch time without.

Three runs of the same model, data and batch size, in this one process:
  none     - no augmentation (the baseline)
  device   - cnnrun's Augment layer (flip + affine warp + random erasing inside the train step)
  cpu      - the articles' way: numpy/PIL per image on the host (ImageDataGenerator style), fed through a
             keras.utils.PyDataset with worker threads
Epoch 2's time is used (epoch 1 includes tracing).   python bench/augment.py [--images 6000 --model cnn4]
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402
from PIL import Image  # noqa: E402

from cnnrun import backend  # noqa: E402
from cnnrun.config.schema import register_resolvers  # noqa: E402
from cnnrun.data import load_dataset  # noqa: E402
from cnnrun.data.folder import Batches  # noqa: E402
from cnnrun.training.loop import EpochLog  # noqa: E402
from cnnrun.training.optim import build_optimizer  # noqa: E402
from cnnrun.training.train import assemble, train  # noqa: E402


def cpu_article004(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip, shift 0.1, rotation 20 degrees, random erasing (p 0.5, area 0.2-0.4, per-pixel fill)."""
    h, w = img.shape[:2]
    if rng.random() < 0.5:
        img = img[:, ::-1]
    pil = Image.fromarray(np.ascontiguousarray(img[..., 0]))
    pil = pil.rotate(rng.uniform(-20, 20), resample=Image.BILINEAR,
                     translate=(rng.uniform(-0.1, 0.1) * w, rng.uniform(-0.1, 0.1) * h))
    out = np.asarray(pil)[..., None].copy()
    if rng.random() < 0.5:
        while True:
            s, r = rng.uniform(0.2, 0.4) * h * w, rng.uniform(0.3, 1 / 0.3)
            ew, eh = int(np.sqrt(s / r)), int(np.sqrt(s * r))
            left, top = rng.integers(0, w), rng.integers(0, h)
            if left + ew <= w and top + eh <= h:
                break
        out[top:top + eh, left:left + ew] = rng.integers(0, 256, (eh, ew, 1))
    return out


class CpuAugmented(Batches):
    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        rng = np.random.default_rng(i)
        return np.stack([cpu_article004(im, rng) for im in x]), y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--model", default="cnn4")
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    register_resolvers()
    base = [f"dataset.limit={args.images}", f"model={args.model}", f"trainer.batch_size={args.batch}",
            "trainer.epochs=2", "trainer.verbose=0", "output.save_model=false", "output.misclassified_max=0"]
    with initialize_config_module("cnnrun.conf", version_base="1.3"):
        try:
            cfg = {a: compose("config", overrides=["dataset=fashion", *base, f"augment={a}"]) for a in ("none", "article004")}
            load_dataset(cfg["none"].dataset)
        except Exception:  # noqa: BLE001 - no Fashion-MNIST: bundled digits
            cfg = {a: compose("config", overrides=["dataset=digits", *base, f"augment={a}"]) for a in ("none", "article004")}
    times = {}
    for name, c in (("none", cfg["none"]), ("device", cfg["article004"])):
        with tempfile.TemporaryDirectory() as tmp:
            train(c, tmp)
            rows = open(os.path.join(tmp, "history.csv")).read().splitlines()
            times[name] = float(rows[2].split(",")[rows[0].split(",").index("seconds")])
    # The host-side pipeline, same model and optimizer, no device augmentation.
    c = cfg["none"]
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    data = load_dataset(c.dataset)
    classifier, _ = assemble(c.model, data, None)
    classifier.compile(optimizer=build_optimizer(c.optimizer), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    log = EpochLog()
    classifier.fit(CpuAugmented(data.x_train, data.y_train, args.batch, shuffle=True, workers=2), epochs=2, verbose=0,
                   callbacks=[log])
    times["cpu"] = log.rows[1]["seconds"]
    print(f"backend {keras.backend.backend()} · device {backend.device()} · {c.dataset.name} {len(data.x_train)} images · "
          f"{args.model} batch {args.batch} · epoch 2 seconds")
    print("\n| augmentation | epoch s | ratio to none |\n|---|---|---|")
    for name in ("none", "device", "cpu"):
        print(f"| {name} | {times[name]:.2f} | {times[name] / times['none']:.2f} |")


if __name__ == "__main__":
    main()
