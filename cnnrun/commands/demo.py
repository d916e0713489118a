"""`python -m cnnrun.commands.demo DIR`: a small two-class photo folder, offline, from photos that ship inside
scikit-learn (china.jpg, flower.jpg). Each class is random crops of one photo, flipped and re-lit, so
`dataset=folder` can be tried end to end without downloading anything."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance


def make_demo_folder(root: Path, per_class: int = 30, seed: int = 0) -> Path:
    import sklearn

    images = Path(sklearn.__file__).parent / "datasets" / "images"
    rng = np.random.default_rng(seed)
    for name in ("china", "flower"):
        photo = Image.open(images / f"{name}.jpg").convert("RGB")
        out = root / name
        out.mkdir(parents=True, exist_ok=True)
        w, h = photo.size
        for i in range(per_class):
            side = int(rng.uniform(0.3, 0.7) * min(w, h))
            x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
            crop = photo.crop((x, y, x + side, y + side)).resize((96, 96), Image.BILINEAR)
            if rng.random() < 0.5:
                crop = crop.transpose(Image.FLIP_LEFT_RIGHT)
            crop = ImageEnhance.Brightness(crop).enhance(float(rng.uniform(0.7, 1.3)))
            crop.save(out / f"{name}_{i:03d}.jpg", quality=90)
    return root


if __name__ == "__main__":
    target = Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/demo-photos")
    print(f"demo photo folder: {make_demo_folder(target)} (china/, flower/)")
