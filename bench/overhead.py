"""What the trust machinery costs a run: the config check before any work, the run record (lock,
earlier-run decision, metrics.json) and the portable model.keras, each timed against doing without.

    python bench/overhead.py             # prints a markdown table
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import keras  # noqa: E402

from cnnrun import models, record  # noqa: E402
from cnnrun.config import checks
from conftest import make_config  # noqa: E402


def timed(fn, repeats=5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main():
    rows = []
    rows.append(("config check, one run (compose + schema + rules)", timed(lambda: checks.check_jobs([]))))
    n = checks.check_jobs(["experiment=glob(*)", "debug=smoke"], multirun=True)
    rows.append((f"config check, a sweep of every preset ({n} jobs)",
                 timed(lambda: checks.check_jobs(["experiment=glob(*)", "debug=smoke"], multirun=True), 3)))
    cfg = make_config("model=dense")
    with tempfile.TemporaryDirectory() as tmp:
        counter = iter(range(10**6))

        def fresh_run():
            with record.Run(Path(tmp) / f"r{next(counter)}", cfg) as run:
                run.start(model="dense")
                run.end("ok")

        rows.append(("run record: lock, decision, metrics.json twice (new directory)", timed(fresh_run)))
        done = Path(tmp) / "done"
        with record.Run(done, cfg) as run:
            run.start(model="dense")
            run.end("ok")

        def finished():
            with record.Run(done, cfg) as run:
                assert run.action == "skip"

        rows.append(("run record: a finished run found and skipped", timed(finished)))
        net = models.build_model(make_config("model=cnn4").model, (28, 28, 1), 10)
        pixels = keras.Input((28, 28, 1), dtype="uint8")
        classifier = keras.Model(pixels, net(keras.layers.Rescaling(1 / 255)(pixels)))
        rows.append(("model.keras, saved as built (cnn4)", timed(lambda: classifier.save(Path(tmp) / "a.keras"))))
        rows.append(("model.keras, portable copy then saved (cnn4)",
                     timed(lambda: models.portable(classifier).save(Path(tmp) / "b.keras"))))
    print(f"backend: {keras.backend.backend()}\n\n| step | median seconds |\n|---|---|")
    for name, seconds in rows:
        print(f"| {name} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
