"""The hostile-input audit: bad input, faults and misuse, each run as a real `cnnrun` process, and how it ends.

Each case says what a trustworthy runner does (refuse in one line with a non-zero exit, or go on and
succeed, leaving earlier results byte-identical) and is scored:

    good     it does that
    unclear  right outcome, but the message is not one line (several lines, or Hydra's own text)
    bad      a traceback, a silent acceptance, a lost or changed earlier result, or a wrong exit code

    python bench/hostile.py                       # this checkout
    python bench/hostile.py --checkout /tmp/old   # another checkout (e.g. a git worktree of an old commit)

Writes a table (markdown) to stdout; `--out FILE` also saves it. Takes a few minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

# Runs cnnrun from CHECKOUT even where another copy is installed in editable mode (its import hook is dropped).
LAUNCH = ("import sys; sys.path.insert(0, sys.argv.pop(1)); "
          "sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
          "from cnnrun.cli import main; main(sys.argv[1:])")
TINY = ["dataset=digits", "dataset.limit=200", "trainer.epochs=1", "trainer.verbose=0", "model=dense"]


def run(checkout: Path, *args, cwd: Path, timeout=300, env=None):
    try:
        return subprocess.run([sys.executable, "-c", LAUNCH, str(checkout), *map(str, args)], cwd=cwd,
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})})
    except subprocess.TimeoutExpired as e:
        return subprocess.CompletedProcess(e.cmd, 124, "", f"timed out after {timeout} s")


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def verdict_refuse(p) -> tuple[str, str]:
    """The case must be refused: non-zero exit, one `cnnrun: error:` line, no traceback."""
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("cnnrun: error:")]
    if "Traceback" in p.stderr or p.returncode in (124, 137, -9):
        return "bad", f"exit {p.returncode}, traceback or killed"
    if p.returncode == 0:
        return "bad", "exit 0: accepted"
    if len(errors) == 1:
        return "good", f"exit {p.returncode}: {errors[0][len('cnnrun: error: '):][:110]}"
    tail = (p.stderr.strip().splitlines() or ["(nothing)"])[-1][:110]
    return "unclear", f"exit {p.returncode}: {tail}"


def cases(checkout: Path, work: Path):
    """(name, verdict, detail) for every case."""
    def refuse(name, *args, **kw):
        return (name, *verdict_refuse(run(checkout, *args, cwd=work, **kw)))

    for name, args in [
        ("negative seed", ["trainer.seed=-1"]),
        ("negative padding", ["model=cnn3", "model.pad=-1"]),
        ("text for a number", ["augment=rotate", "augment.rotate.degrees=abc"]),
        ("typo added with +", ["+trainer.epoch=1"]),
        ("typo", ["trainer.epoch=3"]),
        ("Adam given momentum", ["+optimizer.momentum=0.9"]),
        ("zero epochs", ["trainer.epochs=0"]),
        ("epochs as text", ["trainer.epochs=abc"]),
        ("validation split 1.5", ["trainer.val_split=1.5"]),
        ("unknown precision", ["trainer.precision=fp16"]),
        ("unknown model", ["model=foo"]),
        ("negative learning rate", ["optimizer.lr=-1"]),
        ("fractional batch size", ["trainer.batch_size=2.5"]),
        ("folder without a path", ["dataset=folder"]),
        ("sweep values without -m", ["model=dense,cnn3"]),
        ("unbalanced bracket", ["trainer.epochs=[1"]),
        ("augment_after past the end", ["augment=flip", "trainer.augment_after=5", "trainer.epochs=5"]),
        ("data not where it is said", ["dataset=mnist", f"dataset.path={work / 'nowhere'}"]),
        ("5000-pixel images", ["dataset=digits", "dataset.image_size=5000"]),
    ]:
        yield refuse(name, "train", *TINY[:1], *args, f"hydra.run.dir={work / name.replace(' ', '_')}", timeout=240)

    sweep = work / "sweep-bad-job"
    p = run(checkout, "train", "-m", *TINY, "trainer.seed=0,-1", f"hydra.sweep.dir={sweep}", cwd=work)
    v, d = verdict_refuse(p)
    if v != "bad" and (sweep / "0" / "metrics.json").exists():
        v, d = "bad", "a job ran before the bad one was found"
    yield "sweep with one bad job", v, d

    p = run(checkout, cwd=work)
    yield "no command", ("good" if p.returncode == 2 else "bad"), f"exit {p.returncode}"

    sweep = work / "sweep-all-fail"
    p = run(checkout, "train", "-m", "dataset=mnist", f"dataset.path={work / 'nowhere'}", "model=dense,tf_cnn",
            f"hydra.sweep.dir={sweep}", cwd=work)
    ok = p.returncode != 0 and (sweep / "summary.csv").exists()
    yield "sweep whose every job fails", ("good" if ok else "bad"), f"exit {p.returncode}"

    run_dir = work / "finished"
    run(checkout, "train", *TINY, f"hydra.run.dir={run_dir}", cwd=work)
    before = snapshot(run_dir)
    p = run(checkout, "train", *TINY, "optimizer.lr=0.01", f"hydra.run.dir={run_dir}", cwd=work)
    v, d = verdict_refuse(p)
    if snapshot(run_dir) != before:
        v, d = "bad", f"exit {p.returncode}: the finished run was changed or replaced"
    yield "another config into a finished run", v, d

    import fcntl

    locked = work / "locked"
    locked.mkdir()
    with open(locked / ".lock", "a+") as f:  # held by this process, as a running cnnrun would
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write(f"process {os.getpid()}\n")
        f.flush()
        p = run(checkout, "train", *TINY, f"hydra.run.dir={locked}", cwd=work)
    yield "second process on a run directory", *verdict_refuse(p)

    metrics = json.loads((run_dir / "metrics.json").read_text())
    nan_run = work / "nan-run"
    subprocess.run(["cp", "-r", str(run_dir), str(nan_run)], check=True)
    (nan_run / "metrics.json").write_text(json.dumps({**metrics, "status": "nan"}))
    from PIL import Image

    Image.fromarray(np.zeros((28, 28), np.uint8)).save(work / "x.png")
    yield refuse("predict on a run that ended nan", "predict", nan_run, work / "x.png", "--out", work / "p.csv")
    (work / "blocker").write_text("a file, not a folder")
    yield refuse("predict --out unwritable", "predict", run_dir, work / "x.png", "--out", work / "blocker" / "p.csv")
    yield refuse("compare --out unwritable", "compare", run_dir, "--out", work / "blocker" / "sub")

    cut = work / "cut-checkpoint"  # an interrupted run whose checkpoint was cut short (a full disk, a copy)
    subprocess.run(["cp", "-r", str(run_dir), str(cut)], check=True)
    (cut / "metrics.json").write_text(json.dumps({**metrics, "status": "interrupted"}))
    (cut / "checkpoint.npz").write_bytes(b"PK\x03\x04 cut short")
    yield refuse("truncated checkpoint.npz", "resume", cut)

    photos = work / "photos"
    rng = np.random.default_rng(0)
    for k, name in enumerate(["a", "b"]):
        (photos / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(photos / name / f"{i}.jpg")
    good = (photos / "a" / "0.jpg").read_bytes()
    (photos / "a" / "0.jpg").write_bytes(good[: len(good) // 2])
    p = run(checkout, "train", *TINY[1:], "dataset=folder", f"dataset.path={photos}", "dataset.image_size=32",
            "dataset.cache=false", "trainer.batch_size=4", f"hydra.run.dir={work / 'truncated-jpeg'}", cwd=work)
    yield "truncated JPEG, streamed", ("good" if p.returncode == 0 and "Traceback" not in p.stderr else "bad"), \
        f"exit {p.returncode}"

    bn_run = work / "cnn4"  # BatchNorm: the layer cnnrun trains with its own fused-kernel class
    run(checkout, "train", *TINY, "model=cnn4", f"hydra.run.dir={bn_run}", cwd=work)
    script = ("import sys; sys.modules['cnnrun'] = None; import keras; "
              f"keras.models.load_model({str(bn_run / 'model.keras')!r}); print('loaded')")
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=work, timeout=300)
    yield "model.keras without cnnrun", ("good" if "loaded" in p.stdout else "bad"), \
        ("loads" if "loaded" in p.stdout else p.stderr.strip().splitlines()[-1][:110])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--out", type=Path)
    ns = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnrun-hostile-") as tmp:
        for name, verdict, detail in cases(ns.checkout.resolve(), Path(tmp)):
            rows.append((name, verdict, detail.replace("|", "\\|")))
            print(f"{verdict:8} {name}: {detail}", file=sys.stderr, flush=True)
    counts = {v: sum(r[1] == v for r in rows) for v in ("good", "unclear", "bad")}
    text = (f"{len(rows)} cases: {counts['good']} good, {counts['unclear']} unclear, {counts['bad']} bad "
            f"({ns.checkout})\n\n| case | verdict | how it ends |\n|---|---|---|\n"
            + "".join(f"| {n} | {v} | {d} |\n" for n, v, d in rows))
    print(text)
    if ns.out:
        ns.out.write_text(text)


if __name__ == "__main__":
    main()
