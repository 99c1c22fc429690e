"""The degradations the E2Style restoration models were trained to undo, for evaluating them on clean images.

Images are float tensors [B, C, H, W] in [0, 1] unless a function says uint8. Random degradations take an
explicit ``torch.Generator`` so that a record's degradation can be reproduced from its seed.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# The official colorization training greys with OpenCV's BGR2GRAY applied to an RGB array, so the
# weights meet the channels swapped: 0.114 R + 0.587 G + 0.299 B. OpenCV computes it in 14-bit fixed
# point: round(coefficient * 2^14), with rounding of the sum.
GREY_FIXED_POINT_OFFICIAL = (1868, 9617, 4899)  # R, G, B
GREY_FIXED_POINT_BT601 = (4899, 9617, 1868)  # the usual luma weights, for images greyed elsewhere
GREY_WEIGHTS = {"official": GREY_FIXED_POINT_OFFICIAL, "bt601": GREY_FIXED_POINT_BT601}


def greyscale_uint8(rgb: torch.Tensor, weights: str = "official") -> torch.Tensor:
    """uint8 [..., 3, H, W] -> uint8 grey replicated to 3 channels, with OpenCV's integer arithmetic."""
    if rgb.dtype != torch.uint8 or rgb.shape[-3] != 3:
        raise ValueError(f"greyscale_uint8 takes uint8 [..., 3, H, W], got {rgb.dtype} {list(rgb.shape)}")
    r, g, b = (rgb.narrow(-3, i, 1).to(torch.int32) for i in range(3))
    wr, wg, wb = GREY_WEIGHTS[weights]
    grey = (r * wr + g * wg + b * wb + (1 << 13)) >> 14
    return grey.expand_as(rgb).to(torch.uint8).contiguous()


def gaussian_noise(images: torch.Tensor, variance: float = 0.01, generator: torch.Generator | None = None) -> torch.Tensor:
    """Additive N(0, variance) noise, clipped to [0, 1] (the official denoising training uses variance 0.01)."""
    noise = torch.randn(images.shape, generator=generator, dtype=images.dtype) * math.sqrt(variance)
    return (images + noise.to(images.device)).clamp(0, 1)


def salt_and_pepper(
    images: torch.Tensor, amount: float = 0.05, salt_ratio: float = 0.5, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Each value independently (channels included) becomes 1 with probability amount * salt_ratio, 0 with
    probability amount * (1 - salt_ratio), and stays otherwise."""
    flipped = torch.rand(images.shape, generator=generator) < amount
    salt = torch.rand(images.shape, generator=generator) < salt_ratio
    out = images.clone()
    out[(flipped & salt).to(images.device)] = 1.0
    out[(flipped & ~salt).to(images.device)] = 0.0
    return out


def triangle_mask(size: int, corner_a_x: int = 35, corner_b_x: int = 35) -> torch.Tensor:
    """bool [size, size], True inside the official inpainting triangle (closed, pixel centres at integers).

    Vertices (x, y) at 256 px: a = (corner_a_x, 35), b = (corner_b_x, 220), c = (corner_b_x + 150, 220),
    with corner_a_x in {35, 220} and corner_b_x in {35, 70} in training; scaled for other sizes.
    """
    scale = size / 256
    (ax, ay), (bx, by), (cx, cy) = ((corner_a_x, 35), (corner_b_x, 220), (corner_b_x + 150, 220))
    vertices = [(x * scale, y * scale) for x, y in ((ax, ay), (bx, by), (cx, cy))]
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float64), torch.arange(size, dtype=torch.float64), indexing="ij")

    def side(p, q):  # > 0 on one side of the edge p -> q
        return (q[0] - p[0]) * (ys - p[1]) - (q[1] - p[1]) * (xs - p[0])

    s1, s2, s3 = side(vertices[0], vertices[1]), side(vertices[1], vertices[2]), side(vertices[2], vertices[0])
    return ((s1 >= 0) & (s2 >= 0) & (s3 >= 0)) | ((s1 <= 0) & (s2 <= 0) & (s3 <= 0))


def apply_mask(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Black (0) where ``mask`` is True."""
    return images.masked_fill(mask.to(images.device), 0.0)


def keys_cubic(x: torch.Tensor, a: float = -0.5) -> torch.Tensor:
    """The Keys cubic convolution kernel."""
    x = x.abs()
    near = (a + 2) * x**3 - (a + 3) * x**2 + 1
    far = a * x**3 - 5 * a * x**2 + 8 * a * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def bicubic_downsample_kernel(factor: int) -> torch.Tensor:
    """The official super-resolution downsampler's 1-d taps: 4 * factor Keys weights at half-pixel offsets,
    stretched by ``factor`` (anti-aliasing) and normalised to sum 1."""
    size = 4 * factor
    offsets = (torch.arange(size, dtype=torch.float64) - size // 2 + 0.5) / factor
    taps = keys_cubic(offsets)
    return taps / taps.sum()


def bicubic_downsample(images: torch.Tensor, factor: int) -> torch.Tensor:
    """[B, C, H, W] in [0, 1] -> [B, C, H / factor, W / factor]: reflect padding, separable stride-``factor``
    convolutions with ``bicubic_downsample_kernel``, clamped to [0, 1] (the pSp/E2Style ``BilinearResize``)."""
    if factor < 1 or images.shape[-1] % factor or images.shape[-2] % factor:
        raise ValueError(f"cannot downsample {list(images.shape[-2:])} by {factor}: it must divide both sides")
    channels = images.shape[1]
    taps = bicubic_downsample_kernel(factor).to(images.device, images.dtype)
    pad = 3 * factor  # kernel 4f, stride f
    before, after = pad // 2, pad - pad // 2
    x = F.pad(images, (0, 0, before, after), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, -1, 1).expand(channels, 1, -1, 1), stride=(factor, 1), groups=channels)
    x = F.pad(x, (before, after, 0, 0), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(channels, 1, 1, -1), stride=(1, factor), groups=channels)
    return x.clamp(0, 1)


def to_uint8_truncating(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] -> uint8 by ``mul(255)`` and truncation, as torchvision's ToPILImage does in the official SR path."""
    return (images.clamp(0, 1) * 255).to(torch.uint8)
