"""Peak memory over a 10-job sweep: does it stay flat from job to job?

Runs `cnnrun train -m trainer.seed=0,...,9` (basic launcher: all jobs in one process) and, as the
baseline, a plain Keras script that builds and fits the same model 10 times in one process the way a
hand-written loop does (no clear_session). Both are sampled every 0.1 s from /proc/PID/status.
Reported: resident memory (RSS) at the end of job 1, 5 and 10, and the growth from job 1 to 10.

    python bench/sweep_memory.py                  # cnn4, 3000 Fashion-MNIST images, 1 epoch per job
    python bench/sweep_memory.py --jobs 10 --model cnn3 --images 6000
    python bench/sweep_memory.py --fresh          # also each job in a fresh process (trainer.fresh_process=true)
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PLAIN = r"""
import os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
import keras
sys.path.insert(0, "bench")
from throughput import plain_model
from cnnrun.data import load_mnist_like
jobs, name, images = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
arrays = load_mnist_like("fashion", None)[0]
x, y = arrays["x_train"][:images, ..., None].astype("float32") / 255.0, arrays["y_train"][:images]
for job in range(jobs):
    keras.utils.set_random_seed(job)
    model = plain_model(name)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)
    model.evaluate(x[:1000], y[:1000], verbose=0)
    print("JOB-DONE", job, flush=True)
"""


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (a fresh-process job is a child)."""
    total = _own_rss_mb(pid)
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    return total + sum(rss_mb(int(c)) for c in children)


def _own_rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def watch(cmd: list[str], done_count) -> list[float]:
    """Runs cmd; returns the peak RSS (MB) seen up to the end of each job."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    peak, per_job = 0.0, []
    while proc.poll() is None:
        peak = max(peak, rss_mb(proc.pid))
        while len(per_job) < done_count("".join(lines)):
            per_job.append(peak)
        time.sleep(0.1)
    reader.join()
    out = "".join(lines)
    if proc.returncode != 0:
        sys.exit(out[-3000:])
    while len(per_job) < done_count(out):
        per_job.append(peak)
    return per_job


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--jobs", type=int, default=10)
    ap.add_argument("--model", default="cnn4")
    ap.add_argument("--images", type=int, default=3000)
    ap.add_argument("--fresh", action="store_true", help="also measure trainer.fresh_process=true")
    args = ap.parse_args()
    seeds = ",".join(str(i) for i in range(args.jobs))
    with tempfile.TemporaryDirectory() as tmp:
        ours = watch(
            [sys.executable, "-m", "cnnrun", "train", "-m", f"trainer.seed={seeds}", f"model={args.model}",
             f"dataset.limit={args.images}", "trainer.epochs=1", "trainer.verbose=0", f"hydra.sweep.dir={tmp}/sweep"],
            lambda out: out.count("test accuracy"),
        )
    fresh = None
    if args.fresh:
        with tempfile.TemporaryDirectory() as tmp:
            fresh = watch(
                [sys.executable, "-m", "cnnrun", "train", "-m", f"trainer.seed={seeds}", f"model={args.model}",
                 f"dataset.limit={args.images}", "trainer.epochs=1", "trainer.verbose=0", "trainer.fresh_process=true",
                 f"hydra.sweep.dir={tmp}/sweep"],
                lambda out: out.count("test accuracy"),
            )
    plain = watch([sys.executable, "-c", PLAIN, str(args.jobs), args.model, str(args.images)],
                  lambda out: out.count("JOB-DONE"))
    print(f"\n{args.jobs} jobs · {args.model} · {args.images} Fashion-MNIST images · 1 epoch each · {os.cpu_count()} CPUs")
    print("\n| process | RSS after job 1 (MB) | after job 5 | after job 10 | growth job 1 → 10 |\n|---|---|---|---|---|")
    rows = [("plain Keras loop (no clear_session)", plain), ("cnnrun train -m (basic launcher)", ours)]
    if fresh:
        rows.append(("cnnrun train -m trainer.fresh_process=true", fresh))
    for name, peaks in rows:
        mid = peaks[min(4, len(peaks) - 1)]
        print(f"| {name} | {peaks[0]:.0f} | {mid:.0f} | {peaks[-1]:.0f} | {peaks[-1] - peaks[0]:+.0f} MB |")
    print(f"\ncnnrun peak / plain peak: {ours[-1] / plain[-1]:.2f}")


if __name__ == "__main__":
    main()
