"""CPU thread pools: which (intra-op, inter-op) setting trains fastest on this machine.

Thread pools can only be set before TensorFlow starts, so every setting runs in a fresh child
process, and the settings are interleaved over the repeats so drift hits all of them alike. Each
child trains the same model on the same images for 2 epochs and reports epoch 2's images/s
(steady state, no tracing). Ratios are against TensorFlow's own default (0, 0 = one thread per core).

    python bench/threads.py                                  # cnn4:256 and mnist_cnn:32
    python bench/threads.py --models cnn4:256 --repeats 3 --images 6000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CHILD = r"""
import json, os, sys, time
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
intra, inter, name, batch, images = (int(a) if a.isdigit() else a for a in sys.argv[1:6])
from cnnrun import backend
backend.set_threads(intra, inter)
import keras
sys.path.insert(0, "bench")
from throughput import plain_model
from cnnrun.data import load_mnist_like
arrays = load_mnist_like("fashion", None)[0]
x, y = arrays["x_train"][:images, ..., None].astype("float32") / 255.0, arrays["y_train"][:images]
keras.utils.set_random_seed(0)
model = plain_model(name)
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
times = []
class T(keras.callbacks.Callback):
    def on_epoch_begin(self, e, logs=None): self.t = time.perf_counter()
    def on_epoch_end(self, e, logs=None): times.append(time.perf_counter() - self.t)
model.fit(x, y, batch_size=batch, epochs=2, verbose=0, callbacks=[T()])
print(json.dumps({"ips": images / times[-1]}))
"""

SETTINGS = [(0, 0), (1, 1), (2, 1), (1, 2), (2, 2)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=["cnn4:256", "mnist_cnn:32"], help="MODEL:BATCH pairs")
    ap.add_argument("--images", type=int, default=6000)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    print(f"CPU threads bench · {os.cpu_count()} CPUs · {args.images} images · {args.repeats} repeats", flush=True)
    results: dict = {}
    for rep in range(args.repeats):
        for spec in args.models:
            name, batch = spec.split(":")
            for intra, inter in SETTINGS:
                start = time.perf_counter()
                out = subprocess.run([sys.executable, "-c", CHILD, str(intra), str(inter), name, batch, str(args.images)],
                                     capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    sys.exit(out.stderr[-2000:])
                ips = json.loads(out.stdout.strip().splitlines()[-1])["ips"]
                results.setdefault((spec, intra, inter), []).append(ips)
                print(f"  repeat {rep + 1} {spec:12s} intra {intra} inter {inter}: {ips:6.0f} img/s "
                      f"({time.perf_counter() - start:.0f} s)", flush=True)
    print("\n| model:batch | intra | inter | img/s (median) | ratio to TF default |\n|---|---|---|---|---|")
    for spec in args.models:
        base = statistics.median(results[(spec, 0, 0)])
        for intra, inter in SETTINGS:
            m = statistics.median(results[(spec, intra, inter)])
            label = lambda v: "default" if v == 0 else v  # noqa: E731
            print(f"| {spec} | {label(intra)} | {label(inter)} | {m:.0f} | {m / base:.2f} |")


if __name__ == "__main__":
    main()
