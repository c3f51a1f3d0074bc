"""The 25 KADID-10k / KADIS-700k distortion types x 5 levels (docs/distortions.md, Level table).

Every distortion is a pure function ``fn(image, level, rng, **options) -> image``:

- ``image``: uint8 ``HxWx3`` RGB (not modified);
- ``level``: 1 (mildest) .. 5 (strongest), mapped to the MATLAB ``imdist_generator.m`` level table (:data:`LEVELS`);
- ``rng``: a ``numpy.random.Generator``; the output is a deterministic function of the image, the level and the generator
  state (types that draw nothing ignore it);
- returns a new uint8 ``HxWx3`` image of the input size.

Use :func:`distort` for the registry by KADID number, :data:`DISTORTIONS` for the table (id, name, short key, levels,
function) and :func:`ssim` / :func:`ms_ssim` for the full-reference pseudo-labels.

Implementation notes (numbers refer to the KADID ids; everything else follows the table in docs/distortions.md):

- Internally images are float64 RGB in [0, 1]. ``distort(..., restretch=True)`` reproduces the generator's ``mapmm`` min-max
  stretch of the input and of the output (the official code); the default ``restretch=False`` keeps the distortion as
  documented (a re-stretch partly undoes 16 brighten, 17 darken and 18 mean shift).
- Tone curves (16, 17, 25) use MATLAB ``spline`` semantics (not-a-knot cubic spline; through three points this is the parabola).
- 2 lens blur: the MATLAB ``fspecial('disk', r)`` PSF computed as the exact pixel-area coverage of the disk (supersampled).
- 3 motion blur: a line PSF of the given length with a 1-pixel triangular profile (as ``fspecial('motion')``), angle ~ U[0, 180).
- 6 colour quantisation [reference body unknown]: palette of N colours (Pillow median cut, the closest to MATLAB ``rgb2ind``'s
  minimum-variance quantiser) applied with Floyd-Steinberg dithering.
- 14 multiplicative noise [reference body unknown]: ``y = x + x*n`` with ``n`` uniform of the given variance (MATLAB ``imnoise``
  speckle) by default; ``noise="gaussian"`` gives ARNIQA's Gaussian ``n``.
- 15 denoise: Gaussian noise of the given variance, then scikit-image non-local means (``fast_mode``, 5x5 patches, 13x13 search,
  ``h = 0.8*sigma`` with the true sigma) over the RGB channels jointly, instead of MATLAB's DnCNN (no network weights needed).
- 20 non-eccentricity patch, 23 colour block: all patches are cut from the undistorted image and pasted at once (vectorised; a
  later patch wins where two overlap).
- 22 quantisation [reference body unknown]: N equal-width bins between the gray image's min and max (ARNIQA's histogram-bin
  thresholds; ``thresholds="quantile"`` for equal-population bins standing in for MATLAB ``multithresh``); each RGB channel is
  quantised with them and the bin index min-max stretched.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.interpolate import CubicSpline
from scipy.signal import fftconvolve
from skimage.color import rgb2lab, lab2rgb
from skimage.metrics import structural_similarity
from skimage.restoration import denoise_nl_means

__all__ = [
    "Distortion", "DISTORTIONS", "LEVELS", "NAMES", "KEYS", "MONOTONE", "NON_MONOTONE", "distort", "get", "parse_types",
    "parse_levels", "ssim", "ms_ssim", "to_float", "to_uint8",
]


# --------------------------------------------------------------------------------------------------------------- helpers
def to_float(image: np.ndarray) -> np.ndarray:
    """uint8 HxWx3 -> float64 in [0, 1], validating the input."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape HxWx3, got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got dtype {image.dtype}; convert with np.clip(x, 0, 255).astype(np.uint8)")
    if min(image.shape[:2]) < 2:
        raise ValueError(f"image too small to distort: {image.shape[:2]}")
    return image.astype(np.float64) / 255.0


def to_uint8(x: np.ndarray) -> np.ndarray:
    """float in [0, 1] -> uint8 (clipped, rounded)."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def _mapmm(x: np.ndarray) -> np.ndarray:
    """MATLAB ``mapmm``: min-max stretch to [0, 1] over the whole image (a constant image maps to itself)."""
    lo, hi = float(x.min()), float(x.max())
    return x if hi - lo < 1e-12 else (x - lo) / (hi - lo)


def _gauss(x: np.ndarray, sigma: float, radius: int | None = None, mode: str = "nearest") -> np.ndarray:
    """Gaussian filter over the spatial axes of HxW or HxWxC; kernel radius ``ceil(2 sigma)`` (size 2*ceil(2 sigma)+1) unless given."""
    if sigma <= 0:
        return x
    radius = int(math.ceil(2 * sigma)) if radius is None else radius
    sig = (sigma, sigma) + (0,) * (x.ndim - 2)
    return ndimage.gaussian_filter(x, sig, mode=mode, truncate=radius / sigma)


def _filter_rgb(x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Correlates each channel with a 2-D kernel, replicate border (MATLAB ``imfilter(..., 'replicate')``).

    Kernels of 9x9 and more go through an FFT (same result up to rounding, several times faster).
    """
    if max(kernel.shape) < 9:
        return ndimage.correlate(x, kernel[:, :, None], mode="nearest")

    ry, rx = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = np.pad(x, ((ry, ry), (rx, rx), (0, 0)), mode="edge")
    return fftconvolve(padded, kernel[::-1, ::-1, None], mode="valid", axes=(0, 1))


def _rgb2lab(x):
    return rgb2lab(x)


def _lab2rgb(lab):
    with warnings.catch_warnings():  # out-of-gamut values are clipped, which is what we want
        warnings.simplefilter("ignore")
        return lab2rgb(lab)


def _spline_curve(x: np.ndarray, xs: Sequence[float], ys: Sequence[float]) -> np.ndarray:
    """MATLAB ``spline(xs, ys, x)`` (not-a-knot) tone curve, clipped to [0, 1]."""
    return np.clip(CubicSpline(np.asarray(xs, float), np.asarray(ys, float), bc_type="not-a-knot")(x), 0.0, 1.0)


def _gray(x: np.ndarray) -> np.ndarray:
    """ITU-R BT.601 luma (MATLAB ``rgb2gray``)."""
    return x @ np.array([0.2989, 0.5870, 0.1140])


def _paste_patches(x: np.ndarray, src: np.ndarray | None, dst: np.ndarray, size: tuple[int, int],
                   colours: np.ndarray | None = None) -> np.ndarray:
    """Pastes N patches of ``size`` at top-left corners ``dst`` [N, 2] in one vectorised assignment.

    The content is cut from ``x`` at ``src`` [N, 2], or is the uniform colour ``colours`` [N, 3]. A later patch wins on overlap.
    """
    ph, pw = size
    dy, dx = np.meshgrid(np.arange(ph), np.arange(pw), indexing="ij")
    rows = dst[:, 0, None, None] + dy  # [N, ph, pw]
    cols = dst[:, 1, None, None] + dx
    out = x.copy()
    if colours is None:
        values = x[src[:, 0, None, None] + dy, src[:, 1, None, None] + dx]  # [N, ph, pw, 3]
    else:
        values = np.broadcast_to(colours[:, None, None, :], rows.shape + (3,))
    out[rows.reshape(-1), cols.reshape(-1)] = values.reshape(-1, 3)  # numpy assigns repeated indices in order: last wins
    return out


# ---------------------------------------------------------------------------------------------------- 1-3 blur
def gaussian_blur(x, sigma, rng=None):
    """1 Gaussian blur: Gaussian filter of ``sigma``, kernel 2*ceil(2 sigma)+1, replicate border."""
    return _gauss(x, sigma)


def _disk_kernel(radius: float, supersample: int = 16) -> np.ndarray:
    """``fspecial('disk', r)``: fraction of each pixel's area inside the disk of radius r, normalised to sum 1."""
    r = int(math.ceil(radius - 0.5))
    offs = (np.arange(supersample) + 0.5) / supersample - 0.5
    grid = np.arange(-r, r + 1)
    yy = grid[:, None, None, None] + offs[None, None, :, None]
    xx = grid[None, :, None, None] + offs[None, None, None, :]
    k = ((yy ** 2 + xx ** 2) <= radius ** 2).mean(axis=(2, 3))
    return k / k.sum()


def lens_blur(x, radius, rng=None):
    """2 Lens blur: disk PSF of ``radius`` (MATLAB ``fspecial('disk', r)``), replicate border."""
    return _filter_rgb(x, _disk_kernel(radius))


def _motion_kernel(length: float, angle_deg: float) -> np.ndarray:
    """A line PSF of ``length`` pixels at ``angle_deg`` (counter-clockwise), 1-pixel triangular profile, sum 1.

    Like ``fspecial('motion', len, theta)``: weight = max(0, 1 - distance to the centred segment of length len-1).
    """
    half = (max(length, 1.0) - 1.0) / 2.0
    r = int(math.ceil(half)) + 1
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1].astype(float)
    phi = math.radians(angle_deg)
    ux, uy = math.cos(phi), -math.sin(phi)  # image rows grow downwards
    t = np.clip(xx * ux + yy * uy, -half, half)
    dist = np.hypot(xx - t * ux, yy - t * uy)
    k = np.maximum(0.0, 1.0 - dist)
    return k / k.sum()


def motion_blur(x, length, rng):
    """3 Motion blur: line PSF of ``length`` px at a random angle in [0, 180) degrees (ARNIQA)."""
    return _filter_rgb(x, _motion_kernel(length, rng.uniform(0.0, 180.0)))


# ------------------------------------------------------------------------------------------------ 4-8 colour
def color_diffusion(x, amount, rng=None):
    """4 Colour diffusion: Lab a,b Gaussian-blurred with sigma = 1.5*amount + 2, then multiplied by ``amount``."""
    lab = _rgb2lab(x)
    lab[..., 1:] = _gauss(lab[..., 1:], 1.5 * amount + 2.0) * amount
    return _lab2rgb(lab)


def color_shift(x, amount, rng):
    """5 Colour shift: green channel shifted ``amount`` px in a random direction, blended by an edge map.

    e = Gaussian(sigma=4) of the gray gradient magnitude, clipped at its 1st/99th percentiles and min-max stretched;
    G' = e * G_shifted + (1 - e) * G.
    """
    gy, gx = np.gradient(_gray(x))
    e = _gauss(np.hypot(gx, gy), 4.0)
    lo, hi = np.percentile(e, [1, 99])
    e = np.clip(e, lo, hi)
    e = (e - lo) / (hi - lo) if hi - lo > 1e-12 else np.zeros_like(e)
    theta = rng.uniform(0.0, 2 * math.pi)
    shifted = ndimage.shift(x[..., 1], (amount * math.sin(theta), amount * math.cos(theta)), order=1, mode="nearest")
    out = x.copy()
    out[..., 1] = e * shifted + (1.0 - e) * x[..., 1]
    return out


def color_quantization(x, colours, rng=None):
    """6 Colour quantisation [reference body unknown]: N-colour palette (median cut) with Floyd-Steinberg dithering.

    The palette is computed on a regular subsample of at most ~32k pixels (same error, 8x faster at 512x384); every
    pixel is then mapped to it with dithering.
    """
    u8 = to_uint8(x)
    img = Image.fromarray(u8)
    stride = max(1, int(math.ceil(math.sqrt(u8.shape[0] * u8.shape[1] / 32768))))  # palette from <= ~32k pixels (speed)
    sample = Image.fromarray(np.ascontiguousarray(u8[::stride, ::stride]))
    palette = sample.quantize(colors=int(colours), method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    out = img.quantize(palette=palette, dither=Image.Dither.FLOYDSTEINBERG).convert("RGB")
    return np.asarray(out, dtype=np.float64) / 255.0


def saturation_hsv(x, factor, rng=None):
    """7 Colour saturation 1: HSV saturation multiplied by ``factor``, clipped to [0, 1].

    Computed in closed form: with hue and value V = max(R, G, B) fixed, every channel is c = V (1 - S k_c(H)), so scaling
    S to S' gives c' = V - (V - c) S'/S (identical to rgb2hsv -> scale -> hsv2rgb, without the round trip).
    """
    v = x.max(axis=2, keepdims=True)
    s = np.where(v > 0, (v - x.min(axis=2, keepdims=True)) / np.where(v > 0, v, 1.0), 0.0)
    s_new = np.clip(s * factor, 0.0, 1.0)
    ratio = np.where(s > 0, s_new / np.where(s > 0, s, 1.0), 0.0)
    return v - (v - x) * ratio


def saturation_lab(x, factor, rng=None):
    """8 Colour saturation 2: Lab a,b multiplied by ``factor`` (out-of-gamut colours clipped)."""
    lab = _rgb2lab(x)
    lab[..., 1:] *= factor
    return _lab2rgb(lab)


# ------------------------------------------------------------------------------------------------ 9-10 compression
def jpeg2000(x, ratio, rng=None):
    """9 JPEG2000: Pillow/OpenJPEG irreversible (9/7) encode at compression ``ratio`` (MATLAB ``CompressionRatio``), decode."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(x)).save(buf, format="JPEG2000", quality_mode="rates", quality_layers=[float(ratio)],
                                       irreversible=True)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float64) / 255.0


def jpeg(x, quality, rng=None):
    """10 JPEG: Pillow (libjpeg) encode at ``quality`` (4:2:0 chroma subsampling, as MATLAB ``imwrite``), decode."""
    buf = io.BytesIO()
    Image.fromarray(to_uint8(x)).save(buf, format="JPEG", quality=int(quality), subsampling="4:2:0")
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"), dtype=np.float64) / 255.0


# ------------------------------------------------------------------------------------------------ 11-15 noise
def white_noise(x, variance, rng):
    """11 White noise: x + N(0, variance) on RGB in [0, 1], clipped."""
    return x + rng.normal(0.0, math.sqrt(variance), x.shape)


_YCC = np.array([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]]) / 255.0
_YCC_OFF = np.array([16.0, 128.0, 128.0]) / 255.0
_YCC_INV = np.linalg.inv(_YCC)


def white_noise_ycbcr(x, variance, rng):
    """12 White noise in colour components: RGB -> YCbCr (MATLAB ``rgb2ycbcr``, [0,1] scale), + N(0, variance) on Y, Cb, Cr, -> RGB."""
    ycc = x @ _YCC.T + _YCC_OFF
    ycc = ycc + rng.normal(0.0, math.sqrt(variance), x.shape)
    return (ycc - _YCC_OFF) @ _YCC_INV.T


def impulse_noise(x, density, rng):
    """13 Impulse noise: salt and pepper of ``density`` per sample (MATLAB ``imnoise``): u < d/2 -> 0, d/2 <= u < d -> 1."""
    u = rng.random(x.shape)
    out = np.where(u < density / 2.0, 0.0, x)
    return np.where((u >= density / 2.0) & (u < density), 1.0, out)


def multiplicative_noise(x, variance, rng, noise: str = "uniform"):
    """14 Multiplicative noise [reference body unknown]: y = x + x*n, n of zero mean and ``variance``.

    Args:
        noise: "uniform" (MATLAB ``imnoise(..., 'speckle')``: n = sqrt(12 v) (U - 0.5)) or "gaussian" (ARNIQA).
    """
    if noise == "uniform":
        n = math.sqrt(12.0 * variance) * (rng.random(x.shape) - 0.5)
    elif noise == "gaussian":
        n = rng.normal(0.0, math.sqrt(variance), x.shape)
    else:
        raise ValueError(f"multiplicative_noise: noise must be 'uniform' or 'gaussian', got {noise!r}")
    return x + x * n


def denoise(x, variance, rng):
    """15 Denoise: x + N(0, variance), clipped, then non-local means (scikit-image, in place of MATLAB's DnCNN).

    ``denoise_nl_means(fast_mode=True, patch_size=5, patch_distance=6, h=0.8*sigma, sigma=sigma)``, RGB channels jointly.
    """
    sigma = math.sqrt(variance)
    noisy = np.clip(x + rng.normal(0.0, sigma, x.shape), 0.0, 1.0)
    return denoise_nl_means(noisy, h=0.8 * sigma, sigma=sigma, fast_mode=True, patch_size=5, patch_distance=6,
                            channel_axis=-1)


# ------------------------------------------------------------------------------------------------ 16-18 brightness
def brighten(x, amount, rng=None):
    """16 Brighten: curve c through (0,0), (0.5, 0.5 + amount/2), (1,1); result = (2 c(RGB) + RGB(Lab with L = 100 c(L/100))) / 3."""
    xs, ys = (0.0, 0.5, 1.0), (0.0, 0.5 + amount / 2.0, 1.0)
    rgb = _spline_curve(x, xs, ys)
    lab = _rgb2lab(x)
    lab[..., 0] = 100.0 * _spline_curve(lab[..., 0] / 100.0, xs, ys)
    return (2.0 * rgb + _lab2rgb(lab)) / 3.0


def darken(x, amount, rng=None):
    """17 Darken: RGB tone curve through (0,0), (0.5, 0.5 - amount/2), (1,1)."""
    return _spline_curve(x, (0.0, 0.5, 1.0), (0.0, 0.5 - amount / 2.0, 1.0))


def mean_shift(x, shift, rng=None):
    """18 Mean shift: x + shift, clipped (level 3 is the identity; not monotone in level)."""
    return x + shift


# ------------------------------------------------------------------------------------------------ 19-23 spatial
def jitter(x, std, rng, iterations: int = 5):
    """19 Jitter: ``iterations`` (5) random per-pixel warps with N(0, std^2) displacements, bilinear, replicate border."""
    h, w, _ = x.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    out = x
    for _ in range(iterations):  # 5 whole-image warps, each vectorised
        dy, dx = rng.normal(0.0, std, (2, h, w))
        coords = np.stack([yy + dy, xx + dx])
        out = np.stack([ndimage.map_coordinates(out[..., c], coords, order=1, mode="nearest") for c in range(3)], axis=-1)
    return out


def non_eccentricity_patch(x, count, rng, patch: int = 16):
    """20 Non-eccentricity patch: ``count`` random 16x16 patches each pasted at an offset of up to +-8 px (16 U(-0.5, 0.5))."""
    h, w, _ = x.shape
    ph, pw = min(patch, h), min(patch, w)
    src = np.stack([rng.integers(0, h - ph + 1, count), rng.integers(0, w - pw + 1, count)], axis=1)
    off = np.round(np.stack([ph * (rng.random(count) - 0.5), pw * (rng.random(count) - 0.5)], axis=1)).astype(int)
    dst = np.clip(src + off, 0, [h - ph, w - pw])
    return _paste_patches(x, src, dst, (ph, pw))


def pixelate(x, strength, rng=None):
    """21 Pixelate: nearest-neighbour downscale by z = 0.95 - strength^0.6, then nearest upscale to the input size."""
    h, w, _ = x.shape
    z = 0.95 - strength ** 0.6
    sh, sw = max(1, int(round(h * z))), max(1, int(round(w * z)))
    # centre-aligned nearest neighbour both ways (MATLAB imresize 'nearest'): source = floor((i + 0.5) / scale)
    rows = np.minimum(((np.arange(sh) + 0.5) * h / sh).astype(int), h - 1)
    cols = np.minimum(((np.arange(sw) + 0.5) * w / sw).astype(int), w - 1)
    small = x[rows][:, cols]
    up_r = np.minimum(((np.arange(h) + 0.5) * sh / h).astype(int), sh - 1)
    up_c = np.minimum(((np.arange(w) + 0.5) * sw / w).astype(int), sw - 1)
    return small[up_r][:, up_c]


def quantization(x, levels, rng=None, thresholds: str = "uniform"):
    """22 Quantisation [reference body unknown]: ``levels`` intensity bins with thresholds from the gray image.

    Each RGB channel is quantised with the gray image's thresholds (``imquantize``) and the bin index min-max stretched
    to [0, 1] (a posterisation that keeps the tones).

    Args:
        thresholds: "uniform" (default; ARNIQA's histogram-bin edges: ``levels`` equal-width bins between the gray image's
            min and max) or "quantile" (equal-population bins, closer to MATLAB ``multithresh``'s adaptivity; it also
            equalises the histogram).
    """
    g = _gray(x)
    if thresholds == "uniform":
        t = np.linspace(g.min(), g.max(), int(levels) + 1)[1:-1]
    elif thresholds == "quantile":
        t = np.unique(np.quantile(g, np.arange(1, levels) / levels))
    else:
        raise ValueError(f"quantization: thresholds must be 'uniform' or 'quantile', got {thresholds!r}")
    return _mapmm(np.digitize(x, t).astype(np.float64))


def color_block(x, blocks, rng, size: int = 32):
    """23 Colour block: ``blocks`` 32x32 blocks of a uniform random colour pasted at random positions."""
    h, w, _ = x.shape
    bh, bw = min(size, h), min(size, w)
    dst = np.stack([rng.integers(0, h - bh + 1, blocks), rng.integers(0, w - bw + 1, blocks)], axis=1)
    colours = rng.random((blocks, 3))
    return _paste_patches(x, None, dst, (bh, bw), colours=colours)


# ------------------------------------------------------------------------------------------------ 24-25 sharpness/contrast
def high_sharpen(x, amount, rng=None):
    """24 High sharpen: unsharp mask on Lab L, L' = L + amount (L - G_3 * L) (Gaussian sigma = radius 3, 13x13), -> RGB."""
    lab = _rgb2lab(x)
    lum = lab[..., 0]
    lab[..., 0] = lum + amount * (lum - _gauss(lum, 3.0))
    return _lab2rgb(lab)


def contrast_change(x, amount, rng=None):
    """25 Contrast change: spline tone curve through (0,0), (0.3, 0.25 - a/4), (0.5,0.5), (0.7, 0.75 + a/4), (1,1).

    (The curve is the identity at a = -0.2: levels 1-3 (0.3, 0.15, 0) raise the contrast, decreasingly; levels 4-5 (-0.4,
    -0.6) lower it; so the strength is not monotone in the level.)
    """
    return _spline_curve(x, (0.0, 0.3, 0.5, 0.7, 1.0), (0.0, 0.25 - amount / 4.0, 0.5, 0.75 + amount / 4.0, 1.0))


# ------------------------------------------------------------------------------------------------ table
@dataclass(frozen=True)
class Distortion:
    """One KADID distortion type: KADID id, Waterloo name, KADIS short key, the 5 level parameters, the function."""

    id: int
    name: str
    key: str
    levels: tuple
    fn: Callable

    def __call__(self, image: np.ndarray, level: int, rng: np.random.Generator | None = None, restretch: bool = False,
                 **options) -> np.ndarray:
        return distort(image, self.id, level, rng, restretch=restretch, **options)


_TABLE = [
    (1, "GBLUR", "gblur", (0.1, 0.5, 1, 2, 5), gaussian_blur),
    (2, "Lens_Blur", "lblur", (1, 2, 4, 6, 8), lens_blur),
    (3, "Motion_Blur", "mblur", (1, 2, 4, 6, 10), motion_blur),
    (4, "Color_Diffusion", "colordiffuse", (1, 3, 6, 8, 12), color_diffusion),
    (5, "Color_Shift", "colorshift", (1, 3, 6, 8, 12), color_shift),
    (6, "Color_Quantization", "colorquantize", (64, 48, 32, 16, 8), color_quantization),
    (7, "Saturation_Dist._HSV", "colorsaturate", (0.4, 0.2, 0.1, 0, -0.4), saturation_hsv),
    (8, "Saturation_Dist._Lab", "saturate", (1, 2, 3, 6, 9), saturation_lab),
    (9, "JP2K", "jp2k", (16, 32, 45, 120, 400), jpeg2000),
    (10, "JPEG", "jpeg", (43, 36, 24, 7, 4), jpeg),
    (11, "AWGN", "noisegauss", (0.001, 0.002, 0.003, 0.005, 0.01), white_noise),
    (12, "AWGN_YCbCr", "noisecolorcomp", (0.0001, 0.0005, 0.001, 0.002, 0.003), white_noise_ycbcr),
    (13, "Impulse_Noise", "noiseimpulse", (0.001, 0.005, 0.01, 0.02, 0.03), impulse_noise),
    (14, "Multiplicative_Noise", "noisemultiplicative", (0.001, 0.005, 0.01, 0.02, 0.05), multiplicative_noise),
    (15, "Denoising", "denoise", (0.01, 0.03, 0.05, 0.1, 0.15), denoise),
    (16, "Brighten", "brighten", (0.1, 0.2, 0.4, 0.7, 1.1), brighten),
    (17, "Darken", "darken", (0.05, 0.1, 0.2, 0.4, 0.8), darken),
    (18, "Mean_Shift", "meanshift", (0.15, 0.08, 0, -0.08, -0.15), mean_shift),
    (19, "Jitter", "jitter", (0.05, 0.1, 0.2, 0.5, 1), jitter),
    (20, "Non-eccentricity_patch", "noneccentricity", (20, 40, 60, 80, 100), non_eccentricity_patch),
    (21, "Pixelate", "pixelate", (0.01, 0.05, 0.1, 0.2, 0.5), pixelate),
    (22, "Quantization", "noisequantize", (20, 16, 13, 10, 7), quantization),
    (23, "Color_Block", "colorblock", (2, 4, 6, 8, 10), color_block),
    (24, "High_Sharpen", "sharpenHi", (1, 2, 3, 6, 12), high_sharpen),
    (25, "Contrast Dist.", "contrastchange", (0.3, 0.15, 0, -0.4, -0.6), contrast_change),
]
#: KADID id -> :class:`Distortion`.
DISTORTIONS = {i: Distortion(i, n, k, lv, f) for i, n, k, lv, f in _TABLE}
#: KADID id -> the 5 level parameters (level 1 first).
LEVELS = {i: d.levels for i, d in DISTORTIONS.items()}
#: KADID id -> exact Waterloo name.
NAMES = {i: d.name for i, d in DISTORTIONS.items()}
#: KADID id -> KADIS short key.
KEYS = {i: d.key for i, d in DISTORTIONS.items()}
#: Types whose strength is not monotone in the level: 18 mean shift (+0.15 .. -0.15, identity at level 3) and 25 contrast
#: change (+0.3 .. -0.6, identity at amount -0.2, between levels 3 and 4).
NON_MONOTONE = (18, 25)
MONOTONE = tuple(i for i in DISTORTIONS if i not in NON_MONOTONE)


def get(type_: int | str) -> Distortion:
    """Looks a distortion up by KADID id (1..25), Waterloo name or KADIS short key."""
    if isinstance(type_, (int, np.integer)) and int(type_) in DISTORTIONS:
        return DISTORTIONS[int(type_)]
    if isinstance(type_, str):
        s = type_.strip()
        if s.isdigit() and int(s) in DISTORTIONS:
            return DISTORTIONS[int(s)]
        for d in DISTORTIONS.values():
            if s.lower() in (d.name.lower(), d.key.lower()):
                return d
    raise ValueError(f"unknown distortion type {type_!r}; expected a KADID id 1..25, a name such as 'GBLUR' or a key such as 'gblur'")


def distort(image: np.ndarray, type_: int | str, level: int, rng: np.random.Generator | None = None,
            restretch: bool = False, **options) -> np.ndarray:
    """Applies KADID distortion ``type_`` at ``level`` (1..5) to a uint8 HxWx3 image; returns uint8 of the same size.

    Args:
        image: uint8 RGB ``HxWx3``.
        type_: KADID id 1..25 (or name / short key, see :func:`get`).
        level: 1 (mildest) .. 5 (strongest).
        rng: ``numpy.random.Generator`` (default ``default_rng(0)``); the output is deterministic given its state.
        restretch: apply the generator's ``mapmm`` min-max stretch to the input and the output (official MATLAB code).
        **options: per-type options (e.g. ``noise="gaussian"`` for type 14).
    """
    d = get(type_)
    if not isinstance(level, (int, np.integer)) or not 1 <= int(level) <= 5:
        raise ValueError(f"level must be an integer 1..5, got {level!r}")
    rng = np.random.default_rng(0) if rng is None else rng
    x = to_float(image)
    if restretch:
        x = _mapmm(x)
    y = d.fn(x, d.levels[int(level) - 1], rng, **options)
    y = np.clip(y, 0.0, 1.0)
    if restretch:
        y = _mapmm(y)
    out = to_uint8(y)
    assert out.shape == image.shape, (d.name, out.shape, image.shape)
    return out


def parse_types(spec: str | Sequence | None) -> list[int]:
    """'all' | '1,3,10' | '1-5,10' | names/keys -> sorted KADID ids."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return sorted(DISTORTIONS)
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = set()
    for item in items:
        item = str(item).strip()
        if "-" in item and all(p.strip().isdigit() for p in item.split("-", 1)):
            a, b = (int(p) for p in item.split("-", 1))
            for i in range(a, b + 1):
                out.add(get(i).id)
        elif item:
            out.add(get(item).id)
    return sorted(out)


def parse_levels(spec: str | Sequence | None) -> list[int]:
    """'1-5' | '1,3,5' | '5' -> sorted levels in 1..5."""
    if spec is None or (isinstance(spec, str) and spec.strip().lower() in ("", "all")):
        return [1, 2, 3, 4, 5]
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    out = set()
    for item in items:
        item = str(item).strip()
        try:
            if "-" in item:
                a, b = (int(p) for p in item.split("-", 1))
                out.update(range(a, b + 1))
            elif item:
                out.add(int(item))
        except ValueError:
            raise ValueError(f"bad level spec {spec!r}: expected e.g. '1-5' or '1,3,5'") from None
    bad = [v for v in out if not 1 <= v <= 5]
    if bad or not out:
        raise ValueError(f"levels must lie in 1..5, got {spec!r}")
    return sorted(out)


# ------------------------------------------------------------------------------------------------ SSIM / MS-SSIM
_MS_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli, Bovik 2003, Table / eq. (7)


def _luma255(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.ndim == 3:
        image = image[..., :3].astype(np.float64) @ np.array([0.2989, 0.5870, 0.1140])
    return image.astype(np.float64)


def _ssim_terms(x: np.ndarray, y: np.ndarray, data_range: float = 255.0, sigma: float = 1.5):
    """Per-pixel luminance term l and contrast-structure term cs of SSIM (Wang et al. 2004 eq. 13, C3 = C2/2), on the valid interior.

    Gaussian window sigma 1.5 truncated at 3.5 sigma (11x11), population covariances: skimage's
    ``structural_similarity(gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``.
    """
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    stack = np.stack([x, y, x * x, y * y, x * y])
    m = ndimage.gaussian_filter(stack, (0, sigma, sigma), truncate=3.5, mode="reflect")
    mx, my = m[0], m[1]
    vx, vy, cxy = m[2] - mx * mx, m[3] - my * my, m[4] - mx * my
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    cs = (2 * cxy + c2) / (vx + vy + c2)
    pad = int(3.5 * sigma + 0.5)
    if min(x.shape) > 2 * pad:
        lum, cs = lum[pad:-pad, pad:-pad], cs[pad:-pad, pad:-pad]
    return lum, cs


def ssim(distorted: np.ndarray, reference: np.ndarray) -> float:
    """SSIM (Wang et al. 2004, eq. 13) on BT.601 luma in [0, 255], 11x11 Gaussian window, sigma 1.5.

    ``skimage.metrics.structural_similarity`` (population covariances); images with a side under 11 px, which skimage
    refuses, take the mean over the whole (reflect-padded) image from the same terms.
    """
    x, y = _luma255(distorted), _luma255(reference)
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ {x.shape} vs {y.shape}")
    if min(x.shape) < 11:
        lum, cs = _ssim_terms(x, y)
        return float(np.mean(lum * cs))

    return float(structural_similarity(x, y, data_range=255.0, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def _down2(a: np.ndarray) -> np.ndarray:
    h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
    a = a[:h, :w]
    return 0.25 * (a[0::2, 0::2] + a[1::2, 0::2] + a[0::2, 1::2] + a[1::2, 1::2])


def ms_ssim(distorted: np.ndarray, reference: np.ndarray, scales: int = 5) -> float:
    """MS-SSIM (Wang, Simoncelli, Bovik 2003, eq. 7) on luma: prod_j cs_j^w_j * l_M^w_M, 2x2 average downsampling.

    Weights (0.0448, 0.2856, 0.3001, 0.2363, 0.1333). Images too small for 5 scales (short side < 11 * 2^(M-1)) use fewer
    scales with the weights renormalised to sum 1. Negative cs means are clipped to 0.
    """
    x, y = _luma255(distorted), _luma255(reference)
    if x.shape != y.shape:
        raise ValueError(f"ms_ssim: shapes differ {x.shape} vs {y.shape}")
    m = max(1, min(scales, int(math.floor(math.log2(max(min(x.shape), 11) / 11))) + 1))
    w = np.asarray(_MS_WEIGHTS[:m])
    w = w / w.sum()
    vals = []
    for j in range(m):  # at most 5 scales, each vectorised
        lum, cs = _ssim_terms(x, y)
        vals.append(max(float(np.mean(cs)), 0.0) if j < m - 1 else max(float(np.mean(lum * cs)), 0.0))
        x, y = _down2(x), _down2(y)
    return float(np.prod(np.asarray(vals) ** w))


PSEUDO_METRICS = {"ssim": ssim, "ms-ssim": ms_ssim}
