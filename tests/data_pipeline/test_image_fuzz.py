"""Fuzzing the decode policy: 300 seeded mutations (bit flips, truncations, header fields set to extreme values, spliced
bytes) of real JPEG, PNG, GIF and TIFF files made from a bundled scikit-image photo, decoded by `load_image` in a
subprocess whose address space is capped (RLIMIT_AS): it must not crash, must not run out of memory, and must decode
every input to an RGB image within the pixel limit or report it with a reason that names it."""

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
from PIL import Image

COUNT = 300
SEED = 29
MAX_PIXELS = 4_000_000  # the child's pixel limit (KERAS_IQA_MAX_IMAGE_PIXELS): keeps each decode small and fast
ADDRESS_SPACE = 1 << 30  # bytes the child may map on top of what it holds after its imports

CHILD = textwrap.dedent("""
    import json, os, resource, sys
    import numpy as np
    from data_pipeline.images import ImageDecodeError, load_image

    folder = sys.argv[1]
    used = 0
    with open("/proc/self/status") as f:
        used = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, (used + int(sys.argv[2]), used + int(sys.argv[2])))
    try:  # the cap is real: twice its room cannot be had
        bytearray(2 * int(sys.argv[2]))
        print(json.dumps({"capped": False}), flush=True)
    except MemoryError:
        print(json.dumps({"capped": True}), flush=True)
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        try:
            arr = load_image(path)
            row = {"name": name, "ok": True, "shape": list(arr.shape), "dtype": str(arr.dtype)}
        except ImageDecodeError as e:
            row = {"name": name, "ok": False, "type": "ImageDecodeError", "reason": str(e)}
        except BaseException as e:  # anything else is a finding: recorded, the test fails on it
            row = {"name": name, "ok": False, "type": type(e).__name__, "reason": str(e)}
        print(json.dumps(row), flush=True)
""")


def _originals() -> dict:
    import skimage.data

    photo = Image.fromarray(skimage.data.chelsea()).resize((120, 80), Image.Resampling.LANCZOS)
    out = {}
    for fmt, kwargs in (("jpeg", {"quality": 85}), ("png", {}), ("gif", {}), ("tiff", {"compression": "tiff_lzw"})):
        buf = io.BytesIO()
        (photo.convert("P") if fmt == "gif" else photo).save(buf, fmt.upper(), **kwargs)
        out[fmt] = buf.getvalue()
    return out


def _fields(fmt: str, data: bytes) -> list:
    """(offset, struct format) of the header fields that say the image's size and layout."""
    if fmt == "png":
        return [(16, ">I"), (20, ">I"), (24, "B"), (25, "B")]
    if fmt == "jpeg":
        sof = data.index(b"\xff\xc0")
        return [(sof + 5, ">H"), (sof + 7, ">H"), (sof + 9, "B")]
    if fmt == "gif":
        return [(6, "<H"), (8, "<H"), (10, "B")]
    order = "<" if data[:2] == b"II" else ">"
    ifd = struct.unpack_from(order + "I", data, 4)[0]
    fields = []
    for k in range(struct.unpack_from(order + "H", data, ifd)[0]):
        entry = ifd + 2 + 12 * k
        tag, kind = struct.unpack_from(order + "HH", data, entry)
        if tag in (256, 257, 258, 273, 277, 278, 279):  # width, length, bits, strip offsets, samples, rows, byte counts
            fields.append((entry + 8, order + ("H" if kind == 3 else "I")))
    return fields


def _mutate(fmt: str, data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    out = bytearray(data)
    kind = ("bitflip", "truncate", "field", "splice")[int(rng.integers(4))]
    if kind == "bitflip":
        for _ in range(int(rng.integers(1, 9))):
            pos = int(rng.integers(min(len(out), 256))) if rng.random() < 0.5 else int(rng.integers(len(out)))
            out[pos] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        out = out[:int(rng.integers(1, len(out)))]
    elif kind == "field":
        for offset, form in [f for f in _fields(fmt, data) if rng.random() < 0.6] or _fields(fmt, data)[:1]:
            top = (1 << (8 * struct.calcsize(form))) - 1
            value = (0, 1, top, top // 2, int(rng.integers(top + 1)))[int(rng.integers(5))]
            struct.pack_into(form, out, offset, value)
    else:
        a, b = sorted(int(v) for v in rng.integers(len(out), size=2))
        at = int(rng.integers(len(out)))
        out[at:at] = out[a:b + 1]
    return kind, bytes(out)


def test_decoder_survives_mutated_jpeg_png_gif_tiff(tmp_path):
    rng = np.random.default_rng(SEED)
    originals = _originals()
    folder = tmp_path / "inputs"
    folder.mkdir()
    for i in range(COUNT):
        fmt = ("jpeg", "png", "gif", "tiff")[i % 4]
        kind, data = _mutate(fmt, originals[fmt], rng)
        (folder / f"{i:03d}_{kind}.{fmt}").write_bytes(data)
    env = dict(os.environ, KERAS_IQA_MAX_IMAGE_PIXELS=str(MAX_PIXELS), OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1")
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(folder), str(ADDRESS_SPACE)], capture_output=True, text=True,
                          env=env, timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    elapsed = time.monotonic() - start
    assert proc.returncode == 0, f"the decoder crashed (exit {proc.returncode}): {proc.stderr[-2000:]}"
    capped, *rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert capped == {"capped": True}, "RLIMIT_AS did not cap the child's memory"
    assert sorted(r["name"] for r in rows) == sorted(os.listdir(folder)), "an input was neither decoded nor reported"
    for r in rows:
        if r["ok"]:
            h, w, c = r["shape"]
            assert c == 3 and r["dtype"] == "uint8" and 1 <= h * w <= MAX_PIXELS, r
        else:
            assert r["type"] == "ImageDecodeError", r
            assert r["reason"].startswith(str(folder / r["name"]) + ":"), r
            assert "MemoryError" not in r["reason"], r
    decoded = sum(r["ok"] for r in rows)
    assert 0 < decoded < COUNT, f"{decoded} of {COUNT} decoded: the mutations should break some inputs and spare others"
    print(f"{COUNT} mutated inputs in {elapsed:.1f} s: {decoded} decoded, {COUNT - decoded} reported")
    for r in rows[:: COUNT // 12]:
        print(" ", r["name"], r["shape"] if r["ok"] else r["reason"][len(str(folder)) + 1:][:150])
