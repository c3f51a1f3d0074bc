"""Imports belong at the top of the module (issue 23: "imports inside functions").

An import inside a function is allowed only when it is
  (a) heavy (tensorflow, keras, keras_hub, apache_beam, pandas, scipy, skimage, matplotlib; numpy counts as light) in a
      module that must stay light to import: what `import keras_iqa`, `keras_iqa.cli` building its parser
      (`keras-iqa --help`, `keras-iqa models`), `keras_iqa.registry`, `keras_iqa.config`, `keras_iqa.tasks`,
      `keras_iqa.scoring`, `keras_iqa.presets`, `keras_iqa.evaluation.reports` and `keras_iqa.training.runner` load
      (read from `sys.modules` in a fresh interpreter below; the guards that keep them light are the `sys.modules`
      checks in tests/keras_iqa/test_cli_rules.py, test_score_api.py and test_presets.py);
  (b) an optional extra (apache_beam, ai_edge_litert, torch, safetensors, huggingface_hub, ...: not in setup.py's CORE);
  (c) a real import-cycle break, marked `# import cycle: <a> -> <b>` on the line.
Everything else goes to the module top. What this test checks, read from the source with `ast`:
  - no in-function import of a standard-library module (`sys.stdlib_module_names`), except under
    `try: ... except ImportError`;
  - no in-function import of a module the same file already imports at top level;
  - no in-function project import (keras_iqa / data_pipeline) outside the must-stay-light modules, unless marked
    `# import cycle:` or listed in LATE below with its reason.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("keras_iqa", "data_pipeline")

# in-function project imports that must stay late, with why (file, imported module) -> reason
LATE = {
    ("keras_iqa/evaluation/sources.py", "data_pipeline.input"):
        "tests/keras_iqa/test_evaluation.py and test_progress.py swap sys.modules['data_pipeline.input'] for a stub reader",
}

_LIGHT_PROBE = """
import json, sys
import keras_iqa, keras_iqa.registry, keras_iqa.config, keras_iqa.tasks, keras_iqa.scoring, keras_iqa.presets
import keras_iqa.evaluation.reports, keras_iqa.training.runner
from keras_iqa import cli
cli.build_parser()
cli.main(["models"])
heavy = [m for m in ("tensorflow", "keras", "apache_beam", "torch") if m in sys.modules]
print(json.dumps({"heavy": heavy, "light": sorted(m for m in sys.modules if m.split(".")[0] in %r)}))
""" % (PACKAGES,)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _light_modules() -> set:
    res = subprocess.run([sys.executable, "-c", _LIGHT_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["heavy"] == [], f"the light entry points import {out['heavy']}"
    return set(out["light"])


def _resolve(node, module: str, is_package: bool) -> str:
    if isinstance(node, ast.Import):
        return node.names[0].name
    base = node.module or ""
    if node.level:
        pkg = module.split(".") if is_package else module.split(".")[:-1]
        pkg = pkg[:len(pkg) - (node.level - 1)]
        base = ".".join(pkg + ([base] if base else []))
    return base


def _in_function_imports(tree):
    """(import node, guarded by `except ImportError`) for every import inside a function body."""
    out = []

    def visit(node, in_func, guarded):
        for child in ast.iter_child_nodes(node):
            g = guarded
            if isinstance(node, ast.Try) and child in node.body:
                g = guarded or any(h.type is not None and ("ImportError" in ast.unparse(h.type)
                                                          or "ModuleNotFoundError" in ast.unparse(h.type))
                                   for h in node.handlers)
            if isinstance(child, (ast.Import, ast.ImportFrom)) and in_func:
                out.append((child, g))
            visit(child, in_func or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)), g)

    visit(tree, False, False)
    return out


def _top_level_modules(tree, module, is_package) -> set:
    mods = set()
    for stmt in tree.body:
        for node in ([stmt] if not isinstance(stmt, (ast.If, ast.Try)) else ast.walk(stmt)):
            if isinstance(node, ast.Import):
                mods.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(node, module, is_package)
                mods.add(base)
                mods.update(f"{base}.{a.name}" for a in node.names)
    return mods


def violations(light: set) -> list:
    files = {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}
    bad = []
    for module, path in files.items():
        src = path.read_text(encoding="utf-8")
        tree = ast.parse(src, filename=str(path))
        lines = src.splitlines()
        is_package = path.name == "__init__.py"
        top = _top_level_modules(tree, module, is_package)
        rel = path.relative_to(ROOT).as_posix()
        for node, guarded in _in_function_imports(tree):
            base = _resolve(node, module, is_package)
            where = f"{rel}:{node.lineno}: {lines[node.lineno - 1].strip()}"
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:  # `from pkg import sub`: the submodule when it is one of ours, else the module itself
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            if base.split(".")[0] in sys.stdlib_module_names and not guarded:
                bad.append(f"{where}  -> standard library: import it at the module top")
            elif all(t in top for t in targets):
                bad.append(f"{where}  -> already imported at the top of this file: use that import")
            elif base.split(".")[0] in PACKAGES and module not in light and not guarded:
                if "# import cycle:" in lines[node.lineno - 1] or (rel, base) in LATE:
                    continue
                bad.append(f"{where}  -> project import in a module that need not stay light: move it to the top "
                           "(or mark a real cycle break `# import cycle: <a> -> <b>`)")
    return bad


def test_no_needless_imports_inside_functions():
    bad = violations(_light_modules())
    assert not bad, ("imports inside functions that belong at the module top (rules in tests/test_import_policy.py):\n"
                     + "\n".join(bad))


def test_the_check_sees_each_kind(tmp_path, monkeypatch):
    """The walk finds nested, method and guarded imports; stdlib and redundant ones are named."""
    src = ("import os\nimport numpy as np\n\ndef f():\n    import json\n    import numpy as np\n    try:\n"
           "        import tomllib\n    except ImportError:\n        pass\n\nclass C:\n    def m(self):\n"
           "        def inner():\n            from keras_iqa import registry\n")
    tree = ast.parse(src)
    found = [(n.lineno, g) for n, g in _in_function_imports(tree)]
    assert found == [(5, False), (6, False), (8, True), (15, False)]
    pkg = tmp_path / "keras_iqa"
    pkg.mkdir()
    (pkg / "probe_mod.py").write_text(src)
    (tmp_path / "data_pipeline").mkdir()
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    bad = violations(light=set())
    rules = ("standard library", "already imported", "project import")
    assert [(b.split(":")[1], [r for r in rules if f"-> {r}" in b]) for b in bad] == [
        ("5", ["standard library"]), ("6", ["already imported"]), ("15", ["project import"])]
    assert violations(light={"keras_iqa.probe_mod"}) == bad[:2]  # light modules may import the project late


_TF_FREE_PROBE = """
import os, sys
import data_pipeline.images, data_pipeline.test_time, data_pipeline.sources, data_pipeline.beam.writer
import data_pipeline.beam.synthesize, keras_iqa.training.cpu, keras_iqa.export.contract, keras_iqa.export.tflite_scorer
import keras_iqa.scoring.loading
print(sorted(m for m in ("tensorflow", "keras") if m in sys.modules))
"""


def test_pillow_and_tflite_paths_do_not_import_tensorflow():
    """Modules with a Pillow / numpy path import TensorFlow only inside the functions that need it: decoding and
    test-time crops on numpy images, the Beam writer's and synthesizer's workers, scoring a .tflite file (the contract
    sidecar), and `training.cpu`, which must set TF_ENABLE_ONEDNN_OPTS before TensorFlow is first imported."""
    res = subprocess.run([sys.executable, "-c", _TF_FREE_PROBE], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == "[]", res.stdout
