"""Beam pipeline `synthesize`: pristine photos -> distorted images (25 KADID types x 5 levels) as two prepared datasets.

- ``<out>/<name>``: kind "synthetic" — one record per distorted image (lossless PNG) with ``distortion/type``,
  ``distortion/name``, ``distortion/level``, ``reference/id``; ``score/mos`` is NaN (no human score exists) and, with
  ``pseudo_label="ssim"|"ms-ssim"``, ``score/pseudo`` holds the full-reference score of the distorted image against its
  reference (metric named in the manifest's ``pseudo_label``).
- ``<out>/<name>_pairs``: kind "pair" — the same records plus ``reference/encoded`` (the reference's stored bytes).

Both are written by :func:`data_pipeline.beam.writer.write_records` (sharded TFRecords, sha256 manifest, atomic shards,
resumable). Splits are grouped by reference: every distorted version of a reference lands on the same side.

One work item (row) is one (reference, distortion type) with all requested levels, so a reference is decoded once per type
and the work spreads over Beam workers. Randomness is derived per (seed, reference id, type, level) with
``numpy.random.SeedSequence``, so outputs do not depend on the runner, the number of workers or the order of work.
The rows are planned from a listing of the pristine folder (a local folder or a URI: gs://, s3://, ...), on the driver and
again on a Beam worker (:class:`PlanIndex`), so no row travels through the job graph; workers read the photos themselves.

Example:
    >>> import os, tempfile
    >>> from data_pipeline.beam.synthesize import synthesize
    >>> out_dir = tempfile.mkdtemp()
    >>> made = synthesize("embedded:astronaut,chelsea", out_dir, name="demo_synth", types="1,10", levels="1-5", num_splits=2)
    >>> made["synthetic"]["count"], made["pair"]["count"], sorted(os.listdir(out_dir))  # 2 photos x 2 types x 5 levels
    (20, 20, ['demo_synth', 'demo_synth_pairs'])
"""

from __future__ import annotations

import contextlib
import json
import zlib
from typing import Optional, Sequence

import numpy as np

from data_pipeline import distortions as D
from data_pipeline import fs, layout, pristine
from data_pipeline.beam.writer import RowIndex, iter_records, default_num_shards, write_records
from data_pipeline.images import encode_png
from data_pipeline.schema import make_example
from data_pipeline.splits import SplitConfig

PSEUDO_LABELS = {"ssim": "SSIM (Wang et al. 2004) on BT.601 luma, 11x11 Gaussian window sigma 1.5",
                 "ms-ssim": "MS-SSIM (Wang et al. 2003), 5 scales, weights 0.0448/0.2856/0.3001/0.2363/0.1333, on BT.601 luma"}


def image_id(reference_id: str, type_id: int, level: int) -> str:
    """KADID-style id of a distorted image: ``<reference>_<type:02d>_<level:02d>``."""
    return f"{reference_id}_{type_id:02d}_{level:02d}"


def _rng(seed: int, reference_id: str, type_id: int, level: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(reference_id.encode()), type_id, level]))


def settings(seed: int = 0, pseudo_label: str | None = None, max_long_side: int = 0, restretch: bool = False) -> str:
    """The generator options that change the records, as a canonical string (stored in every row)."""
    return json.dumps({"seed": int(seed), "pseudo_label": pseudo_label, "max_long_side": int(max_long_side),
                       "restretch": bool(restretch)}, sort_keys=True)


def plan(sources: Sequence[str], types: Sequence[int], levels: Sequence[int], per_image_types: int = 0,
         seed: int = 0, settings: str = "") -> list[dict]:
    """Work rows: one per (reference, type) with its levels.

    ``settings`` (the generator options) is stored in every row, so the writer's resume fingerprint changes with them: a
    re-run with another seed, pseudo-label, ... rewrites the shards instead of reusing them.

    Args:
        sources: reference source strings (file paths or ``skimage:<name>``), see :func:`data_pipeline.pristine.sources`.
        per_image_types: when > 0, each reference gets only this many types, drawn (seeded) from ``types`` (KADIS-700k
            style); 0 = every type for every reference.
    """
    if per_image_types < 0 or per_image_types > len(types):
        raise ValueError(f"--per-image-types must be in 0..{len(types)} (number of selected types), got {per_image_types}")
    rows, seen = [], {}
    for src in sources:
        ref = pristine.reference_id(src)
        if ref in seen:  # same stem in two folders: make the id unique and stable
            seen[ref] += 1
            ref = f"{ref}_{seen[ref]}"
        else:
            seen[ref] = 0
        chosen = list(types)
        if per_image_types:
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(ref.encode()), 0]))
            chosen = sorted(rng.choice(np.asarray(types), size=per_image_types, replace=False).tolist())
        for t in chosen:
            rows.append({"id": f"{ref}_{t:02d}", "path": src, "reference_id": ref, "type": int(t),
                         "levels": [int(lv) for lv in levels], "settings": settings})
    return rows


class DistortedExamples:
    """``to_examples(row)`` for the writer: distorts one reference with one type at each level, yields serialized Examples.

    Picklable (Beam ships it to workers). Raises ``ImageDecodeError`` for an unreadable reference (recorded as a reject).

    Args:
        kind: "synthetic" or "pair".
        dataset_name: written to ``dataset/name``.
        pseudo_label: None, "ssim" or "ms-ssim".
        seed: base seed of the distortion randomness.
        max_long_side: downscale references so their long side is at most this (0 = keep).
        restretch: the MATLAB generator's min-max stretch of input and output (see :func:`data_pipeline.distortions.distort`).
    """

    def __init__(self, kind: str, dataset_name: str, pseudo_label: str | None = None, seed: int = 0,
                 max_long_side: int = 0, restretch: bool = False):
        if kind not in ("synthetic", "pair"):
            raise ValueError(f"kind must be 'synthetic' or 'pair', got {kind!r}")
        if pseudo_label not in (None, *PSEUDO_LABELS):
            raise ValueError(f"pseudo_label must be one of {sorted(PSEUDO_LABELS)} or None, got {pseudo_label!r}")
        self.kind, self.dataset_name, self.pseudo_label = kind, dataset_name, pseudo_label
        self.seed, self.max_long_side, self.restretch = int(seed), int(max_long_side), bool(restretch)

    def __call__(self, row: dict):
        pixels, ref_bytes, _fmt = pristine.load_reference(row["path"], self.max_long_side, encode=self.kind == "pair")
        ref, t = row["reference_id"], int(row["type"])
        h, w = pixels.shape[:2]
        for lv in row["levels"]:
            out = D.distort(pixels, t, int(lv), _rng(self.seed, ref, t, int(lv)), restretch=self.restretch)
            iid = image_id(ref, t, int(lv))
            fields = {
                "image/encoded": encode_png(out), "image/format": "png", "image/height": h, "image/width": w,
                "image/id": iid, "dataset/name": self.dataset_name,
                "score/mos": float("nan"), "score/std": float("nan"), "score/normalized": float("nan"),
                "score/pseudo": (D.PSEUDO_METRICS[self.pseudo_label](out, pixels) if self.pseudo_label else float("nan")),
                "distortion/type": t, "distortion/name": D.NAMES[t], "distortion/level": int(lv), "reference/id": ref,
            }
            if self.kind == "pair":
                fields["reference/encoded"] = ref_bytes
            yield iid, make_example(self.kind, fields).SerializeToString()


class PairsFromSynthetic:
    """``to_examples(row)`` for the pair dataset that reuses the synthetic dataset just written instead of distorting again.

    The writer puts row ``i`` in shard ``i % num_shards`` and writes a shard's rows in index order, so with the same rows
    and shard count, pair shard k holds exactly the rows of synthetic shard k, in the same order. Each worker streams the
    matching synthetic shard, takes the records of the row (checking their ids), re-labels ``dataset/name`` and adds
    ``reference/encoded``. Any mismatch (a reject, a foreign file) falls back to distorting again (``fallback``).
    """

    def __init__(self, synthetic_dir: str, dataset_name: str, fallback: DistortedExamples):
        self.synthetic_dir, self.dataset_name, self.fallback = str(synthetic_dir), dataset_name, fallback
        self._reset()

    def _reset(self):
        self._file, self._it, self._pending, self._ref = None, None, None, (None, None)

    def __getstate__(self):  # iterators do not pickle; workers start fresh
        return {"synthetic_dir": self.synthetic_dir, "dataset_name": self.dataset_name, "fallback": self.fallback}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()

    def _next(self):
        if self._pending is not None:
            rec, self._pending = self._pending, None
            return rec
        try:
            return next(self._it, None)
        except ValueError:  # a corrupt synthetic shard: distort again (fallback) for this and the following rows
            self._it = iter(())
            return None

    def _take(self, shard_file: str, ids: list[str]):
        import tensorflow as tf

        if self._file != shard_file:
            path = fs.join(self.synthetic_dir, shard_file)
            if not fs.exists(path):
                return None
            self._file, self._pending = shard_file, None
            self._it = iter_records(path)
        out = []
        for iid in ids:
            rec = self._next()
            if rec is None:
                return None
            ex = tf.train.Example.FromString(rec)
            got = ex.features.feature["image/id"].bytes_list.value[0].decode()
            if got != iid:
                if not out:  # the row was rejected in the synthetic pass: keep this record for the next row
                    self._pending = rec
                else:  # out of step: start over for this shard
                    self._reset()
                return None
            out.append(ex)
        return out

    def __call__(self, row: dict):
        ids = [image_id(row["reference_id"], int(row["type"]), int(lv)) for lv in row["levels"]]
        examples = self._take(row.get("shard_file", ""), ids) if row.get("shard_file") else None
        if examples is None:
            yield from self.fallback(row)
            return
        if self._ref[0] != row["path"]:
            self._ref = (row["path"], pristine.load_reference(row["path"], self.fallback.max_long_side)[1])
        ref_bytes = self._ref[1]
        for iid, ex in zip(ids, examples):
            feats = ex.features.feature
            feats["dataset/name"].bytes_list.value[:] = [self.dataset_name.encode()]
            feats["reference/encoded"].bytes_list.value[:] = [ref_bytes]
            yield iid, ex.SerializeToString()


class PlanIndex(RowIndex):
    """The synthesize rows (:func:`plan`) of a pristine spec, expanded where it runs: on the driver and on the Beam worker
    that feeds the shard writers (it lists the pristine folder itself). Picklable.

    ``shard_files`` (the pair pass): the synthetic dataset's shard files in shard order; row i gets
    ``shard_file = shard_files[i % len(shard_files)]``, the synthetic shard holding its records.
    """

    def __init__(self, pristine_spec, types, levels, per_image_types: int = 0, seed: int = 0, settings: str = "",
                 shard_files: Optional[Sequence[str]] = None):
        self.pristine_spec = list(pristine_spec) if isinstance(pristine_spec, (list, tuple)) else str(pristine_spec)
        self.types, self.levels = [int(t) for t in types], [int(lv) for lv in levels]
        self.per_image_types, self.seed, self.settings = int(per_image_types), int(seed), settings
        self.shard_files = list(shard_files) if shard_files else None

    def rows(self) -> list[dict]:
        spec = self.pristine_spec
        srcs = list(spec) if isinstance(spec, list) else pristine.sources(spec)
        rows = plan(srcs, self.types, self.levels, self.per_image_types, self.seed, self.settings)
        if self.shard_files:
            n = len(self.shard_files)
            rows = [dict(r, shard_file=self.shard_files[i % n]) for i, r in enumerate(rows)]
        return rows


def manifest_extra(types, levels, per_image_types, seed, pseudo_label, restretch, max_long_side, pristine_spec) -> dict:
    return {
        "pseudo_label": pseudo_label,
        "pseudo_label_description": PSEUDO_LABELS.get(pseudo_label) if pseudo_label else None,
        "generator": {
            "tool": "keras-iqa synthesize", "pristine": str(pristine_spec), "types": list(types), "levels": list(levels),
            "per_image_types": int(per_image_types), "seed": int(seed), "restretch": bool(restretch),
            "max_long_side": int(max_long_side), "split_by": "reference/id",
            "distortions": {str(i): {"name": d.name, "key": d.key, "levels": list(d.levels)} for i, d in D.DISTORTIONS.items()
                            if i in set(types)},
        },
    }


def synthesize(pristine_spec, out_dir, name: str = "synthetic", types="all", levels="1-5", per_image_types: int = 0,
               seed: int = 0, pseudo_label: str | None = None, pairs: bool = True, runner: str = "DirectRunner",
               pipeline_args: Sequence[str] = (), num_shards: int | None = None, max_long_side: int = 0,
               restretch: bool = False, num_splits: int = 10, train_ratio: float = 0.8, progress: bool = False) -> dict:
    """Runs the synthesize pipeline; returns ``{"synthetic": manifest, "pair": manifest or None}``.

    Args:
        pristine_spec: a folder of reference photos (local or a URI: gs://, s3://, ...), ``"embedded"`` or
            ``"embedded:astronaut,coffee"``, or a list of sources.
        out_dir: parent folder (local or URI); writes ``out_dir/name`` and ``out_dir/name_pairs``.
        types, levels: ``"all"`` / ``"1,3,10"`` / ``"1-5"`` (see :func:`data_pipeline.distortions.parse_types`).
        per_image_types: K random types per reference (0 = all selected types).
        pseudo_label: None, "ssim" or "ms-ssim" (stored under ``score/pseudo``, never ``score/mos``).
        pairs: also write the pair dataset.
        runner, pipeline_args, num_shards: passed to the writer (Beam runner and its options; ``runner=None`` writes
            inline without Beam). The writer parallelises over shards, so the default gives every DirectRunner worker one.
            The driver's own reads and writes use ``pipeline_args`` too (e.g. ``--s3_endpoint_url=...``).
        num_splits, train_ratio: reference-grouped random splits in ``splits.csv`` (column k seeded by ``seed + k``).
        progress: per-image bars on stderr, one per dataset written (see ``writer.write_records``).

    ``name`` must be a plain folder name. Both dataset folders are locked while they are written (``fs.lock``: another
    ``prepare`` or ``synthesize`` on them fails at once with fs.LockedError); a manifest that comes back with
    ``"already_complete": True`` was complete for the same plan and was not rewritten.
    """
    layout.check_dataset_name(name)
    fs.configure(pipeline_args)  # the driver lists the pristine folder and writes with the pipeline's options
    type_ids, level_ids = D.parse_types(types), D.parse_levels(levels)
    embedded = str(pristine_spec) == "embedded" or str(pristine_spec).startswith("embedded:")
    spec = pristine_spec if isinstance(pristine_spec, (list, tuple)) or embedded else fs.abspath(pristine_spec)
    index = PlanIndex(spec, type_ids, level_ids, per_image_types, seed, settings(seed, pseudo_label, max_long_side, restretch))
    rows = index.rows()
    # the writer groups the splits by reference/id for synthetic and pair records
    splits = SplitConfig(num_splits=num_splits, train_ratio=train_ratio, seed=seed, group_by_reference=True)
    if num_shards is None:  # ~500 distorted images per shard, and at least one shard per DirectRunner worker
        workers = max([int(a.split("=", 1)[1]) for a in pipeline_args if a.startswith("--direct_num_workers=")] or [1])
        num_shards = min(len(rows), max(default_num_shards(len(rows) * len(level_ids)), workers)) or 1
    extra = manifest_extra(type_ids, level_ids, per_image_types, seed, pseudo_label, restretch, max_long_side, pristine_spec)
    result = {}
    out_dir = fs.abspath(out_dir)
    syn_dir = fs.join(out_dir, name)
    syn_fn = DistortedExamples("synthetic", name, pseudo_label, seed, max_long_side, restretch)
    kw = dict(score_range=(0.0, 1.0), higher_better=True, num_shards=num_shards, runner=runner,
              pipeline_args=tuple(pipeline_args), manifest_extra=extra, splits=splits, progress=progress,
              progress_unit="image", row_weight=_levels_of)
    pair_name = f"{name}_pairs"
    with contextlib.ExitStack() as locks:
        for folder in (syn_dir, fs.join(out_dir, pair_name)) if pairs else (syn_dir,):
            locks.enter_context(fs.lock(fs.join(folder, layout.LOCK), f"synthesize {name}"))
        result["synthetic"] = write_records(rows, syn_fn, syn_dir, kind="synthetic", dataset_name=name, index=index,
                                            progress_desc=f"synthesize {name}", **kw)
        if not pairs:
            result["pair"] = None
            return result
        fallback = DistortedExamples("pair", pair_name, pseudo_label, seed, max_long_side, restretch)
        # pair shard k streams synthetic shard k (same rows, same shard count): rows name the file the manifest committed
        files = [s["file"] for s in result["synthetic"]["shards"]]
        pair_index = PlanIndex(spec, type_ids, level_ids, per_image_types, seed, index.settings, shard_files=files)
        pair_rows = [dict(r, shard_file=files[i % len(files)]) for i, r in enumerate(rows)]
        result["pair"] = write_records(pair_rows, PairsFromSynthetic(syn_dir, pair_name, fallback),
                                       fs.join(out_dir, pair_name), kind="pair", dataset_name=pair_name, index=pair_index,
                                       progress_desc=f"synthesize {pair_name}", **kw)
    return result


def _levels_of(row) -> int:
    """Distorted images one plan row yields (one per level)."""
    return max(1, len(row.get("levels") or ()))
