"""The command line as users run it: real processes, real exit codes, real directories."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, read_metrics, run_cli


def test_top_level_help_lists_commands():
    out = run_cli("--help")
    assert out.returncode == 0 and all(c in out.stdout for c in ("train", "compare", "predict"))


def test_train_help_lists_config_groups():
    out = run_cli("train", "--help")
    assert out.returncode == 0
    for group in ("dataset: csv, custom, digits, fashion, folder, mnist", "model:", "cnn3pad", "custom", "optimizer: adam, sgd", "augment:"):
        assert group in out.stdout, group
    assert "schema" not in out.stdout.split("== Config ==")[0]  # the types behind the options are not options


def test_two_runs_started_together_get_their_own_directories(tmp_path):
    args = [sys.executable, "-m", "cnnrun", "train", *TINY, "model=dense"]
    procs = [subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][1][-2000:]
    runs = sorted(p.parent for p in (tmp_path / "outputs").rglob("metrics.json"))
    assert len(runs) == 2 and runs[0] != runs[1]
    for run in runs:
        assert read_metrics(run)["status"] == "ok"
        assert (run / ".hydra" / "config.yaml").is_file()
    assert "test accuracy" in outs[0][0] and "run directory" in outs[0][0]


def test_bad_value_is_one_line_before_training(tmp_path):
    out = run_cli("train", *TINY, "trainer.val_split=1.5", f"hydra.run.dir={tmp_path}")
    assert out.returncode == 2
    last = out.stderr.strip().splitlines()[-1]
    assert last.startswith("cnnrun: error: trainer.val_split=1.5") and "Traceback" not in out.stderr
    assert list(tmp_path.iterdir()) == []  # refused as the config was composed: the directory is untouched


def test_unknown_group_option_lists_the_choices():
    out = run_cli("train", "model=resnet9000")
    assert out.returncode != 0
    assert "resnet9000" in out.stderr and "cnn4" in out.stderr and "mnist_cnn" in out.stderr


def test_unknown_key_is_refused():
    out = run_cli("train", "trainer.epoch=3")
    assert out.returncode != 0 and "trainer.epoch" in out.stderr


def test_sweep_summary_holds_every_job_and_survives_a_failure(tmp_path):
    sweep = tmp_path / "sweep"
    # val_split 0.99 passes the config check but leaves too few images to stratify: a job that fails at run time
    out = run_cli("train", "-m", *TINY, "model=dense,tf_cnn", "trainer.val_split=0.1,0.99", f"hydra.sweep.dir={sweep}")
    assert out.returncode == 1, out.stderr[-2000:]  # some jobs failed; the summary is written first
    rows = list(csv.DictReader(open(sweep / "summary.csv")))
    assert len(rows) == 4
    assert sorted((r["model"], r["trainer.val_split"]) for r in rows) == [
        ("dense", "0.1"), ("dense", "0.99"), ("tf_cnn", "0.1"), ("tf_cnn", "0.99")]
    ok = [r for r in rows if r["status"] == "ok"]
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(ok) == 2 and len(failed) == 2 and all("val_split" in r["error"] for r in failed)
    for r in ok:
        assert abs(float(r["test_acc"]) / 100 - read_metrics(sweep / r["run"])["test_accuracy"]) < 1e-4
    assert float(ok[0]["test_acc"]) >= float(ok[1]["test_acc"])  # best first
    assert "| model |" in (sweep / "summary.md").read_text() and "tf_cnn" in out.stdout


@pytest.mark.slow  # five CLI runs (35 s): `make test-full`
def test_compare_two_runs_and_seeds(tmp_path):
    for seed in (0, 1):
        assert run_cli("train", *TINY, "model=dense", f"trainer.seed={seed}",
                       f"hydra.run.dir={tmp_path / f's{seed}'}").returncode == 0
    out = run_cli("compare", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path))
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader(open(tmp_path / "comparison.csv")))
    assert {r["trainer.seed"] for r in rows} == {"0", "1"}
    md = (tmp_path / "comparison.md").read_text()
    assert "Across seeds" in md and "±" in md
    missing = run_cli("compare", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "nope" in missing.stderr


CHECKOUT_ONLY = r"""
import sys
# Forget the installed cnnrun (wheel or editable finder): import it from the source tree only.
sys.meta_path = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
sys.path_hooks = [h for h in sys.path_hooks if "__editable__" not in getattr(h, "__module__", "")]
sys.path_importer_cache.clear()
sys.path.insert(0, sys.argv[1])
import cnnrun
from hydra import compose, initialize_config_module
assert cnnrun.__file__.startswith(sys.argv[1]), cnnrun.__file__
with initialize_config_module("cnnrun.conf", version_base="1.3"):
    cfg = compose("config", overrides=["experiment=fast_fashion"])
print(cfg.model.name, cfg.trainer.batch_size)
"""


def test_configs_resolve_in_an_uninstalled_checkout():
    # The offline GPU recipe runs from a copied checkout with PYTHONPATH=., without `pip install`.
    root = str(Path(__file__).resolve().parents[1])
    out = subprocess.run([sys.executable, "-c", CHECKOUT_ONLY, root], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["resnet", "512"]


@pytest.mark.skipif(os.environ.get("KERAS_BACKEND", "tensorflow") != "jax",
                    reason="JAX's own cache: run by the JAX suite (make test-jax), 25 s of two JAX processes")
def test_jax_keeps_its_compiled_programs_between_runs_unless_told_not_to(tmp_path, monkeypatch):
    """A JAX run fills cnnrun's compilation cache (under XDG_CACHE_HOME) and the next run of the same model
    reads it; CNNRUN_JAX_CACHE=0 sets no cache for JAX to fill."""
    pytest.importorskip("jax")
    from cnnrun.commands import jax_compilation_cache

    for name in [k for k in os.environ if k.startswith("JAX_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "c0"))
    monkeypatch.setenv("CNNRUN_JAX_CACHE", "0")
    jax_compilation_cache()  # what a process does before Keras starts JAX
    assert not any(k.startswith("JAX_") for k in os.environ) and not (tmp_path / "c0").exists()
    monkeypatch.undo()
    base = {k: v for k, v in os.environ.items() if not k.startswith("JAX_")}
    args = ["train", *TINY, "model=dense", "dataset.limit=64"]
    env = {**base, "KERAS_BACKEND": "jax", "XDG_CACHE_HOME": str(tmp_path / "c1")}
    first = subprocess.run([sys.executable, "-m", "cnnrun", *args, f"hydra.run.dir={tmp_path / 'a'}"], env=env,
                           capture_output=True, text=True)
    assert first.returncode == 0, first.stderr[-2000:]
    cache = tmp_path / "c1" / "cnnrun" / "jax"
    programs = {p.name for p in cache.iterdir() if p.name.endswith("-cache")}
    assert len(programs) > 10  # the train step, the evaluation, every initializer's eager ops
    second = subprocess.run([sys.executable, "-m", "cnnrun", *args, f"hydra.run.dir={tmp_path / 'b'}"], env=env,
                            capture_output=True, text=True)
    assert second.returncode == 0, second.stderr[-2000:]
    assert {p.name for p in cache.iterdir() if p.name.endswith("-cache")} == programs  # all found, none compiled anew
    assert read_metrics(tmp_path / "a")["test_accuracy"] == read_metrics(tmp_path / "b")["test_accuracy"]
