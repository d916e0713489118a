"""What the trackers cost a run: a 5-epoch cnn4 run on Fashion-MNIST with logger=csv (the default) against the
same run with TensorBoard and MLflow (SQLite store) on, alternated, each a fresh `cnnrun train` process.

Two figures per pair: the wall time of the whole command (noisy: ±10-30 % on this machine), and the seconds
spent inside the loggers themselves (metrics.json's hook_seconds, the trackers' entries: import, store set-up, per-epoch writes, the
artifact upload), which is the cost without the noise.

    python bench/loggers.py                      # full Fashion-MNIST, 2 pairs
    python bench/loggers.py --limit 12000 --pairs 3
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(out: Path, loggers: str, limit: int | None, epochs: int) -> tuple[float, dict]:
    args = [sys.executable, "-m", "cnnrun", "train", "dataset=fashion", "model=cnn4", f"trainer.epochs={epochs}",
            "trainer.verbose=0", f"logger={loggers}", f"hydra.run.dir={out}",
            f"logger.mlflow.tracking_uri=sqlite:///{out.parent / 'mlflow.db'}" if "mlflow" in loggers else "",
            f"dataset.limit={limit}" if limit else ""]
    start = time.perf_counter()
    subprocess.run([a for a in args if a], check=True, capture_output=True)
    return time.perf_counter() - start, json.loads((out / "metrics.json").read_text())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--limit", type=int, default=None, help="images per split (default: all)")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    ns = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(ns.pairs):
            for loggers in (("csv", "[csv,tensorboard,mlflow]") if i % 2 == 0 else ("[csv,tensorboard,mlflow]", "csv")):
                wall, m = run(Path(tmp) / f"{i}-{len(loggers)}", loggers, ns.limit, ns.epochs)
                rows.append((i, loggers, wall, m.get("train_seconds"), {k: v for k, v in m.get("hook_seconds", {}).items()
                                                                     if k in ("csv", "tensorboard", "mlflow")}))
                print(rows[-1], flush=True)
    print(f"\n{ns.epochs}-epoch cnn4, Fashion-MNIST{f' limit {ns.limit}' if ns.limit else ''}\n")
    print("| pair | loggers | wall s | train s | in the loggers, s | loggers / wall |")
    print("|---|---|---|---|---|---|")
    for i, loggers, wall, train_s, secs in rows:
        inside = sum(secs.values())
        detail = ", ".join(f"{k} {v:.2f}" for k, v in secs.items())
        print(f"| {i} | {loggers} | {wall:.1f} | {train_s:.1f} | {inside:.2f} ({detail}) | {100 * inside / wall:.2f} % |")
    for i in range(ns.pairs):
        pair = {r[1]: r[2] for r in rows if r[0] == i}
        print(f"pair {i}: wall with both loggers / csv only = {pair['[csv,tensorboard,mlflow]'] / pair['csv']:.3f}")


if __name__ == "__main__":
    main()
