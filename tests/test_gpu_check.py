"""bench/gpu_check.py: without a GPU it says so and exits 0; its table from fake rows."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_without_a_gpu_says_so_and_exits_0():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2",
               PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    before = sorted((ROOT / "bench" / "results").glob("gpu_check*"))
    out = subprocess.run([sys.executable, "-m", "bench.gpu_check", "--quick"], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "no GPU visible" in out.stdout and "nothing measured" in out.stdout, out.stdout
    assert sorted((ROOT / "bench" / "results").glob("gpu_check*")) == before  # no table written without a GPU


def test_gpu_check_table_has_one_line_per_family_with_peers_and_skips():
    from bench import gpu_check as g

    rows = [{"family": "reqa", "name": "reqa train", "items_per_s": 120.04, "policy": "mixed_bfloat16"},
            {"family": "reqa", "name": "reqa train XLA", "items_per_s": 150.0},
            {"family": "reqa", "name": "reqa SavedModel scoring", "items_per_s": 40.0},
            {"family": "reqa", "name": "reqa train (PyTorch peer)", "skipped": "torch is not installed"},
            {"family": "hcl", "name": "hcl train", "error": "exit 1: Traceback\nResourceExhaustedError: OOM"}]
    md = g.table(rows, {"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    lines = md.splitlines()
    assert "NVIDIA H100 80GB HBM3 (compute capability 9.0)" in lines[0]
    assert "| reqa (batch 15) | mixed_bfloat16 | 120.0 | 150.0 | 40.0 | torch is not installed |" in lines
    assert any(l.startswith("| hcl (batch 8) |") and "ResourceExhaustedError: OOM" in l and "no peer" in l for l in lines)
    assert any(l.startswith("| metaiqa (batch 32) | - | - | - | - | - |") for l in lines)
