"""The 25 KADID/KADIS distortions: shapes, determinism, strength vs level, parameter tables, SSIM/MS-SSIM, pristine set."""

import numpy as np
import pytest

from data_pipeline import distortions as D
from data_pipeline import pristine

TYPES = sorted(D.DISTORTIONS)


@pytest.fixture(scope="module")
def small():
    """48x64 crop of a real photo (texture + colour), as the generator gets it."""
    return np.ascontiguousarray(pristine.load_embedded("astronaut")[100:148, 200:264])


@pytest.fixture(scope="module")
def textured():
    """A mid-size textured photo (chelsea downscaled to 150x225) for SSIM monotonicity."""
    from PIL import Image

    img = pristine.load_embedded("chelsea")
    return np.asarray(Image.fromarray(img).resize((225, 150), Image.LANCZOS))


@pytest.fixture(scope="module")
def ssim_table(textured):
    return {t: [D.ssim(D.distort(textured, t, lv, np.random.default_rng(7)), textured) for lv in range(1, 6)] for t in TYPES}


def test_table_matches_spec():
    assert len(D.DISTORTIONS) == 25 and all(len(v) == 5 for v in D.LEVELS.values())
    assert D.LEVELS[1] == (0.1, 0.5, 1, 2, 5)
    assert D.LEVELS[9] == (16, 32, 45, 120, 400)
    assert D.LEVELS[10] == (43, 36, 24, 7, 4)
    assert D.LEVELS[18] == (0.15, 0.08, 0, -0.08, -0.15)
    assert D.LEVELS[25] == (0.3, 0.15, 0, -0.4, -0.6)
    assert D.NAMES[25] == "Contrast Dist." and D.NAMES[7] == "Saturation_Dist._HSV"
    assert D.get("gblur").id == 1 and D.get("JPEG").id == 10 and D.get("15").id == 15
    assert set(D.MONOTONE) | set(D.NON_MONOTONE) == set(TYPES)
    img = np.full((8, 8, 3), 100, np.uint8)
    np.testing.assert_array_equal(D.DISTORTIONS[11](img, 2, np.random.default_rng(5)),
                                  D.distort(img, "noisegauss", 2, np.random.default_rng(5)))


@pytest.mark.parametrize("t", TYPES)
def test_every_level_valid_and_deterministic(small, t):
    before = small.copy()
    for lv in range(1, 6):
        a = D.distort(small, t, lv, np.random.default_rng(123))
        assert a.shape == small.shape and a.dtype == np.uint8, (t, lv)
        b = D.distort(small, t, lv, np.random.default_rng(123))
        np.testing.assert_array_equal(a, b, err_msg=f"type {t} level {lv} not deterministic")
    np.testing.assert_array_equal(small, before)  # input untouched
    # restretch (official mapmm) also gives valid images
    r = D.distort(small, t, 3, np.random.default_rng(1), restretch=True)
    assert r.shape == small.shape and r.dtype == np.uint8


def test_random_types_depend_on_seed(small):
    for t in (3, 5, 11, 12, 13, 14, 15, 19, 20, 23):
        a = D.distort(small, t, 5, np.random.default_rng(1))
        b = D.distort(small, t, 5, np.random.default_rng(2))
        assert not np.array_equal(a, b), f"type {t} ignores its rng"


@pytest.mark.parametrize("t", D.MONOTONE)
def test_ssim_decreases_with_level(ssim_table, t):
    s = ssim_table[t]
    assert s[0] - s[4] > 0.02, f"type {t} {D.NAMES[t]}: level 5 barely stronger than level 1: {s}"
    for lv in range(4):  # non-increasing up to a small tolerance (random patches / shifts)
        assert s[lv + 1] <= s[lv] + 0.01, f"type {t} {D.NAMES[t]}: SSIM rises from level {lv + 1} to {lv + 2}: {s}"


def test_non_monotone_types_follow_their_tables(textured, ssim_table):
    x = textured.astype(float)
    # 18 mean shift: +0.15, +0.08, 0, -0.08, -0.15 (x255) on the mean (clipping shrinks it a little)
    means = [D.distort(textured, 18, lv).astype(float).mean() - x.mean() for lv in range(1, 6)]
    assert means[2] == 0 and means[0] > means[1] > 0 > means[3] > means[4]
    assert abs(means[1] - 0.08 * 255) < 5
    # 25 contrast change: amounts 0.3, 0.15, 0 raise the contrast (decreasingly; the curve is the identity at -0.2),
    # -0.4, -0.6 lower it
    stds = [D.distort(textured, 25, lv).astype(float).std() for lv in range(1, 6)]
    assert stds[0] > stds[1] > stds[2] > x.std() > stds[3] > stds[4]
    np.testing.assert_allclose(D.contrast_change(x / 255, -0.2), x / 255, atol=1e-12)
    # mean shift level 3 is the identity; both ends are the strongest
    assert ssim_table[18][2] == pytest.approx(1.0) and max(ssim_table[18][0], ssim_table[18][4]) < ssim_table[18][1]
    s25 = ssim_table[25]
    assert s25[0] < s25[1] < s25[2] and s25[3] > s25[4] and max(s25) < 0.999


def test_parameter_semantics(textured):
    x = textured
    # 11 white noise: residual std ~ sqrt(variance) (before clipping) on a mid-grey image
    grey = np.full((64, 64, 3), 128, np.uint8)
    res = D.distort(grey, 11, 5, np.random.default_rng(0)).astype(float) - 128
    assert res.std() / 255 == pytest.approx(0.1, rel=0.05)
    # 13 impulse noise: about `density` of the samples become 0 or 255
    imp = D.distort(grey, 13, 5, np.random.default_rng(0))
    assert np.mean((imp == 0) | (imp == 255)) == pytest.approx(0.03, rel=0.15)
    # 6 colour quantisation: at most N colours
    q = D.distort(x, 6, 5)
    assert len(np.unique(q.reshape(-1, 3), axis=0)) <= 8
    # 22 quantisation: at most `levels` values per channel
    assert all(len(np.unique(D.distort(x, 22, 5)[..., c])) <= 7 for c in range(3))
    # 7 HSV saturation factor 0 -> gray
    g = D.distort(x, 7, 4).astype(int)
    assert np.abs(g[..., 0] - g[..., 1]).max() <= 1
    # 17 darken lowers, 16 brighten raises the mean
    assert D.distort(x, 17, 5).mean() < x.mean() < D.distort(x, 16, 5).mean()
    # 1 blur kernel size 2*ceil(2 sigma)+1 and 2 disk / 3 motion PSFs sum to 1
    assert D._disk_kernel(4).shape == (9, 9) and D._disk_kernel(4).sum() == pytest.approx(1)
    k = D._motion_kernel(10, 0)
    assert k.sum() == pytest.approx(1) and np.count_nonzero(k.sum(axis=1)) == 1  # horizontal line
    assert D._motion_kernel(1, 37).max() == pytest.approx(1)  # length 1 is the identity
    # options: official mapmm re-stretch fills [0, 255]; ARNIQA variants of 14 and 22 differ from the defaults
    r = D.distort(x, 18, 1, restretch=True)
    assert r.min() == 0 and r.max() == 255
    a = D.distort(x, 14, 5, np.random.default_rng(0))
    b = D.distort(x, 14, 5, np.random.default_rng(0), noise="gaussian")
    assert not np.array_equal(a, b)
    assert not np.array_equal(D.distort(x, 22, 3), D.distort(x, 22, 3, thresholds="quantile"))
    with pytest.raises(ValueError, match="noise"):
        D.distort(x, 14, 1, noise="poisson")


def test_fast_paths_match_the_reference_operations(small):
    """Closed-form HSV saturation == rgb2hsv/hsv2rgb; FFT filtering == ndimage.correlate with replicate border."""
    from scipy import ndimage
    from skimage.color import hsv2rgb, rgb2hsv

    x = small / 255.0
    for f in D.LEVELS[7] + (1.7,):
        hsv = rgb2hsv(x)
        hsv[..., 1] = np.clip(hsv[..., 1] * f, 0, 1)
        np.testing.assert_allclose(D.saturation_hsv(x, f), hsv2rgb(hsv), atol=1e-12)
    for k in (D._disk_kernel(8), D._motion_kernel(10, 33.0)):
        np.testing.assert_allclose(D._filter_rgb(x, k), ndimage.correlate(x, k[:, :, None], mode="nearest"), atol=1e-12)


def test_bad_inputs_are_clear(small):
    with pytest.raises(ValueError, match="level"):
        D.distort(small, 1, 6)
    with pytest.raises(ValueError, match="unknown distortion"):
        D.distort(small, 26, 1)
    with pytest.raises(ValueError, match="uint8"):
        D.distort(small.astype(np.float32), 1, 1)
    with pytest.raises(ValueError, match="HxWx3"):
        D.distort(small[..., 0], 1, 1)
    assert D.parse_types("all") == TYPES and D.parse_types("1,3-4,jpeg") == [1, 3, 4, 10]
    assert D.parse_levels("1-5") == [1, 2, 3, 4, 5] and D.parse_levels("2,4") == [2, 4]
    with pytest.raises(ValueError):
        D.parse_levels("0-7")


def test_ssim_matches_skimage_and_ms_ssim(textured):
    from skimage.metrics import structural_similarity

    d = D.distort(textured, 10, 4)
    ours = D.ssim(d, textured)
    ref = structural_similarity(D._luma255(d), D._luma255(textured), data_range=255, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert ours == pytest.approx(ref, abs=1e-9)
    # the hand-written terms (kept for MS-SSIM and for images under skimage's 11 px window) give the same SSIM
    lum, cs = D._ssim_terms(D._luma255(d), D._luma255(textured))
    assert float(np.mean(lum * cs)) == pytest.approx(ours, abs=1e-12)
    tiny = textured[:8, :9]
    assert D.ssim(tiny, tiny) == pytest.approx(1.0) and 0 < D.ssim(D.distort(tiny, 10, 5), tiny) < 1
    assert D.ssim(textured, textured) == pytest.approx(1.0) and D.ms_ssim(textured, textured) == pytest.approx(1.0)
    m = [D.ms_ssim(D.distort(textured, 1, lv), textured) for lv in (2, 4, 5)]
    assert 1 > m[0] > m[1] > m[2] > 0


def test_ms_ssim_agrees_with_tensorflow_on_even_sides():
    """tf.image.ssim_multiscale with the same window, constants and weights; it pads odd-sized scales where ms_ssim drops
    the last row / column, so the sides here divide by 2^4 (docs/distortions.md gives the measured differences)."""
    import tensorflow as tf

    ref = np.ascontiguousarray(pristine.load_embedded("astronaut")[:192, :208])
    for t in (1, 10, 12):
        d = D.distort(ref, t, 3, np.random.default_rng(7))
        x, y = D._luma255(d), D._luma255(ref)
        theirs = float(tf.image.ssim_multiscale(x[..., None], y[..., None], max_val=255.0, filter_size=11, filter_sigma=1.5,
                                                k1=0.01, k2=0.03))
        assert D.ms_ssim(d, ref) == pytest.approx(theirs, abs=3e-5), t  # measured up to 6.6e-6 (TF returns float32)


def test_embedded_pristine_set(tmp_path):
    names = pristine.embedded_names()
    assert {"astronaut", "chelsea", "coffee", "rocket", "motorcycle_left", "ihc"} <= set(names)
    for name, img in pristine.embedded(["chelsea", "motorcycle_right"]):
        assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3 and min(img.shape[:2]) >= 256
    from PIL import Image

    Image.fromarray(pristine.load_embedded("coffee")[:40, :50]).save(tmp_path / "a b.png")
    (tmp_path / "notes.txt").write_text("x")
    got = pristine.from_folder(tmp_path)
    assert [g[0] for g in got] == ["a_b"] and got[0][1].shape == (40, 50, 3)
    px, data, fmt = pristine.load_reference(pristine.PREFIX + "retina", max_long_side=128)
    assert px.shape == (128, 128, 3) and fmt == "png"
    np.testing.assert_array_equal(np.asarray(Image.open(__import__("io").BytesIO(data))), px)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no image files"):
        pristine.sources(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        pristine.sources(tmp_path / "missing")
    assert pristine.sources("embedded:coffee,ihc") == ["skimage:coffee", "skimage:ihc"]
    with pytest.raises(ValueError, match="unknown embedded"):
        pristine.sources("embedded:nope")


def test_contact_sheet(tmp_path):
    from data_pipeline import preview

    sheet = preview.contact_sheet(pristine.load_embedded("chelsea"), tmp_path / "s.png", size=32, types=[1, 10])
    assert (tmp_path / "s.png").exists() and sheet.size[1] == 14 + 2 * 34


def test_any_size_any_type_property():
    """Property: every type and level keeps the size and dtype of any image from 2x2 up, flat images included."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    @settings(max_examples=40, deadline=None, derandomize=True)
    @given(h=st.integers(2, 40), w=st.integers(2, 40), t=st.sampled_from(TYPES), lv=st.integers(1, 5),
           flat=st.booleans(), seed=st.integers(0, 2**32 - 1))
    def check(h, w, t, lv, flat, seed):
        rng = np.random.default_rng(seed)
        img = np.full((h, w, 3), 90, np.uint8) if flat else rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out = D.distort(img, t, lv, rng, restretch=bool(seed % 2))
        assert out.shape == img.shape and out.dtype == np.uint8

    check()
