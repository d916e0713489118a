"""VGG16 fine-tuning, built and trained at 32x32 with random weights (no download here)."""

import keras
import numpy as np
import pytest

from cnnrun import CnnrunError
from cnnrun.models import build_model
from cnnrun.training.train import train


def test_head_and_grayscale_input(cfg_factory):
    net = build_model(cfg_factory("model=vgg16", "model.weights=null").model, (28, 28, 1), 10)
    assert [layer.name for layer in net.layers][-4:] == ["flatten", "fc1", "drop_fc", "predictions"]
    assert net.get_layer("fc1").units == 512 and net.get_layer("drop_fc").rate == 0.5
    assert "to_rgb" in [layer.name for layer in net.layers] and "resize" in [layer.name for layer in net.layers]
    assert tuple(net(np.zeros((1, 28, 28, 1), "float32")).shape) == (1, 10)


def test_frozen_layers_do_not_change(cfg_factory, tmp_path, monkeypatch):
    cfg = cfg_factory("model=vgg16", "model.weights=null", "model.freeze=15", "dataset.limit=64",
                      "trainer.batch_size=32", "output.save_model=false")
    seen = {}
    real_fit = keras.Model.fit

    def fit(self, *args, **kwargs):
        vgg = next(layer for layer in self._flatten_layers() if layer.name == "vgg16" and layer is not self
                   and isinstance(layer, keras.Model) and "block1_conv1" in [x.name for x in layer.layers])
        seen["before"] = {layer.name: [w.copy() for w in layer.get_weights()] for layer in vgg.layers}
        seen["vgg"] = vgg
        return real_fit(self, *args, **kwargs)

    monkeypatch.setattr(keras.Model, "fit", fit)
    assert train(cfg, tmp_path)["status"] == "ok"
    vgg = seen["vgg"]
    for i, layer in enumerate(vgg.layers):
        before, after = seen["before"][layer.name], layer.get_weights()
        if not before:
            continue
        changed = any(not np.array_equal(b, a) for b, a in zip(before, after))
        assert changed == (i >= 15), layer.name  # block5 trains, blocks 1-4 stay put


def test_offline_imagenet_weights_error_names_the_cache_folder(cfg_factory, tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))

    def offline(*a, **k):
        raise OSError("network unreachable")

    monkeypatch.setattr(keras.utils, "get_file", offline)
    import keras.src.applications.vgg16 as vgg_module

    monkeypatch.setattr(vgg_module.file_utils, "get_file", offline)
    with pytest.raises(CnnrunError, match=f"VGG16's ImageNet weights are not in Keras' cache \\({tmp_path}/models\\).*"
                                          "model.weights=PATH \\(or null"):
        build_model(cfg_factory("model=vgg16").model, (32, 32, 3), 2)
