"""StyleGAN2 building blocks with the rosinality parameter layout that the released checkpoints use.

Attribute names and registration order are part of the checkpoint format: they produce the state_dict
keys (``conv.modulation.weight``, ``activate.bias``, ``upsample.kernel``, ...) of the official files.
"""

from __future__ import annotations

import math
from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from operators.stylegan2.fir import Blur, Upsample

# "grouped": per-sample weights and a convolution grouped over the batch, as the research code does.
# "batched": one shared weight; the style scales the input channels and the demodulation scales the
#            output channels, so every convolution is one dense (tensor-core) convolution.
# "folded":  "batched", with the FIR blur after each 2x upsampling folded into the transposed
#            convolution's kernel (3x3 -> 6x6): no depthwise pass, four times the products of that layer.
# All are mathematically identical; the graphs of the last two do not depend on the batch size.
ModulationForm = Literal["grouped", "batched", "folded"]
MODULATION_FORMS: tuple[str, ...] = ("grouped", "batched", "folded")

LEAKY_SLOPE = 0.2
LEAKY_GAIN = 2**0.5  # keeps the activation variance of a leaky ReLU at about 1


def bias_leaky_relu(x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """Per-channel bias, leaky ReLU (slope 0.2), times sqrt(2): the research code's fused_leaky_relu.

    x: [B, C, ...]; bias: [C].
    """
    shape = (1, bias.shape[0]) + (1,) * (x.ndim - 2)
    return F.leaky_relu(x + bias.view(shape), negative_slope=LEAKY_SLOPE) * LEAKY_GAIN


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate: weights are stored at unit scale, scaled at run time."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        bias_init: float = 0.0,  # the modulation layers start at 1 so styles begin as identity scales
        lr_mul: float = 1.0,  # the mapping network trains 100x slower (0.01)
        activate: bool = False,  # bias_leaky_relu after the product, with the bias inside it
    ):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init)))
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, in_dim] -> [B, out_dim]
        if self.activate:
            return bias_leaky_relu(F.linear(x, self.weight * self.scale), self.bias * self.lr_mul)
        return F.linear(x, self.weight * self.scale, bias=self.bias * self.lr_mul)


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=1, keepdim=True) + 1e-8)


class ModulatedConv2d(nn.Module):
    """Convolution whose weights are scaled per sample by a style, optionally demodulated and 2x upsampled."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        style_dim: int,
        demodulate: bool = True,
        upsample: bool = False,  # stride-2 transposed convolution followed by an FIR blur
        blur_taps: Sequence[float] = (1, 3, 3, 1),
        form: ModulationForm = "grouped",
    ):
        super().__init__()
        if form not in MODULATION_FORMS:
            raise ValueError(f"unknown modulation form {form!r}; known: {', '.join(MODULATION_FORMS)}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.demodulate = demodulate
        self.upsample = upsample
        self.form = form
        self.padding = kernel_size // 2
        self.scale = 1 / math.sqrt(in_channels * kernel_size**2)
        if upsample:
            # Padding that makes transposed-conv + blur land exactly on a 2x grid.
            factor = 2
            p = (len(blur_taps) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_taps, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), gain=factor**2)
        self.weight = nn.Parameter(torch.randn(1, out_channels, in_channels, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channels, bias_init=1)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: [B, in, H, W]; w: [B, style_dim] -> [B, out, H', W'] (H' = 2H when upsampling)."""
        style = self.modulation(w)  # [B, in]
        if self.form == "grouped":
            return self._grouped(x, style)
        return self._batched(x, style)

    def _grouped(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch, in_ch, height, width = x.shape
        k, out_ch = self.kernel_size, self.out_channels
        weight = self.scale * self.weight * style.view(batch, 1, in_ch, 1, 1)  # [B, out, in, k, k]
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.view(batch, out_ch, 1, 1, 1)
        x = x.reshape(1, batch * in_ch, height, width)
        if self.upsample:
            weight = weight.transpose(1, 2).reshape(batch * in_ch, out_ch, k, k)
            out = F.conv_transpose2d(x, weight, padding=0, stride=2, groups=batch)
            out = self.blur(out.reshape(batch, out_ch, out.shape[-2], out.shape[-1]))
            return out
        out = F.conv2d(x, weight.reshape(batch * out_ch, in_ch, k, k), padding=self.padding, groups=batch)
        return out.reshape(batch, out_ch, out.shape[-2], out.shape[-1])

    def _batched(self, x: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        weight = self.scale * self.weight[0]  # [out, in, k, k]
        x = x * style[:, :, None, None]
        folded = self.form == "folded" and self.upsample and self.blur.pad[0] == self.blur.pad[1]
        if folded:
            # Blur after a transposed convolution is one transposed convolution with the kernel convolved
            # by the blur (both linear, and the blur is per channel); the blur's padding becomes a crop.
            kernel = full_convolution(weight.transpose(0, 1), self.blur.kernel)  # [in, out, k+K-1, k+K-1]
            crop = self.blur.kernel.shape[-1] - 1 - self.blur.pad[0]
            out = F.conv_transpose2d(x, kernel, padding=crop, stride=2)
        elif self.upsample:
            out = F.conv_transpose2d(x, weight.transpose(0, 1), padding=0, stride=2)
        else:
            out = F.conv2d(x, weight, padding=self.padding)
        if self.demodulate:
            # sum over (in, kh, kw) of (weight * style)^2, as one [B, in] x [in, out] product. A per-channel
            # scale commutes with the per-channel blur, so it may follow the folded convolution.
            energy = style.pow(2) @ weight.pow(2).sum([2, 3]).t()  # [B, out]
            out = out * torch.rsqrt(energy + 1e-8)[:, :, None, None]
        if self.upsample and not folded:
            out = self.blur(out)
        return out


def full_convolution(weight: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Each [k, k] filter of ``weight`` [A, B, k, k] truly convolved with ``kernel`` [K, K] (no cropping):
    [A, B, k + K - 1, k + K - 1]."""
    a, b, k, _ = weight.shape
    size = kernel.shape[-1]
    flat = F.pad(weight.reshape(a * b, 1, k, k), [size - 1] * 4)
    # conv2d correlates; the flipped kernel makes it the convolution upfirdn2d applies.
    out = F.conv2d(flat, torch.flip(kernel, [0, 1]).to(weight.dtype)[None, None])
    return out.reshape(a, b, k + size - 1, k + size - 1)


class NoiseInjection(nn.Module):
    """Adds a learned scalar times a noise map [B or 1, 1, H, W] broadcast over channels."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        if noise is None:  # zero noise: adding 0 * weight would change nothing
            return x
        return x + self.weight * noise


class ConstantInput(nn.Module):
    """The learned 4x4 start tensor, expanded to the batch."""

    def __init__(self, channels: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channels, size, size))

    def forward(self, batch_like: torch.Tensor) -> torch.Tensor:  # -> [B, C, 4, 4]
        return self.input.expand(batch_like.shape[0], -1, -1, -1)


class BiasLeakyReLU(nn.Module):
    """Holds the per-channel bias (``activate.bias`` in the checkpoints) of bias_leaky_relu."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bias_leaky_relu(x, self.bias)


class StyledConv(nn.Module):
    """Modulated 3x3 convolution, noise injection, biased leaky ReLU."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        style_dim: int,
        upsample: bool = False,
        blur_taps: Sequence[float] = (1, 3, 3, 1),
        form: ModulationForm = "grouped",
    ):
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channels, out_channels, 3, style_dim, upsample=upsample, blur_taps=blur_taps, form=form
        )
        self.noise = NoiseInjection()
        self.activate = BiasLeakyReLU(out_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise: torch.Tensor | None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(x, w), noise))


class ToRGB(nn.Module):
    """1x1 modulated convolution to RGB (no demodulation) plus the upsampled skip image."""

    def __init__(
        self,
        in_channels: int,
        style_dim: int,
        upsample: bool = True,
        blur_taps: Sequence[float] = (1, 3, 3, 1),
        form: ModulationForm = "grouped",
    ):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))
        if upsample:
            self.upsample = Upsample(blur_taps)
        self.conv = ModulatedConv2d(in_channels, 3, 1, style_dim, demodulate=False, form=form)

    def forward(self, x: torch.Tensor, w: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, w) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out
