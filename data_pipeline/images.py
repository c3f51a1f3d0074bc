"""The ONE image decode policy (docs/data-pipeline.md, Decode policy), used by the writer, training, the CLI and serving.

Policy, applied in this order:
1. first frame of animated formats;
2. EXIF orientation applied (Python path only: the record writer bakes it in, see `canonical_bytes`);
3. 16-bit images reduced to 8 bits by dropping the low byte (`v >> 8`, as `tf.image.convert_image_dtype` does);
4. grayscale and CMYK converted to RGB; alpha composited on white;
5. long side capped at `max_long_side` (area resampling), short side raised to `min_short_side` (bicubic) with a warning.

Before any pixel is decoded, the size limits (docs/security.md, Images) are checked: the file's size (from the file
system, before it is read), then the width and height from the header (pixel count and aspect ratio). A JPEG over the
pixel limit that the caller will resize anyway (`resize_target`) is decoded at 1/2, 1/4 or 1/8 size instead (libjpeg DCT
scaling, `PIL.Image.draft`) when that still leaves at least twice the pixels the resize keeps on each side.

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
import re
import warnings
from dataclasses import dataclass, replace
from typing import Callable, Optional, Union

import numpy as np
from PIL import Image, ImageOps, ImageSequence

logger = logging.getLogger(__name__)

#: The size limits' defaults and the environment variables that change them (docs/security.md, Images).
DEFAULT_MAX_PIXELS = 89_478_485  # Pillow's decompression-bomb threshold (PIL.Image.MAX_IMAGE_PIXELS' default)
DEFAULT_MAX_FILE_BYTES = 256 * 2**20
DEFAULT_MAX_ASPECT_RATIO = 20.0
ENV_MAX_PIXELS = "KERAS_IQA_MAX_IMAGE_PIXELS"
ENV_MAX_FILE_BYTES = "KERAS_IQA_MAX_IMAGE_BYTES"
ENV_MAX_ASPECT_RATIO = "KERAS_IQA_MAX_ASPECT_RATIO"
_LIMITS = {  # field -> (environment variable, default, type)
    "max_pixels": (ENV_MAX_PIXELS, DEFAULT_MAX_PIXELS, int),
    "max_file_bytes": (ENV_MAX_FILE_BYTES, DEFAULT_MAX_FILE_BYTES, int),
    "max_aspect_ratio": (ENV_MAX_ASPECT_RATIO, DEFAULT_MAX_ASPECT_RATIO, float),
}
#: libjpeg's DCT scalings that `PIL.Image.draft` can decode at (1/2, 1/4, 1/8).
DRAFT_SCALES = (2, 4, 8)

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
        max_pixels: width x height above which an image is refused, read from its header before decoding. None: the
            environment variable KERAS_IQA_MAX_IMAGE_PIXELS, else 89,478,485; 0: no keras-iqa limit (Pillow's own
            decompression-bomb limit, `PIL.Image.MAX_IMAGE_PIXELS`, still applies).
        max_file_bytes: files larger than this are refused before they are read. None: KERAS_IQA_MAX_IMAGE_BYTES, else
            256 MiB; 0: no limit.
        max_aspect_ratio: long side / short side above which an image is refused (its test-time upsampling would be
            huge). None: KERAS_IQA_MAX_ASPECT_RATIO, else 20; 0: no limit.
    """

    min_short_side: int = 0
    max_long_side: int = 0
    max_pixels: Optional[int] = None
    max_file_bytes: Optional[int] = None
    max_aspect_ratio: Optional[float] = None

    def resolved(self) -> "DecodePolicy":
        """This policy with every limit left at None read from its environment variable, else its default.

        Raises:
            ValueError: an environment variable that is not a number >= 0 (the message names it).
        """
        values = {}
        for field, (env, default, kind) in _LIMITS.items():
            given = getattr(self, field)
            if given is not None:
                if not given >= 0:
                    raise ValueError(f"DecodePolicy({field}={given!r}): expected a number >= 0 (0 turns the limit off)")
                if type(given) is not kind:
                    values[field] = kind(given)
                continue
            text = os.environ.get(env, "").strip()
            try:
                value = kind(text.replace("_", "")) if text else default
            except ValueError:
                value = -1
            if not value >= 0:
                raise ValueError(f"{env}={text!r}: expected a number >= 0 (0 turns the limit off)")
            values[field] = value
        return replace(self, **values) if values else self


DEFAULT_POLICY = DecodePolicy()
Source = Union[str, os.PathLike, bytes]
#: `resize_target(height, width) -> (h, w)`: the size the caller resizes the decoded image to, None when it does not
#: (e.g. `data_pipeline.test_time.TestTimeCrops.resize_target`); lets a JPEG over the pixel limit decode at reduced size.
ResizeTarget = Callable[[int, int], Optional[tuple]]


def _setting(field: str) -> str:
    env = _LIMITS[field][0]
    return f"set {env}=N or DecodePolicy({field}=N); 0 turns it off"


def check_file_size(name, nbytes: int, policy: DecodePolicy = DEFAULT_POLICY) -> None:
    """Refuses a file of `nbytes` over the policy's `max_file_bytes` (call it before reading the file).

    Raises:
        ImageDecodeError: naming the file, its size, the limit and the setting.
    """
    limit = policy.resolved().max_file_bytes
    if limit and nbytes > limit:
        raise ImageDecodeError(f"{name}: file of {nbytes:,} bytes is over the image file size limit of {limit:,} bytes "
                               f"(max_file_bytes; {_setting('max_file_bytes')}); not read")


def check_dimensions(name, width: int, height: int, policy: DecodePolicy = DEFAULT_POLICY,
                     pixel_limit: bool = True) -> None:
    """Refuses a `width` x `height` image over the policy's aspect ratio or (`pixel_limit`) pixel limit.

    Raises:
        ImageDecodeError: naming the image, its size, the limit and the setting.
    """
    policy = policy.resolved()
    width, height = int(width), int(height)
    if width < 1 or height < 1:
        raise ImageDecodeError(f"{name}: empty image ({width} x {height} pixels)")
    ratio = max(width, height) / min(width, height)
    if policy.max_aspect_ratio and ratio > policy.max_aspect_ratio:
        raise ImageDecodeError(f"{name}: {width} x {height} pixels has an aspect ratio of {ratio:.4g}:1, over the limit of "
                               f"{policy.max_aspect_ratio:g}:1 (max_aspect_ratio; {_setting('max_aspect_ratio')})")
    if pixel_limit and policy.max_pixels and width * height > policy.max_pixels:
        raise ImageDecodeError(f"{name}: {width} x {height} = {width * height:,} pixels is over the image pixel limit of "
                               f"{policy.max_pixels:,} (max_pixels; {_setting('max_pixels')})")


def _name(source: Source) -> str:
    return "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)


def _open(source: Source, policy: DecodePolicy = DEFAULT_POLICY, resize_target: Optional[ResizeTarget] = None
          ) -> Image.Image:
    """Opens and decodes `source` after the size limits (file size, then the header's width and height)."""
    name = _name(source)
    policy = policy.resolved()
    try:
        if isinstance(source, (bytes, bytearray)):
            if not source:
                raise ImageDecodeError("empty input (0 bytes)")
            check_file_size(name, len(source), policy)
            fp = io.BytesIO(source)
        else:
            nbytes = os.path.getsize(source)
            if nbytes == 0:
                raise ImageDecodeError(f"{source}: empty file (0 bytes)")
            check_file_size(name, nbytes, policy)
            fp = source
        img = Image.open(fp)  # reads the header only
        _limit_size(img, name, policy, resize_target)
        img.load()
        return img
    except ImageDecodeError:
        raise
    except FileNotFoundError as e:
        raise ImageDecodeError(f"{source}: file not found") from e
    except Image.DecompressionBombError as e:  # Pillow checks twice PIL.Image.MAX_IMAGE_PIXELS in Image.open
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels = f"{int(found.group(1)):,} pixels" if found else "the image"
        raise ImageDecodeError(f"{name}: {pixels} is over Pillow's decompression-bomb limit of "
                               f"{2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels (twice PIL.Image.MAX_IMAGE_PIXELS; raise "
                               f"that too to go past it; keras-iqa's own limit: {_setting('max_pixels')})") from e
    except Image.UnidentifiedImageError as e:
        raise ImageDecodeError(f"{name}: cannot decode image (not a format Pillow reads: UnidentifiedImageError)") from e
    except Exception as e:  # Pillow raises many types: OSError (truncated), SyntaxError, ValueError...
        reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", "the bytes", str(e))
        raise ImageDecodeError(f"{name}: cannot decode image ({type(e).__name__}: {reason})") from e


def _oriented(img: Image.Image) -> tuple[int, int]:
    """(height, width) of `img` once its EXIF orientation is applied (read from the header)."""
    try:
        transposed = img.getexif().get(0x0112, 1) in (5, 6, 7, 8)
    except Exception:
        transposed = False
    return (img.width, img.height) if transposed else (img.height, img.width)


def _limit_size(img: Image.Image, name: str, policy: DecodePolicy, resize_target: Optional[ResizeTarget]) -> None:
    """The header checks: aspect ratio, then pixels; a JPEG over the pixel limit is set to decode at the smallest DCT
    scaling that brings it under the limit, when the caller resizes it to at most half that size on each side."""
    width, height = img.size
    check_dimensions(name, width, height, policy, pixel_limit=False)
    if not policy.max_pixels or width * height <= policy.max_pixels:
        return
    if img.format == "JPEG" and resize_target is not None:
        oh, ow = _oriented(img)
        target = resize_target(oh, ow)
        for k in DRAFT_SCALES if target is not None else ():
            rw, rh = -(-width // k), -(-height // k)
            r_h, r_w = (rw, rh) if (oh, ow) != (height, width) else (rh, rw)
            if r_h < 2 * target[0] or r_w < 2 * target[1]:
                break
            if rw * rh <= policy.max_pixels:
                img.draft(None, (width // k, height // k))
                if img.size == (rw, rh):
                    logger.info("%s: %d x %d decoded at 1/%d size (%d x %d) for a resize to %d x %d", name, width, height,
                                k, rw, rh, target[1], target[0])
                    return
                break
    check_dimensions(name, width, height, policy)


def _array(img: Image.Image) -> np.ndarray:
    """`np.asarray(img)`, converted in strips of ~4 M pixels: Pillow's own conversion (`tobytes`) holds two copies of a
    large image's bytes at once."""
    w, h = img.size
    step = max(1, (1 << 22) // max(1, w))
    if h <= step:
        return np.asarray(img)
    first = np.asarray(img.crop((0, 0, w, 1)))
    out = np.empty((h,) + first.shape[1:], first.dtype)
    for y in range(0, h, step):
        out[y:y + step] = np.asarray(img.crop((0, y, w, min(h, y + step))))
    return out


def _to_rgb_array(img: Image.Image) -> np.ndarray:
    """Mode handling of the policy (steps 3 and 4) on an already oriented Pillow image."""
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        arr = np.asarray(img)
        if mode == "I" and arr.max(initial=0) <= 255:
            arr8 = arr.astype(np.uint8)
        else:
            arr8 = (arr >> 8).astype(np.uint8)  # in the array's own dtype: no 4-byte copy of a 16-bit image
        del arr
        return np.repeat(arr8[..., None], 3, axis=2)
    if mode == "F":
        arr = np.clip(np.asarray(img), 0, 255).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in img.info):
        rgba = np.asarray(img if mode == "RGBA" else img.convert("RGBA"))
        out = np.empty(rgba.shape[:2] + (3,), np.uint8)
        step = max(1, (1 << 20) // max(1, rgba.shape[1]))  # ~1 M pixels of float32 at a time
        for y in range(0, rgba.shape[0], step):
            part = rgba[y:y + step].astype(np.float32)
            alpha = part[..., 3:4] / 255.0
            out[y:y + step] = np.round(part[..., :3] * alpha + WHITE * (1.0 - alpha))
        return out
    if mode == "RGB":
        return _array(img)
    if mode == "L":  # what convert("RGB") does, without a 4-bytes-per-pixel copy
        return np.repeat(_array(img)[..., None], 3, axis=2)
    return _array(img.convert("RGB"))  # CMYK, P, YCbCr, 1, ...


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


def load_image(source: Source, policy: DecodePolicy = DEFAULT_POLICY,
               resize_target: Optional[ResizeTarget] = None) -> np.ndarray:
    """Decodes a file path or encoded bytes to uint8 HxWx3 RGB under the decode policy (Python path).

    `resize_target(height, width)`: the size the caller resizes the image to next (None: it does not); a JPEG over
    `max_pixels` is then decoded at reduced size instead of refused, when the reduced image keeps at least twice that
    size on each side (the module docstring).

    Raises:
        ImageDecodeError: unreadable, truncated, empty, non-image or over-limit input; the message names the input and the
            reason (for a limit: the value, the limit and its setting).
    """
    return from_pil(_open(source, policy, resize_target), policy, name=_name(source))


def from_pil(img: Image.Image, policy: DecodePolicy = DEFAULT_POLICY, name: str = "<PIL image>") -> np.ndarray:
    """Steps 1-5 of the policy on an opened Pillow image (what `load_image` does after opening): uint8 HxWx3 RGB.

    Raises:
        ImageDecodeError: pixels that cannot be read or give no RGB image, or an image over the size limits; the
            message starts with `name`.
    """
    check_dimensions(name, img.width, img.height, policy)
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
