"""The data jobs where Beam runs (docs/scaling.md): an S3-compatible server started here on 127.0.0.1 (moto in server mode,
reached with Beam's own S3 filesystem), DirectRunner in multi_processing mode (separate worker processes, real pickling),
and a `prepare` killed with SIGKILL mid-run, then started again."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from data_pipeline import fixtures, fs, schema
from data_pipeline.beam import writer
from keras_iqa import cli

pytest.importorskip("apache_beam.io.aws.s3filesystem")

BUCKET = "keras-iqa-test"


@pytest.fixture
def s3(moto_s3):
    """conftest's moto server, with this process's file layer pointed at it (a pipeline run elsewhere may have replaced
    the options)."""
    fs.configure(moto_s3["args"])
    return moto_s3


def _upload(client, folder, prefix):
    """Every file under the local `folder` to s3://BUCKET/prefix/..., same relative paths; returns the root URI."""
    for d, _, files in os.walk(folder):
        for f in files:
            local = os.path.join(d, f)
            client.upload_file(local, BUCKET, f"{prefix}/{os.path.relpath(local, folder)}")
    return f"s3://{BUCKET}/{prefix}"


def test_fs_on_s3_round_trips(s3):
    """The file layer on s3://: one PUT for small and empty objects, a multipart upload past 8 MB, folders as prefixes."""
    import numpy as np

    big = np.random.default_rng(0).integers(0, 256, 9 << 20, dtype=np.uint8).tobytes()
    root = f"s3://{BUCKET}/fs"
    fs.write_bytes(f"{root}/big.bin", big)
    fs.write_bytes(f"{root}/sub/empty", b"")
    fs.replace_atomically(f"{root}/m.json", '{"a": 1}')
    assert fs.read_bytes(f"{root}/big.bin") == big and fs.read_bytes(f"{root}/sub/empty") == b""
    assert fs.scan(root) == {"big.bin": len(big), "m.json": 8, "sub": None} and fs.size(f"{root}/big.bin") == len(big)
    assert fs.isdir(root) and fs.isdir(f"{root}/sub") and not fs.isdir(f"{root}/nope") and fs.exists(f"{root}/m.json")
    assert fs.walk_files(root) == [f"{root}/big.bin", f"{root}/m.json", f"{root}/sub/empty"]
    with pytest.raises(FileNotFoundError):
        fs.read_bytes(f"{root}/nope")
    fs.delete([f"{root}/big.bin", f"{root}/nope"])
    assert fs.listdir(root) == ["m.json", "sub"]


def _read_back(data_dir, kind):
    """The records of a prepared dataset at any URI, through Beam's filesystem (TensorFlow has no s3:// of its own)."""
    import tensorflow as tf

    man = writer.load_manifest(data_dir)
    spec = schema.feature_spec(kind)
    recs = []
    for s in man["shards"]:
        path = fs.join(data_dir, s["file"])
        got = list(writer.iter_records(path))
        assert len(got) == s["count"] and writer.sha256_file(path) == s["sha256"], path
        recs += [tf.io.parse_single_example(r, spec) for r in got]
    return man, recs


def test_prepare_s3_to_s3_on_two_worker_processes(s3, tmp_path):
    """The official KonIQ-10k layout on s3://, one corrupt image, prepared to s3:// by 2 DirectRunner worker processes."""
    info = fixtures.make_koniq10k(str(tmp_path / "koniq"), n=8)
    bad = info["ids"][5]
    data = (tmp_path / "koniq" / "1024x768" / bad).read_bytes()
    (tmp_path / "koniq" / "1024x768" / bad).write_bytes(data[: len(data) // 4])  # truncated JPEG
    root = _upload(s3["client"], tmp_path / "koniq", "koniq10k")
    out = f"s3://{BUCKET}/records"
    argv = ["prepare", "koniq10k", "--root", root, "--out", out, "--num-splits", "2", "--num-shards", "4",
            "--num-workers", "2", "--quiet", *[f"--pipeline-arg={a}" for a in s3["args"]]]
    assert cli.main(argv) == 0
    man, recs = _read_back(f"{out}/koniq10k", "authentic")
    # every image accounted for: 7 records, the corrupt one rejected with its reason, none lost, none twice
    assert man["count"] == 7 and man["writer"]["runner"] == "DirectRunner" and len(man["shards"]) == 4
    assert [r["path"] for r in man["rejects"]] == [f"{root}/1024x768/{bad}"]
    assert "cannot decode" in man["rejects"][0]["reason"] and bad in man["rejects"][0]["reason"]
    ids = [r["image/id"].numpy().decode() for r in recs]
    assert sorted(ids) == sorted(i for i in info["ids"] if i != bad)
    assert "***" in " ".join(man["writer"]["pipeline_args"]) and "testing" not in json.dumps(man["writer"])
    assert man["source"]["root"] == root
    # splits.csv sits next to it; nothing but the committed shards, their sidecars, the manifest and splits.csv
    listing = fs.listdir(f"{out}/koniq10k")
    listed = sorted(s["file"] for s in man["shards"])
    assert listing == sorted(listed + [f + writer.SIDECAR for f in listed] + ["manifest.json", "splits.csv"])
    assert fs.read_text(f"{out}/koniq10k/splits.csv").splitlines()[0] == "image_id,split_00,split_01,official"
    # a second run finds all four shards complete (trusts the sidecars: no shard is read again) and rewrites nothing
    assert cli.main(argv[:-len(s3["args"])] + [f"--beam-arg={a}" for a in s3["args"]]) == 0
    assert writer.load_manifest(f"{out}/koniq10k") == man


def test_synthesize_s3_pristine_to_s3(s3, tmp_path):
    """synthesize lists an s3:// pristine folder, workers read the photos from it; a broken photo is a reject, not a drop."""
    import numpy as np
    from PIL import Image

    from data_pipeline import pristine
    from data_pipeline.beam.synthesize import synthesize

    src = tmp_path / "photos"
    (src / "sub").mkdir(parents=True)
    Image.fromarray(np.ascontiguousarray(pristine.load_embedded("astronaut")[60:92, 180:220])).save(src / "astro.png")
    Image.fromarray(np.ascontiguousarray(pristine.load_embedded("coffee")[100:132, 200:240])).save(src / "sub" / "cup.jpg")
    (src / "broken.png").write_bytes(b"\x89PNG not really")
    root = _upload(s3["client"], src, "photos")
    made = synthesize(root, f"s3://{BUCKET}/synth", name="syn", types="1,10", levels="1,3", num_splits=2,
                      runner="DirectRunner", pipeline_args=s3["args"], num_shards=2)
    syn, pair = made["synthetic"], made["pair"]
    assert syn["count"] == pair["count"] == 2 * 2 * 2
    assert len(syn["rejects"]) == 2 and all(r["path"] == f"{root}/broken.png" for r in syn["rejects"])
    _, recs = _read_back(f"s3://{BUCKET}/synth/syn", "synthetic")
    _, precs = _read_back(f"s3://{BUCKET}/synth/syn_pairs", "pair")
    assert sorted(r["image/id"].numpy().decode() for r in recs) == sorted(r["image/id"].numpy().decode() for r in precs)
    assert {r["reference/id"].numpy().decode() for r in precs} == {"astro", "cup"}
    by_id = {r["image/id"].numpy().decode(): r["image/encoded"].numpy() for r in recs}
    assert all(by_id[r["image/id"].numpy().decode()] == r["image/encoded"].numpy() for r in precs)  # pairs reuse them


def _env():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), os.environ.get("PYTHONPATH", "")]))
    env.pop("KERAS_IQA_PROGRESS", None)
    return env


def test_prepare_killed_with_sigkill_then_rerun_every_image_once(tmp_path):
    """A `prepare` process is killed with SIGKILL while it writes a shard (it is blocked reading an image that is a FIFO,
    so the kill lands mid-shard every time); started again, it finishes with every image exactly once."""
    root, out = tmp_path / "koniq", tmp_path / "out"
    info = fixtures.make_koniq10k(str(root), n=16)
    slow = root / "1024x768" / info["ids"][15]  # row 15: shard 7 of 8, second row
    keep = slow.read_bytes()
    slow.unlink()
    os.mkfifo(slow)
    argv = ["prepare", "koniq10k", "--root", str(root), "--out", str(out), "--num-splits", "2", "--num-shards", "8",
            "--quiet"]
    proc = subprocess.Popen([sys.executable, "-m", "keras_iqa.cli", *argv], env=_env(), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    fd, deadline = None, time.time() + 240
    try:
        while fd is None:  # the FIFO opens for writing once the worker opened it for reading: it is mid-shard
            assert proc.poll() is None, proc.stdout.read().decode()[-3000:]
            assert time.time() < deadline, "prepare never reached the FIFO image"
            try:
                fd = os.open(slow, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.05)
        complete = sorted(f for f in os.listdir(out / "koniq10k") if f.endswith(writer.SIDECAR))
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=60) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
        if fd is not None:
            os.close(fd)
        proc.stdout.close()
    left = os.listdir(out / "koniq10k")
    assert "manifest.json" not in left and any(writer.parse_shard_name(f) for f in left)  # killed before the commit
    slow.unlink()
    slow.write_bytes(keep)
    assert cli.main(argv) == 0
    man = json.loads((out / "koniq10k" / "manifest.json").read_text())
    assert man["count"] == 16 and not man["rejects"]
    assert man["writer"]["shards_reused"] == len(complete) and man["writer"]["shards_written"] == 8 - len(complete)
    for name in complete:  # the shards finished before the kill are the ones kept
        assert name[: -len(writer.SIDECAR)] in {s["file"] for s in man["shards"]}
    _, recs = _read_back(str(out / "koniq10k"), "authentic")
    ids = [r["image/id"].numpy().decode() for r in recs]
    assert len(ids) == 16 and sorted(ids) == sorted(info["ids"])  # none lost, none duplicated
    listed = {s["file"] for s in man["shards"]}
    assert {f for f in os.listdir(out / "koniq10k") if f.endswith(".tfrecord")} == listed  # the half-written shard is gone


def _commands(text, program):
    """The `keras-iqa <program> ...` commands of a help text or markdown page (backslash continuations joined)."""
    import shlex

    joined = text.replace("\\\n", " ")
    return [shlex.split(line.strip().split("keras-iqa ", 1)[1].split("  #")[0])
            for line in joined.splitlines() if line.strip().startswith(f"keras-iqa {program} ")]


def _check_beam_flags(argv):
    """argv parses as the CLI parses it, and every --pipeline-arg is an option Beam 2.77 defines, with the value given."""
    from apache_beam.options.pipeline_options import PipelineOptions

    ns = cli.build_parser().parse_args(argv)
    opts = PipelineOptions(ns.pipeline_arg).get_all_options()
    for arg in ns.pipeline_arg:
        name, _, value = arg[2:].partition("=")
        assert name in opts, f"{' '.join(argv)}: --{name} is not a Beam pipeline option"
        got = opts[name]
        assert (str(got) == value) if not isinstance(got, bool) else got, (name, got, value)
    return ns


def test_help_and_docs_recipes_use_real_flags(capsys):
    """The runner examples of `prepare --help`, `synthesize --help` and docs/scaling.md parse, and pass only options Beam
    defines (the Dataflow one as written: --pipeline-arg form, the package shipped with --setup_file)."""
    import re

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    helps = {}
    for program in ("prepare", "synthesize"):
        with pytest.raises(SystemExit):
            cli.main([program, "--help"])
        helps[program] = capsys.readouterr().out
    docs = open(os.path.join(root, "docs", "scaling.md")).read()
    runs = [c for p in ("prepare", "synthesize") for c in _commands(helps[p], p) + _commands(docs, p)]
    remote = [c for c in runs if "--runner" in c and c[c.index("--runner") + 1] != "inline"]
    assert {c[c.index("--runner") + 1] for c in remote} >= {"DataflowRunner", "FlinkRunner", "SparkRunner"}
    for argv in runs:
        ns = _check_beam_flags(argv)
        if ns.runner == "DataflowRunner":
            flags = {a.split("=", 1)[0] for a in ns.pipeline_arg}
            assert {"--project", "--region", "--temp_location"} <= flags
            assert flags & {"--setup_file", "--sdk_container_image"}, argv
            if "--setup_file" in flags:
                setup = next(a for a in ns.pipeline_arg if a.startswith("--setup_file=")).split("=", 1)[1]
                assert os.path.isfile(os.path.join(root, setup)), setup  # run from a checkout, as the text says
    # the container file of the page installs the package into Beam's SDK image of the versions in use
    import apache_beam

    image = re.search(r"FROM apache/beam_python(\d+\.\d+)_sdk:(\d+\.\d+)", docs)
    assert image and image.group(2) == ".".join(apache_beam.__version__.split(".")[:2])
    assert '".[aws,gcp]"' in docs
    with pytest.raises(AssertionError, match="not a Beam pipeline option"):  # the check itself catches a wrong flag
        _check_beam_flags(["prepare", "kadis700k", "--root", "r", "--out", "o", "--pipeline-arg=--tmp_location=gs://b"])


def test_progress_follows_sidecars_of_remote_workers(tmp_path):
    """Workers elsewhere cannot call the driver: its bar moves by whole shards as their sidecars appear in the output."""
    import functools

    rows = fixtures._tiny_rows("authentic", 6, 1, 1, 0)
    fn = functools.partial(fixtures._tiny_examples, kind="authentic", size=(16, 16), dataset="t")
    buckets = [[(i, r) for i, r in enumerate(rows) if i % 3 == k] for k in range(3)]
    fps = [writer._fingerprint(b) for b in buckets]

    class Bar:
        n = 0

        def update(self, k):
            self.n += k

        def set_postfix(self, **kw):
            pass

    bar = Bar()
    tracker = writer._Tracker(bar, str(tmp_path), [(k, buckets[k], fps[k]) for k in range(3)], lambda r: 1)
    writer.write_shard(str(tmp_path), 0, 3, buckets[0], fn, fps[0])
    writer.write_shard(str(tmp_path), 1, 3, buckets[1], fn, "another run's rows")  # not this run's: not counted
    tracker.poll_once()
    assert bar.n == 2
    writer.write_shard(str(tmp_path), 1, 3, buckets[1], fn, fps[1])
    tracker.poll_once()
    tracker.poll_once()  # each shard counts once
    assert bar.n == 4
