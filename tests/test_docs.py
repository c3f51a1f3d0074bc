"""The documentation: the MkDocs site builds strictly, the README stays a user's README, design references in the code
point to pages that exist, and the self-contained docstring examples run."""

from __future__ import annotations

import doctest
import importlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CODE_DIRS = ("keras_iqa", "data_pipeline", "bench")
#: Modules whose `>>>` examples are fast, with the names their examples take as given.
DOCTEST_MODULES = ("keras_iqa.registry", "data_pipeline.test_time")


def _doctest_globals(name):
    if name == "data_pipeline.test_time":  # the example scores a photo with "a model"
        import numpy as np

        import keras_iqa
        rng = np.random.default_rng(0)
        return {"model": keras_iqa.create_model("metaiqa-tiny"),
                "image_uint8": rng.integers(0, 256, (80, 100, 3), dtype=np.uint8)}
    return {}


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs")
    pytest.importorskip("mkdocstrings_handlers.python")
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "api" / "index.html").exists()


def test_every_docs_page_is_in_nav():
    yaml = pytest.importorskip("yaml")
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    # mkdocs.yml may hold python tags in other setups; this one is plain YAML
    nav = yaml.safe_load(text)["nav"]

    def pages(item):
        if isinstance(item, str):
            yield item
        elif isinstance(item, list):
            for x in item:
                yield from pages(x)
        elif isinstance(item, dict):
            for v in item.values():
                yield from pages(v)

    in_nav = set(pages(nav))
    on_disk = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")}
    assert on_disk - in_nav == set(), "pages missing from mkdocs.yml nav"
    assert in_nav - on_disk == set(), "nav entries without a page"


def test_readme_is_for_users():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    assert not re.search(r"\bsessions?\b", text, re.IGNORECASE), "README speaks of sessions"
    assert not re.search(r"\bcommit\s+[0-9a-f]{7,40}\b", text, re.IGNORECASE), "README cites commit ids"
    for cmd in ("make demo", "make test", "mkdocs serve", "mkdocs build --strict", "load_scorer", "score_paths",
                "score_images", "keras-iqa prepare", "keras-iqa train", "keras-iqa evaluate", "keras-iqa export"):
        assert cmd in text, cmd
    for link in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / link).exists(), link


def _code_files():
    for d in CODE_DIRS:
        yield from sorted((ROOT / d).rglob("*.py"))


def test_design_references_point_to_pages_in_the_repo():
    missing = []
    for path in _code_files():
        text = path.read_text(encoding="utf-8")
        rel = path.relative_to(ROOT)
        for m in re.finditer(r"\bspec/[\w./-]*|\bDESIGN\.md\b", text):
            target = m.group(0).rstrip(".")
            if not (ROOT / target).exists():
                missing.append(f"{rel}: {target}")
        for m in re.finditer(r"\bdocs/[\w/-]+\.md\b", text):
            if not (ROOT / m.group(0)).exists():
                missing.append(f"{rel}: {m.group(0)}")
    assert missing == []


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    res = doctest.testmod(module, extraglobs=_doctest_globals(name),
                          optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert res.attempted > 0, f"no examples in {name}"
    assert res.failed == 0, f"{res.failed} of {res.attempted} examples of {name} failed (see the output above)"
