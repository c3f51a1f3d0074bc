"""`Parser`: decoded records (`Decoder` output) -> model inputs and targets, train and eval transforms.

In TF Model Garden's manner (`official/vision/dataloaders/parser.py`: `_parse_train_data` / `_parse_eval_data`) one
object holds the per-record transforms; the reader and the samplers only arrange records into datasets. Every transform
takes a [2] int64 stateless seed (the reader zips one with each record), so the same seed gives the same crop and flip.

- train: one random `crop_size` crop (+ horizontal flip); optional resize first (the test-time contract's
  `resize_image`), images smaller than the crop upsampled (`ensure_min_side`). For a JPEG record and a plain random crop,
  only the crop window is decoded (`tf.image.decode_and_crop_jpeg` on the window plus a `JPEG_MARGIN` border, ~1.8x
  faster); it yields the same pixels as full decode + crop (tested; a bare window differs at its edges on
  chroma-subsampled JPEGs). Other formats, resize-first transforms and images smaller than the crop are fully decoded.
- eval: the crops of the test-time contract (`data_pipeline.test_time.TestTimeCrops.crops`), not re-implemented here.
- pair: the SAME random crop and flip on a distorted image and its reference (HCL curriculum 1).

Images are float32 RGB in [0, 255], decoded by the ONE decode policy (`data_pipeline.images.try_decode_image_tensor`);
every transform returns a trailing `ok` flag (False: undecodable, NaN target, mismatched pair) that the reader counts
and filters on.
"""

from __future__ import annotations

from typing import Optional

import tensorflow as tf

from data_pipeline.images import DEFAULT_POLICY, DecodePolicy, try_decode_image_tensor
from data_pipeline.test_time import Resize, TestTimeCrops, ensure_min_side, resize_image

#: target names: `mos` (native scale), `normalized` ([0, 1], higher = better), `normalized100` (0-100, higher = better),
#: `pseudo` (full-reference pseudo-label).
TARGETS = ("mos", "normalized", "normalized100", "pseudo")
JPEG_MARGIN = 4  # pixels decoded around a JPEG crop window (see Parser.random_crop)


def random_offsets(seed, limit_h, limit_w, n=None):
    """Uniform crop offsets in [0, limit] (stateless, from a [2] int64 seed)."""
    shape = [] if n is None else [n]
    limit_h, limit_w = tf.cast(limit_h, tf.int32), tf.cast(limit_w, tf.int32)
    oy = tf.random.stateless_uniform(shape, seed, 0, limit_h + 1, dtype=tf.int32)
    ox = tf.random.stateless_uniform(shape, seed + tf.constant([0, 1], tf.int64), 0, limit_w + 1, dtype=tf.int32)
    return oy, ox


class Parser:
    """Train / eval transforms and the target mapping of one dataset.

    Args:
        target: one of `TARGETS`, or None (no targets: `parse_pair_data` only).
        policy: the decode policy (size limits) applied after decoding.
        jpeg_crop_window: decode only the crop window of JPEG records for random crops (same pixels, faster).
        source: named in error messages (the dataset folder).

    Example:
        >>> import tensorflow as tf
        >>> from data_pipeline import fixtures, schema
        >>> from data_pipeline.dataloaders.decoder import Decoder
        >>> png = fixtures.encode(fixtures.content_image(0, (40, 50)), "png")
        >>> rec = schema.make_example("authentic", {"image/encoded": png, "image/height": 40, "image/width": 50,
        ...                                         "score/mos": 60.0, "score/normalized": 0.6})
        >>> decoded = Decoder("authentic").decode(rec.SerializeToString())
        >>> image, y, ok = Parser("normalized100").parse_train_data(decoded, tf.constant([0, 1], tf.int64), 32)
        >>> tuple(image.shape), round(float(y), 3), bool(ok)
        ((32, 32, 3), 60.0, True)
    """

    def __init__(self, target: Optional[str] = "mos", policy: DecodePolicy = DEFAULT_POLICY, jpeg_crop_window: bool = True,
                 source: str = "this dataset"):
        if target is not None and target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS} (or None: no targets, pair_dataset only), got {target!r}")
        self.target, self.policy, self.jpeg_crop_window, self.source = target, policy, bool(jpeg_crop_window), source

    # --------------------------------------------------------------------------------------------------------- targets
    def target_of(self, decoded):
        """The target of a decoded record (float32 as stored; NaN when the record has none)."""
        if self.target is None:
            raise ValueError(f"{self.source}: this reader was opened with target=None (no targets): only pair_dataset() works")
        if self.target == "mos":
            return decoded["mos"]
        if self.target == "normalized":
            return decoded["normalized"]
        if self.target == "normalized100":
            return decoded["normalized"] * 100.0
        return decoded["pseudo"]

    # ------------------------------------------------------------------------------------------------------ random crop
    def fast_crop_ok(self, resize: Resize) -> bool:
        """Whether random crops may decode only the JPEG window (no resize first, no policy size limits)."""
        return self.jpeg_crop_window and resize is None and not self.policy.max_long_side and not self.policy.min_short_side

    def random_crop(self, encoded, height, width, seed, crop: int, resize: Resize = None, flip: bool = True):
        """One random crop (+flip) of encoded bytes as float32 [crop, crop, 3] and ok; JPEG crop-window decoding where it
        applies (`height` / `width`: the record's declared size)."""
        is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 2), b"\xff\xd8")
        h, w = tf.cast(height, tf.int32), tf.cast(width, tf.int32)

        def full():
            img, ok = try_decode_image_tensor(encoded, self.policy)
            img = resize_image(tf.cast(img, tf.float32), resize)
            img = ensure_min_side(img, crop)
            shape = tf.shape(img)
            oy, ox = random_offsets(seed, shape[0] - crop, shape[1] - crop)
            return tf.slice(img, [oy, ox, 0], [crop, crop, 3]), ok

        if self.fast_crop_ok(resize):
            def fast():
                # Decode the window plus a JPEG_MARGIN border: libjpeg's fancy chroma upsampling treats a window edge as an
                # image edge, so the border pixels of a bare crop window differ (up to ~8 levels on 4:2:0 JPEGs) from full
                # decode + crop; with the margin the kept pixels are identical (tested).
                oy, ox = random_offsets(seed, h - crop, w - crop)
                y0, x0 = tf.maximum(oy - JPEG_MARGIN, 0), tf.maximum(ox - JPEG_MARGIN, 0)
                y1, x1 = tf.minimum(oy + crop + JPEG_MARGIN, h), tf.minimum(ox + crop + JPEG_MARGIN, w)
                win = tf.image.decode_and_crop_jpeg(encoded, tf.stack([y0, x0, y1 - y0, x1 - x0]), channels=3,
                                                   dct_method="INTEGER_ACCURATE")  # as decode_image_tensor (Pillow-exact)
                img = tf.slice(win, tf.stack([oy - y0, ox - x0, 0]), [crop, crop, 3])
                return tf.cast(img, tf.float32), tf.constant(True)

            img, ok = tf.cond(is_jpeg & (h >= crop) & (w >= crop), fast, full)
        else:
            img, ok = full()
        img = tf.ensure_shape(img, [crop, crop, 3])
        if flip:
            img = tf.image.stateless_random_flip_left_right(img, seed + tf.constant([0, 2], tf.int64))
        return img, ok

    # ------------------------------------------------------------------------------------------------------- transforms
    def parse_train_data(self, decoded, seed, crop_size: int, resize: Resize = None, flip: bool = True):
        """(image [c, c, 3], target, ok): one random crop (+flip); ok is False for an undecodable image or a NaN target."""
        img, ok = self.random_crop(decoded["encoded"], decoded["height"], decoded["width"], seed, crop_size, resize, flip)
        y = tf.cast(self.target_of(decoded), tf.float32)
        return img, y, ok & tf.logical_not(tf.math.is_nan(y))

    def parse_eval_data(self, decoded, contract: TestTimeCrops):
        """(crops [n, c, c, 3], target, image_id, ok): the test-time contract's crops of the whole image."""
        n, c = contract.num_crops, contract.crop_size
        img, ok = try_decode_image_tensor(decoded["encoded"], self.policy)
        crops = tf.ensure_shape(contract.crops(img), [n, c, c, 3])
        return crops, tf.cast(self.target_of(decoded), tf.float32), decoded["id"], ok

    def parse_resized_data(self, decoded, crop_size: int):
        """(image [c, c, 3], target, ok): the whole image resized to c x c (the contract's "resize" policy; MetaIQA's
        official query transform)."""
        whole = TestTimeCrops(crop_size=crop_size, num_crops=1, policy="resize")
        img, ok = try_decode_image_tensor(decoded["encoded"], self.policy)
        return whole.crops(img)[0], tf.cast(self.target_of(decoded), tf.float32), ok

    def parse_pair_data(self, decoded, seed, crop_size: int, flip: bool = True):
        """(distorted [c, c, 3], reference [c, c, 3], ok): the SAME random crop and flip on both; ok is False when either
        is undecodable or their sizes differ."""
        d, ok1 = try_decode_image_tensor(decoded["encoded"], self.policy)
        r, ok2 = try_decode_image_tensor(decoded["reference_encoded"], self.policy)
        d = ensure_min_side(tf.cast(d, tf.float32), crop_size)
        r = ensure_min_side(tf.cast(r, tf.float32), crop_size)
        shape = tf.minimum(tf.shape(d)[:2], tf.shape(r)[:2])
        oy, ox = random_offsets(seed, shape[0] - crop_size, shape[1] - crop_size)
        both = tf.stack([tf.slice(d, [oy, ox, 0], [crop_size, crop_size, 3]),
                         tf.slice(r, [oy, ox, 0], [crop_size, crop_size, 3])])
        if flip:
            do = tf.random.stateless_uniform([], seed + tf.constant([0, 2], tf.int64)) < 0.5
            both = tf.cond(do, lambda: tf.reverse(both, axis=[2]), lambda: both)
        same = tf.reduce_all(tf.equal(tf.shape(d), tf.shape(r)))
        return (tf.ensure_shape(both[0], [crop_size, crop_size, 3]), tf.ensure_shape(both[1], [crop_size, crop_size, 3]),
                ok1 & ok2 & same)
