"""Shared checks for every model family and custom layer, in keras-hub's `TestCase` manner.

keras-hub's `keras_hub/src/tests/test_case.py` gives each backbone and layer the same battery (`run_layer_test`,
`run_serialization_test`, `run_model_saving_test`, `run_precision_test`); these are the keras-iqa versions, as plain
functions for pytest. A family's tests call them with a registry card name (see docs/contributing.md, Tests):

- `build_from_card(card)`: the card builds a built `IQAModel`;
- `run_forward_test(model, x)`: `score` gives [B] finite float32 scores;
- `run_config_round_trip_test(model, x)`: `from_config(get_config())` with copied weights gives the same scores;
- `run_saving_test(model, x, path, compile_fn)`: `.keras` round trip: same scores, test-time contract and compile config
  (`run_backbone_optimizer_saved_test`: the second optimizer of two-optimizer families is restored too);
- `run_optimizer_state_test(model, x, y, path, compile_fn)`: after one `fit` step every optimizer's state round-trips;
- `run_resume_test(model, loaded, x, y)`: the loaded model's next `fit` step is the original's next step (every weight
  equal, every optimizer one iteration on): a resumed run continues where it stopped (`no_dropout(card)` makes the
  step deterministic);
- `run_mixed_precision_test(card, x, score_layers)`: under `mixed_bfloat16` the score layers stay float32 and the scores are
  float32, off the bf16 grid and close to the float32 model's (tolerance from bf16's 8-bit significand);
- `run_layer_test(cls, kwargs, x, expected_shape, path)`: a custom layer builds, calls, has the expected (also symbolic)
  output shapes, survives get_config/from_config and `.keras` saving by its registered name, and runs in mixed precision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json

import keras
import numpy as np

import keras_iqa
from keras_iqa.models.base import IQAModel

# bf16 keeps 8 significant bits (7 stored): one rounding moves a value by up to 2^-8 of its magnitude (relative).
BF16_EPS = 2.0 ** -8
CONTRACT = ("score_range", "higher_better", "crop_size", "test_crops", "crop_policy", "test_resize")


def tiny_cards():
    """The registry's `-tiny` cards (one per family): what the harness is parametrized over."""
    return [name for name in keras_iqa.list_models() if name.endswith("-tiny")]


def images(n=2, size=64, seed=0):
    """n random RGB crops in [0, 255], float32 [n, size, size, 3] (the models' input contract)."""
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@contextlib.contextmanager
def dtype_policy(name):
    """Sets the global Keras dtype policy for the block, then restores the previous one."""
    old = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(old)


def _to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def _shapes(out):
    return keras.tree.map_structure(lambda t: tuple(t.shape), out)


def no_dropout(card):
    """Overrides that turn off every dropout of `card`'s config (the fields named `*dropout`), so that a training step
    is deterministic under a fixed seed (tiny cards: REQA's transformer, HCL's subnetworks, MetaIQA's official head)."""
    cfg = keras_iqa.get_card(card).config()
    return {f.name: 0.0 for f in dataclasses.fields(cfg) if f.name.endswith("dropout")}


# ------------------------------------------------------------------------------------------------------------- models
def build_from_card(card, seed=0, **overrides):
    """`keras_iqa.create_model(card, **overrides)` with a fixed seed; checks it is a built `IQAModel` with the card's
    score range and direction."""
    keras.utils.set_random_seed(seed)
    model = keras_iqa.create_model(card, **overrides)
    assert isinstance(model, IQAModel), f"card {card!r} built a {type(model).__name__}, not an IQAModel"
    assert model.built, f"card {card!r}: the builder must build the model's variables (call it once on zeros)"
    info = keras_iqa.get_card(card)
    if "score_range" not in overrides:
        assert tuple(model.score_range) == tuple(float(v) for v in info.score_range), (model.score_range, info.score_range)
    assert model.higher_better == info.higher_better
    return model


def run_forward_test(model, x):
    """`model.score(x)`: shape [B], float32, finite. Returns the scores as a numpy array."""
    s = model.score(x)
    assert tuple(s.shape) == (x.shape[0],), f"{model.name}: score shape {tuple(s.shape)}, expected ({x.shape[0]},)"
    assert keras.backend.standardize_dtype(s.dtype) == "float32", f"{model.name}: scores are {s.dtype}, not float32"
    s = _to_numpy(s)
    assert np.all(np.isfinite(s)), s
    return s


def _json_equal(a, b):
    return json.loads(json.dumps(a, sort_keys=True)) == json.loads(json.dumps(b, sort_keys=True))


def run_config_round_trip_test(model, x):
    """`type(model).from_config(model.get_config())`: same JSON config, same variables, same scores once the weights are
    copied. Returns the clone."""
    config = model.get_config()
    json.dumps(config)  # a .keras file stores it as JSON
    clone = type(model).from_config(config)
    clone(x[:1], training=False)  # build
    assert _json_equal(clone.get_config(), config), "get_config() of the clone differs from the original's"
    assert [tuple(w.shape) for w in clone.weights] == [tuple(w.shape) for w in model.weights], "variables differ"
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(run_forward_test(clone, x), run_forward_test(model, x), rtol=1e-6, atol=1e-6)
    for attr in CONTRACT:
        assert getattr(clone, attr) == getattr(model, attr), attr
    return clone


def run_saving_test(model, x, path, compile_fn=None):
    """`.keras` round trip through `keras.saving.load_model`: same class, scores, test-time contract and, when
    `compile_fn(model)` compiled it, the same compile config and optimizer config. Returns the loaded model."""
    if compile_fn is not None:
        compile_fn(model)
    before = run_forward_test(model, x)
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert type(loaded) is type(model), type(loaded)
    np.testing.assert_allclose(run_forward_test(loaded, x), before, rtol=1e-5, atol=1e-5)
    for attr in CONTRACT:
        assert getattr(loaded, attr) == getattr(model, attr), attr
    if compile_fn is not None:
        assert loaded.compiled, "a compiled model must load compiled (compile_from_config)"
        assert _json_equal(loaded.get_compile_config(), model.get_compile_config()), "compile config not restored"
        assert _json_equal(keras.optimizers.serialize(loaded.optimizer), keras.optimizers.serialize(model.optimizer))
    return loaded


def run_backbone_optimizer_saved_test(model, loaded):
    """Two-optimizer families (a `backbone_optimizer` besides `optimizer`): the loaded model has the second optimizer
    back with the same config (issue 23: both optimizers' state saved for every family)."""
    original = getattr(model, "backbone_optimizer", None)
    assert original is not None, f"{model.name} was compiled without a backbone optimizer"
    back = getattr(loaded, "backbone_optimizer", None)
    assert back is not None, f"{type(model).__name__}: the backbone optimizer is not restored by load_model"
    assert _json_equal(keras.optimizers.serialize(back), keras.optimizers.serialize(original))


def run_optimizer_state_test(model, x, y, path, compile_fn):
    """After one `fit` step, a `.keras` round trip restores every optimizer's state (`optimizer`, and `backbone_optimizer`
    where the family has one): the same iteration count and the same slot variables (issue 23: both optimizers' state
    saved and restored for every family). Returns the loaded model."""
    compile_fn(model)
    model.run_eagerly = True  # one step on a tiny model: eager is faster than tracing the train function
    model.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    model.save(path)
    loaded = keras.saving.load_model(path)
    for attr in ("optimizer", "backbone_optimizer"):
        original = getattr(model, attr, None)
        if original is None:
            continue
        back = getattr(loaded, attr, None)
        assert back is not None, f"{type(model).__name__}.{attr} is not restored by load_model"
        assert int(back.iterations) == int(original.iterations) >= 1, (attr, int(back.iterations))
        want, got = original.variables, back.variables
        assert len(got) == len(want), f"{type(model).__name__}.{attr}: {len(got)} variables loaded, {len(want)} saved"
        for a, b in zip(want, got):
            np.testing.assert_allclose(_to_numpy(b), _to_numpy(a), rtol=1e-6, atol=1e-7, err_msg=f"{attr} {a.path}")
    return loaded


def run_resume_test(model, loaded, x, y, seed=1):
    """A resumed fit continues: one more `fit` step of `loaded` (a `.keras` round trip of the fitted, compiled `model`)
    gives the weights the same step of `model` gives, and every optimizer (`optimizer`, `backbone_optimizer`) counts one
    more iteration. A lost optimizer state (Adam's moments, its step count) would change the step. The model's training
    step must be deterministic under a seed (`no_dropout`). Returns the largest weight difference (0 when exact)."""
    before = [_to_numpy(w) for w in model.weights]
    iterations = {a: int(getattr(model, a).iterations) for a in ("optimizer", "backbone_optimizer")
                  if getattr(model, a, None) is not None}
    for m in (model, loaded):
        m.run_eagerly = True
        keras.utils.set_random_seed(seed)
        m.fit(x, y, batch_size=len(x), epochs=1, verbose=0)
    for attr, n in iterations.items():
        assert int(getattr(model, attr).iterations) == int(getattr(loaded, attr).iterations) == n + 1, attr
    after, resumed = [_to_numpy(w) for w in model.weights], [_to_numpy(w) for w in loaded.weights]
    assert any(not np.array_equal(a, b) for a, b in zip(before, after)), "the step changed no weight"
    bo = getattr(model, "backbone_optimizer", None)
    if bo is not None:  # the backbone optimizer took its step too
        ids = {id(v) for v in model.backbone_variables()}
        moved = [not np.array_equal(b, _to_numpy(w)) for b, w in zip(before, model.weights) if id(w) in ids]
        assert any(moved), "the backbone optimizer did not move the backbone"
    diff = max(float(np.max(np.abs(a - b))) if a.size else 0.0 for a, b in zip(after, resumed))
    assert diff <= 1e-6, f"{type(model).__name__}: the resumed step differs from the original's by {diff}"
    return diff


def run_mixed_precision_test(card, x, score_layers=None, roundings=1, f32_model=None, **overrides):
    """Builds `card` in float32 (or takes `f32_model`) and under `mixed_bfloat16` with the same weights, then checks:

    - some layers compute in bfloat16 (the policy is in effect) while the `score_layers(model)` compute in and keep
      float32 variables (docs/heads.md);
    - scores are float32, finite, not all on the bf16 grid of the score scale (a bf16 score layer would put them there);
    - |bf16 - float32| <= `roundings` bf16 roundings of the score range (2^-8 x (high - low): 0.39 on 0-100, about what a
      bf16 score layer alone would cost), and not exactly 0 (the bf16 path really ran). Measured on the tiny cards at
      64 px (float32 weights copied): at most 0.0021 on 0-100 (REQA), 0.0004 (HCL), 0.00016 on 0-1 (MetaIQA).
    Returns (float32 scores, bf16 scores)."""
    f32 = f32_model if f32_model is not None else build_from_card(card, **overrides)
    s32 = run_forward_test(f32, x)
    with dtype_policy("mixed_bfloat16"):
        bf = build_from_card(card, **overrides)
        assert [tuple(w.shape) for w in bf.weights] == [tuple(w.shape) for w in f32.weights]
        bf.set_weights(f32.get_weights())
        assert bf.dtype_policy.compute_dtype == "bfloat16", f"{card}: the model ignores the global mixed_bfloat16 policy"
        for layer in (score_layers(bf) if score_layers is not None else []):
            assert layer.dtype_policy.compute_dtype == "float32", f"{card}: score layer {layer.name} is not float32"
            for w in layer.weights:
                assert keras.backend.standardize_dtype(w.dtype) == "float32", (layer.name, w.name, w.dtype)
        s16 = run_forward_test(bf, x)
    lo, hi = bf.score_range
    # the bf16 spacing at the scores' magnitude (as tests/keras_iqa/test_heads.py): 0.25 near 50 on 0-100
    grid = 2.0 ** (np.floor(np.log2(np.maximum(np.abs(s16), 1e-30))) - 7)
    assert not np.allclose(s16 / grid, np.round(s16 / grid), atol=1e-3), f"{card}: scores on the bf16 grid {s16}"
    tol = roundings * BF16_EPS * (hi - lo)
    diff = np.abs(s16.astype(np.float64) - s32)
    assert np.all(diff <= tol), f"{card}: |bf16 - float32| = {diff} above {tol} ({roundings} bf16 roundings of {hi - lo})"
    assert np.any(diff > 0), f"{card}: bf16 scores equal the float32 ones exactly; the bf16 path did not run"
    return s32, s16


# ------------------------------------------------------------------------------------------------------------- layers
def run_serialization_test(layer):
    """get_config is JSON; from_config rebuilds the same config; `keras.saving.serialize_keras_object` names the
    registered class and deserialises to it (keras-hub's `run_serialization_test`)."""
    config = layer.get_config()
    json.dumps(config)
    revived = type(layer).from_config(config)
    assert _json_equal(revived.get_config(), config)
    serialized = keras.saving.serialize_keras_object(layer)
    registered = keras.saving.get_registered_name(type(layer))
    assert registered.startswith("keras_iqa>"), f"{type(layer).__name__} is not registered under package keras_iqa"
    back = keras.saving.deserialize_keras_object(json.loads(json.dumps(serialized)))
    assert type(back) is type(layer) and _json_equal(back.get_config(), config)


def _assert_outputs_close(a, b, tol):
    a, b = keras.tree.flatten(a), keras.tree.flatten(b)  # a loaded functional model returns lists where the layer gave tuples
    assert len(a) == len(b), (len(a), len(b))
    for x, y in zip(a, b):
        np.testing.assert_allclose(_to_numpy(x), _to_numpy(y), rtol=tol, atol=tol)


def run_layer_test(cls, init_kwargs, input_data, expected_output_shape, path, expect_weights=True,
                   run_saving_check=True, run_precision_check=True):
    """keras-hub's `run_layer_test` for a keras-iqa layer: serialization, build and call (eager and symbolic shapes),
    from_config with copied weights, then `run_layer_saving_test` and `run_layer_precision_test` (each can be turned off
    to run it on its own, e.g. as an expected failure while a known gap is open)."""
    layer = cls(**init_kwargs)
    run_serialization_test(layer)
    out = layer(input_data, training=False)
    assert layer.built
    assert _shapes(out) == expected_output_shape, (_shapes(out), expected_output_shape)
    assert bool(layer.weights) == expect_weights, [w.name for w in layer.weights]
    for o in keras.tree.flatten(out):
        assert np.all(np.isfinite(_to_numpy(o)))

    symbolic = cls(**init_kwargs)(keras.KerasTensor(input_data.shape, dtype="float32"))
    assert _shapes(symbolic) == expected_output_shape, ("symbolic", _shapes(symbolic), expected_output_shape)

    clone = cls.from_config(layer.get_config())
    clone(input_data, training=False)
    clone.set_weights(layer.get_weights())
    _assert_outputs_close(clone(input_data, training=False), out, 1e-6)
    if run_saving_check:
        run_layer_saving_test(cls, init_kwargs, input_data, path)
    if run_precision_check:
        run_layer_precision_test(cls, init_kwargs, input_data, expected_output_shape)
    return layer


def run_layer_saving_test(cls, init_kwargs, input_data, path):
    """The layer inside a functional model survives `.keras` saving and `keras.saving.load_model` (registered name,
    `build()` creating every sublayer's variables): same outputs."""
    layer = cls(**init_kwargs)
    inp = keras.Input(batch_shape=input_data.shape)
    model = keras.Model(inp, layer(inp))
    out = model(input_data, training=False)
    model.save(path)
    loaded = keras.saving.load_model(path)
    _assert_outputs_close(loaded(input_data, training=False), out, 1e-5)


def run_layer_precision_test(cls, init_kwargs, input_data, expected_output_shape):
    """keras-hub's `run_precision_test` under a global `mixed_bfloat16` policy (how keras-iqa runs mixed precision:
    `--precision`; the layers' sublayers take the global policy): called eagerly, float32 variables, bf16 or float32
    (deliberately float32 heads) finite outputs of the expected shapes."""
    with dtype_policy("mixed_bfloat16"):
        mixed = cls(**init_kwargs)
        mixed_out = mixed(input_data, training=False)
    assert mixed.dtype_policy.name == "mixed_bfloat16"
    assert _shapes(mixed_out) == expected_output_shape
    for w in mixed.weights:
        assert keras.backend.standardize_dtype(w.dtype) == "float32", (w.name, w.dtype)
    for o in keras.tree.flatten(mixed_out):
        assert keras.backend.standardize_dtype(o.dtype) in ("bfloat16", "float32"), o.dtype
        assert np.all(np.isfinite(_to_numpy(o).astype("float32")))
