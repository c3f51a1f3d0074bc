"""The ONE image decode policy (docs/data-pipeline.md, Decode policy), used by the writer, training, the CLI and serving.

Policy, applied in this order:
1. first frame of animated formats;
2. EXIF orientation applied (Python path only: the record writer bakes it in, see `canonical_bytes`);
3. 16-bit images reduced to 8 bits by dropping the low byte (`v >> 8`, as `tf.image.convert_image_dtype` does);
4. grayscale and CMYK converted to RGB; alpha composited on white;
5. long side capped at `max_long_side` (area resampling), short side raised to `min_short_side` (bicubic) with a warning.

Two implementations that agree on the same bytes:
- `load_image(path_or_bytes)`: Pillow, returns uint8 HxWx3 numpy; raises `ImageDecodeError` with the reason.
- `decode_image_tensor(encoded)`: TF graph (tf.function/serving friendly), returns uint8 HxWx3 tensor.
`canonical_bytes` decides what the record writer stores: the original bytes when the graph path decodes them to the same
pixels as the Python path (plain RGB/gray JPEG, PNG, BMP without EXIF rotation), otherwise a lossless PNG of the policy's pixels.
"""

from __future__ import annotations

import io
import logging
import os
import warnings
from dataclasses import dataclass
from typing import Union

import numpy as np
from PIL import Image, ImageOps, ImageSequence

logger = logging.getLogger(__name__)

Image.MAX_IMAGE_PIXELS = 300_000_000  # huge but legitimate photos; decompression bombs beyond this still fail

#: Formats whose original bytes `tf.io.decode_image` reads (GIF: first frame).
GRAPH_FORMATS = ("JPEG", "PNG", "BMP", "GIF")
IMAGE_EXTENSIONS = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".jp2", ".j2k", ".ppm", ".pgm", ".pnm", ".jfif",
)
WHITE = 255


class ImageDecodeError(ValueError):
    """An input that the decode policy cannot turn into an RGB image (the message says why)."""


@dataclass(frozen=True)
class DecodePolicy:
    """Size limits of the decode policy.

    Args:
        min_short_side: images whose short side is smaller are upsampled (bicubic) to it, with a warning; 0 disables.
        max_long_side: images whose long side is larger are downsampled (area) to it; 0 disables.
    """

    min_short_side: int = 0
    max_long_side: int = 0


DEFAULT_POLICY = DecodePolicy()
Source = Union[str, os.PathLike, bytes]


def _open(source: Source) -> Image.Image:
    try:
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise ImageDecodeError("empty input (0 bytes)")
            img = Image.open(io.BytesIO(source))
        else:
            if os.path.getsize(source) == 0:
                raise ImageDecodeError(f"{source}: empty file (0 bytes)")
            img = Image.open(source)
        img.load()
        return img
    except ImageDecodeError:
        raise
    except FileNotFoundError as e:
        raise ImageDecodeError(f"{source}: file not found") from e
    except Exception as e:  # Pillow raises many types: UnidentifiedImageError, OSError (truncated), SyntaxError...
        name = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
        raise ImageDecodeError(f"{name}: cannot decode image ({type(e).__name__}: {e})") from e


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Mode handling of the policy (steps 3 and 4) on an already oriented Pillow image."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        if mode == "I" and arr.max(initial=0) <= 255:
            arr8 = arr.astype(np.uint8)
        else:
            arr8 = (arr.astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(arr8[..., None], 3, axis=2)
    if mode == "F":
        arr = np.clip(np.asarray(img), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img.convert("RGBA")).astype(np.float32)
        alpha = rgba[..., 3:4] / 255.0
        rgb = rgba[..., :3] * alpha + WHITE * (1.0 - alpha)
        return np.round(rgb).astype(np.uint8)
    if mode == "RGB":
        return np.asarray(img)
    if mode == "CMYK":
        return np.asarray(img.convert("RGB"))
    return np.asarray(img.convert("RGB"))


def _resize(arr: np.ndarray, policy: DecodePolicy, name: str) -> np.ndarray:
    h, w = arr.shape[:2]
    if policy.max_long_side and max(h, w) > policy.max_long_side:
        s = policy.max_long_side / max(h, w)
        size = (max(1, round(w * s)), max(1, round(h * s)))
        arr = np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BOX))
        h, w = arr.shape[:2]
    if policy.min_short_side and min(h, w) < policy.min_short_side:
        s = policy.min_short_side / min(h, w)
        size = (max(policy.min_short_side, round(w * s)), max(policy.min_short_side, round(h * s)))
        warnings.warn(f"{name}: {w}x{h} is smaller than {policy.min_short_side} px on its short side; upsampled to {size[0]}x{size[1]}")
        arr = np.asarray(Image.fromarray(arr).resize(size, Image.Resampling.BICUBIC))
    return arr


def load_image(source: Source, policy: DecodePolicy = DEFAULT_POLICY) -> np.ndarray:
    """Decodes a file path or encoded bytes to uint8 HxWx3 RGB under the decode policy (Python path).

    Raises:
        ImageDecodeError: unreadable, truncated, empty or non-image input; the message names the input and the reason.
    """
    return from_pil(_open(source), policy, name=str(source) if not isinstance(source, (bytes, bytearray)) else "<bytes>")


def from_pil(img: Image.Image, policy: DecodePolicy = DEFAULT_POLICY, name: str = "<PIL image>") -> np.ndarray:
    """Steps 1-5 of the policy on an opened Pillow image (what `load_image` does after opening): uint8 HxWx3 RGB.

    Raises:
        ImageDecodeError: pixels that cannot be read or give no RGB image; the message starts with `name`.
    """
    try:
        if getattr(img, "is_animated", False):
            img = next(iter(ImageSequence.Iterator(img))).copy()
        img.load()
    except Exception as e:
        raise ImageDecodeError(f"{name}: cannot read the image's pixels ({type(e).__name__}: {e})") from e
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # broken EXIF block: keep the pixels as stored
        logger.warning("%s: unreadable EXIF orientation ignored", name)
    arr = _to_rgb_array(img)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.size == 0:
        raise ImageDecodeError(f"{name}: decoded to unexpected shape {arr.shape}")
    return np.ascontiguousarray(_resize(arr, policy, name))


def _needs_conversion(img: Image.Image) -> bool:
    """True when `tf.io.decode_image` on the original bytes would not give the policy's pixels."""
    if img.format not in ("JPEG", "PNG", "BMP"):
        return True
    if img.mode not in ("RGB", "L"):
        return True
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:
        orientation = 1
    return orientation not in (None, 1)


def canonical_bytes(source: Source) -> tuple[bytes, str, int, int]:
    """What the record writer stores for one image: `(encoded, format, height, width)`.

    The original bytes for a plain RGB/grayscale JPEG, PNG or BMP without EXIF rotation (never re-encode lossy: it changes the
    quality being measured); otherwise a lossless PNG of the policy-decoded pixels (EXIF applied, CMYK/alpha/16-bit resolved).
    """
    img = _open(source)
    raw = source if isinstance(source, (bytes, bytearray)) else open(source, "rb").read()
    if not _needs_conversion(img) and not getattr(img, "is_animated", False):
        return bytes(raw), img.format.lower(), img.height, img.width
    arr = load_image(source)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue(), "png", arr.shape[0], arr.shape[1]


def encode_png(arr: np.ndarray) -> bytes:
    """Lossless PNG bytes of a uint8 HxWx3 array."""
    buf = io.BytesIO()
    Image.fromarray(np.asarray(arr, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def is_image_file(path: str) -> bool:
    return os.path.splitext(str(path))[1].lower() in IMAGE_EXTENSIONS


# ----------------------------------------------------------------------------------------------------------------- graph path
def decode_image_tensor(encoded, policy: DecodePolicy = DEFAULT_POLICY):
    """Decodes encoded JPEG/PNG/BMP/GIF bytes (scalar tf.string) to uint8 HxWx3 under the policy, inside a TF graph.

    16-bit PNGs are reduced with `>> 8`, 1/2/4 channels become RGB with alpha composited on white, GIFs give their first
    frame. EXIF orientation is not read here: records carry pixels already oriented (see `canonical_bytes`).
    Raises `tf.errors.InvalidArgumentError` for undecodable bytes (callers that must not fail use `try_decode_image_tensor`).
    """
    import tensorflow as tf

    is_png = tf.strings.substr(encoded, 0, 4) == b"\x89PNG"

    def _png16():
        x = tf.io.decode_png(encoded, channels=0, dtype=tf.uint16)
        return tf.cast(tf.bitwise.right_shift(x, 8), tf.uint8)

    def _generic():
        return tf.io.decode_image(encoded, channels=0, expand_animations=False, dtype=tf.uint8)

    def _jpeg():
        # INTEGER_ACCURATE (libjpeg ISLOW) is what Pillow uses: pixels then match `load_image` exactly; TF's default
        # (INTEGER_FAST) differs by up to ~8 levels, which would make served scores differ from the Python path.
        return tf.io.decode_jpeg(encoded, channels=0, dct_method="INTEGER_ACCURATE")

    # PNG bit depth lives in byte 24 of the IHDR chunk.
    bit_depth = tf.strings.substr(encoded, 24, 1)
    is16 = tf.logical_and(is_png, tf.equal(bit_depth, b"\x10"))
    is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 2), b"\xff\xd8")
    img = tf.cond(is16, _png16, lambda: tf.cond(is_jpeg, _jpeg, _generic))
    img.set_shape([None, None, None])
    img = _channels_to_rgb(img)
    return resize_to_policy(img, policy)


def _channels_to_rgb(img):
    import tensorflow as tf

    c = tf.shape(img)[-1]

    def composite(rgb, alpha):
        a = tf.cast(alpha, tf.float32) / 255.0
        out = tf.cast(rgb, tf.float32) * a + WHITE * (1.0 - a)
        return tf.cast(tf.round(out), tf.uint8)

    branches = {
        1: lambda: tf.tile(img[..., :1], [1, 1, 3]),
        2: lambda: composite(tf.tile(img[..., :1], [1, 1, 3]), img[..., 1:2]),
        3: lambda: img[..., :3],
        4: lambda: composite(img[..., :3], img[..., 3:4]),
    }
    out = tf.switch_case(tf.clip_by_value(c, 1, 4) - 1, [branches[k] for k in (1, 2, 3, 4)])
    out.set_shape([None, None, 3])
    return out


def resize_to_policy(img, policy: DecodePolicy = DEFAULT_POLICY):
    """Applies the policy's long-side cap and short-side floor to a uint8 HxWx3 tensor."""
    import tensorflow as tf

    if not policy.max_long_side and not policy.min_short_side:
        return img
    shape = tf.cast(tf.shape(img)[:2], tf.float32)
    scale = tf.constant(1.0)
    if policy.max_long_side:
        scale = tf.minimum(scale, policy.max_long_side / tf.reduce_max(shape))
    if policy.min_short_side:
        scale = tf.maximum(scale, policy.min_short_side / tf.reduce_min(shape))
    new = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), 1)
    method = tf.cond(scale < 1.0, lambda: tf.constant(0), lambda: tf.constant(1))

    def resized():  # built inside the branch: an image within the limits is not resized at all
        out = tf.switch_case(
            method,
            [
                lambda: tf.image.resize(img, new, method="area"),
                lambda: tf.image.resize(img, new, method="bicubic"),
            ],
        )
        return tf.cast(tf.clip_by_value(tf.round(out), 0, 255), tf.uint8)

    return tf.cond(tf.equal(scale, 1.0), lambda: img, resized)


def try_decode_image_tensor(encoded, policy: DecodePolicy = DEFAULT_POLICY):
    """Like `decode_image_tensor` but never raises: returns `(image, ok)`; a bad input gives a 1x1 white image and ok=False."""
    import tensorflow as tf

    # decode_image has no "soft" mode; validate the magic bytes and let the decoder check the rest.
    head = tf.strings.substr(encoded, 0, 4)
    known = tf.reduce_any(
        tf.stack(
            [
                tf.strings.substr(head, 0, 2) == b"\xff\xd8",
                head == b"\x89PNG",
                tf.strings.substr(head, 0, 2) == b"BM",
                tf.strings.substr(head, 0, 3) == b"GIF",
            ]
        )
    )
    # tf.io.decode_image raises on truncated JPEG data only sometimes; this keeps the graph alive for clearly non-image input.
    return tf.cond(
        known,
        lambda: (decode_image_tensor(encoded, policy), tf.constant(True)),
        lambda: (tf.fill([1, 1, 3], tf.constant(WHITE, tf.uint8)), tf.constant(False)),
    )
