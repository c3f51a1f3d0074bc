"""tf.data readers of prepared datasets (Model Garden style: a Decoder parses records, a Parser applies train/eval transforms).

`RecordReader(data_dir, split="split_00", subset="train")` reads `<data_dir>/records-*.tfrecord` filtered by a column of
`splits.csv`, and builds:

- `train_dataset`: one random `crop_size` crop + horizontal flip per image (optional resize first), batched;
- `eval_dataset`: one element per image: the crops of the test-time contract (`data_pipeline.test_time`);
- `reqa_microbatches`: batches of 5*M images, each consecutive group of 5 holding one image per quality bin, low to high
  (REQA paper Sec. III-C-1: "five quality scales" = the ACR bins Bad/Poor/Fair/Good/Excellent of a 0-100 scale);
- `metaiqa_tasks`: one task per distortion type, support/query split 80/20 (MetaIQA Sec. 3.1);
- `pair_dataset`: (distorted, reference) with the SAME random crop and flip (HCL curriculum 1);
- `multi_dataset(readers, ...)`: batches from several datasets, each batch from one dataset and tagged with its id (HCL curriculum 2).

Images are float32 RGB in [0, 255]; models normalise inside themselves. Decoding follows the ONE decode policy
(`data_pipeline.images.decode_image_tensor`). For a JPEG record and a plain random crop, only the crop window is decoded
(`tf.image.decode_and_crop_jpeg` on the window plus a 4-pixel border, ~1.8x faster here); it yields the same pixels as
full decode + crop (tested; a bare window differs at its edges on chroma-subsampled JPEGs). Other formats,
resize-first transforms and images smaller than the crop take the full-decode path (images smaller than the crop are
upsampled, bicubic, short side = crop, as the decode policy says).

A record that cannot be parsed or decoded is skipped and counted in `reader.bad_records`, never fatal.
"""

from __future__ import annotations

import json
import logging
from typing import Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from data_pipeline import layout, schema
from data_pipeline.beam.writer import IMAGE_FIELDS
from data_pipeline.images import DEFAULT_POLICY, DecodePolicy, try_decode_image_tensor
from data_pipeline.layout import SIDECAR
from data_pipeline.test_time import TestTimeCrops
from data_pipeline.test_time import ensure_min_side as _ensure_min_side
from data_pipeline.test_time import resize_image as _resize_image

logger = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE
TARGETS = ("mos", "normalized", "normalized100", "pseudo")
JPEG_MARGIN = 4  # pixels decoded around a JPEG crop window (see RecordReader._decode_random_crop)
ACR_LABELS = ("bad", "poor", "fair", "good", "excellent")
Resize = Union[None, int, Sequence[int]]  # as data_pipeline.test_time.Resize


def _flag(*xs):
    """The trailing ok/keep flag of an element (for `filter`)."""
    return xs[-1]


def _without_flag(*xs):
    """The element without its trailing flag."""
    return xs[0] if len(xs) == 2 else tuple(xs[:-1])


def acr_bins(scores_0_100: np.ndarray) -> np.ndarray:
    """ACR bin 0..4 (Bad 0-20, Poor 20-40, Fair 40-60, Good 60-80, Excellent 80-100) of scores on 0-100, higher = better."""
    return np.clip(np.floor(np.asarray(scores_0_100, dtype=np.float64) / 20.0), 0, 4).astype(np.int64)


def quantile_bins(scores: np.ndarray, n: int = 5) -> np.ndarray:
    """Bin 0..n-1 by the score quantiles (equal-count bins)."""
    s = np.asarray(scores, dtype=np.float64)
    edges = np.quantile(s, np.arange(1, n) / n)
    return np.searchsorted(edges, s, side="right").astype(np.int64)


def nearest_nonempty(counts: Sequence[int]) -> list[int]:
    """For each bin, itself if non-empty, else the nearest non-empty bin (ties: the lower bin)."""
    full = [k for k, c in enumerate(counts) if c > 0]
    if not full:
        raise ValueError("every quality bin is empty: no image with a score in this subset")
    return [k if counts[k] > 0 else min(full, key=lambda j: (abs(j - k), j)) for k in range(len(counts))]


def _offsets(seed, limit_h, limit_w, n=None):
    """Uniform crop offsets in [0, limit] (stateless, from a [2] int64 seed)."""
    shape = [] if n is None else [n]
    limit_h, limit_w = tf.cast(limit_h, tf.int32), tf.cast(limit_w, tf.int32)
    oy = tf.random.stateless_uniform(shape, seed, 0, limit_h + 1, dtype=tf.int32)
    ox = tf.random.stateless_uniform(shape, seed + tf.constant([0, 1], tf.int64), 0, limit_w + 1, dtype=tf.int32)
    return oy, ox


class RecordReader:
    """Reads one prepared dataset (`keras-iqa prepare` output).

    Args:
        data_dir: directory with `manifest.json`, `records-*.tfrecord`, `splits.csv`.
        split: column of `splits.csv` (`split_00` .. or `official`).
        subset: keep images whose `split` value equals this (`train`, `test`, `validation`); None = all images.
        target: `mos` (native scale), `normalized` ([0, 1], higher = better), `normalized100` (0-100, higher = better;
            REQA's scale) or `pseudo` (full-reference pseudo-label, named by `manifest["pseudo_label"]`);
            None: no targets (pair records without scores, `pair_dataset()` only).
        policy: the decode policy (size limits) applied after decoding.
        shuffle_buffer: records held for shuffling (encoded bytes, not pixels).
        jpeg_crop_window: decode only the crop window of JPEG records for random crops (same pixels, faster); False
            decodes whole images (benchmarks).

    Example:
        >>> import tempfile
        >>> from data_pipeline.fixtures import write_tiny_records
        >>> data_dir = tempfile.mkdtemp()  # a tiny prepared dataset; a real one comes from `keras-iqa prepare`
        >>> write_tiny_records(data_dir, kind="authentic", n=20)["count"]
        20
        >>> reader = RecordReader(data_dir, split="split_00", subset="train", target="normalized100")
        >>> images, targets = next(iter(reader.train_dataset(4, crop_size=32)))
        >>> tuple(images.shape), images.dtype.name, tuple(targets.shape), targets.dtype.name
        ((4, 32, 32, 3), 'float32', (4,), 'float32')
        >>> # training: model.fit(reader.train_dataset(16, repeat=True), steps_per_epoch=reader.count // 16, epochs=40)
    """

    def __init__(self, data_dir: str, split: str = "split_00", subset: Optional[str] = None, target: str = "mos",
                 policy: DecodePolicy = DEFAULT_POLICY, shuffle_buffer: int = 1024, jpeg_crop_window: bool = True):
        if target is not None and target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS} (or None: no targets, pair_dataset only), got {target!r}")
        self.data_dir = data_dir
        self.manifest = layout.load_manifest(data_dir, required=("kind", "score_range", "higher_better"))
        self.kind = self.manifest["kind"]
        if self.kind not in schema.KINDS:
            raise ValueError(f"{layout.manifest_path(data_dir)}: unknown record kind {self.kind!r}")
        if target == "pseudo" and not self.manifest.get("pseudo_label"):
            raise ValueError(f"{data_dir}: target='pseudo' but the manifest names no pseudo-label (pseudo_label is null)")
        stats = self.manifest.get("statistics") or {}
        if target not in ("pseudo", None) and "mos_min" in stats and stats["mos_min"] is None:
            hint = (f"use target='pseudo' (its records carry {self.manifest['pseudo_label']!r} pseudo-labels)"
                    if self.manifest.get("pseudo_label") else "prepare it with scores")
            raise ValueError(f"{data_dir}: no record of this {self.kind} dataset carries a MOS, so target={target!r} would "
                             f"give NaN targets; {hint}, or target=None with pair_dataset()")
        self.split, self.subset, self.target, self.policy = split, subset, target, policy
        self.score_range = tuple(self.manifest["score_range"])
        self.higher_better = bool(self.manifest["higher_better"])
        self.shuffle_buffer = int(shuffle_buffer)
        self.jpeg_crop_window = bool(jpeg_crop_window)
        self.files = layout.shard_files(data_dir, self.manifest)
        self.ids: Optional[list[str]] = None
        if subset is not None:
            self.ids = layout.ids_for(layout.splits_path(data_dir), split, subset)
            if not self.ids:
                raise ValueError(f"{layout.splits_path(data_dir)}: no image has {split} == {subset!r}")
        self.count = len(self.ids) if self.ids is not None else int(self.manifest["count"])
        self._index_cache = None
        self._seen = tf.Variable(0, dtype=tf.int64, trainable=False, name="records_seen")
        self._good = tf.Variable(0, dtype=tf.int64, trainable=False, name="records_ok")
        self._spec = schema.feature_spec(self.kind)

    # ------------------------------------------------------------------------------------------------------------- counting
    @property
    def bad_records(self) -> int:
        """Records skipped because they could not be parsed or decoded (exact once iteration stops; records being decoded
        at the moment of the call count as bad until they finish)."""
        return int(self._seen.numpy() - self._good.numpy())

    def verify_shards(self) -> list[str]:
        """Shard files whose sha256 differs from the manifest (a corrupt shard's stream ends at the first bad record: CRC
        errors cannot be attributed to records, so they are not in `bad_records`; check here, re-run prepare to repair)."""
        from data_pipeline.beam.writer import sha256_file

        return [f for f, s in zip(self.files, self.manifest.get("shards") or []) if sha256_file(f) != s.get("sha256")]

    def steps_per_epoch(self, batch_size: int) -> int:
        return max(1, self.count // batch_size)

    # ---------------------------------------------------------------------------------------------------------- the index
    def index(self) -> dict:
        """Per-image facts of this subset as numpy arrays: id, mos, normalized, type, type_name, reference, level.

        Read from the shard sidecars the writer leaves (fast), else by scanning the records' small features.
        """
        if self._index_cache is not None:
            return self._index_cache
        rows = self._index_from_sidecars()
        if rows is None:
            rows = self._index_from_records()
        idx = {k: np.asarray([r[k] for r in rows]) for k in ("id", "mos", "normalized", "type", "type_name", "reference", "level")}
        if self.ids is not None:
            keep = np.isin(idx["id"], np.asarray(self.ids))
            idx = {k: v[keep] for k, v in idx.items()}
        idx["mos"] = idx["mos"].astype(np.float64)
        idx["normalized"] = idx["normalized"].astype(np.float64)
        self._index_cache = idx
        return idx

    def _index_from_sidecars(self):
        out = []
        for f in self.files:
            p = f + SIDECAR
            if not tf.io.gfile.exists(p):
                return None
            with tf.io.gfile.GFile(p) as fh:
                meta = json.load(fh)
            fields = meta.get("image_fields", list(IMAGE_FIELDS))
            for im in meta["images"]:
                d = dict(zip(fields, im))
                out.append({"id": d["id"], "mos": np.nan if d["mos"] is None else d["mos"],
                            "normalized": np.nan if d["normalized"] is None else d["normalized"],
                            "type": d.get("type", -1), "type_name": d.get("type_name", ""), "reference": d.get("reference", ""),
                            "level": d.get("level", -1)})
        return out

    def _index_from_records(self):
        spec = {k: self._spec[k] for k in ("image/id", "score/mos", "score/normalized")}
        if self.kind != "authentic":
            spec.update({k: self._spec[k] for k in ("distortion/type", "distortion/name", "reference/id", "distortion/level")})
        ds = tf.data.TFRecordDataset(self.files).ignore_errors().batch(512)
        ds = ds.map(lambda x: tf.io.parse_example(x, spec)).ignore_errors()
        out = []
        for b in ds.as_numpy_iterator():
            n = len(b["image/id"])
            for i in range(n):
                out.append({"id": b["image/id"][i].decode(), "mos": b["score/mos"][i], "normalized": b["score/normalized"][i],
                            "type": int(b["distortion/type"][i]) if "distortion/type" in b else -1,
                            "type_name": b["distortion/name"][i].decode() if "distortion/name" in b else "",
                            "reference": b["reference/id"][i].decode() if "reference/id" in b else "",
                            "level": int(b["distortion/level"][i]) if "distortion/level" in b else -1})
        return out

    # ------------------------------------------------------------------------------------------------------------ decoding
    def _target(self, p):
        if self.target is None:
            raise ValueError(f"{self.data_dir}: this reader was opened with target=None (no targets): only pair_dataset() works")
        if self.target == "mos":
            return p["score/mos"]
        if self.target == "normalized":
            return p["score/normalized"]
        if self.target == "normalized100":
            return p["score/normalized"] * 100.0
        return p["score/pseudo"]

    def _records(self, ids: Optional[Sequence[str]], shuffle: bool, repeat: bool, seed: Optional[int]):
        """Serialized records of `ids` (None = all), shuffled/repeated, each zipped with a [2] int64 stateless seed."""
        files = list(self.files)
        if shuffle:
            np.random.default_rng(seed).shuffle(files)
        ds = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), 8) if len(files) > 1 else None)
        ds = ds.ignore_errors()  # a corrupt shard (CRC) ends that shard's stream, not the run
        if ids is not None:
            table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(list(ids), tf.string), tf.ones([len(ids)], tf.int64)), 0)
            seen, good = self._seen, self._good

            def keep(x):
                with tf.control_dependencies([seen.assign_add(1)]):
                    image_id = tf.io.parse_single_example(x, {"image/id": self._spec["image/id"]})["image/id"]
                    k = table.lookup(image_id) > 0
                with tf.control_dependencies([k]):
                    # a filtered-out record is done here (counted good); a kept one is counted again by the decode stage
                    done = good.assign_add(1)
                with tf.control_dependencies([done]):
                    return x, tf.identity(k)

            ds = ds.map(keep, num_parallel_calls=AUTOTUNE).ignore_errors().filter(_flag).map(_without_flag)
        if shuffle:
            ds = ds.shuffle(min(self.shuffle_buffer, max(1, len(ids) if ids is not None else self.count)), seed=seed,
                            reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        rnd = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        return tf.data.Dataset.zip((ds, rnd))

    def _counted(self, fn):
        """Wraps a decode function `(serialized, seed) -> (..., ok)`: counts it, so failures (exceptions or ok=False) are
        `seen - good`."""
        seen, good = self._seen, self._good

        def wrapped(x, rnd):
            with tf.control_dependencies([seen.assign_add(1)]):
                out = fn(tf.identity(x), rnd)
            ok = out[-1]
            with tf.control_dependencies(tf.nest.flatten(out)):
                inc = good.assign_add(tf.cast(ok, tf.int64))
            with tf.control_dependencies([inc]):
                return tuple(tf.identity(t) for t in out)

        return wrapped

    def _fast_crop_ok(self, resize) -> bool:
        return self.jpeg_crop_window and resize is None and not self.policy.max_long_side and not self.policy.min_short_side

    def _decode_random_crop(self, encoded, h, w, seed, crop: int, resize: Resize, flip: bool):
        """One random crop (+flip) as float32 [crop, crop, 3] and ok; JPEG crop-window decoding where it applies."""
        is_jpeg = tf.equal(tf.strings.substr(encoded, 0, 2), b"\xff\xd8")
        h, w = tf.cast(h, tf.int32), tf.cast(w, tf.int32)

        def full():
            img, ok = try_decode_image_tensor(encoded, self.policy)
            img = _resize_image(tf.cast(img, tf.float32), resize)
            img = _ensure_min_side(img, crop)
            shape = tf.shape(img)
            oy, ox = _offsets(seed, shape[0] - crop, shape[1] - crop)
            return tf.slice(img, [oy, ox, 0], [crop, crop, 3]), ok

        if self._fast_crop_ok(resize):
            def fast():
                # Decode the window plus a JPEG_MARGIN border: libjpeg's fancy chroma upsampling treats a window edge as an
                # image edge, so the border pixels of a bare crop window differ (up to ~8 levels on 4:2:0 JPEGs) from full
                # decode + crop; with the margin the kept pixels are identical (tested).
                oy, ox = _offsets(seed, h - crop, w - crop)
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

    def _parse(self, x):
        return tf.io.parse_single_example(x, self._spec)

    def _options(self, deterministic: bool):
        opts = tf.data.Options()
        opts.deterministic = deterministic
        opts.experimental_optimization.map_parallelization = True
        return opts

    def _train_images(self, ids, crop_size, resize, flip, shuffle, seed, repeat):
        """Unbatched (image, target) stream of `ids`."""

        def decode(x, rnd):
            p = self._parse(x)
            img, ok = self._decode_random_crop(p["image/encoded"], p["image/height"], p["image/width"], rnd, crop_size, resize, flip)
            y = tf.cast(self._target(p), tf.float32)
            return img, y, ok & tf.logical_not(tf.math.is_nan(y))

        ds = self._records(ids, shuffle, repeat, seed)
        ds = ds.map(self._counted(decode), num_parallel_calls=AUTOTUNE).ignore_errors()
        return ds.filter(_flag).map(_without_flag)

    # ---------------------------------------------------------------------------------------------------------- datasets
    def train_dataset(self, batch_size: int, crop_size: int = 224, resize: Resize = None, flip: bool = True,
                      shuffle: bool = True, seed: Optional[int] = None, repeat: bool = False, drop_remainder: bool = True):
        """Batches of (images float32 [B, c, c, 3] in [0, 255], targets float32 [B]): one random crop (+ flip) per image.

        Args:
            resize: None, (h, w) (e.g. KonIQ (384, 512)) or an int short side (e.g. SPAQ 512), applied before cropping.
            seed: None = non-deterministic; an int makes order, crops and flips reproducible (deterministic tf.data).
            repeat: repeat forever (use `steps_per_epoch`); records with a NaN target are skipped.
        """
        ds = self._train_images(self.ids, crop_size, resize, flip, shuffle, seed, repeat)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE).with_options(self._options(seed is not None))

    def eval_dataset(self, num_crops: int = 25, crop_size: int = 224, mode: str = "random", seed: int = 0,
                     resize: Resize = None, contract: Optional[TestTimeCrops] = None):
        """One element per image, in record order: (crops float32 [N, c, c, 3], target scalar, image_id string).

        The crops are the test-time contract's (`data_pipeline.test_time.TestTimeCrops`): pass `contract`, or its fields
        `num_crops`, `crop_size`, `mode` (policy: `random` = seeded positions shared by every image, `grid`, `resize` =
        whole image to c x c, N = 1), `resize` (applied before cropping) and `seed`.
        """
        if contract is None:
            contract = TestTimeCrops(crop_size=crop_size, num_crops=num_crops, policy=mode, resize=resize, seed=seed)
        n, c = contract.num_crops, contract.crop_size

        def decode(x, rnd):
            p = self._parse(x)
            img, ok = try_decode_image_tensor(p["image/encoded"], self.policy)
            crops = tf.ensure_shape(contract.crops(img), [n, c, c, 3])
            return crops, tf.cast(self._target(p), tf.float32), p["image/id"], ok

        ds = self._records(self.ids, shuffle=False, repeat=False, seed=0)
        ds = ds.map(self._counted(decode), num_parallel_calls=AUTOTUNE).ignore_errors()
        ds = ds.filter(_flag).map(_without_flag)
        return ds.prefetch(AUTOTUNE).with_options(self._options(True))

    def reqa_microbatches(self, micro_batches: int = 3, crop_size: int = 224, bins: str = "acr", seed: Optional[int] = None,
                          resize: Resize = None, flip: bool = True, epoch: str = "balanced"):
        """Infinite batches of (images [5M, c, c, 3], targets [5M]) for REQA's coarse loss: each consecutive group of 5
        images (a micro-batch) spans five quality levels, low to high (REQA Sec. III-C-1: "a predicted image and four anchors
        are sampled from five different quality scales").

        Two samplers (`epoch`):

        - "balanced" (default; the paper's five quality scales): images 5m..5m+4 come from bins 0..4. Bins: `acr` = ACR bins
          of the score mapped to 0-100, higher = better (`score/normalized` * 100, i.e. from the dataset's declared range
          and direction); `quantile` = five equal-count bins of that score. Each bin is its own shuffled, repeated stream,
          zipped (no Python loop per element), so **every bin is exactly 1/5 of every batch whatever its size**: a bin
          holding n_k of the n training images is drawn at n/(5 n_k) times its share. Over an epoch of n // (5M) steps a
          bin with n_k images is visited about n / (5 n_k) times per image (a bin with 1 % of the images: 20 times per epoch;
          one with 50 %: 0.4 times, so most of its images are not seen in that epoch), i.e. an "epoch" is a number of steps,
          not one pass over the data, and the training distribution is flattened over the five bins. An empty bin is replaced by the nearest
          non-empty bin (ties: the lower one); `self.bin_counts` and `self.bin_sources` say what happened.
        - "pass": an epoch is ONE pass over the training images, each image once (shuffled; the last n % 5M images of a pass
          are dropped, different ones each pass). Each batch of 5M consecutive images is sorted by target and cut into five
          strata of M (its quintiles); micro-batch m takes one image of each stratum (randomly paired), low to high. Bins are
          then as frequent as in the data (`bins` only fills `bin_counts`), and the five images of a micro-batch are spread
          over the batch's quality range rather than over fixed ACR bins. Use `steps_per_epoch = n // (5M)`.
        """
        if bins not in ("acr", "quantile"):
            raise ValueError(f"bins must be 'acr' or 'quantile', got {bins!r}")
        if epoch not in ("balanced", "pass"):
            raise ValueError(f"epoch must be 'balanced' (each bin 1/5 of every batch) or 'pass' (each image once per "
                             f"epoch), got {epoch!r}")
        idx = self.index()
        valid = ~np.isnan(idx["normalized"])
        ids, q = idx["id"][valid], idx["normalized"][valid] * 100.0
        if len(ids) == 0:
            raise ValueError(f"{self.data_dir}: no image with a score in this subset; REQA micro-batches need scores")
        b = acr_bins(q) if bins == "acr" else quantile_bins(q)
        counts = [int((b == k).sum()) for k in range(5)]
        if epoch == "pass":
            return self._reqa_pass(ids.tolist(), counts, micro_batches, crop_size, seed, resize, flip)
        sources = nearest_nonempty(counts)
        self.bin_counts, self.bin_sources = counts, sources
        for k in range(5):
            if sources[k] != k:
                logger.warning("%s: quality bin %d (%s) is empty; drawing from bin %d instead", self.data_dir, k,
                               ACR_LABELS[k] if bins == "acr" else f"q{k}", sources[k])
        streams = []
        for k in range(5):
            s = None if seed is None else seed + 7919 * k
            streams.append(self._train_images(ids[b == sources[k]].tolist(), crop_size, resize, flip, True, s, True))

        def merge(*pairs):
            imgs = tf.stack([p[0] for p in pairs], axis=1)  # [M, 5, c, c, 3]
            ys = tf.stack([p[1] for p in pairs], axis=1)  # [M, 5]
            return tf.reshape(imgs, [-1, crop_size, crop_size, 3]), tf.reshape(ys, [-1])

        ds = tf.data.Dataset.zip(tuple(streams)).batch(micro_batches, drop_remainder=True)
        ds = ds.map(lambda *xs: merge(*xs), num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE).with_options(self._options(seed is not None))

    def _reqa_pass(self, ids, counts, micro_batches, crop_size, seed, resize, flip):
        """`reqa_microbatches(epoch="pass")`: one shuffled pass per epoch, batches regrouped by within-batch quintiles."""
        self.bin_counts, self.bin_sources = counts, list(range(5))
        n = 5 * micro_batches
        if len(ids) < n:
            raise ValueError(f"{self.data_dir}: {len(ids)} scored images, fewer than one batch of {n} (5 x {micro_batches})")
        base = tf.constant([0 if seed is None else int(seed), 104729], tf.int64)

        def regroup(i, imgs, ys):
            order = tf.argsort(ys, stable=True)  # low to high
            grid = tf.reshape(order, [5, micro_batches])  # row j = stratum j (the batch's j-th fifth)
            noise = tf.random.stateless_uniform([5, micro_batches], base + tf.stack([tf.constant(0, tf.int64), i]))
            grid = tf.gather(grid, tf.argsort(noise, axis=1), batch_dims=1)  # random pairing across strata
            pick = tf.reshape(tf.transpose(grid), [-1])  # micro-batch m = (stratum 0..4)[m]
            return tf.gather(imgs, pick), tf.gather(ys, pick)

        ds = self._train_images(ids, crop_size, resize, flip, True, seed, False)
        ds = ds.batch(n, drop_remainder=True).repeat().enumerate()
        ds = ds.map(lambda i, xy: regroup(i, *xy), num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE).with_options(self._options(seed is not None))

    def metaiqa_tasks(self, support_fraction: float = 0.8, batch_size: int = 32, crop_size: int = 224, seed: int = 0,
                      query_mode: str = "crop", resize: Resize = None, flip: bool = True) -> list[dict]:
        """One task per distortion type (`distortion/type`), each split support/query (`support_fraction`, seeded per type).

        Returns a list of `{"type", "name", "support", "query", "support_count", "query_count", "support_ids", "query_ids"}`; `support` / `query` are finite
        datasets of (x [B, c, c, 3], y [B]) (last batch may be smaller). query_mode: `crop` = random crop + flip (paper) or
        `resize` = whole image resized to c x c, no flip (official code). Each dataset filters the shards by id, so one pass
        over a task reads every shard once (cost ~ number of tasks x dataset size per epoch).
        """
        if self.kind == "authentic":
            raise ValueError(f"{self.data_dir}: MetaIQA tasks need synthetic records with distortion/type; this is authentic")
        if not 0.0 < support_fraction < 1.0:
            raise ValueError(f"support_fraction must be in (0, 1), got {support_fraction}")
        if query_mode not in ("crop", "resize"):
            raise ValueError(f"query_mode must be crop|resize, got {query_mode!r}")
        idx = self.index()
        tasks = []
        for t in sorted(set(idx["type"].tolist())):
            sel = np.sort(idx["id"][idx["type"] == t])
            perm = np.random.default_rng([seed, int(t) & 0xFFFFFFFF]).permutation(len(sel))
            n_sup = min(max(int(round(support_fraction * len(sel))), 1), max(len(sel) - 1, 1))
            sup, qry = sel[perm[:n_sup]].tolist(), sel[perm[n_sup:]].tolist()
            names = idx["type_name"][idx["type"] == t]
            s_seed = seed * 1000 + int(t)
            support = self._train_images(sup, crop_size, resize, flip, True, s_seed, False).batch(batch_size)
            if query_mode == "crop":
                query = self._train_images(qry, crop_size, resize, flip, True, s_seed + 1, False) if qry else None
            else:
                query = self._resized_images(qry, crop_size) if qry else None
            tasks.append({"type": int(t), "name": str(names[0]) if len(names) else f"type{t}",
                          "support": support.prefetch(AUTOTUNE).with_options(self._options(True)),
                          "query": None if query is None else query.batch(batch_size).prefetch(AUTOTUNE).with_options(
                              self._options(True)),
                          "support_count": len(sup), "query_count": len(qry), "support_ids": sup, "query_ids": qry})
        return tasks

    def _resized_images(self, ids, crop_size: int = 224):
        whole = TestTimeCrops(crop_size=crop_size, num_crops=1, policy="resize")  # the whole image at crop_size

        def decode(x, rnd):
            p = self._parse(x)
            img, ok = try_decode_image_tensor(p["image/encoded"], self.policy)
            return whole.crops(img)[0], tf.cast(self._target(p), tf.float32), ok

        ds = self._records(ids, shuffle=False, repeat=False, seed=0)
        ds = ds.map(self._counted(decode), num_parallel_calls=AUTOTUNE).ignore_errors()
        return ds.filter(_flag).map(_without_flag)

    def pair_dataset(self, batch_size: int, crop_size: int = 224, seed: Optional[int] = None, flip: bool = True,
                     shuffle: bool = True, repeat: bool = False, drop_remainder: bool = True):
        """Batches of (distorted [B, c, c, 3], reference [B, c, c, 3]) float32 in [0, 255]: the SAME random crop and flip on
        both (HCL curriculum 1). Needs pair records (`reference/encoded`)."""
        if self.kind != "pair":
            raise ValueError(f"{self.data_dir}: pair_dataset needs pair records (kind 'pair'), this dataset is {self.kind!r}")

        def decode(x, rnd):
            p = self._parse(x)
            d, ok1 = try_decode_image_tensor(p["image/encoded"], self.policy)
            r, ok2 = try_decode_image_tensor(p["reference/encoded"], self.policy)
            d = _ensure_min_side(tf.cast(d, tf.float32), crop_size)
            r = _ensure_min_side(tf.cast(r, tf.float32), crop_size)
            shape = tf.minimum(tf.shape(d)[:2], tf.shape(r)[:2])
            oy, ox = _offsets(rnd, shape[0] - crop_size, shape[1] - crop_size)
            both = tf.stack([tf.slice(d, [oy, ox, 0], [crop_size, crop_size, 3]),
                             tf.slice(r, [oy, ox, 0], [crop_size, crop_size, 3])])
            if flip:
                do = tf.random.stateless_uniform([], rnd + tf.constant([0, 2], tf.int64)) < 0.5
                both = tf.cond(do, lambda: tf.reverse(both, axis=[2]), lambda: both)
            same = tf.reduce_all(tf.equal(tf.shape(d), tf.shape(r)))
            return (tf.ensure_shape(both[0], [crop_size, crop_size, 3]), tf.ensure_shape(both[1], [crop_size, crop_size, 3]),
                    ok1 & ok2 & same)

        ds = self._records(self.ids, shuffle, repeat, seed)
        ds = ds.map(self._counted(decode), num_parallel_calls=AUTOTUNE).ignore_errors()
        ds = ds.filter(_flag).map(_without_flag)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE).with_options(self._options(seed is not None))


def multi_dataset(readers: Sequence[RecordReader], batch_size: int, crop_size: int = 224, sampling: str = "proportional",
                  seed: Optional[int] = None, resize: Resize = None, flip: bool = True):
    """Infinite batches ((images [B, c, c, 3], dataset_id int32 [B]), targets [B]); every batch comes from ONE dataset.

    sampling: `proportional` (a dataset's batches drawn with probability ~ its image count) or `uniform`. Dataset ids are the
    readers' positions in `readers`.
    """
    if sampling not in ("proportional", "uniform"):
        raise ValueError(f"sampling must be proportional|uniform, got {sampling!r}")
    if not readers:
        raise ValueError("multi_dataset needs at least one reader")
    streams = []
    for i, r in enumerate(readers):
        s = None if seed is None else seed + 104729 * i
        ds = r.train_dataset(batch_size, crop_size=crop_size, resize=resize, flip=flip, seed=s, repeat=True)
        streams.append(ds.map(lambda x, y, i=i: ((x, tf.fill([tf.shape(x)[0]], tf.constant(i, tf.int32))), y)))
    counts = np.asarray([r.count for r in readers], dtype=np.float64)
    weights = (counts / counts.sum() if sampling == "proportional" else np.full(len(readers), 1.0 / len(readers))).tolist()
    ds = tf.data.Dataset.sample_from_datasets(streams, weights=weights, seed=seed)
    opts = tf.data.Options()
    opts.deterministic = seed is not None
    return ds.prefetch(AUTOTUNE).with_options(opts)
