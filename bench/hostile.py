"""The hostile-input audit: bad input, faults and misuse, each run as a real `cnnrun` process, and how it ends.

Each case says what a trustworthy runner does (refuse in one line with a non-zero exit, or go on and
succeed, leaving earlier results byte-identical) and is scored:

    good     it does that
    unclear  right outcome, but the message is not one line (several lines, or Hydra's own text)
    bad      a traceback, a silent acceptance, a lost or changed earlier result, or a wrong exit code

    python bench/hostile.py                       # this checkout
    python bench/hostile.py --checkout /tmp/old   # another checkout (e.g. a git worktree of an old commit)
    python bench/hostile.py --only edges          # issue 20's edges alone

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


def edge_cases(checkout: Path, work: Path):
    """The edges of issue 20: received run directories, secrets, other people's folders, edited records,
    signals and nonsense at every command. Each ends in (name, verdict, detail)."""
    from PIL import Image

    def refuse(name, *args, **kw):
        return (name, *verdict_refuse(run(checkout, *args, cwd=work, **kw)))

    def photos(root: Path, names=("a", "b")) -> Path:
        rng = np.random.default_rng(0)
        for k, name in enumerate(names):
            (root / name).mkdir(parents=True, exist_ok=True)
            for i in range(8):
                Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(root / name / f"{i}.png")
        return root

    base = work / "e-finished"
    run(checkout, "train", *TINY, f"hydra.run.dir={base}", cwd=work)

    def copy(name: str) -> Path:
        target = work / name
        subprocess.run(["cp", "-r", str(base), str(target)], check=True)
        (target / ".lock").unlink(missing_ok=True)
        return target

    # --- security
    received, pwned = copy("e-received"), work / "pwned"
    (work / "payload").write_text("print('pwned')\n")
    o = received / ".hydra" / "overrides.yaml"
    o.write_text(o.read_text() + f"- +hydra.callbacks.pwn._target_=shutil.copyfile\n- +hydra.callbacks.pwn.src="
                 f"{work / 'payload'}\n- +hydra.callbacks.pwn.dst={pwned}\n")
    p = run(checkout, "resume", received, cwd=work)
    yield "resume runs a received directory's callback", ("bad" if pwned.exists() else "good"), \
        f"exit {p.returncode}, {'the payload was copied' if pwned.exists() else 'nothing ran'}"

    for name, extra, env in [("password in logger.mlflow.tracking_uri",
                              ["logger=mlflow", "logger.mlflow.tracking_uri=http://bob:Pw8obSECRET@127.0.0.1:9",
                               "logger.mlflow.timeout=1"], {}),
                             ("password in $MLFLOW_TRACKING_URI", ["logger=mlflow", "logger.mlflow.timeout=1"],
                              {"MLFLOW_TRACKING_URI": "http://alice:Pw8obSECRET@127.0.0.1:9"})]:
        d = work / ("e-secret-" + str(len(name)))
        p = run(checkout, "train", *TINY, *extra, f"hydra.run.dir={d}", cwd=work, env=env)
        leaks = [str(f.relative_to(d)) for f in d.rglob("*") if f.is_file() and b"Pw8obSECRET" in f.read_bytes()]
        leaks += ["console"] if "Pw8obSECRET" in p.stdout + p.stderr else []
        yield name, ("bad" if leaks or p.returncode != 0 else "good"), \
            (f"written in {', '.join(leaks[:4])}" if leaks else f"exit {p.returncode}, written nowhere")

    import keras

    crafted = copy("e-crafted")
    x = keras.Input((28, 28, 1))
    keras.Model(x, keras.layers.Lambda(lambda t: t * 2)(x)).save(crafted / "model.keras")
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(work / "e.png")
    yield refuse("crafted model.keras: predict", "predict", crafted, work / "e.png", "--out", work / "e.csv")
    yield refuse("crafted model.keras: explain", "explain", crafted, "--max", "0", "--embedding", "none")
    yield refuse("crafted model.keras: export", "export", crafted, "--format", "savedmodel")

    # --- data lost, mixed or misreported
    project = work / "myproj"
    (project / ".git").mkdir(parents=True)
    (project / "src").mkdir()
    p = run(checkout, "train", *TINY, "hydra.run.dir=.", cwd=project)
    v, d = verdict_refuse(p)
    if sorted(x.name for x in project.iterdir()) != [".git", "src"]:
        v, d = "bad", f"exit {p.returncode}: the project folder was changed"
    yield "hydra.run.dir=. in a project", v, d
    had_lock = Path("/.lock").exists()
    p = run(checkout, "train", *TINY, "hydra.run.dir=/", cwd=work)
    v, d = verdict_refuse(p)
    if not had_lock and Path("/.lock").exists():
        v, d = "bad", f"exit {p.returncode}: /.lock left behind"
    yield "hydra.run.dir=/", v, d

    sweep = work / "e-sweep"
    run(checkout, "train", "-m", *TINY, "trainer.seed=0,1", f"hydra.sweep.dir={sweep}", cwd=work)
    before = snapshot(sweep)
    p = run(checkout, "train", "-m", *TINY, "trainer.seed=0,1", "optimizer.lr=0.1", f"hydra.sweep.dir={sweep}", cwd=work)
    v, d = verdict_refuse(p)
    if {k: h for k, h in snapshot(sweep).items() if "train.log" not in k} != \
            {k: h for k, h in before.items() if "train.log" not in k}:
        v, d = "bad", f"exit {p.returncode}: the earlier sweep's files were rewritten"
    yield "a sweep of other overrides into a finished sweep", v, d

    data = photos(work / "e-photos")
    args = [*TINY[1:], "dataset=folder", f"dataset.path={data}", "dataset.image_size=16", "trainer.batch_size=4"]
    run(checkout, "train", *args, f"hydra.run.dir={work / 'e-data-run'}", cwd=work)
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(data / "a" / "new.png")
    yield refuse("same config on other data into a finished run", "train", *args, f"hydra.run.dir={work / 'e-data-run'}")
    p = run(checkout, "train", *TINY[1:], "dataset=folder", "dataset.path=.", "dataset.image_size=16",
            "hydra.run.dir=outputs/x", cwd=data)
    v, d = verdict_refuse(p)
    yield "a run directory inside the dataset folder", v, d
    yield refuse("duplicate dataset.class_names", "train", *TINY, "dataset.class_names=[a,a,b,c,d,e,f,g,h,i]")
    mismatch = copy("e-names")
    m = json.loads((mismatch / "metrics.json").read_text())
    (mismatch / "metrics.json").write_text(json.dumps({**m, "class_names": ["x", "y"]}))
    yield refuse("class_names that do not match the model", "predict", mismatch, work / "e.png", "--out", work / "e.csv")
    yield refuse("hydra.job.chdir=true", "train", *TINY, "hydra.job.chdir=true")

    speeds = {}
    for spe in (1, 4):
        d = work / f"e-profile-{spe}"
        run(checkout, "train", *TINY, "debug=profile", "hooks.profile.trace=0", "hooks.profile.warmup=2",
            "hooks.profile.steps=4", "trainer.batch_size=16", "trainer.epochs=2", f"trainer.steps_per_execution={spe}",
            f"hydra.run.dir={d}", cwd=work)
        speeds[spe] = (json.loads((d / "metrics.json").read_text()).get("profile") or {}).get("images_per_second")
    ratio = speeds[4] / speeds[1] if speeds[1] and speeds[4] else 0
    yield "debug=profile with steps_per_execution=4", ("good" if ratio > 0.6 else "bad"), \
        f"images/s with 4 steps a call / with 1: {ratio:.2f}"
    yield refuse("an Optuna search without a validation split", "train", *TINY, "hparams_search=optuna_fashion",
                 "trainer.val_split=0")
    yield refuse("an Optuna preset's space on a model without its keys", "train", *TINY, "hparams_search=optuna_fashion",
                 "trainer.val_split=0.2")
    p = run(checkout, "train", *TINY, "model=cnn4", "hparams_search=optuna_fashion", "trainer.val_split=0.2",
            "hydra.sweeper.n_trials=1", "optimizer.lr=interval(0.0001,0.01)", f"hydra.sweep.dir={work / 'e-optuna'}",
            cwd=work)
    yield "Optuna's command-line search space", ("good" if p.returncode == 0 and "Traceback" not in p.stderr else "bad"), \
        f"exit {p.returncode}"

    # --- signals and processes
    again = copy("e-resume-false")
    p = run(checkout, "resume", again, "trainer.resume=false", cwd=work)
    ok = p.returncode == 0 and (work / "e-resume-false.earlier-1").is_dir()
    yield "resume DIR trainer.resume=false", ("good" if ok else "bad"), f"exit {p.returncode}"

    # --- tracebacks and nonsense
    yield refuse("export --out an existing file", "export", base, "--format", "savedmodel", "--out", work / "e.png")
    yield refuse("explain --out an existing file", "explain", base, "--max", "0", "--embedding", "none",
                 "--out", work / "e.png")
    latin = photos(work / "e-latin1")
    os.rename(latin / "b", os.fsencode(latin) + b"/caf\xe9")
    yield refuse("a class folder named in Latin-1", "train", *TINY[1:], "dataset=folder", f"dataset.path={latin}",
                 "dataset.image_size=16", f"hydra.run.dir={work / 'e-latin-run'}")
    cjk = photos(work / "e-cjk", names=("桜", "コスモス"))
    p = run(checkout, "train", *TINY[1:], "dataset=folder", f"dataset.path={cjk}", "dataset.image_size=16",
            f"hydra.run.dir={work / 'e-cjk-run'}", cwd=work, env={"LANG": "C", "LC_ALL": "C"})
    yield "CJK class names under LANG=C", ("good" if p.returncode == 0 and "Traceback" not in p.stderr else "bad"), \
        f"exit {p.returncode}"
    edited = work / "e-edited"
    for name, m in {"a": {"status": "ok", "test_accuracy": "ninety"}, "b": {"status": "failed", "error": "x" * 2_000_000}}.items():
        (edited / name).mkdir(parents=True)
        (edited / name / "metrics.json").write_text(json.dumps(m))
    p = run(checkout, "compare", edited, "--out", work, cwd=work)
    lines = len(p.stdout.splitlines())
    yield "compare on edited records", ("good" if p.returncode == 0 and "Traceback" not in p.stderr and lines < 100
                                        else "bad"), f"exit {p.returncode}, {lines} lines"
    for backend in ("torch", "tensorflw"):
        d = work / f"e-backend-{backend}"
        name, v, detail = refuse(f"KERAS_BACKEND={backend}", "train", *TINY, f"hydra.run.dir={d}",
                                 env={"KERAS_BACKEND": backend})
        yield name, ("bad" if d.exists() else v), detail + (" (a run directory was left)" if d.exists() else "")
    yield refuse("augment.mixup.alpha=inf", "train", *TINY, "augment=mixup", "augment.mixup.alpha=inf")
    yield refuse("predict --top -5", "predict", base, work / "e.png", "--top", "-5")
    nan_run = work / "e-nan"
    p = run(checkout, "train", *TINY, "optimizer=sgd", "optimizer.lr=1e30", f"hydra.run.dir={nan_run}", cwd=work)
    try:
        json.loads((nan_run / "metrics.json").read_text(), parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
        strict = True
    except ValueError:
        strict = False
    yield "metrics.json of a NaN run is strict JSON", ("good" if strict and p.returncode == 1 else "bad"), \
        f"exit {p.returncode}, {'strict' if strict else 'bare NaN'}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkout", type=Path, default=Path(__file__).resolve().parents[1])
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", choices=["all", "inputs", "edges"], default="all")
    ns = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="cnnrun-hostile-") as tmp:
        import itertools

        parts = {"inputs": [cases], "edges": [edge_cases]}.get(ns.only, [cases, edge_cases])
        for name, verdict, detail in itertools.chain(*(f(ns.checkout.resolve(), Path(tmp)) for f in parts)):
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
