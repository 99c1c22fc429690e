"""The IR-SE50 ArcFace face-recognition network (TreB1eN's ``model_ir_se50.pth``) for identity similarity.

Module names follow that file (``input_layer.*``, ``body.{0..23}.*``, ``output_layer.*``) so it loads
unchanged. Faces are prepared as pSp-family code does for its identity loss on aligned 256 px faces:
crop rows 35:223 and columns 32:220 (the face, without hair and background), average-pool to 112 px.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from operators.e2style.encoder import BottleneckIRSE

FACE_SIZE = 256  # the aligned face size the crop is defined on
FACE_CROP = (35, 223, 32, 220)  # rows start, end; columns start, end
NET_SIZE = 112
EMBEDDING_DIM = 512
_WIDTHS = (64, 128, 256, 512)
_UNITS = (3, 4, 14, 3)  # IR-SE50
_SE_REDUCTION = 16


def face_region(images: torch.Tensor) -> torch.Tensor:
    """Images [B, 3, H, W] -> the 112 px face crop the network sees, on the images' value scale.

    Faces other than 256 px are first brought to 256 px: average pooling when larger (as pSp pools
    its 1024 px outputs), bilinear interpolation otherwise.
    """
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"identity embeddings take RGB images [B, 3, H, W], got {tuple(images.shape)}")
    if images.shape[-2:] != (FACE_SIZE, FACE_SIZE):
        if min(images.shape[-2:]) >= FACE_SIZE:
            images = F.adaptive_avg_pool2d(images, FACE_SIZE)
        else:
            images = F.interpolate(images, size=(FACE_SIZE, FACE_SIZE), mode="bilinear", align_corners=False)
    top, bottom, left, right = FACE_CROP
    return F.adaptive_avg_pool2d(images[:, :, top:bottom, left:right], NET_SIZE)


class ArcFaceIRSE50(nn.Module):
    """Images in [0, 1] -> L2-normalised 512-d identity embeddings [B, 512]."""

    def __init__(self):
        super().__init__()
        self.input_layer = nn.Sequential(
            nn.Conv2d(3, _WIDTHS[0], 3, 1, 1, bias=False), nn.BatchNorm2d(_WIDTHS[0]), nn.PReLU(_WIDTHS[0])
        )
        units = []
        in_width = _WIDTHS[0]
        for width, count in zip(_WIDTHS, _UNITS):
            units.append(BottleneckIRSE(in_width, width, 2, _SE_REDUCTION))
            units.extend(BottleneckIRSE(width, width, 1, _SE_REDUCTION) for _ in range(count - 1))
            in_width = width
        self.body = nn.Sequential(*units)
        final = NET_SIZE // 2 ** len(_WIDTHS)
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(_WIDTHS[-1]),
            nn.Identity(),  # the training dropout's slot, kept so the later keys keep their published numbers
            nn.Flatten(),
            nn.Linear(_WIDTHS[-1] * final * final, EMBEDDING_DIM),
            nn.BatchNorm1d(EMBEDDING_DIM),
        )

    def embed_faces(self, faces: torch.Tensor) -> torch.Tensor:
        """The network on prepared 112 px faces in [-1, 1] -> unnormalised embeddings [B, 512]."""
        if faces.shape[1:] != (3, NET_SIZE, NET_SIZE):
            raise ValueError(f"the network takes faces [B, 3, {NET_SIZE}, {NET_SIZE}], got {tuple(faces.shape)}")
        return self.output_layer(self.body(self.input_layer(faces)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.embed_faces(face_region(images) * 2 - 1), dim=1)


def identity_similarity(embeddings_a: torch.Tensor, embeddings_b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of paired embeddings [B, D] -> [B] in float64 (1 for the same face)."""
    if embeddings_a.shape != embeddings_b.shape or embeddings_a.ndim != 2:
        raise ValueError(
            "identity similarity pairs embeddings [B, D], "
            f"got {tuple(embeddings_a.shape)} and {tuple(embeddings_b.shape)}"
        )
    a = F.normalize(embeddings_a.double(), dim=1)
    b = F.normalize(embeddings_b.double(), dim=1)
    return (a * b).sum(1)
