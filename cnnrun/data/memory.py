"""What this machine's memory can take, judged before anything is decoded or trained: a refusal in one line
beats a machine that swaps for an hour or a process the kernel kills."""

from __future__ import annotations

import os

from cnnrun import CnnrunError


def available_memory() -> int:
    """Bytes of memory this machine can still give (MemAvailable), or its whole memory where that is unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def check_fits(n_images: int, size: tuple[int, int], channels: int, batch_size: int, in_memory: bool,
               stream_hint: str = "") -> None:
    """Refuses image sizes this machine's memory cannot take, judged before anything is decoded: the decoded
    set when it is held in memory, and a lower bound for one training step (a 32-filter convolution at full
    resolution, forward and backward, in float32)."""
    free = available_memory()
    gb = lambda b: f"{b / 2**30:.1f} GB"  # noqa: E731
    side = f"{size[0]}x{size[1]}"
    decoded = n_images * size[0] * size[1] * channels
    if in_memory and decoded > 0.8 * free:
        raise CnnrunError(f"dataset.image_size={side} needs {gb(decoded)} to hold {n_images} images in memory but "
                          f"{gb(free)} is free; lower dataset.image_size (e.g. 128){stream_hint}")
    step = batch_size * size[0] * size[1] * 32 * 4 * 2
    if step > 0.8 * free:
        raise CnnrunError(f"dataset.image_size={side} with trainer.batch_size={batch_size} needs at least {gb(step)} "
                          f"for one training step but {gb(free)} is free; lower dataset.image_size (e.g. 128) or "
                          "trainer.batch_size")


def check_model_fits(params: int, optimizer: str, model: str) -> None:
    """Refuses a model whose training state cannot fit in memory, before the first step: weights, their
    gradients and the optimizer's slots (Adam: two, SGD: one), in float32. A lower bound: activations come on top."""
    free = available_memory()
    need = params * 4 * (2 + (2 if optimizer == "adam" else 1))
    if need > 0.8 * free:
        raise CnnrunError(f"model={model} has {params:,} parameters: training it needs at least {need / 2**30:.1f} GB "
                          f"but {free / 2**30:.1f} GB is free; lower dataset.image_size or choose a convolutional "
                          "model (model=cnn4)")
