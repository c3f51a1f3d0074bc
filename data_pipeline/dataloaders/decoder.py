"""`Decoder`: a serialized `tf.train.Example` of a prepared dataset -> a dict of tensors named by field.

The one place that maps the record schema's feature keys (`data_pipeline.schema`, docs/data-pipeline.md "Record format")
to the names the rest of the code uses, as TF Model Garden's `Decoder` does (`official/vision/dataloaders/decoder.py`,
`tf_example_decoder.py`): parsers, samplers, the reader's index and `keras_iqa.evaluation.protocols.read_metadata` take
`decoded["mos"]`, never `"score/mos"`. Images stay encoded here (decoding pixels is the parser's job).

Every key has a default (`schema.feature_spec`), so a field a record lacks decodes to it: NaN scores, -1 ints, b"" bytes
(an authentic record has no `distortion_type`: -1).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from data_pipeline import schema

#: decoded name -> feature key of the record schema.
FIELDS = {
    "encoded": "image/encoded",
    "format": "image/format",
    "height": "image/height",
    "width": "image/width",
    "id": "image/id",
    "dataset": "dataset/name",
    "mos": "score/mos",
    "std": "score/std",
    "normalized": "score/normalized",
    "pseudo": "score/pseudo",
    "distortion_type": "distortion/type",
    "distortion_name": "distortion/name",
    "distortion_level": "distortion/level",
    "reference_id": "reference/id",
    "reference_encoded": "reference/encoded",
}
#: bytes fields that hold text (`scan` gives them as str; the encoded images stay bytes).
TEXT = ("format", "id", "dataset", "distortion_name", "reference_id")
#: The small per-image facts (no pixels): what an index or a metadata table reads.
METADATA = ("id", "mos", "normalized", "distortion_type", "distortion_name", "distortion_level", "reference_id")


class Decoder:
    """Decodes records of one kind (`authentic`, `synthetic`, `pair`).

    Args:
        kind: the record kind (`manifest["kind"]`); its fields are decoded when `fields` is None.
        fields: names of `FIELDS` to decode (any of them, whatever the kind: a field the records lack gets its default).

    Example:
        >>> from data_pipeline import schema
        >>> rec = schema.make_example("synthetic", {"image/id": "a.png", "score/mos": 3.5, "distortion/type": 2})
        >>> d = Decoder("synthetic").decode(rec.SerializeToString())
        >>> d["id"].numpy(), float(d["mos"]), int(d["distortion_type"]), int(d["distortion_level"])
        (b'a.png', 3.5, 2, -1)
    """

    def __init__(self, kind: str = "authentic", fields: Optional[Sequence[str]] = None):
        keys = schema.keys(kind)  # raises for an unknown kind
        if fields is None:
            fields = [name for name, key in FIELDS.items() if key in keys]
        unknown = [f for f in fields if f not in FIELDS]
        if unknown:
            raise ValueError(f"unknown decoder fields {unknown}; known: {sorted(FIELDS)}")
        every = schema.feature_spec("pair")  # the pair kind has every key
        self.kind, self.fields = kind, tuple(fields)
        self.spec = {FIELDS[f]: every[FIELDS[f]] for f in self.fields}

    def decode(self, serialized) -> dict:
        """One serialized record (scalar tf.string) -> {field: scalar tensor}. Raises (tf.errors) for a non-Example."""
        parsed = tf.io.parse_single_example(serialized, self.spec)
        return {f: parsed[FIELDS[f]] for f in self.fields}

    def scan(self, files: Sequence[str], batch_size: int = 512) -> dict:
        """The decoded fields of every readable record of `files`, in file order, as numpy arrays (text fields become
        str, undecodable UTF-8 replaced by U+FFFD; images stay bytes). A record that is not a tf.Example is skipped, and a corrupt shard (CRC) ends at its first bad record,
        without failing the scan."""
        ds = tf.data.TFRecordDataset(list(files)).ignore_errors()
        ds = ds.map(self.decode, num_parallel_calls=tf.data.AUTOTUNE).ignore_errors().batch(batch_size)
        cols = {f: [] for f in self.fields}
        for batch in ds.as_numpy_iterator():
            for f in self.fields:
                cols[f].append(batch[f])
        out = {}
        for f in self.fields:
            a = np.concatenate(cols[f]) if cols[f] else np.zeros(0, self.spec[FIELDS[f]].dtype.as_numpy_dtype)
            if f in TEXT:
                a = np.asarray([x.decode("utf-8", errors="replace") for x in a], dtype=str)
            out[f] = a
        return out
