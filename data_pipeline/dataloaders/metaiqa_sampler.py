"""MetaIQA's sampler: one task per distortion type, its images split support/query (MetaIQA Sec. 3.1, 80/20).

`RecordReader.metaiqa_tasks` delegates here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import tensorflow as tf

from data_pipeline.test_time import Resize

if TYPE_CHECKING:
    from data_pipeline.input import RecordReader

AUTOTUNE = tf.data.AUTOTUNE


def metaiqa_tasks(reader: "RecordReader", support_fraction: float = 0.8, batch_size: int = 32, crop_size: int = 224,
                  seed: int = 0, query_mode: str = "crop", resize: Resize = None, flip: bool = True) -> list[dict]:
    """The tasks of `reader` (see `RecordReader.metaiqa_tasks`): per type, a permutation seeded by (seed, type) splits
    its images; support = random crops (+flip), query = random crops (`crop`) or whole images resized (`resize`)."""
    if reader.kind == "authentic":
        raise ValueError(f"{reader.data_dir}: MetaIQA tasks need synthetic records with distortion/type; this is authentic")
    if not 0.0 < support_fraction < 1.0:
        raise ValueError(f"support_fraction must be in (0, 1), got {support_fraction}")
    if query_mode not in ("crop", "resize"):
        raise ValueError(f"query_mode must be crop|resize, got {query_mode!r}")
    idx = reader.index()
    tasks = []
    for t in sorted(set(idx["type"].tolist())):
        sel = np.sort(idx["id"][idx["type"] == t])
        perm = np.random.default_rng([seed, int(t) & 0xFFFFFFFF]).permutation(len(sel))
        n_sup = min(max(int(round(support_fraction * len(sel))), 1), max(len(sel) - 1, 1))
        sup, qry = sel[perm[:n_sup]].tolist(), sel[perm[n_sup:]].tolist()
        names = idx["type_name"][idx["type"] == t]
        s_seed = seed * 1000 + int(t)
        support = reader.train_images(sup, crop_size, resize, flip, True, s_seed, False).batch(batch_size)
        if not qry:
            query = None
        elif query_mode == "crop":
            query = reader.train_images(qry, crop_size, resize, flip, True, s_seed + 1, False)
        else:
            query = reader.parsed(qry, lambda d, rnd: reader.parser.parse_resized_data(d, crop_size))
        tasks.append({"type": int(t), "name": str(names[0]) if len(names) else f"type{t}",
                      "support": support.prefetch(AUTOTUNE).with_options(reader.options(True)),
                      "query": None if query is None else query.batch(batch_size).prefetch(AUTOTUNE).with_options(
                          reader.options(True)),
                      "support_count": len(sup), "query_count": len(qry), "support_ids": sup, "query_ids": qry})
    return tasks
