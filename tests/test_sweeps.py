"""Sweeps through every launcher cnnrun supports, preset globs, Optuna, and one GPU per parallel job."""

import csv
import importlib.util
import subprocess
import sys

import pytest
import yaml

from cnnrun.training import launch
from tests.conftest import FASHION_DIR, TINY, read_metrics, run_cli


def summary(sweep) -> list[dict]:
    with open(sweep / "summary.csv") as f:
        return list(csv.DictReader(f))


def check_rows_match_runs(sweep, rows) -> None:
    """Every summary row is its run: same test accuracy and parameter count as the run's metrics.json."""
    for r in rows:
        m = read_metrics(sweep / r["run"])
        assert r["status"] == m["status"] == "ok"
        assert abs(float(r["test_acc"]) / 100 - m["test_accuracy"]) < 1e-4
        assert int(r["params"]) == m["params"]


def needs(module):
    return pytest.mark.skipif(importlib.util.find_spec(module) is None, reason=f"{module} is not installed")


@pytest.mark.parametrize("launcher", [[], pytest.param(["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                                        marks=pytest.mark.slow)],  # a process per job: test-full
                         ids=["basic", "joblib"])
def test_two_by_two_sweep(tmp_path, launcher):
    if launcher:
        pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    out = run_cli("train", "-m", *TINY, *launcher, "model=dense,mnist_cnn", "trainer.seed=1,2",
                  f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = summary(sweep)
    assert sorted((r["model"], r["trainer.seed"]) for r in rows) == [
        ("dense", "1"), ("dense", "2"), ("mnist_cnn", "1"), ("mnist_cnn", "2")]
    check_rows_match_runs(sweep, rows)
    for r in rows:  # each job really ran the overrides its row names
        cfg = (sweep / r["run"] / ".hydra" / "config.yaml").read_text()
        assert f"name: {r['model']}" in cfg and f"seed: {r['trainer.seed']}" in cfg
    assert [float(r["test_acc"]) for r in rows] == sorted((float(r["test_acc"]) for r in rows), reverse=True)


@pytest.mark.skipif(not FASHION_DIR.is_dir(), reason="needs Fashion-MNIST (apt-get install dataset-fashion-mnist)")
@pytest.mark.slow  # all nine article001 presets as one sweep: `make test-full`
def test_glob_reruns_article001s_table(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli("train", "-m", "experiment=glob(article001_*)", "dataset.limit=200", "trainer.epochs=1",
                  "trainer.verbose=0", "output.save_model=false", f"hydra.sweep.dir={sweep}", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = summary(sweep)
    presets = sorted(r["experiment"] for r in rows)
    assert len(presets) == 9 and presets[0] == "article001_cnn3" and "article001_cnn3pad_mirror_10ep" in presets
    check_rows_match_runs(sweep, rows)
    article = {r["experiment"]: r["article"] for r in rows}
    assert article["article001_cnn3"] == "92.63" and article["article001_dense"] == "87.75"


@needs("hydra_plugins.hydra_optuna_sweeper")
@pytest.mark.slow  # an optional sweeper plugin, several trials: `make test-full`
def test_optuna_search_maximises_validation_accuracy(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli("train", "hparams_search=optuna_fashion", "dataset=digits", "dataset.limit=300", "trainer.epochs=1",
                  "trainer.verbose=0", "model=mnist_cnn", "hydra.sweeper.n_trials=3", f"hydra.sweep.dir={sweep}")
    assert out.returncode == 0, out.stderr[-3000:]
    rows = summary(sweep)
    assert len(rows) == 3
    check_rows_match_runs(sweep, rows)
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    vals = [read_metrics(sweep / r["run"])["best_val_accuracy"] for r in rows]
    assert best["best_value"] == pytest.approx(max(vals))
    assert set(best["best_params"]) >= {"optimizer.lr", "trainer.batch_size", "model.dropout", "augment.erasing.p"}
    configs = {read_metrics(sweep / r["run"])["config_hash"] for r in rows}
    assert len(configs) == 3  # three different trials, not one config three times


@needs("hydra_plugins.hydra_submitit_launcher")
@pytest.mark.slow  # an optional launcher plugin, a process per job: `make test-full`
def test_submitit_launcher_local_executor(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli("train", "-m", *TINY, "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
                  "model=dense,mnist_cnn", f"hydra.sweep.dir={sweep}", timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = summary(sweep)
    assert sorted(r["model"] for r in rows) == ["dense", "mnist_cnn"]
    check_rows_match_runs(sweep, rows)
    assert list((sweep / ".submitit").rglob("*_result.pkl"))  # really ran as submitit jobs


@pytest.mark.slow
@needs("hydra_plugins.hydra_ray_launcher")
def test_ray_launcher_on_a_local_ray_instance(tmp_path):
    sweep = tmp_path / "sweep"
    out = run_cli("train", "-m", *TINY, "hydra/launcher=ray", "+hydra.launcher.ray.init.num_cpus=2",
                  "+hydra.launcher.ray.init.include_dashboard=false", "model=dense,mnist_cnn",
                  f"hydra.sweep.dir={sweep}", timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = summary(sweep)
    assert sorted(r["model"] for r in rows) == ["dense", "mnist_cnn"]
    check_rows_match_runs(sweep, rows)


CLAIM = """
import sys, time
from cnnrun.training import launch
print(launch.claim_gpu(sys.argv[1], ["3", "5"]), flush=True)
time.sleep(float(sys.argv[2]))
"""


def test_each_parallel_worker_gets_its_own_gpu(tmp_path, monkeypatch):
    """Three worker processes, two GPUs: the first two get one each, the third shares; the slot frees on exit."""
    workers = [subprocess.Popen([sys.executable, "-c", CLAIM, str(tmp_path), "3"], stdout=subprocess.PIPE, text=True)
               for _ in range(2)]
    got = sorted(w.stdout.readline().strip() for w in workers)
    third = subprocess.run([sys.executable, "-c", CLAIM, str(tmp_path), "0"], capture_output=True, text=True)
    for w in workers:
        w.wait()
    assert got == ["3", "5"] and third.stdout.strip() in ("3", "5")
    after = subprocess.run([sys.executable, "-c", CLAIM, str(tmp_path), "0"], capture_output=True, text=True)
    assert after.stdout.strip() == "3"  # the first slot is free again
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert launch.visible_gpus() == [] and launch.claim_gpu(tmp_path) is None  # no GPU: nothing to do
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    assert launch.visible_gpus() == ["0", "1"]
    assert all(type(g) is str for g in launch.visible_gpus())  # plain strings, ready for CUDA_VISIBLE_DEVICES


@pytest.mark.slow  # a backend start-up per job: `make test-full`
def test_fresh_process_jobs_give_the_same_results(tmp_path):
    """trainer.fresh_process=true: each job in a new process, same numbers as in one process."""
    sweeps = {}
    for fresh in ("false", "true"):
        sweeps[fresh] = tmp_path / fresh
        out = run_cli("train", "-m", *TINY, "model=dense", "trainer.seed=1,2", f"trainer.fresh_process={fresh}",
                      "trainer.val_split=0.1,0.99", f"hydra.sweep.dir={sweeps[fresh]}")
        assert out.returncode == 1, out.stderr[-3000:]  # two jobs fail (too few images to stratify): exit 1
    rows = {k: sorted((r["trainer.seed"], r["trainer.val_split"], r["status"], r["test_acc"]) for r in summary(v))
            for k, v in sweeps.items()}
    assert rows["true"] == rows["false"] and [r[2] for r in rows["true"]].count("failed") == 2
    assert "val_split" in read_metrics(sweeps["true"] / "1")["error"]  # a failing job is still one clear error
    assert "data:" in (sweeps["true"] / "0" / "train.log").read_text()  # the job's own log reaches its file


def test_a_long_sweep_ends_with_one_compact_summary(tmp_path, capsys):
    import json

    from cnnrun.commands.sweep import CONSOLE_ROWS, summarize

    n = CONSOLE_ROWS + 5
    for job in range(n):
        (tmp_path / str(job) / ".hydra").mkdir(parents=True)
        (tmp_path / str(job) / ".hydra" / "overrides.yaml").write_text(f"- trainer.seed={job}\n")
        m = {"status": "ok", "test_accuracy": job / 100} if job else {"status": "failed", "error": "boom"}
        (tmp_path / str(job) / "metrics.json").write_text(json.dumps(m))
    runs, _ = summarize([tmp_path], tmp_path, "summary", "sweep")
    out = capsys.readouterr().out
    assert len(runs) == n and f"best {CONSOLE_ROWS} of {n}" in out
    summary = f"{n} runs: {n - 1} ok, 1 failed; best test accuracy {100 * (n - 1) / 100:.2f} % (trainer.seed={n - 1})"
    assert summary in out.splitlines() and out.index(summary) > out.index("trainer.seed")  # one line, after the table
    assert len((tmp_path / "summary.csv").read_text().splitlines()) == n + 1  # the file keeps every row
