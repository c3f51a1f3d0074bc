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
#: Every module with `>>>` examples (test_doctest_list_is_complete keeps it so). The examples are self-contained (they
#: import and build what they use: tiny cards, tiny arrays, temporary folders) and fast; lines that need what only a user
#: has (a prepared dataset, hours of training) carry `# doctest: +SKIP`.
DOCTEST_MODULES = (
    "bench.peers.metaiqa_torch",
    "bench.peers.reqa_torch",
    "bench.peers.resnet_torch",
    "data_pipeline.beam.synthesize",
    "data_pipeline.dataloaders.decoder",
    "data_pipeline.dataloaders.parser",
    "data_pipeline.fixtures",
    "data_pipeline.fs",
    "data_pipeline.input",
    "data_pipeline.preview",
    "data_pipeline.pristine",
    "data_pipeline.test_time",
    "keras_iqa.backbones",
    "keras_iqa.config",
    "keras_iqa.converters",
    "keras_iqa.converters.metaiqa",
    "keras_iqa.converters.reqa",
    "keras_iqa.converters.safe_load",
    "keras_iqa.export.savedmodel",
    "keras_iqa.layers.cqac",
    "keras_iqa.layers.decoder_blocks",
    "keras_iqa.layers.fused_batch_norm",
    "keras_iqa.layers.preprocessing",
    "keras_iqa.models.hcl.hcl_model",
    "keras_iqa.models.hcl.hcl_restoration",
    "keras_iqa.models.metaiqa.metaiqa_model",
    "keras_iqa.models.reqa.reqa_model",
    "keras_iqa.optimizers",
    "keras_iqa.presets",
    "keras_iqa.registry",
    "keras_iqa.scoring",
    "keras_iqa.tasks",
    "keras_iqa.tasks.base",
    "keras_iqa.tasks.evaluate",
    "keras_iqa.tasks.hcl",
    "keras_iqa.tasks.metaiqa",
    "keras_iqa.tasks.reqa",
    "keras_iqa.training.backup",
    "keras_iqa.training.cpu",
    "keras_iqa.training.hcl",
    "keras_iqa.training.hcl_callbacks",
    "keras_iqa.training.lr",
    "keras_iqa.training.meta_learner",
    "keras_iqa.training.optimizers",
    "keras_iqa.training.runner",
)
#: Modules whose examples need an optional package: module -> package.
DOCTEST_REQUIRES = {m: "torch" for m in ("bench.peers.resnet_torch", "bench.peers.metaiqa_torch", "bench.peers.reqa_torch",
                                         "keras_iqa.converters", "keras_iqa.converters.metaiqa",
                                         "keras_iqa.converters.reqa", "keras_iqa.converters.safe_load")}


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


def _modules_with_examples():
    for path in _code_files():
        if re.search(r"^\s*>>>", path.read_text(encoding="utf-8"), re.MULTILINE):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield ".".join(parts)


def test_doctest_list_is_complete():
    """A new `>>>` example anywhere in the code cannot escape the doctests below."""
    found = set(_modules_with_examples())
    assert found - set(DOCTEST_MODULES) == set(), "modules with >>> examples missing from DOCTEST_MODULES"
    assert set(DOCTEST_MODULES) - found == set(), "DOCTEST_MODULES entries without >>> examples"


@pytest.mark.parametrize("name", DOCTEST_MODULES)
def test_docstring_examples(name, monkeypatch, tmp_path):
    if name in DOCTEST_REQUIRES:
        pytest.importorskip(DOCTEST_REQUIRES[name])
    monkeypatch.chdir(tmp_path)  # an example that writes a relative path writes it here, not into the repository
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # tempfile.mkdtemp() in the examples
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)
    module = importlib.import_module(name)
    res = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert res.attempted > 0, f"no examples in {name}"
    assert res.failed == 0, f"{res.failed} of {res.attempted} examples of {name} failed (see the output above)"
