"""Image quality metrics that need no weights: PSNR, SSIM, MS-SSIM and L2 per image, on images in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(reference: torch.Tensor, restored: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB of each image of [B, C, H, W] (inf where identical)."""
    return 10 * torch.log10(data_range**2 / l2(reference, restored))


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def _ssim_terms(
    x: torch.Tensor, y: torch.Tensor, data_range: float, window: int, sigma: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(luminance, contrast-structure) maps of float64 [B, C, H, W] images at every position where the
    Gaussian window fits, K1 = 0.01, K2 = 0.03."""
    # The 2-D Gaussian is separable: a column pass then a row pass, over all five maps in one batch.
    w = gaussian_window(window, sigma).to(x.device)
    maps = torch.stack((x, y, x * x, y * y, x * y)).flatten(0, 2).unsqueeze(1)
    means = F.conv2d(F.conv2d(maps, w.view(1, 1, -1, 1)), w.view(1, 1, 1, -1))
    mx, my, mxx, myy, mxy = means.view(5, *x.shape[:2], *means.shape[-2:])
    vx, vy, cov = mxx - mx**2, myy - my**2, mxy - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    luminance = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
    contrast_structure = (2 * cov + c2) / (vx + vy + c2)
    return luminance, contrast_structure


def ssim(
    reference: torch.Tensor, restored: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """SSIM (Wang et al. 2004) of each image of [B, C, H, W]: Gaussian-weighted local statistics over the
    positions where the window fits, K1 = 0.01, K2 = 0.03, averaged over positions and channels."""
    luminance, contrast_structure = _ssim_terms(reference.double(), restored.double(), data_range, window, sigma)
    return (luminance * contrast_structure).flatten(1).mean(1)


MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang, Simoncelli & Bovik 2003, finest scale first


def ms_ssim(
    reference: torch.Tensor,
    restored: torch.Tensor,
    data_range: float = 1.0,
    window: int = 11,
    sigma: float = 1.5,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
) -> torch.Tensor:
    """Multi-scale SSIM (Wang et al. 2003) of each image of [B, C, H, W].

    Per channel: the mean contrast-structure term at each of the first len(weights) - 1 scales and the
    mean SSIM at the last, each clamped at 0 and raised to its weight, multiplied; then averaged over
    channels (the convention of TensorFlow's ssim_multiscale and pytorch_msssim). Each scale halves the
    previous one by 2x2 average pooling (an odd trailing row or column is dropped). The window must fit
    the coarsest scale, so both sides need at least window * 2**(len(weights) - 1) pixels (176 for 5 scales).
    """
    x, y = reference.double(), restored.double()
    smallest = window * 2 ** (len(weights) - 1)
    if min(x.shape[-2:]) < smallest:
        raise ValueError(
            f"MS-SSIM with {len(weights)} scales and {window}x{window} windows needs images of at least "
            f"{smallest}x{smallest} pixels, got {tuple(x.shape[-2:])}"
        )
    factors = []
    for scale, weight in enumerate(weights):
        luminance, contrast_structure = _ssim_terms(x, y, data_range, window, sigma)
        last = scale == len(weights) - 1
        term = (luminance * contrast_structure if last else contrast_structure).mean((2, 3))
        # A negative mean (anti-correlated structure) would make the fractional power undefined.
        factors.append(term.clamp(min=0) ** weight)
        if not last:
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return torch.stack(factors).prod(0).mean(1)


def l2(reference: torch.Tensor, restored: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each image of [B, C, H, W], on the scale the images are given in.

    pSp-family tables report it on images in [-1, 1], which is 4 times the value on [0, 1].
    """
    return (reference.double() - restored.double()).pow(2).flatten(1).mean(1)
