"""TF Serving configuration files written beside an exported model: `models.config` and `batching_parameters.txt`.

Layout (TF Serving's): `saved_models/NAME/models.config`, `saved_models/NAME/batching_parameters.txt`,
`saved_models/NAME/<version>/saved_model.pb` (+ `variables/`, `assets.extra/keras_iqa.json`).
"""

from __future__ import annotations

import os
from pathlib import Path

from tensorflow_serving.config import model_server_config_pb2


def models_config(name: str, base_path: str = None) -> str:
    """`--model_config_file` content: a `tensorflow_serving` ModelServerConfig (text format) serving the latest version of
    `name` from `base_path` (default /models/NAME)."""
    from google.protobuf import text_format

    config = model_server_config_pb2.ModelServerConfig()
    model = config.model_config_list.config.add(name=name, base_path=base_path or f"/models/{name}",
                                                model_platform="tensorflow")
    model.model_version_policy.latest.num_versions = 1
    return text_format.MessageToString(config)


def batching_parameters(max_batch_size: int = 32, batch_timeout_micros: int = 2000, num_batch_threads: int = 0,
                        max_enqueued_batches: int = 100) -> str:
    """`--batching_parameters_file` content (text protobuf BatchingParameters; written by hand: tensorflow-serving-api
    ships the config protos but not `session_bundle_config.proto`, docs/deployment.md).

    `num_batch_threads` 0 means os.cpu_count(). Requests are batched along dimension 0 of every signature input, so
    `serving_default` (tf.string [B]) and `predict_crops` batch across clients; `image_tensor` only batches equal-sized images.
    """
    threads = num_batch_threads or (os.cpu_count() or 1)
    return (
        f"max_batch_size {{ value: {int(max_batch_size)} }}\n"
        f"batch_timeout_micros {{ value: {int(batch_timeout_micros)} }}\n"
        f"max_enqueued_batches {{ value: {int(max_enqueued_batches)} }}\n"
        f"num_batch_threads {{ value: {int(threads)} }}\n"
        "pad_variable_length_inputs: false\n"
    )


def write_serving_configs(model_root: os.PathLike, name: str, max_batch_size: int = 32) -> dict:
    """Writes both files into `model_root` (= saved_models/NAME) atomically; returns their paths."""
    root = Path(model_root)
    root.mkdir(parents=True, exist_ok=True)
    out = {}
    for fname, text in (("models.config", models_config(name)), ("batching_parameters.txt", batching_parameters(max_batch_size))):
        tmp = root / (fname + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, root / fname)
        out[fname] = str(root / fname)
    return out
