"""cnnrun export: each serving format loaded in its own runtime agrees with model.keras."""

import json

import keras
import numpy as np
import pytest
from conftest import run_cli

from cnnrun import CnnrunError
from cnnrun.commands import export


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")  # as a user makes it: its config saved beside it by Hydra
    r = run_cli("train", "dataset=digits", "dataset.limit=200", "model=cnn4", "trainer.epochs=1", "trainer.verbose=0",
                f"hydra.run.dir={run}")  # cnn4: BatchNorm and dropout, the layers that differ in serving
    assert r.returncode == 0, r.stderr[-2000:]
    return run


def own_runtime(fmt, path, x):
    if fmt == "onnx":
        import onnxruntime

        s = onnxruntime.InferenceSession(str(path / "model.onnx"), providers=["CPUExecutionProvider"])
        return s.run(None, {s.get_inputs()[0].name: x})[0]
    return export.run_export(fmt, path / export.FORMATS[fmt][1], x)


@pytest.mark.parametrize("fmt", sorted(export.FORMATS))
def test_each_format_is_verified_in_its_own_runtime(finished, tmp_path, fmt):
    out = tmp_path / "out"
    r = run_cli("export", str(finished), "--format", fmt, "--out", str(out))
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "export.json").read_text())
    entry = report["formats"][fmt]
    assert entry["verified"] and entry["same_class"] == 1.0 and entry["max_abs_difference"] <= export.TOLERANCE
    assert report["verified_on"].endswith("of the run's test images") and report["input"]["dtype"] == "uint8"
    assert (out / "labels.txt").read_text().split("\n")[:10] == [str(i) for i in range(10)]
    # Checked here again, independently: raw uint8 pixels in, the same probabilities as model.keras out.
    x = np.random.default_rng(1).integers(0, 256, (8, 28, 28, 1), dtype=np.uint8)
    expected = keras.models.load_model(finished / "model.keras").predict(x, verbose=0)
    got = own_runtime(fmt, out, x)
    assert np.abs(got - expected).max() <= export.TOLERANCE and (got.argmax(1) == expected.argmax(1)).all()


def test_a_missing_converter_is_one_line_naming_the_extra(finished, tmp_path, monkeypatch):
    real = export.importlib.util.find_spec
    monkeypatch.setattr(export.importlib.util, "find_spec", lambda name: None if name == "tf2onnx" else real(name))
    with pytest.raises(CnnrunError, match=r"--format onnx needs tf2onnx.*pip install 'cnnrun\[export\]'"):
        export.export(finished, ["onnx"], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # refused before any work


def test_a_run_directory_in_use_is_refused(finished, tmp_path):
    from cnnrun import record

    record.claim(finished)  # a live process owns it (a real OS lock, held by this test process)
    try:
        r = run_cli("export", str(finished), "--format", "onnx", "--out", str(tmp_path / "out"), process=True)
    finally:
        record.release(finished)
    assert r.returncode == 2 and "is in use by process" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "out").exists()
