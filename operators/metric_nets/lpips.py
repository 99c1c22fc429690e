"""LPIPS v0.1 (Zhang et al. 2018): AlexNet or VGG16 features with learned 1x1 linear heads.

Module names follow the published files so they load unchanged: the trunk is torchvision's
``features`` stack (``features.{N}.weight``/``bias``, the layout of torchvision's ImageNet files) and
the heads are ``lin{k}.model.1.weight``, the layout of the LPIPS repository's ``weights/v0.1/{alex,vgg}.pth``.
"""

from __future__ import annotations

import torch
from torch import nn

# torchvision's feature stacks up to the last ReLU LPIPS reads: ("conv", in, out, kernel, stride, padding),
# ("relu",) or ("pool", kernel, stride). Stack indices are the key numbers of the published files.
_ALEX = (
    ("conv", 3, 64, 11, 4, 2), ("relu",), ("pool", 3, 2),
    ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool", 3, 2),
    ("conv", 192, 384, 3, 1, 1), ("relu",),
    ("conv", 384, 256, 3, 1, 1), ("relu",),
    ("conv", 256, 256, 3, 1, 1), ("relu",),
)  # fmt: skip


def _vgg16_stack() -> tuple:
    layers: list[tuple] = []
    width = 3
    for block, (out, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3))):
        if block:
            layers.append(("pool", 2, 2))
        for _ in range(convs):
            layers += [("conv", width, out, 3, 1, 1), ("relu",)]
            width = out
    return tuple(layers)


NETS = {
    # name: (stack, indices of the ReLUs whose outputs LPIPS compares, their widths)
    "alex": (_ALEX, (1, 4, 7, 9, 11), (64, 192, 384, 256, 256)),
    "vgg": (_vgg16_stack(), (3, 8, 15, 22, 29), (64, 128, 256, 512, 512)),
}

# LPIPS's ScalingLayer: the ImageNet statistics of torchvision's trunks, expressed for inputs in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def _layer(spec: tuple) -> nn.Module:
    if spec[0] == "conv":
        _, c_in, c_out, kernel, stride, padding = spec
        return nn.Conv2d(c_in, c_out, kernel, stride, padding)
    if spec[0] == "pool":
        return nn.MaxPool2d(spec[1], spec[2])
    return nn.ReLU()


class LinearHead(nn.Module):
    """One LPIPS head: a 1x1 convolution from a layer's width to 1, no bias."""

    def __init__(self, channels: int):
        super().__init__()
        # Slot 0 held the dropout used in training; keeping the slot keeps the published key
        # ``lin{k}.model.1.weight`` for the convolution.
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def unit_normalize(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """Each position's feature vector divided by its L2 norm over channels (LPIPS's eps, added to the norm)."""
    return features / (features.pow(2).sum(1, keepdim=True).sqrt() + eps)


class LPIPS(nn.Module):
    """LPIPS distance between images in [0, 1]: ``forward(x, y)`` -> [B], 0 for identical images."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in NETS:
            raise ValueError(f"LPIPS net must be one of {sorted(NETS)}, got {net!r}")
        stack, taps, widths = NETS[net]
        self.net = net
        self.features = nn.Sequential(*map(_layer, stack))
        self._taps = taps
        for k, width in enumerate(widths):
            self.add_module(f"lin{k}", LinearHead(width))

    def layer_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The five compared ReLU outputs of images in [0, 1], after LPIPS's input scaling."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"LPIPS takes RGB images [B, 3, H, W], got {tuple(images.shape)}")
        # Constants rather than buffers: the published files do not hold them.
        shift, scale = (images.new_tensor(v).view(1, 3, 1, 1) for v in (_SHIFT, _SCALE))
        x = (images * 2 - 1 - shift) / scale
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self._taps:
                outputs.append(x)
        return outputs

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape != y.shape:
            raise ValueError(f"LPIPS compares images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        # One pass over both batches: the trunk is the expensive part.
        features = self.layer_features(torch.cat((x, y)))
        total = x.new_zeros(x.shape[0])
        for k, both in enumerate(features):
            fx, fy = unit_normalize(both).chunk(2)
            head = getattr(self, f"lin{k}")
            total = total + head((fx - fy).pow(2)).mean((1, 2, 3))
        return total
