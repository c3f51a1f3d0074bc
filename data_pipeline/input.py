"""tf.data readers of prepared datasets, in TF Model Garden's manner (`official/vision/dataloaders`).

`RecordReader(data_dir, split="split_00", subset="train")` reads `<data_dir>/records-*.tfrecord` filtered by a column of
`splits.csv`. It is composed of parts that each do one job (`data_pipeline.dataloaders`):

- `Decoder` (`dataloaders/decoder.py`): serialized tf.Example -> dict of tensors; the one place that knows feature keys;
- `Parser` (`dataloaders/parser.py`): train transforms (random crop, incl. the fast JPEG-window path, flip, resize), eval
  crops of the test-time contract (`data_pipeline.test_time`), pair crops, the target mapping;
- one sampler per method: `reqa_sampler` (5-image micro-batches over quality bins), `metaiqa_sampler` (support/query tasks
  per distortion type), `hcl_sampler` (distorted/reference pairs, `multi_dataset`).

The reader itself keeps the index, the shard checks (`data_pipeline.layout`), the record stream (id filter, shuffle,
repeat, one stateless seed per record), the bad-record counters and the tf.data options, and builds:

- `train_dataset`: one random `crop_size` crop + horizontal flip per image (optional resize first), batched;
- `eval_dataset`: one element per image: the crops of the test-time contract (`data_pipeline.test_time`);
- `reqa_microbatches`: batches of 5*M images, each consecutive group of 5 holding one image per quality bin, low to high
  (REQA paper Sec. III-C-1: "five quality scales" = the ACR bins Bad/Poor/Fair/Good/Excellent of a 0-100 scale);
- `metaiqa_tasks`: one task per distortion type, support/query split 80/20 (MetaIQA Sec. 3.1);
- `pair_dataset`: (distorted, reference) with the SAME random crop and flip (HCL curriculum 1);
- `multi_dataset(readers, ...)`: batches from several datasets, each batch from one dataset and tagged with its id (HCL curriculum 2).

Images are float32 RGB in [0, 255]; models normalise inside themselves. Decoding follows the ONE decode policy
(`data_pipeline.images.decode_image_tensor`); for a JPEG record and a plain random crop only the crop window is decoded
(same pixels as full decode + crop, see `dataloaders/parser.py`). Images smaller than the crop are upsampled (bicubic,
short side = crop).

A record that cannot be parsed or decoded is skipped and counted in `reader.bad_records`, never fatal.
"""

from __future__ import annotations

import json
import logging
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from data_pipeline import layout, schema
from data_pipeline.beam.writer import IMAGE_FIELDS, sha256_file
from data_pipeline.dataloaders import hcl_sampler, metaiqa_sampler, reqa_sampler
from data_pipeline.dataloaders.decoder import METADATA, Decoder
from data_pipeline.dataloaders.hcl_sampler import multi_dataset
from data_pipeline.dataloaders.parser import JPEG_MARGIN, TARGETS, Parser
from data_pipeline.dataloaders.parser import random_offsets as _offsets
from data_pipeline.dataloaders.reqa_sampler import ACR_LABELS, acr_bins, nearest_nonempty, quantile_bins
from data_pipeline.images import DEFAULT_POLICY, DecodePolicy
from data_pipeline.layout import SIDECAR
from data_pipeline.test_time import Resize, TestTimeCrops
from keras_iqa.caller import in_cli, setting

__all__ = ["RecordReader", "multi_dataset", "acr_bins", "quantile_bins", "nearest_nonempty", "ACR_LABELS", "TARGETS",
           "JPEG_MARGIN", "Resize"]

logger = logging.getLogger(__name__)
AUTOTUNE = tf.data.AUTOTUNE
#: index column -> decoded field (`Decoder`) it comes from when a shard has no sidecar.
_INDEX_FIELDS = {"id": "id", "mos": "mos", "normalized": "normalized", "type": "distortion_type",
                 "type_name": "distortion_name", "reference": "reference_id", "level": "distortion_level"}


def _flag(*xs):
    """The trailing ok/keep flag of an element (for `filter`)."""
    return xs[-1]


def _without_flag(*xs):
    """The element without its trailing flag."""
    return xs[0] if len(xs) == 2 else tuple(xs[:-1])


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
        target_key: how the caller's user sets `target`, for error hints (a task passes its config key, e.g. MetaIQA's
            `meta_target`; `keras_iqa.caller.setting` spells it as that command's flag on the command line).

    Attributes:
        decoder: the `Decoder` of this dataset's record kind; parser: the `Parser` (target, policy, crop path).

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
                 policy: DecodePolicy = DEFAULT_POLICY, shuffle_buffer: int = 1024, jpeg_crop_window: bool = True,
                 target_key: str = "target"):
        if target is not None and target not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS} (or None: no targets, pair_dataset only), got {target!r}")
        self.data_dir = data_dir
        self.manifest = layout.load_manifest(data_dir, required=("kind", "score_range", "higher_better"))
        self.kind = self.manifest["kind"]
        if self.kind not in schema.KINDS:
            raise ValueError(f"{layout.manifest_path(data_dir)}: unknown record kind {self.kind!r}")
        if target == "pseudo" and not self.manifest.get("pseudo_label"):
            raise ValueError(f"{data_dir}: {setting(target_key, 'pseudo')} but the manifest names no pseudo-label "
                             "(pseudo_label is null)")
        stats = self.manifest.get("statistics") or {}
        if target not in ("pseudo", None) and "mos_min" in stats and stats["mos_min"] is None:
            hint = (f"use {setting(target_key, 'pseudo')} (its records carry {self.manifest['pseudo_label']!r} "
                    "pseudo-labels)" if self.manifest.get("pseudo_label") else "prepare it with scores")
            other = "" if in_cli() else ", or target=None with pair_dataset()"
            raise ValueError(f"{data_dir}: no record of this {self.kind} dataset carries a MOS, so "
                             f"{setting(target_key, target)} would give NaN targets; {hint}{other}")
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
        self.decoder = Decoder(self.kind)
        self.parser = Parser(target, policy, jpeg_crop_window, source=str(data_dir))

    # ------------------------------------------------------------------------------------------------------------- counting
    @property
    def bad_records(self) -> int:
        """Records skipped because they could not be parsed or decoded (exact once iteration stops; records being decoded
        at the moment of the call count as bad until they finish)."""
        return int(self._seen.numpy() - self._good.numpy())

    def verify_shards(self) -> list[str]:
        """Shard files whose sha256 differs from the manifest (a corrupt shard's stream ends at the first bad record: CRC
        errors cannot be attributed to records, so they are not in `bad_records`; check here, re-run prepare to repair)."""
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
        idx = self._index_from_sidecars()
        if idx is None:
            cols = Decoder(self.kind, fields=METADATA).scan(self.files)
            idx = {k: cols[f] for k, f in _INDEX_FIELDS.items()}
        if self.ids is not None:
            keep = np.isin(idx["id"], np.asarray(self.ids))
            idx = {k: v[keep] for k, v in idx.items()}
        idx["mos"] = idx["mos"].astype(np.float64)
        idx["normalized"] = idx["normalized"].astype(np.float64)
        self._index_cache = idx
        return idx

    def _index_from_sidecars(self) -> Optional[dict]:
        rows = []
        for f in self.files:
            p = f + SIDECAR
            if not tf.io.gfile.exists(p):
                return None
            with tf.io.gfile.GFile(p) as fh:
                meta = json.load(fh)
            fields = meta.get("image_fields", list(IMAGE_FIELDS))
            for im in meta["images"]:
                d = dict(zip(fields, im))
                rows.append({"id": d["id"], "mos": np.nan if d["mos"] is None else d["mos"],
                             "normalized": np.nan if d["normalized"] is None else d["normalized"],
                             "type": d.get("type", -1), "type_name": d.get("type_name", ""),
                             "reference": d.get("reference", ""), "level": d.get("level", -1)})
        return {k: np.asarray([r[k] for r in rows]) for k in _INDEX_FIELDS}

    # ------------------------------------------------------------------------------------------------- the record stream
    def records(self, ids: Optional[Sequence[str]], shuffle: bool, repeat: bool, seed: Optional[int]):
        """Serialized records of `ids` (None = all), shuffled/repeated, each zipped with a [2] int64 stateless seed."""
        files = list(self.files)
        if shuffle:
            np.random.default_rng(seed).shuffle(files)
        ds = tf.data.TFRecordDataset(files, num_parallel_reads=min(len(files), 8) if len(files) > 1 else None)
        ds = ds.ignore_errors()  # a corrupt shard (CRC) ends that shard's stream, not the run
        if ids is not None:
            table = tf.lookup.StaticHashTable(
                tf.lookup.KeyValueTensorInitializer(tf.constant(list(ids), tf.string), tf.ones([len(ids)], tf.int64)), 0)
            seen, good, only_id = self._seen, self._good, Decoder(self.kind, fields=("id",))

            def keep(x):
                with tf.control_dependencies([seen.assign_add(1)]):
                    k = table.lookup(only_id.decode(x)["id"]) > 0
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

    def parsed(self, ids: Optional[Sequence[str]], fn: Callable, shuffle: bool = False, repeat: bool = False,
               seed: Optional[int] = 0):
        """Unbatched stream of `fn(decoded, seed)[:-1]` over `records(ids, ...)`: each record decoded by `self.decoder`,
        `fn` (a `Parser` transform) returns its element plus a trailing ok flag; records that raise or are not ok are
        counted in `bad_records` and dropped."""
        seen, good = self._seen, self._good

        def counted(x, rnd):
            with tf.control_dependencies([seen.assign_add(1)]):
                out = fn(self.decoder.decode(tf.identity(x)), rnd)
            ok = out[-1]
            with tf.control_dependencies(tf.nest.flatten(out)):
                inc = good.assign_add(tf.cast(ok, tf.int64))
            with tf.control_dependencies([inc]):
                return tuple(tf.identity(t) for t in out)

        ds = self.records(ids, shuffle, repeat, seed)
        ds = ds.map(counted, num_parallel_calls=AUTOTUNE).ignore_errors()
        return ds.filter(_flag).map(_without_flag)

    def train_images(self, ids: Optional[Sequence[str]], crop_size: int, resize: Resize = None, flip: bool = True,
                     shuffle: bool = True, seed: Optional[int] = None, repeat: bool = False):
        """Unbatched (image [c, c, 3], target) stream of `ids`: `Parser.parse_train_data` (records with a NaN target are
        skipped)."""
        return self.parsed(ids, lambda d, rnd: self.parser.parse_train_data(d, rnd, crop_size, resize, flip),
                           shuffle, repeat, seed)

    @staticmethod
    def options(deterministic: bool) -> tf.data.Options:
        """The tf.data options of every dataset built here (deterministic when seeded)."""
        opts = tf.data.Options()
        opts.deterministic = deterministic
        opts.experimental_optimization.map_parallelization = True
        return opts

    # ---------------------------------------------------------------------------------------------------------- datasets
    def train_dataset(self, batch_size: int, crop_size: int = 224, resize: Resize = None, flip: bool = True,
                      shuffle: bool = True, seed: Optional[int] = None, repeat: bool = False, drop_remainder: bool = True):
        """Batches of (images float32 [B, c, c, 3] in [0, 255], targets float32 [B]): one random crop (+ flip) per image.

        Args:
            resize: None, (h, w) (e.g. KonIQ (384, 512)) or an int short side (e.g. SPAQ 512), applied before cropping.
            seed: None = non-deterministic; an int makes order, crops and flips reproducible (deterministic tf.data).
            repeat: repeat forever (use `steps_per_epoch`); records with a NaN target are skipped.
        """
        ds = self.train_images(self.ids, crop_size, resize, flip, shuffle, seed, repeat)
        ds = ds.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE)
        return ds.prefetch(AUTOTUNE).with_options(self.options(seed is not None))

    def eval_dataset(self, num_crops: int = 25, crop_size: int = 224, mode: str = "random", seed: int = 0,
                     resize: Resize = None, contract: Optional[TestTimeCrops] = None):
        """One element per image, in record order: (crops float32 [N, c, c, 3], target scalar, image_id string).

        The crops are the test-time contract's (`data_pipeline.test_time.TestTimeCrops`): pass `contract`, or its fields
        `num_crops`, `crop_size`, `mode` (policy: `random` = seeded positions shared by every image, `grid`, `resize` =
        whole image to c x c, N = 1), `resize` (applied before cropping) and `seed`.
        """
        if contract is None:
            contract = TestTimeCrops(crop_size=crop_size, num_crops=num_crops, policy=mode, resize=resize, seed=seed)
        ds = self.parsed(self.ids, lambda d, rnd: self.parser.parse_eval_data(d, contract))
        return ds.prefetch(AUTOTUNE).with_options(self.options(True))

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
        return reqa_sampler.reqa_microbatches(self, micro_batches, crop_size, bins, seed, resize, flip, epoch)

    def metaiqa_tasks(self, support_fraction: float = 0.8, batch_size: int = 32, crop_size: int = 224, seed: int = 0,
                      query_mode: str = "crop", resize: Resize = None, flip: bool = True) -> list[dict]:
        """One task per distortion type (`distortion/type`), each split support/query (`support_fraction`, seeded per type).

        Returns a list of `{"type", "name", "support", "query", "support_count", "query_count", "support_ids", "query_ids"}`; `support` / `query` are finite
        datasets of (x [B, c, c, 3], y [B]) (last batch may be smaller). query_mode: `crop` = random crop + flip (paper) or
        `resize` = whole image resized to c x c, no flip (official code). Each dataset filters the shards by id, so one pass
        over a task reads every shard once (cost ~ number of tasks x dataset size per epoch).
        """
        return metaiqa_sampler.metaiqa_tasks(self, support_fraction, batch_size, crop_size, seed, query_mode, resize, flip)

    def pair_dataset(self, batch_size: int, crop_size: int = 224, seed: Optional[int] = None, flip: bool = True,
                     shuffle: bool = True, repeat: bool = False, drop_remainder: bool = True):
        """Batches of (distorted [B, c, c, 3], reference [B, c, c, 3]) float32 in [0, 255]: the SAME random crop and flip on
        both (HCL curriculum 1). Needs pair records (`reference/encoded`)."""
        return hcl_sampler.pair_dataset(self, batch_size, crop_size, seed, flip, shuffle, repeat, drop_remainder)
