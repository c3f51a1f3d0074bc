"""Contact sheet: one reference through every distortion type (rows) x level (columns), for a person to look at.

Example:
    >>> import tempfile
    >>> from pathlib import Path
    >>> from data_pipeline import preview, pristine
    >>> out = Path(tempfile.mkdtemp()) / "sheet.png"
    >>> sheet = preview.contact_sheet(pristine.load_embedded("chelsea"), out, size=64, types=[1, 10])  # default: all types
    >>> sheet.size, out.exists()  # label column + reference + 5 levels, one row per type
    ((546, 146), True)
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from data_pipeline import distortions as D


def _square(image: np.ndarray, size: int) -> np.ndarray:
    """Centre square crop resized (Lanczos) to ``size`` x ``size``."""
    h, w = image.shape[:2]
    s = min(h, w)
    top, left = (h - s) // 2, (w - s) // 2
    crop = Image.fromarray(np.ascontiguousarray(image[top:top + s, left:left + s]))
    return np.asarray(crop.resize((size, size), Image.LANCZOS))


def _fit(tile: np.ndarray, size: int):
    img = Image.fromarray(tile)
    return img if tile.shape[0] == size else img.resize((size, size), Image.LANCZOS)


def contact_sheet(reference: np.ndarray, out_path: str | os.PathLike | None = None, size: int = 64, seed: int = 0,
                  types: Sequence[int] | None = None, levels: Sequence[int] = (1, 2, 3, 4, 5), restretch: bool = False,
                  label_width: int = 150, work_size: int | None = None):
    """Draws ``reference`` (centre square, ``size`` px) and its distortions: one row per type, columns ref, L1..L5.

    Distortions are applied to the reference at ``work_size`` px (default: ``size``, so pixel-scale artefacts show at their
    true scale) and the tiles resized (Lanczos) to ``size``. Patch-based types (20, 23: 16 and 32 px patches) cover a large
    part of a small image, and JPEG2000 at high ratios is dominated by its header on images below ~128 px.

    Returns:
        the sheet as a PIL image; also saved to ``out_path`` (PNG) when given.
    """
    types = list(types) if types else sorted(D.DISTORTIONS)
    work = int(work_size or size)
    ref = _square(np.asarray(reference)[..., :3].astype(np.uint8), work)
    pad, header = 2, 14
    cols = 1 + len(levels)
    sheet = Image.new("RGB", (label_width + cols * (size + pad), header + len(types) * (size + pad)), "white")
    draw = ImageDraw.Draw(sheet)
    for j, title in enumerate(["reference"] + [f"level {lv}" for lv in levels]):
        draw.text((label_width + j * (size + pad) + 2, 1), title, fill="black")
    for i, t in enumerate(types):
        d = D.get(t)
        y = header + i * (size + pad)
        params = ", ".join(f"{p:g}" for p in d.levels)
        draw.text((2, y + 2), f"{d.id:2d} {d.name}", fill="black")
        draw.text((2, y + 16), f"[{params}]", fill="gray")
        sheet.paste(_fit(ref, size), (label_width, y))
        for j, lv in enumerate(levels):
            rng = np.random.default_rng([seed, d.id, lv])
            tile = D.distort(ref, d.id, lv, rng, restretch=restretch)
            sheet.paste(_fit(tile, size), (label_width + (j + 1) * (size + pad), y))
    if out_path is not None:
        out_path = os.fspath(out_path)
        os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
        sheet.save(out_path, format="PNG", optimize=True)
    return sheet
