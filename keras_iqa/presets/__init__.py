"""Presets: a trained keras-iqa model as a folder of three files, in keras-hub's layout (docs/presets.md).

    config.json        the model's Keras config (`keras.saving.serialize_keras_object`, no compile/build config): the
                       architecture, the score range and direction, and the test-time crop contract fields
    model.weights.h5   the weights (`model.save_weights`)
    metadata.json      the model card: card and family, paper, score range and direction, the test-time contract
                       (`TestTimeCrops.to_dict`), training data and protocol, measured metrics and the machine, licence,
                       keras-iqa / Keras / TensorFlow versions, and the SHA-256 and size of config.json and model.weights.h5

`save_to_preset(model, dir)` (also `model.save_to_preset(dir)`) writes one; `keras-iqa preset save RUN --out DIR` writes one
from a training run (card, data, protocol and test metrics taken from the run's files). `from_preset(handle)` loads:

- a local preset folder;
- a registered preset name (`keras_iqa.iqa_presets.IQA_PRESETS`, shipped empty; `register_preset` adds entries);
- `kaggle://ORG/MODEL/keras/VARIATION[/VERSION]` (kagglehub, through keras-hub's `get_file`), `hf://ORG/NAME`
  (huggingface_hub), or `https://HOST/PATH/DIR` (the three files under that URL; `http://` only for 127.0.0.1/localhost).

Every file is checked against its SHA-256 (a registry entry's, a `sha256=` argument's, else metadata.json's list) before
it enters the cache (`cache_dir()`: $KERAS_IQA_CACHE, else $KERAS_HOME/keras_iqa/presets, else ~/.keras/keras_iqa/presets;
one folder per handle, `cache_key`). A mismatch or a truncated download raises `PresetHashError` with the expected and
actual hash, and leaves nothing in the cache. Downloads are bounded (`download`: connect and idle-read timeouts, size
caps, redirects held to the handle rules; docs/security.md); a cache that cannot be written raises `PresetCacheError`.
Without network, a handle that is not cached raises `PresetUnavailableError` naming the handle, the cache folder and
where to copy the files.

Only `from_preset` and `save_to_preset` import Keras; the rest (handles, cache, registry) is plain Python, so
`keras-iqa models` lists presets without TensorFlow.

Example:
>>> import tempfile
>>> import numpy as np
>>> import keras_iqa
>>> from keras_iqa.presets import from_preset, is_preset_handle, save_to_preset
>>> model = keras_iqa.create_model("metaiqa-tiny")
>>> folder = save_to_preset(model, tempfile.mkdtemp() + "/metaiqa-tiny-demo",
...                         metadata={"training": {"data": "none (random init)", "protocol": "none"}})
>>> sorted(p.name for p in folder.iterdir())
['config.json', 'metadata.json', 'model.weights.h5']
>>> is_preset_handle(str(folder)), is_preset_handle("hf://org/name"), is_preset_handle("reqa-tiny")
(True, True, False)
>>> loaded = from_preset(str(folder))
>>> x = np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype("float32")
>>> bool(np.allclose(loaded.score(x), model.score(x), atol=1e-6)), loaded.card_name
(True, 'metaiqa-tiny')

The package's modules: `format` (file names, errors, SHA-256 checks), `entries` (the registry), `download` (one bounded
HTTP(S) download), `fetch` (handles, cache, downloads, listing) and `saving` (model card, save / load, card fields from a run); every name is importable from here.
"""

from __future__ import annotations

from keras_iqa.presets.entries import (register_preset, registered_presets, registry_entry,  # noqa: F401
                                       unregister_preset, validate_entry)
from keras_iqa.presets.download import (CONNECT_TIMEOUT_ENV, MAX_BYTES_ENV, METADATA_MAX_BYTES,  # noqa: F401
                                        READ_TIMEOUT_ENV, Limits, check_url, limits)
from keras_iqa.presets.fetch import (_fetch_hf, _fetch_kaggle, _fetch_one, _fetch_url,  # noqa: F401
                                     _unavailable, _verify_cached, cache_dir, cache_key, cached_path,
                                     fetch_preset, is_preset_handle, list_presets, load_metadata, local_dir)
from keras_iqa.presets.format import (_LOOPBACK_HOSTS, CACHE_ENV, CONFIG_FILE,  # noqa: F401
                                      ENTRY_METADATA_FIELDS, FORMAT, FORMAT_VERSION, METADATA_FILE, PRESET_FILES,
                                      REMOTE_SCHEMES, WEIGHTS_FILE, PresetCacheError, PresetError, PresetHashError,
                                      PresetUnavailableError, _expected_from_metadata, _file_records, _is_preset_dir,
                                      _is_sha256, _normalize_sha, _read_json, _scheme, _verify, sha256_file)
from keras_iqa.presets.saving import (_command, _family, _json_default, _maybe_json, _run_card, _strip,  # noqa: F401
                                      _write_atomic, from_preset, metadata_from_run, model_card, save_to_preset)

__all__ = ["PresetCacheError", "PresetError", "PresetHashError", "PresetUnavailableError", "cache_dir", "cached_path",
           "fetch_preset", "from_preset", "is_preset_handle", "list_presets", "load_metadata", "metadata_from_run", "model_card",
           "register_preset", "registered_presets", "registry_entry", "save_to_preset", "sha256_file",
           "unregister_preset", "validate_entry"]
