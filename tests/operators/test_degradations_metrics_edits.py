import math

import numpy as np
import pytest
import torch

from operators.degradations import (
    bicubic_downsample,
    bicubic_downsample_kernel,
    gaussian_noise,
    greyscale_uint8,
    salt_and_pepper,
    to_uint8_truncating,
    triangle_mask,
)
from operators.edits import apply_direction, interpolate, mix_styles, paste_center
from operators.metrics import psnr, ssim


def pixel(r, g, b):
    return torch.tensor([r, g, b], dtype=torch.uint8).view(1, 3, 1, 1)


def test_greyscale_weights_and_opencv_rounding():
    # Official (cv2 BGR2GRAY on an RGB array): 0.114 R + 0.587 G + 0.299 B in 14-bit fixed point.
    assert greyscale_uint8(pixel(255, 0, 0)).flatten().tolist() == [29, 29, 29]
    assert greyscale_uint8(pixel(0, 0, 255)).flatten().tolist() == [76, 76, 76]
    assert greyscale_uint8(pixel(255, 0, 0), "bt601").flatten().tolist() == [76] * 3
    # 10*1868 + 200*9617 + 30*4899 + 8192 = 2097242 = 128 * 16384 + 90
    assert greyscale_uint8(pixel(10, 200, 30)).flatten().tolist() == [128] * 3
    assert greyscale_uint8(pixel(255, 255, 255)).flatten().tolist() == [255] * 3
    with pytest.raises(ValueError, match="uint8"):
        greyscale_uint8(torch.zeros(1, 3, 2, 2))


def test_bicubic_taps_are_the_keys_kernel_stretched_and_normalised():
    torch.testing.assert_close(bicubic_downsample_kernel(1), torch.tensor([-0.0625, 0.5625, 0.5625, -0.0625], dtype=torch.float64))
    half = [-0.01171875, -0.03515625, 0.11328125, 0.43359375]
    torch.testing.assert_close(bicubic_downsample_kernel(2), torch.tensor(half + half[::-1], dtype=torch.float64))
    for factor in (4, 8, 16):
        assert bicubic_downsample_kernel(factor).sum().item() == pytest.approx(1.0, abs=1e-12)


def direct_downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Float64 definition: reflect pad 3f (floor half before), then each output sample is the tap-weighted
    sum of the 4f input samples starting at f * index, rows first, then columns."""
    taps = bicubic_downsample_kernel(factor).numpy()
    pad = 3 * factor
    def one_axis(x, axis):
        x = np.moveaxis(x, axis, -1)
        padded = np.pad(x, [(0, 0)] * (x.ndim - 1) + [(pad // 2, pad - pad // 2)], mode="reflect")
        out = np.stack([padded[..., i * factor : i * factor + 4 * factor] @ taps for i in range(x.shape[-1] // factor)], -1)
        return np.moveaxis(out, -1, axis)
    return np.clip(one_axis(one_axis(image, -2), -1), 0, 1)


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_bicubic_downsample_matches_its_definition(factor):
    image = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(factor), dtype=torch.float64)
    got = bicubic_downsample(image, factor)
    assert got.shape == (2, 3, 16 // factor, 16 // factor)
    np.testing.assert_allclose(got.numpy(), direct_downsample(image.numpy(), factor), rtol=0, atol=1e-12)
    flat = torch.full((1, 3, 16, 16), 0.3, dtype=torch.float64)
    torch.testing.assert_close(bicubic_downsample(flat, factor), torch.full_like(got[:1], 0.3))
    with pytest.raises(ValueError, match="must divide both sides"):
        bicubic_downsample(image[..., :15], 2)


def test_truncation_to_uint8():
    assert to_uint8_truncating(torch.tensor([0.0, 0.999, 1 / 255 - 1e-6, 0.5, 1.2])).tolist() == [0, 254, 0, 127, 255]


def test_noise_is_reproducible_from_the_seed():
    x = torch.full((1, 3, 64, 64), 0.5)
    a = gaussian_noise(x, 0.01, torch.Generator().manual_seed(3))
    expected = (x + torch.randn(x.shape, generator=torch.Generator().manual_seed(3)) * 0.1).clamp(0, 1)
    torch.testing.assert_close(a, expected, rtol=0, atol=0)
    assert (a - x).std().item() == pytest.approx(0.1, rel=0.05)

    sp = salt_and_pepper(x, 0.05, 0.5, torch.Generator().manual_seed(4))
    changed = sp != x
    assert set(sp[changed].unique().tolist()) == {0.0, 1.0}
    assert changed.float().mean().item() == pytest.approx(0.05, abs=0.01)
    assert (sp[changed] == 1).float().mean().item() == pytest.approx(0.5, abs=0.06)
    torch.testing.assert_close(sp, salt_and_pepper(x, 0.05, 0.5, torch.Generator().manual_seed(4)), rtol=0, atol=0)


def test_inpainting_triangle():
    mask = triangle_mask(256, 35, 35)
    for x, y in ((35, 35), (35, 220), (185, 220), (60, 150)):  # the vertices (closed) and an inside point
        assert mask[y, x]
    for x, y in ((34, 35), (200, 100), (100, 221)):
        assert not mask[y, x]
    area = 0.5 * 150 * 185
    assert abs(mask.sum().item() - area) < 2 * (150 + 185 + math.hypot(150, 185))  # within a pixel of the edges
    other = triangle_mask(256, 220, 70)
    assert other[35, 220] and other[220, 70] and other[220, 220] and not other[35, 35]
    small = triangle_mask(128, 35, 35)  # scaled to 128 px: a = (17.5, 17.5), b = (17.5, 110)
    assert small[110, 18] and not small[110, 17]


def test_psnr_and_ssim_values():
    a = torch.full((1, 3, 16, 16), 0.5, dtype=torch.float64)
    assert psnr(a, a + 0.1).item() == pytest.approx(20.0)
    assert psnr(a, a).item() == math.inf
    # Constant images: only the luminance term differs from 1.
    c1 = 0.01**2
    expected = (2 * 0.5 * 0.25 + c1) / (0.5**2 + 0.25**2 + c1)
    assert ssim(a, torch.full_like(a, 0.25)).item() == pytest.approx(expected, rel=1e-12)
    x = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = (x + 0.05 * torch.randn(x.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)).clamp(0, 1)
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0])
    torch.testing.assert_close(ssim(x, y), ssim(y, x))
    assert (ssim(x, y) < 1).all()
    np.testing.assert_allclose(ssim(x, y).numpy(), [direct_ssim(x[i].numpy(), y[i].numpy()) for i in range(2)], rtol=1e-10)


def direct_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Per channel and window position, Gaussian-weighted statistics over the 11x11 window."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    values = []
    for c in range(x.shape[0]):
        for i in range(x.shape[1] - 10):
            for j in range(x.shape[2] - 10):
                px, py = x[c, i : i + 11, j : j + 11], y[c, i : i + 11, j : j + 11]
                mx, my = (w * px).sum(), (w * py).sum()
                vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
                cov = (w * (px - mx) * (py - my)).sum()
                values.append(((2 * mx * my + 1e-4) * (2 * cov + 9e-4)) / ((mx**2 + my**2 + 1e-4) * (vx + vy + 9e-4)))
    return float(np.mean(values))


def codes(seed, batch=2):
    return torch.randn(batch, 18, 8, generator=torch.Generator().manual_seed(seed))


def test_directions_touch_only_the_named_layers():
    w, d = codes(0), torch.randn(8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(apply_direction(w, d, 0.0, range(8)), w)  # strength 0 is the identity
    edited = apply_direction(w, d, 3.0, range(8))
    torch.testing.assert_close(edited[:, :8], w[:, :8] + 3.0 * d, rtol=0, atol=1e-6)
    assert torch.equal(edited[:, 8:], w[:, 8:])
    per_layer = torch.randn(18, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(apply_direction(w, per_layer, -2.0, [17])[:, 17], w[:, 17] - 2.0 * per_layer[17])
    with pytest.raises(ValueError, match=r"a direction must be \[8\] or \[18, 8\], got \[512\]"):
        apply_direction(w, torch.zeros(512), 1.0, range(8))
    with pytest.raises(ValueError, match="W\\+ layer 18 out of range 0..17"):
        apply_direction(w, d, 1.0, [18])


def test_mixing_and_interpolation():
    content, style = codes(3), codes(4)
    mixed = mix_styles(content, style, range(10, 18))
    assert torch.equal(mixed[:, :10], content[:, :10]) and torch.equal(mixed[:, 10:], style[:, 10:])
    path = interpolate(content[0], style[0], 5)
    assert path.shape == (7, 18, 8)
    assert torch.equal(path[0], content[0]) and torch.equal(path[-1], style[0])
    torch.testing.assert_close(path[3], (content[0] + style[0]) / 2)


def test_paste_center():
    source, target = torch.ones(1, 3, 8, 8), torch.zeros(1, 3, 8, 8)
    pasted = paste_center(source, target, 0.5)
    assert pasted[0, 0].nonzero().tolist() == [[r, c] for r in range(2, 6) for c in range(2, 6)]
    assert torch.equal(paste_center(source, target, 1.0), source)
