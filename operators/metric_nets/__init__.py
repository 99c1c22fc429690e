"""Networks that score images, with the module names of their published weight files (no I/O here:
``engines.metric_weights`` loads the files). Every network takes RGB images [B, 3, H, W] in [0, 1].

- ``LPIPS``: AlexNet or VGG16 features with LPIPS v0.1 linear heads.
- ``ArcFaceIRSE50``: identity embeddings of the pSp-family face crop; ``identity_similarity`` compares them.
- ``FIDInceptionV3``: the FID reference network's pool3 features; ``FeatureStatistics`` and
  ``frechet_distance`` turn them into FID.
"""

from operators.metric_nets.arcface import ArcFaceIRSE50, face_region, identity_similarity
from operators.metric_nets.fid import (
    FeatureStatistics, fid_from_statistics, fids_from_statistics, frechet_distance, trace_sqrt_product,
)
from operators.metric_nets.inception import FIDInceptionV3
from operators.metric_nets.lpips import LPIPS

__all__ = [
    "LPIPS",
    "ArcFaceIRSE50",
    "FIDInceptionV3",
    "FeatureStatistics",
    "face_region",
    "fid_from_statistics",
    "fids_from_statistics",
    "frechet_distance",
    "identity_similarity",
    "trace_sqrt_product",
]
