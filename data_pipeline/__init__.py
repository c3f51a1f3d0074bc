"""Data to TFRecords and back: dataset adapters, Beam pipelines, record schema, tf.data readers, the decode policy."""
