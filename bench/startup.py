"""How long the command line takes to start: `cnnrun --help`, `cnnrun train --cfg job` (compose and print
the config, no training) and a refusal (a bad value: one line, before any work), this checkout against another,
alternated, as whole processes. With --runs also a run's fixed costs: a tiny run (sklearn's digits, 300 images, one
epoch: start-up, tracing, evaluation, reports and plots, the model saved), a sweep of four such jobs in one
process and one of four on Fashion-MNIST (needs it: apt-get install dataset-fashion-mnist), each into a new
directory under a temporary folder.

    python bench/startup.py --checkout /tmp/before      # e.g. a git worktree of the commit before a change
    python bench/startup.py --checkout /tmp/before -n 9 --runs

Prints a markdown table: the median wall time of each command in each checkout, and the median of the
pairwise ratios (this / other), which holds when the machine's speed drifts during the run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

# Runs cnnrun from CHECKOUT even where another copy is installed in editable mode (its import hook is dropped).
LAUNCH = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
          "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
          "from cnnrun.cli import main; main(sys.argv[1:])")
COMMANDS = {"cnnrun --help": ["--help"], "cnnrun train --cfg job": ["train", "--cfg", "job"],
            "cnnrun train trainer.epochs=0 (refused)": ["train", "trainer.epochs=0"]}
TINY = ["dataset=digits", "dataset.limit=300", "trainer.epochs=1", "trainer.verbose=0"]
RUNS = {"cnnrun train (a tiny run)": ["train", *TINY],
        "cnnrun train -m model=dense,mnist_cnn,cnn3,cnn4 (four tiny jobs)": ["train", "-m", "model=dense,mnist_cnn,cnn3,cnn4",
                                                                             *TINY],
        "cnnrun train -m dataset=fashion trainer.seed=0,1,2,3 (four tiny Fashion-MNIST jobs)":
            ["train", "-m", "dataset=fashion", "model=dense", "trainer.seed=0,1,2,3", *TINY[1:]]}


def once(checkout: Path, args: list[str], refused: bool = False) -> float:
    import tempfile

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as where:  # a run writes under outputs/ here: always a new directory
        done = subprocess.run([sys.executable, "-c", LAUNCH, str(checkout), *args], capture_output=True, text=True,
                              cwd=where)
    seconds = time.perf_counter() - start
    if (done.returncode != 0) != refused:
        raise SystemExit(f"{checkout}: cnnrun {' '.join(args)} failed: {done.stderr.strip()[-300:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", type=Path, required=True, help="the other checkout to compare with")
    parser.add_argument("-n", type=int, default=5, help="runs of each command in each checkout (after a warm-up)")
    parser.add_argument("--runs", action="store_true", help="also a tiny run and a sweep of four tiny jobs")
    args = parser.parse_args()
    here = Path(__file__).resolve().parents[1]
    print(f"| command | this checkout (s) | {args.checkout} (s) | ratio this / other |")
    print("|---|---|---|---|")
    for label, argv in {**COMMANDS, **(RUNS if args.runs else {})}.items():
        refused = "refused" in label
        once(here, argv, refused), once(args.checkout, argv, refused)  # warm-up: the file system's caches
        mine, other = [], []
        for _ in range(args.n):  # alternated, so a drift in the machine's speed hits both alike
            mine.append(once(here, argv, refused))
            other.append(once(args.checkout, argv, refused))
        ratio = statistics.median(a / b for a, b in zip(mine, other))
        print(f"| `{label}` | {statistics.median(mine):.2f} | {statistics.median(other):.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
