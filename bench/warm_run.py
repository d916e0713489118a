"""What one run costs in a warm process (a sweep's jobs, a notebook's runs): tiny runs called one after another
through the command line's own entry point (cnnrun.cli.main) in this process, variants alternated, medians.

    python bench/warm_run.py                                  # the plots on (default) against output.plots=false
    python bench/warm_run.py --rounds 7 --variant "dataset=fashion" --variant "dataset=fashion output.plots=false"

Each variant's first run is a warm-up (imports, the backend's start, the data's first read), not counted.
Prints a markdown table: each variant's median seconds a run, and its ratio to the first variant.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
TINY = ["dataset=digits", "dataset.limit=300", "trainer.epochs=1", "trainer.verbose=0", "model=mnist_cnn"]


def run(argv: list[str], where: Path) -> float:
    import logging

    from hydra.core.global_hydra import GlobalHydra

    from cnnrun.cli import main

    handlers = logging.getLogger().handlers[:]
    start = time.perf_counter()
    try:
        main(["train", *TINY, *argv, f"hydra.run.dir={where}"])
    except SystemExit as e:
        if e.code not in (None, 0):
            raise SystemExit(f"cnnrun train {' '.join(argv)} failed (exit {e.code})") from None
    finally:
        GlobalHydra.instance().clear()  # as a new command finds it (Hydra keeps its state for the process)
        logging.getLogger().handlers[:] = handlers  # the run's log file closed with its run, not kept open
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", help="overrides after the tiny run's, one string a variant")
    parser.add_argument("--rounds", type=int, default=5, help="counted runs of each variant")
    args = parser.parse_args()
    variants = args.variant or ["", "output.plots=false"]
    os.environ.setdefault("CNNRUN_DATA", "/usr/share/datasets/fashion-mnist")
    seconds: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds + 1):
            for k, v in enumerate(variants):
                took = run(v.split(), Path(tmp) / f"{k}-{i}")
                if i:
                    seconds[v].append(took)
    base = statistics.median(seconds[variants[0]])
    print("| variant | median s a run | ratio to the first |")
    print("|---|---|---|")
    for v in variants:
        print(f"| `{v or '(defaults)'}` | {statistics.median(seconds[v]):.2f} | {statistics.median(seconds[v]) / base:.2f} |")


if __name__ == "__main__":
    main()
