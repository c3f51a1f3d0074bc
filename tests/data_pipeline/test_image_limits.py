"""The decode policy's size limits (docs/security.md, Images): files refused before they are read, images refused from
their header before they are decoded, extreme aspect ratios refused instead of upsampled, huge JPEGs that the test-time
contract resizes decoded at reduced size, on every path that decodes a user image."""

import io
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from data_pipeline import fs
from data_pipeline.images import (DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, DecodePolicy, ImageDecodeError,
                                  check_dimensions, load_image)
from data_pipeline.test_time import TestTimeCrops


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims `width` x `height` (a few dozen bytes: the pixels are not there)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + _chunk(b"IEND", b""))


def jpeg_bytes(width=96, height=64, quality=90, photo=False) -> bytes:
    if photo:
        import skimage.data

        img = Image.fromarray(skimage.data.astronaut()).resize((width, height), Image.Resampling.LANCZOS)
    else:
        img = Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def jpeg_header(width: int, height: int) -> bytes:
    """A real small JPEG whose SOF0 header is changed to claim `width` x `height`."""
    data = bytearray(jpeg_bytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_bytes(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), (120, 60, 30)).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def no_decoding(monkeypatch):
    """Any attempt to decode pixels fails loudly: a refusal must come from the header."""
    def load(self):
        raise AssertionError("pixels decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", load)


@pytest.fixture
def no_reading(monkeypatch):
    """Any attempt to open or read a file fails loudly: a refusal must come from its size alone."""
    def fail(*args, **kwargs):
        raise AssertionError("file read")

    monkeypatch.setattr(Image, "open", fail)
    monkeypatch.setattr(fs, "read_bytes", fail)
    monkeypatch.setattr(fs, "open_read", fail)


# --------------------------------------------------------------------------------------------------- the limits
def test_one_pixel_high_png_is_refused_by_its_aspect_ratio_before_decoding(tmp_path, no_decoding):
    path = tmp_path / "line.png"
    path.write_bytes(png_header(100_000, 1))
    with pytest.raises(ImageDecodeError) as e:
        load_image(str(path))
    msg = str(e.value)
    assert msg.startswith(f"{path}: 100000 x 1 pixels has an aspect ratio of 1e+05:1, over the limit of 20:1")
    assert "max_aspect_ratio" in msg and "KERAS_IQA_MAX_ASPECT_RATIO" in msg


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")  # Pillow warns at open; keras-iqa refuses
def test_oversized_png_and_jpeg_headers_are_refused_before_decoding(tmp_path, no_decoding):
    for name, data in (("big.png", png_header(10_000, 9_000)), ("big.jpg", jpeg_header(12_000, 9_000))):
        path = tmp_path / name
        path.write_bytes(data)
        assert os.path.getsize(path) < 10_000
        with pytest.raises(ImageDecodeError) as e:
            load_image(str(path))
        w, h = Image.open(path).size
        assert str(e.value).startswith(f"{path}: {w} x {h} = {w * h:,} pixels is over the image pixel limit of "
                                       f"{DEFAULT_MAX_PIXELS:,} (max_pixels; set KERAS_IQA_MAX_IMAGE_PIXELS=N")


def test_decompression_bomb_header_names_pillows_limit(tmp_path, no_decoding):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(100_000, 100_000))
    with pytest.raises(ImageDecodeError) as e:
        load_image(str(path), DecodePolicy(max_pixels=0))  # keras-iqa's cap off: Pillow's still refuses
    assert str(e.value).startswith(f"{path}: 10,000,000,000 pixels is over Pillow's decompression-bomb limit")
    assert "PIL.Image.MAX_IMAGE_PIXELS" in str(e.value)


def test_sparse_file_over_the_size_limit_is_refused_without_being_read(tmp_path, no_reading):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as f:
        f.truncate(DEFAULT_MAX_FILE_BYTES + 1)  # sparse: no disk space, no bytes written
    expected = (f"{path}: file of {DEFAULT_MAX_FILE_BYTES + 1:,} bytes is over the image file size limit of "
                f"{DEFAULT_MAX_FILE_BYTES:,} bytes (max_file_bytes; set KERAS_IQA_MAX_IMAGE_BYTES=N")
    for read in (load_image, fs.read_image):  # scoring, and prepare / synthesize (they read through fs.read_image)
        with pytest.raises(ImageDecodeError) as e:
            read(str(path))
        assert str(e.value).startswith(expected)


def test_every_limit_has_an_environment_variable_and_an_argument(tmp_path, monkeypatch):
    path = tmp_path / "photo.png"
    path.write_bytes(png_bytes(300, 200))
    assert load_image(str(path)).shape == (200, 300, 3)
    for env, value, arg, words in (("KERAS_IQA_MAX_IMAGE_BYTES", "100", "max_file_bytes", "file size limit of 100 bytes"),
                                   ("KERAS_IQA_MAX_IMAGE_PIXELS", "50_000", "max_pixels", "pixel limit of 50,000"),
                                   ("KERAS_IQA_MAX_ASPECT_RATIO", "1.2", "max_aspect_ratio", "over the limit of 1.2:1")):
        with monkeypatch.context() as m:
            m.setenv(env, value)
            with pytest.raises(ImageDecodeError, match=words) as e:
                load_image(str(path))
            assert str(e.value).startswith(str(path)) and env in str(e.value)
            assert load_image(str(path), DecodePolicy(**{arg: 0})).shape == (200, 300, 3)  # the argument wins; 0 = off
        with pytest.raises(ImageDecodeError, match=words):
            load_image(str(path), DecodePolicy(**{arg: float(value.replace("_", ""))}))
    monkeypatch.setenv("KERAS_IQA_MAX_IMAGE_PIXELS", "lots")
    with pytest.raises(ValueError, match="KERAS_IQA_MAX_IMAGE_PIXELS='lots': expected a number >= 0"):
        load_image(str(path))


def test_images_within_the_limits_decode_as_before(tmp_path):
    narrow = png_bytes(20, 1)  # aspect ratio exactly at the limit
    assert load_image(narrow).shape == (1, 20, 3)
    rgba = np.zeros((3000, 1500, 4), np.uint8)  # more rows than one compositing strip
    rgba[..., 0], rgba[..., 3] = 200, 128
    buf = io.BytesIO()
    Image.fromarray(rgba).save(buf, "PNG")
    out = load_image(buf.getvalue())
    expected = np.round(np.float32(200) * np.float32(128 / 255.0) + 255 * (1 - np.float32(128 / 255.0)))
    assert out.shape == (3000, 1500, 3) and (out[..., 0] == expected).all() and (out[..., 1] == 127).all()


def test_unreadable_bytes_message_has_no_python_object_repr():
    with pytest.raises(ImageDecodeError) as e:
        load_image(b"\0" * 100)
    assert "BytesIO" not in str(e.value) and str(e.value).startswith("<bytes>: cannot decode image")


# ---------------------------------------------------------------------------------------------- reduced decode
def test_huge_jpeg_decodes_at_reduced_size_only_when_the_contract_resizes_it():
    data = jpeg_bytes(1200, 900, photo=True)
    cap = DecodePolicy(max_pixels=400_000)  # 1200 x 900 is over it; 600 x 450 is not
    resizing = TestTimeCrops(crop_size=64, num_crops=4, resize=96)  # short side 96: the image becomes 96 x 128
    full = load_image(data, DecodePolicy(max_pixels=0))
    reduced = load_image(data, cap, resize_target=resizing.resize_target)
    assert reduced.shape == (450, 600, 3)
    a, b = resizing.crops(full).numpy(), resizing.crops(reduced).numpy()
    assert a.shape == b.shape and np.abs(a - b).mean() < 0.25 and np.abs(a - b).max() < 3  # gray levels
    # under the limit the full image is decoded, whatever the contract
    assert np.array_equal(load_image(data, DecodePolicy(max_pixels=2_000_000), resize_target=resizing.resize_target),
                          full)
    # crops at the image's own scale, or a resize to more than half the reduced size: refused, never approximated
    for contract in (TestTimeCrops(crop_size=64, num_crops=4), TestTimeCrops(crop_size=64, num_crops=4, resize=300)):
        with pytest.raises(ImageDecodeError, match="over the image pixel limit of 400,000"):
            load_image(data, cap, resize_target=contract.resize_target)
    with pytest.raises(ImageDecodeError, match="pixel limit"):  # PNG: no reduced decode
        load_image(png_bytes(1200, 900), cap, resize_target=resizing.resize_target)


def test_crops_from_uint8_are_the_crops_from_float32():
    img = np.random.default_rng(1).integers(0, 256, (130, 170, 3), dtype=np.uint8)
    for contract in (TestTimeCrops(crop_size=64, num_crops=5, policy="grid"), TestTimeCrops(crop_size=64, num_crops=3),
                     TestTimeCrops(crop_size=64, num_crops=3, resize=80), TestTimeCrops(crop_size=64, policy="resize"),
                     TestTimeCrops(crop_size=64, num_crops=3, resize=(70, 90)), TestTimeCrops(crop_size=150, num_crops=2)):
        reference = contract.crops(img.astype(np.float32)).numpy()
        assert np.array_equal(contract.crops(img).numpy(), reference), contract
        assert np.array_equal(contract.crops_array(img), reference), contract


# ------------------------------------------------------------------------------------------------ scoring paths
@pytest.fixture(scope="module")
def scorers():
    import keras_iqa
    from keras_iqa.scoring import load_scorer

    plain = keras_iqa.create_model("reqa-tiny")
    resizing = keras_iqa.create_model("reqa-tiny")
    resizing.set_weights(plain.get_weights())
    resizing.test_resize = 96
    return load_scorer(plain), load_scorer(resizing)


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
def test_scoring_reports_each_bad_shape_and_scores_the_rest(tmp_path, scorers):
    import keras_iqa
    from keras_iqa.scoring import score_paths

    plain, _ = scorers
    (tmp_path / "line.png").write_bytes(png_header(100_000, 1))
    (tmp_path / "big.jpg").write_bytes(jpeg_header(12_000, 9_000))
    (tmp_path / "narrow.png").write_bytes(png_bytes(20, 1))
    with open(tmp_path / "sparse.jpg", "wb") as f:
        f.truncate(DEFAULT_MAX_FILE_BYTES + 1)
    rows, bad = score_paths(plain, [tmp_path], progress=False)
    assert [os.path.basename(r["path"]) for r in rows] == ["narrow.png"] and rows[0]["crops"] == 2
    reasons = {os.path.basename(p): r for p, r in bad}
    assert set(reasons) == {"line.png", "big.jpg", "sparse.jpg"}
    assert "aspect ratio of 1e+05:1" in reasons["line.png"] and "pixel limit" in reasons["big.jpg"]
    assert "file size limit" in reasons["sparse.jpg"]
    assert all(r.startswith(str(tmp_path / name)) for name, r in reasons.items())
    # arrays and Pillow images: the same limits, before any upsampling
    result = keras_iqa.score([np.zeros((1, 5000, 3), np.uint8), Image.new("RGB", (4000, 2)), np.zeros((40, 40, 3), np.uint8)],
                             model=plain)
    assert [row for row, _, _ in result.errors] == [0, 1] and np.isfinite(result.scores[2])
    assert all("aspect ratio" in reason for _, _, reason in result.errors)
    assert keras_iqa.score(np.zeros((1, 5000, 3), np.uint8), model=plain,
                           decode_policy=DecodePolicy(max_aspect_ratio=0)).errors == []


def test_scoring_decodes_a_huge_jpeg_at_reduced_size_when_the_model_resizes(tmp_path, scorers):
    from keras_iqa.scoring import score_paths

    plain, resizing = scorers
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg_bytes(1200, 900, photo=True))
    cap = DecodePolicy(max_pixels=400_000)
    (full,), _ = score_paths(resizing, [path], progress=False)
    (reduced,), bad = score_paths(resizing, [path], progress=False, decode_policy=cap)
    lo, hi = resizing.score_range
    assert not bad and abs(reduced["score"] - full["score"]) < 1e-4 * (hi - lo)
    rows, bad = score_paths(plain, [path], progress=False, decode_policy=cap)  # crops at full scale: refused
    assert not rows and "pixel limit of 400,000" in bad[0][1]


def test_prepare_and_synthesize_readers_refuse_before_reading(tmp_path):
    from data_pipeline import pristine
    from data_pipeline.beam.prepare import row_to_examples

    path = tmp_path / "huge.png"
    with open(path, "wb") as f:
        f.truncate(DEFAULT_MAX_FILE_BYTES + 1)
    with pytest.raises(ImageDecodeError, match=f"^{path}: file of .* over the image file size limit"):
        row_to_examples({"path": str(path), "id": "huge"}, "mos", "d", (0, 1), True)
    with pytest.raises(ImageDecodeError, match=f"^{path}: file of .* over the image file size limit"):
        pristine.load_reference(str(path))
    line = tmp_path / "line.png"
    line.write_bytes(png_header(100_000, 1))
    with pytest.raises(ImageDecodeError, match=f"^{line}: 100000 x 1 pixels has an aspect ratio"):
        row_to_examples({"path": str(line), "id": "line"}, "mos", "d", (0, 1), True)


def test_check_dimensions_names_the_image_and_the_limit():
    check_dimensions("a.png", 4000, 3000)
    with pytest.raises(ImageDecodeError, match=r"^a\.png: empty image \(0 x 5 pixels\)"):
        check_dimensions("a.png", 0, 5)
    with pytest.raises(ImageDecodeError, match=r"^a\.png: 21 x 1 pixels has an aspect ratio of 21:1"):
        check_dimensions("a.png", 21, 1)
    check_dimensions("a.png", 10_000, 10_000, pixel_limit=False)
