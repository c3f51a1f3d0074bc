"""The documentation: the MkDocs site builds strictly, the README stays a user's README, design references in the code
point to pages that exist, and the self-contained docstring examples run."""

from __future__ import annotations

import doctest
import importlib
import re
import subprocess
import sys
import time
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
    "keras_iqa.caller",
    "keras_iqa.classical.features",
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


# --- The quickstarts, executed as written -------------------------------------------------------------------------------
#
# The fenced ```bash and ```python blocks of these pages run, in document order, in one temporary folder that holds what
# they name (photos/, labels.csv, photo.jpg, new_photos/). Two ways to leave something out, both visible to a reader:
# - a command line ending in `# needs ...` (ImageNet weights, a dataset download, `make demo`'s output): skipped and listed;
#   the same block must hold a command of the same subcommand that does run (its offline twin);
# - `<!-- docs-test: skip (why) -->` on the line before a block (installing, `make`, `mkdocs serve`): the whole block.
RUN_PAGES = ("README.md", "docs/getting-started.md")  # the quickstarts; getting-started repeats the README's commands
EXAMPLE_PAGES = ("docs/pyiqa.md", "docs/api.md")  # python examples, each page in its own folder
MAX_SKIPPED_LINES = 8
SKIP_BLOCK = re.compile(r"<!--\s*docs-test:\s*skip\b\s*(.*?)\s*-->")
NEEDS = re.compile(r"\s#\s*needs\b(.*)$")


def _blocks(page: str):
    """(line of the first code line, language, [(line, text)], skip reason or None) for each fenced block of `page`."""
    lines = (ROOT / page).read_text(encoding="utf-8").splitlines()
    i, skip = 0, None
    while i < len(lines):
        m = re.match(r"^```(\w*)\s*$", lines[i])
        if m is None:
            s = SKIP_BLOCK.search(lines[i])
            if s:
                skip = s.group(1) or "marked"
            elif lines[i].strip():
                skip = None
            i += 1
            continue
        start, body = i + 2, []
        i += 1
        while i < len(lines) and not lines[i].startswith("```"):
            body.append((i + 1, lines[i]))
            i += 1
        yield start, m.group(1), body, skip
        i, skip = i + 1, None


def _commands(body):
    """(line, command) of a bash block: continuation lines joined, blank and comment lines dropped."""
    out, buf, first = [], "", None
    for n, text in body:
        if first is None:
            first = n
        if text.rstrip().endswith("\\"):
            buf += text.rstrip()[:-1] + " "
            continue
        cmd, buf, line = (buf + text).strip(), "", first
        first = None
        if cmd and not cmd.startswith("#"):
            out.append((line, cmd))
    return out


def _subcommand(cmd: str) -> str:
    words = [w for w in cmd.split("#")[0].split() if not w.startswith("-")]
    return " ".join(words[:3] if words[:2] == ["keras-iqa", "train"] else words[:2])


def doc_steps(pages):
    """The steps of `pages` in order: dicts with page, line, lang, code, skip (None or the reason)."""
    for page in pages:
        for start, lang, body, skip in _blocks(page):
            if lang == "bash":
                for line, cmd in _commands(body):
                    needs = NEEDS.search(cmd)
                    yield dict(page=page, line=line, lang="bash", code=cmd,
                               skip=skip or (("needs" + needs.group(1)).strip() if needs else None))
            elif lang == "python":
                yield dict(page=page, line=start, lang="python", code="\n".join(t for _, t in body), skip=skip)


def write_doc_files(folder: Path) -> None:
    """What the quickstarts name: photos/ (30 photos: 10 scenes bundled with scikit-image x 3 blur levels, 128 px),
    labels.csv (file,mos on 1..5: sharper is better), photo.jpg and new_photos/."""
    from PIL import Image, ImageFilter

    from data_pipeline import pristine

    (folder / "photos").mkdir(parents=True, exist_ok=True)
    (folder / "new_photos").mkdir(exist_ok=True)
    rows = ["file,mos"]
    for scene in ("astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "camera", "coins", "brick", "grass",
                  "gravel"):
        img = Image.fromarray(pristine.load_embedded(scene)).convert("RGB")
        img.thumbnail((128, 128))
        for level, radius in enumerate((0, 1.5, 4)):
            img.filter(ImageFilter.GaussianBlur(radius)).save(folder / "photos" / f"{scene}_{level}.jpg", quality=90)
            rows.append(f"{scene}_{level}.jpg,{4.5 - 1.5 * level}")
    (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    Image.open(folder / "photos" / "chelsea_0.jpg").save(folder / "photo.jpg")
    for name in ("coffee_1.jpg", "rocket_2.jpg"):
        Image.open(folder / "photos" / name).save(folder / "new_photos" / name)


def _doc_env() -> dict:
    import os

    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")  # keras-iqa from this venv
    env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _run_step(step: dict, cwd: Path, env: dict) -> str | None:
    """Runs one step in `cwd`; None when it worked, else the failure naming the page and line."""
    where = f"{step['page']}:{step['line']}"
    if step["lang"] == "bash":
        res = subprocess.run(["bash", "-c", step["code"]], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    else:
        res = subprocess.run([sys.executable, "-"], input=step["code"], cwd=cwd, env=env, capture_output=True, text=True,
                             timeout=600)
        lines = [int(n) for n in re.findall(r'File "<stdin>", line (\d+)', res.stderr)]
        if res.returncode and lines:
            where = f"{step['page']}:{step['line'] + lines[-1] - 1}"
    if res.returncode == 0:
        return None
    return (f"{where} failed (exit {res.returncode}): {step['code'].splitlines()[0]}\n"
            f"{(res.stdout + res.stderr)[-3000:]}")


def _run_pages(pages, folder: Path) -> list:
    """Runs the steps of `pages` in `folder`; a step already run with the same text (the getting-started page repeats the
    README) is not run twice. Returns (skipped steps, run steps with their seconds); fails at the first step that breaks."""
    write_doc_files(folder)
    env, done, skipped, ran = _doc_env(), {}, [], []
    for step in doc_steps(pages):
        if step["skip"]:
            skipped.append(step)
            continue
        if step["code"] in done:
            continue
        t0 = time.monotonic()
        err = _run_step(step, folder, env)
        assert err is None, err
        done[step["code"]] = f"{step['page']}:{step['line']}"
        step["seconds"] = time.monotonic() - t0
        ran.append(step)
    return skipped, ran


def test_quickstarts_run_as_written(tmp_path, capsys):
    """README.md and docs/getting-started.md, every runnable bash and python line, offline, in one folder."""
    skipped, ran = _run_pages(RUN_PAGES, tmp_path)
    with capsys.disabled():
        print(f"\nran {len(ran)} steps in {sum(s['seconds'] for s in ran):.0f} s:")
        for s in ran:
            print(f"  {s['seconds']:6.1f} s  {s['page']}:{s['line']}: {s['code'].splitlines()[0][:90]}")
        print("not run (marked in the page):")
        for s in skipped:
            print(f"  {s['page']}:{s['line']}: {s['code'].splitlines()[0][:100]}  [{s['skip']}]")
    # what the quickstarts promise: every photo scored, the label sheet untouched, both runs compared, int8 written
    assert len((tmp_path / "my_scores.csv").read_text().splitlines()) == 1 + 30
    assert len((tmp_path / "new_scores.csv").read_text().splitlines()) == 1 + 2
    assert (tmp_path / "labels.csv").read_text().startswith("file,mos\n")
    comparison = (tmp_path / "comparison.md").read_text()
    assert "reqa-mine" in comparison and "meta-mine" in comparison
    assert list((tmp_path / "exports" / "reqa-mine").glob("*_int8.tflite"))
    assert 0 < sum(s["skip"].startswith("needs") for s in skipped) <= MAX_SKIPPED_LINES


@pytest.mark.parametrize("page", EXAMPLE_PAGES)
def test_page_examples_run(page, tmp_path):
    steps = [s for s in doc_steps([page]) if not s["skip"]]
    assert steps, f"{page} has no runnable examples"
    skipped, ran = _run_pages([page], tmp_path)
    assert ran and not skipped


def test_skipped_doc_lines_are_few_and_have_offline_twins():
    """Only a few lines are not run, each is marked for the reader and has a runnable twin in the same block."""
    steps = list(doc_steps(RUN_PAGES + EXAMPLE_PAGES))
    lines = [s for s in steps if s["skip"] and s["skip"].startswith("needs")]
    assert 0 < len(lines) <= MAX_SKIPPED_LINES, [f"{s['page']}:{s['line']}" for s in lines]
    for s in lines:
        block = [t for t in steps if t["page"] == s["page"] and t["lang"] == "bash" and not t["skip"]
                 and _block_of(t) == _block_of(s)]
        twins = [t for t in block if _subcommand(t["code"]) == _subcommand(s["code"])]
        assert twins, f"{s['page']}:{s['line']}: no runnable `{_subcommand(s['code'])}` line next to it"
    blocks = {(s["page"], s["skip"]) for s in steps if s["skip"] and not s["skip"].startswith("needs")}
    assert len(blocks) <= 6, blocks


def _block_of(step):
    for start, _, body, _ in _blocks(step["page"]):
        if body and body[0][0] <= step["line"] <= body[-1][0]:
            return start
    return None


def test_getting_started_repeats_the_readme_quickstarts():
    """The site's Getting started page has every quickstart command of the README, the same text."""
    def quickstart_commands(page):
        heading, fenced, headings = "", False, {}
        for n, text in enumerate((ROOT / page).read_text(encoding="utf-8").splitlines(), 1):
            fenced ^= text.startswith("```")
            if not fenced and text.startswith("## "):
                heading = text[3:]
            headings[n] = heading
        return [s["code"] for s in doc_steps([page]) if headings[s["line"]].lower().startswith("quickstart")]

    readme = quickstart_commands("README.md")
    assert len(readme) >= 15
    missing = [c for c in readme if c not in quickstart_commands("docs/getting-started.md")]
    assert missing == [], "README quickstart commands missing from docs/getting-started.md"


def test_create_model_examples_in_docstrings_use_real_config_fields():
    """`create_model("reqa", steps=3)` in a docstring (the API page renders it): the keywords are fields of the card's
    config, so the call works as written."""
    import ast

    from keras_iqa.registry import get_card

    calls = []
    for path in _code_files():
        for name, args in re.findall(r'create_model\("([\w-]+)",\s*([^)`]*)\)', path.read_text(encoding="utf-8")):
            kwargs = {k.strip(): ast.literal_eval(v.strip()) for k, v in (a.split("=", 1) for a in args.split(",") if "=" in a)}
            get_card(name).config(**kwargs)  # raises on a keyword the config does not have
            calls.append(name)
    assert calls, "no create_model(NAME, key=value) example found"


def test_site_pages_name_what_the_code_writes():
    """The Home page links within the site (no off-site README), the scoring page names the contract file that export
    writes, and every page is reachable from Home or Getting started."""
    from keras_iqa.export.savedmodel import CONTRACT_FILE

    index = (ROOT / "docs" / "index.md").read_text(encoding="utf-8")
    assert "pypi.org" not in index and "(getting-started.md)" in index and "(pyiqa.md)" in index
    scoring = (ROOT / "docs" / "scoring.md").read_text(encoding="utf-8")
    assert f"`{CONTRACT_FILE}`" in scoring
    for page in (ROOT / "docs").rglob("*.md"):
        assert "keras_iqa_contract.json" not in page.read_text(encoding="utf-8"), page
    yaml = pytest.importorskip("yaml")
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    assert nav[:3] == [{"Home": "index.md"}, {"Getting started": "getting-started.md"}, {"Coming from pyiqa": "pyiqa.md"}]
