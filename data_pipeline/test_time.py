"""The test-time contract: how one image becomes crops, and how the crops' scores become the image's score.

Every path that scores an image uses this module and nothing else: the training runs' validation and test passes and
`keras-iqa evaluate` (records, `RecordReader.eval_dataset`), `keras-iqa score` and `keras_iqa.scoring` (files, arrays),
the SavedModel signatures, and both TFLite variants (per-crop, with the contract in its sidecar; whole-photo, with the
crops inside the graph). So one image gets one score, whatever the path (tested across paths).

The steps, for `TestTimeCrops(crop_size=c, num_crops=n, policy=..., resize=..., seed=...)`:
1. pixels become float32 RGB in [0, 255] (uint8 in, no other conversion);
2. policy "resize": the whole image is resized to c x c (bilinear, antialiased, aspect not kept) -> one crop. Done.
3. `resize` (the resize training applied before its random crops): None, an int r (short side = r, the other side
   round(side * r / short), half up) or (h, w); bicubic, antialiased, clipped to [0, 255];
4. an image whose short side is below c is upsampled (bicubic, short side = c, the other side ceil(side * c / short)),
   clipped;
5. n crop positions, as fractions (fy, fx) in [0, 1] of the free range (H - c, W - c); offset = round(f * (extent - c))
   (round half to even, float64). "grid": floor(sqrt(n)) rows x ceil(n / rows) columns spread from edge to edge
   (one row / column sits in the centre), n cells evenly spaced over them (row-major); "random": n fractions drawn ONCE
   from `numpy.random.default_rng(seed)`, the same for every image, so a server, an app and a test all take the same
   crops from the same pixels. (Crop positions independent of the image, like the official code's random crops: a fresh
   draw per image only adds noise to a mean.)
6. crops are exact pixel windows (integer gathers, no interpolation);
7. the image score is the mean of its crops' scores (`image_score`).

`positions()` and `to_dict()` (written into every export's contract JSON) give an app all it needs to do the same.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np
from PIL import Image

POLICIES = ("random", "grid", "resize")
Resize = Union[None, int, Sequence[int]]


def normalize_resize(resize: Resize):
    """None | int (short side) | (h, w) tuple; lists (from JSON) become tuples."""
    if resize is None:
        return None
    if isinstance(resize, (int, np.integer)) and not isinstance(resize, bool):
        if int(resize) < 1:
            raise ValueError(f"resize must be a positive short side or (h, w), got {resize!r}")
        return int(resize)
    values = tuple(int(v) for v in resize)
    if len(values) != 2 or min(values) < 1:
        raise ValueError(f"resize must be a positive short side or (h, w), got {resize!r}")
    return values


def grid_layout(n: int) -> tuple[int, int, list[int]]:
    """Rows, columns and the selected cell indices (row-major) of an `n`-crop grid.

    rows = floor(sqrt(n)), cols = ceil(n / rows); when rows*cols > n, `n` cells evenly spaced over the grid are kept.
    """
    if n < 1:
        raise ValueError(f"the number of test crops must be >= 1, got {n}")
    rows = max(1, int(math.floor(math.sqrt(n))))
    cols = int(math.ceil(n / rows))
    cells = np.round(np.linspace(0, rows * cols - 1, n)).astype(int).tolist() if rows * cols > n else list(range(n))
    return rows, cols, cells


def resized_size(height: int, width: int, resize: Resize) -> tuple[int, int]:
    """(h, w) after the `resize` step (step 3 of the module docstring), in plain Python (same rounding as the graph)."""
    resize = normalize_resize(resize)
    if resize is None:
        return int(height), int(width)
    if isinstance(resize, int):
        short = min(height, width)
        return (2 * height * resize + short) // (2 * short), (2 * width * resize + short) // (2 * short)
    return resize


def upsampled_size(height: int, width: int, crop: int) -> tuple[int, int]:
    """(h, w) after the small-image upsampling (step 4), in plain Python (same rounding as the graph)."""
    short = min(height, width)
    if short >= crop:
        return int(height), int(width)
    return (height * crop + short - 1) // short, (width * crop + short - 1) // short


def resize_image(img, resize: Resize, method: str = "bicubic"):
    """Step 3 on a float32 [H, W, 3] tensor: None -> unchanged; (h, w) -> that size; int -> short side = int."""
    import tensorflow as tf

    resize = normalize_resize(resize)
    if resize is None:
        return img
    if isinstance(resize, int):  # short side = resize, the other side rounded (half up), in integers
        shape = tf.shape(img)[:2]
        short = tf.reduce_min(shape)
        size = (2 * shape * resize + short) // (2 * short)
    else:
        size = tf.constant(list(resize), tf.int32)
    out = tf.image.resize(img, size, method=method, antialias=True)
    return tf.clip_by_value(out, 0.0, 255.0)


def ensure_min_side(img, crop: int):
    """Step 4 on a float32 [H, W, 3] tensor: upsampled (bicubic) so that both sides are >= crop; never padded."""
    import tensorflow as tf

    shape = tf.shape(img)[:2]
    short = tf.reduce_min(shape)

    def up():  # short side = crop, the other side rounded up, in integers
        size = (shape * crop + short - 1) // short
        return tf.clip_by_value(tf.image.resize(img, size, method="bicubic"), 0.0, 255.0)

    return tf.cond(short < crop, up, lambda: img)


def extract_crops(img, oy, ox, crop: int):
    """[N] offsets -> [N, crop, crop, C] exact pixel crops (gathers, no interpolation, no Python loop)."""
    import tensorflow as tf

    r = tf.range(crop, dtype=tf.int32)
    strips = tf.gather(img, oy[:, None] + r[None, :])  # [N, c, W, C]
    return tf.gather(strips, ox[:, None] + r[None, :], axis=2, batch_dims=1)  # [N, c, c, C]


@dataclass(frozen=True)
class TestTimeCrops:
    """The test-time contract of a model (see the module docstring).

    Args:
        crop_size: square crop side c.
        num_crops: crops averaged per image (1 for policy "resize").
        policy: "random" (seeded positions, the same for every image), "grid" or "resize" (whole image to c x c).
        resize: None, short side or (h, w), applied before the crops (ignored by policy "resize").
        seed: seed of the "random" positions.

    Example:
        >>> import numpy as np
        >>> import keras_iqa
        >>> model = keras_iqa.create_model("metaiqa-tiny")
        >>> image_uint8 = np.random.default_rng(0).integers(0, 256, (80, 100, 3), dtype=np.uint8)
        >>> contract = TestTimeCrops.from_model(model)
        >>> contract
        TestTimeCrops(crop_size=64, num_crops=4, policy='random', resize=None, seed=0)
        >>> crops = contract.crops(image_uint8)             # [n, c, c, 3] float32
        >>> tuple(crops.shape), crops.dtype.name
        ((4, 64, 64, 3), 'float32')
        >>> score = contract.image_score(model.score(crops))  # the mean of the crops' scores
        >>> tuple(np.shape(score))
        ()
    """

    __test__ = False  # not a pytest class, whatever its name

    crop_size: int = 224
    num_crops: int = 25
    policy: str = "random"
    resize: Resize = None
    seed: int = 0

    def __post_init__(self):
        if self.policy not in POLICIES:
            raise ValueError(f"crop policy must be one of {', '.join(POLICIES)}, got {self.policy!r}")
        if int(self.crop_size) < 1:
            raise ValueError(f"crop_size must be >= 1, got {self.crop_size}")
        if int(self.num_crops) < 1:
            raise ValueError(f"the number of test crops must be >= 1, got {self.num_crops}")
        object.__setattr__(self, "crop_size", int(self.crop_size))
        object.__setattr__(self, "num_crops", 1 if self.policy == "resize" else int(self.num_crops))
        object.__setattr__(self, "resize", None if self.policy == "resize" else normalize_resize(self.resize))
        object.__setattr__(self, "seed", int(self.seed))

    # ----------------------------------------------------------------------------------------------------- construction
    @classmethod
    def from_model(cls, model, num_crops: Optional[int] = None, policy: Optional[str] = None, resize: Resize = "model",
                   seed: int = 0) -> "TestTimeCrops":
        """The contract a keras-iqa model carries (`crop_size`, `test_crops`, `crop_policy`, `test_resize`); arguments
        override single fields (evaluation options)."""
        return cls(crop_size=int(model.crop_size), num_crops=int(num_crops or model.test_crops),
                   policy=policy or model.crop_policy,
                   resize=getattr(model, "test_resize", None) if resize == "model" else resize, seed=seed)

    @classmethod
    def from_dict(cls, d: dict) -> "TestTimeCrops":
        """From `to_dict()` output (an export's contract JSON, key "test_time")."""
        return cls(crop_size=d["crop_size"], num_crops=d["num_crops"], policy=d["policy"], resize=d.get("resize"),
                   seed=d.get("seed", 0))

    def to_dict(self) -> dict:
        """JSON-ready, with the crop positions, so an app can take the same crops without this code."""
        return {
            "crop_size": self.crop_size, "num_crops": self.num_crops, "policy": self.policy,
            "resize": list(self.resize) if isinstance(self.resize, tuple) else self.resize, "seed": self.seed,
            "positions": None if self.policy == "resize" else self.positions().tolist(),
            "aggregation": "mean",
            "steps": ("whole image resized to crop_size x crop_size (bilinear, antialiased), one crop" if self.policy == "resize"
                      else "RGB float32 [0, 255]; resize (bicubic, antialiased; int = short side) when set; upsample "
                           "(bicubic) when the short side < crop_size; offset = round(position * (side - crop_size)), "
                           "half to even; mean of the crop scores"),
        }

    # -------------------------------------------------------------------------------------------------------- positions
    def positions(self) -> np.ndarray:
        """[n, 2] float64 fractions (fy, fx) in [0, 1] of the free range of each side."""
        n = self.num_crops
        if self.policy == "resize":
            return np.zeros((1, 2))
        if self.policy == "random":
            return np.random.default_rng(self.seed).random((n, 2))
        rows, cols, cells = grid_layout(n)
        fy = np.full(rows, 0.5) if rows == 1 else np.arange(rows) / (rows - 1)
        fx = np.full(cols, 0.5) if cols == 1 else np.arange(cols) / (cols - 1)
        cells = np.asarray(cells)
        return np.stack([fy[cells // cols], fx[cells % cols]], axis=1)

    def offsets(self, height: int, width: int) -> np.ndarray:
        """[n, 2] int (top, left) of every crop in a prepared (resized, upsampled) image of this size (plain Python)."""
        p = self.positions()
        free = np.asarray([height - self.crop_size, width - self.crop_size], np.float64)
        return np.round(p * free).astype(np.int64)

    def prepared_size(self, height: int, width: int) -> tuple[int, int]:
        """Size of the image the crops are taken from (after steps 3 and 4)."""
        h, w = resized_size(height, width, self.resize)
        return upsampled_size(h, w, self.crop_size)

    def resize_target(self, height: int, width: int) -> Optional[tuple[int, int]]:
        """(h, w) the whole image is resized to (step 2 or 3), None when the crops are taken at the image's own scale.
        What `data_pipeline.images.load_image(resize_target=...)` needs to decode a huge JPEG at reduced size."""
        if self.policy == "resize":
            return self.crop_size, self.crop_size
        return None if self.resize is None else resized_size(height, width, self.resize)

    # ------------------------------------------------------------------------------------------------------ graph ops
    def prepare(self, image):
        """Steps 1, 3, 4: float32 [H', W', 3] tensor the crops are taken from (graph-safe)."""
        import tensorflow as tf

        img = _float_unless_resized(image, self.resize is not None)
        return ensure_min_side(tf.cast(resize_image(img, self.resize), tf.float32), self.crop_size)

    def crops(self, image):
        """The crops of ONE image: uint8 or float [H, W, 3] (values in [0, 255]) -> float32 [n, c, c, 3]. Graph-safe."""
        import tensorflow as tf

        c = self.crop_size
        if self.policy == "resize":
            img = tf.image.resize(_float_unless_resized(image, True), [c, c], method="bilinear", antialias=True)
            return tf.ensure_shape(tf.clip_by_value(img, 0.0, 255.0)[None], [1, c, c, 3])
        img = self.prepare(image)
        shape = tf.shape(img)
        free = tf.cast(tf.stack([shape[0] - c, shape[1] - c]), tf.float64)
        offs = tf.cast(tf.round(tf.constant(self.positions(), tf.float64) * free[None]), tf.int32)  # [n, 2]
        return tf.ensure_shape(extract_crops(img, offs[:, 0], offs[:, 1], c), [self.num_crops, c, c, 3])

    def fixed_size_crops(self, image, height: int, width: int):
        """`crops` for an image whose size (height, width) is known when the graph is built, with static ops only
        (resizes as constant matrices, crops as constant slices): what the whole-photo TFLite model runs. Same pixels as
        `crops` up to float32 summation order."""
        import tensorflow as tf

        c = self.crop_size
        img = tf.cast(tf.reshape(image, [height, width, 3]), tf.float32)
        if self.policy == "resize":
            return _matrix_resize(img, (height, width), (c, c), "bilinear", True)[None]
        h, w = resized_size(height, width, self.resize)
        if (h, w) != (height, width) or self.resize is not None:
            img = _matrix_resize(img, (height, width), (h, w), "bicubic", True)
        h2, w2 = upsampled_size(h, w, c)
        if (h2, w2) != (h, w):
            img = _matrix_resize(img, (h, w), (h2, w2), "bicubic", False)
        return tf.stack([img[int(y):int(y) + c, int(x):int(x) + c] for y, x in self.offsets(h2, w2)])

    @staticmethod
    def image_score(crop_scores):
        """Image scores from crop scores [..., n] (numpy or tf): their mean over the last axis."""
        import tensorflow as tf

        if isinstance(crop_scores, np.ndarray):
            return np.asarray(crop_scores, np.float64).mean(axis=-1)

        return tf.reduce_mean(tf.cast(crop_scores, tf.float32), axis=-1)

    def crops_array(self, image: np.ndarray) -> np.ndarray:
        """`crops` of a uint8 [H, W, 3] numpy image as a float32 numpy array. Crops at the image's own scale (no resize,
        no upsampling) are sliced from the array (the same pixels, no copy of the image); others run `crop_function`."""
        h, w = image.shape[:2]
        if self.policy == "resize" or self.resize is not None or min(h, w) < self.crop_size:
            import tensorflow as tf

            return np.asarray(self.crop_function()(tf.constant(image)))
        c = self.crop_size
        return np.stack([image[y:y + c, x:x + c] for y, x in self.offsets(h, w)]).astype(np.float32)

    def crop_function(self):
        """A cached `tf.function` uint8 [H, W, 3] -> crops [n, c, c, 3] (traced once per contract)."""
        return _crop_function(self)


def _float_unless_resized(image, resized: bool):
    """Step 1. A uint8 image about to be resized stays uint8: `tf.image.resize` gives the same float32 values from it
    as from its float32 copy, without holding that copy (4 bytes per value) of a large photo."""
    import tensorflow as tf

    image = tf.convert_to_tensor(image)
    return image if resized and image.dtype == tf.uint8 else tf.cast(image, tf.float32)


def resize_matrix(size_in: int, size_out: int, method: str, antialias: bool) -> np.ndarray:
    """[size_out, size_in] float32 matrix of `tf.image.resize` along one axis (the resize is separable): row i holds the
    weights of output pixel i."""
    import tensorflow as tf

    with tf.init_scope():  # eager even while a graph is being traced: the matrix is a constant of that graph
        eye = tf.eye(size_in, dtype=tf.float32)[:, None, :]  # [in, 1, in]: channel k is the unit impulse at k
        out = tf.image.resize(eye, [size_out, 1], method=method, antialias=antialias)  # [out, 1, in]
        return out.numpy()[:, 0, :]


def _matrix_resize(img, size_in, size_out, method: str, antialias: bool):
    """tf.image.resize of a float32 [H, W, 3] image of static size as two constant matrix products, clipped to [0, 255]."""
    import tensorflow as tf

    (h, w), (p, q) = size_in, size_out
    my = tf.constant(resize_matrix(h, p, method, antialias))  # [p, h]
    mx = tf.constant(resize_matrix(w, q, method, antialias))  # [q, w]
    x = tf.reshape(tf.matmul(my, tf.reshape(img, [h, w * 3])), [p, w, 3])
    x = tf.reshape(tf.transpose(x, [1, 0, 2]), [w, p * 3])
    x = tf.transpose(tf.reshape(tf.matmul(mx, x), [q, p, 3]), [1, 0, 2])
    return tf.clip_by_value(x, 0.0, 255.0)


def scale_to_photo_size(image, photo_size) -> np.ndarray:
    """A uint8 [H, W, 3] image scaled (Pillow bilinear) to the (h, w) a whole-photo model takes; unchanged when it
    already has that size. What `keras-iqa score` and the photo parity report do before a whole-photo TFLite call."""
    h, w = (int(v) for v in photo_size)
    image = np.asarray(image, np.uint8)
    if image.shape[:2] == (h, w):
        return image
    return np.asarray(Image.fromarray(image).resize((w, h), Image.Resampling.BILINEAR))


@functools.lru_cache(maxsize=32)
def _crop_function(contract: TestTimeCrops):
    import tensorflow as tf

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)], reduce_retracing=True)
    def fn(image):
        return contract.crops(image)

    return fn
