"""bench.run: a failing area is recorded and the run goes on; the summary table is written. No real benchmark runs here."""

import json
import os
import sys
import textwrap

import pytest

from bench import run as bench_run

FAKE_OK = textwrap.dedent('''
    def main(quick=False):
        doc = {"area": "fake_ok", "machine": {"cpus": 2}, "quick": quick, "peak_rss_mib": 12.0,
               "results": [{"name": "step", "median_s": 0.5, "min_s": 0.4, "max_s": 0.6, "repeats": 3, "items": 8,
                            "items_per_s": 16.0, "ms_per_item": 62.5, "batch": 8}]}
        return doc
''')
FAKE_TABLE = "def main(quick=False):\n    return {'results': [{'name': 'x'}], 'table_md': '| fake | table |'}\n"
FAKE_BAD = "def main(quick=False):\n    raise RuntimeError('boom: out of fake memory')\n"
FAKE_HANG = "import time\ndef main(quick=False):\n    time.sleep(60)\n    return {}\n"
FAKE_NOT_DICT = "def main(quick=False):\n    return 42\n"


@pytest.fixture
def fake_pkg(tmp_path):
    pkg = tmp_path / "fakebench"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name, src in {"fake_ok": FAKE_OK, "fake_bad": FAKE_BAD, "fake_hang": FAKE_HANG, "fake_nd": FAKE_NOT_DICT,
                      "fake_table": FAKE_TABLE}.items():
        (pkg / f"{name}.py").write_text(src)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    return tmp_path, env


def test_failing_and_passing_areas(fake_pkg, tmp_path):
    root, env = fake_pkg
    out = tmp_path / "results"
    records = bench_run.run_all(["fakebench.fake_bad", "fakebench.fake_ok", "fakebench.fake_nd", "fakebench.fake_hang",
                                 "fakebench.fake_table"],
                                quick=True, timeout=10, results_dir=out, env=env, log=lambda *_: None)
    status = {r["area"]: r["status"] for r in records}
    assert status == {"fake_bad": "failed", "fake_ok": "ok", "fake_nd": "failed", "fake_hang": "timeout", "fake_table": "ok"}
    assert "boom: out of fake memory" in records[0]["error"]
    assert "expected the dict" in records[2]["error"]
    assert records[1]["doc"]["quick"] is True  # --quick reached the area's main
    summary = (out / "summary.md").read_text()
    assert "Quick smoke pass" in summary
    assert "| fake_ok | ok |" in summary and "| fake_bad | **failed** |" in summary and "| fake_hang | **timeout** |" in summary
    assert "| step | 16.00 | 62.50 |" in summary and "batch=8" in summary
    assert "| fake | table |" in summary and "boom" in summary
    runs = json.loads((out / "runs.json").read_text())
    assert [r["area"] for r in runs] == ["fake_bad", "fake_ok", "fake_nd", "fake_hang", "fake_table"]
    assert "All entries: `bench/results/fake_table.json`" in summary


def test_discover_and_cli(tmp_path, capsys):
    (tmp_path / "common.py").write_text("")
    (tmp_path / "run.py").write_text("")
    (tmp_path / "_helper.py").write_text("")
    for n in ("zeta", "roofline", "backbones", "data_pipeline"):
        (tmp_path / f"{n}.py").write_text("")
    assert bench_run.discover(tmp_path) == ["data_pipeline", "backbones", "roofline", "zeta"]
    assert "backbones" in bench_run.discover()  # the real bench/ directory
    assert bench_run.main(["--only", "no_such_area"]) == 2
    assert "unknown area" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        bench_run.main(["--help"])
    assert e.value.code == 0
    assert "Examples" in capsys.readouterr().out


def test_configure_cpu_precision_choice():
    from keras_iqa.training import cpu

    assert cpu.resolve_precision("auto", flags={"avx512f", "avx512_bf16"}) == "bf16"
    assert cpu.resolve_precision("auto", flags={"amx_bf16"}) == "bf16"
    assert cpu.resolve_precision("auto", flags={"avx2"}) == "fp32"
    assert cpu.resolve_precision("auto", flags={"avx512_bf16"}, gpu=True) == "fp32"
    assert cpu.resolve_precision("fp32", flags={"avx512_bf16"}) == "fp32"
    with pytest.raises(ValueError, match="'fp16'"):
        cpu.resolve_precision("fp16")


def test_configure_cpu_applies_policy_in_fresh_process(tmp_path):
    import subprocess

    code = ("from keras_iqa.training.cpu import configure_cpu; import keras, json, tensorflow as tf;"
            "a = configure_cpu('bf16', threads=1);"
            "print(json.dumps([a['policy'], keras.mixed_precision.global_policy().name, a['threads_applied'],"
            " tf.config.threading.get_intra_op_parallelism_threads()]))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["mixed_bfloat16", "mixed_bfloat16", True, 1]


def test_backbone_table_and_roofline_fractions_from_fake_results():
    from bench import backbones, roofline

    row = {"name": "resnet50-train-b16", "model": "ResNet-50", "mode": "train", "batch": 16, "size": 224,
           "ours": 12.0, "torch": 10.0, "ours_config": "bf16-graph", "torch_config": "fp32-channels_last",
           "ratio_ours_over_torch": 1.2, "ratio_min": 1.1, "ratio_max": 1.3, "cpu_ratio_ours_over_torch": 1.15,
           "target": ">= 1.1", "target_met": True}
    lat = dict(row, name="resnet50-infer-b1", mode="infer", batch=1, ours=20.0, torch=25.0, ratio_ours_over_torch=0.8,
               target="<= 1.0", target_met=True)
    md = backbones.table([row, lat, {"model": "ResNet-18", "mode": "train", "batch": 32, "error": "RuntimeError: x"}])
    assert "| ResNet-50 | train images/s | 16 | 12.00 (bf16-graph) | 10.00 (fp32-channels_last) | 1.200 [1.100, 1.300]" in md
    assert "batch-1 latency ms" in md and "failed: RuntimeError: x" in md
    flops = {"ResNet-50": {"forward_flops_tf_profiler": 8e9}}
    rows = roofline.achieved({"results": [row, lat]}, flops, {"fp32": 100.0, "bf16": 400.0})
    got = {r["name"]: (round(r["achieved_gflops"], 3), round(r["fraction_of_peak"], 4)) for r in rows}
    assert got == {"resnet50-train-b16-ours": (288.0, 0.72), "resnet50-train-b16-pytorch": (240.0, 2.4),
                   "resnet50-infer-b1-ours": (400.0, 1.0), "resnet50-infer-b1-pytorch": (320.0, 3.2)}


def test_hcl_restoration_check_reports_gain_by_type_and_level():
    """The tiny restoration-vs-identity measurement (bench/hcl.py) on a 5-step run: its bookkeeping, not its result."""
    from bench.hcl import restoration_check

    r = restoration_check(steps=5, types=(1, 11), levels=(4, 5), holdout=("coffee",), long_side=64, output="residual",
                          input_skip=True, pixel_loss="psnr")
    before, after = r["before_training"], r["after_training"]
    assert abs(before["psnr_gain"]) < 0.05  # residual head + input skip start at the identity
    assert before["n_pairs"] + before["n_unchanged"] == r["holdout_pairs"] * 8 == 4 * 8
    assert set(after["psnr_gain_by_type"]) == {1, 11} and set(after["psnr_gain_by_level"]) == {4, 5}
    assert r["pixel_loss"] == "psnr" and r["steps"] == 5 and len(r["types"]) == 2


def test_tf_worker_runs_the_bn_folded_inference_candidate():
    """The `bf16-folded` latency candidate (frozen graph of `fold_batch_norm`'s copy) builds and serves timed blocks."""
    from bench.backbones import Worker

    w = Worker(dict(framework="tf", config="bf16-folded", depth=18, mode="infer", batch=1, size=32, width=0.125,
                    blocks=[1, 1, 1, 1], threads=1, warmup=1), timeout=300)
    try:
        times = w.run(2)
        assert len(times) == 2 and all(t > 0 for t in times)
        assert w.ready["info"]["policy"] == "mixed_bfloat16" and w.ready["info"]["params"] > 0
    finally:
        assert w.close() is not None  # clean exit with its peak RSS


def test_deploy_area_runs_each_model_in_its_own_process():
    """bench/deploy.py: a model runs in a child process; its failure comes back as rows (with the child's peak RSS)."""
    from bench.deploy import _run_model_process

    rows = _run_model_process("no-such-model", quick=True, timeout=300)
    assert [r["name"] for r in rows] == ["error", "peak_rss"]
    assert "no-such-model" in rows[0]["error"] and rows[1]["peak_rss_mib"] > 0


def test_measure_stops_at_its_time_budget():
    from bench.common import measure

    calls = []

    def slow():
        calls.append(1)
        import time
        time.sleep(0.05)

    full = measure(slow, repeats=4, warmup=1)
    assert full["repeats"] == 4 and len(calls) == 5
    calls.clear()
    cut = measure(slow, repeats=50, warmup=1, budget_s=0.12, items=2)
    assert 2 <= cut["repeats"] <= 4 and len(calls) == cut["repeats"] + 1  # stopped after ~0.12 s of timed runs
    assert cut["items_per_s"] == pytest.approx(2 / cut["median_s"])
    assert measure(slow, repeats=5, budget_s=0.0)["repeats"] == 2  # never fewer than 2 timed runs


def test_quick_results_never_replace_a_full_run(tmp_path, monkeypatch):
    from bench import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    common.write_results("area", [{"name": "full"}])
    doc = common.write_results("area", [{"name": "smoke"}], quick=True)
    assert doc["quick"] is True
    assert json.loads((tmp_path / "area.json").read_text())["results"] == [{"name": "full"}]
    assert json.loads((tmp_path / "area_quick.json").read_text())["results"] == [{"name": "smoke"}]
