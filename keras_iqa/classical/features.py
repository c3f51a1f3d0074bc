"""The natural-scene statistics of BRISQUE and NIQE (Mittal, Moorthy, Bovik, IEEE TIP 2012; Mittal, Soundararajan, Bovik,
IEEE SPL 2013), as the authors' MATLAB release computes them: MSCN coefficients, the moment-matching GGD fit of them and
the AGGD fit of their four pairwise products (horizontal, vertical, two diagonals), at two scales.

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> brisque_features(rng.uniform(0, 255, (64, 64, 3))).shape
    (36,)
"""

from __future__ import annotations

import numpy as np
from PIL import Image
from scipy import ndimage
from scipy.special import gamma as G

#: The shape grid of the moment-matching fits (the MATLAB release's 0.2:0.001:10).
SHAPES = np.arange(0.2, 10.0005, 0.001)
_GGD_RATIO = G(1 / SHAPES) * G(3 / SHAPES) / G(2 / SHAPES) ** 2
_AGGD_RATIO = G(2 / SHAPES) ** 2 / (G(1 / SHAPES) * G(3 / SHAPES))
#: Pairwise-product neighbours (row, column shift): horizontal, vertical, main and secondary diagonal.
SHIFTS = ((0, 1), (1, 0), (1, 1), (-1, 1))
#: Shape reported for data with no spread (a constant image): the Gaussian's (ours: the release gives NaN).
DEGENERATE_SHAPE = 2.0


def gaussian_window(size: int = 7, sigma: float = 7 / 6) -> np.ndarray:
    """MATLAB's `fspecial('gaussian', size, sigma)`: a normalised size x size Gaussian."""
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-(r[:, None] ** 2 + r[None, :] ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def gray(image) -> np.ndarray:
    """float64 luminance on [0, 255]: MATLAB's `rgb2gray` weights for an RGB image, the image itself for a 2-D one."""
    x = np.asarray(image, np.float64)
    if x.ndim == 3 and x.shape[2] == 3:
        return x @ np.array([0.298936021293775, 0.587043074451121, 0.114020904255103])
    if x.ndim == 3 and x.shape[2] == 1:
        return x[..., 0]
    if x.ndim != 2:
        raise ValueError(f"expected an HxW or HxWx3 image, got shape {x.shape}")
    return x


def local_stats(y: np.ndarray, mode: str = "constant") -> tuple:
    """(local mean, local deviation) under the 7x7 Gaussian window; `mode` the border (BRISQUE's `filter2`: "constant"
    zeros, NIQE's `imfilter(..., 'replicate')`: "nearest")."""
    w = gaussian_window()
    mu = ndimage.correlate(y, w, mode=mode, cval=0.0)
    var = ndimage.correlate(y * y, w, mode=mode, cval=0.0) - mu * mu
    return mu, np.sqrt(np.abs(var))


def mscn(y: np.ndarray, c: float = 1.0, mode: str = "constant") -> np.ndarray:
    """Mean-subtracted contrast-normalised coefficients (I - mu) / (sigma + c) of a 2-D luminance image."""
    mu, sigma = local_stats(np.asarray(y, np.float64), mode)
    return (y - mu) / (sigma + c)


def fit_ggd(x) -> tuple:
    """(shape, variance) of a zero-mean generalized Gaussian by moment matching (the release's `estimateggdparam`):
    the shape whose Gamma(1/a) Gamma(3/a) / Gamma(2/a)^2 is nearest E[x^2] / E[|x|]^2 on `SHAPES`."""
    x = np.asarray(x, np.float64).ravel()
    var, e = np.mean(x * x), np.mean(np.abs(x))
    if var <= 0:
        return DEGENERATE_SHAPE, 0.0
    return float(SHAPES[np.argmin(np.abs(var / e ** 2 - _GGD_RATIO))]), float(var)


def fit_aggd(x) -> tuple:
    """(shape, mean, left variance, right variance) of an asymmetric generalized Gaussian by moment matching (the
    release's `estimateaggdparam`); the mean is (br - bl) Gamma(2/a) / Gamma(1/a) with the scales b = std sqrt(G(1/a) /
    G(3/a))."""
    x = np.asarray(x, np.float64).ravel()
    left, right = x[x < 0], x[x > 0]
    lstd = np.sqrt(np.mean(left * left)) if left.size else 0.0
    rstd = np.sqrt(np.mean(right * right)) if right.size else 0.0
    if lstd <= 0 or rstd <= 0:
        return DEGENERATE_SHAPE, 0.0, float(lstd ** 2), float(rstd ** 2)
    g = lstd / rstd
    rhat = np.mean(np.abs(x)) ** 2 / np.mean(x * x)
    rnorm = rhat * (g ** 3 + 1) * (g + 1) / (g ** 2 + 1) ** 2
    a = float(SHAPES[np.argmin((_AGGD_RATIO - rnorm) ** 2)])
    mean = (rstd - lstd) * (G(2 / a) / G(1 / a)) * np.sqrt(G(1 / a) / G(3 / a))
    return a, float(mean), float(lstd ** 2), float(rstd ** 2)


def pair_products(m: np.ndarray) -> list:
    """The four products of `m` with its neighbours (`SHIFTS`, circular as the release's `circshift`)."""
    return [m * np.roll(m, s, axis=(0, 1)) for s in SHIFTS]


def scale_features(m: np.ndarray) -> np.ndarray:
    """18 features of one scale's MSCN coefficients (or a patch of them): GGD (shape, variance), then per product AGGD
    (shape, mean, left variance, right variance)."""
    out = list(fit_ggd(m))
    for p in pair_products(m):
        out.extend(fit_aggd(p))
    return np.array(out, np.float64)


def half(y: np.ndarray) -> np.ndarray:
    """MATLAB's `imresize(y, 0.5)`: bicubic (a = -0.5) with antialiasing, size ceil(n / 2) (Pillow's float resize)."""
    h, w = y.shape
    img = Image.fromarray(np.asarray(y, np.float32), mode="F")
    return np.asarray(img.resize(((w + 1) // 2, (h + 1) // 2), Image.Resampling.BICUBIC), np.float64)


def brisque_features(image) -> np.ndarray:
    """The 36 BRISQUE features of an image (HxWx3 RGB or HxW, values on [0, 255]): 18 per scale, full then half size."""
    y = gray(image)
    if min(y.shape) < 8:
        raise ValueError(f"BRISQUE needs an image of at least 8x8 pixels, got {y.shape[1]}x{y.shape[0]}")
    feats = []
    for _ in range(2):
        feats.append(scale_features(mscn(y)))
        y = half(y)
    return np.concatenate(feats)
