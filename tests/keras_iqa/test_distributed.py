"""Multi-device training (`--distribute`): one step on 2 replicas equals one step on 1 device, for every family.

The 2 replicas are 2 logical CPU devices, which TensorFlow allows only before it starts, so the checks run in ONE
subprocess (tests/keras_iqa/distributed_checks.py; its docstring explains the BatchNorm choice) and the rest of the suite
keeps its single device. Optimizers: plain SGD where the check is about the loss scaling (Adam's first step is almost
lr * sign(g), blind to a gradient off by the replica count; SGD's is not), FusedAdam once for the real REQA setting.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from run_checks import check_model_test_metrics

HERE = Path(__file__).parent
TOL = 1e-5


@pytest.fixture(scope="module")
def checks(tmp_path_factory):
    out = tmp_path_factory.mktemp("distributed") / "checks.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parents[1]), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(HERE / "distributed_checks.py"), str(out)], env=env, capture_output=True,
                          text=True, timeout=1500)
    assert proc.returncode == 0 and out.exists(), proc.stderr[-3000:]
    return json.loads(out.read_text())


def _ok(result, name):
    assert "error" not in result, f"{name}: {result.get('error')}\n{result.get('traceback', '')}"
    assert result["moved"] > 100 * TOL, f"{name}: the step barely moved the weights ({result['moved']}): the check is blind"
    # float32: summing a batch's gradients as two replica halves reorders the additions, so the weights may differ by a
    # few dozen float32 roundings of the step's size (1e-5 relative = 84 eps); a wrong replica scaling differs by ~1/2.
    tol = max(TOL, 1e-5 * result["moved"])
    assert result["max_diff"] < tol, f"{name}: 2 replicas differ from 1 device by {result['max_diff']} (bound {tol})"


def test_two_logical_devices(checks):
    assert checks["replicas"] == 2


@pytest.mark.parametrize("name", ["reqa_sgd", "reqa_fused_adam"])
def test_reqa_step_on_two_replicas_equals_one_device(checks, name):
    """REQA's custom train_step: two micro-batches of 5, one per replica; loss and coupled L2 scaled by 1/replicas, both
    optimizers (backbone and rest) step once."""
    _ok(checks[name], name)
    assert checks[name]["iterations"] == [1, 1]


def test_hcl_two_optimizer_step_on_two_replicas_equals_one_device(checks):
    _ok(checks["hcl_finetune"], "hcl_finetune")
    assert checks["hcl_finetune"]["iterations"] == [1, 1]


def test_hcl_synthetic_compute_loss_is_scaled_for_replicas(checks):
    _ok(checks["hcl_synthetic"], "hcl_synthetic")


@pytest.mark.parametrize("name", ["metaiqa_2_tasks", "metaiqa_3_tasks"])
def test_metaiqa_meta_step_spreads_tasks_and_equals_one_device(checks, name):
    """Tasks spread over the replicas (3 tasks: 2 on replica 0, 1 on replica 1), first-order outer update once; the
    one-device learner runs the original variable-based loop, the distributed one `stateless_call`."""
    r = checks[name]
    _ok(r, name)
    assert r["distributed"] and r["single"] and r["loss_diff"] < TOL
    assert r["traces_after_second_step"] == {"distributed": 1}, "the distributed meta step retraced"


def test_train_metaiqa_cli_runs_under_mirrored_and_rejects_persistent_adam(tmp_path):
    """`--distribute` is wired for MetaIQA (it used to raise NotImplementedError): meta-training through the distributed
    meta step (one replica on this CPU), fine-tuning through Keras fit; the official persistent Adam state is refused."""
    from data_pipeline.fixtures import write_tiny_records
    from keras_iqa.cli import main

    write_tiny_records(str(tmp_path / "syn"), kind="synthetic", n=24, n_types=2)
    write_tiny_records(str(tmp_path / "auth"), kind="authentic", n=20)
    base = ["train", "metaiqa", "--meta-data", str(tmp_path / "syn"), "--data", str(tmp_path / "auth"), "--model",
            "metaiqa-tiny", "--crop-size", "32", "--batch-size", "4", "--distribute", "mirrored", "--quiet",
            "--set", "meta_epochs=1", "--set", "finetune_epochs=1", "--set", "inner_steps=1", "--set", "tasks_per_batch=2"]
    assert main(base + ["--out", str(tmp_path / "run")]) == 0
    res = json.loads((tmp_path / "run" / "results.json").read_text())
    assert res["meta_traces"] == {"distributed": 1}
    check_model_test_metrics(tmp_path / "run", tmp_path / "auth")  # SROCC / PLCC = scipy's, one row per test image
    assert main(base + ["--out", str(tmp_path / "off"), "--set", "adam_state=persistent"]) == 2
    assert not (tmp_path / "off").exists()
