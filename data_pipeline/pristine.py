"""Pristine (reference) photos for the synthetic generator: the embedded set and user folders.

The embedded set is the colour photographs that ship inside the scikit-image wheel, so the demo and the tests need no
download. Each reference is named by a *source string*: ``"skimage:astronaut"`` for an embedded photo or a file path;
:func:`load_reference` turns one into ``(uint8 HxWx3, stored bytes, format)``, which is what the Beam workers call, and
:func:`reference_id` gives its id.

Example:
    >>> from data_pipeline import pristine
    >>> [name for name, _ in pristine.embedded()][:3]
    ['astronaut', 'chelsea', 'coffee']
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import skimage.data

from data_pipeline import fs
from data_pipeline.images import load_image, is_image_file, DecodePolicy, canonical_bytes, encode_png

#: Embedded photo name -> (scikit-image loader name, index into a tuple result or None).
EMBEDDED = {
    "astronaut": ("astronaut", None),
    "chelsea": ("chelsea", None),
    "coffee": ("coffee", None),
    "rocket": ("rocket", None),
    "motorcycle_left": ("stereo_motorcycle", 0),
    "motorcycle_right": ("stereo_motorcycle", 1),
    "hubble_deep_field": ("hubble_deep_field", None),
    "retina": ("retina", None),
    "ihc": ("immunohistochemistry", None),
    "color": ("colorwheel", None),
    # greyscale photos (repeated to RGB): more natural scenes (the demo trains and tests on natural photos only)
    "camera": ("camera", None),
    "moon": ("moon", None),
    "coins": ("coins", None),
    "brick": ("brick", None),
    "grass": ("grass", None),
    "gravel": ("gravel", None),
}
PREFIX = "skimage:"
#: Natural scenes, one view per scene (no microscopy, astronomy, fundus or synthetic images; one of the two stereo views):
#: the demo's pristine set, as IQA datasets use natural-scene references.
NATURAL = ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "camera", "moon", "coins", "brick", "grass", "gravel")


def embedded_names() -> list[str]:
    """Names of the embedded pristine photos (stable order)."""
    return list(EMBEDDED)


def load_embedded(name: str) -> np.ndarray:
    """One embedded photo as uint8 HxWx3."""
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded pristine photo {name!r}; available: {', '.join(EMBEDDED)}")
    fn, idx = EMBEDDED[name]
    img = getattr(skimage.data, fn)()
    if idx is not None:
        img = img[idx]
    img = np.asarray(img)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3].astype(np.uint8))


def embedded(names: Iterable[str] | None = None) -> list[tuple[str, np.ndarray]]:
    """The embedded pristine set: ``[(name, uint8 HxWx3)]`` from the photos bundled with scikit-image."""
    return [(n, load_embedded(n)) for n in (names or EMBEDDED)]


def from_folder(directory: str | os.PathLike, recursive: bool = True) -> list[tuple[str, np.ndarray]]:
    """Every readable image under ``directory`` as ``[(id, uint8 HxWx3)]`` (decode policy of :mod:`data_pipeline.images`).

    Raises:
        FileNotFoundError: the folder does not exist or holds no image files.
    """
    return [(reference_id(p), load_image(p)) for p in list_folder(directory, recursive)]


def list_folder(directory: str | os.PathLike, recursive: bool = True) -> list[str]:
    """Sorted image file paths under ``directory``: a local folder or a URI (gs://, s3://, ...; one listing, no image read)."""
    d = fs.abspath(directory) if fs.is_uri(directory) else str(directory)
    if not fs.is_uri(d):
        p = Path(d)
        if not p.is_dir():
            raise FileNotFoundError(f"pristine folder {d!r} does not exist (pass a folder of reference photos, or 'embedded')")
        it = p.rglob("*") if recursive else p.iterdir()
        paths = sorted(str(q) for q in it if q.is_file() and is_image_file(str(q)))
    elif recursive:
        paths = [q for q in fs.walk_files(d) if is_image_file(q)]
    else:
        paths = [fs.join(d, n) for n, size in sorted(fs.scan(d).items()) if size is not None and is_image_file(n)]
    if not paths:
        raise FileNotFoundError(f"no image files (.jpg, .png, .bmp, .tif, ...) found in pristine folder {d!r}")
    return paths


def sources(spec: str | os.PathLike, recursive: bool = True) -> list[str]:
    """Source strings for ``--pristine``: ``'embedded'`` (all embedded photos), ``'embedded:astronaut,coffee'``, or a folder."""
    s = str(spec)
    if s == "embedded" or s.startswith("embedded:"):
        names = s.split(":", 1)[1].split(",") if ":" in s else embedded_names()
        for n in names:
            if n not in EMBEDDED:
                raise ValueError(f"unknown embedded pristine photo {n!r} in {s!r}; available: {', '.join(EMBEDDED)}")
        return [PREFIX + n for n in names]
    return list_folder(s, recursive)


def reference_id(source: str) -> str:
    """A stable id for a source: the embedded name, or the file path's stem with unsafe characters replaced."""
    if source.startswith(PREFIX):
        return source[len(PREFIX):]
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(source).stem)


def load_reference(source: str, max_long_side: int = 0, encode: bool = True):
    """Loads a reference: ``(uint8 HxWx3 pixels, stored bytes, format)``.

    The stored bytes decode to exactly the pixels returned: the original file when the decode policy keeps it
    (:func:`data_pipeline.images.canonical_bytes`), otherwise a lossless PNG (embedded photos, resized or converted files).

    Args:
        max_long_side: downscale (area) so that the long side is at most this; 0 keeps the size.
        encode: False skips making the stored bytes (returns ``(pixels, None, None)``).
    """
    policy = DecodePolicy(max_long_side=int(max_long_side or 0))
    if source.startswith(PREFIX):
        pixels = load_embedded(source[len(PREFIX):])
        if max_long_side and max(pixels.shape[:2]) > max_long_side:
            pixels = load_image(encode_png(pixels), policy)
        return (pixels, encode_png(pixels), "png") if encode else (pixels, None, None)

    raw = fs.read_image(source)  # local or URI, read once
    with fs.named_errors(source):
        pixels = load_image(raw, policy)
        if not encode:
            return pixels, None, None
        data, fmt, h, w = canonical_bytes(raw)
    if (h, w) != pixels.shape[:2]:
        return pixels, encode_png(pixels), "png"
    return pixels, data, fmt
