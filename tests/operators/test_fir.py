import numpy as np
import pytest
import torch

from operators.stylegan2 import make_fir_kernel, upfirdn2d
from operators.stylegan2.fir import Blur, Upsample


def direct_upfirdn(x: np.ndarray, k: np.ndarray, up: int, down: int, p0: int, p1: int) -> np.ndarray:
    """The textbook definition, one output pixel at a time, in float64."""
    c, h, w = x.shape
    ups = np.zeros((c, h * up, w * up))
    ups[:, ::up, ::up] = x
    n = h * up + p0 + p1
    padded = np.zeros((c, n, n))
    src = ups[:, max(-p0, 0) : h * up - max(-p1, 0), max(-p0, 0) : w * up - max(-p1, 0)]
    o = max(p0, 0)
    padded[:, o : o + src.shape[1], o : o + src.shape[2]] = src
    kh = k.shape[0]
    size = n - kh + 1
    out = np.zeros((c, size, size))
    for y in range(size):
        for xx in range(size):
            window = padded[:, y : y + kh, xx : xx + kh]
            out[:, y, xx] = (window * k[::-1, ::-1]).sum((1, 2))  # convolution: flipped kernel
    return out[:, ::down, ::down]


@pytest.mark.parametrize(
    "up,down,pad",
    [(1, 1, (0, 0)), (2, 1, (2, 1)), (1, 1, (1, 1)), (1, 2, (1, 1)), (2, 2, (1, 2)), (1, 1, (-1, 2)), (2, 1, (0, -1))],
)
def test_upfirdn2d_matches_direct_definition(up, down, pad):
    gen = torch.Generator().manual_seed(up * 10 + down)
    x = torch.randn(2, 3, 7, 7, generator=gen)
    k = torch.randn(4, 4, generator=gen)  # asymmetric, so a missing flip would show
    ours = upfirdn2d(x, k, up=up, down=down, pad=pad).numpy()
    for b in range(2):
        expected = direct_upfirdn(x[b].double().numpy(), k.double().numpy(), up, down, *pad)
        np.testing.assert_allclose(ours[b], expected, rtol=1e-5, atol=1e-5)


def test_fir_kernel_values():
    k = make_fir_kernel([1, 3, 3, 1], gain=4)
    expected = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64 * 4
    np.testing.assert_array_equal(k.numpy(), expected.astype(np.float32))


def test_upsample_doubles_and_keeps_mean_of_constant():
    # With gain factor**2 the interior of a constant image stays at that constant after 2x upsampling.
    up = Upsample([1, 3, 3, 1])
    out = up(torch.full((1, 2, 8, 8), 3.0))
    assert out.shape == (1, 2, 16, 16)
    torch.testing.assert_close(out[:, :, 2:-2, 2:-2], torch.full((1, 2, 12, 12), 3.0))


def test_blur_after_transposed_conv_pads_to_exact_double():
    blur = Blur([1, 3, 3, 1], pad=(1, 1), gain=4)
    assert blur(torch.zeros(1, 1, 17, 17)).shape == (1, 1, 16, 16)  # 2*8+1 from a 3x3 stride-2 transpose
