"""Distribution: `tf.distribute` strategies by name, the global batch check, DATA sharding, the worker's role, and the
workarounds `fit` needs under `MultiWorkerMirroredStrategy`."""

from __future__ import annotations

from keras_iqa.caller import setting

_STRATEGIES: dict = {}


def get_strategy(name: str = "auto"):
    """`tf.distribute` strategy by name: auto (default strategy), mirrored (all local GPUs; the CPU without GPUs),
    multiworker (the hosts of TF_CONFIG). One instance per name and process (a multi-worker strategy can be created only
    once, before other TensorFlow work: commands create it first)."""
    import tensorflow as tf

    name = (name or "auto").lower()
    if name in ("auto", "none", "default"):
        return tf.distribute.get_strategy()
    key = {"multi_worker": "multiworker", "multi-worker": "multiworker"}.get(name, name)
    if key not in ("mirrored", "multiworker"):
        raise ValueError(f"Unknown {setting('distribute', name)}; use auto, mirrored or multiworker")
    if key not in _STRATEGIES:
        if key == "mirrored":
            _STRATEGIES[key] = tf.distribute.MirroredStrategy()
        else:
            _STRATEGIES[key] = tf.distribute.MultiWorkerMirroredStrategy()
    return _STRATEGIES[key]


def check_global_batch(batch_size: int, strategy, name: str = "batch_size") -> None:
    """Raises a ValueError unless `batch_size` splits into equal shares over the strategy's replicas (each replica's loss
    is the mean over its share; equal shares make the replica average the mean over the global batch)."""
    replicas = int(getattr(strategy, "num_replicas_in_sync", 1))
    if replicas > 1 and int(batch_size) % replicas:
        raise ValueError(f"{name}={batch_size} does not split into {replicas} equal shares over the {replicas} replicas of "
                         f"the distribution strategy; use a multiple of {replicas} ({setting(name, ...)})")


def shard_by_data(dataset):
    """`dataset` with `tf.data` auto-sharding by DATA: every worker runs the whole (seeded, identical) pipeline and keeps
    its part of each global batch, so sampler batches (e.g. REQA's quality-bin micro-batches) stay whole; file-based
    sharding would give each worker other files and break them."""
    import tensorflow as tf

    if not isinstance(dataset, tf.data.Dataset):
        return dataset
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)



def worker_info(strategy=None) -> tuple:
    """(is_chief, task_id) of this process in a multi-worker `strategy` (TF_CONFIG); (True, 0) otherwise."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return True, 0
    cluster = resolver.cluster_spec().as_dict()
    if not cluster:
        return True, 0
    task_type, task_id = resolver.task_type, int(resolver.task_id or 0)
    chief = task_type == "chief" or (task_type == "worker" and task_id == 0 and "chief" not in cluster)
    return chief, task_id



class _multi_worker_fit:
    """Works around two Keras 3.15 failures of `fit` under `MultiWorkerMirroredStrategy` (for the duration of `fit`):

    - before the first step, Keras's TF trainer reduces a distributed input batch with `strategy.reduce("MEAN", (x, y))`
      for its symbolic build, and the multi-worker strategy rejects a nested value ("Attempt to convert a value
      (PerReplica...) to a Tensor"). A model whose layers are all built needs no symbolic build: the model forgets its
      creation strategy (Keras then takes the current one, `tf.distribute.get_strategy()`, inside the same
      `strategy.scope()`), which skips that step;
    - each step's logs are reduced with `strategy.reduce("MEAN", value, axis=0)`, which fails on scalars ("Invalid
      reduction dimension 0 for input with 0 dimensions"): the steps return each scalar log as a 1-vector, which that
      reduction averages over the workers back to a scalar. Epoch logs still come from every replica's metrics.
    """

    def __init__(self, model):
        import tensorflow as tf

        strategy = getattr(model, "distribute_strategy", None)
        self.model, self.strategy = model, strategy
        self.active = (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and model.built
                       and getattr(model, "_distribute_strategy", None) is strategy)
        self.scope = strategy.scope() if self.active else None

    @staticmethod
    def _vector_logs(step):
        import tensorflow as tf

        def wrapped(data):
            logs = step(data)
            return {k: tf.reshape(v, [1]) if getattr(v, "shape", None) is not None and len(v.shape) == 0 else v
                    for k, v in logs.items()} if isinstance(logs, dict) else logs

        return wrapped

    def __enter__(self):
        if self.active:
            self.scope.__enter__()
            self.model._distribute_strategy = None
            self.model.train_step = self._vector_logs(type(self.model).train_step.__get__(self.model))
            self.model.test_step = self._vector_logs(type(self.model).test_step.__get__(self.model))
        return self

    def __exit__(self, *exc):
        if self.active:
            self.model._distribute_strategy = self.strategy
            for name in ("train_step", "test_step"):
                self.model.__dict__.pop(name, None)
            self.scope.__exit__(*exc)
        return False
