"""Training sizes that cannot fit in memory, refused before TensorFlow allocates anything (`check_step_memory`).

The estimate of one training step: images per step x crop_size² x `BYTES_PER_PIXEL` x the card's width (activations,
their gradients and the framework's buffers grow with the pixels and, for a backbone narrowed by `width`, with its
channels). `BYTES_PER_PIXEL` was measured with `keras-iqa train reqa --model reqa-tiny` on CPU (peak RSS at crop 64 and 256,
15 images per step: 1.30 and 2.24 GB, about 1 KB more per pixel at width 0.125), scaled to width 1 (8 KB) and halved,
so that only sizes far beyond the machine are refused (the first layers do not narrow with the width). A step whose
estimate exceeds the machine's memory (physical memory, or the container's limit when lower) cannot run: it is refused
with the estimate and the settings that lower it. The rule is deliberately loose (the whole memory, no framework
overhead): it stops sizes that would crash the process, not sizes that are merely slow (docs/security.md, Faults end
cleanly).
"""

from __future__ import annotations

import os
from typing import Optional

from keras_iqa.caller import setting
from keras_iqa.training.files import _human

BYTES_PER_PIXEL = 4 * 1024


def machine_memory() -> Optional[int]:
    """Bytes of memory this process may use: physical memory, or the cgroup limit when lower; None when unknown."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (1 << 60):
            sizes.append(int(text))
    return min(sizes) if sizes else None


def step_bytes(crop_size: int, images: int, width: float = 1.0) -> int:
    """The estimated memory of one training step (see the module docstring)."""
    return int(int(images) * int(crop_size) ** 2 * BYTES_PER_PIXEL * float(width or 1.0))


def check_step_memory(crop_size: Optional[int], images: int, width: float = 1.0, key: str = "crop_size",
                      batch_key: str = "batch_size", memory: Optional[int] = None) -> None:
    """A ValueError when a training step of `images` crops of `crop_size` cannot fit in `memory` (default: the machine's),
    naming the keys to lower; also for a crop size below 1."""
    if crop_size is None:
        return
    if int(crop_size) < 1:
        raise ValueError(f"config key {key!r} must be a positive number of pixels, got {crop_size}")
    memory = machine_memory() if memory is None else memory
    need = step_bytes(crop_size, images, width)
    if memory is not None and need > memory:
        fit = int((memory / (int(images) * BYTES_PER_PIXEL * float(width or 1.0))) ** 0.5)
        raise ValueError(f"{key}={crop_size} with {images} images per step needs about {_human(need)}, more than this "
                         f"machine's {_human(memory)}: use a crop size of at most {fit} ({setting(key, fit)}) or fewer "
                         f"images per step ({setting(batch_key, ...)})")
