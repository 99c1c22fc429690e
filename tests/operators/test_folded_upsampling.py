"""The folded generator folds each 2x upsampling's FIR blur into its transposed convolution. Both are
linear, so the fold is exact: checked in float64 against the grouped (research) form at every output
resolution the generator has, and against the definition of a full convolution."""

import dataclasses

import pytest
import torch

from factories import randomize_
from operators.stylegan2 import Generator, GeneratorConfig, ModulatedConv2d
from operators.stylegan2.fir import make_fir_kernel
from operators.stylegan2.layers import full_convolution


def test_full_convolution_is_the_definition():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(2, 3, 3, 3, generator=gen, dtype=torch.float64)
    kernel = torch.randn(4, 4, generator=gen, dtype=torch.float64)  # not symmetric: orientation matters
    out = full_convolution(weight, kernel)
    expected = torch.zeros(2, 3, 6, 6, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            for u in range(4):
                for v in range(4):
                    expected[:, :, i + u, j + v] += weight[:, :, i, j] * kernel[u, v]
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("side", [4, 8, 16, 32, 64, 128, 256, 512])  # inputs of the 8 ... 1024 px layers
@pytest.mark.parametrize("batch", [1, 5])
def test_the_folded_upsampling_equals_the_grouped_form_at_every_resolution(side, batch):
    torch.manual_seed(side + batch)
    grouped = ModulatedConv2d(4, 3, 3, 8, upsample=True, form="grouped").double()
    folded = ModulatedConv2d(4, 3, 3, 8, upsample=True, form="folded").double()
    folded.load_state_dict(randomize_(grouped, side).state_dict())
    x = torch.randn(batch, 4, side, side, dtype=torch.float64)
    w = torch.randn(batch, 8, dtype=torch.float64)
    with torch.no_grad():
        a, b = grouped(x, w), folded(x, w)
    assert b.shape == (batch, 3, 2 * side, 2 * side)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12 * a.abs().max().item())


@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 1), (1, 1)])
def test_other_blur_kernels_fold_or_keep_their_blur(taps):
    """Kernels whose blur padding is symmetric fold; the others keep the separate blur. Both are exact."""
    torch.manual_seed(3)
    grouped = ModulatedConv2d(3, 2, 3, 4, upsample=True, blur_taps=taps, form="grouped").double()
    batched = ModulatedConv2d(3, 2, 3, 4, upsample=True, blur_taps=taps, form="folded").double()
    batched.load_state_dict(randomize_(grouped, 4).state_dict())
    x, w = torch.randn(2, 3, 5, 5, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(batched(x, w), grouped(x, w), rtol=0, atol=1e-12)
    assert make_fir_kernel(taps).shape == (len(taps), len(taps))


@pytest.mark.parametrize("form", ["batched", "folded"])
@pytest.mark.parametrize("resolution,channel_base", [(64, 512), (256, 1024)])
@pytest.mark.parametrize("batch", [1, 5])
def test_the_batched_and_folded_generators_equal_the_grouped_one(resolution, channel_base, batch, form):
    config = GeneratorConfig(
        resolution=resolution, style_dim=16, mapping_layers=1, channel_multiplier=1, channel_base=channel_base,
        channel_max=16,
    )
    grouped = randomize_(Generator(config), 11).double().eval()
    batched = Generator(dataclasses.replace(config, modulation=form)).double().eval()
    batched.load_state_dict(grouped.state_dict())
    ws = torch.randn(batch, config.num_ws, config.style_dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        a, b = grouped(ws), batched(ws)
        b32 = batched.float()(ws.float())
    assert b.shape == (batch, 3, resolution, resolution)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-10 * a.abs().max().item())
    torch.testing.assert_close(b32, a.float(), rtol=0, atol=2e-5 * a.abs().max().item())  # float32 round-off
