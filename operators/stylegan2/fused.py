"""The synthesis network prepared once for fast inference: ``Generator`` with its stored noise, computed with
everything that does not depend on the codes done when it is built.

- one shared weight per convolution (the ``batched`` modulation): every convolution is one dense convolution,
  and the graph does not depend on the batch size;
- weights scaled, transposed (and, with ``fold_blur``, convolved with the upsampling blur) once, and cast once
  to the run's ``dtype``; styles, demodulation and the output stay float32 (float64 for a float64 module);
- the styles of all layers from one batched product;
- channels-last activations from the constant input to the image (no layout conversions in cuDNN/oneDNN);
- the epilogue of each styled convolution (demodulation, noise, bias, leaky ReLU and its gain) as one
  expression over precomputed terms (two element-wise passes eager, one kernel under torch.compile);
- the ToRGB layers as a batched product with per-sample 1x1 weights, reading their input once, and the skip
  image's 2x FIR upsampling as one depthwise transposed convolution;
- when the image is box-pooled (1024 -> 256 px), the last ToRGB computed after the pool: a 1x1 convolution
  and a bias are per-pixel linear maps, so they commute with averaging, and the upsampled skip image's pool
  is one small filter on the skip image itself.

All of these are exact rearrangements of linear maps: the module equals ``Generator`` (any modulation form)
followed by ``box_downsample`` to round-off (tests/operators/test_fused_generator.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from operators.stylegan2.fir import upfirdn2d
from operators.stylegan2.generator import Generator
from operators.stylegan2.layers import LEAKY_GAIN, LEAKY_SLOPE, ModulatedConv2d, StyledConv, ToRGB, full_convolution


class FusedSynthesis(nn.Module):
    """W+ codes [B, num_ws, style_dim] (float32) -> raw image [B, 3, size, size] (float32), the generator's
    output box-pooled to ``size``, with the generator's stored noise maps."""

    def __init__(
        self,
        generator: Generator,
        size: int | None = None,
        dtype: torch.dtype = torch.float32,
        channels_last: bool = True,
        fold_blur: bool = False,
    ):
        super().__init__()
        cfg = generator.config
        self.num_ws, self.style_dim = cfg.num_ws, cfg.style_dim
        self.size = cfg.resolution if size is None else size
        if self.size < 1 or cfg.resolution % self.size:
            raise ValueError(f"cannot pool a {cfg.resolution} px generator to {self.size} px: it must divide it")
        self.dtype = dtype
        precise = torch.promote_types(dtype, torch.float32)  # styles, demodulation, output
        self.layout = torch.channels_last if channels_last else torch.contiguous_format
        noises = [getattr(generator.noises, f"noise_{i}") for i in range(cfg.num_noises)]
        with torch.no_grad():
            # (layer, index of its W+ code, noise map) in the order forward runs them.
            plan: list[tuple[nn.Module, int, torch.Tensor | None]] = [
                (generator.conv1, 0, noises[0]), (generator.to_rgb1, 1, None)
            ]
            for k, to_rgb in enumerate(generator.to_rgbs):
                i = 1 + 2 * k
                plan += [(generator.convs[2 * k], i, noises[i]), (generator.convs[2 * k + 1], i + 1, noises[i + 1])]
                plan.append((to_rgb, i + 2, None))
            self.register_buffer("constant", self._cast(generator.input.input))
            self._stack_modulations([layer.conv for layer, _, _ in plan], [index for _, index, _ in plan], precise)
            self.layers = nn.ModuleList()
            for n, (layer, _, noise) in enumerate(plan):
                last = n == len(plan) - 1
                if isinstance(layer, StyledConv):
                    self.layers.append(_FusedStyledConv(layer, noise, self._cast, precise, fold_blur))
                else:
                    pool = cfg.resolution // self.size if last else 1
                    self.layers.append(_FusedToRGB(layer, self._cast, precise, pool))
        self.to(generator.input.input.device)

    def _cast(self, t: torch.Tensor) -> torch.Tensor:
        t = t.detach().to(self.dtype)
        return t.contiguous(memory_format=self.layout) if t.ndim == 4 else t.contiguous()

    def _stack_modulations(self, convs: list[ModulatedConv2d], code_index: list[int], precise: torch.dtype) -> None:
        """Every layer's style linear map in one [layers, style_dim, widest] tensor, zero-padded."""
        widest = max(c.in_channels for c in convs)
        weight = torch.zeros(len(convs), self.style_dim, widest, dtype=precise)
        bias = torch.zeros(len(convs), widest, dtype=precise)
        for n, conv in enumerate(convs):
            m = conv.modulation
            weight[n, :, : conv.in_channels] = (m.weight * m.scale).t()
            bias[n, : conv.in_channels] = m.bias * m.lr_mul
        self.register_buffer("modulation_weight", weight)
        self.register_buffer("modulation_bias", bias)
        self.register_buffer("code_index", torch.tensor(code_index))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        expected = (self.num_ws, self.style_dim)
        if codes.ndim != 3 or tuple(codes.shape[1:]) != expected:
            raise ValueError(f"W+ codes must have shape [B, {expected[0]}, {expected[1]}], got {tuple(codes.shape)}")
        precise = self.modulation_weight.dtype
        codes = codes.to(precise)
        styles = torch.einsum("bld,ldc->lbc", codes[:, self.code_index], self.modulation_weight)
        styles = styles + self.modulation_bias[:, None, :]  # [layers, B, widest]
        x = self.constant.expand(codes.shape[0], -1, -1, -1)
        skip = None
        for layer, style in zip(self.layers, styles):
            if isinstance(layer, _FusedStyledConv):
                x = layer(x, style[:, : layer.in_channels])
            else:
                skip = layer(x, style[:, : layer.in_channels], skip)
        return skip.to(precise)


class _FusedStyledConv(nn.Module):
    def __init__(self, layer: StyledConv, noise: torch.Tensor, cast, precise: torch.dtype, fold_blur: bool):
        super().__init__()
        conv = layer.conv
        self.in_channels = conv.in_channels
        self.upsample = conv.upsample
        self.padding = conv.padding
        weight = conv.scale * conv.weight[0].to(precise)  # [out, in, k, k]
        # The demodulation's sum over (in, kh, kw) of (weight * style)^2 is style^2 @ energy.
        self.register_buffer("energy", weight.pow(2).sum([2, 3]).t().contiguous())  # [in, out]
        self.blur_pad: tuple[int, int] | None = None
        if not conv.upsample:
            self.register_buffer("weight", cast(weight))
            self.crop = 0
        else:
            blur = conv.blur
            transposed = weight.transpose(0, 1)  # [in, out, k, k]: conv_transpose2d's layout
            if fold_blur and blur.pad[0] == blur.pad[1]:
                # The blur after a transposed convolution is one transposed convolution with the kernel
                # convolved by the blur; the blur's padding becomes a crop.
                self.register_buffer("weight", cast(full_convolution(transposed, blur.kernel.to(precise))))
                self.crop = blur.kernel.shape[-1] - 1 - blur.pad[0]
            else:
                self.register_buffer("weight", cast(transposed))
                self.crop = 0
                self.blur_pad = blur.pad
                self.register_buffer("blur_kernel", blur.kernel.to(precise))
                channels = conv.out_channels
                # The depthwise filter as a grouped convolution (conv2d correlates: flip for convolution).
                flipped = torch.flip(blur.kernel.to(precise), [0, 1])[None, None].expand(channels, 1, -1, -1)
                self.register_buffer("blur_weight", cast(flipped))
        # leaky_relu(z) * gain == leaky_relu(z * gain) for gain > 0: the gain goes into the terms of z.
        self.register_buffer("bias", cast(layer.activate.bias.to(precise)[None, :, None, None] * LEAKY_GAIN))
        self.register_buffer("noise", cast(layer.noise.weight.to(precise) * noise.to(precise) * LEAKY_GAIN))

    def forward(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        demod = torch.rsqrt(style.pow(2) @ self.energy + 1e-8) * LEAKY_GAIN  # [B, out], float32
        x = x * style.to(x.dtype)[:, :, None, None]
        if not self.upsample:
            out = F.conv2d(x, self.weight, padding=self.padding)
        else:
            out = F.conv_transpose2d(x, self.weight, padding=self.crop, stride=2)
            if self.blur_pad is not None:
                out = self._blur(out)
        out = torch.addcmul(self.bias, out, demod.to(out.dtype)[:, :, None, None]) + self.noise
        return F.leaky_relu(out, LEAKY_SLOPE)

    def _blur(self, x: torch.Tensor) -> torch.Tensor:
        before, after = self.blur_pad
        if before == after >= 0:
            return F.conv2d(x, self.blur_weight, padding=before, groups=x.shape[1])
        return upfirdn2d(x, self.blur_kernel, pad=self.blur_pad)


class _FusedToRGB(nn.Module):
    def __init__(self, layer: ToRGB, cast, precise: torch.dtype, pool: int):
        super().__init__()
        conv = layer.conv
        self.in_channels = conv.in_channels
        self.pool = pool
        self.register_buffer("weight", (conv.scale * conv.weight[0, :, :, 0, 0]).to(precise))  # [3, in]
        self.register_buffer("bias", cast(layer.bias.to(precise)))
        self.has_upsample = hasattr(layer, "upsample")
        if self.has_upsample:
            self._prepare_upsample(layer.upsample, cast, precise)

    def _prepare_upsample(self, upsample, cast, precise: torch.dtype) -> None:
        kernel = upsample.kernel.to(precise)
        size = kernel.shape[-1]
        before, after = upsample.pad
        # upfirdn2d's zero insertion + padding + convolution is a stride-2 transposed convolution when the
        # padding leaves both ends alike: transposed padding = K - 1 - before, and the sizes then agree.
        self.transposed_padding = size - 1 - before
        self.upsample_is_transposed = self.transposed_padding >= 0 and before - after == 1
        self.up_pad = upsample.pad
        self.register_buffer("up_kernel", kernel)
        self.register_buffer("up_weight", cast(kernel[None, None].expand(3, 1, size, size)))
        if self.pool > 1:
            pooled, radius = _pooled_upsample_filter(upsample)
            pooled = pooled.to(precise)
            self.register_buffer("pooled_up_weight", cast(pooled[None, None].expand(3, 1, *pooled.shape)))
            self.pooled_radius = radius

    def forward(self, x: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None) -> torch.Tensor:
        if self.pool > 1:
            x = F.avg_pool2d(x, self.pool)
        batch, channels, height, width = x.shape
        # Per-sample 1x1 weights [B, in, 3] on channels-last pixels [B, H*W, in]: x is read once.
        weight = (self.weight[None] * style[:, None, :]).transpose(1, 2).to(x.dtype)
        pixels = x.permute(0, 2, 3, 1).reshape(batch, height * width, channels)
        out = torch.bmm(pixels, weight).view(batch, height, width, 3).permute(0, 3, 1, 2) + self.bias
        if skip is not None:
            out = out + self._upsampled(skip)
        return out

    def _upsampled(self, skip: torch.Tensor) -> torch.Tensor:
        if self.pool > 1:
            # pool(upsample(skip)) = pool_{p/2}(filter(skip)): a 2x upsampling followed by a 2x2 average
            # is a stride-1 filter of the skip image.
            out = F.conv2d(skip, self.pooled_up_weight, padding=self.pooled_radius, groups=3)
            return F.avg_pool2d(out, self.pool // 2) if self.pool > 2 else out
        if self.upsample_is_transposed:
            return F.conv_transpose2d(skip, self.up_weight, stride=2, padding=self.transposed_padding, groups=3)
        return upfirdn2d(skip, self.up_kernel, up=2, pad=self.up_pad)


def _pooled_upsample_filter(upsample) -> tuple[torch.Tensor, int]:
    """The stride-1 filter (for conv2d, with its padding) equal to a 2x2 average of ``upsample``'s output.

    Read off the impulse response: the composite is shift-invariant (one input pixel step is one output
    step) and, like upfirdn2d, treats the image as zero outside its edges."""
    n = 2 * upsample.kernel.shape[-1] + 3
    centre = n // 2
    impulse = torch.zeros(1, 1, n, n, dtype=torch.float64)
    impulse[..., centre, centre] = 1
    kernel = upsample.kernel
    upsample_64 = upfirdn2d(impulse, kernel.double(), up=upsample.factor, pad=upsample.pad)
    response = F.avg_pool2d(upsample_64, 2)[0, 0]
    rows = response.abs().sum(1).nonzero().flatten()
    radius = int(max(centre - rows.min(), rows.max() - centre))
    window = response[centre - radius : centre + radius + 1, centre - radius : centre + radius + 1]
    # out[o] = sum_a in[o + a - radius] * w[a] and out[o] = response[centre - o + ...]: w is the response flipped.
    return torch.flip(window, [0, 1]), radius
