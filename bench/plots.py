"""What a run's figures cost: the confusion matrix, the predictions grid and the curves, drawn and written as a run
writes them (cnnrun.record.artifacts), for class names of four kinds, this checkout against another, alternated.

    python bench/plots.py --checkout /tmp/before        # e.g. a git worktree of the commit before a change
    python bench/plots.py --rounds 7

Each checkout draws in a process of its own (its own matplotlib state); the figures are the medians over rounds of
each figure's milliseconds (the mean of 3 draws after one to warm up), and the median of the per-round ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

NAMES = {"digits": [str(i) for i in range(10)],
         "fashion": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                     "Ankle boot"],
         "long": [f"a rather long class name number {i}" for i in range(6)],
         "cjk": ["桜", "猫", "犬"]}

DRAW = r"""
import json, sys, tempfile, time
sys.path.insert(0, sys.argv[1])
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in repr(f).lower()]
from pathlib import Path
import numpy as np
from cnnrun.record import artifacts as A
names = json.loads(sys.argv[2])
out = {}
with tempfile.TemporaryDirectory() as d:
    d = Path(d)
    rng = np.random.default_rng(0)
    k = len(names)
    y = rng.integers(0, k, 300)
    p = np.where(rng.random(300) < 0.6, y, rng.integers(0, k, 300))
    x = rng.integers(0, 255, (300, 28, 28, 1)).astype(np.uint8)
    rows = [dict(epoch=e, accuracy=0.5 + e / 10, loss=1 - e / 10, val_accuracy=0.4 + e / 10, val_loss=1.1 - e / 10)
            for e in (1, 2, 3)]
    figures = {"confusion": lambda: A.write_confusion(d, A.confusion_matrix(y, p, k), names),
               "predictions": lambda: A.plot_predictions(d / "p.png", x, y, p, names, 30),
               "curves": lambda: A.plot_curves(d / "c.png", rows, "digits · mnist_cnn")}
    for name, draw in figures.items():
        draw()
        start = time.perf_counter()
        for _ in range(3):
            draw()
        out[name] = (time.perf_counter() - start) / 3 * 1000
print(json.dumps(out))
"""


def draw(checkout: Path, names: list[str]) -> dict[str, float]:
    done = subprocess.run([sys.executable, "-c", DRAW, str(checkout), json.dumps(names)], capture_output=True,
                          text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkout", type=Path, help="another checkout to compare with (default: none)")
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    here = Path(__file__).resolve().parents[1]
    trees = [here] + ([a.checkout.resolve()] if a.checkout else [])
    print("| names | figure | this checkout (ms) |" + (f" {a.checkout} (ms) | ratio this / other |" if a.checkout else ""))
    print("|---|---|---|" + ("---|---|" if a.checkout else ""))
    for kind, names in NAMES.items():
        times: dict[Path, list[dict]] = {t: [] for t in trees}
        for r in range(a.rounds):
            for tree in (trees if r % 2 == 0 else trees[::-1]):
                times[tree].append(draw(tree, names))
        for figure in ("confusion", "predictions", "curves"):
            mine = [t[figure] for t in times[here]]
            row = f"| {kind} | {figure} | {statistics.median(mine):.0f} |"
            if a.checkout:
                theirs = [t[figure] for t in times[trees[1]]]
                ratio = statistics.median(m / o for m, o in zip(mine, theirs))
                row += f" {statistics.median(theirs):.0f} | {ratio:.2f} |"
            print(row, flush=True)


if __name__ == "__main__":
    main()
