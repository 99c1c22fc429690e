"""The E2Style encoder: a shallow IR-SE50 backbone with three efficient heads predicting W+ codes.

Module and attribute names follow the official ``BackboneEncoderFirstStage`` so its state_dict keys
(``input_layer.*``, ``output_layer_{3,4,5}.*``, ``body.{i}.*``) load the released checkpoints unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class EncoderConfig:
    # Four IR-SE blocks; the first unit of each has stride 2. The heads tap the outputs of blocks 1-3.
    # Block 4 exists only because the released checkpoints store it (and load it strictly): it never runs.
    block_widths: tuple[int, int, int, int] = (64, 128, 256, 512)
    block_units: tuple[int, int, int, int] = (3, 4, 14, 3)  # IR-SE50
    se_reduction: int = 16  # squeeze-excitation bottleneck: width // se_reduction hidden channels
    head_pool: int = 7  # every head average-pools its feature map to head_pool x head_pool
    # W+ codes predicted from the deep (block 3, 1/8 res), middle (block 2, 1/4) and shallow (block 1,
    # 1/2) features, in W+ slot order: the deepest features drive the coarse layers 0-8.
    head_codes: tuple[int, int, int] = (9, 5, 4)
    style_dim: int = 512  # width of each W+ code

    def __post_init__(self):
        if len(self.block_widths) != 4 or len(self.block_units) != 4 or len(self.head_codes) != 3:
            raise ValueError(
                "EncoderConfig needs 4 block_widths, 4 block_units and 3 head_codes, got "
                f"{self.block_widths}, {self.block_units}, {self.head_codes}"
            )
        for name in ("block_widths", "block_units", "head_codes"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"EncoderConfig.{name} must be positive, got {getattr(self, name)}")
        for width in self.block_widths:
            if width % self.se_reduction:
                raise ValueError(
                    f"EncoderConfig.block_widths {self.block_widths} must be multiples of se_reduction "
                    f"({self.se_reduction})"
                )
        if self.head_pool < 1 or self.style_dim < 1:
            raise ValueError(f"EncoderConfig.head_pool and style_dim must be positive, got {self.head_pool}, {self.style_dim}")

    @property
    def num_ws(self) -> int:
        return sum(self.head_codes)


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduction: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(gate))))


class Subsample(nn.Module):
    """Identity shortcut of a strided unit: keeps every ``stride``-th pixel (a 1x1 max-pool)."""

    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, :: self.stride, :: self.stride]


class BottleneckIRSE(nn.Module):
    """IR-SE unit: BN, 3x3 conv, PReLU, 3x3 conv (strided), BN, squeeze-excite; plus the shortcut.

    There is no activation after the addition.
    """

    def __init__(self, in_channels: int, depth: int, stride: int, se_reduction: int):
        super().__init__()
        if in_channels == depth:
            self.shortcut_layer: nn.Module = Subsample(stride)
        else:
            self.shortcut_layer = nn.Sequential(
                nn.Conv2d(in_channels, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)
            )
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(in_channels),
            nn.Conv2d(in_channels, depth, 3, 1, 1, bias=False),
            nn.PReLU(depth),
            nn.Conv2d(depth, depth, 3, stride, 1, bias=False),
            nn.BatchNorm2d(depth),
            SqueezeExcite(depth, se_reduction),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


def adaptive_pool_matrix(in_size: int, out_size: int) -> torch.Tensor:
    """[out_size, in_size] float64 rows averaging the windows adaptive average pooling uses:
    row i covers [floor(i * in / out), ceil((i + 1) * in / out))."""
    rows = torch.zeros(out_size, in_size, dtype=torch.float64)
    for i in range(out_size):
        start, end = (i * in_size) // out_size, -((-(i + 1) * in_size) // out_size)
        rows[i, start:end] = 1.0 / (end - start)
    return rows


class MatrixAvgPool2d(nn.Module):
    """Adaptive average pooling of a known input size as two matrix products, ``rows @ x @ rows.T``.

    The same windows and numbers as ``nn.AdaptiveAvgPool2d`` (to float32 round-off), but a graph that
    exporters accept and that does not depend on the batch size.
    """

    def __init__(self, in_size: int, out_size: int):
        super().__init__()
        self.in_size = in_size
        self.register_buffer("rows", adaptive_pool_matrix(in_size, out_size).float(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.in_size, self.in_size):
            raise ValueError(f"pooling built for {self.in_size}x{self.in_size} inputs, got {tuple(x.shape[-2:])}")
        rows = self.rows.to(x.dtype)
        return rows @ x @ rows.transpose(0, 1)


def _head(channels: int, pool: int, codes: int, style_dim: int) -> nn.Sequential:
    """BN, adaptive average pool to pool x pool, flatten (c*pool^2 + h*pool + w), one linear layer."""
    return nn.Sequential(
        nn.BatchNorm2d(channels),
        nn.AdaptiveAvgPool2d((pool, pool)),
        nn.Flatten(),
        nn.Linear(channels * pool * pool, style_dim * codes),
    )


class E2StyleEncoder(nn.Module):
    """One E2Style stage: image [B, in_channels, S, S] -> W+ codes [B, num_ws, style_dim].

    ``in_channels`` is 3 (RGB), 1 (sketch) or 19 (segmentation) for a first stage, 6 for a refinement
    stage (the input image and the previous stage's reconstruction, concatenated).
    """

    def __init__(self, config: EncoderConfig, in_channels: int):
        super().__init__()
        self.config = config
        self.in_channels = in_channels
        c = config
        self.input_layer = nn.Sequential(
            nn.Conv2d(in_channels, c.block_widths[0], 3, 1, 1, bias=False),
            nn.BatchNorm2d(c.block_widths[0]),
            nn.PReLU(c.block_widths[0]),
        )
        # Head names follow the official files, whose numbering runs opposite to the W+ slot order.
        self.output_layer_3 = _head(c.block_widths[2], c.head_pool, c.head_codes[0], c.style_dim)
        self.output_layer_4 = _head(c.block_widths[1], c.head_pool, c.head_codes[1], c.style_dim)
        self.output_layer_5 = _head(c.block_widths[0], c.head_pool, c.head_codes[2], c.style_dim)
        units = []
        in_width = c.block_widths[0]
        for width, count in zip(c.block_widths, c.block_units):
            units.append(BottleneckIRSE(in_width, width, 2, c.se_reduction))
            units.extend(BottleneckIRSE(width, width, 1, c.se_reduction) for _ in range(count - 1))
            in_width = width
        self.body = nn.Sequential(*units)
        ends = [sum(c.block_units[: i + 1]) for i in range(3)]
        self._tap_ranges = ((0, ends[0]), (ends[0], ends[1]), (ends[1], ends[2]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"encoder input must be [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        c = self.config
        x = self.input_layer(x)
        parts = []
        for head, codes, (start, end) in zip(
            (self.output_layer_5, self.output_layer_4, self.output_layer_3),
            reversed(c.head_codes),
            self._tap_ranges,
        ):
            for unit in self.body[start:end]:
                x = unit(x)
            parts.append(head(x).view(-1, codes, c.style_dim))
        shallow, middle, deep = parts
        return torch.cat((deep, middle, shallow), dim=1)

    def use_matrix_pooling(self, image_size: int) -> None:
        """Pool the heads with ``MatrixAvgPool2d`` for inputs of ``image_size`` (for export; same numbers)."""
        # The input layer keeps the size and each block's first unit halves it; heads tap blocks 1-3.
        for block, head in enumerate((self.output_layer_5, self.output_layer_4, self.output_layer_3)):
            size = image_size >> (block + 1)
            if size < 1 or size << (block + 1) != image_size:
                raise ValueError(f"image size {image_size} does not halve evenly down to block {block + 1}")
            head[1] = MatrixAvgPool2d(size, self.config.head_pool)
