"""Output as a person sees it (issue 32): a real 80-column terminal (a pseudo-terminal, as a terminal emulator gives a
program) and a pipe, through a run with validation, a sweep with a failed job, compare and predict."""

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import cli

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07|\x1b[()][A-Z0-9]")
EPOCH = re.compile(r"^epoch (\d+)/(\d+) [\d.]+s loss [\d.]+ accuracy [\d.]+ val_loss [\d.]+ val_accuracy [\d.]+$")
FAILED_JOB = "dataset=folder needs dataset.path, the folder of images: e.g. dataset.path=photos (with photos/<class>/*.jpg)"


def in_a_terminal(script: str, cwd: Path, columns: int = 80) -> list[str]:
    """What `bash -c script` shows in a terminal `columns` wide: the lines as drawn, escape codes taken out, each
    redraw of a line (a progress bar) a line of its own."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 50, columns, 0, 0))
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    env.update(TERM="xterm-256color", PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")
    proc = subprocess.Popen(["bash", "-c", script], stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                            start_new_session=True)
    os.close(slave)
    raw = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal's other side closed: the script ended
            break
        if not chunk:
            break
        raw += chunk
    os.close(master)
    assert proc.wait(timeout=600) is not None
    text = ANSI.sub("", raw.decode("utf-8", "replace"))
    return [segment for line in text.split("\n") for segment in line.split("\r") if segment.strip()]


def photo(path: Path) -> Path:
    Image.new("L", (28, 28), 90).save(path)
    return path


@pytest.fixture(scope="module")
def terminal(tmp_path_factory):
    where = tmp_path_factory.mktemp("terminal")
    photo(where / "x.png")
    script = textwrap.dedent("""
        cnnrun train dataset=digits dataset.limit=300 trainer.epochs=2 trainer.val_split=0.2 hydra.run.dir=run
        cnnrun train -m experiment=article001_dense,article002_folder_mnist_cnn debug=smoke hydra.sweep.dir=sweep
        cnnrun compare sweep run --out cmp
        cnnrun predict run x.png --top 2 --out pred.csv
    """)
    return where, in_a_terminal(script, where)


def test_nothing_is_wider_than_the_terminal(terminal):
    _, lines = terminal
    wide = [line for line in lines if len(line) > 80]
    assert not wide, wide


def test_each_epoch_is_one_whole_line(terminal):
    _, lines = terminal
    epochs = [line for line in lines if EPOCH.match(line.strip())]
    assert [EPOCH.match(line.strip()).group(1) for line in epochs] == ["1", "2"], lines[:40]


def test_tables_too_wide_become_name_value_pairs_never_split(terminal):
    where, lines = terminal
    text = "\n".join(lines)
    assert "[20" not in text and "][cnnrun][INFO]" not in text  # no timestamped log format on the console
    joined = " ".join(" ".join(lines).split())
    assert FAILED_JOB in joined  # the failed job's reason, whole (wrapped between words at most)
    import csv

    for table in (where / "sweep" / "summary.csv", where / "cmp" / "comparison.csv"):
        rows = list(csv.DictReader(open(table, encoding="utf-8")))
        for row in rows:
            for key, value in row.items():
                if value and key != "error":  # every name with its value, on one line
                    assert any(f"{key} {value}" in line for line in lines), (table.name, key, value)
    assert any("x.png" in line and line.count("%") == 2 for line in lines)  # predict's row fits: a table row, whole
    assert not any(line.strip() in ("│", "┃") or "━━┳━━┳━━" in line for line in lines)  # no squeezed table


def test_a_pipe_gets_whole_lines_and_the_log_the_whole_run(tmp_path):
    photo(tmp_path / "x.png")
    r = cli("train", "dataset=digits", "dataset.limit=300", "trainer.epochs=2", "trainer.val_split=0.2",
            "hydra.run.dir=run", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    out = r.stdout.splitlines()
    assert [line for line in out if EPOCH.match(line)] and not any("[20" in line for line in out)
    assert "evaluating 300 test images" in out and "precise BN: the statistics of 6 batch norms over 240 training images" in out
    log = (tmp_path / "run" / "train.log").read_text().splitlines()
    assert sum(bool(EPOCH.match(line.split(" - ", 1)[-1])) for line in log) == 2  # every epoch row
    for stage in ("precise BN: ", "evaluating 300 test images", "writing the reports, plots and the model",
                  "result: ok, test accuracy ", f"run directory {tmp_path / 'run'}"):
        assert any(stage in line for line in log), stage
    r = cli("train", "-m", "experiment=article001_dense,article002_folder_mnist_cnn", "debug=smoke",
            "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert r.returncode == 1
    rows = [line for line in r.stdout.splitlines() if line.startswith(("0,", "1,"))]
    assert len(rows) == 2 and rows[1].endswith(f'"{FAILED_JOB}"')  # a CSV row, whole, never wrapped at 80
    assert "written: " + str(Path("sweep") / "summary.csv") in r.stdout
