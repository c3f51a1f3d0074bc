"""Every third-party module the tests import is declared by setup.py (CORE or the `[dev]` extra), not left to arrive
through another package's dependencies."""

import ast
import re
import runpy
import sys
from importlib.metadata import packages_distributions
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).parents[1]
LOCAL = {"keras_iqa", "data_pipeline", "bench", "tests", "iqa_test_case", "distributed_checks", "run_checks"}


def _declared() -> set:
    """Normalised distribution names of CORE + `[dev]`, read by running setup.py with `setup()` captured."""
    seen = {}
    with mock.patch("setuptools.setup", lambda **kw: seen.update(kw)):
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    reqs = seen["install_requires"] + seen["extras_require"]["dev"]
    return {re.split(r"[\[<>=!~; ]", r, maxsplit=1)[0].lower().replace("_", "-") for r in reqs}


def _imported_by_tests() -> dict:
    """{top-level module: first test file importing it} for the absolute imports of tests/."""
    out = {}
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else [])
            for name in names:
                out.setdefault(name.split(".")[0], path.relative_to(ROOT))
    return out


def test_every_module_the_tests_import_is_declared():
    declared, dists = _declared(), packages_distributions()
    missing = []
    for module, where in sorted(_imported_by_tests().items()):
        if module in sys.stdlib_module_names or module in LOCAL:
            continue
        owners = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        if not owners & declared:
            missing.append(f"{module} ({where}; distribution {sorted(owners) or 'not installed'})")
    assert not missing, "add to setup.py's [dev] extra: " + ", ".join(missing)


def test_the_check_sees_an_undeclared_module():
    """networkx arrives through scikit-image and torch; without its own entry the check above reports it."""
    declared = _declared()
    assert "networkx" in declared and "networkx" in _imported_by_tests()
    owners = {d.lower() for d in packages_distributions()["networkx"]}
    assert owners & (declared - {"networkx"}) == set()
