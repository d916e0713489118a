"""distribute=data_parallel: one run over several devices and processes (cnnrun/training/distribute.py).

Two devices are JAX's CPU forced into two (XLA_FLAGS), two processes are real `cnnrun train` processes
joined on 127.0.0.1 by jax.distributed (CPU collectives over Gloo), as a user would start them on two hosts.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import read_metrics, run_cli

pytest.importorskip("jax", reason="distribute=data_parallel trains on JAX")

from cnnrun import CnnrunError  # noqa: E402
from cnnrun.training import distribute  # noqa: E402
from cnnrun.training.distribute import DataParallel as Layout  # noqa: E402
from cnnrun.training.distribute import Placement  # noqa: E402

TWO_DEVICES = {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
ONE_DEVICE = {"KERAS_BACKEND": "jax", "XLA_FLAGS": ""}
# mnist_cnn without dropout: dropout's masks are drawn differently when a batch is split over devices
RUN = ["dataset=digits", "dataset.limit=600", "model=mnist_cnn", "model.dropout=false", "trainer.epochs=2",
       "trainer.val_split=0.1", "trainer.verbose=0"]


# --- each image once an epoch, none left out unsaid -----------------------------------------------------

@pytest.mark.parametrize("n,batch,processes,devices", [(100, 32, 2, 2), (101, 32, 2, 2), (1000, 64, 2, 8),
                                                       (37, 8, 1, 2), (10, 4, 2, 4), (64, 32, 4, 4)])
def test_each_process_takes_its_part_of_every_batch(n, batch, processes, devices):
    order = np.random.default_rng(n).permutation(n)
    shares = [Layout(processes, p, devices, batch).share(order) for p in range(processes)]
    cut = shares[0][1]
    assert cut == (n % batch) % devices and all(c == cut for _, c in shares)
    taken = np.concatenate([s for s, _ in shares])
    assert len(taken) == len(set(taken.tolist())) == n - cut  # none twice, and the few cut are counted
    assert set(taken.tolist()) == set(order[:n - cut].tolist())  # the cut ones are the epoch's last
    steps = Layout(processes, 0, devices, batch).steps(n)
    for p, (mine, _) in enumerate(shares):
        per = batch // processes
        batches = [mine[i:i + per] for i in range(0, len(mine), per)]
        assert len(batches) == steps  # every process takes the same number of steps
        for k, part in enumerate(batches):  # its part of the k-th global batch, split evenly over its devices
            whole = order[:n - cut][k * batch:(k + 1) * batch]
            size = len(whole) // processes
            assert part.tolist() == whole[p * size:(p + 1) * size].tolist()
            assert len(part) % (devices // processes) == 0


def test_validation_is_split_evenly():
    (a, batch), (b, _) = (Layout(2, p, 4, 32).validation(103, 1024) for p in (0, 1))
    assert len(a) == len(b) == 50 and not set(a) & set(b)  # 100 of 103: a multiple of the 4 devices
    assert batch == 512 and Layout(2, 0, 4, 32).validation(103, 3)[1] == 2


def test_on_one_device_nothing_changes():
    order = np.arange(10)[::-1]
    mine, cut = Placement(batch=4).share(order)
    assert mine is order and cut == 0 and Placement(batch=4).steps(10) == 3
    assert Placement(batch=4).validation(10, 64) == (None, 64)


def test_other_backends_are_refused_in_one_line(monkeypatch):
    monkeypatch.setenv("KERAS_BACKEND", "tensorflow")
    with pytest.raises(CnnrunError) as err:
        distribute.check_backend()
    assert str(err.value).startswith("distribute=data_parallel trains on JAX, but the backend is tensorflow; "
                                     "start with KERAS_BACKEND=jax")


# Commands run one after another by one process (cnnrun.cli.main, as the console script calls it): each's exit code
# and what it wrote to stderr after a line of its own. For refusals, which end before Hydra or a run starts.
COMMANDS_IN_ONE_PROCESS = (
    "import json, sys\nfrom cnnrun.cli import main\n"
    "for argv in json.loads(sys.argv[1]):\n"
    "    try:\n        main(argv)\n        code = 0\n"
    "    except SystemExit as e:\n        code = e.code\n"
    "    print(f'=== exit {code}', file=sys.stderr, flush=True)\n")


def refusals_in_one_process(*commands: list[str], env: dict) -> list[tuple[int, str]]:
    import json

    done = subprocess.run([sys.executable, "-c", COMMANDS_IN_ONE_PROCESS, json.dumps(commands)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env})
    parts = done.stderr.split("=== exit ")
    assert done.returncode == 0 and len(parts) == len(commands) + 1, done.stderr[-3000:]
    return [(int(part.split("\n", 1)[0]), before) for before, part in zip(parts, parts[1:])]


def test_a_batch_the_devices_cannot_split_is_refused_before_any_work(tmp_path):
    (code, said), (code2, said2) = refusals_in_one_process(
        ["train", *RUN, "distribute=data_parallel", "trainer.batch_size=33", f"hydra.run.dir={tmp_path / 'r'}"],
        ["train", *RUN, "distribute=data_parallel", "distribute.devices=3", f"hydra.run.dir={tmp_path / 's'}"],
        env=TWO_DEVICES)
    assert code == 2, said[-2000:]
    assert ("trainer.batch_size=33 does not split evenly over 2 devices; choose a multiple of 2, "
            "e.g. trainer.batch_size=34 or 32") in said
    assert "data:" not in said  # refused before the data was read
    assert code2 == 2 and "distribute.devices=3 but this process has 2 device(s)" in said2, said2[-2000:]


# --- the same training --------------------------------------------------------------------------------

def weights(run_dir: Path) -> list[np.ndarray]:
    """model.keras's weights, read from the archive itself (no backend needed in the test process)."""
    import zipfile

    import h5py

    with zipfile.ZipFile(run_dir / "model.keras") as z, z.open("model.weights.h5") as f:
        out = []
        with h5py.File(f, "r") as h5:
            h5.visititems(lambda name, item: out.append((name, np.array(item))) if hasattr(item, "shape") else None)
    return [w for _, w in sorted(out, key=lambda x: x[0])]


def misclassified(run_dir: Path) -> list[str]:
    return sorted(line.split(",")[0] for line in (run_dir / "misclassified.csv").read_text().splitlines()[1:])


@pytest.fixture(scope="module")
def one_device(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("one") / "run"
    r = run_cli("train", *RUN, f"hydra.run.dir={run_dir}", env=TWO_DEVICES)
    assert r.returncode == 0, r.stderr[-3000:]
    return run_dir


def test_two_devices_train_as_one_device_does(one_device, tmp_path):
    run_dir = tmp_path / "two"
    r = run_cli("train", *RUN, "distribute=data_parallel", f"hydra.run.dir={run_dir}", env=TWO_DEVICES)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "data parallel over 2 device(s) in 1 process(es): batch 32 = 16 per device" in r.stdout + r.stderr
    one, two = read_metrics(one_device), read_metrics(run_dir)
    assert two["distribute"] == {"processes": 1, "process": 0, "devices": 2, "batch": 32, "per_device_batch": 16}
    assert "distribute" not in one
    assert two["test_accuracy"] == one["test_accuracy"]  # to the image
    assert misclassified(run_dir) == misclassified(one_device)
    # The weights after 34 Adam steps: float32 sums taken in another order (per device, then across) differ in
    # their last bits, and Adam turns a gradient near 0 into a step of up to lr (0.001) either way, so single
    # weights may part by a few lr (seen: 0.0049 at most); the weights as a whole agree to 0.05 % on a CPU with
    # AVX-512 and 0.28 % on one without (XLA's kernels for each sum in their own order): 1 % is the bound.
    a, b = weights(one_device), weights(run_dir)
    assert max(float(np.max(np.abs(x - y))) for x, y in zip(a, b)) < 10 * 0.001
    gap = np.sqrt(sum(((x - y) ** 2).sum() for x, y in zip(a, b)) / sum((x ** 2).sum() for x in a))
    assert gap < 1e-2, gap


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_processes(run_dir: Path, count: int, *extra, epochs: int | None = None) -> list[subprocess.Popen]:
    port = free_port()
    args = [*RUN, *([f"trainer.epochs={epochs}"] if epochs else []), "distribute=data_parallel",
            f"distribute.coordinator=127.0.0.1:{port}", f"distribute.num_processes={count}", "distribute.timeout=10",
            *extra, f"hydra.run.dir={run_dir}"]
    env = {**os.environ, **ONE_DEVICE}
    return [subprocess.Popen([sys.executable, "-m", "cnnrun", "train", *args, f"distribute.process_id={p}"],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for p in range(count)]


def test_two_processes_train_one_run_that_process_0_writes(one_device, tmp_path):
    run_dir = tmp_path / "run"
    procs = start_processes(run_dir, 2)
    outs = [out + err for out, err in (p.communicate(timeout=300) for p in procs)]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-3000:] + outs[1][-3000:]
    m = read_metrics(run_dir)
    assert m["status"] == "ok" and m["distribute"]["processes"] == 2 and m["distribute"]["devices"] == 2
    assert m["test_accuracy"] == read_metrics(one_device)["test_accuracy"]  # the same training, to the image
    assert misclassified(run_dir) == misclassified(one_device)
    assert "process 1 trained its share; process 0 evaluates and writes" in outs[1]
    assert "process 1: the run ended ok" in outs[1]
    # process 1 wrote nothing there: Hydra's copies and the log are process 0's
    assert "distribute.process_id=0" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    log = (run_dir / "train.log").read_text()
    assert "process 0 of 2 joined" in log and "process 1" not in log
    assert not (run_dir / ".lock").exists()


@pytest.mark.slow  # one job of a sweep, started by submitit as two tasks (about 50 s)
def test_the_submitit_launcher_runs_one_job_as_two_processes(one_device, tmp_path):
    sweep = tmp_path / "sweep"
    r = run_cli("train", "-m", "hydra/launcher=submitit_local", "hydra.launcher.tasks_per_node=2", *RUN,
                "distribute=data_parallel", "distribute.timeout=10", f"hydra.sweep.dir={sweep}", env=ONE_DEVICE)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    run_dir = sweep / "0"
    m = read_metrics(run_dir)
    assert m["status"] == "ok" and m["distribute"]["processes"] == 2 and m["distribute"]["devices"] == 2
    assert m["test_accuracy"] == read_metrics(one_device)["test_accuracy"]
    assert misclassified(run_dir) == misclassified(one_device)
    assert sorted(p.name for p in sweep.iterdir() if not p.name.startswith(".")) == [
        "0", "multirun.yaml", "summary.csv", "summary.md"]
    log = (run_dir / "train.log").read_text()
    assert "process 0 of 2 joined (coordinator 127.0.0.1:" in log and "from submitit" in log
    assert "process 1" not in log  # task 1's log is submitit's, not the run's
    task1 = next(sweep.glob(".submitit/*/*_1_log.out")).read_text()
    assert "process 1 of 2 joined" in task1 and "process 1: the run ended ok" in task1
    assert sorted(p.name for p in (run_dir / ".hydra").iterdir()) == ["config.yaml", "hydra.yaml", "overrides.yaml"]


def test_each_process_knows_its_place_from_the_config_submitit_or_slurm(monkeypatch):
    from omegaconf import OmegaConf

    from cnnrun.config import cluster

    for name in ("SLURM_NTASKS", "SLURM_PROCID", "SLURM_STEP_NODELIST", "SUBMITIT_LOCAL_NTASKS",
                 "SUBMITIT_LOCAL_GLOBALID", "SUBMITIT_LOCAL_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    dp = OmegaConf.create({"name": "data_parallel", "coordinator": None, "num_processes": None, "process_id": None})
    none = OmegaConf.create({"name": "none"})
    assert not cluster.several(dp) and cluster.process_index(dp) == 0
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "2")
    monkeypatch.setenv("SUBMITIT_LOCAL_GLOBALID", "1")
    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "4242")
    assert cluster.several(dp) and not cluster.several(none)
    assert cluster.place(dp) == cluster.Place("127.0.0.1:61586", 2, 1, "submitit")  # 4242 % 4096 + 61440
    assert cluster.follower(OmegaConf.create({"distribute": dp}))
    assert not cluster.follower(OmegaConf.create({"distribute": none}))  # a sweep's tasks without data_parallel
    for name in ("SUBMITIT_LOCAL_NTASKS", "SUBMITIT_LOCAL_GLOBALID", "SUBMITIT_LOCAL_JOB_ID"):
        monkeypatch.delenv(name)
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert not cluster.several(dp)  # Slurm's job environment, outside a job step (srun): one process
    monkeypatch.setenv("SLURM_STEP_NODELIST", "node[1-2]")
    assert cluster.several(dp) and cluster.place(dp).coordinator is None and cluster.process_index(dp) == 3
    given = OmegaConf.create({**OmegaConf.to_container(dp), "coordinator": "10.0.0.1:1234", "num_processes": 2,
                              "process_id": 0})
    assert cluster.place(given) == cluster.Place("10.0.0.1:1234", 2, 0, "config")
    assert not cluster.follower(OmegaConf.create({"distribute": given}))  # the config's word over Slurm's


@pytest.mark.parametrize("rank,subdir,log", [("0", ".hydra", "/out/run/train.log"), ("1", None, os.devnull)])
def test_only_process_0_has_hydra_write_its_copies_and_log(monkeypatch, rank, subdir, log):
    from hydra import compose, initialize_config_module
    from omegaconf import open_dict

    from cnnrun.config.schema import register_resolvers

    register_resolvers()
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "2")
    monkeypatch.setenv("SUBMITIT_LOCAL_GLOBALID", rank)
    with initialize_config_module("cnnrun.conf", version_base="1.3"):
        cfg = compose("config", overrides=["distribute=data_parallel"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "/out/run"
    assert cfg.hydra.output_subdir == subdir
    assert cfg.hydra.job_logging.handlers.file.filename == log
    monkeypatch.setenv("SUBMITIT_LOCAL_NTASKS", "1")  # one task: every run writes its own, as always
    assert cfg.hydra.output_subdir == ".hydra"


@pytest.mark.slow  # a run of 30 epochs, killed (about 40 s)
@pytest.mark.parametrize("killed", [1, 0])
def test_a_killed_process_ends_the_other_at_once(tmp_path, killed):
    run_dir = tmp_path / "run"
    procs = start_processes(run_dir, 2, epochs=30)
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoint.npz").exists():  # an epoch done: training is under way in both
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.2)
    procs[killed].send_signal(signal.SIGKILL)
    other = procs[1 - killed]
    start = time.monotonic()
    out, err = other.communicate(timeout=60)
    err = out + err
    waited = time.monotonic() - start
    procs[killed].communicate()
    assert other.returncode != 0 and waited < 15, (other.returncode, waited)
    if killed == 1:  # process 0 records why, and that the run can go on
        m = read_metrics(run_dir)
        assert m["status"] == "failed" and m["error"].startswith("distribute: another process of the run stopped "
                                                                 "during training")
        assert m["error"].endswith(f"cnnrun resume {run_dir}")
        assert "Traceback" not in err
    else:  # process 0 is gone with the coordination service: process 1 sees it first, says so, exits 1 (no abort)
        assert other.returncode == 1 and "Traceback" not in err, (other.returncode, err[-2000:])
        # whichever sees it first says it: the watchdog (process 0 gone) or the collective that failed with it
        said = [line for line in err.splitlines() if line.startswith("cnnrun: error: distribute: ") or
                line.startswith("distribute: process 0 (the coordinator at 127.0.0.1:")]
        assert said and f"cnnrun resume {run_dir}" in said[-1], err[-2000:]


@pytest.mark.slow  # interrupted after an epoch, resumed on one process, then on two (about 60 s)
def test_a_distributed_run_resumes_on_another_number_of_processes(tmp_path):
    run_dir = tmp_path / "run"
    procs = start_processes(run_dir, 2, epochs=6)
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoint.npz").exists():
        assert time.monotonic() < deadline
        time.sleep(0.2)
    procs[0].send_signal(signal.SIGINT)  # process 0 stops after its batch; process 1's next collective fails
    outs = [out + err for out, err in (p.communicate(timeout=60) for p in procs)]
    assert procs[0].returncode == 130, outs[0][-2000:]
    assert procs[1].returncode != 0
    cut = read_metrics(run_dir)
    assert cut["status"] == "interrupted" and cut["epochs"] >= 1
    # on one process and one device: the same config, so the run continues where it stopped
    r = run_cli("train", *RUN, "trainer.epochs=6", f"hydra.run.dir={run_dir}", env=ONE_DEVICE)
    assert r.returncode == 0, r.stderr[-3000:]
    done = read_metrics(run_dir)
    assert done["status"] == "ok" and done["resumed_from_epoch"] == cut["epochs"] and done["epochs"] == 6
    history = (run_dir / "history.csv").read_text().splitlines()
    assert [int(line.split(",")[0]) for line in history[1:]] == [1, 2, 3, 4, 5, 6]


@pytest.mark.slow  # nine short runs on two devices (about 3 min)
def test_every_part_of_a_run_works_on_two_devices(tmp_path):
    combos = ["model=cnn4 augment=[flip,shift]", "model=cnn4 augment=mixup", "model=cnn4 augment=cutmix trainer.ema=0.9",
              "model=mnist_cnn trainer.val_split=0.2 trainer.restore_best=true trainer.tta=flip",
              "model=mnist_cnn trainer.device_data=true trainer.val_split=0.1", "model=resnet model.depth=8",
              "model=vgg16 model.weights=null dataset.image_size=32", "model=mnist_cnn debug=smoke",
              "model=cnn3 trainer.steps_per_execution=4 trainer.precision=mixed_bfloat16"]
    for i, combo in enumerate(combos):
        run_dir = tmp_path / f"r{i}"
        r = run_cli("train", "dataset=digits", "dataset.limit=300", "trainer.epochs=2", "trainer.verbose=0",
                    "distribute=data_parallel", *combo.split(), f"hydra.run.dir={run_dir}", env=TWO_DEVICES)
        assert r.returncode == 0, (combo, r.stderr[-2000:])
        m = read_metrics(run_dir)
        assert m["status"] == "ok" and m["distribute"]["devices"] == 2 and (run_dir / "model.keras").is_file(), combo


@pytest.mark.slow  # a streamed image folder on two devices (about 20 s)
def test_a_streamed_folder_trains_on_two_devices(tmp_path):
    from PIL import Image

    for c in range(3):
        (tmp_path / "photos" / f"c{c}").mkdir(parents=True)
        for i in range(30):
            pixels = np.full((24, 24, 3), 40 + 80 * c, "uint8") + np.random.default_rng(i).integers(0, 30, (24, 24, 3),
                                                                                                   dtype="uint8")
            Image.fromarray(pixels).save(tmp_path / "photos" / f"c{c}" / f"{i}.png")
    run_dir = tmp_path / "run"
    r = run_cli("train", "dataset=folder", f"dataset.path={tmp_path / 'photos'}", "dataset.cache=false",
                "dataset.image_size=24", "model=mnist_cnn", "trainer.epochs=2", "trainer.verbose=0", "trainer.val_split=0.2",
                "distribute=data_parallel", f"hydra.run.dir={run_dir}", env=TWO_DEVICES)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "streamed from disk" in r.stdout + r.stderr
    assert read_metrics(run_dir)["status"] == "ok"


@pytest.mark.slow  # about 70 s: run it (make test-full) before a session with a GPU, whose one call it is
def test_the_gpu_script_runs_its_sweep_and_its_data_parallel_row(tmp_path):
    """bench/gpu.sh is run once per lent GPU session, with no second try: here on two forced CPU devices, tiny."""
    env = {**os.environ, **TWO_DEVICES, "OUT": str(tmp_path), "PYTHON": sys.executable, "PRESETS": "fast_fashion"}
    r = subprocess.run(["bash", "bench/gpu.sh", "dataset=digits", "dataset.limit=256", "trainer.epochs=1", "model.width=4"],
                       cwd=Path(__file__).parent.parent, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    device = (tmp_path / "gpu" / "device.txt").read_text()
    assert "backend: jax" in device and "data-parallel over 2 devices" in device
    assert "'devices': 2" in device and "'per_device_batch': 256" in device and "exit status" not in device
    assert read_metrics(tmp_path / "gpu" / "data_parallel")["status"] == "ok"
    assert "fast_fashion" in (tmp_path / "gpu" / "sweep" / "summary.md").read_text()
