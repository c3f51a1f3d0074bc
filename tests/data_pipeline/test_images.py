"""The one decode policy on real malformed files: Python (Pillow) and graph (tf.io) paths must agree."""

import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from data_pipeline import images
from data_pipeline.images import DecodePolicy, ImageDecodeError, canonical_bytes, decode_image_tensor, load_image


def _photo(h=40, w=60, seed=0):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 / w, y * 255 / h, (x + y) * 127 / (h + w)], -1)
    return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).astype(np.uint8)


def _save(img, path, **kw):
    img.save(path, **kw)
    return str(path)


@pytest.fixture
def files(tmp_path):
    arr = _photo()
    f = {}
    f["rgb_png"] = _save(Image.fromarray(arr), tmp_path / "rgb.png")
    f["rgb_jpg"] = _save(Image.fromarray(arr), tmp_path / "rgb.jpg", quality=90)
    f["bmp"] = _save(Image.fromarray(arr), tmp_path / "x.bmp")
    f["gray"] = _save(Image.fromarray(arr[..., 0]), tmp_path / "gray.png")
    rgba = np.dstack([arr, np.linspace(0, 255, arr.shape[1], dtype=np.uint8)[None].repeat(arr.shape[0], 0)])
    f["rgba"] = _save(Image.fromarray(rgba, "RGBA"), tmp_path / "rgba.png")
    f["gray16"] = _save(Image.fromarray((arr[..., 0].astype(np.uint16) * 257 + 3), "I;16"), tmp_path / "g16.png")
    f["cmyk"] = _save(Image.fromarray(arr).convert("CMYK"), tmp_path / "cmyk.jpg", quality=95)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    f["exif"] = _save(Image.fromarray(arr), tmp_path / "exif.jpg", exif=exif.tobytes(), quality=95)
    frames = [Image.fromarray(np.full((20, 30, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    f["gif"] = str(tmp_path / "anim.gif")
    f["tiny1"] = _save(Image.fromarray(arr[:1, :1]), tmp_path / "one.png")
    f["tiny10"] = _save(Image.fromarray(arr[:10, :10]), tmp_path / "ten.png")
    f["tiff"] = _save(Image.fromarray(arr), tmp_path / "x.tiff")
    good = open(f["rgb_jpg"], "rb").read()
    (tmp_path / "trunc.jpg").write_bytes(good[: len(good) // 2])
    f["truncated"] = str(tmp_path / "trunc.jpg")
    (tmp_path / "empty.jpg").write_bytes(b"")
    f["empty"] = str(tmp_path / "empty.jpg")
    (tmp_path / "text.jpg").write_text("this is not an image\n")
    f["text"] = str(tmp_path / "text.jpg")
    return f


def test_rgb_formats_roundtrip(files):
    arr = _photo()
    np.testing.assert_array_equal(load_image(files["rgb_png"]), arr)
    np.testing.assert_array_equal(load_image(files["bmp"]), arr)
    assert np.abs(load_image(files["rgb_jpg"]).astype(int) - arr).mean() < 12


def test_mode_conversions(files):
    arr = _photo()
    g = load_image(files["gray"])
    assert g.shape == (40, 60, 3) and (g[..., 0] == g[..., 2]).all()
    rgba = load_image(files["rgba"])
    assert (rgba[:, 0] == 255).all(), "alpha 0 must composite to white"
    np.testing.assert_array_equal(rgba[:, -1], arr[:, -1])
    g16 = load_image(files["gray16"])
    np.testing.assert_array_equal(g16[..., 0], ((arr[..., 0].astype(np.uint16) * 257 + 3) >> 8).astype(np.uint8))
    cmyk = load_image(files["cmyk"])
    assert cmyk.shape == (40, 60, 3) and np.abs(cmyk.astype(int) - arr).mean() < 20
    exif = load_image(files["exif"])
    assert exif.shape == (60, 40, 3), "EXIF orientation 6 must rotate to portrait"
    gif = load_image(files["gif"])
    assert gif.shape == (20, 30, 3) and abs(int(gif.mean()) - 10) <= 2, "first frame"
    assert load_image(files["tiff"]).shape == (40, 60, 3)


def test_tiny_and_huge_with_policy(files):
    policy = DecodePolicy(min_short_side=32, max_long_side=48)
    with pytest.warns(UserWarning, match="upsampled"):
        one = load_image(files["tiny1"], policy)
    assert min(one.shape[:2]) == 32
    with pytest.warns(UserWarning):
        ten = load_image(files["tiny10"], policy)
    assert ten.shape == (32, 32, 3)
    big = load_image(files["rgb_png"], DecodePolicy(max_long_side=30))
    assert big.shape == (20, 30, 3)


@pytest.mark.parametrize("key,reason", [("truncated", "cannot decode"), ("empty", "empty"), ("text", "cannot decode")])
def test_bad_files_raise_clear_errors(files, key, reason):
    with pytest.raises(ImageDecodeError, match=reason):
        load_image(files[key])
    with pytest.raises(ImageDecodeError):
        canonical_bytes(files[key])


def test_missing_file():
    with pytest.raises(ImageDecodeError, match="not found"):
        load_image("/nonexistent/x.jpg")


@pytest.mark.parametrize("key", ["rgb_png", "rgb_jpg", "bmp", "gray", "rgba", "gray16", "cmyk", "exif", "gif", "tiff",
                                 "tiny1", "tiny10"])
def test_graph_path_agrees_on_canonical_bytes(files, key):
    """What the writer stores, decoded in the graph, equals the Python policy's pixels."""
    encoded, fmt, h, w = canonical_bytes(files[key])
    py = load_image(files[key])
    assert (h, w) == py.shape[:2]
    tf_img = decode_image_tensor(tf.constant(encoded)).numpy()
    assert tf_img.shape == py.shape
    if fmt in ("jpeg",):  # libjpeg versions may differ by rounding in IDCT/upsampling
        assert np.abs(tf_img.astype(int) - py).max() <= 3
    else:
        np.testing.assert_array_equal(tf_img, py)


def test_canonical_bytes_keeps_original_jpeg_and_converts_others(files):
    raw = open(files["rgb_jpg"], "rb").read()
    assert canonical_bytes(files["rgb_jpg"])[0] == raw, "plain JPEG must be stored as is (never re-encode lossy)"
    for key in ("exif", "cmyk", "rgba", "gray16", "tiff", "gif"):
        data, fmt, _, _ = canonical_bytes(files[key])
        assert fmt == "png" and data[:4] == b"\x89PNG", key


def test_graph_path_direct_on_originals(files):
    """The graph path alone handles RGBA, 16-bit, grayscale and GIF originals the same way as Pillow."""
    for key in ("rgba", "gray16", "gray", "gif", "rgb_png"):
        raw = open(files[key], "rb").read()
        np.testing.assert_array_equal(decode_image_tensor(tf.constant(raw)).numpy(), load_image(files[key]), err_msg=key)


def test_graph_policy_resize_and_try_decode(files):
    raw = open(files["rgb_png"], "rb").read()
    out = decode_image_tensor(tf.constant(raw), DecodePolicy(max_long_side=30)).numpy()
    assert out.shape == (20, 30, 3)
    out = decode_image_tensor(tf.constant(open(files["tiny10"], "rb").read()), DecodePolicy(min_short_side=32)).numpy()
    assert out.shape == (32, 32, 3)
    img, ok = images.try_decode_image_tensor(tf.constant(b"not an image at all"))
    assert not bool(ok) and img.shape == (1, 1, 3)
    img, ok = images.try_decode_image_tensor(tf.constant(raw))
    assert bool(ok) and img.shape == (40, 60, 3)


def test_bytes_input_and_encode_png():
    arr = _photo(8, 9)
    data = images.encode_png(arr)
    np.testing.assert_array_equal(load_image(data), arr)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    assert images.is_image_file("a/B.JPG") and not images.is_image_file("notes.txt")
