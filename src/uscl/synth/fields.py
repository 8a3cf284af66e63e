"""Random fields and resampling: the numerical building blocks of the simulator.

Everything here is plain numpy (no scipy): blurs are Gaussian transfer
functions applied in the Fourier domain, which costs one FFT pair however
wide the kernel is.
"""

from __future__ import annotations

import numpy as np


def _gaussian_transfer(n: int, sigma: float) -> np.ndarray:
    """Fourier transform of a unit-sum Gaussian of std ``sigma`` samples (periodic)."""
    if sigma <= 0:
        return np.ones(n, np.float32)
    f = np.fft.fftfreq(n)
    return np.exp(-2.0 * (np.pi * sigma * f) ** 2).astype(np.float32)


def gaussian_blur(field: np.ndarray, sigma_y: float, sigma_x: float) -> np.ndarray:
    """Blur a 2-D real or complex array with an axis-aligned Gaussian (periodic edges)."""
    ty = _gaussian_transfer(field.shape[0], sigma_y)
    tx = _gaussian_transfer(field.shape[1], sigma_x)
    spec = np.fft.fft2(field) * (ty[:, None] * tx[None, :])
    out = np.fft.ifft2(spec)
    if np.iscomplexobj(field):
        return out.astype(np.complex64)
    return out.real.astype(np.float32)


def speckle_field(shape: tuple[int, int], sigma_axial: float, sigma_lateral: float,
                  rng: np.random.Generator) -> np.ndarray:
    """Complex speckle: white complex scatterers convolved with a Gaussian PSF.

    The result is circular complex Gaussian, so its magnitude is Rayleigh
    distributed, like the envelope of a fully developed speckle pattern. It is
    normalised to unit mean power, so ``|field|`` has mean about 0.886.
    """
    scat = (rng.standard_normal(shape, dtype=np.float32)
            + 1j * rng.standard_normal(shape, dtype=np.float32)).astype(np.complex64)
    field = gaussian_blur(scat, sigma_axial, sigma_lateral)
    power = float(np.mean(np.abs(field) ** 2))
    return (field / np.sqrt(max(power, 1e-12))).astype(np.complex64)


def smooth_noise_2d(shape: tuple[int, int], sigma_y: float, sigma_x: float,
                    rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std smooth random field (blurred white noise)."""
    field = gaussian_blur(rng.standard_normal(shape, dtype=np.float32), sigma_y, sigma_x)
    return ((field - field.mean()) / max(float(field.std()), 1e-6)).astype(np.float32)


def smooth_noise_1d(n: int, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-std smooth random curve of length ``n``."""
    x = rng.standard_normal(n).astype(np.float32)
    x = np.fft.ifft(np.fft.fft(x) * _gaussian_transfer(n, sigma)).real.astype(np.float32)
    return ((x - x.mean()) / max(float(x.std()), 1e-6)).astype(np.float32)


def crop(canvas: np.ndarray, y0: float, x0: float, height: int, width: int) -> np.ndarray:
    """Window of ``canvas`` (..., H, W) whose top-left corner sits at a sub-pixel position.

    Bilinear interpolation between four integer-shifted slices: a rigid
    translation of the whole canvas at the cost of three multiply-adds per
    pixel. The window must lie inside the canvas (callers keep a margin).
    """
    iy, ix = int(np.floor(y0)), int(np.floor(x0))
    fy, fx = np.float32(y0 - iy), np.float32(x0 - ix)
    iy = min(max(iy, 0), canvas.shape[-2] - height - 1)
    ix = min(max(ix, 0), canvas.shape[-1] - width - 1)
    rows = canvas[..., iy:iy + height + 1, :]
    cols = rows[..., ix:ix + width] + fx * (rows[..., ix + 1:ix + width + 1] - rows[..., ix:ix + width])
    return cols[..., :-1, :] + fy * (cols[..., 1:, :] - cols[..., :-1, :])


def crop_1d(curve: np.ndarray, x0: float, width: int) -> np.ndarray:
    """Sub-sample-shifted window of a 1-D curve (linear interpolation)."""
    ix = int(np.floor(x0))
    fx = np.float32(x0 - ix)
    ix = min(max(ix, 0), curve.shape[0] - width - 1)
    a = curve[ix:ix + width]
    b = curve[ix + 1:ix + width + 1]
    return a + fx * (b - a)
