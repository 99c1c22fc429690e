"""The fused synthesis network (operators.stylegan2.fused) rearranges the generator for inference: shared
weights, the blur optionally folded, channels-last, precomputed epilogue terms, the last ToRGB after the
pool. Every rearrangement is exact, so in float64 it equals the research code's grouped form followed by
the box pool at every resolution the generator has, to round-off."""

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from factories import randomize_
from operators.images import box_downsample
from operators.stylegan2 import Generator, GeneratorConfig
from operators.stylegan2.fused import FusedSynthesis, _FusedStyledConv, _FusedToRGB, _pooled_upsample_filter
from operators.stylegan2.fir import Upsample

def generator(resolution: int, seed: int = 11, **overrides) -> Generator:
    # Channels shrink with the resolution (2 at the top, 8 at most) so that 1024 px runs in float64 on a CPU.
    config = GeneratorConfig(
        resolution=resolution, style_dim=8, mapping_layers=1, channel_multiplier=1,
        channel_base=2 * resolution, channel_max=8, **overrides,
    )
    return randomize_(Generator(config), seed).double().eval()

def codes(g: Generator, batch: int, seed: int = 2, dtype=torch.float64) -> torch.Tensor:
    cfg = g.config
    return torch.randn(batch, cfg.num_ws, cfg.style_dim, generator=torch.Generator().manual_seed(seed), dtype=dtype)

@pytest.mark.parametrize("resolution", [32, 64, 128, 256, 512, 1024])
@pytest.mark.parametrize("batch", [1, 5])
def test_the_fused_generator_equals_the_grouped_one_at_every_resolution(resolution, batch):
    g = generator(resolution, seed=resolution + batch)
    ws = codes(g, batch)
    with torch.no_grad():
        full = g(ws)
        for size in (resolution, resolution // 4):  # the image itself, and the 4x4 pool (1024 -> 256)
            expected = box_downsample(full, size)
            for fold_blur in (False, True):
                out = FusedSynthesis(g, size, dtype=torch.float64, fold_blur=fold_blur)(ws)
                assert out.shape == (batch, 3, size, size) and out.dtype == torch.float64
                torch.testing.assert_close(out, expected, rtol=0, atol=1e-12 * expected.abs().max().item())

@pytest.mark.parametrize("fold_blur", [False, True])
def test_a_float32_fused_generator_is_float32_round_off_from_the_float64_reference(fold_blur):
    g = generator(256, seed=5)
    ws = codes(g, 5)
    with torch.no_grad():
        expected = box_downsample(g(ws), 64).float()
        out = FusedSynthesis(g.float(), 64, fold_blur=fold_blur)(ws.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=2e-5 * expected.abs().max().item())

@pytest.mark.parametrize("taps", [(1, 2, 1), (1, 1)])
def test_other_blur_taps_take_the_general_paths_and_stay_exact(taps):
    """Taps whose paddings are not symmetric keep upfirdn2d for the blur and the skip upsampling."""
    g = generator(64, seed=7, blur_taps=taps)
    ws = codes(g, 3)
    with torch.no_grad():
        expected = box_downsample(g(ws), 16)
        torch.testing.assert_close(FusedSynthesis(g, 16, dtype=torch.float64)(ws), expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(FusedSynthesis(g, 64, dtype=torch.float64)(ws), g(ws), rtol=0, atol=1e-12)

@pytest.mark.parametrize("taps", [(1, 3, 3, 1), (1, 2, 1), (1, 1)])
def test_the_pooled_upsampling_filter_is_upsampling_then_a_2x2_average(taps):
    upsample = Upsample(taps).double()
    weight, radius = _pooled_upsample_filter(upsample)
    x = torch.randn(2, 3, 9, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    expected = torch.nn.functional.avg_pool2d(upsample(x), 2)
    out = torch.nn.functional.conv2d(x, weight.expand(3, 1, -1, -1), padding=radius, groups=3)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-14)
    if taps == (1, 3, 3, 1):  # a 3-tap filter: [1, 3, 3, 1] / 8 spread over 2, then averaged in pairs
        assert radius == 1
        torch.testing.assert_close(weight, torch.outer(*[torch.tensor([1.0, 6.0, 1.0], dtype=torch.float64) / 8] * 2))

def test_activations_stay_channels_last_from_the_constant_to_the_image():
    g = generator(64).float()
    fused = FusedSynthesis(g, 16)
    layouts = []
    for layer in fused.layers:
        layer.register_forward_hook(lambda m, i, o: layouts.append(o.is_contiguous(memory_format=torch.channels_last)))
    with torch.no_grad():
        fused(codes(g, 4, dtype=torch.float32))
    assert len(layouts) == len(fused.layers) == 14 and all(layouts)
    assert sum(isinstance(layer, _FusedStyledConv) for layer in fused.layers) == 9
    assert sum(isinstance(layer, _FusedToRGB) for layer in fused.layers) == 5

class _Casts(TorchDispatchMode):
    """Records the storage of every tensor that is converted to another dtype."""

    def __init__(self):
        super().__init__()
        self.sources: list[int] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten._to_copy.default:
            self.sources.append(args[0].untyped_storage().data_ptr())
        return func(*args, **(kwargs or {}))

@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_weights_are_cast_once_when_built_not_per_call(dtype):
    g = generator(64).float()
    fused = FusedSynthesis(g, 16, dtype=dtype)
    convs = [layer.weight for layer in fused.layers if isinstance(layer, _FusedStyledConv)]
    assert all(w.dtype == dtype for w in convs) and fused.constant.dtype == dtype
    assert fused.modulation_weight.dtype == torch.float32  # styles and demodulation stay float32
    ws = codes(g, 2, dtype=torch.float32)
    with torch.no_grad(), _Casts() as casts:
        out = fused(ws)
    buffers = {b.untyped_storage().data_ptr() for b in fused.buffers()}
    assert buffers.isdisjoint(casts.sources)  # no weight, bias or noise map is converted during a call
    assert out.dtype == torch.float32
    with torch.no_grad():
        expected = box_downsample(g(ws), 16)
    psnr = 10 * torch.log10(4 / (out - expected).pow(2).mean())
    assert psnr > 45  # the engine gate's bar for reduced precision is 40 dB

def test_the_fused_generator_exports_with_a_dynamic_batch_and_the_export_runs_the_same_numbers():
    g = generator(64).float()
    fused = FusedSynthesis(g, 16)
    batch = torch.export.Dim("batch", min=1, max=16)
    program = torch.export.export(fused, (codes(g, 2, dtype=torch.float32),), dynamic_shapes=({0: batch},))
    ws = codes(g, 5, seed=9, dtype=torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(program.module()(ws), fused(ws), rtol=0, atol=1e-6)

def test_bad_codes_and_sizes_are_refused():
    g = generator(64).float()
    with pytest.raises(ValueError, match="cannot pool a 64 px generator to 24 px"):
        FusedSynthesis(g, 24)
    with pytest.raises(ValueError, match=r"W\+ codes must have shape \[B, 10, 8\], got \(2, 9, 8\)"):
        FusedSynthesis(g)(torch.zeros(2, 9, 8))

def test_the_generator_it_was_made_from_is_left_alone():
    g = generator(64)
    before = {k: v.clone() for k, v in g.state_dict().items()}
    FusedSynthesis(g, 16, dtype=torch.bfloat16, fold_blur=True)
    after = g.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype for k in before)
