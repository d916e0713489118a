"""Training speed of this checkout against another: the same `cnnrun train` run by each, alternated, as
whole processes; each run's images per second (from its metrics.json: training time only, the first
epoch's compile included as a user sees it) and the median of the pairwise ratios (this / other).

    python bench/epochs_ab.py --checkout /tmp/before            # a git worktree of the commit before a change
    python bench/epochs_ab.py --checkout /tmp/before -n 5 --runs cnn4:256 mnist_cnn:32

Prints a markdown table, one row per model.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]
# Runs cnnrun from CHECKOUT even where another copy is installed in editable mode (its import hook is dropped).
LAUNCH = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
          "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
          "from cnnrun.cli import main; main(sys.argv[1:])")


def once(checkout: Path, model: str, batch: int, images: int, epochs: int, out: Path) -> float:
    args = ["train", "dataset=fashion", f"model={model}", f"trainer.batch_size={batch}", f"trainer.epochs={epochs}",
            f"dataset.limit={images}", "trainer.verbose=0", "trainer.checkpoint=false", "output.save_model=false",
            "output.misclassified_max=0", "output.predictions_grid=0", f"hydra.run.dir={out}"]
    done = subprocess.run([sys.executable, "-c", LAUNCH, str(checkout), *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{checkout}: cnnrun {' '.join(args)} failed: {done.stderr.strip()[-400:]}")
    return float(json.loads((out / "metrics.json").read_text())["images_per_second"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, required=True, help="the other checkout to compare with")
    parser.add_argument("-n", type=int, default=3, help="alternated pairs per model")
    parser.add_argument("--runs", nargs="+", default=["cnn4:256", "mnist_cnn:32"], help="MODEL:BATCH pairs")
    parser.add_argument("--images", type=int, default=6000, help="training images (dataset.limit)")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    rows = ["| model | batch | this checkout img/s (median) | other img/s (median) | this / other (median of pairs) |",
            "|---|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.runs:
            model, _, batch = spec.partition(":")
            this, other = [], []
            for i in range(args.n):  # alternated, the order flipped each pair: drift falls on both alike
                for which in ((HERE, this), (args.checkout, other))[:: 1 if i % 2 == 0 else -1]:
                    checkout, into = which
                    into.append(once(checkout, model, int(batch), args.images, args.epochs,
                                     Path(tmp) / f"{model}-{len(this)}-{len(other)}-{id(into)}"))
            ratio = statistics.median(a / b for a, b in zip(this, other))
            rows.append(f"| {model} | {batch} | {statistics.median(this):.0f} | {statistics.median(other):.0f} | "
                        f"{ratio:.3f} |")
            print(rows[-1], file=sys.stderr, flush=True)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
