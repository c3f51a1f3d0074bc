"""MetaLearner (Algorithm 1): numpy reference, k=1 / beta=1 == sequential Keras Adam, no retracing, BN policy, fit_meta resume,
LR schedules, LODO split logic. Tiny models only."""


import numpy as np
import pytest

import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

from keras_iqa.tasks.metaiqa import leave_one_distortion_out, lodo_splits  # noqa: E402
from keras_iqa.training.meta_learner import MetaLearner, lr_factor  # noqa: E402


def linear_model(d=3, seed=0):
    keras.utils.set_random_seed(seed)
    m = keras.Sequential([keras.Input((d,)), keras.layers.Dense(1)])
    return m


def make_task(rng, d=3, sizes_s=(8,), sizes_q=(5,)):
    w = rng.normal(size=(d, 1))

    def batch(n):
        x = rng.normal(size=(n, d)).astype("float32")
        return x, (x @ w).reshape(-1).astype("float32") + 0.1

    s = [batch(n) for n in sizes_s]
    q = [batch(n) for n in sizes_q]
    unwrap = (lambda b: b[0]) if len(s) == 1 else list
    return {
        "support_x": s[0][0] if len(s) == 1 else [b[0] for b in s],
        "support_y": s[0][1] if len(s) == 1 else [b[1] for b in s],
        "query_x": q[0][0] if len(q) == 1 else [b[0] for b in q],
        "query_y": q[0][1] if len(q) == 1 else [b[1] for b in q],
    }, unwrap


# ------------------------------------------------------------------------------------------- hand-written Algorithm 1
def ref_meta_step(W, b, tasks, S, alpha, beta, b1, b2, eps, wd):
    """Algorithm 1 in numpy for y = xW + b with MSE: fresh Keras-Adam state per phase, first-order outer update."""

    def adam_phase(W, b, batches):
        params = [W.copy(), b.copy()]
        m = [np.zeros_like(p) for p in params]
        v = [np.zeros_like(p) for p in params]
        losses = []
        for t in range(1, S + 1):
            x, y = batches[(t - 1) % len(batches)]
            r = x @ params[0] + params[1] - y.reshape(-1, 1)
            losses.append(np.mean(r ** 2))
            grads = [2.0 / len(x) * x.T @ r, 2.0 / len(x) * r.sum(0)]
            lr = alpha * np.sqrt(1 - b2 ** t) / (1 - b1 ** t)
            for i in range(2):
                g = grads[i] + wd * params[i]
                m[i] = m[i] + (g - m[i]) * (1 - b1)
                v[i] = v[i] + (g * g - v[i]) * (1 - b2)
                params[i] = params[i] - lr * m[i] / (np.sqrt(v[i]) + eps)
        return params[0], params[1], np.mean(losses)

    def as_list(xs, ys):
        return list(zip(xs, ys)) if isinstance(xs, list) else [(xs, ys)]

    thetas, qls = [], []
    for task in tasks:
        W1, b1_, _ = adam_phase(W, b, as_list(task["support_x"], task["support_y"]))
        W2, b2_, ql = adam_phase(W1, b1_, as_list(task["query_x"], task["query_y"]))
        thetas.append((W2, b2_))
        qls.append(ql)
    k = len(tasks)
    W_new = W - beta * sum(W - t[0] for t in thetas) / k
    b_new = b - beta * sum(b - t[1] for t in thetas) / k
    return W_new, b_new, float(np.mean(qls))


def test_meta_step_matches_numpy_reference_of_algorithm_1():
    rng = np.random.default_rng(0)
    tasks = [make_task(rng)[0], make_task(rng, sizes_s=(6, 4, 3), sizes_q=(5, 2))[0], make_task(rng)[0]]
    hp = dict(S=3, alpha=0.05, beta=0.3, b1=0.9, b2=0.99, eps=1e-8, wd=1e-3)
    model = linear_model()
    learner = MetaLearner(model, inner_steps=hp["S"], inner_lr=hp["alpha"], outer_lr=hp["beta"], beta_1=hp["b1"],
                          beta_2=hp["b2"], epsilon=hp["eps"], weight_decay=hp["wd"])
    W, b = [np.asarray(v, np.float64) for v in model.get_weights()]
    for _ in range(2):  # two meta-steps: the second starts from the first's theta with fresh Adam state again
        W, b, ql = ref_meta_step(W, b, tasks, **hp)
        loss = learner.meta_step(tasks)
        np.testing.assert_allclose(loss, ql, rtol=1e-4)
    got_W, got_b = model.get_weights()
    np.testing.assert_allclose(got_W, W, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got_b, b, rtol=1e-4, atol=1e-6)
    # theta variables hold the same values as the model after a meta-step
    np.testing.assert_allclose(learner.theta[0].numpy(), got_W)
    # the update is not a no-op
    assert np.abs(got_W - linear_model().get_weights()[0]).max() > 1e-3


def test_reference_disagrees_without_fresh_adam_state():
    """The test above can fail: a persistent Adam state (official code) gives different weights."""
    rng = np.random.default_rng(1)
    tasks = [make_task(rng)[0], make_task(rng)[0]]
    hp = dict(S=3, alpha=0.05, beta=0.5, b1=0.9, b2=0.99, eps=1e-8, wd=0.0)
    model = linear_model()
    W, b = [np.asarray(v, np.float64) for v in model.get_weights()]
    W, b, _ = ref_meta_step(W, b, tasks, **hp)
    learner = MetaLearner(model, inner_steps=3, inner_lr=0.05, outer_lr=0.5, adam_state="persistent")
    learner.meta_step(tasks)
    assert np.abs(model.get_weights()[0] - W).max() > 1e-4
    assert float(learner._t.numpy()) == 2 * 3 * 2  # t carried over all phases and tasks


def bn_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 2)), keras.layers.Conv2D(4, 3, padding="same", use_bias=False), keras.layers.BatchNormalization(),
        keras.layers.ReLU(), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1),
    ])


def test_k1_beta1_equals_sequential_keras_adam_including_batchnorm_statistics():
    rng = np.random.default_rng(2)
    sx, sy = rng.normal(size=(6, 8, 8, 2)).astype("float32"), rng.uniform(size=6).astype("float32")
    qx, qy = rng.normal(size=(4, 8, 8, 2)).astype("float32") + 1.0, rng.uniform(size=4).astype("float32")
    S, lr = 4, 1e-2

    ref = bn_model()
    for x, y in ((sx, sy), (qx, qy)):
        opt = keras.optimizers.Adam(lr, beta_1=0.9, beta_2=0.99, epsilon=1e-8)  # a fresh Adam per phase
        for _ in range(S):
            with tf.GradientTape() as tape:
                loss = tf.reduce_mean(tf.square(tf.reshape(ref(x, training=True), [-1]) - y))
            opt.apply_gradients(zip(tape.gradient(loss, ref.trainable_variables), ref.trainable_variables))

    model = bn_model()
    learner = MetaLearner(model, inner_steps=S, inner_lr=lr, outer_lr=1.0, beta_2=0.99)
    learner.meta_step([{"support_x": sx, "support_y": sy, "query_x": qx, "query_y": qy}])
    for a, b in zip(model.weights, ref.weights):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=2e-4, atol=2e-6, err_msg=a.path)
    # BN moving statistics moved (carried through the inner steps), they are not theta's start values
    bn = model.layers[1]
    assert np.abs(bn.moving_mean.numpy()).max() > 1e-4


def test_batchnorm_statistics_are_not_reset_between_tasks_or_averaged():
    rng = np.random.default_rng(3)
    task = lambda shift: {"support_x": rng.normal(size=(4, 8, 8, 2)).astype("float32") + shift,  # noqa: E731
                          "support_y": rng.uniform(size=4).astype("float32"),
                          "query_x": rng.normal(size=(4, 8, 8, 2)).astype("float32") + shift,
                          "query_y": rng.uniform(size=4).astype("float32")}
    model = bn_model()
    learner = MetaLearner(model, inner_steps=2, inner_lr=1e-3, outer_lr=0.5)
    learner.meta_step([task(5.0)])
    mm_after_one = model.layers[1].moving_mean.numpy().copy()
    learner.meta_step([task(-5.0), task(-5.0)])
    mm_after_two = model.layers[1].moving_mean.numpy()
    # 8 more momentum-0.99 updates towards the new task statistics: the running mean kept the first task's history
    assert np.abs(mm_after_two - mm_after_one).max() > 1e-3
    assert learner.trace_counts["task"] == 1


def test_no_retracing_across_meta_steps_task_counts_and_batch_sizes():
    rng = np.random.default_rng(4)
    model = linear_model()
    learner = MetaLearner(model, inner_steps=2, inner_lr=1e-2, outer_lr=0.5)
    learner.meta_step([make_task(rng)[0] for _ in range(3)])
    learner.meta_step([make_task(rng, sizes_s=(7, 2), sizes_q=(3,))[0]])
    learner.set_lr_factor(0.5)
    learner.meta_step([make_task(rng, sizes_s=(5,), sizes_q=(9, 1, 4))[0] for _ in range(2)])
    assert learner.trace_counts["task"] == 1
    assert learner.trace_counts["outer"] == 1
    np.testing.assert_allclose(learner.inner_lr.numpy(), 0.5e-2)


def test_meta_step_errors_are_clear():
    learner = MetaLearner(linear_model())
    with pytest.raises(ValueError, match="lacks"):
        learner.meta_step([{"support_x": np.zeros((2, 3), "float32")}])
    with pytest.raises(ValueError, match="at least one task"):
        learner.meta_step([])
    with pytest.raises(ValueError, match="adam_state"):
        MetaLearner(linear_model(), adam_state="sometimes")


def test_lr_schedules():
    assert lr_factor("paper", 4) == 1.0 and lr_factor("paper", 5) == pytest.approx(0.8)
    assert lr_factor("paper", 12) == pytest.approx(0.64)
    # official meta script: cumulative 0.9 ** (e // 2): epochs 0,1 -> 1; 2 -> 0.9; 3 -> 0.81; 4 -> 0.81 * 0.81
    assert [round(lr_factor("official", e), 6) for e in range(5)] == [1.0, 1.0, 0.9, 0.81, round(0.81 * 0.81, 6)]
    with pytest.raises(ValueError, match="Unknown LR schedule"):
        lr_factor("cosine", 1)


def dataset_tasks(rng, n=3, d=3):
    out = []
    for i in range(n):
        t, _ = make_task(rng, sizes_s=(10,), sizes_q=(6,))
        out.append({
            "type": i + 1, "name": f"type{i + 1}",
            "support": tf.data.Dataset.from_tensor_slices((t["support_x"], t["support_y"])).batch(4),
            "query": tf.data.Dataset.from_tensor_slices((t["query_x"], t["query_y"])).batch(3),
        })
    return out


def test_fit_meta_callbacks_checkpoint_and_resume(tmp_path):
    rng = np.random.default_rng(5)
    tasks = dataset_tasks(rng)
    state = tmp_path / "state"
    csv = tmp_path / "history.csv"
    model = linear_model()
    learner = MetaLearner(model, inner_steps=2, inner_lr=1e-2, outer_lr=0.5)
    hist = learner.fit_meta(tasks, epochs=2, tasks_per_batch=2, checkpoint_dir=state, verbose=0,
                            callbacks=[keras.callbacks.CSVLogger(str(csv))], lr_schedule=lambda e: 0.5 ** e)
    assert len(hist["query_loss"]) == 2 and hist["inner_lr"] == pytest.approx([1e-2, 5e-3])
    assert learner.trace_counts["task"] == 1
    from keras_iqa.training.runner import BackupStore

    assert [e["epoch"] for e in BackupStore(state).entries()] == [2, 1]  # the last two epochs, committed
    assert len(csv.read_text().strip().splitlines()) == 3
    w_after_2 = model.get_weights()

    # a new process-like start resumes after epoch 2 and runs only epoch 3
    model2 = linear_model(seed=99)
    learner2 = MetaLearner(model2, inner_steps=2, inner_lr=1e-2, outer_lr=0.5)
    calls = []
    cb = keras.callbacks.LambdaCallback(on_epoch_begin=lambda e, logs: calls.append(e))
    hist2 = learner2.fit_meta(tasks, epochs=3, tasks_per_batch=2, checkpoint_dir=state, verbose=0, callbacks=[cb],
                              lr_schedule=lambda e: 0.5 ** e)
    assert calls == [2]
    assert len(hist2["query_loss"]) == 3 and hist2["inner_lr"][-1] == pytest.approx(2.5e-3)
    assert not np.allclose(model2.get_weights()[0], w_after_2[0])  # it trained on from the restored weights


def test_fit_meta_meta_iterations_stop():
    rng = np.random.default_rng(6)
    learner = MetaLearner(linear_model(), inner_steps=1, inner_lr=1e-2, outer_lr=0.5)
    seen = []
    cb = keras.callbacks.LambdaCallback(on_train_batch_end=lambda b, logs: seen.append(logs["query_loss"]))
    learner.fit_meta(dataset_tasks(rng, n=4), meta_iterations=3, tasks_per_batch=2, verbose=0, callbacks=[cb])
    assert len(seen) == 3


def test_lodo_splits():
    tasks = [{"type": t, "name": f"d{t}"} for t in (1, 2, 3, 4)]
    splits = lodo_splits(tasks)
    assert [h["name"] for h, _ in splits] == ["d1", "d2", "d3", "d4"]
    for held, others in splits:
        assert held not in others and len(others) == 3
    only = lodo_splits(tasks, held_out=["d3", 1])
    assert [h["name"] for h, _ in only] == ["d3", "d1"]
    with pytest.raises(ValueError, match="not a task"):
        lodo_splits(tasks, held_out=["blur"])
    with pytest.raises(ValueError, match="at least 2"):
        lodo_splits(tasks[:1])


def test_leave_one_distortion_out_runs_end_to_end():
    rng = np.random.default_rng(7)
    tasks = dataset_tasks(rng, n=3)
    df = leave_one_distortion_out(tasks, lambda: linear_model(), held_out=["type2"], meta={"inner_steps": 1, "inner_lr": 1e-2},
                                  fit={"epochs": 1, "tasks_per_batch": 2}, tune={"epochs": 1, "lr": 1e-2})
    assert list(df["held_out"]) == ["type2"] and int(df["n"].iloc[0]) == 10 + 6  # every image of the held-out type
    assert np.isfinite(df["srocc"].iloc[0])


def test_synthetic_to_authentic_and_table4_baseline_helpers():
    from keras_iqa.tasks.metaiqa import baseline_then_finetune, synthetic_to_authentic, tasks_to_dataset

    rng = np.random.default_rng(8)
    tasks = dataset_tasks(rng, n=3)
    assert sum(int(tf.shape(x)[0]) for x, _ in tasks_to_dataset(tasks)) == 3 * (10 + 6)
    t, _ = make_task(rng, sizes_s=(12,), sizes_q=(8,))
    train = tf.data.Dataset.from_tensor_slices((t["support_x"], t["support_y"])).batch(4)
    test = [(t["query_x"], t["query_y"])]
    evals = []
    out = synthetic_to_authentic(tasks, lambda: linear_model(), train, test, meta={"inner_steps": 1, "inner_lr": 1e-2},
                                 fit={"epochs": 2, "tasks_per_batch": 2, "eval_fn": lambda m: evals.append(1) or {"x": 1.0}},
                                 tune={"epochs": 1, "lr": 1e-2})
    assert out["test"]["n"] == 8 and np.isfinite(out["test"]["plcc"]) and len(evals) == 2 and out["meta"]["x"] == [1.0, 1.0]
    base = baseline_then_finetune(tasks, lambda: linear_model(), train, test, pretrain_epochs=1, tune={"epochs": 1})
    assert base["test"]["n"] == 8 and len(base["pretrain"]["loss"]) == 1


def test_official_finetune_schedule_is_cumulative():
    # MetaIQA_FineTune_WILDLIVE.py multiplies the current LR by 0.8 ** (e // 10) every epoch
    assert lr_factor("official-finetune", 9) == 1.0
    assert lr_factor("official-finetune", 10) == pytest.approx(0.8)
    assert lr_factor("official-finetune", 11) == pytest.approx(0.64)
    assert lr_factor("official-finetune", 20) == pytest.approx(0.8 ** 10 * 0.64)


def test_lodo_default_tests_every_held_out_image_without_finetuning(monkeypatch):
    """Paper Sec. 4.4: N-1 types train, "the remaining one kind of distortion is used for performance test"."""
    import keras_iqa.tasks.metaiqa_protocols as M

    def no_finetune(*a, **k):
        raise AssertionError("the paper's LODO does not fine-tune on the held-out type")

    monkeypatch.setattr(M, "finetune", no_finetune)
    tasks = dataset_tasks(np.random.default_rng(9), n=3)
    df = leave_one_distortion_out(tasks, lambda: linear_model(), held_out=["type3"], meta={"inner_steps": 1},
                                  fit={"epochs": 1, "tasks_per_batch": 2})
    assert int(df["n"].iloc[0]) == 10 + 6 and not bool(df["finetuned"].iloc[0])  # support + query of type3
    with pytest.raises(ValueError, match="held_out_data"):
        leave_one_distortion_out(tasks, lambda: linear_model(), held_out=["type3"], finetune_on_held_out=True)


def test_lodo_reference_split_is_reference_disjoint():
    from keras_iqa.tasks.metaiqa import lodo_reference_split

    ids = [f"r{r}_l{lv}" for r in range(5) for lv in range(4)]
    refs = [i.split("_")[0] for i in ids]
    ft, test = lodo_reference_split(ids, refs, 0.8, seed=3)
    ref = dict(zip(ids, refs))
    assert sorted(ft + test) == sorted(ids) and len({ref[i] for i in ft}) == 4 and len({ref[i] for i in test}) == 1
    assert not {ref[i] for i in ft} & {ref[i] for i in test}
    with pytest.raises(ValueError, match="references"):
        lodo_reference_split(ids[:4], refs[:4])


def test_old_import_paths_are_the_new_objects():
    """`keras_iqa.training.meta` (the learner, fine-tuning and protocols before issue 23) re-exports their new homes."""
    import keras_iqa.tasks.metaiqa as T
    import keras_iqa.training.meta as old
    import keras_iqa.training.meta_learner as L

    for name in old.__all__:
        assert getattr(old, name) is getattr(T, name), name
    assert old.MetaLearner is L.MetaLearner and old.lr_factor is L.lr_factor
    with pytest.raises(AttributeError, match="no attribute"):
        T.not_a_name
