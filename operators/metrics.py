"""Image quality metrics for restoration jobs: PSNR and SSIM per image, on images in [0, 1]."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def psnr(reference: torch.Tensor, restored: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """PSNR in dB of each image of [B, C, H, W] (inf where identical)."""
    mse = (reference.double() - restored.double()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(data_range**2 / mse)


def gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-(x**2) / (2 * sigma**2))
    return w / w.sum()


def ssim(
    reference: torch.Tensor, restored: torch.Tensor, data_range: float = 1.0, window: int = 11, sigma: float = 1.5
) -> torch.Tensor:
    """SSIM (Wang et al. 2004) of each image of [B, C, H, W]: Gaussian-weighted local statistics over the
    positions where the window fits, K1 = 0.01, K2 = 0.03, averaged over positions and channels."""
    x, y = reference.double(), restored.double()
    channels = x.shape[1]
    w = gaussian_window(window, sigma).to(x.device)
    kernel = (w[:, None] * w[None, :]).expand(channels, 1, window, window)

    def local_mean(t):
        return F.conv2d(t, kernel, groups=channels)

    mx, my = local_mean(x), local_mean(y)
    vx = local_mean(x * x) - mx**2
    vy = local_mean(y * y) - my**2
    cov = local_mean(x * y) - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    index = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return index.flatten(1).mean(1)

