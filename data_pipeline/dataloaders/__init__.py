"""The parts `data_pipeline.input.RecordReader` is composed of, in TF Model Garden's layout (`official/vision/dataloaders`).

- `decoder.Decoder`: serialized tf.Example -> dict of tensors (the one place that knows the record schema's feature keys);
- `parser.Parser`: train / eval / pair transforms and the target mapping (built on `data_pipeline.test_time`);
- `reqa_sampler`: REQA's 5-image micro-batches over quality bins;
- `metaiqa_sampler`: MetaIQA's support/query tasks, one per distortion type;
- `hcl_sampler`: HCL's distorted/reference pairs and `multi_dataset`.

The reader (`data_pipeline.input`) keeps the index, the shard checks, the record stream and the bad-record counters.
"""

from data_pipeline.dataloaders.decoder import FIELDS, Decoder
from data_pipeline.dataloaders.parser import TARGETS, Parser

__all__ = ["Decoder", "FIELDS", "Parser", "TARGETS"]
