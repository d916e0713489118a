"""trainer.device_data and trainer.steps_per_execution: other ways to feed fit(), the same numbers."""

import keras
import numpy as np
import pytest
from conftest import make_config, refusal
from test_folder import make_photos
from test_resume import history, interrupt_at

from cnnrun import CnnrunError
from cnnrun.training import resume
from cnnrun.training.train import train

# Validation, augmentation with RNG state, dropout and a partial last batch (240 % 64): every feed path.
BASE = ["model=mnist_cnn", "augment=[flip,erasing]", "trainer.epochs=2", "trainer.val_split=0.2", "trainer.seed=3"]


def test_device_data_and_steps_per_execution_train_the_same_numbers(tmp_path):
    ref = train(make_config(*BASE, "trainer.steps_per_execution=1"), tmp_path / "ref")
    fast = train(make_config(*BASE, "trainer.device_data=true", "trainer.steps_per_execution=3"), tmp_path / "fast")
    assert ref["status"] == fast["status"] == "ok"
    assert (ref["steps_per_execution"], fast["steps_per_execution"]) == (1, 3)
    assert history(tmp_path / "fast") == history(tmp_path / "ref")  # loss, accuracy, val_* of every epoch
    assert fast["test_accuracy"] == ref["test_accuracy"] and fast["test_loss"] == ref["test_loss"]
    assert (tmp_path / "fast" / "confusion_matrix.csv").read_text() == (tmp_path / "ref" / "confusion_matrix.csv").read_text()
    # The saved classifier still takes pixels: the resident images are training plumbing, not part of it.
    model = keras.saving.load_model(tmp_path / "fast" / "model.keras")
    assert model.input_shape == keras.saving.load_model(tmp_path / "ref" / "model.keras").input_shape
    assert len(model.input_shape) == 4 and not any("resident" in v.path for v in model.variables)


def test_steps_per_execution_auto_is_eight_within_a_quarter_of_an_epoch(tmp_path):
    from cnnrun.training.loop import steps_per_call

    assert [steps_per_call("auto", n) for n in (1, 3, 4, 12, 32, 1875)] == [1, 1, 1, 3, 8, 8]
    assert steps_per_call(5, 2) == 5  # a number given is taken as it is
    typed = train(make_config("model=dense", "trainer.batch_size=8"), tmp_path / "typed")  # 300 images: 38 steps
    assert typed["status"] == "ok" and typed["steps_per_execution"] == 8  # the fast setting without asking


def test_device_data_run_resumes_without_storing_the_images(tmp_path, monkeypatch):
    cfg = make_config(*BASE, "trainer.epochs=3", "trainer.device_data=true")
    whole = train(cfg, tmp_path / "whole")
    interrupt_at(monkeypatch, 1)
    cut = train(cfg, tmp_path / "cut")
    monkeypatch.undo()
    assert cut["status"] == "interrupted"
    arrays = resume.load(tmp_path / "cut")["arrays"]
    assert not any(a.dtype == np.uint8 and a.ndim == 4 for a in arrays.values())  # weights and state, no images
    # Resumed with the default feed: the feed is not part of the run's identity, and the numbers agree.
    done = train(make_config(*BASE, "trainer.epochs=3", "trainer.resume=true"), tmp_path / "cut")
    assert done["status"] == "ok" and done["resumed_from_epoch"] == 1
    assert history(tmp_path / "cut") == history(tmp_path / "whole")
    assert done["test_accuracy"] == whole["test_accuracy"]


def test_device_data_refuses_a_streamed_folder_in_one_line(tmp_path):
    photos = make_photos(tmp_path / "photos")
    cfg = make_config("dataset=folder", f"dataset.path={photos}", "dataset.image_size=32", "dataset.limit=null",
                      "dataset.cache=false", "trainer.device_data=true", "trainer.batch_size=8")
    with pytest.raises(CnnrunError, match=r"device_data=true needs the images in memory.*device_data=false") as e:
        train(cfg, tmp_path / "run")
    assert "\n" not in str(e.value)
    assert not (tmp_path / "run").exists()  # refused with the config, before the run touched anything


@pytest.mark.parametrize("override, culprit", [
    ("trainer.device_data=maybe", "trainer.device_data=maybe must be true or false"),
    ("trainer.steps_per_execution=0", "trainer.steps_per_execution=0"),
    ("trainer.steps_per_execution=2.5", "trainer.steps_per_execution=2.5"),
])
def test_bad_feed_options_are_refused_before_training(override, culprit):
    assert culprit in refusal(override)
