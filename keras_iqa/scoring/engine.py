"""The one scoring loop: images decoded and cropped by the test-time contract in threads one batch ahead (only the crops
wait for their batch, never a whole decoded photo), the crops of a batch scored together; `score_paths` (files) and
`score_images` (decoded arrays) run it."""

from __future__ import annotations

import collections
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
import sys
from typing import Callable, Iterable, Optional

import numpy as np

from keras_iqa.caller import setting
from keras_iqa.scoring.inputs import _file_item, _Item, iter_image_files
from keras_iqa.scoring.scorer import Scorer


@dataclass
class _Result:
    item: _Item
    score: float = float("nan")
    crops: int = 0
    crop_scores: Optional[np.ndarray] = None
    error: Optional[str] = None


def _load(item: _Item, contract=None, policy=None):
    """(image, None) or, with a test-time `contract`, (its crops [n, c, c, 3] float32, None); (None, reason) when the
    item cannot be decoded, is over the decode policy's limits (`policy`; None: the default) or cannot be cropped."""
    from data_pipeline.images import DEFAULT_POLICY, ImageDecodeError, check_dimensions

    try:
        if contract is not None and item.load_reduced is not None:
            img = item.load_reduced(contract.resize_target)
        else:
            img = item.load()
        check_dimensions(item.source, img.shape[1], img.shape[0], policy or DEFAULT_POLICY, pixel_limit=False)
    except (ImageDecodeError, ValueError, TypeError, FileNotFoundError) as e:
        return None, str(e)
    except Exception as e:  # anything else a broken input triggers: report it and go on
        return None, f"{type(e).__name__}: {e}"
    if contract is None:
        return img, None
    try:
        return contract.crops_array(img), None
    except Exception as e:
        return None, f"cropping failed: {type(e).__name__}: {e}"


def _run(scorer: Scorer, items: Iterable[_Item], batch_size: int = 8, workers: int = 2, want_crops: bool = False,
         bar: Optional[Callable] = None, policy=None):
    """Yields each batch's `_Result`s (in input order). Images are decoded and cropped in `workers` threads one batch
    ahead, so the next batch decodes while this one is scored; the crops of a batch's images share forward passes.
    `policy`: the decode policy whose size limits every item meets (None: the default, limits from the environment)."""
    if int(batch_size) < 1:
        raise ValueError(f"{setting('batch_size', batch_size)}: give at least 1 image per batch")
    if want_crops and scorer.image_scores:
        raise ValueError(f"{scorer.source}: a whole-photo .tflite gives one score per photo (its crops are inside the graph); "
                         "per-crop scores need the per-crop .tflite, the SavedModel or a Keras model")
    contract = None if scorer.image_scores else scorer.test_time
    pending = collections.deque()
    it = iter(items)
    done = nbad = 0
    with ThreadPoolExecutor(max(1, int(workers))) as pool:
        def fill():
            while len(pending) < 2 * batch_size:
                item = next(it, None)
                if item is None:
                    return
                pending.append((item, pool.submit(_load, item, contract, policy)))

        fill()
        while pending:
            batch = [pending.popleft() for _ in range(min(batch_size, len(pending)))]
            fill()  # the next batch decodes while this one is scored
            results, good, inputs = [], [], []
            for item, future in batch:
                img, err = future.result()
                res = _Result(item)
                results.append(res)
                if err is None:
                    inputs.append(img)  # the crops, or the image for a whole-photo model
                    good.append(res)
                res.error = err
            if good:
                if contract is None:
                    scores, n, per_crop = scorer.image_scores(inputs), scorer.test_time.num_crops, None
                else:
                    scores, n, per_crop = _image_scores(scorer, inputs, with_crops=True)
                for k, res in enumerate(good):
                    res.score, res.crops = float(scores[k]), int(n)
                    if want_crops:
                        res.crop_scores = np.asarray(per_crop[k], np.float64)
            done += len(results)
            nbad += sum(r.error is not None for r in results)
            if bar is not None:
                bar(done, nbad)
            yield results


def _image_scores(scorer: Scorer, crops: list, with_crops: bool = False):
    """Image scores from each image's crops [n, c, c, 3] (the contract's mean), in calls of <= max_crops_per_call crops.
    Returns (scores [N], n) or, `with_crops`, (scores, n, per-crop scores [N, n])."""
    allc = np.concatenate(crops)
    step = scorer.max_crops_per_call
    per_crop = np.concatenate([np.asarray(scorer.crop_scores(allc[i:i + step])).reshape(-1)
                               for i in range(0, len(allc), step)])
    n = len(per_crop) // len(crops)
    per_crop = per_crop.reshape(len(crops), n)
    scores = scorer.test_time.image_score(per_crop)
    return (scores, n, per_crop) if with_crops else (scores, n)

def score_paths(scorer: Scorer, paths: Iterable[os.PathLike], recursive: bool = False, batch_size: int = 32,
                progress: bool = True, workers: int = 2, on_rows: Optional[Callable[[list], None]] = None,
                crop_scores: bool = False, decode_policy=None) -> tuple[list, list]:
    """Scores every image under `paths`; returns (rows, bad).

    rows: dicts {path, score, score_normalized, crops} (plus `crop_scores`, a list, when asked); bad: (path, reason)
    for files that could not be decoded. `batch_size` images are decoded (in `workers` threads, one batch ahead), cropped
    and scored together; `on_rows` receives each batch's rows (for streaming output). `decode_policy`: a
    `data_pipeline.images.DecodePolicy` whose size limits replace the defaults (docs/security.md, Images).
    """
    if int(batch_size) < 1:
        raise ValueError(f"{setting('batch_size', batch_size)}: give at least 1 image per batch")
    files, bad = iter_image_files(paths, recursive)
    bar = _progress(len(files)) if progress and files else None
    rows = []
    for results in _run(scorer, (_file_item(f, 0, decode_policy) for f in files), batch_size, workers, crop_scores, bar,
                        decode_policy):
        batch_rows = []
        for r in results:
            if r.error is not None:
                bad.append((r.item.source, r.error))
                continue
            row = {"path": r.item.source, "score": r.score, "score_normalized": float(scorer.normalized(r.score)),
                   "crops": r.crops}
            if crop_scores:
                row["crop_scores"] = [float(v) for v in r.crop_scores]
            batch_rows.append(row)
        rows.extend(batch_rows)
        if on_rows and batch_rows:
            on_rows(batch_rows)
    return rows, bad


def score_images(scorer: Scorer, images) -> np.ndarray:
    """Scores decoded images (uint8 [H, W, 3] arrays, any sizes) through the test-time contract: float64 [len(images)].

    Raises:
        ValueError: naming the index of an item that is not an RGB uint8 [H, W, 3] image (`keras_iqa.score` takes any
            array and reports bad items instead).
    """
    arrays = []
    for i, img in enumerate(images):
        arr = np.asarray(img)
        if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8 or min(arr.shape[:2]) < 1:
            raise ValueError(f"image {i}: expected an RGB uint8 array [H, W, 3], got dtype {arr.dtype} shape {arr.shape}")
        arrays.append(arr)
    if not arrays:
        return np.zeros(0)
    items = [_Item(f"image {i}", i, (lambda a=a: a)) for i, a in enumerate(arrays)]
    rows = [r for results in _run(scorer, items, batch_size=32, workers=1) for r in results]
    for r in rows:
        if r.error is not None:
            raise ValueError(f"{r.item.source}: {r.error}")
    return np.array([r.score for r in rows], np.float64)

def _progress(total: int):
    """A progress callback(done, bad) on stderr: tqdm when installed, else keras' Progbar (stdout may hold the table)."""
    try:
        from tqdm import tqdm

        bar = tqdm(total=total, unit="image", file=sys.stderr, dynamic_ncols=True)

        def update(done, nbad):
            bar.set_postfix(skipped=nbad, refresh=False)
            bar.update(done - bar.n)
            if done >= total:
                bar.close()

        return update
    except ImportError:
        import keras

        pb = keras.utils.Progbar(total, unit_name="image")
        return lambda done, nbad: pb.update(done)
