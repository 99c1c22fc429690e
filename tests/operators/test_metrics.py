"""MS-SSIM and L2 against float64 re-statements of their definitions (PSNR and SSIM are checked in
test_degradations_metrics_edits.py)."""

import numpy as np
import pytest
import torch
from numpy.lib.stride_tricks import sliding_window_view

from operators.metrics import l2, ms_ssim, psnr, ssim

MS_SSIM_WEIGHTS = [0.0448, 0.2856, 0.3001, 0.2363, 0.1333]


def pair(seed, shape, noise=0.05):
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    y = (x + noise * torch.randn(shape, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)).clamp(0, 1)
    return x, y


def direct_ms_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """One image [C, H, W]. Per channel and scale: Gaussian-weighted (11x11, sigma 1.5) statistics at every
    window position; the mean contrast-structure term at scales 1-4 and the mean SSIM at scale 5, each
    clamped at 0 and raised to its weight, multiplied. Scales are 2x2 block means, odd edges dropped.
    The channels' products are averaged."""
    g = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    window = (np.outer(g, g) / np.outer(g, g).sum()).ravel()
    c1, c2 = 0.01**2, 0.03**2
    products = []
    for a, b in zip(x, y):
        product = 1.0
        for scale, weight in enumerate(MS_SSIM_WEIGHTS):
            pa = sliding_window_view(a, (11, 11)).reshape(-1, 121)  # one row per window position
            pb = sliding_window_view(b, (11, 11)).reshape(-1, 121)
            ma, mb = pa @ window, pb @ window
            da, db = pa - ma[:, None], pb - mb[:, None]
            va, vb, cov = (da * da) @ window, (db * db) @ window, (da * db) @ window
            cs = (2 * cov + c2) / (va + vb + c2)
            if scale == len(MS_SSIM_WEIGHTS) - 1:
                term = np.mean((2 * ma * mb + c1) / (ma**2 + mb**2 + c1) * cs)
            else:
                term = np.mean(cs)
                h, w = a.shape[0] // 2, a.shape[1] // 2
                a = a[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean((1, 3))
                b = b[: 2 * h, : 2 * w].reshape(h, 2, w, 2).mean((1, 3))
            product *= max(term, 0.0) ** weight
        products.append(product)
    return float(np.mean(products))


@pytest.mark.parametrize("shape", [(2, 3, 176, 176), (1, 3, 181, 200)])
def test_ms_ssim_equals_its_definition(shape):
    x, y = pair(0, shape)
    got = ms_ssim(x, y)
    assert got.dtype == torch.float64 and got.shape == (shape[0],)
    expected = [direct_ms_ssim(x[i].numpy(), y[i].numpy()) for i in range(shape[0])]
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10)
    torch.testing.assert_close(ms_ssim(y, x), got)
    np.testing.assert_allclose(ms_ssim(x, x).numpy(), np.ones(shape[0]), rtol=0, atol=1e-12)


def test_ms_ssim_orders_degradations_and_handles_anticorrelation():
    x, slight = pair(2, (1, 3, 192, 192), noise=0.02)
    _, heavy = pair(2, (1, 3, 192, 192), noise=0.2)
    assert 1 > ms_ssim(x, slight).item() > ms_ssim(x, heavy).item() > 0
    # float32 images give the float64 result.
    assert ms_ssim(x.float(), slight.float()).item() == pytest.approx(ms_ssim(x, slight).item(), rel=1e-6)
    # An inverted image has negative structure correlation: clamped to 0, not NaN.
    assert ms_ssim(x, 1 - x).item() == 0.0


def test_ms_ssim_refuses_images_too_small_for_five_scales():
    x, y = pair(3, (1, 3, 175, 256))
    with pytest.raises(ValueError, match="at least 176x176 pixels, got \\(175, 256\\)"):
        ms_ssim(x, y)
    # Fewer scales fit smaller images; one scale is SSIM.
    small_x, small_y = pair(3, (1, 3, 40, 40))
    torch.testing.assert_close(ms_ssim(small_x, small_y, weights=(1.0,)), ssim(small_x, small_y).clamp(min=0))


def test_l2_is_the_mean_squared_error_and_psnr_follows_it():
    x, y = pair(4, (2, 3, 8, 8), noise=0.1)
    expected = [np.mean([(x[i, c, h, w].item() - y[i, c, h, w].item()) ** 2
                         for c in range(3) for h in range(8) for w in range(8)]) for i in range(2)]  # fmt: skip
    np.testing.assert_allclose(l2(x, y).numpy(), expected, rtol=1e-12)
    a = torch.full((1, 3, 4, 4), 0.5, dtype=torch.float64)
    assert l2(a, a + 0.1).item() == pytest.approx(0.01, rel=1e-12)
    assert l2(a, a).item() == 0.0
    np.testing.assert_allclose(psnr(x, y).numpy(), 10 * np.log10(1 / np.array(expected)), rtol=1e-12)
    # On images in [-1, 1] (pSp's tables) the same pair is 4 times further apart.
    assert l2(2 * x - 1, 2 * y - 1).numpy() == pytest.approx(4 * np.array(expected), rel=1e-12)
