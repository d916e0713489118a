"""The README guides: its table of contents is its headings, and the CI workflow it links is a valid one."""

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import cli

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"


def _slug(heading: str) -> str:  # GitHub's anchors: lower case, punctuation dropped, spaces as dashes
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def test_the_contents_are_the_headings():
    contents = README[README.index("## Contents"):].split("\n## ", 1)[0]
    listed = re.findall(r"^( *)- \[(.+)\]\(#(.+)\)$", contents, re.M)
    body = README[README.index("## Contents") + len("## Contents"):]
    headings = [(len(m.group(1)), m.group(2)) for m in re.finditer(r"^(##+) (.+)$", body, re.M) if len(m.group(1)) <= 3]
    assert [(2 if not indent else 3, text) for indent, text, _ in listed] == headings
    assert all(anchor == _slug(text) for _, text, anchor in listed)
    assert README.index("## Quick start") < README.index("## Contents")  # the first commands come first


def test_the_workflow_is_valid_and_runs_the_projects_ci():
    data = yaml.safe_load(WORKFLOW.read_text())
    triggers = data.get("on", data.get(True))  # YAML 1.1 reads a bare `on` as true
    assert {"push", "pull_request"} <= set(triggers)
    steps = data["jobs"]["test"]["steps"]
    assert any(s.get("uses", "").startswith("actions/checkout@") for s in steps)
    assert any(s.get("run", "").strip() == ".ci/run" for s in steps) and (ROOT / ".ci" / "run").is_file()
    assert "apt-get update" in " ".join(s.get("run", "") for s in steps)
    assert ".github/workflows/ci.yml" in README  # the README links it


@pytest.mark.skipif(shutil.which("check-jsonschema") is None and not (Path(sys.executable).parent / "check-jsonschema").exists(),
                    reason="check-jsonschema (the dev extra) is not installed")
def test_the_workflow_passes_githubs_own_schema():
    """check-jsonschema carries SchemaStore's GitHub-workflow schema, so this runs offline."""
    tool = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    done = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_readmes_workflow_snippets_pass_githubs_schema(tmp_path):
    tool = shutil.which("check-jsonschema") or str(Path(sys.executable).parent / "check-jsonschema")
    if not Path(tool).exists() and shutil.which(tool) is None:
        pytest.skip("check-jsonschema (the dev extra) is not installed")
    snippets = re.findall(r"```yaml\n(.*?)```", README, re.S)
    workflows = [s for s in snippets if "runs-on:" in s]
    assert workflows
    for i, text in enumerate(workflows):
        (tmp_path / f"w{i}.yml").write_text(text)
    done = subprocess.run([tool, "--builtin-schema", "vendor.github-workflows", *map(str, tmp_path.glob("w*.yml"))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


# --- every command the README shows is run here (at tiny sizes), or says why it cannot be ---------------------

RUN_DIRS = ("outputs/2026-11-25/10-00-00_cnn4_ab12cd", "outputs/2026-11-24/10-00-00_cnn4_ab12cd", "RUN_DIR",
            "outputs/2026-11-24/09-*")
SWEEP_DIRS = ("outputs/multirun/2026-11-24/10-00-00_ab12cd", "outputs/multirun/2026-11-25/10-00-00_ab12cd")
NOT_RUN = {  # a command's start -> why no test runs it as written
    "git clone": "fetches this repository",
    "make train": "builds a virtual environment: CI's own `make test` does that step",
    "make test": "the test suite itself (CI runs it)",
    "make test-jax": "the test suite itself (CI runs it)",
    "make test-full": "the test suite itself, slow tests included",
    "make bench": "benchmarks: minutes each, measured by hand into docs/BENCHMARKS.md",
    "make help": "prints the Makefile's targets",
    "make reproduce": "hours of training: `python -m cnnrun.commands.reproduce` is tested in tests/test_reproduce.py",
    "pip install": "installs packages on a GPU machine",
    "export PYTHONPATH": "a shell setting for the GPU machine",
    "python -m cnnrun train -m experiment=fast_fashion": "the GPU sweep (bench/gpu.sh)",
    "mlflow ui": "a server that runs until stopped; tests/test_loggers.py reads the same store",
    "tensorboard --logdir": "a server that runs until stopped; tests/test_loggers.py reads the same event files",
    "cnnrun train model=custom": "run verbatim, with its files, by tests/test_plugins.py",
    "cnnrun train --config-dir": "run verbatim, with its files, by tests/test_plugins.py",
    "cnnrun train dataset=digits +hooks": "run verbatim, with its files, by tests/test_plugins.py",
    "cnnrun train distribute=data_parallel distribute.coordinator": "one of two processes on two hosts: "
                                                                    "tests/test_distribute.py starts both on 127.0.0.1",
    "cnnrun train -m hydra/launcher=submitit_slurm hydra.launcher.nodes=2": "needs a Slurm cluster with GPUs",
}


def readme_commands() -> list[str]:
    """Every shell line of the README's code blocks (not the output lines it quotes)."""
    commands = []
    for lang, block in re.findall(r"```([a-z]*)\n(.*?)```", README, re.S):
        if lang not in ("", "bash", "sh"):
            continue
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line and not line.startswith(("cnnrun:", "#")) and re.match(r"[a-zA-Z.]", line) \
                    and re.match(r"(cnnrun|make|python|pip|mlflow|tensorboard|git|export) ", line):
                commands.append(line)
    return commands


def test_every_readme_command_is_run_or_says_why_not():
    commands = readme_commands()
    assert len(commands) > 30
    unknown = [c for c in commands if not c.startswith("cnnrun ") and not c.startswith(tuple(NOT_RUN))]
    assert not unknown, unknown  # a new kind of command: run it in test_every_readme_command_runs, or say why not


def _tiny(argv: list[str]) -> list[str]:
    """A README line at tiny size. Its plots are drawn where they are checked: the smoke sweep looks at every PNG of
    every preset, and the first run is the one the quick start shows. The other lines leave them out
    (output.plots=false: 0.6 s a run); every other file, output.explain's pictures too, is written as before."""
    if argv[:1] != ["train"]:
        return argv
    drawn = "experiment=glob(*)" in argv or argv[1:] == FIRST_RUN
    return _sized(argv) + ([] if drawn else ["output.plots=false"])


def _sized(argv: list[str]) -> list[str]:
    if "model=backbone" in argv:  # ImageNet's weights cannot be downloaded here: random ones, small images
        argv = [a for a in argv if not a.startswith(("dataset.image_size=", "trainer.epochs="))]
        argv += ["model.weights=null", "dataset.limit=64", "trainer.batch_size=16", "trainer.verbose=0",
                 "trainer.epochs=2" if any(a.startswith("model.unfreeze_after=") for a in argv) else "trainer.epochs=1"]
        if "dataset=folder" in argv:
            argv.append("dataset.image_size=32")
        return [a.replace("model.unfreeze_after=3", "model.unfreeze_after=1") for a in argv]
    if any(a.startswith("debug=") for a in argv):
        return argv
    if any(a.startswith(("experiment=", "'experiment=")) for a in argv):
        return argv + ["debug=smoke"]  # a preset at the smoke run's size: 64 images, one epoch
    return argv + ["dataset.limit=200", "trainer.epochs=1", "trainer.verbose=0"]


def _runnable() -> list[str]:
    """The README's `cnnrun` lines this suite runs, each once (a command the README shows twice runs once)."""
    return [c for c in dict.fromkeys(readme_commands()) if c.startswith("cnnrun ") and not c.startswith(tuple(NOT_RUN))]


def _names_a_run(command: str) -> bool:
    return any(p in command for p in (*RUN_DIRS, *SWEEP_DIRS))


def _chain() -> list[str]:
    """The commands that name the README's run or sweep directory, after the first run and the first sweep that
    make them: they run in order, in one test. Every other command runs on its own, in parallel with the rest."""
    commands = _runnable()
    first_run = next(c for c in commands if c.startswith("cnnrun train ") and " -m " not in c)
    first_sweep = next(c for c in commands if c.startswith("cnnrun train -m "))
    return [c for c in commands if c in (first_run, first_sweep) or _names_a_run(c)]


# The sweeps over presets first, then the backbones: the longest first (tests/conftest.py hands them out in order).
CHAIN = _chain()
FIRST_RUN = shlex.split(CHAIN[0])[2:]  # `cnnrun train dataset=fashion model=cnn4`: the quick start's run
ON_THEIR_OWN = sorted((c for c in _runnable() if c not in CHAIN),
                      key=lambda c: ("glob(*)" not in c, "glob(" not in c, "backbone" not in c))
FASHION = pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="needs Fashion-MNIST (apt)")


@pytest.fixture
def readers_folder(tmp_path, monkeypatch):
    """A reader's working folder: the photos the README's commands name, and Fashion-MNIST where cnnrun finds it."""
    from PIL import Image

    (tmp_path / "my_photos").mkdir()
    Image.new("L", (28, 28), 128).save(tmp_path / "my_photos" / "gray.png")
    for k, level in (("cats", 60), ("dogs", 190)):  # the backbone section's photos/ folder
        (tmp_path / "photos" / k).mkdir(parents=True)
        for i in range(12):
            Image.new("RGB", (40, 40), (level + i, level, level - i)).save(tmp_path / "photos" / k / f"{i}.jpg")
    monkeypatch.setenv("CNNRUN_DATA", "/usr/share/datasets/fashion-mnist")
    return tmp_path


def _run(command: str, folder: Path, *extra: str):
    """Runs one README line as written but at tiny sizes, in this process (tests.conftest.cli); `glob(*)` includes
    presets whose data this machine lacks (MNIST, photos): their rows fail and it exits 1, as the README says."""
    for placeholder in RUN_DIRS:
        command = command.replace(placeholder, str(folder / "run"))
    for placeholder in SWEEP_DIRS:
        command = command.replace(placeholder, str(folder / "sweep"))
    done = cli(*_tiny(shlex.split(command)[1:]), *extra, cwd=folder)
    allowed = (0, 1) if "experiment=glob(*)" in command else (0,)
    assert done.returncode in allowed, f"{command}\n{done.stderr[-3000:]}"
    assert "Traceback" not in done.stderr, f"{command}\n{done.stderr[-3000:]}"
    return done


@FASHION
@pytest.mark.long
@pytest.mark.parametrize("command", ON_THEIR_OWN, ids=lambda c: c.removeprefix("cnnrun ")[:60])
def test_a_readme_command_runs(readers_folder, command):
    """Each README line that names no earlier run, on its own: the smoke sweep over every preset included, whose
    rows are checked as the README promises them."""
    from tests.test_debug import check_smoke_sweep

    where = (f"hydra.sweep.dir={readers_folder / 'out'}",) if command.startswith("cnnrun train") else ()
    if command.startswith("cnnrun train") and " -m " not in command:
        where = (f"hydra.run.dir={readers_folder / 'out'}",)
    done = _run(command, readers_folder, *where)
    if "experiment=glob(*)" in command:
        check_smoke_sweep(readers_folder / "out", done)
    elif where:
        assert (readers_folder / "out" / ("summary.csv" if " -m " in command else "metrics.json")).is_file()


@FASHION
@pytest.mark.long
def test_the_readme_commands_that_name_a_run_run_in_order(readers_folder):
    """The README's first run and first sweep, then every line that names them (compare, export, explain, resume)."""
    for command in CHAIN:
        extra = ()
        if command.startswith("cnnrun train") and " -m " not in command:
            extra = (f"hydra.run.dir={readers_folder / 'run'}",)  # the run the later commands name
        elif command.startswith("cnnrun train"):
            extra = (f"hydra.sweep.dir={readers_folder / 'sweep'}",)
        _run(command, readers_folder, *extra)
    assert (readers_folder / "run" / "metrics.json").is_file() and (readers_folder / "sweep" / "summary.csv").is_file()


def test_every_runnable_readme_command_is_run_by_one_test():
    assert len(CHAIN) >= 6 and len(ON_THEIR_OWN) >= 10
    assert sorted(CHAIN + ON_THEIR_OWN) == sorted(_runnable())
    assert any("experiment=glob(*)" in c for c in ON_THEIR_OWN)  # the README shows the smoke sweep; it runs here
