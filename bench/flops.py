"""The FLOP floor of a preset: how long its training must take at a GPU's peak arithmetic rate.

Counts the multiply-adds of every convolution and dense layer of the model a config builds (the
rest — BatchNorm, activations, pooling — is a few percent of the work on these nets and is left
out, so the floor is a lower bound), from Keras' own layer shapes. Training costs about 3x the
forward pass (backward = 2 forward), times images x epochs; the test pass is added once (twice with
mirror TTA). The floor divides that by the dense bf16/fp32 peak of the GPU; real small-image CNNs
reach a fraction of peak, so the table also shows the time at 10 % and 30 % utilisation.

    python bench/flops.py experiment=fast_fashion
    python bench/flops.py experiment=best_fashion
    python bench/flops.py experiment=article000_cnn4_augment
"""

from __future__ import annotations

import math
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from hydra import compose, initialize_config_module  # noqa: E402

from cnnrun.config.schema import register_resolvers  # noqa: E402
from cnnrun.models import build_model  # noqa: E402

# Dense peak TFLOP/s of an H100 SXM (the H200 has the same compute), NVIDIA data sheet, no sparsity.
# float32 runs: XLA on JAX uses TF32 tensor cores for float32 convolutions by default; plain fp32 is the
# bound without them.
PEAKS = {"mixed": [("bf16 tensor cores", 989.0)], "float32": [("tf32 tensor cores", 494.0), ("fp32", 67.0)]}
SHAPES = {"fashion": ((28, 28, 1), 10, 60000, 10000), "mnist": ((28, 28, 1), 10, 60000, 10000)}


def layers_of(model):
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from layers_of(layer)
        else:
            yield layer


def forward_flops(model: keras.Model) -> int:
    """2 x multiply-adds of the conv and dense layers for one image."""
    total = 0
    for layer in layers_of(model):
        if isinstance(layer, keras.layers.Conv2D):
            out = layer.output.shape  # (None, H, W, C_out)
            kh, kw = layer.kernel_size
            c_in = layer.input.shape[-1] // layer.groups
            total += 2 * math.prod(out[1:]) * kh * kw * c_in
        elif isinstance(layer, keras.layers.Dense):
            inp = layer.input.shape
            total += 2 * math.prod(inp[1:-1] or (1,)) * inp[-1] * layer.units
    return total


def main(overrides: list[str]) -> None:
    register_resolvers()
    with initialize_config_module("cnnrun.conf", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    if cfg.dataset.name not in SHAPES:
        raise SystemExit(f"flops: dataset {cfg.dataset.name!r} has no fixed size; use fashion or mnist presets")
    shape, classes, n_train, n_test = SHAPES[cfg.dataset.name]
    t = cfg.trainer
    n_val = round(n_train * float(t.val_split))  # held out: one forward pass an epoch, no training
    n_train = (n_train - n_val) * (2 if cfg.dataset.get("mirror") else 1)  # mirrored copies are trained on too
    model = build_model(cfg.model, shape, classes)
    fwd = forward_flops(model)
    train = 3 * fwd * n_train * t.epochs + fwd * n_val * t.epochs
    test = fwd * n_test * (2 if t.tta == "flip" else 1)
    total = train + test
    print(f"{' '.join(overrides)}: {cfg.model.name}, {model.count_params():,} params, "
          f"{fwd / 1e6:.1f} MFLOP forward per image, {t.epochs} epochs x {n_train} images"
          + (f" (+ {n_val} validated)" if n_val else "") + f", precision {t.precision}")
    print(f"training {train / 1e12:.2f} TFLOP + test {test / 1e12:.3f} TFLOP = {total / 1e12:.2f} TFLOP\n")
    print("| H100 / H200 units | peak TFLOP/s | floor at peak | at 30 % | at 10 % |\n|---|---|---|---|---|")
    for units, tflops in PEAKS["float32" if t.precision == "float32" else "mixed"]:
        peak = tflops * 1e12
        print(f"| {units} | {tflops:.0f} | {total / peak:.2f} s | {total / peak / 0.3:.2f} s | {total / peak / 0.1:.2f} s |")


if __name__ == "__main__":
    main(sys.argv[1:])
