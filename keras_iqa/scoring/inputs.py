"""What `score` takes, turned into `_Item`s: files and folders, encoded bytes, PIL images, arrays and batches.

Every item decodes under the decode policy (`data_pipeline.images`, its size limits included); a problem found here
becomes an item whose `load` raises its reason, so one bad input is reported and the others are scored.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import numpy as np


@dataclass
class _Item:
    """One image to score: `load()` -> uint8 [H, W, 3] under the decode policy, or raises with the reason."""

    source: str
    input_index: int
    load: Callable[[], np.ndarray]
    #: files and bytes: `load_reduced(resize_target)` may decode a JPEG over the pixel limit at reduced size
    #: (`data_pipeline.images.load_image`); None for items already decoded.
    load_reduced: Optional[Callable[[Callable], np.ndarray]] = None


def iter_image_files(paths: Iterable[os.PathLike], recursive: bool = False) -> tuple[list, list]:
    """Expands files and folders to image files (by extension, sorted). Returns (files, problems[(path, reason)])."""
    files, problems = [], []
    for raw in paths:
        found, problem = _expand_path(Path(raw), recursive)
        files.extend(found)
        if problem:
            problems.append((str(raw), problem))
    return list(dict.fromkeys(files)), problems


def _expand_path(p: Path, recursive: bool) -> tuple[list, Optional[str]]:
    """(image files, None) for a file or folder; ([], reason) when there is nothing to score there."""
    from data_pipeline.images import is_image_file

    if p.is_dir():
        it = p.rglob("*") if recursive else p.iterdir()
        found = sorted(str(f) for f in it if f.is_file() and is_image_file(f))
        if not found:
            return [], "folder holds no image files" + ("" if recursive else " (subfolders: --recursive / recursive=True)")
        return found, None
    if p.is_file():
        return [str(p)], None  # named explicitly: try it whatever its extension; the decoder decides
    return [], "no such file or directory"


def _file_item(path: str, index: int = 0, policy=None) -> _Item:
    """A file to score under `policy` (`data_pipeline.images.DecodePolicy`; None: the default, limits from the
    environment)."""
    from data_pipeline.images import DEFAULT_POLICY, load_image

    policy = policy or DEFAULT_POLICY
    return _Item(path, index, lambda: load_image(path, policy),
                 load_reduced=lambda target: load_image(path, policy, resize_target=target))


_ARRAY_HINT = "channels last: [H, W], [H, W, 1|2|3|4] or a batch [N, H, W, C]"


def _pixels(x, source: str, value_range: Optional[float] = None, policy=None) -> np.ndarray:
    """One image as an array (numpy, tf.Tensor, anything with __array__) -> uint8 [H, W, 3] under the decode policy.

    uint8 pixels are taken as they are; uint16 drop their low byte (`>> 8`, as 16-bit files); other integers must lie in
    0..255; floats are [0, 1] when their maximum is <= 1 (else [0, 255]; `value_range` forces 1 or 255) and are rounded
    to uint8, so an array scores as the same pixels saved to a PNG. Gray gives RGB, alpha is composited on white.
    The decode policy's aspect-ratio and pixel limits apply (`policy`; None: the default).
    """
    from data_pipeline.images import DEFAULT_POLICY, ImageDecodeError, check_dimensions, from_pil

    policy = policy or DEFAULT_POLICY

    if hasattr(x, "numpy") and callable(x.numpy):  # tf.Tensor, torch.Tensor (CPU)
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype == object or arr.dtype.kind not in "uif":
        raise ImageDecodeError(f"{source}: pixels of dtype {arr.dtype} (expected uint8, another integer type or float)")
    if arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4) and arr.shape[0] in (1, 3, 4):
        raise ImageDecodeError(f"{source}: shape {arr.shape} looks channels-first; move the channels last "
                               f"(np.moveaxis(x, 0, -1)) -- expected {_ARRAY_HINT}")
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[-1] not in (1, 2, 3, 4)):
        raise ImageDecodeError(f"{source}: shape {arr.shape} is not an image ({_ARRAY_HINT})")
    if arr.size == 0 or min(arr.shape[:2]) < 1:
        raise ImageDecodeError(f"{source}: empty image, shape {arr.shape}")
    check_dimensions(source, arr.shape[1], arr.shape[0], policy)
    if arr.dtype == np.uint8:
        pass
    elif arr.dtype == np.uint16:
        arr = (arr >> 8).astype(np.uint8)  # the decode policy's 16-bit rule
    elif arr.dtype.kind in "iu":
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise ImageDecodeError(f"{source}: {arr.dtype} pixels in {lo}..{hi}; integer pixels must lie in 0..255 "
                                   "(uint16 images are reduced with >> 8)")
        arr = arr.astype(np.uint8)
    else:
        if not np.all(np.isfinite(arr)):
            raise ImageDecodeError(f"{source}: float pixels hold NaN or infinity")
        lo, hi = float(arr.min()), float(arr.max())
        scale = value_range if value_range is not None else (1.0 if hi <= 1.0 else 255.0)
        if scale not in (1.0, 255.0):
            raise ValueError(f"value_range must be 1 or 255 (the largest pixel value), got {value_range!r}")
        if lo < 0 or hi > scale:
            raise ImageDecodeError(f"{source}: float pixels in [{lo:g}, {hi:g}], outside [0, {scale:g}]; pass floats in "
                                   "[0, 1] or [0, 255] (value_range=1 or 255 chooses)")
        arr = np.round(arr.astype(np.float64) * (255.0 / scale)).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[-1] == 3:
        return np.ascontiguousarray(arr)
    from PIL import Image

    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    return from_pil(Image.fromarray(np.ascontiguousarray(arr)), policy, name=source)  # L, LA or RGBA: the policy's modes


def _is_array(x) -> bool:
    return isinstance(x, np.ndarray) or (hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, (str, bytes)))


def _expand(inputs, recursive: bool, value_range: Optional[float], policy=None) -> list:
    """`score`'s inputs -> `_Item`s (a problem found here becomes an item whose load raises its reason); `policy`: the
    `data_pipeline.images.DecodePolicy` (None: the default, limits from the environment)."""
    def failing(source, index, reason):
        def load():
            raise ValueError(reason)

        return _Item(source, index, load)

    def one(x, index: int, top: bool) -> list:
        try:
            from PIL import Image
        except ImportError:  # pragma: no cover - Pillow is a dependency
            Image = None
        if x is None:
            return [failing(f"<input {index}>", index, f"<input {index}>: None is not an image")]
        if isinstance(x, (str, os.PathLike)):
            files, problem = _expand_path(Path(x).expanduser(), recursive)
            if problem:
                return [failing(os.fspath(x), index, f"{os.fspath(x)}: {problem}")]
            return [_file_item(f, index, policy) for f in files]
        if isinstance(x, (bytes, bytearray, memoryview)):
            data, source = bytes(x), f"<bytes {index}>"
            return [_Item(source, index, lambda: _decode_bytes(data, source, policy),
                          load_reduced=lambda target: _decode_bytes(data, source, policy, target))]
        if Image is not None and isinstance(x, Image.Image):
            source = f"<PIL image {index}>"
            from data_pipeline.images import DEFAULT_POLICY, from_pil

            return [_Item(source, index, lambda: from_pil(x, policy or DEFAULT_POLICY, name=source))]
        if isinstance(x, (list, tuple)) or (not _is_array(x) and hasattr(x, "__iter__") and not isinstance(x, dict)):
            if not top:
                return [failing(f"<input {index}>", index, f"<input {index}>: a nested {type(x).__name__}; pass an "
                                f"array for pixels, or one flat list of images")]
            out = []
            for i, element in enumerate(x):
                out.extend(one(element, i, top=False))
            return out
        if _is_array(x):
            source = f"<array {index}>"
            try:
                shape = tuple(int(d) for d in x.shape)
            except Exception as e:
                return [failing(source, index, f"{source}: unreadable shape ({e})")]
            if len(shape) == 4:  # a batch [N, H, W, C]
                if shape[0] == 0:
                    return [failing(source, index, f"{source}: an empty batch, shape {shape}")]
                batch = x.numpy() if hasattr(x, "numpy") and callable(x.numpy) else np.asarray(x)
                return [_Item(f"{source}[{j}]", index,
                              (lambda j=j: _pixels(batch[j], f"{source}[{j}]", value_range, policy)))
                        for j in range(shape[0])]
            return [_Item(source, index, lambda: _pixels(x, source, value_range, policy))]
        return [failing(f"<input {index}>", index, f"<input {index}>: a {type(x).__name__} is not an image (pass a path, "
                        "folder, bytes, PIL image or array)")]

    return one(inputs, 0, top=True)


def _decode_bytes(data: bytes, source: str, policy=None, resize_target=None) -> np.ndarray:
    """`load_image` on encoded bytes, its errors naming `source` instead of "<bytes>"."""
    from data_pipeline.images import DEFAULT_POLICY, ImageDecodeError, load_image

    if not data:
        raise ImageDecodeError(f"{source}: empty input (0 bytes)")
    try:
        return load_image(data, policy or DEFAULT_POLICY, resize_target)
    except ImageDecodeError as e:
        raise ImageDecodeError(str(e).replace("<bytes>", source, 1)) from None
